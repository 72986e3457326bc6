//! Scenario files: what the simulated system holds and how its values move over time.
//!
//! A scenario is YAML (see `aggregator/scenarios/demo.yaml`). It is read into raw structs that
//! mirror the file (unknown keys are errors), then checked and resolved into a [`Scenario`]:
//! every segment knows the start and end of every channel (a channel a segment leaves out
//! continues from where the previous one ended), and per-battery overrides are indexed by
//! battery. Every error names the file and the key.
//!
//! For `simulate` (the offline run, see [`crate::offline`]) a scenario also says when it
//! happens and where it starts from:
//! - `start: 2026-06-15` or `start: 2026-06-15T06:00`: the local date and time at the start;
//!   the date moves on at midnight, as the strategies' monthly voltages and balancing days
//!   need. `simulate` refuses a scenario without it.
//! - `state:` the daemon's `state.json` to start from (its `charge_ah`, `capacity_ah`,
//!   `strategy: {plugin, state}` and `feed_in`), e.g. a last balancing some days ago.
//! - `battery_current_from_devices: true`: each battery's current is its share of the solar
//!   chargers' and the Multi's currents, so a solar and load profile is written once and the
//!   batteries, the counter and every current source agree.
//! - `templates:` is not read: a list to hold YAML anchors (`- &night {duration: 6h, ...}`)
//!   that `segments` repeat (`- *night`), for a week of days alike.
//! - per segment `cell_spread: [from, to]`: the cells of every battery spread evenly over this
//!   many volts around `cell_voltage` (cell 1 lowest), for a bank that drifts apart at the top.
//!
//! A DC device of `dc_devices` (`{class, current, device_instance, ac_out}`) publishes no
//! `/Dc/0/Current` when `current` is left out; `ac_out: [{power, voltage, current}, ...]`
//! publishes `/Ac/Out/L1/P`, `/V`, `/I` and the next phases, each value only when given.
//!
//! Per battery, `cvl_per_cell` (default 3.45 V, LiFePO4) is the charge voltage per cell its BMS
//! asks unless a segment's `limits: {cvl}` says otherwise: an LTO bank's BMSs ask about 2.5 V,
//! and the daemon takes an LFP value on an LTO config as a BMS of another chemistry.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use std::fmt;

use serde::de::{Error as _, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use aggregator_core::value::Value;

use crate::Error;

/// The built-in demo: two 16-cell LFP batteries, a Multi and a solar charger, charging and
/// discharging in a loop of about three minutes.
pub const DEMO_SCENARIO: &str = include_str!("../../scenarios/demo.yaml");

/// The alarms a simulated battery publishes under `/Alarms/` (the ones the aggregate merges).
pub use aggregator_core::reading::ALARMS;

mod file;

pub(crate) use file::valid_object_path;
use file::{yaml_error, RawScenario};

/// Cell voltage before the first segment that sets one.
const DEFAULT_CELL_V: f64 = 3.30;

/// How changes are signalled.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Signals {
    /// One `PropertiesChanged` per changed path (velib, and so dbus-serialbattery).
    #[default]
    Properties,
    /// One `ItemsChanged` per service and step.
    Items,
}

/// The class a simulated SmartShunt is published under.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShuntClass {
    /// `com.victronenergy.battery.ttyS7` (battery monitor mode).
    #[default]
    Battery,
    /// `com.victronenergy.dcload.ttyS7` (DC meter mode).
    Dcload,
}

/// What cell data a simulated battery publishes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CellData {
    /// Every cell, the cell count, remaining and consumed Ah (dbus-serialbattery).
    #[default]
    All,
    /// Only the lowest and highest cell voltage (many CAN BMSs): no cells, no cell count, no
    /// `/Capacity`, no `/ConsumedAmphours`.
    MinMax,
    /// Nothing per cell, and neither capacity path (the plainest CAN packs).
    None,
}

/// A DC device of another class (Multi RS, inverter, charger, Orion XS, alternator, DC
/// source, load or system) with a constant `/Dc/0/Current` as its class publishes it.
#[derive(Clone, Debug, PartialEq)]
pub struct DcDeviceSpec {
    /// Its Venus service class: `multi`, `inverter`, `charger`, `dcdc`, `alternator`,
    /// `dcsource`, `dcload` or `dcsystem`.
    pub class: String,
    /// `/Dc/0/Current` with the class's own sign; `None`: the path is not published (some
    /// VE.Direct Phoenix inverters).
    pub current_a: Option<f64>,
    /// `/DeviceInstance`.
    pub device_instance: i64,
    /// `/Ac/Out/L1..L3/{P,V,I}`, phase by phase, each value only when given (scenario key
    /// `ac_out: [{power, voltage, current}, ...]`).
    pub ac_out: Vec<AcPhase>,
}

