//! A typed reading of one battery service, as the monitor cache holds it.
//!
//! Every value a BMS may leave invalid is an `Option`; `None` is the Venus invalid value (an
//! empty array on the wire) or a path the service does not publish. Whether a reading is good
//! enough to merge is decided here, in one place.

use std::borrow::Cow;
use std::sync::OnceLock;

/// The alarm paths merged by maximum, below `/Alarms/`.
pub const ALARMS: [&str; 14] = [
    "LowVoltage",
    "HighVoltage",
    "LowCellVoltage",
    "HighCellVoltage",
    "LowSoc",
    "HighChargeCurrent",
    "HighDischargeCurrent",
    "CellImbalance",
    "InternalFailure",
    "HighChargeTemperature",
    "LowChargeTemperature",
    "HighTemperature",
    "LowTemperature",
    "BmsCable",
];

/// `/Alarms/<name>` in the order of [`ALARMS`], made once (read and published every tick).
pub fn alarm_paths() -> &'static [String] {
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    PATHS.get_or_init(|| ALARMS.iter().map(|a| format!("/Alarms/{a}")).collect())
}

/// Cells whose path is kept ready (more are written out when asked for).
const CELL_PATHS: usize = 64;

/// `/Voltages/Cell<k>` (from 1), without formatting it each tick for the usual cell counts.
pub fn cell_path(k: usize) -> Cow<'static, str> {
    static PATHS: OnceLock<Vec<String>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        (1..=CELL_PATHS)
            .map(|k| format!("/Voltages/Cell{k}"))
            .collect()
    });
    match paths.get(k.wrapping_sub(1)) {
        Some(path) => path.as_str().into(),
        None => format!("/Voltages/Cell{k}").into(),
    }
}

/// Index of `/Alarms/BmsCable` in [`ALARMS`].
pub const ALARM_BMS_CABLE: usize = 13;

/// How a battery path is read into a [`BatteryReading`]: the field it fills, read and written.
#[derive(Clone, Copy)]
pub enum Slot {
    /// A number; NaN, ±infinity and other types are bad values.
    Number(
        fn(&BatteryReading) -> Option<f64>,
        fn(&mut BatteryReading) -> &mut Option<f64>,
    ),
    /// A number rounded to an integer.
    Integer(fn(&mut BatteryReading) -> &mut Option<i64>),
    /// A text (a number reads as Python's `str` of it).
    Text(fn(&mut BatteryReading) -> &mut Option<String>),
}

/// Whether a reading without a valid value at the path can be merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Never mergeable without it.
    Always,
    /// Needed when the strategy passes the batteries' own limits on.
    PassThrough,
    /// Merged without it.
    Optional,
}

/// A battery path we read (besides identity, alarms and cells).
#[derive(Clone, Copy)]
pub struct BatteryPath {
    /// The D-Bus path.
    pub path: &'static str,
    /// The field it fills.
    pub slot: Slot,
    /// Whether the reading needs it.
    pub need: Need,
}

/// `/System/NrOfCellsPerBattery`: read first, as it says how many cells to read.
pub const CELLS_PER_BATTERY: &str = "/System/NrOfCellsPerBattery";

macro_rules! path {
    ($path:literal, number $field:ident, $need:ident) => {
        BatteryPath {
            path: $path,
            slot: Slot::Number(|r| r.$field, |r| &mut r.$field),
            need: Need::$need,
        }
    };
    ($path:expr, integer $field:ident) => {
        BatteryPath {
            path: $path,
            slot: Slot::Integer(|r| &mut r.$field),
            need: Need::Optional,
        }
    };
    ($path:literal, text $field:ident) => {
        BatteryPath {
            path: $path,
            slot: Slot::Text(|r| &mut r.$field),
            need: Need::Optional,
        }
    };
}

