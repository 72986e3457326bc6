//! The paths of the published battery (SPEC §5 and §10) and what changed since the last tick.
//!
//! [`Published`] holds the value of every path. Each tick [`Published::update`] fills it from
//! the engine's [`Outcome`] and returns only the paths whose value changed by Python equality,
//! which the bus module sends as one `ItemsChanged`. No D-Bus here.

use std::collections::BTreeMap;

use crate::engine::Outcome;
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
pub struct Identity {
    /// `/DeviceInstance`.
    pub device_instance: i64,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/Mgmt/ProcessName`.
    pub process_name: String,
}

/// Every published path and its current value.
#[derive(Clone, Debug, Default)]
pub struct Published {
    items: BTreeMap<String, Item>,
}

/// The one writeable path.
pub const CUSTOM_NAME: &str = "/CustomName";

impl Published {
    /// The mandatory paths (valid from the start, so the service can be registered) and every
    /// data path, invalid until the first tick.
    pub fn new(identity: &Identity) -> Self {
        let mut published = Self::default();
        let version = env!("CARGO_PKG_VERSION");
        for (path, value, format) in [
            (
                "/Mgmt/ProcessName",
                Value::Text(identity.process_name.clone()),
                Plain,
            ),
            ("/Mgmt/ProcessVersion", Value::Text(version.into()), Plain),
            ("/Mgmt/Connection", Value::Text("Virtual".into()), Plain),
            (
                "/DeviceInstance",
                Value::Int(identity.device_instance),
                Plain,
            ),
            ("/ProductId", Value::Int(PRODUCT_ID), TextFormat::Hex),
            (
                "/ProductName",
                Value::Text("AggregateBatteries".into()),
                Plain,
            ),
            ("/FirmwareVersion", Value::Text(version.into()), Plain),
            ("/HardwareVersion", Value::Text(version.into()), Plain),
            ("/Connected", Value::Int(1), Plain),
            (
                CUSTOM_NAME,
                Value::Text(identity.custom_name.clone()),
                Plain,
            ),
        ] {
            published.set(path, value, format);
        }
        for (path, format) in DATA_PATHS {
            published.set(path, Value::Invalid, *format);
        }
        for path in alarm_paths() {
            published.set(path, Value::Invalid, Plain);
        }
        published
    }

    /// Every path, sorted.
    pub fn items(&self) -> &BTreeMap<String, Item> {
        &self.items
    }

    /// One path.
    pub fn get(&self, path: &str) -> Option<&Item> {
        self.items.get(path)
    }

    /// Sets a path; returns true when its value changed (Python equality, so `1` → `1.0` is
    /// no change and keeps the old type, as velib does).
    pub fn set(&mut self, path: &str, value: Value, format: TextFormat) -> bool {
        match self.items.get_mut(path) {
            Some(item) if item.value.same_as(&value) => false,
            Some(item) => {
                item.value = value;
                true
            }
            None => {
                self.items.insert(path.to_string(), Item { value, format });
                true
            }
        }
    }

    /// Fills the paths from a tick; returns the paths that changed, sorted.
    pub fn update(
        &mut self,
        outcome: &Outcome,
        cells: u32,
        cell_paths: &[(String, Option<f64>)],
    ) -> Vec<String> {
        let m = &outcome.merged;
        let extreme = |e: &Option<crate::bank::Extreme>| {
            e.as_ref().map_or((Value::Invalid, Value::Invalid), |e| {
                (Value::Float(e.value), Value::Text(e.id.clone()))
            })
        };
        let (max_cell, max_cell_id) = extreme(&m.max_cell_voltage);
        let (min_cell, min_cell_id) = extreme(&m.min_cell_voltage);
        let (max_temp, max_temp_id) = extreme(&m.max_cell_temperature);
        let (min_temp, min_temp_id) = extreme(&m.min_cell_temperature);
        let int = |n: i64| Value::Int(n);
        let mut alarms = m.alarms;
        // A battery lost or never found, or none online or held at all (SPEC §4).
        if !outcome.lost.is_empty() || outcome.missing > 0 || m.count == 0 {
            alarms[ALARM_BMS_CABLE] = Some(alarms[ALARM_BMS_CABLE].unwrap_or(0).max(2));
        }
        // With no battery left, the last voltage stays (SPEC §4): DVCC keeps a sane reference.
        let voltage = match m.voltage_v {
            Some(v) => Value::Float(v),
            None => self
                .get("/Dc/0/Voltage")
                .map_or(Value::Invalid, |i| i.value.clone()),
        };
        let online = i64::from(outcome.online);
        let values: Vec<(&str, Value)> = vec![
            ("/Dc/0/Voltage", voltage),
            ("/Dc/0/Current", Value::float(outcome.current_a)),
            ("/Dc/0/Power", Value::float(outcome.power_w)),
            ("/Dc/0/Temperature", Value::float(m.temperature_c)),
            ("/Soc", Value::float(outcome.soc_pct)),
            ("/TimeToGo", Value::float(outcome.time_to_go_s)),
            ("/Capacity", Value::float(outcome.capacity_ah)),
            (
                "/InstalledCapacity",
                Value::float((m.count > 0).then_some(m.installed_capacity_ah)),
            ),
            ("/ConsumedAmphours", Value::float(outcome.consumed_ah)),
            ("/System/MaxCellVoltage", max_cell),
            ("/System/MaxVoltageCellId", max_cell_id),
            ("/System/MinCellVoltage", min_cell),
            ("/System/MinVoltageCellId", min_cell_id),
            ("/System/MaxCellTemperature", max_temp),
            ("/System/MaxTemperatureCellId", max_temp_id),
            ("/System/MinCellTemperature", min_temp),
            ("/System/MinTemperatureCellId", min_temp_id),
            ("/System/NrOfCellsPerBattery", int(i64::from(cells))),
            ("/System/NrOfModulesOnline", int(m.modules_online)),
            ("/System/NrOfModulesOffline", int(m.modules_offline)),
            (
                "/System/NrOfModulesBlockingCharge",
                int(m.modules_blocking_charge),
            ),
            (
                "/System/NrOfModulesBlockingDischarge",
                int(m.modules_blocking_discharge),
            ),
            ("/System/NrOfBatteries", int(online)),
            ("/System/BatteriesParallel", int(online)),
            ("/System/BatteriesSeries", int(1)),
            ("/Voltages/Sum", Value::float(m.voltages_sum_v)),
            ("/Voltages/Diff", Value::float(m.voltages_diff_v)),
            ("/Info/MaxChargeVoltage", Value::Float(outcome.limits.cvl_v)),
            ("/Info/MaxChargeCurrent", Value::Float(outcome.limits.ccl_a)),
            (
                "/Info/MaxDischargeCurrent",
                Value::Float(outcome.limits.dcl_a),
            ),
            ("/Info/ChargeMode", Value::Text(outcome.mode.clone())),
            ("/Io/AllowToCharge", Value::int(m.allow_to_charge)),
            ("/Io/AllowToDischarge", Value::int(m.allow_to_discharge)),
            ("/Io/AllowToBalance", Value::int(m.allow_to_balance)),
        ];
        let mut changed = Vec::new();
        for (path, value) in values {
            let format = self.get(path).map_or(Plain, |i| i.format);
            if self.set(path, value, format) {
                changed.push(path.to_string());
            }
        }
        for (path, alarm) in alarm_paths().iter().zip(alarms) {
            if self.set(path, Value::int(alarm), Plain) {
                changed.push(path.clone());
            }
        }
        for (path, voltage) in cell_paths {
            if self.set(path, Value::float(*voltage), Fixed(3, "V")) {
                changed.push(path.clone());
            }
        }
        changed.sort();
        changed
    }
}

/// The data paths and their text formats (REFERENCE §1.3, HEAD §3.8).
const DATA_PATHS: &[(&str, TextFormat)] = &[
    ("/Dc/0/Voltage", Fixed(2, "V")),
    ("/Dc/0/Current", Fixed(2, "A")),
    ("/Dc/0/Power", Fixed(0, "W")),
    ("/Dc/0/Temperature", Plain),
    ("/Soc", Plain),
    ("/TimeToGo", Plain),
    ("/Capacity", Fixed(0, "Ah")),
    ("/InstalledCapacity", Fixed(0, "Ah")),
    ("/ConsumedAmphours", Fixed(0, "Ah")),
    ("/System/MaxCellVoltage", Fixed(3, "V")),
    ("/System/MaxVoltageCellId", Plain),
    ("/System/MinCellVoltage", Fixed(3, "V")),
    ("/System/MinVoltageCellId", Plain),
    ("/System/MaxCellTemperature", Plain),
    ("/System/MaxTemperatureCellId", Plain),
    ("/System/MinCellTemperature", Plain),
    ("/System/MinTemperatureCellId", Plain),
    ("/System/NrOfCellsPerBattery", Plain),
    ("/System/NrOfModulesOnline", Plain),
    ("/System/NrOfModulesOffline", Plain),
    ("/System/NrOfModulesBlockingCharge", Plain),
    ("/System/NrOfModulesBlockingDischarge", Plain),
    ("/System/NrOfBatteries", Plain),
    ("/System/BatteriesParallel", Plain),
    ("/System/BatteriesSeries", Plain),
    ("/Voltages/Sum", Fixed(3, "V")),
    ("/Voltages/Diff", Fixed(3, "V")),
    ("/Info/MaxChargeVoltage", Fixed(2, "V")),
    ("/Info/MaxChargeCurrent", Fixed(1, "A")),
    ("/Info/MaxDischargeCurrent", Fixed(1, "A")),
    ("/Info/ChargeMode", Plain),
    ("/Io/AllowToCharge", Plain),
    ("/Io/AllowToDischarge", Plain),
    ("/Io/AllowToBalance", Plain),
];

/// `/Voltages/<battery>_Cell<k>`: the battery name with every run of characters outside
/// `[A-Za-z0-9_]` removed (REFERENCE §1.3).
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
    use crate::bank::{Extreme, Merged};
    use crate::envelope::Limits;

    fn identity() -> Identity {
        Identity {
            device_instance: 100,
            custom_name: "Bank".into(),
            process_name: "dab".into(),
        }
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
    fn mandatory_paths_are_valid_from_the_start() {
        let p = Published::new(&identity());
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
        let mut p = Published::new(&identity());
        let changed = p.update(&outcome(), 16, &[]);
        assert!(changed.contains(&"/Dc/0/Voltage".to_string()));
        assert_eq!(p.get("/Dc/0/Voltage").unwrap().text(), "52.10V");
        assert_eq!(p.get("/Info/MaxChargeVoltage").unwrap().text(), "55.20V");
        assert_eq!(p.get("/Info/MaxChargeCurrent").unwrap().text(), "200.0A");
        assert_eq!(p.get("/Dc/0/Power").unwrap().text(), "-287W");
        assert_eq!(p.get("/Soc").unwrap().text(), "78.0");
        assert_eq!(p.get("/System/MaxVoltageCellId").unwrap().text(), "Bat1_C7");
        assert_eq!(p.get("/InstalledCapacity").unwrap().text(), "560Ah");
        assert!(
            !changed.contains(&"/Alarms/LowVoltage".to_string()),
            "invalid stays invalid"
        );

        let mut next = outcome();
        next.current_a = Some(-6.0);
        assert_eq!(p.update(&next, 16, &[]), vec!["/Dc/0/Current".to_string()]);
        assert!(p.update(&next, 16, &[]).is_empty());
    }

    #[test]
    fn a_lost_battery_raises_the_cable_alarm_and_no_battery_keeps_the_voltage() {
        let mut p = Published::new(&identity());
        p.update(&outcome(), 16, &[]);
        let mut lost = outcome();
        lost.lost = vec!["Bat2".into()];
        lost.merged.voltage_v = None;
        lost.merged.count = 0;
        p.update(&lost, 16, &[]);
        assert_eq!(p.get("/Alarms/BmsCable").unwrap().value, Value::Int(2));
        assert_eq!(p.get("/Dc/0/Voltage").unwrap().text(), "52.10V");
    }

    #[test]
    fn cell_paths_are_sanitised() {
        assert_eq!(cell_path("Bank A (left)", 3), "/Voltages/BankAleft_Cell3");
        let mut p = Published::new(&identity());
        let changed = p.update(&outcome(), 16, &[(cell_path("Bat1", 1), Some(3.3))]);
        assert!(changed.contains(&"/Voltages/Bat1_Cell1".to_string()));
        assert_eq!(p.get("/Voltages/Bat1_Cell1").unwrap().text(), "3.300V");
    }
}
