//! Builders for a plugin's tests: batteries, a bank merged from them, and the devices a current
//! source reads.
//!
//! Behind the `testing` feature, so that no plugin library carries them: enable it for tests
//! only,
//!
//! ```toml
//! [dev-dependencies]
//! plugin-api = { path = "../../plugin-api", features = ["testing"] }
//! ```
//!
//! The defaults are a plain healthy bank; a test sets what it is about. Every field of what
//! `build` returns stays public, to change afterwards what no builder method covers.
//!
//! ```
//! use plugin_api::testing::{BankBuilder, BatteryBuilder};
//! use plugin_api::BatteryState;
//!
//! let bank = BankBuilder::new()
//!     .battery(BatteryBuilder::new("A").cells(&[3.40, 3.45, 3.38]).build())
//!     .battery(BatteryBuilder::new("B").state(BatteryState::Lost).build())
//!     .build();
//! assert_eq!(bank.batteries_expected, 2);
//! assert_eq!(bank.batteries_online, 1);
//! assert_eq!(bank.cells_per_battery, 3);
//! assert_eq!(bank.max_cell_voltage_v.into_option(), Some(3.45));
//! assert_eq!(bank.max_cell_id.as_ref().map(|id| id.as_str()).into_option(), Some("A_C2"));
//! assert!((bank.voltage_v - 10.23).abs() < 1e-9, "the lost battery does not count");
//! ```

use abi_stable::std_types::{ROption, RString, RVec};

use crate::merge::{self, Pick};
use crate::{
    BankView, BatteryState, BatteryState_NE, BatteryView, CurrentInputs, DcClass, DcClass_NE,
    DcSourceView, LocalDate, ShuntClass, ShuntClass_NE, ShuntView, SolarChargerView, VebusView,
};

/// Builds a [`BatteryView`].
///
/// [`BatteryBuilder::new`] is an online battery that blocks nothing: 16 cells at 3.3 V
/// (52.8 V), 280 Ah at 50 %, no current, no limits of its own, no charge mode.
///
/// ```
/// use plugin_api::testing::BatteryBuilder;
///
/// let battery = BatteryBuilder::new("Bat1")
///     .limits(55.2, 100.0, 150.0)
///     .charge_mode("Float")
///     .build();
/// assert_eq!(battery.service.as_str(), "com.victronenergy.battery.Bat1");
/// assert_eq!(battery.max_charge_current_a.into_option(), Some(100.0));
/// assert!(!battery.blocks_charge());
/// ```
#[derive(Clone, Debug)]
pub struct BatteryBuilder(BatteryView);

impl BatteryBuilder {
    /// The default battery, named `name`, service `com.victronenergy.battery.<name>`.
    pub fn new(name: &str) -> Self {
        let battery = BatteryView {
            name: name.into(),
            service: RString::from(format!("com.victronenergy.battery.{name}")),
            state: BatteryState_NE::new(BatteryState::Online),
            voltage_v: 0.0,
            current_a: 0.0,
            power_w: 0.0,
            voltages_sum_v: ROption::RNone,
            installed_capacity_ah: ROption::RSome(280.0),
            soc_pct: ROption::RSome(50.0),
            max_cell_voltage_v: ROption::RNone,
            min_cell_voltage_v: ROption::RNone,
            cell_voltages_v: RVec::new(),
            modules_blocking_charge: 0,
            modules_blocking_discharge: 0,
            allow_to_charge: ROption::RSome(1),
            allow_to_discharge: ROption::RSome(1),
            max_charge_voltage_v: ROption::RNone,
            max_charge_current_a: ROption::RNone,
            max_discharge_current_a: ROption::RNone,
            charge_mode: ROption::RNone,
        };
        BatteryBuilder(battery).cells(&[3.3; 16])
    }

    /// Every cell's voltage, cell 1 first; the highest and lowest cell, the voltage and
    /// `/Voltages/Sum` follow from them.
    pub fn cells(mut self, cells_v: &[f64]) -> Self {
        let sum_v: f64 = cells_v.iter().sum();
        let b = &mut self.0;
        b.cell_voltages_v = cells_v.iter().map(|&v| ROption::RSome(v)).collect();
        let (max_v, min_v) = cells_v.iter().fold((None, None), |(max, min), &v| {
            (
                Some(max.map_or(v, |m: f64| m.max(v))),
                Some(min.map_or(v, |m: f64| m.min(v))),
            )
        });
        b.max_cell_voltage_v = max_v.into();
        b.min_cell_voltage_v = min_v.into();
        b.voltage_v = sum_v;
        b.voltages_sum_v = ROption::RSome(sum_v);
        self
    }

