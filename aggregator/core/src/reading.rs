//! A typed reading of one battery service, as the monitor cache holds it.
//!
//! Every value a BMS may leave invalid is an `Option`; `None` is the Venus invalid value (an
//! empty array on the wire) or a path the service does not publish. Whether a reading is good
//! enough to merge is decided here, in one place.

use std::borrow::Cow;
use std::cmp::Ordering;
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
    Integer(
        fn(&BatteryReading) -> Option<i64>,
        fn(&mut BatteryReading) -> &mut Option<i64>,
    ),
    /// A text (a number reads as Python's `str` of it).
    Text(
        fn(&BatteryReading) -> Option<&str>,
        fn(&mut BatteryReading) -> &mut Option<String>,
    ),
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
            slot: Slot::Integer(|r| r.$field, |r| &mut r.$field),
            need: Need::Optional,
        }
    };
    ($path:literal, text $field:ident) => {
        BatteryPath {
            path: $path,
            slot: Slot::Text(|r| r.$field.as_deref(), |r| &mut r.$field),
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

/// What a plausible range is measured against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Per {
    /// The value itself.
    Value,
    /// Per cell in series: the pack's `/System/NrOfCellsPerBattery`, else the cells it
    /// publishes; without either, from one cell up to [`MAX_CELLS_PER_PACK`].
    Cell,
    /// Per Ah of the pack's `/InstalledCapacity` (a C-rate for currents); without a plausible
    /// capacity, per [`MAX_INSTALLED_AH`].
    Ah,
    /// Per cell and per Ah (power: a C-rate times a cell voltage).
    CellAh,
}

/// A plausible range of a battery path: `low..=high` times what [`Per`] says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plausible {
    /// The D-Bus path; `/Voltages/Cell*` stands for every cell.
    pub path: &'static str,
    /// The lowest plausible value (inclusive).
    pub low: f64,
    /// The highest plausible value (inclusive).
    pub high: f64,
    /// What the bounds are multiplied by.
    pub per: Per,
}

/// The most cells in series one pack is taken to have when it does not say.
pub const MAX_CELLS_PER_PACK: f64 = 400.0;
/// The most Ah one pack is taken to have: above it `/InstalledCapacity` is implausible.
pub const MAX_INSTALLED_AH: f64 = 100_000.0;
/// How far `/Dc/0/Voltage` may be from the sum of the pack's cells: this fraction of the sum
/// plus [`PACK_VS_CELLS_V`] (terminal voltage under load, shunt and divider tolerances).
pub const PACK_VS_CELLS_FRACTION: f64 = 0.2;
/// See [`PACK_VS_CELLS_FRACTION`].
pub const PACK_VS_CELLS_V: f64 = 1.0;

macro_rules! plausible {
    ($path:literal, $low:expr, $high:expr, $per:ident) => {
        Plausible {
            path: $path,
            low: $low,
            high: $high,
            per: Per::$per,
        }
    };
}

/// The one table of plausible ranges. A value outside its range is treated as missing: the
/// reading is taken as if the pack had not published it. The ranges hold every real LFP and
/// LTO pack in any state (LTO cells 1.5–2.9 V, LFP cells 2.0–3.65 V and 2.5 V at rest after a
/// deep discharge, −40 °C winters, 0 % SoC, a pack's own CCL or DCL of 0) and no number that
/// only a broken driver sends (1e9, 2^62, negative limits, a cell of 0 V).
/// `/InstalledCapacity` is checked first: the currents and Ah are measured against it.
pub const PLAUSIBLE: [Plausible; 18] = [
    plausible!("/InstalledCapacity", 0.0, MAX_INSTALLED_AH, Value),
    plausible!("/Voltages/Cell*", 1.0, 5.0, Value),
    plausible!("/System/MaxCellVoltage", 1.0, 5.0, Value),
    plausible!("/System/MinCellVoltage", 1.0, 5.0, Value),
    plausible!("/Dc/0/Voltage", 1.0, 5.0, Cell),
    plausible!("/Voltages/Sum", 1.0, 5.0, Cell),
    plausible!("/Info/MaxChargeVoltage", 1.0, 5.0, Cell),
    plausible!("/Dc/0/Current", -20.0, 20.0, Ah),
    plausible!("/Dc/0/Power", -100.0, 100.0, CellAh),
    plausible!("/Info/MaxChargeCurrent", 0.0, 20.0, Ah),
    plausible!("/Info/MaxDischargeCurrent", 0.0, 20.0, Ah),
    plausible!("/Soc", 0.0, 100.0, Value),
    plausible!("/Capacity", 0.0, 2.0, Ah),
    plausible!("/ConsumedAmphours", -2.0, 2.0, Ah),
    plausible!("/TimeToGo", 0.0, 1e8, Value),
    plausible!("/Dc/0/Temperature", -60.0, 150.0, Value),
    plausible!("/System/MaxCellTemperature", -60.0, 150.0, Value),
    plausible!("/System/MinCellTemperature", -60.0, 150.0, Value),
];