/// Every battery path we read besides identity, alarms and cells: the one list from which
/// gathering, the checks of a reading and the monitor's cache are derived. Required paths are
/// checked in this order, so the first one missing is the one named.
pub const BATTERY_PATHS: [BatteryPath; 32] = [
    path!("/Connected", integer connected),
    path!("/Dc/0/Voltage", number voltage_v, Always),
    path!("/Dc/0/Current", number current_a, Always),
    path!("/Dc/0/Power", number power_w, Optional),
    path!("/Dc/0/Temperature", number temperature_c, Optional),
    path!("/InstalledCapacity", number installed_capacity_ah, Always),
    path!("/ConsumedAmphours", number consumed_ah, Optional),
    path!("/Capacity", number capacity_ah, Optional),
    path!("/Soc", number soc_pct, Optional),
    path!("/TimeToGo", number time_to_go_s, Optional),
    path!("/Soh", number soh_pct, Optional),
    path!("/System/MaxCellTemperature", number max_cell_temperature_c, Optional),
    path!("/System/MinCellTemperature", number min_cell_temperature_c, Optional),
    path!("/System/MaxTemperatureCellId", text max_temperature_cell_id),
    path!("/System/MinTemperatureCellId", text min_temperature_cell_id),
    path!("/System/MaxCellVoltage", number max_cell_voltage_v, Optional),
    path!("/System/MinCellVoltage", number min_cell_voltage_v, Optional),
    path!("/System/MaxVoltageCellId", text max_voltage_cell_id),
    path!("/System/MinVoltageCellId", text min_voltage_cell_id),
    path!("/Voltages/Sum", number voltages_sum_v, Optional),
    path!(CELLS_PER_BATTERY, integer cells_per_battery),
    path!("/System/NrOfModulesOnline", integer modules_online),
    path!("/System/NrOfModulesOffline", integer modules_offline),
    path!("/System/NrOfModulesBlockingCharge", integer modules_blocking_charge),
    path!("/System/NrOfModulesBlockingDischarge", integer modules_blocking_discharge),
    path!("/Io/AllowToCharge", integer allow_to_charge),
    path!("/Io/AllowToDischarge", integer allow_to_discharge),
    path!("/Io/AllowToBalance", integer allow_to_balance),
    path!("/Info/MaxChargeVoltage", number max_charge_voltage_v, PassThrough),
    path!("/Info/MaxChargeCurrent", number max_charge_current_a, PassThrough),
    path!("/Info/MaxDischargeCurrent", number max_discharge_current_a, PassThrough),
    path!("/Info/ChargeMode", text charge_mode),
];

/// Whether a battery service's path is one we read: the table, an alarm or a cell. Asked for
/// every signal, so a binary search in a sorted copy made once.
pub fn is_battery_path(path: &str) -> bool {
    static SORTED: OnceLock<Vec<&'static str>> = OnceLock::new();
    let sorted = SORTED.get_or_init(|| {
        let mut paths: Vec<&'static str> = BATTERY_PATHS.iter().map(|p| p.path).collect();
        paths.sort_unstable();
        paths
    });
    sorted.binary_search(&path).is_ok()
        || path
            .strip_prefix("/Alarms/")
            .is_some_and(|name| ALARMS.contains(&name))
        || path
            .strip_prefix("/Voltages/Cell")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One battery's values at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatteryReading {
    /// `/Connected`.
    pub connected: Option<i64>,
    /// `/Dc/0/Voltage`.
    pub voltage_v: Option<f64>,
    /// `/Dc/0/Current`, positive = charging.
    pub current_a: Option<f64>,
    /// `/Dc/0/Power`.
    pub power_w: Option<f64>,
    /// `/Dc/0/Temperature`.
    pub temperature_c: Option<f64>,
    /// `/InstalledCapacity`.
    pub installed_capacity_ah: Option<f64>,
    /// `/ConsumedAmphours`.
    pub consumed_ah: Option<f64>,
    /// `/Capacity` (remaining Ah).
    pub capacity_ah: Option<f64>,
    /// `/Soc`.
    pub soc_pct: Option<f64>,
    /// `/TimeToGo`.
    pub time_to_go_s: Option<f64>,
    /// `/Soh` (state of health; shown only, it limits nothing).
    pub soh_pct: Option<f64>,
    /// `/System/MaxCellTemperature`.
    pub max_cell_temperature_c: Option<f64>,
    /// `/System/MinCellTemperature`.
    pub min_cell_temperature_c: Option<f64>,
    /// `/System/MaxTemperatureCellId`.
    pub max_temperature_cell_id: Option<String>,
    /// `/System/MinTemperatureCellId`.
    pub min_temperature_cell_id: Option<String>,
    /// `/System/MaxCellVoltage`.
    pub max_cell_voltage_v: Option<f64>,
    /// `/System/MinCellVoltage`.
    pub min_cell_voltage_v: Option<f64>,
    /// `/System/MaxVoltageCellId`.
    pub max_voltage_cell_id: Option<String>,
    /// `/System/MinVoltageCellId`.
    pub min_voltage_cell_id: Option<String>,
    /// `/Voltages/Sum`.
    pub voltages_sum_v: Option<f64>,
    /// `/System/NrOfCellsPerBattery`.
    pub cells_per_battery: Option<i64>,
    /// `/System/NrOfModulesOnline`.
    pub modules_online: Option<i64>,
    /// `/System/NrOfModulesOffline`.
    pub modules_offline: Option<i64>,
    /// `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: Option<i64>,
    /// `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: Option<i64>,
    /// `/Alarms/<name>` in the order of [`ALARMS`].
    pub alarms: [Option<i64>; ALARMS.len()],
    /// `/Io/AllowToCharge`.
    pub allow_to_charge: Option<i64>,
    /// `/Io/AllowToDischarge`.
    pub allow_to_discharge: Option<i64>,
    /// `/Io/AllowToBalance`.
    pub allow_to_balance: Option<i64>,
    /// `/Info/MaxChargeVoltage`.
    pub max_charge_voltage_v: Option<f64>,
    /// `/Info/MaxChargeCurrent`.
    pub max_charge_current_a: Option<f64>,
    /// `/Info/MaxDischargeCurrent`.
    pub max_discharge_current_a: Option<f64>,
    /// `/Info/ChargeMode`.
    pub charge_mode: Option<String>,
    /// `/Voltages/Cell1` … in order.
    pub cell_voltages_v: Vec<Option<f64>>,
    /// Paths read as numbers that held something else, or NaN or ±infinity; each of them
    /// reads as `None` above, and any of them makes the reading unusable.
    pub bad_values: Vec<BadValue>,
}

