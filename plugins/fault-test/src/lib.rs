//! Strategy `fault-test`: a strategy that misbehaves on purpose.
//!
//! **A test fixture, never installed.** The host's integration tests load it from disk like any
//! other plugin to prove that a panicking, failing or nonsensical strategy cannot take the
//! daemon down: the plugin side turns panics into errors ([`plugin_api::guard`]) and the host's
//! safety envelope handles the rest. The crate is `publish = false` and no package ships it.
//!
//! ```yaml
//! strategy:
//!   plugin: fault-test
//!   config: { fault: panic, after_ticks: 3 }   # 3 good ticks, then a panic every tick
//! ```

use plugin_api::{parse_config, BankView, StrategyImpl, StrategyOutput};
use serde::Deserialize;

/// The plugin's config section.
///
/// The limits are deliberately not range-checked: tests may want odd values.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How to misbehave.
    #[serde(default)]
    pub fault: Fault,
    /// Good ticks before the fault: it starts with compute call number `after_ticks + 1`.
    #[serde(default)]
    pub after_ticks: u64,
    /// CVL of a good tick, V.
    #[serde(default = "default_cvl")]
    pub cvl: f64,
    /// CCL of a good tick, A.
    #[serde(default = "default_ccl")]
    pub ccl: f64,
    /// DCL of a good tick, A.
    #[serde(default = "default_dcl")]
    pub dcl: f64,
    /// How long `compute` takes with `fault: slow`, ms.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: u64,
}

impl plugin_api::PluginConfig for Config {}

fn default_cvl() -> f64 {
    55.0
}

fn default_ccl() -> f64 {
    50.0
}

fn default_dcl() -> f64 {
    60.0
}

fn default_slow_ms() -> u64 {
    2000
}

/// The `fault` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Behave: the configured limits, mode `Test`.
    #[default]
    None,
    /// `compute` panics with `fault-test: deliberate panic`.
    Panic,
    /// `compute` returns NaN for CVL and CCL.
    Nan,
    /// `compute` returns CVL 1e6 V, CCL 1e9 A and DCL −5 A.
    OutOfRange,
    /// `compute` returns the error `fault-test: deliberate error`.
    Error,
    /// `compute` sleeps `slow_ms`, then behaves.
    Slow,
    /// The constructor panics.
    PanicInConstructor,
    /// The constructor returns an error naming the key `fault`.
    ConstructorError,
}

/// The `fault-test` strategy: counts its ticks and misbehaves once past `after_ticks`.
#[derive(Debug, Clone)]
pub struct FaultTest {
    config: Config,
    ticks: u64,
}

impl StrategyImpl for FaultTest {
    fn compute(&mut self, _bank: &BankView) -> Result<StrategyOutput, String> {
        self.ticks += 1;
        let Config { cvl, ccl, dcl, .. } = self.config;
        let fault = if self.ticks > self.config.after_ticks {
            self.config.fault
        } else {
            Fault::None
        };
        match fault {
            // The constructor faults never get this far.
            Fault::None | Fault::PanicInConstructor | Fault::ConstructorError => {
                Ok(StrategyOutput::limits(cvl, ccl, dcl, "Test"))
            }
            Fault::Slow => {
                std::thread::sleep(std::time::Duration::from_millis(self.config.slow_ms));
                Ok(StrategyOutput::limits(cvl, ccl, dcl, "Test"))
            }
            Fault::Panic => panic!("fault-test: deliberate panic"),
            Fault::Nan => Ok(StrategyOutput::limits(f64::NAN, f64::NAN, dcl, "Test")),
            Fault::OutOfRange => Ok(StrategyOutput::limits(1e6, 1e9, -5.0, "Test")),
            Fault::Error => Err("fault-test: deliberate error".into()),
        }
    }

    /// The tick count, so that tests can see state survive a restart.
    fn save_state(&self) -> Result<String, String> {
        Ok(self.ticks.to_string())
    }

    fn restore_state(&mut self, state: &str) -> Result<(), String> {
        self.ticks = state
            .trim()
            .parse()
            .map_err(|_| format!("fault-test: state {state:?} is not a tick count"))?;
        Ok(())
    }
}

/// Builds the plugin from its config section (JSON text), unless `fault` asks it to fail.
pub fn new(config: &str) -> Result<FaultTest, String> {
    let config: Config = parse_config(config)?;
    match config.fault {
        Fault::PanicInConstructor => panic!("fault-test: deliberate panic in constructor"),
        Fault::ConstructorError => {
            Err("fault: constructor_error makes the constructor fail on purpose".into())
        }
        _ => Ok(FaultTest { config, ticks: 0 }),
    }
}

