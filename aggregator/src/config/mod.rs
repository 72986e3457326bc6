//! `config.yaml`: the typed configuration, its checks, and errors that name key and line.
//!
//! The host's own sections are typed structs; each plugin's `config` section is kept as a
//! JSON value and handed to the plugin, which checks it the same way (see
//! `plugin_api::config`). Every error names the file, the key path and, where it can be found,
//! the line.

pub mod check;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aggregator_core::discovery::{ProductNames, Rules, Selector};
use aggregator_core::engine::{OnLost, Settings};
use aggregator_core::envelope::Bounds;
use aggregator_core::guard::{BmsLimits, GuardBounds, Window};
use plugin_api::DeviceRef;
use serde::{Deserialize, Deserializer};

use crate::error::Error;

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between ticks.
    #[serde(default = "default_update_interval", deserialize_with = "duration")]
    pub update_interval: Duration,
    /// Which services are batteries and what the bank should hold.
    #[serde(default)]
    pub batteries: Batteries,
    /// Where the bank current comes from.
    #[serde(default = "default_current_source")]
    pub current_source: PluginChoice,
    /// The Coulomb counter.
    #[serde(default)]
    pub soc: Soc,
    /// The strategy computing CVL, CCL and DCL.
    pub strategy: PluginChoice,
    /// The bounds the host enforces on any strategy.
    pub safety: Safety,
    /// The published service.
    #[serde(default)]
    pub publish: Publish,
    /// Folders.
    #[serde(default)]
    pub paths: Paths,
    /// Logging.
    #[serde(default)]
    pub logging: Logging,
    /// The flight recorder.
    #[serde(default)]
    pub record: Record,
    /// A second strategy run on the same inputs, recorded, never published.
    #[serde(default)]
    pub shadow: Option<Shadow>,
}

/// `record:`: the last minutes of inputs and published values, kept in memory and saved to
/// a file when something happens.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Record {
    /// How much is kept (default 30 min; 0 s: no recorder).
    #[serde(deserialize_with = "duration")]
    pub keep: Duration,
    /// Most memory the recording takes, in KiB (its oldest minutes go first).
    pub max_memory_kib: u32,
    /// Most files kept in the folder; the oldest are removed.
    pub max_files: u32,
    /// The folder; default `recordings` in `paths.state_dir`.
    pub dir: Option<PathBuf>,
    /// Which happenings save a recording.
    pub save_on: SaveOn,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            keep: Duration::from_secs(30 * 60),
            max_memory_kib: 8192,
            max_files: 10,
            dir: None,
            save_on: SaveOn::default(),
        }
    }
}

impl Record {
    /// Where the recordings go.
    pub fn folder(&self, paths: &Paths) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| paths.state_dir.join("recordings"))
    }
}

/// `record.save_on:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SaveOn {
    /// A battery lost.
    pub battery_lost: bool,
    /// A cell or temperature bound, or a strategy value clamped, stops charging or
    /// discharging (CCL or DCL falls to 0).
    pub bound: bool,
    /// The strategy faults.
    pub strategy_fault: bool,
    /// A feed-in episode starts or ends.
    pub feed_in: bool,
}

impl Default for SaveOn {
    fn default() -> Self {
        Self {
            battery_lost: true,
            bound: true,
            strategy_fault: true,
            feed_in: true,
        }
    }
}

/// `shadow:`: a strategy (and optionally a current source) of its own config, run each tick
/// beside the live one.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// The shadow's strategy.
    pub strategy: PluginChoice,
    /// Its current source; default: the live one's.
    #[serde(default)]
    pub current_source: Option<PluginChoice>,
}