/// One phase of a device's AC output, each value published only when set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AcPhase {
    /// `/Ac/Out/Lx/P`, W.
    pub power_w: Option<f64>,
    /// `/Ac/Out/Lx/V`, V.
    pub voltage_v: Option<f64>,
    /// `/Ac/Out/Lx/I`, A.
    pub current_a: Option<f64>,
}

impl DcDeviceSpec {
    /// The well-known bus name: `com.victronenergy.<class>.ttyS<20 + index>`.
    pub fn bus_name(&self, index: usize) -> String {
        format!("com.victronenergy.{}.ttyS{}", self.class, 20 + index)
    }
}

/// A value moving linearly over a segment (`from == to` for a constant).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramp {
    /// At the start of the segment.
    pub from: f64,
    /// At its end.
    pub to: f64,
}

impl Ramp {
    /// A constant.
    pub fn fixed(value: f64) -> Self {
        Ramp {
            from: value,
            to: value,
        }
    }

    /// The value at `fraction` (0 = start, 1 = end) of the segment.
    pub fn at(&self, fraction: f64) -> f64 {
        self.from + (self.to - self.from) * fraction.clamp(0.0, 1.0)
    }
}

impl<'de> Deserialize<'de> for Ramp {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        // A visitor rather than a generic YAML value: an error raised while the value is
        // visited carries the value's own key and line.
        struct RampVisitor;
        impl<'de> Visitor<'de> for RampVisitor {
            type Value = Ramp;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or [from, to]")
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ramp, E> {
                if v.is_finite() {
                    Ok(Ramp::fixed(v))
                } else {
                    Err(E::custom("expected a finite number or [from, to]"))
                }
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ramp, E> {
                self.visit_f64(v as f64)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ramp, E> {
                self.visit_f64(v as f64)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ramp, A::Error> {
                let from: Option<f64> = seq.next_element()?;
                let to: Option<f64> = seq.next_element()?;
                let more: Option<IgnoredAny> = seq.next_element()?;
                match (from, to, more) {
                    (Some(from), Some(to), None) if from.is_finite() && to.is_finite() => {
                        Ok(Ramp { from, to })
                    }
                    _ => Err(A::Error::custom(
                        "expected a number or [from, to] with two numbers",
                    )),
                }
            }
        }
        de.deserialize_any(RampVisitor)
    }
}

/// One simulated battery, as the scenario declares it.
#[derive(Clone, Debug, PartialEq)]
pub struct BatterySpec {
    /// The service name's last part: `ttyUSB0` → `com.victronenergy.battery.ttyUSB0`.
    pub service: String,
    /// `/CustomName`; `None`: the product name is published.
    pub custom_name: Option<String>,
    /// `/Serial`; `None`: published invalid.
    pub serial: Option<String>,
    /// `/DeviceInstance`.
    pub device_instance: i64,
    /// `/ProductName`.
    pub product_name: String,
    /// Cells in series.
    pub cells: usize,
    /// `/InstalledCapacity`.
    pub capacity_ah: f64,
    /// State of charge at the start, in %.
    pub soc_pct: f64,
    /// What it publishes per cell.
    pub cell_data: CellData,
    /// The charge voltage per cell its BMS asks (`/Info/MaxChargeVoltage` / cells) unless a
    /// segment says otherwise: 3.45 V (LiFePO4), about 2.5 V for LTO.
    pub cvl_per_cell_v: f64,
}

impl BatterySpec {
    /// The well-known bus name.
    pub fn bus_name(&self) -> String {
        format!("com.victronenergy.battery.{}", self.service)
    }

