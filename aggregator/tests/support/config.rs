//! A typed test config: the daemon's `config.yaml` built from values instead of YAML literals
//! patched with `.replace(...)`.
//!
//! [`TestConfig::default`] is what most end-to-end tests share: a 200 ms tick, two 16-cell
//! batteries, the BMS current, the serialbattery pass-through, the usual LFP safety window,
//! state and plugins in the test's folder (`@DIR@` and `@PLUGINS@`, replaced when the daemon
//! starts), no summary lines. Each test says only what differs:
//!
//! ```ignore
//! TestConfig::default()
//!     .lfp()
//!     .batteries(|b| b.hold_for("3s"))
//!     .safety(|s| s.max_cell_voltage(3.65))
//!     .to_yaml()
//! ```

use std::fmt::Write as _;

use serde::Serialize;
use serde_yaml::{Mapping, Value};

/// A whole config, section by section in the order written.
#[derive(Clone, Debug)]
pub struct TestConfig {
    root: Mapping,
}

/// One section (`batteries:`, `safety:`, ...): keys in the order set.
#[derive(Clone, Debug, Default)]
pub struct Section(Mapping);

fn value(v: impl Serialize) -> Value {
    serde_yaml::to_value(v).expect("a YAML value")
}

/// A YAML text (a flow mapping like `{ plugin: bms }`, or a block) as a value.
pub fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|err| panic!("test YAML {text:?}: {err}"))
}

impl Section {
    /// Sets `key` (any YAML value).
    pub fn set(mut self, key: &str, v: impl Serialize) -> Self {
        self.0.insert(Value::from(key), value(v));
        self
    }

    /// Takes `key` out.
    pub fn unset(mut self, key: &str) -> Self {
        self.0.remove(key);
        self
    }
}

/// `batteries:`.
impl Section {
    pub fn expected(self, count: u32) -> Self {
        self.set("expected", count)
    }
    pub fn cells(self, count: u32) -> Self {
        self.set("cells", count)
    }
    pub fn startup_wait(self, duration: &str) -> Self {
        self.set("startup_wait", duration)
    }
    pub fn hold_for(self, duration: &str) -> Self {
        self.set("hold_for", duration)
    }
    pub fn frozen_after(self, duration: &str) -> Self {
        self.set("frozen_after", duration)
    }
}

/// `safety:`.
impl Section {
    pub fn max_cell_voltage(self, v: f64) -> Self {
        self.set("max_cell_voltage", v)
    }
    pub fn min_cell_voltage(self, v: f64) -> Self {
        self.set("min_cell_voltage", v)
    }
    pub fn max_charge_voltage(self, v: f64) -> Self {
        self.set("max_charge_voltage", v)
    }
    pub fn max_charge_current(self, a: f64) -> Self {
        self.set("max_charge_current", a)
    }
    pub fn max_discharge_current(self, a: f64) -> Self {
        self.set("max_discharge_current", a)
    }
    pub fn feed_in_hold(self, duration: &str) -> Self {
        self.set("feed_in_hold", duration)
    }
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            root: Mapping::new(),
        }
        .update_interval("200ms")
        .batteries(|b| b.expected(2).cells(16).startup_wait("20s"))
        .current_source(yaml("{ plugin: bms }"))
        .strategy(yaml("{ plugin: serialbattery, config: {} }"))
        .safety(|s| {
            s.max_cell_voltage(3.60)
                .max_charge_current(300.0)
                .max_discharge_current(300.0)
                .min_cell_voltage(2.5)
                .set("min_charge_temperature", 0)
                .set("max_charge_temperature", 45)
                .set("min_discharge_temperature", -20)
                .set("max_discharge_temperature", 55)
        })
        .set(
            "paths",
            yaml(r#"{ state_dir: "@DIR@/state", plugins_dir: "@PLUGINS@" }"#),
        )
        .section("logging", |l| l.set("summary_every", "0s"))
    }
}

impl TestConfig {
    /// Sets a top-level key (any YAML value).
    pub fn set(mut self, key: &str, v: impl Serialize) -> Self {
        self.root.insert(Value::from(key), value(v));
        self
    }

    /// Takes a top-level key out.
    pub fn unset(mut self, key: &str) -> Self {
        self.root.remove(key);
        self
    }

    /// Changes a section (created empty when missing).
    pub fn section(mut self, key: &str, change: impl FnOnce(Section) -> Section) -> Self {
        let current = match self.root.get(key) {
            Some(Value::Mapping(m)) => Section(m.clone()),
            _ => Section::default(),
        };
        self.root
            .insert(Value::from(key), Value::Mapping(change(current).0));
        self
    }

    pub fn update_interval(self, duration: &str) -> Self {
        self.set("update_interval", duration)
    }

    pub fn batteries(self, change: impl FnOnce(Section) -> Section) -> Self {
        self.section("batteries", change)
    }

    pub fn safety(self, change: impl FnOnce(Section) -> Section) -> Self {
        self.section("safety", change)
    }

    /// `strategy:` (`{ plugin: ..., config: {...} }`).
    pub fn strategy(self, section: Value) -> Self {
        self.set("strategy", section)
    }

    /// `current_source:`.
    pub fn current_source(self, section: Value) -> Self {
        self.set("current_source", section)
    }

    /// The LFP strategy the end-to-end tests share ([`super::bus::LFP_STRATEGY`]).
    pub fn lfp(self) -> Self {
        let lfp = yaml(super::bus::LFP_STRATEGY);
        self.strategy(lfp["strategy"].clone())
    }

    /// The config's text: one line per section, its value a flow mapping (JSON, which YAML
    /// reads), as the hand-written test configs had it, so that errors name the same places.
    pub fn to_yaml(&self) -> String {
        let mut text = String::new();
        for (key, v) in &self.root {
            let key = key.as_str().expect("a top-level key is text");
            let v = serde_json::to_string(v).expect("a section as a flow mapping");
            let _ = writeln!(text, "{key}: {v}");
        }
        text
    }
}

impl From<TestConfig> for String {
    fn from(config: TestConfig) -> String {
        config.to_yaml()
    }
}