/// `batteries:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Batteries {
    /// A battery's `/ProductName` must contain this text, or one of these texts.
    pub product_name: ProductNames,
    /// Batteries in the bank; `None`: every battery seen since start.
    pub expected: Option<u32>,
    /// Cells in series per battery; `None`: taken from the batteries.
    pub cells: Option<u32>,
    /// Only these batteries (by `/CustomName`, `/Serial`, `/DeviceInstance` or service name).
    pub include: Vec<Selector>,
    /// Never these batteries.
    pub exclude: Vec<Selector>,
    /// How long a battery that is not online is held with its last values.
    #[serde(deserialize_with = "duration")]
    pub hold_for: Duration,
    /// A battery none of whose values changed for this long is frozen (0 s: off).
    #[serde(deserialize_with = "duration")]
    pub frozen_after: Duration,
    /// Longest wait for a complete bank before the service is published fail-safe.
    #[serde(deserialize_with = "duration")]
    pub startup_wait: Duration,
    /// What to do while a battery is lost.
    pub on_lost: OnLost,
}

impl Default for Batteries {
    fn default() -> Self {
        Self {
            product_name: ProductNames(vec!["SerialBattery".into()]),
            expected: None,
            cells: None,
            include: Vec::new(),
            exclude: Vec::new(),
            hold_for: Duration::from_secs(60),
            frozen_after: Duration::from_secs(120),
            startup_wait: Duration::from_secs(30),
            on_lost: OnLost::BlockCharge,
        }
    }
}

impl From<&Batteries> for Rules {
    fn from(b: &Batteries) -> Self {
        Rules {
            product_name: b.product_name.0.clone(),
            include: b.include.clone(),
            exclude: b.exclude.clone(),
        }
    }
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        let safety = &config.safety;
        Settings {
            bounds: Bounds {
                max_cell_voltage_v: safety.max_cell_voltage,
                max_charge_current_a: safety.max_charge_current,
                max_discharge_current_a: safety.max_discharge_current,
                plugin_failures: safety.plugin_failures,
                max_charge_voltage_v: safety.max_charge_voltage.unwrap_or(f64::INFINITY),
            },
            guard: GuardBounds {
                max_cell_voltage_v: safety.max_cell_voltage,
                max_cell_hysteresis_v: safety.max_cell_hysteresis,
                min_cell_voltage_v: safety.min_cell_voltage,
                min_cell_hysteresis_v: safety.min_cell_hysteresis,
                charge_temperature: Window {
                    min_c: safety.min_charge_temperature,
                    max_c: safety.max_charge_temperature,
                },
                discharge_temperature: Window {
                    min_c: safety.min_discharge_temperature,
                    max_c: safety.max_discharge_temperature,
                },
                temperature_derate_c: safety.temperature_derate,
                bms_limits: safety.bms_limits,
                share_min_current_a: safety.share_min_current,
                recovery_charge_rate_c: safety.recovery_charge_rate,
                bms_limits_n_minus_one: safety.bms_limits_n_minus_one,
            },
            feed_in_hold_s: safety.feed_in_hold.as_secs_f64(),
            on_lost: config.batteries.on_lost,
            own_counter: config.soc.counter(),
            efficiency: config.soc.efficiency,
            save_precision: config.soc.save_precision,
        }
    }
}

/// `strategy:` or `current_source:`: a plugin by name and its config section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginChoice {
    /// The plugin's name.
    pub plugin: String,
    /// Its section, handed over as JSON.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// `soc.source`: where the published SoC comes from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "expected counter, batteries, or a battery monitor by VRM device instance \
                 (integer) or custom name (string)"
)]
pub enum SocSource {
    /// `counter` or `batteries`.
    Own(SocKeyword),
    /// A SmartShunt, BMV or Lynx Shunt whose `/Soc` is published.
    Monitor(DeviceRef),
}

/// The words `soc.source` takes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SocKeyword {
    /// The own Coulomb counter.
    Counter,
    /// The packs' SoC weighted by installed capacity.
    Batteries,
}

/// `soc:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Soc {
    /// Where the SoC comes from; `None`: as `own_counter` says.
    pub source: Option<SocSource>,
    /// Publish the own Coulomb counter instead of the BMSs' SoC (`source` wins).
    pub own_counter: bool,
    /// Factor on charging Ah.
    pub efficiency: f64,
    /// Save the counter when it moved by this fraction of the capacity.
    pub save_precision: f64,
}

impl Soc {
    /// Whether the own counter's SoC is the one published.
    pub fn counter(&self) -> bool {
        match &self.source {
            None => self.own_counter,
            Some(source) => *source == SocSource::Own(SocKeyword::Counter),
        }
    }

