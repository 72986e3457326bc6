//! The plugin's section of `config.yaml`: keys, defaults and checks.
//!
//! Defaults are the LTO values of the original v3.4 `settings.py` (docs/strategies.md §2.1), so a
//! missing section behaves like the program this replaces.

use plugin_api::{Checker, PluginConfig};
use serde::Deserialize;

/// A piecewise-linear curve from cell voltage (V) to a factor of the maximum current.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// Cell voltages, strictly ascending.
    pub voltages: Vec<f64>,
    /// Factor at each voltage, ≥ 0.
    pub factors: Vec<f64>,
}

/// The `strategy.config` section for `lfp-balancing`. Voltages are per cell.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Per-cell voltage held during a balancing run.
    #[serde(default = "default_balancing_voltage")]
    pub balancing_voltage: f64,
    /// Calendar days from the end of one balancing run to the start of the next.
    #[serde(default = "default_balancing_every_days")]
    pub balancing_every_days: u32,
    /// Per-cell normal charge voltage for each month, January first.
    #[serde(default = "default_charge_voltages")]
    pub charge_voltages: Vec<f64>,
    /// Cell voltage at which the dynamic CVL reduction starts; cells above it lower the CVL.
    #[serde(default = "default_max_cell_voltage")]
    pub max_cell_voltage: f64,
    /// The dynamic CVL reduction stops once the highest cell is below
    /// `max_cell_voltage − max_cell_hysteresis`, so a cell at the limit does not flap.
    #[serde(default = "default_max_cell_hysteresis")]
    pub max_cell_hysteresis: f64,
    /// Per-cell margin within which the balancing goal and the 100 % reset count as reached:
    /// a charger regulates a few mV below its target.
    #[serde(default = "default_target_tolerance")]
    pub target_tolerance: f64,
    /// Cell voltage at which discharge is latched off (and the counter reset to 0 %).
    #[serde(default = "default_min_cell_voltage")]
    pub min_cell_voltage: f64,
    /// The discharge latch clears once the lowest cell is above
    /// `min_cell_voltage + min_cell_hysteresis`.
    #[serde(default = "default_min_cell_hysteresis")]
    pub min_cell_hysteresis: f64,
    /// Cell spread (max − min) below which the cells count as balanced.
    #[serde(default = "default_cell_diff_max")]
    pub cell_diff_max: f64,
    /// CCL scale, A.
    #[serde(default = "default_current")]
    pub max_charge_current: f64,
    /// DCL scale, A.
    #[serde(default = "default_current")]
    pub max_discharge_current: f64,
    /// Reset the counter to 0 % when the lowest cell reaches `min_cell_voltage`.
    #[serde(default = "default_zero_soc")]
    pub zero_soc: bool,
    /// CCL factor by highest cell voltage; derived from the voltages above when omitted.
    #[serde(default)]
    pub charge_curve: Option<Curve>,
    /// DCL factor by lowest cell voltage; derived from `min_cell_voltage` when omitted.
    #[serde(default)]
    pub discharge_curve: Option<Curve>,
}

fn default_balancing_voltage() -> f64 {
    2.5
}
fn default_balancing_every_days() -> u32 {
    10
}
fn default_charge_voltages() -> Vec<f64> {
    vec![
        2.45, 2.45, 2.42, 2.42, 2.40, 2.40, 2.40, 2.40, 2.42, 2.42, 2.45, 2.45,
    ]
}
fn default_max_cell_voltage() -> f64 {
    2.55
}
fn default_max_cell_hysteresis() -> f64 {
    0.02
}
fn default_target_tolerance() -> f64 {
    0.005
}
fn default_min_cell_voltage() -> f64 {
    1.9
}
fn default_min_cell_hysteresis() -> f64 {
    0.1
}
fn default_cell_diff_max() -> f64 {
    0.015
}
fn default_current() -> f64 {
    200.0
}
fn default_zero_soc() -> bool {
    true
}

impl Config {
    /// The CCL curve: the configured one, or the original's
    /// `[MIN, MIN+0.05, BAL−0.1, BAL, MAX]` → `[0.2, 1, 1, 0.1, 0]`.
    pub fn charge_curve(&self) -> Curve {
        self.charge_curve.clone().unwrap_or_else(|| {
            let (min, bal) = (self.min_cell_voltage, self.balancing_voltage);
            // Written as the original's sums so the points are bit-identical to its tables.
            Curve {
                voltages: vec![min, min + 0.05, bal - 0.1, bal, self.max_cell_voltage],
                factors: vec![0.2, 1.0, 1.0, 0.1, 0.0],
            }
        })
    }