/// A path of a battery whose value is no usable number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadValue {
    /// The path, e.g. `/Dc/0/Voltage`.
    pub path: String,
    /// What it held, e.g. `a text, not a number` or `not finite (NaN)`.
    pub problem: String,
}

/// Why a reading cannot be merged: the D-Bus path at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// The path, e.g. `/Dc/0/Voltage`.
    pub path: String,
    /// What is wrong, e.g. `invalid` or `not finite`.
    pub problem: String,
}

impl Unusable {
    fn new(path: &str, problem: impl Into<String>) -> Self {
        Unusable {
            path: path.to_string(),
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}", self.path, self.problem)
    }
}

impl BatteryReading {
    /// Checks that the reading can be merged (SPEC §3): voltage, current and installed
    /// capacity (above 0) valid and finite (cell data is optional: CAN packs often publish
    /// none), the three BMS limits too when the
    /// strategy passes them through, and the BMS connected. A battery that puts garbage on the
    /// bus (a text where a number belongs, NaN, infinity) anywhere we read is not trusted at
    /// all: one such value in the merge would make the bank's SoC, cells or limits NaN.
    pub fn check(&self, needs_bms_limits: bool) -> Result<(), Unusable> {
        if let Some(bad) = self.bad_values.first() {
            return Err(Unusable::new(&bad.path, bad.problem.clone()));
        }
        for p in &BATTERY_PATHS {
            let needed = match p.need {
                Need::Always => true,
                Need::PassThrough => needs_bms_limits,
                Need::Optional => false,
            };
            if let (true, Slot::Number(get, _)) = (needed, p.slot) {
                if get(self).is_none() {
                    return Err(Unusable::new(p.path, "invalid"));
                }
            }
        }
        if let Some(path) = self.first_not_finite() {
            return Err(Unusable::new(&path, "not finite"));
        }
        if let Some(c) = self.installed_capacity_ah.filter(|c| *c <= 0.0) {
            return Err(Unusable::new(
                "/InstalledCapacity",
                format!("{c} Ah, not above 0 Ah"),
            ));
        }
        if let Some(n) = self.cells_per_battery.filter(|n| *n < 1) {
            return Err(Unusable::new(
                "/System/NrOfCellsPerBattery",
                format!("{n}, not a cell count"),
            ));
        }
        if self.connected == Some(0) {
            return Err(Unusable::new("/Connected", "0 (BMS not connected)"));
        }
        if self.alarms[ALARM_BMS_CABLE].is_some_and(|a| a >= 2) {
            return Err(Unusable::new("/Alarms/BmsCable", "2 (BMS cable alarm)"));
        }
        Ok(())
    }

    /// The first path holding NaN or ±infinity (a reading gathered from the bus has none: see
    /// [`BatteryReading::bad_values`]; one built otherwise may).
    fn first_not_finite(&self) -> Option<String> {
        BATTERY_PATHS
            .iter()
            .find(|p| matches!(p.slot, Slot::Number(get, _) if get(self).is_some_and(|v| !v.is_finite())))
            .map(|p| p.path.to_string())
            .or_else(|| {
                self.cell_voltages_v
                    .iter()
                    .position(|v| v.is_some_and(|v| !v.is_finite()))
                    .map(|k| cell_path(k + 1).into_owned())
            })
    }

    /// `/Voltages/Sum`, else the sum of the cells, else the battery voltage.
    pub fn voltages_sum_or_cells(&self) -> Option<f64> {
        let cells = || -> Option<f64> {
            if self.cell_voltages_v.is_empty() {
                return None;
            }
            self.cell_voltages_v
                .iter()
                .try_fold(0.0, |sum, cell| cell.map(|v| sum + v))
        };
        self.voltages_sum_v
            .filter(|v| v.is_finite())
            .or_else(cells)
            .or(self.voltage_v)
    }

