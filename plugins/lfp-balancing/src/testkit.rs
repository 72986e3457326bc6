//! Builders for the tests: batteries, banks, a day-by-day driver and the lines logged.

use std::cell::RefCell;

use plugin_api::abi_stable::std_types::{ROption, RStr};
use plugin_api::testing::{BankBuilder, BatteryBuilder};
use plugin_api::{
    log, BankView, BatteryView, HostLogger, LocalDate, LogLevel_NE, StrategyImpl, StrategyOutput,
};

use crate::{new, LfpBalancing};

thread_local! {
    // Per thread: the harness runs each test on a thread of its own.
    static LOGGED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

extern "C" fn keep_line(_level: LogLevel_NE, _plugin: RStr<'_>, message: RStr<'_>) {
    LOGGED.with_borrow_mut(|lines| lines.push(message.as_str().to_string()));
}

/// The lines this thread's strategies logged since it last built one or called this.
pub fn logged() -> Vec<String> {
    LOGGED.take()
}

/// Cells per battery, as in the original's defaults.
pub const CELLS: u32 = 22;

/// A date from `YYYY-MM-DD`.
pub fn date(text: &str) -> LocalDate {
    text.parse().unwrap()
}

/// The strategy with the given config section, and `last_balancing` recorded (so that no
/// balancing is due unless a test wants one).
pub fn strategy(config_json: &str, last_balancing: Option<&str>) -> LfpBalancing {
    // As the host does right after loading; the first call in the process installs it.
    log::install(HostLogger { log: keep_line }, "lfp-balancing");
    logged();
    let mut strategy = new(config_json).unwrap();
    strategy.state.last_balancing = last_balancing.map(date);
    strategy
}

/// One tick.
pub fn tick(strategy: &mut LfpBalancing, bank: &BankView) -> StrategyOutput {
    strategy.compute(bank).unwrap()
}

/// 22 cells at `typical_v`, except the first at `max_v` and the second at `min_v`.
pub fn cells(typical_v: f64, min_v: f64, max_v: f64) -> Vec<f64> {
    let mut cells = vec![typical_v; CELLS as usize];
    cells[0] = max_v;
    cells[1] = min_v;
    cells
}

/// An online battery that blocks nothing, with these cells; its voltage and `/Voltages/Sum`
/// are the cells' sum.
pub fn battery(name: &str, cells: &[f64]) -> BatteryView {
    BatteryBuilder::new(name).cells(cells).build()
}

/// A bank of these batteries on `date`, merged as the host does: mean voltage of the active
/// batteries, extremes over their cells.
pub fn bank_of(date_text: &str, batteries: Vec<BatteryView>) -> BankView {
    BankBuilder::new()
        .batteries(batteries)
        .cells_per_battery(CELLS)
        .date(date(date_text))
        .build()
}

/// Two equal batteries with the bank voltage, lowest and highest cell exactly as given (the
/// values the strategy compares with its thresholds).
pub fn bank(date_text: &str, voltage_v: f64, min_cell_v: f64, max_cell_v: f64) -> BankView {
    let cells = cells(voltage_v / f64::from(CELLS), min_cell_v, max_cell_v);
    let mut bank = bank_of(date_text, vec![battery("A", &cells), battery("B", &cells)]);
    bank.voltage_v = voltage_v;
    bank.min_cell_voltage_v = ROption::RSome(min_cell_v);
    bank.max_cell_voltage_v = ROption::RSome(max_cell_v);
    bank
}

/// Runs one tick a day from `first` to `last` inclusive, with the bank `bank_on(day)` (which
/// should carry that date).
pub fn run_days(
    strategy: &mut LfpBalancing,
    first: &str,
    last: &str,
    mut bank_on: impl FnMut(LocalDate) -> BankView,
) -> Vec<(LocalDate, StrategyOutput)> {
    let (first, last) = (date(first), date(last));
    (0..=last.days_since(first))
        .map(|offset| {
            let day = first.add_days(offset);
            (day, tick(strategy, &bank_on(day)))
        })
        .collect()
}