    /// The DCL curve: the configured one, or the original's `[MIN, MIN+0.1, MIN+0.2]` →
    /// `[0, 0.05, 1]`.
    pub fn discharge_curve(&self) -> Curve {
        self.discharge_curve.clone().unwrap_or_else(|| {
            let min = self.min_cell_voltage;
            Curve {
                voltages: vec![min, min + 0.1, min + 0.2],
                factors: vec![0.0, 0.05, 1.0],
            }
        })
    }
}

impl PluginConfig for Config {
    /// Both curves written out: the configured ones, or those derived from the voltages.
    fn resolved(self) -> Self {
        Config {
            charge_curve: Some(self.charge_curve()),
            discharge_curve: Some(self.discharge_curve()),
            ..self
        }
    }

    /// Every bad key at once, including a derived curve that its source keys make invalid.
    fn check(&self) -> Result<(), String> {
        let mut check = Checker::new();
        check.positive("balancing_voltage", self.balancing_voltage);
        check.require(
            self.balancing_every_days >= 1,
            "balancing_every_days",
            || format!("must be 1 or more, found {}", self.balancing_every_days),
        );
        check.length("charge_voltages", &self.charge_voltages, 12);
        for (month, &voltage) in self.charge_voltages.iter().enumerate() {
            check.positive(&format!("charge_voltages[{month}]"), voltage);
        }
        check.positive("max_cell_voltage", self.max_cell_voltage);
        check.positive("min_cell_voltage", self.min_cell_voltage);
        check.non_negative("min_cell_hysteresis", self.min_cell_hysteresis);
        check.non_negative("max_cell_hysteresis", self.max_cell_hysteresis);
        check.non_negative("target_tolerance", self.target_tolerance);
        check.positive("cell_diff_max", self.cell_diff_max);
        check.positive("max_charge_current", self.max_charge_current);
        check.positive("max_discharge_current", self.max_discharge_current);

        check.require(
            self.max_cell_voltage > self.min_cell_voltage,
            "max_cell_voltage",
            || {
                format!(
                    "must be above min_cell_voltage ({}), found {}",
                    self.min_cell_voltage, self.max_cell_voltage
                )
            },
        );
        // Above max_cell_voltage the dynamic CVL keeps the bank below the balancing target, so
        // a run could never reach its goal and would hold the balancing voltage for ever.
        check.require(
            self.balancing_voltage > self.min_cell_voltage
                && self.balancing_voltage < self.max_cell_voltage,
            "balancing_voltage",
            || {
                format!(
                    "must be above min_cell_voltage ({}) and below max_cell_voltage ({}), \
                     found {}",
                    self.min_cell_voltage, self.max_cell_voltage, self.balancing_voltage
                )
            },
        );
        // A month above the balancing voltage charges past the balancing target every day and
        // the goal is never the highest voltage; equal to it is a full charge every day.
        for (month, &voltage) in self.charge_voltages.iter().enumerate() {
            check.require(
                voltage <= self.balancing_voltage && voltage > self.min_cell_voltage,
                &format!("charge_voltages[{month}]"),
                || {
                    format!(
                        "must be above min_cell_voltage ({}) and at most balancing_voltage \
                         ({}), found {voltage}",
                        self.min_cell_voltage, self.balancing_voltage
                    )
                },
            );
        }

        for (key, given, curve) in [
            ("charge_curve", &self.charge_curve, self.charge_curve()),
            (
                "discharge_curve",
                &self.discharge_curve,
                self.discharge_curve(),
            ),
        ] {
            if given.is_some() {
                check.curve(key, &curve.voltages, &curve.factors);
                continue;
            }
            // A derived curve's points come from other keys: say so rather than name
            // sub-keys the user never wrote.
            let mut derived = Checker::new();
            derived.curve(key, &curve.voltages, &curve.factors);
            if let Err(problem) = derived.finish() {
                check.require(false, key, || {
                    format!(
                        "not set, and the one derived from min_cell_voltage, balancing_voltage \
                         and max_cell_voltage is not valid ({problem}); set {key} or change \
                         those"
                    )
                });
            }
        }
        check.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::parse_checked;

    fn error_of(json: &str) -> String {
        parse_checked::<Config>(json).expect_err("config should be refused")
    }

    #[test]
    fn empty_section_gives_the_v3_4_lto_defaults() {
        let config = parse_checked::<Config>("").unwrap();
        assert_eq!(config.balancing_voltage, 2.5);
        assert_eq!(config.balancing_every_days, 10);
        assert_eq!(config.charge_voltages, default_charge_voltages());
        assert!(config.zero_soc);
        assert_eq!(parse_checked::<Config>("null").unwrap(), config);
    }

    #[test]
    fn derived_curves_are_bit_identical_to_the_original_tables() {
        let lto = parse_checked::<Config>("{}").unwrap();
        assert_eq!(lto.charge_curve().voltages, [1.9, 1.95, 2.4, 2.5, 2.55]);
        assert_eq!(lto.charge_curve().factors, [0.2, 1.0, 1.0, 0.1, 0.0]);
        assert_eq!(lto.discharge_curve().voltages, [1.9, 2.0, 2.1]);
        assert_eq!(lto.discharge_curve().factors, [0.0, 0.05, 1.0]);

        let lfp = parse_checked::<Config>(
            r#"{"min_cell_voltage": 2.9, "balancing_voltage": 3.4, "max_cell_voltage": 3.45,
                "charge_voltages": [3.4, 3.35, 3.35, 3.35, 3.3, 3.3, 3.3, 3.3, 3.35, 3.35, 3.35, 3.4]}"#,
        )
        .unwrap();
        assert_eq!(
            lfp.charge_curve().voltages,
            [2.9, 2.9499999999999997, 3.3, 3.4, 3.45]
        );
    }

