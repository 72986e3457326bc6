//! Current source `bms`: the bank current is the sum of the BMS currents.
//!
//! This is what the original service does with `CURRENT_FROM_VICTRON = False` (docs/current.md §2):
//! `Current` = Σ BMS `/Dc/0/Current` and `Power` = Σ BMS `/Dc/0/Power`. The host already merges
//! those sums, so the plugin only hands them back. It is the right choice when no Victron device
//! measures the battery current, and it is always available, which is why it never returns
//! `None`.
//!
//! ```yaml
//! current_source: { plugin: bms }
//! ```

use plugin_api::{parse_config, CurrentInputs, CurrentSourceImpl, Measurement};
use serde::Deserialize;

/// The plugin's config section. It has no keys; it exists so that a mistyped key is an error
/// rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {}

impl plugin_api::PluginConfig for Config {}

/// Passes the merged BMS current and power through.
#[derive(Debug, Clone, Default)]
pub struct BmsCurrent;

impl CurrentSourceImpl for BmsCurrent {
    fn measure(&mut self, inputs: &CurrentInputs) -> Option<Measurement> {
        Some(Measurement {
            current_a: inputs.bms_current_a,
            power_w: inputs.bms_power_w,
        })
    }
}

/// Builds the plugin from its config section (JSON text; empty or `null` is fine).
pub fn new(config: &str) -> Result<BmsCurrent, String> {
    parse_config::<Config>(config).map(|_| BmsCurrent)
}

plugin_api::export_plugin! {
    kind: current_source,
    name: "bms",
    description: "Bank current and power = sum of the BMS values",
    config: Config,
    new: new,
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing::CurrentInputsBuilder;

    /// A bus with batteries only: the BMS sums and a bank voltage.
    fn inputs(bms_current_a: f64, bms_power_w: f64) -> CurrentInputs {
        CurrentInputsBuilder::new()
            .bms(bms_current_a, bms_power_w)
            .bank_voltage(53.0)
            .build()
    }

    #[test]
    fn passes_the_bms_sums_through() {
        let mut source = new("").unwrap();
        assert_eq!(
            source.measure(&inputs(-12.5, -660.0)),
            Some(Measurement {
                current_a: -12.5,
                power_w: -660.0
            })
        );
    }

    #[test]
    fn accepts_an_empty_or_missing_section() {
        for text in ["", "null", "{}"] {
            assert!(new(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = new(r#"{"invert": true}"#).unwrap_err();
        assert!(err.contains("invert"), "{err}");
    }
}