    /// Only `/System/MinCellVoltage` and `/System/MaxCellVoltage`, with no per-cell voltages
    /// (as from a BMS that publishes none).
    pub fn cell_extremes(mut self, min_v: f64, max_v: f64) -> Self {
        self.0.cell_voltages_v = RVec::new();
        self.0.min_cell_voltage_v = ROption::RSome(min_v);
        self.0.max_cell_voltage_v = ROption::RSome(max_v);
        self
    }

    /// No cell data at all: no `/System/MinCellVoltage`, `/System/MaxCellVoltage` or cell
    /// voltages (a CAN pack that publishes none).
    pub fn no_cell_data(mut self) -> Self {
        self.0.cell_voltages_v = RVec::new();
        self.0.min_cell_voltage_v = ROption::RNone;
        self.0.max_cell_voltage_v = ROption::RNone;
        self
    }

    /// `/Dc/0/Voltage` and `/Voltages/Sum`.
    pub fn voltage(mut self, voltage_v: f64) -> Self {
        self.0.voltage_v = voltage_v;
        self.0.voltages_sum_v = ROption::RSome(voltage_v);
        self
    }

    /// `/Dc/0/Current`; the power follows from the voltage.
    pub fn current(mut self, current_a: f64) -> Self {
        self.0.current_a = current_a;
        self.0.power_w = current_a * self.0.voltage_v;
        self
    }

    /// Online, stale or lost.
    pub fn state(mut self, state: BatteryState) -> Self {
        self.0.state = BatteryState_NE::new(state);
        self
    }

    /// `/Soc`, `None` for an invalid one.
    pub fn soc(mut self, soc_pct: Option<f64>) -> Self {
        self.0.soc_pct = soc_pct.into();
        self
    }

    /// `/InstalledCapacity`.
    pub fn capacity(mut self, capacity_ah: f64) -> Self {
        self.0.installed_capacity_ah = ROption::RSome(capacity_ah);
        self
    }

    /// The BMS's own `/Info/MaxChargeVoltage`, `/Info/MaxChargeCurrent` and
    /// `/Info/MaxDischargeCurrent`.
    pub fn limits(mut self, cvl_v: f64, ccl_a: f64, dcl_a: f64) -> Self {
        self.0.max_charge_voltage_v = ROption::RSome(cvl_v);
        self.0.max_charge_current_a = ROption::RSome(ccl_a);
        self.0.max_discharge_current_a = ROption::RSome(dcl_a);
        self
    }

    /// `/Info/ChargeMode`, e.g. `Bulk`.
    pub fn charge_mode(mut self, mode: &str) -> Self {
        self.0.charge_mode = ROption::RSome(mode.into());
        self
    }

    /// `/Io/AllowToCharge` and `/Io/AllowToDischarge` (true = 1, false = 0).
    pub fn allow(mut self, charge: bool, discharge: bool) -> Self {
        self.0.allow_to_charge = ROption::RSome(i32::from(charge));
        self.0.allow_to_discharge = ROption::RSome(i32::from(discharge));
        self
    }

    /// The battery (the builder can build again).
    pub fn build(&self) -> BatteryView {
        self.0.clone()
    }
}

/// Builds a [`BankView`] from batteries, merged over the batteries that are not lost with the
/// daemon's arithmetic ([`crate::merge`]): mean voltage, summed currents, capacities and
/// blocking modules, capacity-weighted SoC over the batteries that have one, cell extremes.
/// The daemon's own merge has more rules (the counter's SoC, the BMSs' cell ids); set a field
/// of the built bank for a case that needs one of them.
///
/// ```
/// use plugin_api::testing::{BankBuilder, BatteryBuilder};
/// use plugin_api::LocalDate;
///
/// let bank = BankBuilder::new()
///     .battery(BatteryBuilder::new("A").capacity(100.0).soc(Some(20.0)).build())
///     .battery(BatteryBuilder::new("B").capacity(300.0).soc(Some(60.0)).build())
///     .date(LocalDate::new(2026, 7, 1).unwrap())
///     .build();
/// assert_eq!(bank.installed_capacity_ah, 400.0);
/// assert_eq!(bank.soc_pct.into_option(), Some(50.0));
/// assert_eq!(bank.charge_ah.into_option(), Some(200.0));
/// assert_eq!(bank.date.month, 7);
/// ```
#[derive(Clone, Debug)]
pub struct BankBuilder {
    batteries: Vec<BatteryView>,
    cells_per_battery: Option<u32>,
    expected: Option<u32>,
    date: LocalDate,
    dt_s: f64,
}