    #[test]
    fn given_curves_replace_the_derived_ones() {
        let config = parse_checked::<Config>(
            r#"{"charge_curve": {"voltages": [2.0, 2.5], "factors": [1, 0]},
                "discharge_curve": {"voltages": [1.9, 2.2], "factors": [0, 1]}}"#,
        )
        .unwrap();
        assert_eq!(config.charge_curve().voltages, [2.0, 2.5]);
        assert_eq!(config.discharge_curve().factors, [0.0, 1.0]);
    }

    #[test]
    fn unknown_key_is_named() {
        let error = error_of(r#"{"balancing_voltag": 2.5}"#);
        assert!(error.contains("balancing_voltag"), "{error}");
        let error =
            error_of(r#"{"charge_curve": {"voltages": [1, 2], "factors": [1, 0], "x": 1}}"#);
        assert!(
            error.contains("charge_curve") && error.contains("`x`"),
            "{error}"
        );
    }

    #[test]
    fn curve_of_unequal_lengths_is_named() {
        let error =
            error_of(r#"{"charge_curve": {"voltages": [1.9, 2.0, 2.5], "factors": [1, 0]}}"#);
        assert!(error.starts_with("charge_curve:"), "{error}");
        assert!(error.contains("equal length"), "{error}");
    }

    #[test]
    fn eleven_months_are_refused() {
        let error = error_of(
            r#"{"charge_voltages": [2.4, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4, 2.4]}"#,
        );
        assert_eq!(error, "charge_voltages: must have 12 values, found 11");
    }

    #[test]
    fn negative_currents_are_named_and_all_errors_come_at_once() {
        let error = error_of(r#"{"max_charge_current": -5, "max_discharge_current": -1}"#);
        let lines: Vec<&str> = error.lines().collect();
        assert_eq!(lines.len(), 2, "{error}");
        assert!(lines[0].starts_with("max_charge_current:"), "{error}");
        assert!(lines[1].starts_with("max_discharge_current:"), "{error}");
    }

    #[test]
    fn cross_key_rules_name_the_key_and_the_other_value() {
        let error = error_of(r#"{"max_cell_voltage": 1.8}"#);
        assert!(
            error.contains("max_cell_voltage: must be above min_cell_voltage (1.9)"),
            "{error}"
        );
        assert!(
            error.contains("balancing_voltage: must be above"),
            "{error}"
        );
        // The derived charge curve is not ascending either; the message says where it came from.
        assert!(
            error.contains("charge_curve: not set, and the one derived"),
            "{error}"
        );

        let error = error_of(r#"{"balancing_every_days": 0}"#);
        assert_eq!(error, "balancing_every_days: must be 1 or more, found 0");
        let error = error_of(r#"{"balancing_every_days": 2.5}"#);
        assert!(error.starts_with("balancing_every_days:"), "{error}");
    }
}
