//! The paths of the published battery (docs/service.md §2 and §4) and what changed since the last
//! tick.
//!
//! [`Published`] holds the value of every path. Each tick [`Published::update`] fills it from
//! the engine's [`Outcome`] and returns only the paths whose value changed by Python equality,
//! which the bus module sends as one `ItemsChanged`. No D-Bus here.

use crate::bank::{Extreme, Merged};
use crate::engine::Outcome;
use crate::listing::BankListing;
use crate::path_hash::PathMap;
use crate::presence::Battery;
use crate::reading::{alarm_paths, ALARM_BMS_CABLE};
use crate::value::TextFormat::{self, Fixed, Plain};
use crate::value::Value;

/// `/ProductId` of the aggregate battery.
pub const PRODUCT_ID: i64 = 0xBA44;

/// One path: its value and how it reads as text.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// The value.
    pub value: Value,
    /// Its text format.
    pub format: TextFormat,
}

impl Item {
    /// The text of the value.
    pub fn text(&self) -> String {
        self.format.render(&self.value)
    }
}

/// Who we are on the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// `/DeviceInstance`.
    pub device_instance: i64,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/Mgmt/ProcessName`.
    pub process_name: String,
}

/// Every published path and its current value. One made by `default` holds every data path
/// and alarm path, invalid; [`Published::new`] adds the mandatory paths.
#[derive(Clone, Debug)]
pub struct Published {
    /// Every path and its item, in the order each was first set.
    items: Vec<(String, Item)>,
    /// The index of each path in `items`.
    index: PathMap<usize>,
    /// The index of each of [`DATA_PATHS`], then of each alarm path, in `items`: a tick sets
    /// these by index, not by hashing each path and comparing it with its key, in memory gone
    /// cold since the tick before. Taken when made.
    fixed: Vec<usize>,
    listing: BankListing,
    /// The cell paths of the last tick, in its order.
    cells_shown: Vec<String>,
}

/// `/System/Batteries`: one JSON entry per pack (see [`BankListing`]).
pub const BATTERIES: &str = "/System/Batteries";
/// `/System/BatteriesOnline`: `n/m`.
pub const BATTERIES_ONLINE: &str = "/System/BatteriesOnline";

/// The one writeable path.
pub const CUSTOM_NAME: &str = "/CustomName";

impl Default for Published {
    /// Every data path and alarm path, invalid, each with its index in `fixed`.
    fn default() -> Self {
        let mut published = Self {
            items: Vec::new(),
            index: PathMap::default(),
            fixed: Vec::new(),
            listing: BankListing::default(),
            cells_shown: Vec::new(),
        };
        let fixed = (DATA_PATHS.iter().map(|(path, format, _)| (*path, *format)))
            .chain(alarm_paths().iter().map(|path| (path.as_str(), Plain)));
        for (path, format) in fixed {
            published.set(path, Value::Invalid, format);
            published.fixed.push(published.index[path]);
        }
        published
    }
}

impl Published {
    /// The mandatory paths (valid from the start, so the service can be registered) and every
    /// data path, invalid until the first tick.
    pub fn new(device: &DeviceInfo) -> Self {
        let mut published = Self::default();
        let version = env!("CARGO_PKG_VERSION");
        for (path, value, format) in [
            (
                "/Mgmt/ProcessName",
                Value::Text(device.process_name.clone()),
                Plain,
            ),
            ("/Mgmt/ProcessVersion", Value::Text(version.into()), Plain),
            ("/Mgmt/Connection", Value::Text("Virtual".into()), Plain),
            ("/DeviceInstance", Value::Int(device.device_instance), Plain),
            ("/ProductId", Value::Int(PRODUCT_ID), TextFormat::Hex),
            (
                "/ProductName",
                Value::Text("AggregateBatteries".into()),
                Plain,
            ),
            ("/FirmwareVersion", Value::Text(version.into()), Plain),
            ("/HardwareVersion", Value::Text(version.into()), Plain),
            ("/Connected", Value::Int(1), Plain),
            (CUSTOM_NAME, Value::Text(device.custom_name.clone()), Plain),
        ] {
            published.set(path, value, format);
        }
        for path in [BATTERIES, BATTERIES_ONLINE] {
            published.set(path, Value::Invalid, Plain);
        }
        published
    }

    /// Every path, sorted.
    pub fn items(&self) -> Vec<(&String, &Item)> {
        let mut items: Vec<_> = self.items.iter().map(|(path, item)| (path, item)).collect();
        items.sort_unstable_by(|a, b| a.0.cmp(b.0));
        items
    }

    /// One path.
    pub fn get(&self, path: &str) -> Option<&Item> {
        let &at = self.index.get(path)?;
        Some(&self.items[at].1)
    }

    /// Sets a path; returns true when its value changed (Python equality, so `1` → `1.0` is
    /// no change and keeps the old type, as velib does).
    pub fn set(&mut self, path: &str, value: Value, format: TextFormat) -> bool {
        match self.index.get(path) {
            Some(&at) => self.set_at(at, value),
            None => {
                self.index.insert(path.to_string(), self.items.len());
                self.items.push((path.to_string(), Item { value, format }));
                true
            }
        }
    }

    /// [`Published::set`] of the path at `at` in `items`.
    fn set_at(&mut self, at: usize, value: Value) -> bool {
        let item = &mut self.items[at].1;
        if item.value.same_as(&value) {
            return false;
        }
        item.value = value;
        true
    }

    /// Fills the paths from a tick and its batteries; returns the paths that changed, sorted.
    pub fn update(
        &mut self,
        outcome: &Outcome,
        batteries: &[Battery],
        cells: u32,
        cell_paths: &[(String, Option<f64>)],
    ) -> Vec<String> {
        // With no battery left, the last voltage stays (docs/battery-states.md §9): DVCC keeps a
        // sane reference.
        let last_voltage = self
            .get("/Dc/0/Voltage")
            .map_or(Value::Invalid, |i| i.value.clone());
        let tick = Tick {
            outcome,
            cells,
            last_voltage,
        };
        let mut alarms = outcome.merged.alarms;
        // A battery lost or never found, or none online or held at all (docs/service.md §6).
        if !outcome.lost.is_empty()
            || !outcome.left_out.is_empty()
            || outcome.missing > 0
            || outcome.merged.count == 0
        {
            alarms[ALARM_BMS_CABLE] = Some(alarms[ALARM_BMS_CABLE].unwrap_or(0).max(2));
        }
        let mut changed = Vec::new();
        let values = (DATA_PATHS.iter().map(|(_, _, value)| value(&tick)))
            .chain(alarms.into_iter().map(Value::int));
        for (k, value) in values.enumerate() {
            let at = self.fixed[k];
            if self.set_at(at, value) {
                changed.push(self.items[at].0.clone());
            }
        }
        for (path, voltage) in cell_paths {
            if self.set(path, Value::float(*voltage), Fixed(3, "V")) {
                changed.push(path.clone());
            }
        }
        // A battery lost or left out: its cells' last voltages are not what they are now.
        if !self
            .cells_shown
            .iter()
            .eq(cell_paths.iter().map(|(p, _)| p))
        {
            let now: std::collections::HashSet<&str> =
                cell_paths.iter().map(|(p, _)| p.as_str()).collect();
            let gone: Vec<String> = (self.cells_shown.iter())
                .filter(|p| !now.contains(p.as_str()))
                .cloned()
                .collect();
            for path in gone {
                if self.set(&path, Value::Invalid, Fixed(3, "V")) {
                    changed.push(path);
                }
            }
            self.cells_shown = cell_paths.iter().map(|(p, _)| p.clone()).collect();
        }
        let (listing, online) = self
            .listing
            .update(batteries, &outcome.left_out, outcome.missing);
        if listing {
            let json = Value::Text(self.listing.json().to_string());
            if self.set(BATTERIES, json, Plain) {
                changed.push(BATTERIES.to_string());
            }
        }
        if online {
            let text = Value::Text(self.listing.online_text().to_string());
            if self.set(BATTERIES_ONLINE, text, Plain) {
                changed.push(BATTERIES_ONLINE.to_string());
            }
        }
        changed.sort();
        changed
    }
}

/// What a data path's value is made from.
struct Tick<'a> {
    outcome: &'a Outcome,
    cells: u32,
    /// The published `/Dc/0/Voltage` before this tick.
    last_voltage: Value,
}

impl Tick<'_> {
    fn merged(&self) -> &Merged {
        &self.outcome.merged
    }
}

fn value_of(e: &Option<Extreme>) -> Value {
    e.as_ref().map_or(Value::Invalid, |e| Value::Float(e.value))
}

fn id_of(e: &Option<Extreme>) -> Value {
    e.as_ref()
        .map_or(Value::Invalid, |e| Value::Text(e.id.clone()))
}

/// A data path: its text format (docs/service.md §4 and §5) and how its value is made.
type DataPath = (&'static str, TextFormat, fn(&Tick<'_>) -> Value);

/// Every data path: the one list from which the paths are made and filled each tick.
const DATA_PATHS: &[DataPath] = &[
    ("/Dc/0/Voltage", Fixed(2, "V"), |t| {
        t.merged()
            .voltage_v
            .map_or_else(|| t.last_voltage.clone(), Value::Float)
    }),
    ("/Dc/0/Current", Fixed(2, "A"), |t| {
        Value::float(t.outcome.current_a)
    }),
    ("/Dc/0/Power", Fixed(0, "W"), |t| {
        Value::float(t.outcome.power_w)
    }),
    ("/Dc/0/Temperature", Plain, |t| {
        Value::float(t.merged().temperature_c)
    }),
    ("/Soc", Plain, |t| Value::float(t.outcome.soc_pct)),
    ("/TimeToGo", Plain, |t| Value::float(t.outcome.time_to_go_s)),
    // For the stock battery page: the packs' state of health, weighted as the SoC is.
    ("/Soh", Plain, |t| Value::float(t.merged().soh_pct)),
    ("/Capacity", Fixed(0, "Ah"), |t| {
        Value::float(t.outcome.capacity_ah)
    }),
    ("/InstalledCapacity", Fixed(0, "Ah"), |t| {
        let m = t.merged();
        Value::float((m.count > 0).then_some(m.installed_capacity_ah))
    }),
    ("/ConsumedAmphours", Fixed(0, "Ah"), |t| {
        Value::float(t.outcome.consumed_ah)
    }),
    ("/System/MaxCellVoltage", Fixed(3, "V"), |t| {
        value_of(&t.merged().max_cell_voltage)
    }),
    ("/System/MaxVoltageCellId", Plain, |t| {
        id_of(&t.merged().max_cell_voltage)
    }),
    ("/System/MinCellVoltage", Fixed(3, "V"), |t| {
        value_of(&t.merged().min_cell_voltage)
    }),
    ("/System/MinVoltageCellId", Plain, |t| {
        id_of(&t.merged().min_cell_voltage)
    }),
    ("/System/MaxCellTemperature", Plain, |t| {
        value_of(&t.merged().max_cell_temperature)
    }),
    ("/System/MaxTemperatureCellId", Plain, |t| {
        id_of(&t.merged().max_cell_temperature)
    }),
    ("/System/MinCellTemperature", Plain, |t| {
        value_of(&t.merged().min_cell_temperature)
    }),
    ("/System/MinTemperatureCellId", Plain, |t| {
        id_of(&t.merged().min_cell_temperature)
    }),
    ("/System/NrOfCellsPerBattery", Plain, |t| {
        Value::Int(i64::from(t.cells))
    }),
    ("/System/NrOfModulesOnline", Plain, |t| {
        Value::Int(t.merged().modules_online)
    }),
    ("/System/NrOfModulesOffline", Plain, |t| {
        Value::Int(t.merged().modules_offline)
    }),
    ("/System/NrOfModulesBlockingCharge", Plain, |t| {
        Value::Int(t.merged().modules_blocking_charge)
    }),
    ("/System/NrOfModulesBlockingDischarge", Plain, |t| {
        Value::Int(t.merged().modules_blocking_discharge)
    }),
    ("/System/NrOfBatteries", Plain, |t| {
        Value::Int(i64::from(t.outcome.online))
    }),
    ("/System/BatteriesParallel", Plain, |t| {
        Value::Int(i64::from(t.outcome.online))
    }),
    ("/System/BatteriesSeries", Plain, |_| Value::Int(1)),
    ("/Voltages/Sum", Fixed(3, "V"), |t| {
        Value::float(t.merged().voltages_sum_v)
    }),
    ("/Voltages/Diff", Fixed(3, "V"), |t| {
        Value::float(t.merged().voltages_diff_v)
    }),
    ("/Info/MaxChargeVoltage", Fixed(2, "V"), |t| {
        Value::Float(t.outcome.limits.cvl_v)
    }),
    ("/Info/MaxChargeCurrent", Fixed(1, "A"), |t| {
        Value::Float(t.outcome.limits.ccl_a)
    }),
    ("/Info/MaxDischargeCurrent", Fixed(1, "A"), |t| {
        Value::Float(t.outcome.limits.dcl_a)
    }),
    ("/Info/ChargeMode", Plain, |t| {
        Value::Text(t.outcome.mode.clone())
    }),
    ("/Io/AllowToCharge", Plain, |t| {
        Value::int(t.merged().allow_to_charge)
    }),
    ("/Io/AllowToDischarge", Plain, |t| {
        Value::int(t.merged().allow_to_discharge)
    }),
    ("/Io/AllowToBalance", Plain, |t| {
        Value::int(t.merged().allow_to_balance)
    }),
];

/// `/Voltages/<battery>_Cell<k>`: the battery name with every run of characters outside
/// `[A-Za-z0-9_]` removed (docs/service.md §9).
pub fn cell_path(battery: &str, cell: usize) -> String {
    let name: String = battery
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("/Voltages/{name}_Cell{cell}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Limits;

    fn device() -> DeviceInfo {
        DeviceInfo {
            device_instance: 100,
            custom_name: "Bank".into(),
            process_name: "dab".into(),
        }
    }

    #[test]
    fn every_path_is_listed_once_in_path_order() {
        let mut published = Published::new(&device());
        assert!(published.set("/Aaa/Added", Value::Int(1), Plain));
        assert!(!published.set("/Aaa/Added", Value::Float(1.0), Plain));
        let paths: Vec<&str> = published.items().iter().map(|(p, _)| p.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(paths, sorted);
        assert_eq!(paths.first(), Some(&"/Aaa/Added"));
        assert!(paths.contains(&"/Dc/0/Voltage") && paths.contains(&BATTERIES));
    }

    fn outcome() -> Outcome {
        Outcome {
            merged: Merged {
                count: 2,
                voltage_v: Some(52.1),
                max_cell_voltage: Some(Extreme {
                    value: 3.45,
                    id: "Bat1_C7".into(),
                }),
                min_cell_voltage: Some(Extreme {
                    value: 3.3,
                    id: "Bat2_C1".into(),
                }),
                installed_capacity_ah: 560.0,
                ..Default::default()
            },
            online: 2,
            lost: Vec::new(),
            left_out: Vec::new(),
            missing: 0,
            current_a: Some(-5.5),
            power_w: Some(-286.55),
            soc_pct: Some(78.0),
            capacity_ah: Some(436.8),
            consumed_ah: Some(-123.2),
            time_to_go_s: None,
            limits: Limits {
                cvl_v: 55.2,
                ccl_a: 200.0,
                dcl_a: 150.0,
            },
            mode: "Normal".into(),
            feed_in_write: None,
            save_state: false,
            events: Vec::new(),
        }
    }

    #[test]
    fn the_cells_of_a_battery_no_longer_shown_turn_invalid() {
        let mut p = Published::new(&device());
        let both = [
            ("/Voltages/A_Cell1".to_string(), Some(3.30)),
            ("/Voltages/B_Cell1".to_string(), Some(3.31)),
        ];
        p.update(&outcome(), &[], 16, &both);
        assert_eq!(p.get("/Voltages/B_Cell1").unwrap().text(), "3.310V");
        // B lost: its cell is not in the tick's list any more.
        let changed = p.update(&outcome(), &[], 16, &both[..1]);
        assert_eq!(changed, ["/Voltages/B_Cell1".to_string()]);
        assert_eq!(p.get("/Voltages/B_Cell1").unwrap().value, Value::Invalid);
        assert_eq!(p.get("/Voltages/A_Cell1").unwrap().text(), "3.300V");
        assert!(p.update(&outcome(), &[], 16, &both[..1]).is_empty());
        // Back: its cell again.
        let changed = p.update(&outcome(), &[], 16, &both);
        assert_eq!(changed, ["/Voltages/B_Cell1".to_string()]);
        assert_eq!(p.get("/Voltages/B_Cell1").unwrap().text(), "3.310V");
    }

    #[test]
    fn mandatory_paths_are_valid_from_the_start() {
        let p = Published::new(&device());
        assert_eq!(p.get("/DeviceInstance").unwrap().value, Value::Int(100));
        assert_eq!(p.get("/ProductId").unwrap().text(), "0xBA44");
        assert_eq!(
            p.get("/Mgmt/Connection").unwrap().value,
            Value::Text("Virtual".into())
        );
        assert_eq!(p.get("/Dc/0/Voltage").unwrap().text(), "---");
        assert_eq!(
            p.get("/Alarms/HighCellVoltage").unwrap().value,
            Value::Invalid
        );
    }

    #[test]
    fn a_tick_fills_values_with_texts_and_reports_only_changes() {
        let mut p = Published::new(&device());
        let changed = p.update(&outcome(), &[], 16, &[]);
        assert!(changed.contains(&"/Dc/0/Voltage".to_string()));
        assert_eq!(p.get("/Dc/0/Voltage").unwrap().text(), "52.10V");
        assert_eq!(p.get("/Info/MaxChargeVoltage").unwrap().text(), "55.20V");
        assert_eq!(p.get("/Info/MaxChargeCurrent").unwrap().text(), "200.0A");
        assert_eq!(p.get("/Dc/0/Power").unwrap().text(), "-287W");
        assert_eq!(p.get("/Soc").unwrap().text(), "78.0");
        assert_eq!(p.get("/System/MaxVoltageCellId").unwrap().text(), "Bat1_C7");
        assert_eq!(p.get("/InstalledCapacity").unwrap().text(), "560Ah");
        assert_eq!(
            p.get("/Soh").unwrap().value,
            Value::Invalid,
            "no pack has one"
        );
        assert!(
            !changed.contains(&"/Alarms/LowVoltage".to_string()),
            "invalid stays invalid"
        );

        let mut next = outcome();
        next.current_a = Some(-6.0);
        assert_eq!(
            p.update(&next, &[], 16, &[]),
            vec!["/Dc/0/Current".to_string()]
        );
        assert!(p.update(&next, &[], 16, &[]).is_empty());
    }

    #[test]
    fn one_made_by_default_publishes_the_data_paths_as_one_made_by_new() {
        let mut made = Published::new(&device());
        let mut default = Published::default();
        let mut next = outcome();
        for _ in 0..2 {
            made.update(&next, &[], 16, &[]);
            default.update(&next, &[], 16, &[]);
            let fixed = (DATA_PATHS.iter().map(|(path, _, _)| path.to_string()))
                .chain(alarm_paths().iter().cloned());
            for path in fixed {
                assert_eq!(default.get(&path), made.get(&path), "{path}");
            }
            next.current_a = Some(-6.0);
        }
        next.current_a = Some(-7.0);
        let changed = default.update(&next, &[], 16, &[]);
        assert_eq!(changed, vec!["/Dc/0/Current".to_string()]);
        assert_eq!(changed, made.update(&next, &[], 16, &[]));
    }

    #[test]
    fn a_lost_battery_raises_the_cable_alarm_and_no_battery_keeps_the_voltage() {
        let mut p = Published::new(&device());
        p.update(&outcome(), &[], 16, &[]);
        let mut lost = outcome();
        lost.lost = vec!["Bat2".into()];
        lost.merged.voltage_v = None;
        lost.merged.count = 0;
        p.update(&lost, &[], 16, &[]);
        assert_eq!(p.get("/Alarms/BmsCable").unwrap().value, Value::Int(2));
        assert_eq!(p.get("/Dc/0/Voltage").unwrap().text(), "52.10V");
    }

    #[test]
    fn cell_paths_are_sanitised() {
        assert_eq!(cell_path("Bank A (left)", 3), "/Voltages/BankAleft_Cell3");
        let mut p = Published::new(&device());
        let changed = p.update(&outcome(), &[], 16, &[(cell_path("Bat1", 1), Some(3.3))]);
        assert!(changed.contains(&"/Voltages/Bat1_Cell1".to_string()));
        assert_eq!(p.get("/Voltages/Bat1_Cell1").unwrap().text(), "3.300V");
    }
}
