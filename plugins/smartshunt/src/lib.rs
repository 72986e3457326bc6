//! Current source `smartshunt`: one battery-monitor SmartShunt measures the whole bank.
//!
//! For a master shunt between the bank and everything else (the original
//! `SMARTSHUNT_AS_BATTERY_CURRENT`, docs/current.md §4): `I` = that shunt's `/Dc/0/Current`,
//! `P` = bank voltage × `I`. Unlike the original, which summed every battery shunt and subtracted
//! the DC meters, exactly one shunt counts here; a bank measured by several shunts is the
//! `victron` source with `use_multi: false`.
//!
//! ```yaml
//! current_source:
//!   plugin: smartshunt
//!   shunt: Master   # VRM instance or custom name; default: the first battery monitor
//!   invert: false
//! ```

use plugin_api::{
    parse_checked, Checker, CurrentInputs, CurrentSourceImpl, DeviceRef, Measurement, PluginConfig,
    ShuntClass,
};
use serde::Deserialize;

/// The plugin's config section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The shunt to use. Default: the first battery-class SmartShunt, in the host's order
    /// (by service name), which is only stable while there is a single one.
    #[serde(default)]
    pub shunt: Option<DeviceRef>,
    /// Flip the sign, for a shunt wired the other way round. The original ignored
    /// `INVERT_SMARTSHUNTS` in this mode although its README recommended it for exactly this
    /// (docs/current.md §4); here it applies.
    #[serde(default)]
    pub invert: bool,
}

impl PluginConfig for Config {
    /// Values serde accepts but that can never match a shunt.
    fn check(&self) -> Result<(), String> {
        let mut checker = Checker::new();
        match &self.shunt {
            // Here "" most likely meant "the default shunt", so say how to get it.
            Some(DeviceRef::Name(name)) if name.is_empty() => {
                checker.require(false, "shunt", || {
                    "a custom name must not be empty; leave the key out for the first shunt".into()
                })
            }
            Some(shunt) => shunt.check(&mut checker, "shunt"),
            None => {}
        }
        checker.finish()
    }
}

/// The `smartshunt` current source.
#[derive(Debug, Clone)]
pub struct SmartShuntCurrent {
    config: Config,
}

impl CurrentSourceImpl for SmartShuntCurrent {
    fn measure(&mut self, inputs: &CurrentInputs) -> Option<Measurement> {
        // Only a battery monitor sees the whole bank current; a DC meter named here is a
        // misconfiguration that shows as "no measurement" rather than a wrong current.
        let shunt = inputs
            .smartshunts
            .iter()
            .filter(|shunt| shunt.class == ShuntClass::Battery)
            .find(|shunt| self.config.shunt.as_ref().is_none_or(|r| r.matches(shunt)))?;
        let measured_a = shunt.current_a.into_option()?;
        let current_a = if self.config.invert {
            -measured_a
        } else {
            measured_a
        };
        let power_w = inputs.bank_voltage_v * current_a;
        (current_a.is_finite() && power_w.is_finite()).then_some(Measurement { current_a, power_w })
    }
}

/// Builds the plugin from its config section (JSON text); the error names the bad key.
pub fn new(config: &str) -> Result<SmartShuntCurrent, String> {
    let config = parse_checked(config)?;
    Ok(SmartShuntCurrent { config })
}