    /// The battery monitor whose SoC is published, if one is named.
    pub fn monitor(&self) -> Option<&DeviceRef> {
        match &self.source {
            Some(SocSource::Monitor(device)) => Some(device),
            _ => None,
        }
    }
}

impl Default for Soc {
    fn default() -> Self {
        Self {
            source: None,
            own_counter: true,
            efficiency: 0.985,
            save_precision: 0.0025,
        }
    }
}

/// `safety:`. No defaults: the user states what the cells can take.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    /// CVL ≤ cells × this; a cell at or above it: CCL 0 and CVL pulled down.
    pub max_cell_voltage: f64,
    /// The high-cell stop is released below `max_cell_voltage` − this.
    #[serde(default = "default_max_cell_hysteresis")]
    pub max_cell_hysteresis: f64,
    /// A cell at or below this: DCL 0.
    pub min_cell_voltage: f64,
    /// The low-cell stop is released above `min_cell_voltage` + this.
    #[serde(default = "default_min_cell_hysteresis")]
    pub min_cell_hysteresis: f64,
    /// Charging stops at or below this temperature, °C.
    pub min_charge_temperature: f64,
    /// Charging stops at or above this temperature, °C.
    pub max_charge_temperature: f64,
    /// Discharging stops at or below this temperature, °C.
    pub min_discharge_temperature: f64,
    /// Discharging stops at or above this temperature, °C.
    pub max_discharge_temperature: f64,
    /// Degrees before each temperature edge over which the current falls linearly to 0.
    #[serde(default = "default_temperature_derate")]
    pub temperature_derate: f64,
    /// How the packs' own limits cap every strategy's CCL and DCL.
    #[serde(default = "default_bms_limits")]
    pub bms_limits: BmsLimits,
    /// Bank current (A) from which `bms_limits: share` uses the measured shares.
    #[serde(default = "default_share_min_current")]
    pub share_min_current: f64,
    /// Cap the bank so that if any one pack opens its relay, the others stay within their own
    /// limits at the current flowing then.
    #[serde(default)]
    pub bms_limits_n_minus_one: bool,
    /// Charge current of a bank whose lowest cell is below `min_cell_voltage` (until it is
    /// above it plus `min_cell_hysteresis`), as a fraction of the installed capacity per hour.
    #[serde(default = "default_recovery_charge_rate")]
    pub recovery_charge_rate: f64,
    /// The bank voltage no strategy may exceed, V. Required unless `batteries.cells` is set.
    #[serde(default)]
    pub max_charge_voltage: Option<f64>,
    /// Time without a cause before feed-in is restored.
    #[serde(default = "default_feed_in_hold", deserialize_with = "duration")]
    pub feed_in_hold: Duration,
    /// CCL ≤ this.
    pub max_charge_current: f64,
    /// DCL ≤ this.
    pub max_discharge_current: f64,
    /// Plugin faults in a row after which DCL is 0 as well.
    #[serde(default = "default_plugin_failures")]
    pub plugin_failures: u32,
}

/// `publish:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Publish {
    /// The D-Bus name of the virtual battery.
    pub service_name: String,
    /// Preferred VRM device instance.
    pub device_instance: u32,
    /// Publish `/Voltages/<battery>_Cell<k>`.
    pub cell_voltages: bool,
}

impl Default for Publish {
    fn default() -> Self {
        Self {
            service_name: "com.victronenergy.battery.aggregate".into(),
            device_instance: 100,
            cell_voltages: false,
        }
    }
}

/// `paths:`. Relative paths are relative to the config file's folder.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// Where `state.json` lives.
    pub state_dir: PathBuf,
    /// Where plugins are loaded from.
    pub plugins_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            state_dir: "/data/apps/dbus-aggregate-batteries/state".into(),
            plugins_dir: "/data/apps/dbus-aggregate-batteries/plugins".into(),
        }
    }
}

/// `logging:`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// `error`, `warn`, `info` or `debug`.
    pub level: Level,
    /// Period of the summary line (0 s: off).
    #[serde(deserialize_with = "duration")]
    pub summary_every: Duration,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            level: Level::Info,
            summary_every: Duration::from_secs(300),
        }
    }
}