/// Whether a cell at `cell` lies beyond the published extreme `published` on the side `side`
/// (`Greater`: above a highest, `Less`: below a lowest); a missing or NaN extreme counts as
/// passed.
fn beyond(published: Option<f64>, cell: f64, side: Ordering) -> bool {
    published.is_none_or(|v| v.is_nan() || cell.partial_cmp(&v) == Some(side))
}

/// The row of [`PLAUSIBLE`] for a path.
pub fn plausible(path: &str) -> Option<&'static Plausible> {
    PLAUSIBLE.iter().find(|p| p.path == path)
}

/// Whether a bank current (a current source's, or the packs' sum) is plausible for the bank's
/// installed capacity: the C-rate of `/Dc/0/Current` in [`PLAUSIBLE`].
pub fn plausible_bank_current(current_a: f64, installed_ah: f64) -> bool {
    let Some(p) = plausible("/Dc/0/Current") else {
        return false;
    };
    let ah = if installed_ah > 0.0 {
        installed_ah
    } else {
        MAX_INSTALLED_AH
    };
    (p.low * ah..=p.high * ah).contains(&current_a)
}

/// The slot of each row of [`PLAUSIBLE`] in [`BATTERY_PATHS`] (none for the cells), found once:
/// every pack's reading is checked every tick.
fn plausible_slots() -> &'static [Option<Slot>] {
    static SLOTS: OnceLock<Vec<Option<Slot>>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        PLAUSIBLE
            .iter()
            .map(|p| {
                BATTERY_PATHS
                    .iter()
                    .find(|b| b.path == p.path)
                    .map(|b| b.slot)
            })
            .collect()
    })
}

/// The plausible range of the cells, `/Voltages/Cell*` in [`PLAUSIBLE`].
const CELL_RANGE: usize = 1;

/// A value outside its plausible range, dropped from the reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Implausible {
    /// The path, e.g. `/Dc/0/Voltage`.
    pub path: String,
    /// The value the pack published.
    pub value: f64,
    /// The range it left, e.g. `1 to 80 V (16 cells)`.
    pub range: String,
}

impl std::fmt::Display for Implausible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is {}, outside {}",
            self.path,
            crate::value::python_str(self.value),
            self.range
        )
    }
}

/// Whether a battery service's path is one we read: the table, an alarm or a cell (any cell
/// number, also one not written as [`cell_path`] writes it). Asked for every signal, so looked
/// up as [`battery_slot`] looks it up.
pub fn is_battery_path(path: &str) -> bool {
    // Cells first: most of what a bank signals is a cell voltage.
    match path.strip_prefix("/Voltages/Cell") {
        Some(n) => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => battery_slot(path).is_some_and(|slot| slot < IDENTITY_SLOTS),
    }
}

/// The identity paths every service of a class we read keeps besides its class's own
/// (`/Connected` is in [`BATTERY_PATHS`]).
pub const IDENTITY_PATHS: [&str; 4] = ["/ProductName", "/CustomName", "/Serial", "/DeviceInstance"];

/// The most cells of one pack that are read (and given a slot).
pub const MAX_CELLS: usize = 1024;