    /// The name the battery goes by in logs and segment overrides.
    pub fn label(&self) -> &str {
        self.custom_name.as_deref().unwrap_or(&self.service)
    }
}

/// The SmartShunt.
#[derive(Clone, Debug, PartialEq)]
pub struct ShuntSpec {
    /// Battery monitor or DC meter.
    pub class: ShuntClass,
    /// `/DeviceInstance`.
    pub device_instance: i64,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/ProductName`.
    pub product_name: String,
    /// `/Soc` (battery monitor); `None`: not published.
    pub soc_pct: Option<f64>,
}

impl ShuntSpec {
    /// The well-known bus name.
    pub fn bus_name(&self) -> String {
        match self.class {
            ShuntClass::Battery => "com.victronenergy.battery.ttyS7".to_string(),
            ShuntClass::Dcload => "com.victronenergy.dcload.ttyS7".to_string(),
        }
    }
}

/// The simulated localsettings.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsSpec {
    /// `/Settings/CGwacs/OvervoltageFeedIn` at start.
    pub overvoltage_feed_in: i64,
    /// Settings that exist from the start, by absolute path.
    pub preset: BTreeMap<String, Value>,
}

/// The limits a battery publishes under `/Info/` during a segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// `/Info/MaxChargeVoltage`; `None`: 3.45 V per cell.
    pub cvl: Option<Ramp>,
    /// `/Info/MaxChargeCurrent`; `None`: 100 A.
    pub ccl: Option<Ramp>,
    /// `/Info/MaxDischargeCurrent`; `None`: 100 A.
    pub dcl: Option<Ramp>,
    /// `/Info/ChargeMode`; `None`: `Bulk`.
    pub charge_mode: Option<String>,
}

/// What differs for one battery during one segment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Override {
    /// Added to every cell.
    pub cell_offset: Option<Ramp>,
    /// Explicit cell voltages, by 1-based index.
    pub cells: BTreeMap<usize, Ramp>,
    /// The battery's own current instead of the segment's.
    pub current: Option<Ramp>,
    /// A module blocks charging.
    pub blocking_charge: bool,
    /// A module blocks discharging.
    pub blocking_discharge: bool,
    /// Alarm levels by name (see [`ALARMS`]).
    pub alarms: BTreeMap<String, i64>,
    /// `/Info/*`.
    pub limits: Option<Limits>,
    /// The service is off the bus.
    pub gone: bool,
    /// Nothing is published or changed.
    pub frozen: bool,
    /// Raw values replacing the computed ones, by path.
    pub values: BTreeMap<String, Value>,
}

/// One resolved segment.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// How long it lasts.
    pub duration: Duration,
    /// Every cell of every battery.
    pub cell_voltage: Ramp,
    /// Per battery, positive = charging.
    pub battery_current: Ramp,
    /// The Multi's `/Dc/0/Current`.
    pub vebus_current: Ramp,
    /// The Multi's `/Connected`.
    pub vebus_connected: i64,
    /// Each solar charger's `/Dc/0/Current`.
    pub solar_current: Ramp,
    /// The SmartShunt's `/Dc/0/Current`.
    pub shunt_current: Ramp,
    /// Max minus min cell of every battery, spread evenly around `cell_voltage`.
    pub cell_spread: Ramp,
    /// Per battery (same order as [`Scenario::batteries`]); `None` where nothing differs.
    pub overrides: Vec<Option<Override>>,
}

/// The local date and time a scenario starts at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Start {
    /// The date.
    pub date: plugin_api::LocalDate,
    /// Seconds since midnight.
    pub second_of_day: u32,
}

impl Start {
    /// The local date and the seconds since its midnight at `elapsed_s` after the start.
    pub fn at(&self, elapsed_s: f64) -> (plugin_api::LocalDate, f64) {
        let since_midnight = f64::from(self.second_of_day) + elapsed_s.max(0.0);
        let days = (since_midnight / 86_400.0).floor();
        (
            self.date.add_days(days as i64),
            since_midnight - days * 86_400.0,
        )
    }

    fn parse(text: &str) -> Option<Start> {
        let (date, time) = match text.split_once(['T', ' ']) {
            Some((date, time)) => (date, Some(time)),
            None => (text, None),
        };
        let date = date.trim().parse().ok()?;
        let second_of_day = match time {
            None => 0,
            Some(time) => {
                let mut parts = time.trim().split(':');
                let hours: u32 = parts.next()?.parse().ok()?;
                let minutes: u32 = parts.next()?.parse().ok()?;
                let seconds: u32 = parts.next().map_or(Some(0), |s| s.parse().ok())?;
                if parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 59 {
                    return None;
                }
                hours * 3600 + minutes * 60 + seconds
            }
        };
        Some(Start {
            date,
            second_of_day,
        })
    }
}

/// A parsed and checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub(crate) step: Duration,
    pub(crate) signals: Signals,
    pub(crate) jitter: bool,
    pub(crate) repeat: bool,
    pub(crate) batteries: Vec<BatterySpec>,
    pub(crate) vebus: Option<i64>,
    pub(crate) solar_chargers: usize,
    pub(crate) shunt: Option<ShuntSpec>,
    pub(crate) dc_devices: Vec<DcDeviceSpec>,
    pub(crate) settings: Option<SettingsSpec>,
    pub(crate) system: Option<i64>,
    pub(crate) segments: Vec<Segment>,
    pub(crate) start: Option<Start>,
    pub(crate) state: Option<aggregator_core::state::State>,
}

impl Scenario {
    /// Parses and checks a scenario; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, Error> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(|err| yaml_error(file, &err))?;
        raw.resolve().map_err(|(key, message)| Error::Scenario {
            file: file.to_string(),
            line: None,
            key: Some(key),
            message,
        })
    }

    /// Reads, parses and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// The built-in demo ([`DEMO_SCENARIO`]).
    pub fn demo() -> Result<Scenario, Error> {
        Scenario::parse(DEMO_SCENARIO, "demo.yaml")
    }

    /// The publish period.
    pub fn step(&self) -> Duration {
        self.step
    }

    /// How changes are signalled.
    pub fn signals(&self) -> Signals {
        self.signals
    }

    /// The batteries, in file order.
    pub fn batteries(&self) -> &[BatterySpec] {
        &self.batteries
    }

    /// The resolved segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The local date and time at the start (`start:`), if the file gives one.
    pub fn start(&self) -> Option<Start> {
        self.start
    }

    /// The state to start from (`state:`), if the file gives one.
    pub fn state(&self) -> Option<&aggregator_core::state::State> {
        self.state.as_ref()
    }

    /// One pass through the segments.
    pub fn length(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }

    /// Every well-known name the simulator owns while no battery is `gone`.
    pub fn bus_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.settings.is_some() {
            names.push("com.victronenergy.settings".to_string());
        }
        if self.system.is_some() {
            names.push("com.victronenergy.system".to_string());
        }
        names.extend(self.batteries.iter().map(BatterySpec::bus_name));
        if self.vebus.is_some() {
            names.push(VEBUS_NAME.to_string());
        }
        names.extend((0..self.solar_chargers).map(solar_name));
        if let Some(shunt) = &self.shunt {
            names.push(shunt.bus_name());
        }
        names.extend(
            self.dc_devices
                .iter()
                .enumerate()
                .map(|(k, d)| d.bus_name(k)),
        );
        names
    }

    /// The segment at `elapsed` since the start and how far into it (0..=1); `None` when
    /// there are no segments.
    pub fn position(&self, elapsed: Duration) -> Option<(usize, f64)> {
        let total: f64 = self.segments.iter().map(|s| s.duration.as_secs_f64()).sum();
        let last = self.segments.len().checked_sub(1)?;
        let mut t = elapsed.as_secs_f64();
        if t >= total {
            if !self.repeat || total <= 0.0 {
                return Some((last, 1.0));
            }
            t %= total;
        }
        for (index, segment) in self.segments.iter().enumerate() {
            let length = segment.duration.as_secs_f64();
            if t < length {
                return Some((index, t / length));
            }
            t -= length;
        }
        Some((last, 1.0))
    }
}

/// The Multi's bus name.
pub(crate) const VEBUS_NAME: &str = "com.victronenergy.vebus.ttyS3";

/// The bus name of solar charger `index` (0-based): `ttyS4`, `ttyS5`, …
pub(crate) fn solar_name(index: usize) -> String {
    format!("com.victronenergy.solarcharger.ttyS{}", index + 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        match Scenario::parse(text, "scenario.yaml") {
            Ok(_) => panic!("parsed: {text}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn the_demo_parses() {
        let demo = Scenario::demo().expect("demo.yaml");
        assert_eq!(demo.batteries().len(), 2);
        assert_eq!(demo.batteries()[1].label(), "Bat2");
        assert!(demo.vebus.is_some());
        assert_eq!(demo.solar_chargers, 1);
        assert!(demo.repeat);
        let total: f64 = demo.segments.iter().map(|s| s.duration.as_secs_f64()).sum();
        assert!((150.0..=240.0).contains(&total), "{total}");
    }

    #[test]
    fn an_unknown_battery_in_a_segment_is_named_with_file_and_key() {
        let text = "batteries:\n  - service: ttyUSB0\n    custom_name: Bat1\nsegments:\n  \
                    - duration: 1s\n  - duration: 1s\n  - duration: 1s\n    batteries:\n      \
                    Bat9: {gone: true}\n";
        assert_eq!(
            error(text),
            "scenario.yaml: segments[2].batteries.Bat9: no such battery"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let err = error("step: 1s\nbatteries:\n  - service: ttyUSB0\n    cels: 16\n");
        assert!(
            err.starts_with("scenario.yaml:4: batteries[0]: unknown field `cels`"),
            "{err}"
        );
        let err = error("step: soon\n");
        assert!(
            err.starts_with("scenario.yaml:1: step: `soon` is not a duration"),
            "{err}"
        );
        // Beyond `Duration`'s range: an error naming the key, not a panic.
        for (text, key) in [
            ("step: 1e30\n", "scenario.yaml:1: step: `"),
            ("step: 1e30h\n", "scenario.yaml:1: step: `"),
            (
                "segments:\n  - duration: 1e30\n",
                "scenario.yaml:2: segments[0].duration: `",
            ),
        ] {
            let err = error(text);
            assert!(
                err.starts_with(key) && err.contains("` is not a duration"),
                "{text}: {err}"
            );
        }
        let err = error("segments:\n  - duration: 1s\n    cell_voltage: [3.3]\n");
        assert!(
            err.starts_with("scenario.yaml:3: segments[0].cell_voltage: expected a number"),
            "{err}"
        );
        let err = error("signals: loud\n");
        assert!(err.contains("signals: unknown variant `loud`"), "{err}");
    }

    #[test]
    fn checks_name_the_key() {
        let base = "batteries:\n  - service: ttyUSB0\n    custom_name: Bat1\n    cells: 4\n";
        let err = error(&format!(
            "{base}segments:\n  - duration: 1s\n    batteries:\n      Bat1:\n        \
             cells: {{5: 3.6}}\n"
        ));
        assert_eq!(
            err,
            "scenario.yaml: segments[0].batteries.Bat1.cells.5: Bat1 has cells 1 to 4"
        );
        let err = error(&format!(
            "{base}segments:\n  - duration: 1s\n    batteries:\n      ttyUSB0:\n        \
             alarms: {{HighVolts: 2}}\n"
        ));
        assert!(
            err.starts_with(
                "scenario.yaml: segments[0].batteries.ttyUSB0.alarms.HighVolts: no such alarm"
            ),
            "{err}"
        );
        let err = error("batteries:\n  - service: 0bad\n");
        assert!(
            err.starts_with("scenario.yaml: batteries[0].service:"),
            "{err}"
        );
        let err = error("batteries:\n  - service: ttyUSB0\n    custom_name: X\n  - service: X\n");
        assert_eq!(
            err,
            "scenario.yaml: batteries[1]: `X` already names batteries[0]"
        );
        let err = error("settings:\n  preset:\n    /Foo/Bar: 1\n");
        assert!(
            err.starts_with("scenario.yaml: settings.preset./Foo/Bar:"),
            "{err}"
        );
    }

    #[test]
    fn channels_carry_over_and_ramps_interpolate() {
        let scenario = Scenario::parse(
            "step: 500ms\nsegments:\n  - duration: 2s\n    cell_voltage: [3.3, 3.5]\n    \
             battery_current: 10\n  - duration: 1\n    vebus_connected: 0\n",
            "s.yaml",
        )
        .expect("parses");
        assert_eq!(scenario.step(), Duration::from_millis(500));
        let second = &scenario.segments()[1];
        assert_eq!(second.cell_voltage, Ramp::fixed(3.5));
        assert_eq!(second.battery_current, Ramp::fixed(10.0));
        assert_eq!(second.vebus_connected, 0);
        assert!((scenario.segments()[0].cell_voltage.at(0.5) - 3.4).abs() < 1e-9);
        assert_eq!(scenario.position(Duration::from_secs(1)), Some((0, 0.5)));
        assert_eq!(
            scenario.position(Duration::from_millis(2500)),
            Some((1, 0.5))
        );
        // Without repeat the last segment's end holds.
        assert_eq!(scenario.position(Duration::from_secs(60)), Some((1, 1.0)));
    }

    #[test]
    fn the_start_moves_the_date_on_at_midnight_and_bad_starts_are_named() {
        let scenario = Scenario::parse("start: 2026-12-31T23:30\n", "s.yaml").expect("parses");
        let start = scenario.start().expect("a start");
        assert_eq!(start.second_of_day, 23 * 3600 + 30 * 60);
        let (date, second) = start.at(1800.0);
        assert_eq!((date.to_string(), second), ("2027-01-01".to_string(), 0.0));
        let (date, second) = start.at(60.0);
        assert_eq!(
            (date.to_string(), second),
            ("2026-12-31".to_string(), 84_660.0)
        );
        let date_only = Scenario::parse("start: 2026-06-15\n", "s.yaml").expect("parses");
        assert_eq!(date_only.start().map(|s| s.second_of_day), Some(0));
        assert_eq!(Scenario::demo().expect("demo").start(), None);
        for bad in ["2026-13-01", "2026-06-15T24:00", "2026-06-15T06", "June"] {
            let err = error(&format!("start: {bad}\n"));
            assert!(
                err.starts_with(&format!(
                    "scenario.yaml: start: `{bad}` is not a local date"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn battery_currents_share_the_devices_and_cells_spread_around_the_voltage() {
        let text = "battery_current_from_devices: true\nsolar_chargers: 2\nvebus: {}\n\
                    batteries:\n  - {service: ttyUSB0, cells: 4}\n  - {service: ttyUSB1, cells: 4}\n\
                    templates:\n  - &sun {duration: 1h, solar_current: [0, 30], vebus_current: -20, \
                    cell_spread: [0, 0.03]}\nsegments:\n  - *sun\n  - {duration: 1h}\n";
        let scenario = Scenario::parse(text, "s.yaml").expect("parses");
        // (2 × solar + Multi) / 2 batteries.
        let first = &scenario.segments()[0];
        assert_eq!(
            first.battery_current,
            Ramp {
                from: -10.0,
                to: 20.0
            }
        );
        // The next segment carries the devices on, and with them the share.
        assert_eq!(scenario.segments()[1].battery_current, Ramp::fixed(20.0));
        assert_eq!(scenario.segments()[1].cell_spread, Ramp::fixed(0.03));
        assert_eq!(scenario.length(), Duration::from_secs(7200));

        let err = error(
            "battery_current_from_devices: true\nbatteries:\n  - {service: ttyUSB0}\n\
             segments:\n  - {duration: 1h, battery_current: 5}\n",
        );
        assert_eq!(
            err,
            "scenario.yaml: segments[0].battery_current: comes from the devices \
             (battery_current_from_devices: true)"
        );
    }

    #[test]
    fn a_start_state_is_read_as_the_state_file_is() {
        let text = "state:\n  charge_ah: 100\n  strategy: {plugin: lfp-balancing, state: '{}'}\n";
        let scenario = Scenario::parse(text, "s.yaml").expect("parses");
        let state = scenario.state().expect("a state");
        assert_eq!(state.charge_ah, Some(100.0));
        assert_eq!(
            state.strategy.as_ref().map(|s| s.plugin.as_str()),
            Some("lfp-balancing")
        );
        let err = error("state:\n  charge: 100\n");
        assert!(err.contains("state: unknown field `charge`"), "{err}");
    }

    #[test]
    fn repeat_loops_and_raw_values_keep_their_kind() {
        let scenario = Scenario::parse(
            "repeat: true\nbatteries:\n  - service: ttyUSB0\nsegments:\n  - duration: 1s\n  \
             - duration: 1s\n    batteries:\n      ttyUSB0:\n        values:\n          \
             /Dc/0/Voltage: nan\n          /InstalledCapacity: -5\n          /Soc: high\n          \
             /Info/MaxChargeVoltage: invalid\n          /Dc/0/Current: 1.5\n",
            "s.yaml",
        )
        .expect("parses");
        assert_eq!(
            scenario.position(Duration::from_millis(2500)),
            Some((0, 0.5))
        );
        let values = &scenario.segments()[1].overrides[0]
            .as_ref()
            .expect("override")
            .values;
        assert!(matches!(values["/Dc/0/Voltage"], Value::Float(v) if v.is_nan()));
        assert_eq!(values["/InstalledCapacity"], Value::Int(-5));
        assert_eq!(values["/Soc"], Value::Text("high".into()));
        assert_eq!(values["/Info/MaxChargeVoltage"], Value::Invalid);
        assert_eq!(values["/Dc/0/Current"], Value::Float(1.5));
    }
}