impl Default for BankBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BankBuilder {
    /// A bank without batteries on 2026-01-15, one second after the previous tick.
    pub fn new() -> Self {
        BankBuilder {
            batteries: Vec::new(),
            cells_per_battery: None,
            expected: None,
            date: LocalDate::new(2026, 1, 15).expect("a valid date"),
            dt_s: 1.0,
        }
    }

    /// Adds a battery (the daemon orders them by service name; this keeps the order given).
    pub fn battery(mut self, battery: BatteryView) -> Self {
        self.batteries.push(battery);
        self
    }

    /// Adds these batteries.
    pub fn batteries(mut self, batteries: impl IntoIterator<Item = BatteryView>) -> Self {
        self.batteries.extend(batteries);
        self
    }

    /// Cells in series per battery; by default the first battery's number of cell voltages,
    /// or 16 when it has none.
    pub fn cells_per_battery(mut self, cells: u32) -> Self {
        self.cells_per_battery = Some(cells);
        self
    }

    /// Batteries the bank should have; by default every battery added, lost ones included.
    pub fn expected(mut self, batteries: u32) -> Self {
        self.expected = Some(batteries);
        self
    }

    /// Today's date.
    pub fn date(mut self, date: LocalDate) -> Self {
        self.date = date;
        self
    }

    /// Seconds since the previous tick.
    pub fn dt(mut self, dt_s: f64) -> Self {
        self.dt_s = dt_s;
        self
    }

    /// The bank (the builder can build again).
    pub fn build(&self) -> BankView {
        let active: Vec<&BatteryView> = self
            .batteries
            .iter()
            .filter(|b| b.state != BatteryState::Lost)
            .collect();
        let all = |value: fn(&BatteryView) -> f64| active.iter().map(move |b| Some(value(b)));
        let count = |value: fn(&BatteryView) -> u32| active.iter().map(|b| value(b)).sum::<u32>();
        let capacity_ah: f64 = active
            .iter()
            .filter_map(|b| b.installed_capacity_ah.into_option())
            .sum();
        let soc_pct = merge::weighted(
            active.iter().map(|b| {
                (
                    b.soc_pct.into_option(),
                    b.installed_capacity_ah.into_option(),
                )
            }),
            false,
        );
        let (max_cell_voltage_v, max_cell_id) =
            extreme_cell(&active, |b| b.max_cell_voltage_v, Pick::Max);
        let (min_cell_voltage_v, min_cell_id) =
            extreme_cell(&active, |b| b.min_cell_voltage_v, Pick::Min);
        let cells_per_battery = self.cells_per_battery.unwrap_or_else(|| {
            match self.batteries.first().map(|b| b.cell_voltages_v.len()) {
                Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
                _ => 16,
            }
        });
        let batteries_online = self
            .batteries
            .iter()
            .filter(|b| b.state == BatteryState::Online)
            .count();
        BankView {
            cells_per_battery,
            batteries_expected: self
                .expected
                .unwrap_or_else(|| u32::try_from(self.batteries.len()).unwrap_or(u32::MAX)),
            batteries_online: u32::try_from(batteries_online).unwrap_or(u32::MAX),
            voltage_v: merge::mean_all(all(|b| b.voltage_v)).unwrap_or(0.0),
            current_a: merge::sum_all(all(|b| b.current_a)).unwrap_or(0.0),
            power_w: merge::sum_all(all(|b| b.power_w)).unwrap_or(0.0),
            installed_capacity_ah: capacity_ah,
            soc_pct: soc_pct.into(),
            // As the daemon derives it from the BMSs' SoC.
            charge_ah: soc_pct.map(|soc| soc / 100.0 * capacity_ah).into(),
            max_cell_voltage_v,
            max_cell_id,
            min_cell_voltage_v,
            min_cell_id,
            modules_blocking_charge: count(|b| b.modules_blocking_charge),
            modules_blocking_discharge: count(|b| b.modules_blocking_discharge),
            date: self.date,
            dt_s: self.dt_s,
            batteries: self.batteries.iter().cloned().collect(),
        }
    }
}