/// The slot of a path of [`BATTERY_PATHS`] is its row; the alarms' follow, then
/// [`IDENTITY_PATHS`], then the cells.
pub const ALARM_SLOTS: usize = BATTERY_PATHS.len();
/// The first slot of [`IDENTITY_PATHS`].
pub const IDENTITY_SLOTS: usize = ALARM_SLOTS + ALARMS.len();
/// The slot of `/Voltages/Cell1`.
pub const CELL_SLOTS: usize = IDENTITY_SLOTS + IDENTITY_PATHS.len();

/// The slot of cell `k` (from 1), up to [`MAX_CELLS`].
pub fn cell_slot(k: usize) -> Option<usize> {
    (1..=MAX_CELLS).contains(&k).then(|| CELL_SLOTS + k - 1)
}

/// Where a cache keeps the value of a path a battery publishes, so that a tick reads a
/// battery's values by index, not by hashing and comparing each path: a row of
/// [`BATTERY_PATHS`], an alarm, an identity path or a cell written as [`cell_path`] writes it
/// (`/Voltages/Cell7`, not `/Voltages/Cell07`). `None` for every other path.
pub fn battery_slot(path: &str) -> Option<usize> {
    static BY_LENGTH: OnceLock<Vec<Vec<(&'static str, usize)>>> = OnceLock::new();
    if let Some(digits) = path.strip_prefix("/Voltages/Cell") {
        // As `cell_path` writes them: no sign, no leading zero.
        if digits.is_empty() || digits.starts_with('0') || digits.len() > 4 {
            return None;
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return digits.parse().ok().and_then(cell_slot);
    }
    let by_length = BY_LENGTH.get_or_init(|| {
        let known = (BATTERY_PATHS.iter().map(|p| p.path))
            .chain(alarm_paths().iter().map(String::as_str))
            .chain(IDENTITY_PATHS);
        let mut by_length: Vec<Vec<(&'static str, usize)>> = Vec::new();
        for (slot, path) in known.enumerate() {
            if by_length.len() <= path.len() {
                by_length.resize(path.len() + 1, Vec::new());
            }
            by_length[path.len()].push((path, slot));
        }
        by_length
    });
    let same_length = by_length.get(path.len())?;
    same_length
        .iter()
        .find(|(p, _)| *p == path)
        .map(|&(_, slot)| slot)
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
    /// Checks that the reading can be merged (docs/reading.md §5): voltage, current and installed
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

    /// The values outside their plausible range ([`PLAUSIBLE`]), checked as a pack
    /// published them. Empty for nearly every reading, so nothing is allocated then.
    pub fn implausible(&self) -> Vec<Implausible> {
        let mut found = Vec::new();
        let capacity_range = &PLAUSIBLE[0];
        let capacity = self
            .installed_capacity_ah
            .filter(|c| *c > 0.0 && (capacity_range.low..=capacity_range.high).contains(c));
        let cells = match self.cells_per_battery {
            Some(n) if (1.0..=MAX_CELLS_PER_PACK).contains(&(n as f64)) => Some(n as f64),
            _ if !self.cell_voltages_v.is_empty() => Some(self.cell_voltages_v.len() as f64),
            _ => None,
        };
        let bounds = |p: &Plausible| -> (f64, f64) {
            let ah = capacity.unwrap_or(MAX_INSTALLED_AH);
            match (p.per, cells) {
                (Per::Value, _) => (p.low, p.high),
                (Per::Cell, Some(n)) => (p.low * n, p.high * n),
                (Per::Cell, None) => (p.low, p.high * MAX_CELLS_PER_PACK),
                (Per::Ah, _) => (p.low * ah, p.high * ah),
                (Per::CellAh, n) => {
                    let n = n.unwrap_or(MAX_CELLS_PER_PACK);
                    (p.low * n * ah, p.high * n * ah)
                }
            }
        };
        // Said only for a value found outside: formatting every range each tick costs.
        let describe = |p: &Plausible| -> String {
            let (low, high) = bounds(p);
            match (p.per, cells) {
                (Per::Value, _) => format!("{low} to {high}"),
                (Per::Cell, Some(n)) => format!("{low} to {high} V ({n} cells)"),
                (Per::Cell, None) => format!("{low} to {high} V"),
                (Per::Ah, _) => {
                    format!("{low} to {high} ({} to {} per Ah installed)", p.low, p.high)
                }
                (Per::CellAh, _) => {
                    format!("{low} to {high} ({} to {} per cell and Ah)", p.low, p.high)
                }
            }
        };
        for (p, slot) in PLAUSIBLE.iter().zip(plausible_slots()) {
            if p.path == PLAUSIBLE[CELL_RANGE].path {
                let (low, high) = bounds(p);
                for (k, v) in self.cell_voltages_v.iter().enumerate() {
                    if let Some(v) = v.filter(|v| v.is_finite() && !(low..=high).contains(v)) {
                        found.push(Implausible {
                            path: cell_path(k + 1).into_owned(),
                            value: v,
                            range: format!("{} V", describe(p)),
                        });
                    }
                }
                continue;
            }
            let Some(Slot::Number(get, _)) = slot else {
                continue;
            };
            let (low, high) = bounds(p);
            // Not finite, or a capacity not above 0: the reading's check names it.
            let checked = |v: &f64| !v.is_finite() || (p.path == "/InstalledCapacity" && *v <= 0.0);
            if let Some(v) = get(self).filter(|v| !checked(v) && !(low..=high).contains(v)) {
                found.push(Implausible {
                    path: p.path.to_string(),
                    value: v,
                    range: describe(p),
                });
            }
        }
        // The pack's voltage against its cells, when every cell is there and plausible.
        let sum = self
            .cell_voltages_v
            .iter()
            .enumerate()
            .try_fold(0.0, |sum, (k, v)| {
                let bad = found.iter().any(|i| i.path == cell_path(k + 1));
                v.filter(|_| !bad).map(|v| sum + v)
            })
            .filter(|_| !self.cell_voltages_v.is_empty());
        if let (Some(sum), Some(v)) = (sum, self.voltage_v.filter(|v| v.is_finite())) {
            let slack = PACK_VS_CELLS_FRACTION * sum + PACK_VS_CELLS_V;
            let voltage_bad = found.iter().any(|i| i.path == "/Dc/0/Voltage");
            if !voltage_bad && (v - sum).abs() > slack {
                found.push(Implausible {
                    path: "/Dc/0/Voltage".into(),
                    value: v,
                    range: format!(
                        "{:.2} to {:.2} V (its cells' sum ± {:.2} V)",
                        sum - slack,
                        sum + slack,
                        slack
                    ),
                });
            }
        }
        found
    }

    /// Drops the values found outside their plausible range by [`BatteryReading::implausible`]:
    /// they read as not published.
    pub fn drop_implausible(&mut self, found: &[Implausible]) {
        for i in found {
            if let Some(k) = i
                .path
                .strip_prefix("/Voltages/Cell")
                .and_then(|k| k.parse::<usize>().ok())
            {
                if let Some(cell) = self.cell_voltages_v.get_mut(k.wrapping_sub(1)) {
                    *cell = None;
                }
            } else if let Some(Slot::Number(_, field)) = BATTERY_PATHS
                .iter()
                .find(|b| b.path == i.path)
                .map(|b| b.slot)
            {
                *field(self) = None;
            }
        }
    }

    /// The highest and lowest cell with their positions, when every cell is published and
    /// finite; `None` otherwise. Allocates nothing.
    fn cell_extremes(&self) -> Option<((f64, usize), (f64, usize))> {
        let mut cells = self.cell_voltages_v.iter().enumerate();
        let (_, first) = cells.next()?;
        let first = first.filter(|v| v.is_finite())?;
        let (mut max, mut min) = ((first, 0), (first, 0));
        for (k, v) in cells {
            let v = v.filter(|v| v.is_finite())?;
            if v > max.0 {
                max = (v, k);
            }
            if v < min.0 {
                min = (v, k);
            }
        }
        Some((max, min))
    }

    /// Whether [`BatteryReading::extremes_from_cells`] would change anything.
    pub fn cells_widen_extremes(&self) -> bool {
        let Some(((max, _), (min, _))) = self.cell_extremes() else {
            return false;
        };
        beyond(self.max_cell_voltage_v, max, Ordering::Greater)
            || beyond(self.min_cell_voltage_v, min, Ordering::Less)
    }

    /// Where the pack publishes every cell, `/System/MaxCellVoltage` and
    /// `/System/MinCellVoltage` are taken from its cells when it publishes none, and widened by
    /// them when a cell lies beyond (the two come as separate signals, and a driver may be
    /// wrong in one): the highest of both counts for the high-cell stop, the lowest for the
    /// low-cell stop, with the cell's id (`C<k>`, the first one on a tie). Returns whether it
    /// changed anything.
    pub fn extremes_from_cells(&mut self) -> bool {
        let Some(((max, k_max), (min, k_min))) = self.cell_extremes() else {
            return false;
        };
        let mut changed = false;
        if beyond(self.max_cell_voltage_v, max, Ordering::Greater) {
            self.max_cell_voltage_v = Some(max);
            self.max_voltage_cell_id = Some(format!("C{}", k_max + 1));
            changed = true;
        }
        if beyond(self.min_cell_voltage_v, min, Ordering::Less) {
            self.min_cell_voltage_v = Some(min);
            self.min_voltage_cell_id = Some(format!("C{}", k_min + 1));
            changed = true;
        }
        changed
    }

    /// Calls `each` with every value a pack must keep publishing once it has: its position in
    /// a fixed order and whether it is there now. The numbers and counts of [`BATTERY_PATHS`]
    /// (not `/TimeToGo`, which drivers leave invalid while the current is near 0),
    /// `/Alarms/BmsCable` (the other alarms are only passed on), then the cells.
    /// [`kept_value_path`] names a position.
    pub fn for_each_kept_value(&self, mut each: impl FnMut(usize, bool)) {
        for (k, p) in BATTERY_PATHS.iter().enumerate() {
            let there = match p.slot {
                _ if p.path == "/TimeToGo" => continue,
                Slot::Number(get, _) => get(self).is_some(),
                Slot::Integer(get, _) => get(self).is_some(),
                Slot::Text(..) => continue,
            };
            each(k, there);
        }
        let alarms = BATTERY_PATHS.len();
        each(alarms, self.alarms[ALARM_BMS_CABLE].is_some());
        let cells = alarms + 1;
        for (k, c) in self.cell_voltages_v.iter().enumerate() {
            each(cells + k, c.is_some());
        }
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

/// The path at a position of [`BatteryReading::for_each_kept_value`].
pub fn kept_value_path(position: usize) -> Cow<'static, str> {
    let alarms = BATTERY_PATHS.len();
    let cells = alarms + 1;
    if position < alarms {
        BATTERY_PATHS[position].path.into()
    } else if position < cells {
        alarm_paths()[ALARM_BMS_CABLE].as_str().into()
    } else {
        cell_path(position - cells + 1)
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
        assert!(alarm_paths().iter().all(|p| is_battery_path(p)));
        // Of a known path's length, but not known; longer than any; empty.
        assert!(!is_battery_path("/Dc/0/Voltagf") && !is_battery_path("/Dc/1/Voltage"));
        assert!(!is_battery_path(&"/x".repeat(100)) && !is_battery_path(""));
        assert!(!is_battery_path("/Voltages/Cell") && !is_battery_path("/Voltages/Cell1a"));
    }

    #[test]
    fn each_path_read_has_a_slot_of_its_own_and_cells_only_as_written_out() {
        let mut paths: Vec<String> = (BATTERY_PATHS.iter().map(|p| p.path.to_string()))
            .chain(alarm_paths().iter().cloned())
            .chain(IDENTITY_PATHS.map(String::from))
            .collect();
        paths.extend((1..=MAX_CELLS).map(|k| cell_path(k).into_owned()));
        let slots: Vec<usize> = paths
            .iter()
            .map(|p| battery_slot(p).unwrap_or_else(|| panic!("{p} has no slot")))
            .collect();
        // One slot each, in the documented order, from 0 with no gap.
        assert_eq!(slots, (0..paths.len()).collect::<Vec<_>>());
        assert_eq!(battery_slot("/Dc/0/Voltage"), Some(1));
        assert_eq!(battery_slot("/Alarms/LowVoltage"), Some(ALARM_SLOTS));
        assert_eq!(battery_slot("/ProductName"), Some(IDENTITY_SLOTS));
        assert_eq!(battery_slot("/Voltages/Cell1"), Some(CELL_SLOTS));
        assert_eq!(cell_slot(7), battery_slot("/Voltages/Cell7"));
        // Every path the cache keeps of a battery that has no slot is one no tick reads.
        for path in [
            "/Voltages/Cell0",
            "/Voltages/Cell07",
            "/Voltages/Cell1025",
            "/Voltages/Cell99999999999999999999",
            "/Voltages/Cell+1",
            "/Voltages/Cell",
            "/Voltages/Diff",
            "/Alarms/Unknown",
            "/Dc/1/Voltage",
            "",
        ] {
            assert_eq!(battery_slot(path), None, "{path}");
        }
        assert_eq!(cell_slot(0), None);
        assert_eq!(cell_slot(MAX_CELLS + 1), None);
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

    fn lfp16(cell_v: f64) -> BatteryReading {
        BatteryReading {
            voltage_v: Some(16.0 * cell_v),
            current_a: Some(-50.0),
            power_w: Some(-50.0 * 16.0 * cell_v),
            installed_capacity_ah: Some(280.0),
            soc_pct: Some(0.0),
            capacity_ah: Some(0.0),
            consumed_ah: Some(280.0),
            temperature_c: Some(-40.0),
            min_cell_temperature_c: Some(-40.0),
            max_cell_temperature_c: Some(-38.0),
            max_cell_voltage_v: Some(cell_v),
            min_cell_voltage_v: Some(cell_v),
            cells_per_battery: Some(16),
            cell_voltages_v: vec![Some(cell_v); 16],
            max_charge_voltage_v: Some(55.2),
            max_charge_current_a: Some(0.0),
            max_discharge_current_a: Some(0.0),
            ..Default::default()
        }
    }

    #[test]
    fn real_lfp_and_lto_packs_in_any_state_are_plausible() {
        // An LFP pack at rest after a deep discharge, in a −40 °C winter, empty, its BMS
        // allowing nothing.
        assert_eq!(lfp16(2.5).implausible(), []);
        assert_eq!(lfp16(3.65).implausible(), []);
        // LTO cells from 1.5 to 2.9 V; a CAN pack of 8 LTO cells without cell data.
        for cell_v in [1.5, 2.3, 2.9] {
            let mut lto = lfp16(cell_v);
            lto.max_charge_voltage_v = Some(16.0 * 2.8);
            lto.soc_pct = Some(100.0);
            lto.temperature_c = Some(60.0);
            lto.current_a = Some(2800.0); // 10 C
            lto.power_w = Some(2800.0 * 16.0 * cell_v);
            assert_eq!(lto.implausible(), [], "LTO at {cell_v} V");
        }
        let can = BatteryReading {
            voltage_v: Some(8.0 * 2.3),
            current_a: Some(100.0),
            installed_capacity_ah: Some(40.0),
            ..Default::default()
        };
        assert_eq!(can.implausible(), []);
    }

    #[test]
    fn absurd_values_are_found_and_dropped_naming_the_path() {
        let paths = |r: &BatteryReading| -> Vec<String> {
            r.implausible().into_iter().map(|i| i.path).collect()
        };
        type Spoil = fn(&mut BatteryReading);
        let cases: [(Spoil, &str); 12] = [
            (|r| r.voltage_v = Some(1e9), "/Dc/0/Voltage"),
            (|r| r.voltage_v = Some(2f64.powi(62)), "/Dc/0/Voltage"),
            (|r| r.voltage_v = Some(-1e9), "/Dc/0/Voltage"),
            (|r| r.current_a = Some(1e9), "/Dc/0/Current"),
            (|r| r.current_a = Some(-1e9), "/Dc/0/Current"),
            (|r| r.soc_pct = Some(1e9), "/Soc"),
            (
                |r| r.max_charge_current_a = Some(-1e9),
                "/Info/MaxChargeCurrent",
            ),
            (
                |r| r.max_discharge_current_a = Some(-1.0),
                "/Info/MaxDischargeCurrent",
            ),
            (|r| r.cell_voltages_v[3] = Some(-1e9), "/Voltages/Cell4"),
            (|r| r.cell_voltages_v[0] = Some(0.0), "/Voltages/Cell1"),
            (|r| r.temperature_c = Some(-273.0), "/Dc/0/Temperature"),
            (
                |r| r.installed_capacity_ah = Some(1e9),
                "/InstalledCapacity",
            ),
        ];
        for (spoil, path) in cases {
            let mut r = lfp16(3.3);
            spoil(&mut r);
            assert_eq!(paths(&r), [path]);
            let found = r.implausible();
            r.drop_implausible(&found);
            assert_eq!(paths(&r), Vec::<String>::new(), "{path} dropped");
        }
        let mut r = lfp16(3.3);
        r.cell_voltages_v[3] = Some(-1e9);
        let found = r.implausible();
        r.drop_implausible(&found);
        assert_eq!(r.cell_voltages_v[3], None);
        assert!(found[0]
            .to_string()
            .starts_with("/Voltages/Cell4 is -1000000000.0, outside 1 to 5"));
    }

    #[test]
    fn a_pack_voltage_is_held_to_its_cell_count_and_its_cells() {
        // 16 cells: 80 V is the most.
        let mut r = lfp16(3.3);
        r.voltage_v = Some(81.0);
        r.cell_voltages_v.clear();
        assert_eq!(r.implausible()[0].path, "/Dc/0/Voltage");
        // Far from the sum of its cells (52.8 V).
        let mut r = lfp16(3.3);
        r.voltage_v = Some(30.0);
        let found = r.implausible();
        assert_eq!(found.len(), 1);
        assert!(found[0].range.contains("cells' sum"), "{}", found[0]);
        // Under load, a few volts off its cells: plausible.
        r.voltage_v = Some(55.0);
        assert_eq!(r.implausible(), []);
    }

    #[test]
    fn extremes_come_from_the_cells_when_missing() {
        let mut r = lfp16(3.3);
        r.cell_voltages_v[6] = Some(3.4);
        r.cell_voltages_v[2] = Some(3.1);
        r.max_cell_voltage_v = None;
        r.min_cell_voltage_v = None;
        assert!(r.extremes_from_cells());
        assert_eq!(
            (r.max_cell_voltage_v, r.max_voltage_cell_id.as_deref()),
            (Some(3.4), Some("C7"))
        );
        assert_eq!(
            (r.min_cell_voltage_v, r.min_voltage_cell_id.as_deref()),
            (Some(3.1), Some("C3"))
        );
        r.max_cell_voltage_v = None;
        r.cell_voltages_v[0] = None;
        assert!(!r.extremes_from_cells(), "not with a cell missing");
    }

    #[test]
    fn a_cell_beyond_a_published_extreme_widens_it() {
        let mut r = lfp16(3.3);
        r.cell_voltages_v[4] = Some(2.6);
        r.cell_voltages_v[9] = Some(3.62);
        // Published, but not as low or as high as the cells show.
        r.min_cell_voltage_v = Some(3.29);
        r.max_cell_voltage_v = Some(3.31);
        assert!(r.cells_widen_extremes());
        assert!(r.extremes_from_cells());
        assert_eq!(
            (r.min_cell_voltage_v, r.min_voltage_cell_id.as_deref()),
            (Some(2.6), Some("C5"))
        );
        assert_eq!(
            (r.max_cell_voltage_v, r.max_voltage_cell_id.as_deref()),
            (Some(3.62), Some("C10"))
        );
        // Published beyond the cells: they stand, nothing to change.
        r.min_cell_voltage_v = Some(2.5);
        r.max_cell_voltage_v = Some(3.7);
        assert!(!r.cells_widen_extremes());
        assert!(!r.extremes_from_cells());
        assert_eq!(
            (r.min_cell_voltage_v, r.max_cell_voltage_v),
            (Some(2.5), Some(3.7))
        );
        // A NaN extreme counts as missing.
        r.min_cell_voltage_v = Some(f64::NAN);
        assert!(r.extremes_from_cells());
        assert_eq!(r.min_cell_voltage_v, Some(2.6));
    }

    #[test]
    fn every_plausible_range_is_of_a_number_read() {
        for (p, slot) in PLAUSIBLE.iter().zip(plausible_slots()) {
            let number = matches!(slot, Some(Slot::Number(..)));
            assert!(number || p.path == "/Voltages/Cell*", "{}", p.path);
        }
    }
}