/// `logging.level`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Changes of state, and the above.
    Info,
    /// Everything.
    Debug,
}

fn default_update_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_plugin_failures() -> u32 {
    5
}

fn default_max_cell_hysteresis() -> f64 {
    0.05
}

fn default_min_cell_hysteresis() -> f64 {
    0.2
}

fn default_temperature_derate() -> f64 {
    5.0
}

fn default_bms_limits() -> BmsLimits {
    BmsLimits::Share
}

fn default_share_min_current() -> f64 {
    5.0
}

/// 0.05 C: cell makers pre-charge over-discharged LFP cells at this rate or less until the
/// cells are back in their window; 5 A for each 100 Ah, well below any strategy's current.
fn default_recovery_charge_rate() -> f64 {
    0.05
}

fn default_feed_in_hold() -> Duration {
    Duration::from_secs(60)
}

fn default_current_source() -> PluginChoice {
    PluginChoice {
        plugin: "bms".into(),
        config: serde_json::Value::Null,
    }
}

/// A duration as `500ms`, `60s`, `5m`, `1h` or a plain number of seconds (`config.yaml`'s and
/// the scenario files', `deserialize_with`).
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    // A visitor, not an untagged enum: the enum buffers the value, and an error raised after
    // that carries the position of the enclosing map instead of the value's.
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as 500ms, 60s, 5m or 1h")
        }
        fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<Duration, E> {
            // Not `from_secs_f64`: it panics on a number beyond `Duration`'s range (`1e30`).
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| E::custom(format!("`{seconds}` is not a duration")))
        }
        fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Duration, E> {
            self.visit_f64(seconds as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Duration, E> {
            self.visit_f64(seconds as f64)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    de.deserialize_any(Visitor)
}

/// A duration as written in `config.yaml` (`500ms`, `60s`, `5m`, `1h`, a plain number of
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let seconds = parse_seconds(text)?;
    Duration::try_from_secs_f64(seconds).map_err(|_| Error::Duration {
        text: text.to_string(),
        hint: false,
    })
}

/// The YAML crate's message without its position (`key: message`, from `key: message at line
/// L column C`), and the line (config files and scenario files report errors so).
pub fn yaml_message(err: &serde_yaml::Error) -> (Option<usize>, String) {
    let text = err.to_string();
    let body = match text.rfind(" at line ") {
        Some(at) => text[..at].trim_end_matches(',').to_string(),
        None => text.clone(),
    };
    (err.location().map(|l| l.line()), body)
}

fn parse_seconds(text: &str) -> Result<f64, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    match number.trim().parse::<f64>() {
        Ok(n) if factor.is_finite() => Ok(n * factor),
        _ => Err(Error::Duration {
            text: text.to_string(),
            hint: true,
        }),
    }
}

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key path, e.g. `strategy.config.charge_voltages`; empty for the whole file.
    pub key: String,
    /// The line of the key in the file, when found.
    pub line: Option<usize>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A config file as read: its text (for line numbers) and its path.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// Its text.
    pub text: String,
}

