//! The scenario file as written: structs that mirror the YAML (unknown keys are errors), their
//! defaults, and their checks and resolution into a [`Scenario`], every error naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;

use aggregator::config::valid_name_element;
use aggregator_core::value::Value;

use crate::Error;

use super::{
    AcPhase, BatterySpec, CellData, DcDeviceSpec, Limits, Override, Ramp, Scenario, Segment,
    SettingsSpec, ShuntClass, ShuntSpec, Signals, Start, ALARMS, DEFAULT_CELL_V,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawScenario {
    #[serde(
        default = "one_second",
        deserialize_with = "aggregator::config::duration"
    )]
    step: Duration,
    #[serde(default)]
    signals: Signals,
    #[serde(default)]
    jitter: bool,
    #[serde(default)]
    repeat: bool,
    #[serde(default)]
    batteries: Vec<RawBattery>,
    vebus: Option<RawVebus>,
    #[serde(default)]
    solar_chargers: usize,
    smartshunt: Option<RawShunt>,
    #[serde(default)]
    dc_devices: Vec<RawDcDevice>,
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    system: RawSystem,
    #[serde(default)]
    segments: Vec<RawSegment>,
    start: Option<String>,
    state: Option<aggregator_core::state::State>,
    #[serde(default)]
    battery_current_from_devices: bool,
    /// Not read: a place for YAML anchors (`&night`) that segments repeat (`- *night`).
    #[serde(default)]
    #[allow(dead_code)]
    templates: Option<IgnoredAny>,
}

/// The most devices of one kind a scenario has.
const MOST_DEVICES: usize = 64;

