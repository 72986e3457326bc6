//! `config.yaml`: the typed configuration, its checks, and errors that name key and line.
//!
//! The host's own sections are typed structs; each plugin's `config` section is kept as a
//! JSON value and handed to the plugin, which checks it the same way (see
//! `plugin_api::config`). Every error names the file, the key path and, where it can be found,
//! the line.

pub mod check;
mod duration;
mod source;

pub use duration::{duration, parse_duration};
pub use source::{
    line_of, line_of_key, read_config_text, valid_name_element, valid_service_name, yaml_message,
    ConfigError, Source, CONFIG_MAX_BYTES,
};

use std::path::PathBuf;
use std::time::Duration;

use aggregator_core::discovery::{ProductNames, Rules, Selector};
use aggregator_core::engine::{OnLost, Settings};
use aggregator_core::envelope::Bounds;
use aggregator_core::guard::{BmsLimits, GuardBounds, Window};
use plugin_api::DeviceRef;
use serde::Deserialize;

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
    /// Most files of each kind kept in the folder, the oldest of the kind removed: those
    /// asked for and those saved for happenings are counted apart.
    pub max_files: u32,
    /// The folder (relative: to the config file's folder); default `recordings` in
    /// `paths.state_dir`.
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
    /// `max_memory_kib` in bytes. On a 32-bit device (armv7) a bound of 4 GiB or more is past
    /// its address space and stands for all of it, never wrapped round to a small one.
    pub fn max_bytes(&self) -> usize {
        usize::try_from(self.max_memory_kib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1024)
    }

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
    /// A battery none of whose values changed for this long while the bank carries current is
    /// frozen (0 s: off).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_file::tests::{make_fifo, within_10_s};
    use std::path::Path;

    /// docs/commands.md §1: a FIFO or a file beyond the bound is refused at once, naming the
    /// file and what it is (a FIFO held `run` for ever, before its first log line).
    #[test]
    #[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
    fn a_fifo_or_a_file_beyond_the_bound_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.yaml");
        make_fifo(&fifo);
        let read = within_10_s({
            let fifo = fifo.clone();
            move || Source::read(&fifo).map(drop)
        });
        assert_eq!(
            read.unwrap_err().to_string(),
            format!(
                "{}: cannot read: not a regular file (a FIFO)",
                fifo.display()
            )
        );
        let level = within_10_s(move || crate::cli::log_level(&fifo));
        assert_eq!(level, tracing::Level::INFO);

        let big = dir.path().join("big.yaml");
        let mut text = MINIMAL.to_string();
        while text.len() as u64 <= CONFIG_MAX_BYTES {
            text.push_str("# a comment line, over and over again\n");
        }
        std::fs::write(&big, &text).unwrap();
        let err = Source::read(&big).map(drop).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: cannot read: too large: {} bytes, more than the 1048576 bytes (1 MiB) read \
                 at most",
                big.display(),
                text.len()
            )
        );
        // The bound, not the text: a file at the bound is read.
        text.truncate(CONFIG_MAX_BYTES as usize);
        std::fs::write(&big, &text).unwrap();
        assert!(Source::read(&big).is_ok());
    }

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
    fn a_relative_recordings_folder_is_the_config_files_folders_as_state_dir_is() {
        let with_dir = |dir: &str| {
            let yaml =
                format!("{MINIMAL}paths: {{ state_dir: state }}\nrecord: {{ dir: {dir} }}\n");
            let mut config = source(&yaml).parse().unwrap();
            check::resolve_paths(&mut config, Path::new("/opt/dab/config.yaml"), None);
            (
                config.paths.state_dir.clone(),
                config.record.folder(&config.paths),
            )
        };
        let (state, recordings) = with_dir("recordings");
        assert_eq!(state, Path::new("/opt/dab/state"));
        assert_eq!(recordings, Path::new("/opt/dab/recordings"));
        assert_eq!(with_dir("/data/rec").1, Path::new("/data/rec"));
        let mut config = source(MINIMAL).parse().unwrap();
        config.paths.state_dir = "state".into();
        check::resolve_paths(&mut config, Path::new("/opt/dab/config.yaml"), None);
        assert_eq!(
            config.record.folder(&config.paths),
            Path::new("/opt/dab/state/recordings")
        );
    }

    #[test]
    fn the_recorder_bound_in_bytes_never_wraps() {
        for kib in [0, 1, 8192, 4_194_303, 4_194_304, u32::MAX] {
            let record = Record {
                max_memory_kib: kib,
                ..Record::default()
            };
            // The product in 64 bits, then what this machine's addresses can hold of it.
            let exact = u64::from(kib) * 1024;
            let expected = usize::try_from(exact).unwrap_or(usize::MAX);
            assert_eq!(record.max_bytes(), expected, "{kib} KiB");
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
            // A tick short enough for each (hold_for is at least one).
            let yaml = format!("update_interval: 100ms\n{MINIMAL}batteries:\n  hold_for: {text}\n");
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
    fn a_cell_voltage_as_max_charge_voltage_is_refused_when_the_cells_are_known() {
        let with = |cells: &str, v: &str| {
            source(&format!(
                "{MINIMAL}  max_charge_voltage: {v}\nbatteries:\n  cells: {cells}\n"
            ))
            .parse()
        };
        let err = with("16", "2.6").unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].key, "safety.max_charge_voltage");
        assert_eq!(err[0].line, Some(12));
        assert!(
            err[0].message.contains("bank voltage")
                && err[0]
                    .message
                    .contains("16 cells × safety.min_cell_voltage 1.8 V = 28.8 V")
                && err[0].message.contains("found 2.6"),
            "{}",
            err[0]
        );
        // The lowest bank voltage that can be meant, and a usual one, pass.
        assert!(with("16", "28.8").is_ok());
        assert!(with("16", "41.6").is_ok());
        // Without a cell count it is checked at run time (docs/guard.md §2).
        assert!(source(&format!("{MINIMAL}  max_charge_voltage: 2.6\n"))
            .parse()
            .is_ok());
    }

    #[test]
    fn nan_and_infinity_in_a_plugin_section_are_refused_by_key_and_line() {
        let yaml = MINIMAL.replace(
            "  plugin: lto-cv\n",
            "  plugin: serialbattery\n  config:\n    max_cell_voltage_soc_full: .nan\n    \
             curve:\n      voltages: [3.3, -.inf]\n",
        )
            + "current_source:\n  plugin: victron\n  config: { gain: .inf, nested: { ok: 1.5 } }\n";
        let err = source(&yaml).parse().unwrap_err();
        let found: Vec<(&str, Option<usize>, bool)> = err
            .iter()
            .map(|e| {
                let named = e.message.starts_with("must be a finite number, found ");
                (e.key.as_str(), e.line, named)
            })
            .collect();
        assert_eq!(
            found,
            [
                ("strategy.config.max_cell_voltage_soc_full", Some(4), true),
                ("strategy.config.curve.voltages[1]", Some(6), true),
                ("current_source.config.gain", Some(18), true),
            ],
            "{err:?}"
        );
        assert!(err[0].message.contains(".nan"), "{}", err[0]);
        assert!(err[1].message.contains("-.inf"), "{}", err[1]);
    }

    #[test]
    fn presence_times_shorter_than_the_tick_can_use_are_refused() {
        let with = |interval: &str, batteries: &str| {
            source(&format!(
                "update_interval: {interval}\n{MINIMAL}batteries:\n{batteries}"
            ))
            .parse()
        };
        let err = with("1s", "  hold_for: 0s\n  frozen_after: 500ms\n").unwrap_err();
        let found: Vec<(&str, Option<usize>)> =
            err.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert_eq!(
            found,
            [
                ("batteries.hold_for", Some(14)),
                ("batteries.frozen_after", Some(15))
            ]
        );
        assert!(
            err[0]
                .message
                .starts_with("must be at least update_interval (1s), found 0s"),
            "{}",
            err[0]
        );
        assert!(
            err[1]
                .message
                .starts_with("must be 0s (off) or at least 3 × update_interval (3s), found 0.5s"),
            "{}",
            err[1]
        );
        // The least that works, the check turned off, and the minimum following the tick.
        assert!(with("1s", "  hold_for: 1s\n  frozen_after: 3s\n").is_ok());
        assert!(with("1s", "  frozen_after: 0s\n").is_ok());
        assert!(with("200ms", "  hold_for: 200ms\n  frozen_after: 600ms\n").is_ok());
        let err = with("200ms", "  frozen_after: 500ms\n").unwrap_err();
        assert!(err[0].message.contains("(0.6s), found 0.5s"), "{}", err[0]);
        // The defaults fit every tick but the slowest: 120 s is two ticks of 60 s.
        assert!(with("40s", "  expected: 1\n").is_ok());
        let err = with("60s", "  expected: 1\n").unwrap_err();
        assert_eq!(err[0].key, "batteries.frozen_after");
    }

    #[test]
    fn a_key_written_twice_is_refused_at_its_second_line_under_its_whole_path() {
        let err = |text: &str| {
            let err = source(text).parse().unwrap_err();
            assert_eq!(err.len(), 1, "{err:?}");
            assert!(
                err[0].message.starts_with("written twice (first at line "),
                "{}",
                err[0]
            );
            (err[0].key.clone(), err[0].line)
        };
        // Inside a plugin's section (the typed parse took the last value), no shadow in sight.
        let strategy = MINIMAL.replace(
            "  plugin: lto-cv\n",
            "  plugin: lto-cv\n  config:\n    charge_voltage: 2.5\n    # again:\n    \
             charge_voltage: 2.55\n",
        );
        assert_eq!(
            err(&strategy),
            ("strategy.config.charge_voltage".into(), Some(6))
        );
        // In a host section, under its own key.
        let host = format!(
            "{MINIMAL}batteries:\n  product_name: SerialBattery\n  expected: 2\n  \
             cells: 16\n  expected: 3\n"
        );
        assert_eq!(err(&host), ("batteries.expected".into(), Some(16)));
        // At the top, deeper down, and in flow style.
        assert_eq!(
            err(&format!(
                "{MINIMAL}update_interval: 1s\nupdate_interval: 2s\n"
            )),
            ("update_interval".into(), Some(13))
        );
        assert_eq!(
            err(&format!(
                "{MINIMAL}record:\n  save_on:\n    bound: true\n    feed_in: true\n    \
                 bound: false\n"
            )),
            ("record.save_on.bound".into(), Some(16))
        );
        assert_eq!(
            err(&format!(
                "{MINIMAL}current_source: {{ plugin: bms, plugin: victron }}\n"
            )),
            ("current_source.plugin".into(), Some(12))
        );
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