/// The extreme cell voltage of the batteries and its id, `<battery>_C<cell>` (the battery's
/// name alone when it lists no cells); none without a battery with cell data.
fn extreme_cell(
    batteries: &[&BatteryView],
    value: fn(&BatteryView) -> ROption<f64>,
    pick: Pick,
) -> (ROption<f64>, ROption<RString>) {
    let found = batteries.iter().map(|b| (*b, value(b).into_option()));
    let Some((best, target)) = merge::extreme(found, pick) else {
        return (ROption::RNone, ROption::RNone);
    };
    let cell = best
        .cell_voltages_v
        .iter()
        .position(|cell| cell.into_option() == Some(target));
    let id = match cell {
        Some(index) => format!("{}_C{}", best.name, index + 1),
        None => best.name.to_string(),
    };
    (ROption::RSome(target), ROption::RSome(id.into()))
}

/// Builds the [`CurrentInputs`] of a current source, device by device.
///
/// [`CurrentInputsBuilder::new`] is a bus without Multis, solar chargers or SmartShunts, the
/// batteries' sums at 0 A and 0 W, the bank at 52.8 V. Each device gets a service name of its
/// class, numbered in the order added.
///
/// ```
/// use plugin_api::testing::CurrentInputsBuilder;
/// use plugin_api::ShuntClass;
///
/// let inputs = CurrentInputsBuilder::new()
///     .multi(Some(1), Some(-20.0))
///     .solar_charger(Some(15.0))
///     .shunt(ShuntClass::Battery, 279, "House", 4.5)
///     .build();
/// assert_eq!(inputs.vebus[0].service.as_str(), "com.victronenergy.vebus.ttyS0");
/// assert_eq!(inputs.smartshunts[0].device_instance.into_option(), Some(279));
/// ```
#[derive(Clone, Debug)]
pub struct CurrentInputsBuilder(CurrentInputs);

impl Default for CurrentInputsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CurrentInputsBuilder {
    /// The empty bus.
    pub fn new() -> Self {
        CurrentInputsBuilder(CurrentInputs {
            bms_current_a: 0.0,
            bms_power_w: 0.0,
            bank_voltage_v: 52.8,
            vebus: RVec::new(),
            solar_chargers: RVec::new(),
            smartshunts: RVec::new(),
            dc_sources: RVec::new(),
        })
    }

    /// The sums of the online batteries' own current and power.
    pub fn bms(mut self, current_a: f64, power_w: f64) -> Self {
        self.0.bms_current_a = current_a;
        self.0.bms_power_w = power_w;
        self
    }

    /// The bank's mean voltage.
    pub fn bank_voltage(mut self, voltage_v: f64) -> Self {
        self.0.bank_voltage_v = voltage_v;
        self
    }

    /// A Multi with this `/Connected` and `/Dc/0/Current` (`None` = invalid).
    pub fn multi(mut self, connected: Option<i32>, current_a: Option<f64>) -> Self {
        let n = self.0.vebus.len();
        self.0.vebus.push(VebusView {
            service: RString::from(format!("com.victronenergy.vebus.ttyS{n}")),
            connected: connected.into(),
            current_a: current_a.into(),
        });
        self
    }

    /// A solar charger with this `/Dc/0/Current` (`None` = invalid).
    pub fn solar_charger(mut self, current_a: Option<f64>) -> Self {
        let n = self.0.solar_chargers.len();
        self.0.solar_chargers.push(SolarChargerView {
            service: RString::from(format!("com.victronenergy.solarcharger.ttyO{n}")),
            current_a: current_a.into(),
        });
        self
    }

    /// A SmartShunt of this class, VRM instance, custom name and current. Added in the order
    /// given: the daemon lists battery monitors first.
    pub fn shunt(mut self, class: ShuntClass, instance: i32, name: &str, current_a: f64) -> Self {
        self.0.smartshunts.push(ShuntView {
            service: RString::from(format!("com.victronenergy.shunt.{instance}")),
            class: ShuntClass_NE::new(class),
            device_instance: ROption::RSome(instance),
            custom_name: name.into(),
            current_a: ROption::RSome(current_a),
        });
        self
    }

    /// A DC device of this class and current (positive = into the bank; `None` = invalid).
    pub fn dc_source(mut self, class: DcClass, current_a: Option<f64>) -> Self {
        let n = self.0.dc_sources.len();
        self.0.dc_sources.push(DcSourceView {
            service: RString::from(format!(
                "com.victronenergy.{}.ttyS{n}",
                class.service_class()
            )),
            class: DcClass_NE::new(class),
            device_instance: ROption::RSome(300 + n as i32),
            custom_name: RString::new(),
            current_a: current_a.into(),
        });
        self
    }

    /// The inputs (the builder can build again).
    pub fn build(&self) -> CurrentInputs {
        self.0.clone()
    }
}