fn one_second() -> Duration {
    Duration::from_secs(1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBattery {
    service: String,
    custom_name: Option<String>,
    serial: Option<String>,
    device_instance: Option<i64>,
    product_name: Option<String>,
    #[serde(default = "sixteen")]
    cells: usize,
    #[serde(default = "two_hundred_eighty")]
    capacity_ah: f64,
    #[serde(default = "fifty")]
    soc: f64,
    #[serde(default)]
    cell_data: CellData,
    #[serde(default = "lfp_cvl_per_cell")]
    cvl_per_cell: f64,
}

fn lfp_cvl_per_cell() -> f64 {
    3.45
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDcDevice {
    class: String,
    current: Option<f64>,
    device_instance: Option<i64>,
    #[serde(default)]
    ac_out: Vec<RawAcPhase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcPhase {
    power: Option<f64>,
    voltage: Option<f64>,
    current: Option<f64>,
}

fn sixteen() -> usize {
    16
}

fn two_hundred_eighty() -> f64 {
    280.0
}

fn fifty() -> f64 {
    50.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVebus {
    #[serde(default = "vebus_instance")]
    device_instance: i64,
}

fn vebus_instance() -> i64 {
    276
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShunt {
    #[serde(default)]
    class: ShuntClass,
    #[serde(default = "shunt_instance")]
    device_instance: i64,
    #[serde(default = "shunt_name")]
    custom_name: String,
    #[serde(default = "shunt_product")]
    product_name: String,
    soc: Option<f64>,
}

fn shunt_product() -> String {
    "SmartShunt 500A/50mV".to_string()
}

fn shunt_instance() -> i64 {
    40
}

fn shunt_name() -> String {
    "SmartShunt".to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    absent: bool,
    #[serde(default = "one")]
    overvoltage_feed_in: i64,
    #[serde(default)]
    preset: BTreeMap<String, serde_yaml::Value>,
}

impl Default for RawSettings {
    fn default() -> Self {
        RawSettings {
            absent: false,
            overvoltage_feed_in: 1,
            preset: BTreeMap::new(),
        }
    }
}

fn one() -> i64 {
    1
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSystem {
    #[serde(default)]
    absent: bool,
    #[serde(default)]
    low_soc: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSegment {
    #[serde(deserialize_with = "aggregator::config::duration")]
    duration: Duration,
    cell_voltage: Option<Ramp>,
    battery_current: Option<Ramp>,
    vebus_current: Option<Ramp>,
    vebus_connected: Option<i64>,
    solar_current: Option<Ramp>,
    shunt_current: Option<Ramp>,
    cell_spread: Option<Ramp>,
    #[serde(default)]
    batteries: BTreeMap<String, RawOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    cell_offset: Option<Ramp>,
    #[serde(default)]
    cells: BTreeMap<usize, Ramp>,
    current: Option<Ramp>,
    #[serde(default)]
    blocking_charge: bool,
    #[serde(default)]
    blocking_discharge: bool,
    #[serde(default)]
    alarms: BTreeMap<String, i64>,
    limits: Option<RawLimits>,
    #[serde(default)]
    gone: bool,
    #[serde(default)]
    frozen: bool,
    #[serde(default)]
    values: BTreeMap<String, serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    cvl: Option<Ramp>,
    ccl: Option<Ramp>,
    dcl: Option<Ramp>,
    charge_mode: Option<String>,
}

/// A check failure: the key and what is wrong.
type Problem = (String, String);

impl RawScenario {
    pub(super) fn resolve(self) -> Result<Scenario, Problem> {
        if self.step < Duration::from_millis(10) {
            return Err(("step".into(), "must be at least 10ms".into()));
        }
        // Each device is a service of its own: a bank far beyond any real one is a typo.
        for (key, count) in [
            ("batteries", self.batteries.len()),
            ("solar_chargers", self.solar_chargers),
            ("dc_devices", self.dc_devices.len()),
        ] {
            if count > MOST_DEVICES {
                return Err((
                    key.into(),
                    format!("at most {MOST_DEVICES} devices, found {count}"),
                ));
            }
        }
        let batteries = self
            .batteries
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.resolve(index))
            .collect::<Result<Vec<_>, _>>()?;

        // Segment overrides are keyed by custom name or service, so both must be unique.
        let mut keys: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, battery) in batteries.iter().enumerate() {
            let mut own = vec![battery.service.as_str()];
            own.extend(battery.custom_name.as_deref());
            for key in own {
                match keys.insert(key, index) {
                    Some(other) if other != index => {
                        return Err((
                            format!("batteries[{index}]"),
                            format!("`{key}` already names batteries[{other}]"),
                        ))
                    }
                    _ => {}
                }
            }
        }

        let shunt = self.smartshunt.map(|raw| ShuntSpec {
            class: raw.class,
            device_instance: raw.device_instance,
            custom_name: raw.custom_name,
            product_name: raw.product_name,
            soc_pct: raw.soc,
        });
        let mut dc_devices = Vec::with_capacity(self.dc_devices.len());
        for (k, raw) in self.dc_devices.into_iter().enumerate() {
            if plugin_api::DcClass::from_service_class(&raw.class).is_none() {
                return Err((
                    format!("dc_devices[{k}].class"),
                    format!(
                        "`{}` is not one of multi, inverter, charger, dcdc, alternator, \
                         dcsource, dcload, dcsystem",
                        raw.class
                    ),
                ));
            }
            if raw.current.is_some_and(|a| !a.is_finite()) {
                return Err((format!("dc_devices[{k}].current"), "must be finite".into()));
            }
            if raw.ac_out.len() > 3 {
                return Err((
                    format!("dc_devices[{k}].ac_out"),
                    format!("at most 3 phases, found {}", raw.ac_out.len()),
                ));
            }
            let mut ac_out = Vec::with_capacity(raw.ac_out.len());
            for (l, phase) in raw.ac_out.iter().enumerate() {
                let values = [
                    ("power", phase.power),
                    ("voltage", phase.voltage),
                    ("current", phase.current),
                ];
                if let Some((key, _)) = values
                    .iter()
                    .find(|(_, v)| v.is_some_and(|v| !v.is_finite()))
                {
                    return Err((
                        format!("dc_devices[{k}].ac_out[{l}].{key}"),
                        "must be finite".into(),
                    ));
                }
                ac_out.push(AcPhase {
                    power_w: phase.power,
                    voltage_v: phase.voltage,
                    current_a: phase.current,
                });
            }
            dc_devices.push(DcDeviceSpec {
                class: raw.class,
                current_a: raw.current,
                device_instance: raw.device_instance.unwrap_or(300 + k as i64),
                ac_out,
            });
        }
        if let Some(shunt) = &shunt {
            if let Some(index) = batteries
                .iter()
                .position(|b| b.bus_name() == shunt.bus_name())
            {
                return Err((
                    format!("batteries[{index}].service"),
                    format!("{} is the SmartShunt's name", shunt.bus_name()),
                ));
            }
        }

        let settings = if self.settings.absent {
            None
        } else {
            let mut preset = BTreeMap::new();
            for (path, raw) in self.settings.preset {
                let key = format!("settings.preset.{path}");
                if !path.starts_with("/Settings/") || !valid_object_path(&path) {
                    return Err((
                        key,
                        "must be a path under /Settings/ with elements of letters, digits and _"
                            .into(),
                    ));
                }
                let value = match raw_value(&raw) {
                    Some(Value::Invalid) | None => {
                        return Err((key, "must be a number or a text".into()))
                    }
                    Some(value) => value,
                };
                preset.insert(path, value);
            }
            if !(0..=1).contains(&self.settings.overvoltage_feed_in) {
                return Err((
                    "settings.overvoltage_feed_in".into(),
                    format!(
                        "must be 0 or 1, found {}",
                        self.settings.overvoltage_feed_in
                    ),
                ));
            }
            Some(SettingsSpec {
                overvoltage_feed_in: self.settings.overvoltage_feed_in,
                preset,
            })
        };

        let start = match &self.start {
            None => None,
            Some(text) => Some(Start::parse(text).ok_or_else(|| {
                (
                    "start".to_string(),
                    format!(
                        "`{text}` is not a local date and time; write e.g. 2026-06-15 or \
                         2026-06-15T06:00"
                    ),
                )
            })?),
        };
        let share_devices = self.battery_current_from_devices;
        if share_devices && batteries.is_empty() {
            return Err((
                "battery_current_from_devices".into(),
                "needs at least one battery".into(),
            ));
        }

        let mut segments = Vec::with_capacity(self.segments.len());
        let mut previous: Option<Segment> = None;
        for (index, raw) in self.segments.into_iter().enumerate() {
            let at = format!("segments[{index}]");
            if share_devices && raw.battery_current.is_some() {
                return Err((
                    format!("{at}.battery_current"),
                    "comes from the devices (battery_current_from_devices: true)".into(),
                ));
            }
            let mut segment = raw.resolve(index, previous.as_ref(), &batteries, &keys)?;
            if share_devices {
                // A sum of straight lines is a straight line: the share stays a ramp.
                let share = |pick: fn(&Ramp) -> f64| {
                    (pick(&segment.solar_current) * self.solar_chargers as f64
                        + pick(&segment.vebus_current))
                        / batteries.len() as f64
                };
                segment.battery_current = Ramp {
                    from: share(|r| r.from),
                    to: share(|r| r.to),
                };
            }
            previous = Some(segment.clone());
            segments.push(segment);
        }

        Ok(Scenario {
            step: self.step,
            signals: self.signals,
            jitter: self.jitter,
            repeat: self.repeat,
            batteries,
            vebus: self.vebus.map(|v| v.device_instance),
            solar_chargers: self.solar_chargers,
            shunt,
            dc_devices,
            settings,
            system: (!self.system.absent).then_some(self.system.low_soc),
            segments,
            start,
            state: self.state,
        })
    }
}

impl RawBattery {
    fn resolve(self, index: usize) -> Result<BatterySpec, Problem> {
        let key = |field: &str| format!("batteries[{index}].{field}");
        if !valid_name_element(&self.service) {
            return Err((
                key("service"),
                format!(
                    "`{}` is not a bus name element: use letters, digits, _ and -, not \
                     starting with a digit",
                    self.service
                ),
            ));
        }
        if !(1..=64).contains(&self.cells) {
            return Err((
                key("cells"),
                format!("must be 1 to 64, found {}", self.cells),
            ));
        }
        if !(self.capacity_ah.is_finite() && self.capacity_ah > 0.0) {
            return Err((
                key("capacity_ah"),
                format!("must be above 0, found {}", self.capacity_ah),
            ));
        }
        if !(0.0..=100.0).contains(&self.soc) {
            return Err((key("soc"), format!("must be 0 to 100, found {}", self.soc)));
        }
        if !(self.cvl_per_cell > 0.0 && self.cvl_per_cell < 5.0) {
            return Err((
                key("cvl_per_cell"),
                format!(
                    "must be a cell voltage above 0 and below 5, found {}",
                    self.cvl_per_cell
                ),
            ));
        }
        Ok(BatterySpec {
            service: self.service,
            custom_name: self.custom_name,
            serial: self.serial,
            device_instance: self.device_instance.unwrap_or(index as i64 + 1),
            product_name: self
                .product_name
                .unwrap_or_else(|| "SerialBattery(Simulated)".to_string()),
            cells: self.cells,
            capacity_ah: self.capacity_ah,
            soc_pct: self.soc,
            cell_data: self.cell_data,
            cvl_per_cell_v: self.cvl_per_cell,
        })
    }
}

impl RawSegment {
    fn resolve(
        self,
        index: usize,
        previous: Option<&Segment>,
        batteries: &[BatterySpec],
        keys: &BTreeMap<&str, usize>,
    ) -> Result<Segment, Problem> {
        let at = format!("segments[{index}]");
        if self.duration.is_zero() {
            return Err((format!("{at}.duration"), "must be above 0".into()));
        }
        // A channel the segment leaves out continues from where the previous one ended.
        let carry = |own: Option<Ramp>, before: fn(&Segment) -> Ramp, initial: f64| {
            own.unwrap_or_else(|| Ramp::fixed(previous.map_or(initial, |p| before(p).to)))
        };
        let mut overrides: Vec<Option<Override>> = vec![None; batteries.len()];
        for (name, raw) in self.batteries {
            let key = format!("{at}.batteries.{name}");
            let Some(&battery) = keys.get(name.as_str()) else {
                return Err((key, "no such battery".into()));
            };
            overrides[battery] = Some(raw.resolve(&key, &batteries[battery])?);
        }
        Ok(Segment {
            duration: self.duration,
            cell_voltage: carry(self.cell_voltage, |p| p.cell_voltage, DEFAULT_CELL_V),
            battery_current: carry(self.battery_current, |p| p.battery_current, 0.0),
            vebus_current: carry(self.vebus_current, |p| p.vebus_current, 0.0),
            vebus_connected: self
                .vebus_connected
                .unwrap_or(previous.map_or(1, |p| p.vebus_connected)),
            solar_current: carry(self.solar_current, |p| p.solar_current, 0.0),
            shunt_current: carry(self.shunt_current, |p| p.shunt_current, 0.0),
            cell_spread: carry(self.cell_spread, |p| p.cell_spread, 0.0),
            overrides,
        })
    }
}

impl RawOverride {
    fn resolve(self, key: &str, battery: &BatterySpec) -> Result<Override, Problem> {
        if self.gone && self.frozen {
            return Err((
                key.to_string(),
                "`gone` and `frozen` exclude each other".into(),
            ));
        }
        for cell in self.cells.keys() {
            if !(1..=battery.cells).contains(cell) {
                return Err((
                    format!("{key}.cells.{cell}"),
                    format!("{} has cells 1 to {}", battery.label(), battery.cells),
                ));
            }
        }
        for (alarm, level) in &self.alarms {
            if !ALARMS.contains(&alarm.as_str()) {
                return Err((
                    format!("{key}.alarms.{alarm}"),
                    format!("no such alarm; use one of {}", ALARMS.join(", ")),
                ));
            }
            if !(0..=2).contains(level) {
                return Err((
                    format!("{key}.alarms.{alarm}"),
                    format!("must be 0 (ok), 1 (warning) or 2 (alarm), found {level}"),
                ));
            }
        }
        let mut values = BTreeMap::new();
        for (path, raw) in self.values {
            let at = format!("{key}.values.{path}");
            if !valid_object_path(&path) || path == "/" {
                return Err((
                    at,
                    "must be an absolute path with elements of letters, digits and _".into(),
                ));
            }
            let Some(value) = raw_value(&raw) else {
                return Err((
                    at,
                    "must be a number, nan, inf, -inf, a text or `invalid`".into(),
                ));
            };
            values.insert(path, value);
        }
        Ok(Override {
            cell_offset: self.cell_offset,
            cells: self.cells,
            current: self.current,
            blocking_charge: self.blocking_charge,
            blocking_discharge: self.blocking_discharge,
            alarms: self.alarms,
            limits: self.limits.map(|l| Limits {
                cvl: l.cvl,
                ccl: l.ccl,
                dcl: l.dcl,
                charge_mode: l.charge_mode,
            }),
            gone: self.gone,
            frozen: self.frozen,
            values,
        })
    }
}

/// A raw value from the file: an integer stays an integer (`i`), a float is `d`, `nan`,
/// `inf` and `-inf` are floats, `invalid` (or `~`) is the invalid value, any other text a text.
fn raw_value(raw: &serde_yaml::Value) -> Option<Value> {
    match raw {
        serde_yaml::Value::Null => Some(Value::Invalid),
        serde_yaml::Value::Bool(b) => Some(Value::Int(i64::from(*b))),
        serde_yaml::Value::Number(n) => match n.as_i64() {
            Some(i) => Some(Value::Int(i)),
            None => n.as_f64().map(Value::Float),
        },
        serde_yaml::Value::String(text) => Some(match text.as_str() {
            "invalid" => Value::Invalid,
            "nan" | "NaN" => Value::Float(f64::NAN),
            "inf" | "+inf" => Value::Float(f64::INFINITY),
            "-inf" => Value::Float(f64::NEG_INFINITY),
            _ => Value::Text(text.clone()),
        }),
        _ => None,
    }
}

/// A D-Bus object path: `/` and elements of `[A-Za-z0-9_]`.
pub(crate) fn valid_object_path(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && path[1..].split('/').all(|element| {
                !element.is_empty()
                    && element
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
            }))
}

/// `file:line: key: message` from the YAML crate's `key: message at line L column C`.
pub(super) fn yaml_error(file: &str, err: &serde_yaml::Error) -> Error {
    let (line, message) = aggregator::config::yaml_message(err);
    Error::Scenario {
        file: file.to_string(),
        line,
        key: None,
        message,
    }
}