impl Source {
    /// Reads the file.
    pub fn read(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            line: None,
            message: format!("cannot read: {err}"),
        })?;
        Ok(Self {
            file: file.to_path_buf(),
            text,
        })
    }

    /// An error at `key` (a dotted path), with the key's line when it can be found.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let path: Vec<&str> = key.split('.').filter(|k| !k.is_empty()).collect();
        ConfigError {
            file: self.file.clone(),
            key: key.to_string(),
            line: line_of(&self.text, &path),
            message: message.into(),
        }
    }

    /// Parses the text into a [`Config`] and checks the host's values; plugins' sections are
    /// checked by [`crate::config::check`].
    pub fn parse(&self) -> Result<Config, Vec<ConfigError>> {
        let config: Config = serde_yaml::from_str(&self.text).map_err(|err| {
            let first = self.yaml_error(&err);
            self.all_missing(first)
        })?;
        let errors = self.check(&config);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The parser stops at the first missing key; the others are found by filling each one
    /// found with a stand-in and parsing again, so that all are reported at once, each under
    /// its own key. `first` is returned alone when it is another error.
    fn all_missing(&self, first: ConfigError) -> Vec<ConfigError> {
        let Ok(mut tree) = serde_yaml::from_str::<serde_yaml::Value>(&self.text) else {
            return vec![first];
        };
        let mut errors = vec![first];
        // Bounded: a config has far fewer required keys.
        for _ in 0..32 {
            let last = errors.last().expect("one error");
            if !last.message.starts_with("missing field `") || last.key.is_empty() {
                break;
            }
            let mut at = &mut tree;
            let path: Vec<&str> = last.key.split('.').collect();
            let Some((field, parents)) = path.split_last() else {
                break;
            };
            for part in parents {
                match at.get_mut(*part) {
                    Some(next) => at = next,
                    None => return errors,
                }
            }
            let Some(map) = at.as_mapping_mut() else {
                break;
            };
            map.insert((*field).into(), serde_yaml::Value::from(0));
            let again = serde_yaml::to_string(&tree)
                .ok()
                .and_then(|text| serde_yaml::from_str::<Config>(&text).err());
            match again.map(|err| self.yaml_error(&err)) {
                Some(next) if next.message.starts_with("missing field `") => {
                    // Placed by its key in the user's text, not in the re-written one.
                    let line = line_of(&self.text, &next.key.split('.').collect::<Vec<_>>());
                    errors.push(ConfigError { line, ..next });
                }
                _ => break,
            }
        }
        errors
    }

    fn yaml_error(&self, err: &serde_yaml::Error) -> ConfigError {
        // The crate's message reads "batteries.expected: invalid type: …, at line 3 column 13";
        // split it into our parts so every error has the same shape.
        let (line, body) = yaml_message(err);
        let (mut key, message) = match body.split_once(": ") {
            Some((key, message)) if !key.contains(' ') => (key.to_string(), message.to_string()),
            _ => (String::new(), body),
        };
        // A missing key belongs to the map the message names, whatever key the parser stood on.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .filter(|_| !key.is_empty())
        {
            let key = format!("{key}.{field}");
            let line = line_of(&self.text, &key.split('.').collect::<Vec<_>>());
            return ConfigError {
                file: self.file.clone(),
                key,
                line,
                message,
            };
        }
        // A value's own error ("not a duration") carries the path of the enclosing map only;
        // the key on the reported line completes it.
        if let Some(own) = line.and_then(|l| key_at_line(&self.text, l)) {
            if !key.is_empty() && !key.ends_with(own.as_str()) {
                key = format!("{key}.{own}");
            }
        }
        let line = line.or_else(|| line_of(&self.text, &key.split('.').collect::<Vec<_>>()));
        ConfigError {
            file: self.file.clone(),
            key,
            line,
            message,
        }
    }

    fn check(&self, config: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut require = |ok: bool, key: &str, message: String| {
            if !ok {
                errors.push(self.error(key, message));
            }
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let s = &config.safety;
        require(
            positive(s.max_cell_voltage) && s.max_cell_voltage < 5.0,
            "safety.max_cell_voltage",
            format!(
                "must be a cell voltage above 0 and below 5 V, found {}",
                s.max_cell_voltage
            ),
        );
        require(
            positive(s.max_charge_current),
            "safety.max_charge_current",
            format!(
                "must be a current above 0 A, found {}",
                s.max_charge_current
            ),
        );
        require(
            positive(s.max_discharge_current),
            "safety.max_discharge_current",
            format!(
                "must be a current above 0 A, found {}",
                s.max_discharge_current
            ),
        );
        require(
            s.min_cell_voltage.is_finite()
                && s.min_cell_voltage > 0.0
                && s.min_cell_voltage < s.max_cell_voltage,
            "safety.min_cell_voltage",
            format!(
                "must be above 0 and below safety.max_cell_voltage ({}), found {}",
                s.max_cell_voltage, s.min_cell_voltage
            ),
        );
        let window = s.max_cell_voltage - s.min_cell_voltage;
        for (key, value) in [
            ("safety.max_cell_hysteresis", s.max_cell_hysteresis),
            ("safety.min_cell_hysteresis", s.min_cell_hysteresis),
        ] {
            require(
                value.is_finite() && value >= 0.0 && value < window,
                key,
                format!(
                    "must be at least 0 V and below the cell window \
                     (safety.max_cell_voltage - safety.min_cell_voltage = {window:.3}), found {value}"
                ),
            );
        }
        for (low_key, low, high_key, high) in [
            (
                "safety.min_charge_temperature",
                s.min_charge_temperature,
                "safety.max_charge_temperature",
                s.max_charge_temperature,
            ),
            (
                "safety.min_discharge_temperature",
                s.min_discharge_temperature,
                "safety.max_discharge_temperature",
                s.max_discharge_temperature,
            ),
        ] {
            require(
                (-60.0..=100.0).contains(&low) && (-60.0..=100.0).contains(&high) && low < high,
                low_key,
                format!(
                    "must be below {high_key} ({high}), both between -60 and 100 °C, found {low}"
                ),
            );
        }
        require(
            s.temperature_derate.is_finite() && s.temperature_derate >= 0.0,
            "safety.temperature_derate",
            format!("must be 0 °C or more, found {}", s.temperature_derate),
        );
        require(
            s.share_min_current.is_finite() && s.share_min_current > 0.0,
            "safety.share_min_current",
            format!("must be above 0 A, found {}", s.share_min_current),
        );
        require(
            s.plugin_failures >= 1,
            "safety.plugin_failures",
            "must be at least 1".to_string(),
        );
        require(
            s.recovery_charge_rate.is_finite()
                && s.recovery_charge_rate > 0.0
                && s.recovery_charge_rate <= 0.5,
            "safety.recovery_charge_rate",
            format!(
                "must be a charge rate above 0 and at most 0.5 (C: a fraction of the installed \
                 capacity per hour), found {}",
                s.recovery_charge_rate
            ),
        );
        if let Some(v) = s.max_charge_voltage {
            require(
                positive(v) && v < 1000.0,
                "safety.max_charge_voltage",
                format!("must be a bank voltage above 0 and below 1000 V, found {v}"),
            );
        }
        let b = &config.batteries;
        require(
            b.expected.is_none_or(|n| (1..=64).contains(&n)),
            "batteries.expected",
            format!(
                "must be between 1 and 64, found {}",
                b.expected.unwrap_or(0)
            ),
        );
        require(
            b.cells.is_none_or(|n| (1..=64).contains(&n)),
            "batteries.cells",
            format!("must be between 1 and 64, found {}", b.cells.unwrap_or(0)),
        );
        require(
            !b.product_name.0.is_empty() && b.product_name.0.iter().all(|n| !n.trim().is_empty()),
            "batteries.product_name",
            "must not be empty, nor hold an empty name (the default is SerialBattery)".into(),
        );
        match config.soc.monitor() {
            Some(DeviceRef::Instance(n)) => require(
                *n >= 0,
                "soc.source",
                format!("a VRM device instance is 0 or more, found {n}"),
            ),
            Some(DeviceRef::Name(name)) => require(
                !name.trim().is_empty(),
                "soc.source",
                "a custom name must not be empty".into(),
            ),
            None => {}
        }
        require(
            config.soc.efficiency > 0.0 && config.soc.efficiency <= 1.0,
            "soc.efficiency",
            format!(
                "must be above 0 and at most 1, found {}",
                config.soc.efficiency
            ),
        );
        require(
            config.soc.save_precision > 0.0 && config.soc.save_precision < 1.0,
            "soc.save_precision",
            format!(
                "must be above 0 and below 1, found {}",
                config.soc.save_precision
            ),
        );
        let interval = config.update_interval.as_secs_f64();
        require(
            (0.1..=60.0).contains(&interval),
            "update_interval",
            format!("must be between 100ms and 60s, found {interval}s"),
        );
        let name = &config.publish.service_name;
        require(
            name.starts_with("com.victronenergy.battery.")
                && name.split('.').count() == 4
                && name.rsplit('.').next().is_some_and(valid_name_element),
            "publish.service_name",
            format!("must be com.victronenergy.battery.<suffix> with a suffix of letters, digits, _ or -, not starting with a digit; found `{name}`"),
        );
        errors
    }
}

/// One element of a well-known bus name: letters, digits, `_`, `-`, not starting with a digit.
pub fn valid_name_element(element: &str) -> bool {
    !element.is_empty()
        && !element.starts_with(|c: char| c.is_ascii_digit())
        && element
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The key a block-style line `line` (1-based) starts with, if any.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = content.trim_start().split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && !key.contains(' ') && !key.starts_with('-')).then(|| key.to_string())
}