plugin_api::export_plugin! {
    kind: current_source,
    name: "smartshunt",
    description: "Bank current = one battery-monitor SmartShunt",
    config: Config,
    new: new,
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;
    use plugin_api::testing::CurrentInputsBuilder;

    /// A bus without devices; the batteries' own sums are a value no test expects.
    fn empty_bus() -> CurrentInputsBuilder {
        CurrentInputsBuilder::new()
            .bms(999.0, 999.0)
            .bank_voltage(50.0)
    }

    /// The current `config` measures on a bus.
    fn measured_current(bus: &CurrentInputs, config: &str) -> Option<f64> {
        new(config).unwrap().measure(bus).map(|m| m.current_a)
    }

    /// Battery monitors 279 "Master" 12 A and 281 "Aux" 3 A, after a DC meter 280 "House".
    fn three_shunts() -> CurrentInputsBuilder {
        empty_bus()
            .shunt(ShuntClass::DcLoad, 280, "House", 40.0)
            .shunt(ShuntClass::Battery, 279, "Master", 12.0)
            .shunt(ShuntClass::Battery, 281, "Aux", 3.0)
    }

    #[test]
    fn default_is_the_first_battery_shunt() {
        assert_eq!(measured_current(&three_shunts().build(), ""), Some(12.0));
    }

    #[test]
    fn selects_by_name_and_by_instance() {
        assert_eq!(
            measured_current(&three_shunts().build(), r#"{"shunt": "Aux"}"#),
            Some(3.0)
        );
        assert_eq!(
            measured_current(&three_shunts().build(), r#"{"shunt": 281}"#),
            Some(3.0)
        );
        assert_eq!(
            measured_current(&three_shunts().build(), r#"{"shunt": 279}"#),
            Some(12.0)
        );
    }

    #[test]
    fn invert_flips_the_sign() {
        assert_eq!(
            measured_current(&three_shunts().build(), r#"{"invert": true}"#),
            Some(-12.0)
        );
    }

    #[test]
    fn power_is_bank_voltage_times_current() {
        let mut source = new("").unwrap();
        let m = source.measure(&three_shunts().build()).unwrap();
        assert_eq!(m.power_w, 50.0 * 12.0);
    }

    #[test]
    fn dcload_only_gives_none() {
        let bus = empty_bus().shunt(ShuntClass::DcLoad, 280, "House", 40.0);
        assert_eq!(measured_current(&bus.build(), ""), None);
        // Naming the DC meter does not make it the bank current.
        assert_eq!(
            measured_current(&bus.build(), r#"{"shunt": "House"}"#),
            None
        );
    }

    #[test]
    fn missing_shunt_gives_none() {
        assert_eq!(
            measured_current(&three_shunts().build(), r#"{"shunt": "Spare"}"#),
            None
        );
        assert_eq!(measured_current(&empty_bus().build(), ""), None);
    }

    #[test]
    fn invalid_current_gives_none() {
        let mut bus = three_shunts().build();
        bus.smartshunts[1].current_a = ROption::RNone;
        assert_eq!(measured_current(&bus, ""), None);
        bus.smartshunts[1].current_a = ROption::RSome(f64::NAN);
        assert_eq!(measured_current(&bus, ""), None);
        // The other shunt is not a fallback: it measures something else.
        assert_eq!(measured_current(&bus, r#"{"shunt": "Aux"}"#), Some(3.0));
    }

    #[test]
    fn non_finite_voltage_gives_none() {
        let mut bus = three_shunts().build();
        bus.bank_voltage_v = f64::INFINITY;
        assert_eq!(measured_current(&bus, ""), None);
    }

    #[test]
    fn config_defaults() {
        assert_eq!(new("null").unwrap().config, Config::default());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (r#"{"invert_smartshunts": true}"#, "invert_smartshunts"),
            (r#"{"invert": 1}"#, "invert"),
            (r#"{"shunt": 1.5}"#, "shunt"),
            (r#"{"shunt": [279]}"#, "shunt"),
            (r#"{"shunt": -3}"#, "shunt"),
            (r#"{"shunt": ""}"#, "shunt"),
        ];
        for (json, key) in cases {
            let err = new(json).unwrap_err();
            assert!(err.starts_with(&format!("{key}: ")), "{json} -> {err}");
        }
        let err = new(r#"{"shunt": true}"#).unwrap_err();
        assert!(
            err.contains("VRM device instance (integer) or a custom name"),
            "{err}"
        );
    }
}
