//! What a strategy sees each tick: the bank and every battery in it.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

use crate::LocalDate;

/// Where a battery stands in the host's eyes this tick.
///
/// Crosses the ABI as [`BatteryState_NE`], which a minor version may give a new variant:
/// read it with `as_enum()`, which fails for a state this plugin does not know, or compare it
/// with `==`.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
pub enum BatteryState {
    /// A complete, fresh reading from a connected BMS.
    Online,
    /// Not online for less than `batteries.hold_for`: the values are its last complete reading.
    Stale,
    /// Gone for longer than `batteries.hold_for`: its values are the last ones seen and are not
    /// part of the merged bank values.
    Lost,
}

/// One battery (one BMS service on D-Bus) as read this tick.
///
/// Voltages are in volts, currents in amperes (positive = charging), capacities in ampere-hours.
/// A value that may be missing is an [`ROption`], `RNone` when missing (never NaN); the plain
/// numbers are always there (the host counts a battery only with a complete reading).
#[derive(Clone, Debug, PartialEq)]
pub struct BatteryView {
    /// Display name: `/CustomName`, else `/Serial`, else `Battery<k>`, made unique in the bank.
    pub name: RString,
    /// D-Bus service name, e.g. `com.victronenergy.battery.ttyUSB0`.
    pub service: RString,
    /// Online, stale or lost (or a state of a newer host: see [`BatteryState`]).
    pub state: BatteryState_NE,
    /// `/Dc/0/Voltage`.
    pub voltage_v: f64,
    /// `/Dc/0/Current`.
    pub current_a: f64,
    /// `/Dc/0/Power` (voltage × current when the BMS does not publish it).
    pub power_w: f64,
    /// `/Voltages/Sum`, or the sum of the cells when the BMS does not publish it; `RNone` for
    /// a pack with neither.
    pub voltages_sum_v: ROption<f64>,
    /// `/InstalledCapacity`; `RNone` when the BMS does not publish it.
    pub installed_capacity_ah: ROption<f64>,
    /// `/Soc` in percent.
    pub soc_pct: ROption<f64>,
    /// `/System/MaxCellVoltage`; `RNone` for a pack that publishes no cell data.
    pub max_cell_voltage_v: ROption<f64>,
    /// `/System/MinCellVoltage`; `RNone` for a pack that publishes no cell data.
    pub min_cell_voltage_v: ROption<f64>,
    /// `/Voltages/Cell1` … `/Voltages/Cell<N>`, index 0 = cell 1.
    pub cell_voltages_v: RVec<ROption<f64>>,
    /// `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: u32,
    /// `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: u32,
    /// `/Io/AllowToCharge` (1 allowed, 0 not).
    pub allow_to_charge: ROption<i32>,
    /// `/Io/AllowToDischarge` (1 allowed, 0 not).
    pub allow_to_discharge: ROption<i32>,
    /// The BMS's own charge voltage limit, `/Info/MaxChargeVoltage`.
    pub max_charge_voltage_v: ROption<f64>,
    /// The BMS's own charge current limit, `/Info/MaxChargeCurrent`.
    pub max_charge_current_a: ROption<f64>,
    /// The BMS's own discharge current limit, `/Info/MaxDischargeCurrent`.
    pub max_discharge_current_a: ROption<f64>,
    /// `/Info/ChargeMode`, e.g. `Bulk`, `Float (Balancing)`.
    pub charge_mode: ROption<RString>,
}

impl BatteryView {
    /// True when the BMS forbids charging: a module blocks charge or `/Io/AllowToCharge` is 0.
    pub fn blocks_charge(&self) -> bool {
        self.modules_blocking_charge > 0 || self.allow_to_charge == ROption::RSome(0)
    }

    /// True when the BMS forbids discharging: a module blocks discharge or
    /// `/Io/AllowToDischarge` is 0.
    pub fn blocks_discharge(&self) -> bool {
        self.modules_blocking_discharge > 0 || self.allow_to_discharge == ROption::RSome(0)
    }

    /// How far the pack's cells stand strictly above `limit_v` altogether (0 when none does):
    /// the sum of each published cell's excess, and at least the highest cell's
    /// (`/System/MaxCellVoltage`). A pack that publishes its lowest and highest cell but not
    /// each cell (many CAN BMSs), or not the highest one, so still counts its high cell.
    pub fn cell_overvoltage_v(&self, limit_v: f64) -> f64 {
        let cells = self
            .cell_voltages_v
            .iter()
            .filter_map(|cell| cell.into_option())
            .filter(|&v| v > limit_v)
            .fold(0.0, |sum, v| sum + (v - limit_v));
        let highest = self
            .max_cell_voltage_v
            .into_option()
            .filter(|v| v.is_finite() && *v > limit_v)
            .map_or(0.0, |v| v - limit_v);
        cells.max(highest)
    }
}