/// The 1-based line of the block-style key `path` in `text`, or of its longest prefix found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (depth matched, line)
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split(" #").next().unwrap_or("");
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = content.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.contains(' ') || key.starts_with('-') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if depth == stack.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, index + 1));
            if depth == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
strategy:
  plugin: lto-cv
safety:
  max_cell_voltage: 2.6
  max_charge_current: 300
  max_discharge_current: 300
  min_cell_voltage: 1.8
  min_charge_temperature: -10
  max_charge_temperature: 45
  min_discharge_temperature: -20
  max_discharge_temperature: 55
";

    fn source(text: &str) -> Source {
        Source {
            file: "config.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = source(MINIMAL).parse().unwrap();
        assert_eq!(config.batteries, Batteries::default());
        assert_eq!(config.current_source.plugin, "bms");
        assert_eq!(config.update_interval, Duration::from_secs(1));
        assert_eq!(config.safety.plugin_failures, 5);
    }

    #[test]
    fn durations_in_several_forms() {
        for (text, seconds) in [
            ("90s", 90.0),
            ("2m", 120.0),
            ("500ms", 0.5),
            ("45", 45.0),
            ("1h", 3600.0),
        ] {
            let yaml = format!("{MINIMAL}batteries:\n  hold_for: {text}\n");
            let config = source(&yaml).parse().unwrap();
            assert_eq!(config.batteries.hold_for.as_secs_f64(), seconds, "{text}");
        }
        let err = source(&format!("{MINIMAL}batteries:\n  hold_for: soon\n"))
            .parse()
            .unwrap_err();
        assert!(
            err[0].to_string().contains("batteries.hold_for"),
            "{}",
            err[0]
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = source(&format!("{MINIMAL}batteries:\n  expectd: 2\n"))
            .parse()
            .unwrap_err();
        let text = err[0].to_string();
        assert!(text.starts_with("config.yaml:13: batteries"), "{text}");
        assert!(text.contains("unknown field `expectd`"), "{text}");
    }

    #[test]
    fn bad_values_name_their_keys() {
        let yaml = MINIMAL.replace("max_charge_current: 300", "max_charge_current: -5");
        let err = source(&yaml).parse().unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].key, "safety.max_charge_current");
        assert_eq!(err[0].line, Some(5));
        let err = source(&format!("{MINIMAL}batteries:\n  on_lost: panic\n"))
            .parse()
            .unwrap_err();
        assert!(
            err[0].to_string().contains("batteries.on_lost"),
            "{}",
            err[0]
        );
        let err = source(&format!(
            "{MINIMAL}publish:\n  service_name: com.victronenergy.battery.1x\n"
        ))
        .parse()
        .unwrap_err();
        assert_eq!(err[0].key, "publish.service_name");
    }

    #[test]
    fn missing_safety_is_an_error_naming_it() {
        let err = source("strategy:\n  plugin: lto-cv\n").parse().unwrap_err();
        assert!(err[0].message.contains("safety"), "{}", err[0]);
    }

    #[test]
    fn finds_lines_of_nested_keys() {
        let text = "a:\n  b: 1\n  # c: x\n  c:\n    d: [1]\ne: 2\n";
        assert_eq!(line_of(text, &["a", "b"]), Some(2));
        assert_eq!(line_of(text, &["a", "c", "d"]), Some(5));
        assert_eq!(line_of(text, &["e"]), Some(6));
        assert_eq!(line_of(text, &["a", "c", "zz"]), Some(4), "longest prefix");
        assert_eq!(line_of(text, &["zz"]), None);
    }
}