    /// `/Capacity`, else installed capacity × SoC (packs that publish no remaining Ah).
    pub fn capacity_or_from_soc(&self) -> Option<f64> {
        self.capacity_ah
            .or_else(|| Some(self.installed_capacity_ah? * self.soc_pct? / 100.0))
    }

    /// `/ConsumedAmphours`, else installed capacity − remaining capacity.
    pub fn consumed_or_from_capacity(&self) -> Option<f64> {
        self.consumed_ah
            .or_else(|| Some(self.installed_capacity_ah? - self.capacity_or_from_soc()?))
    }

    /// `/Dc/0/Power`, else voltage × current.
    pub fn power_or_product(&self) -> Option<f64> {
        self.power_w
            .filter(|p| p.is_finite())
            .or_else(|| Some(self.voltage_v? * self.current_a?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_path_is_read_and_every_required_number_is_checked() {
        for p in &BATTERY_PATHS {
            assert!(is_battery_path(p.path), "{} not cached", p.path);
            if let (Slot::Number(_, field), Need::Always) = (p.slot, p.need) {
                let mut r = complete();
                *field(&mut r) = None;
                assert_eq!(r.check(false).unwrap_err().path, p.path);
            }
        }
        assert!(is_battery_path("/Alarms/BmsCable") && is_battery_path("/Voltages/Cell7"));
        assert!(!is_battery_path("/Alarms/Unknown") && !is_battery_path("/Voltages/Diff"));
    }

    pub(crate) fn complete() -> BatteryReading {
        BatteryReading {
            voltage_v: Some(53.0),
            current_a: Some(10.0),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.35),
            min_cell_voltage_v: Some(3.30),
            ..Default::default()
        }
    }

    #[test]
    fn complete_reading_passes() {
        assert_eq!(complete().check(false), Ok(()));
    }

    #[test]
    fn a_pack_without_cell_data_or_capacity_passes_and_derives_its_capacity() {
        let pack = BatteryReading {
            voltage_v: Some(52.0),
            current_a: Some(-5.0),
            installed_capacity_ah: Some(100.0),
            soc_pct: Some(40.0),
            ..Default::default()
        };
        assert_eq!(pack.check(false), Ok(()));
        assert_eq!(pack.capacity_or_from_soc(), Some(40.0));
        assert_eq!(pack.consumed_or_from_capacity(), Some(60.0));
    }

    #[test]
    fn names_the_path_at_fault() {
        let mut r = complete();
        r.voltage_v = Some(f64::NAN);
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/Dc/0/Voltage is not finite"
        );
        let mut r = complete();
        r.installed_capacity_ah = Some(0.0);
        assert_eq!(r.check(false).unwrap_err().path, "/InstalledCapacity");
        let mut r = complete();
        r.current_a = None;
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/Dc/0/Current is invalid"
        );
        assert_eq!(
            complete().check(true).unwrap_err().path,
            "/Info/MaxChargeVoltage"
        );
        let mut r = complete();
        r.connected = Some(0);
        assert_eq!(r.check(false).unwrap_err().path, "/Connected");
        let mut r = complete();
        r.alarms[ALARM_BMS_CABLE] = Some(2);
        assert_eq!(r.check(false).unwrap_err().path, "/Alarms/BmsCable");
    }

    #[test]
    fn garbage_anywhere_makes_it_unusable() {
        let mut r = complete();
        r.soc_pct = Some(f64::INFINITY);
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/Soc is not finite"
        );
        let mut r = complete();
        r.cell_voltages_v = vec![Some(3.3), Some(f64::NAN)];
        assert_eq!(r.check(false).unwrap_err().path, "/Voltages/Cell2");
        let mut r = complete();
        r.bad_values.push(BadValue {
            path: "/Io/AllowToCharge".into(),
            problem: "a text, not a number".into(),
        });
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/Io/AllowToCharge is a text, not a number"
        );
        let mut r = complete();
        r.installed_capacity_ah = Some(-280.0);
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/InstalledCapacity is -280 Ah, not above 0 Ah"
        );
        let mut r = complete();
        r.cells_per_battery = Some(0);
        assert_eq!(
            r.check(false).unwrap_err().path,
            "/System/NrOfCellsPerBattery"
        );
    }

    #[test]
    fn sum_falls_back_to_cells_then_voltage() {
        let mut r = complete();
        assert_eq!(r.voltages_sum_or_cells(), Some(53.0));
        r.cell_voltages_v = vec![Some(3.25), Some(3.5)];
        assert_eq!(r.voltages_sum_or_cells(), Some(6.75));
        r.voltages_sum_v = Some(6.7);
        assert_eq!(r.voltages_sum_or_cells(), Some(6.7));
        assert_eq!(r.power_or_product(), Some(530.0));
    }
}