plugin_api::export_plugin! {
    kind: strategy,
    name: "fault-test",
    description: "Test fixture: a strategy that fails on purpose (never installed)",
    config: Config,
    new: new,
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RResult;
    use plugin_api::guard;
    use plugin_api::testing::BankBuilder;

    /// A bank with no batteries: the strategy never looks at it.
    fn bank() -> BankView {
        BankBuilder::new().build()
    }

    /// One tick through the panic guard, as the host calls it.
    fn tick(strategy: &mut FaultTest) -> Result<StrategyOutput, String> {
        match guard(|| strategy.compute(&bank())) {
            RResult::ROk(output) => Ok(output),
            RResult::RErr(message) => Err(message.into()),
        }
    }

    fn strategy(config: &str) -> FaultTest {
        new(config).unwrap()
    }

    #[test]
    fn none_returns_the_configured_limits() {
        let output = tick(&mut strategy("")).unwrap();
        assert_eq!(output, StrategyOutput::limits(55.0, 50.0, 60.0, "Test"));
        let output = tick(&mut strategy(r#"{"cvl": 2.4, "ccl": 1, "dcl": 2}"#)).unwrap();
        assert_eq!(output, StrategyOutput::limits(2.4, 1.0, 2.0, "Test"));
    }

    #[test]
    fn panic_is_caught_by_the_guard() {
        let err = tick(&mut strategy(r#"{"fault": "panic"}"#)).unwrap_err();
        assert!(err.contains("fault-test: deliberate panic"), "{err}");
    }

    #[test]
    fn nan_gives_nan_cvl_and_ccl() {
        let output = tick(&mut strategy(r#"{"fault": "nan"}"#)).unwrap();
        assert!(output.cvl_v.is_nan() && output.ccl_a.is_nan());
        assert_eq!(output.dcl_a, 60.0);
    }

    #[test]
    fn out_of_range_limits() {
        let output = tick(&mut strategy(r#"{"fault": "out_of_range"}"#)).unwrap();
        assert_eq!((output.cvl_v, output.ccl_a, output.dcl_a), (1e6, 1e9, -5.0));
    }

    #[test]
    fn error_is_returned() {
        let err = tick(&mut strategy(r#"{"fault": "error"}"#)).unwrap_err();
        assert_eq!(err, "fault-test: deliberate error");
    }

    #[test]
    fn fault_starts_after_the_good_ticks() {
        let mut strategy = strategy(r#"{"fault": "error", "after_ticks": 2}"#);
        assert!(tick(&mut strategy).is_ok());
        assert!(tick(&mut strategy).is_ok());
        assert!(tick(&mut strategy).is_err());
        assert!(tick(&mut strategy).is_err());
    }

    #[test]
    fn slow_gives_the_configured_limits_after_its_sleep() {
        let output = tick(&mut strategy(r#"{"fault": "slow", "slow_ms": 1}"#)).unwrap();
        assert_eq!(output, StrategyOutput::limits(55.0, 50.0, 60.0, "Test"));
        assert_eq!(strategy(r#"{"fault": "slow"}"#).config.slow_ms, 2000);
    }

    #[test]
    fn constructor_panic_is_caught_by_the_guard() {
        let RResult::RErr(err) = guard(|| new(r#"{"fault": "panic_in_constructor"}"#)) else {
            panic!("the constructor did not fail");
        };
        assert!(err.contains("deliberate panic in constructor"), "{err}");
    }

    #[test]
    fn constructor_error_names_the_key() {
        let err = new(r#"{"fault": "constructor_error"}"#).unwrap_err();
        assert!(err.starts_with("fault: "), "{err}");
    }

    #[test]
    fn state_is_the_tick_count() {
        let mut first = strategy(r#"{"fault": "error", "after_ticks": 2}"#);
        tick(&mut first).unwrap();
        tick(&mut first).unwrap();
        assert_eq!(first.save_state().unwrap(), "2");

        // Restored after a restart, the fault resumes where it was.
        let mut second = strategy(r#"{"fault": "error", "after_ticks": 2}"#);
        second.restore_state("2").unwrap();
        assert!(tick(&mut second).is_err());
        assert!(second.restore_state("two").is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (r#"{"faults": "nan"}"#, "faults"),
            (r#"{"fault": "explode"}"#, "fault"),
            (r#"{"after_ticks": -1}"#, "after_ticks"),
            (r#"{"cvl": "high"}"#, "cvl"),
        ];
        for (json, key) in cases {
            let err = new(json).unwrap_err();
            assert!(err.starts_with(&format!("{key}: ")), "{json} -> {err}");
        }
    }
}