/// The bank: the merged values of the online and stale batteries, plus every battery.
///
/// A strategy runs only while at least one battery is online or stale, so the voltage,
/// current and power are always there; a value that may be missing is an [`ROption`], `RNone`
/// when missing (never NaN).
#[derive(Clone, Debug, PartialEq)]
pub struct BankView {
    /// Every battery the host knows of, ordered by service name (lost ones included).
    pub batteries: RVec<BatteryView>,
    /// Cells in series per battery (N).
    pub cells_per_battery: u32,
    /// Batteries the bank should have (`batteries.expected`, or all seen since start).
    pub batteries_expected: u32,
    /// Batteries online this tick.
    pub batteries_online: u32,
    /// Mean battery voltage.
    pub voltage_v: f64,
    /// Bank current from the current-source plugin (positive = charging).
    pub current_a: f64,
    /// Bank power.
    pub power_w: f64,
    /// Sum of the installed capacities.
    pub installed_capacity_ah: f64,
    /// State of charge in percent (the counter's when it runs, else the capacity-weighted
    /// mean of the batteries that publish one); `RNone` when neither is known.
    pub soc_pct: ROption<f64>,
    /// Charge in the bank in Ah (the counter's, else derived from the BMS SoC); `RNone` when
    /// the SoC is.
    pub charge_ah: ROption<f64>,
    /// Highest cell voltage of the online and stale batteries that publish cell data; `RNone`
    /// when none does (a bank of CAN packs without cell data): then neither this nor
    /// [`BankView::min_cell_voltage_v`] is a number, and [`BankView::cell_extremes`] says so.
    pub max_cell_voltage_v: ROption<f64>,
    /// Id of that cell, `<battery name>_<cell id>`; `RNone` with it.
    pub max_cell_id: ROption<RString>,
    /// Lowest cell voltage, as [`BankView::max_cell_voltage_v`].
    pub min_cell_voltage_v: ROption<f64>,
    /// Id of that cell, `<battery name>_<cell id>`; `RNone` with it.
    pub min_cell_id: ROption<RString>,
    /// Sum of `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: u32,
    /// Sum of `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: u32,
    /// Today in local time.
    pub date: LocalDate,
    /// Seconds since the previous tick (monotonic clock).
    pub dt_s: f64,
}

impl BankView {
    /// The batteries whose values count this tick (online or stale; not lost, nor in a state
    /// of a newer host that this plugin does not know).
    pub fn active_batteries(&self) -> impl Iterator<Item = &BatteryView> {
        self.batteries
            .iter()
            .filter(|b| b.state == BatteryState::Online || b.state == BatteryState::Stale)
    }

    /// True when any active battery forbids charging.
    pub fn blocks_charge(&self) -> bool {
        self.modules_blocking_charge > 0 || self.active_batteries().any(BatteryView::blocks_charge)
    }

    /// True when any active battery forbids discharging.
    pub fn blocks_discharge(&self) -> bool {
        self.modules_blocking_discharge > 0
            || self.active_batteries().any(BatteryView::blocks_discharge)
    }

    /// Highest cell minus lowest cell; `None` without cell data.
    pub fn cell_diff_v(&self) -> Option<f64> {
        self.cell_extremes().ok().map(|(low, high)| high - low)
    }

    /// The lowest and highest cell voltage, or an error when either is missing or not finite
    /// (no pack publishes cell data): a strategy deciding on cells must not decide without
    /// them.
    pub fn cell_extremes(&self) -> Result<(f64, f64), String> {
        match (self.min_cell_voltage_v, self.max_cell_voltage_v) {
            (ROption::RSome(low), ROption::RSome(high)) if low.is_finite() && high.is_finite() => {
                Ok((low, high))
            }
            (low, high) => Err(format!(
                "no cell data: lowest cell {}, highest cell {} \
                 (/System/MinCellVoltage, /System/MaxCellVoltage)",
                shown(low),
                shown(high)
            )),
        }
    }
}

fn shown(value: ROption<f64>) -> String {
    match value {
        ROption::RSome(v) => format!("{v} V"),
        ROption::RNone => "missing".to_string(),
    }
}
