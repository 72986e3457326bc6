//! The safety envelope of docs/guard.md §2 to §4: what the host enforces on every strategy result.
//!
//! A strategy is a plugin, possibly a third party's; whatever it returns, the published limits
//! stay within the user's `safety` section. Finite values beyond a bound are clamped to it. A
//! panic, an error, NaN, infinity or a negative limit is a fault: the tick publishes CCL 0 with
//! the last good CVL and DCL, and after `plugin_failures` faults in a row DCL 0 as well.
//!
//! Before any good result (a fault on the very first tick), "last good" is: CVL the bank
//! voltage (charging goes no further than where the bank stands), CCL 0, and DCL
//! `safety.max_discharge_current`, which the guard after the envelope lowers to what the packs'
//! own limits, cells and temperatures allow, as on every tick. One fault protects nothing that
//! the guard does not already protect, and a restart must not stop the house for it;
//! `plugin_failures` faults in a row do stop discharging.

use plugin_api::StrategyOutput;
use serde::{Deserialize, Serialize};

/// The user's bounds (`safety` in `config.yaml`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    /// Highest cell voltage a CVL may imply: CVL ≤ N × this.
    pub max_cell_voltage_v: f64,
    /// CCL ≤ this.
    pub max_charge_current_a: f64,
    /// DCL ≤ this.
    pub max_discharge_current_a: f64,
    /// Faults in a row after which DCL is 0 too.
    pub plugin_failures: u32,
    /// CVL ≤ this, whatever the cell count (`safety.max_charge_voltage`; infinity: not set).
    pub max_charge_voltage_v: f64,
}

/// The three limits as published.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `/Info/MaxChargeVoltage`.
    pub cvl_v: f64,
    /// `/Info/MaxChargeCurrent`.
    pub ccl_a: f64,
    /// `/Info/MaxDischargeCurrent`.
    pub dcl_a: f64,
}

impl Limits {
    /// Finite and not negative: limits that could have been published.
    pub fn usable(&self) -> bool {
        [self.cvl_v, self.ccl_a, self.dcl_a]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
    }
}

/// What the envelope made of one strategy result.
#[derive(Clone, Debug, PartialEq)]
pub struct Enforced {
    /// The limits to publish.
    pub limits: Limits,
    /// Set when this tick's result was a fault, with its description.
    pub fault: Option<String>,
    /// Set on the first good tick after faults: how many faults in a row there were.
    pub recovered_after: Option<u32>,
    /// Which bounds clamped a value this tick (empty when none).
    pub clamped: Vec<&'static str>,
}

/// The envelope and its memory of the last good limits and of faults.
#[derive(Clone, Debug)]
pub struct SafetyEnvelope {
    bounds: Bounds,
    last_good: Option<Limits>,
    faults_in_a_row: u32,
    faults_total: u64,
}

/// What the bank says this tick, beyond the strategy: cell count, whether a BMS blocks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BankFacts {
    /// Cells in series (N).
    pub cells: u32,
    /// Some BMS forbids charging.
    pub blocks_charge: bool,
    /// Some BMS forbids discharging.
    pub blocks_discharge: bool,
    /// The bank voltage, the CVL used when a fault happens before any good result.
    pub voltage_v: f64,
}

impl SafetyEnvelope {
    /// A new envelope with no good result yet.
    pub fn new(bounds: Bounds) -> Self {
        Self {
            bounds,
            last_good: None,
            faults_in_a_row: 0,
            faults_total: 0,
        }
    }

    /// Faults in a row up to the last tick (0 after a good result).
    pub fn faults_in_a_row(&self) -> u32 {
        self.faults_in_a_row
    }

    /// The last limits a strategy gave without fault.
    pub fn last_good(&self) -> Option<Limits> {
        self.last_good
    }

    /// Takes back the memory [`SafetyEnvelope::last_good`] and
    /// [`SafetyEnvelope::faults_in_a_row`] gave, as a replay starting mid-run does. Limits that
    /// are not finite, or negative, are no good ones: dropped.
    pub fn resume(&mut self, last_good: Option<Limits>, faults_in_a_row: u32) {
        self.last_good = last_good.filter(Limits::usable);
        self.faults_in_a_row = faults_in_a_row;
    }

    /// Sets the bound of `safety.max_charge_voltage` from now on (infinity: none). The engine
    /// leaves out a bound too low for the bank it learns of at run time (docs/guard.md §2).
    pub fn set_max_charge_voltage(&mut self, max_charge_voltage_v: f64) {
        self.bounds.max_charge_voltage_v = max_charge_voltage_v;
    }

    /// Faults since start.
    pub fn faults_total(&self) -> u64 {
        self.faults_total
    }

    /// Applies the envelope to a strategy result (`Err` = the plugin's error or panic text).
    pub fn apply(&mut self, result: Result<&StrategyOutput, &str>, bank: BankFacts) -> Enforced {
        // An unknown cell count (0) gives no voltage bound: a bound of 0 V would stop every
        // charge of a pass-through bank whose packs publish no count.
        let by_cells = match bank.cells {
            0 => f64::INFINITY,
            cells => f64::from(cells) * self.bounds.max_cell_voltage_v,
        };
        let cvl_max = by_cells.min(self.bounds.max_charge_voltage_v);
        let checked = result.map_err(str::to_string).and_then(|out| {
            let finite = |name: &str, v: f64| {
                if v.is_finite() {
                    Ok(v)
                } else {
                    Err(format!("returned {name} = {v}"))
                }
            };
            let (cvl, ccl, dcl) = (
                finite("CVL", out.cvl_v)?,
                finite("CCL", out.ccl_a)?,
                finite("DCL", out.dcl_a)?,
            );
            if cvl <= 0.0 || ccl < 0.0 || dcl < 0.0 {
                return Err(format!(
                    "returned a negative limit (CVL {cvl}, CCL {ccl}, DCL {dcl})"
                ));
            }
            Ok(Limits {
                cvl_v: cvl,
                ccl_a: ccl,
                dcl_a: dcl,
            })
        });

        match checked {
            Ok(mut limits) => {
                let mut clamped = Vec::new();
                if limits.cvl_v > cvl_max {
                    limits.cvl_v = cvl_max;
                    clamped.push(if by_cells <= self.bounds.max_charge_voltage_v {
                        "safety.max_cell_voltage"
                    } else {
                        "safety.max_charge_voltage"
                    });
                }
                if limits.ccl_a > self.bounds.max_charge_current_a {
                    limits.ccl_a = self.bounds.max_charge_current_a;
                    clamped.push("safety.max_charge_current");
                }
                if limits.dcl_a > self.bounds.max_discharge_current_a {
                    limits.dcl_a = self.bounds.max_discharge_current_a;
                    clamped.push("safety.max_discharge_current");
                }
                self.last_good = Some(limits);
                let recovered_after = (self.faults_in_a_row > 0).then_some(self.faults_in_a_row);
                self.faults_in_a_row = 0;
                Enforced {
                    limits: enforce_blocks(limits, bank),
                    fault: None,
                    recovered_after,
                    clamped,
                }
            }
            Err(fault) => {
                self.faults_in_a_row = self.faults_in_a_row.saturating_add(1);
                self.faults_total += 1;
                let last = self.last_good.unwrap_or(Limits {
                    cvl_v: bank.voltage_v.clamp(0.0, cvl_max),
                    ccl_a: 0.0,
                    dcl_a: self.bounds.max_discharge_current_a,
                });
                let dcl_a = if self.faults_in_a_row >= self.bounds.plugin_failures {
                    0.0
                } else {
                    last.dcl_a
                };
                let limits = Limits {
                    cvl_v: last.cvl_v.min(cvl_max),
                    ccl_a: 0.0,
                    dcl_a,
                };
                Enforced {
                    limits: enforce_blocks(limits, bank),
                    fault: Some(fault),
                    recovered_after: None,
                    clamped: Vec::new(),
                }
            }
        }
    }
}

/// A BMS that forbids charging or discharging wins over any strategy.
fn enforce_blocks(mut limits: Limits, bank: BankFacts) -> Limits {
    if bank.blocks_charge {
        limits.ccl_a = 0.0;
    }
    if bank.blocks_discharge {
        limits.dcl_a = 0.0;
    }
    limits
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        max_cell_voltage_v: 2.6,
        max_charge_current_a: 300.0,
        max_discharge_current_a: 250.0,
        plugin_failures: 3,
        max_charge_voltage_v: f64::INFINITY,
    };
    const BANK: BankFacts = BankFacts {
        cells: 22,
        blocks_charge: false,
        blocks_discharge: false,
        voltage_v: 53.0,
    };

    fn out(cvl: f64, ccl: f64, dcl: f64) -> StrategyOutput {
        StrategyOutput::limits(cvl, ccl, dcl, "Test")
    }

    #[test]
    fn good_values_pass_unchanged() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        let v = env.apply(Ok(&out(54.0, 100.0, 200.0)), BANK);
        assert_eq!(
            v.limits,
            Limits {
                cvl_v: 54.0,
                ccl_a: 100.0,
                dcl_a: 200.0
            }
        );
        assert_eq!((v.fault, v.clamped.len()), (None, 0));
    }

    #[test]
    fn max_charge_voltage_bounds_the_cvl_with_or_without_a_cell_count() {
        let bounds = Bounds {
            max_charge_voltage_v: 55.0,
            ..BOUNDS
        };
        for cells in [0, 22] {
            let mut env = SafetyEnvelope::new(bounds);
            let v = env.apply(Ok(&out(57.0, 100.0, 100.0)), BankFacts { cells, ..BANK });
            assert_eq!(v.limits.cvl_v, 55.0, "{cells} cells");
            assert_eq!(v.clamped, ["safety.max_charge_voltage"]);
            // A fault before any good result: the bank voltage, bounded too.
            let mut env = SafetyEnvelope::new(bounds);
            let high = BankFacts {
                cells,
                voltage_v: 56.0,
                ..BANK
            };
            assert_eq!(env.apply(Err("boom"), high).limits.cvl_v, 55.0);
        }
    }

    #[test]
    fn values_beyond_bounds_are_clamped() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        let v = env.apply(Ok(&out(60.0, 500.0, 400.0)), BANK);
        assert_eq!(
            v.limits,
            Limits {
                cvl_v: 22.0 * 2.6,
                ccl_a: 300.0,
                dcl_a: 250.0
            }
        );
        assert_eq!(v.clamped.len(), 3);
    }

    #[test]
    fn a_fault_keeps_last_cvl_and_dcl_with_ccl_zero_then_dcl_zero() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        env.apply(Ok(&out(54.0, 100.0, 200.0)), BANK);
        for (tick, expected_dcl) in [(1, 200.0), (2, 200.0), (3, 0.0), (4, 0.0)] {
            let v = env.apply(Err("panicked: boom"), BANK);
            assert_eq!(
                v.limits,
                Limits {
                    cvl_v: 54.0,
                    ccl_a: 0.0,
                    dcl_a: expected_dcl
                },
                "tick {tick}"
            );
            assert_eq!(v.fault.as_deref(), Some("panicked: boom"));
        }
        let v = env.apply(Ok(&out(54.5, 90.0, 190.0)), BANK);
        assert_eq!(v.recovered_after, Some(4));
        assert_eq!(v.limits.dcl_a, 190.0);
        assert_eq!(env.faults_total(), 4);
    }

    #[test]
    fn nan_infinity_and_negatives_are_faults() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        env.apply(Ok(&out(54.0, 100.0, 200.0)), BANK);
        for bad in [
            out(f64::NAN, 1.0, 1.0),
            out(54.0, f64::INFINITY, 1.0),
            out(54.0, 1.0, -5.0),
        ] {
            let v = env.apply(Ok(&bad), BANK);
            assert!(v.fault.is_some(), "{bad:?}");
            assert_eq!(v.limits.ccl_a, 0.0);
            assert_eq!(v.limits.cvl_v, 54.0);
        }
    }

    #[test]
    fn a_fault_before_any_good_result_stops_charging_then_discharging_after_the_failures() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        for (tick, expected_dcl) in [(1, 250.0), (2, 250.0), (3, 0.0)] {
            let v = env.apply(Err("no cell data yet"), BANK);
            assert_eq!(
                v.limits,
                Limits {
                    cvl_v: 53.0,
                    ccl_a: 0.0,
                    dcl_a: expected_dcl
                },
                "tick {tick}"
            );
        }
    }

    #[test]
    fn an_unknown_cell_count_bounds_no_voltage() {
        let mut e = SafetyEnvelope::new(BOUNDS);
        let unknown = BankFacts { cells: 0, ..BANK };
        let enforced = e.apply(Ok(&out(55.2, 50.0, 50.0)), unknown);
        assert_eq!(enforced.limits.cvl_v, 55.2);
        assert!(enforced.clamped.is_empty());
    }

    #[test]
    fn a_blocking_bms_wins() {
        let mut env = SafetyEnvelope::new(BOUNDS);
        let bank = BankFacts {
            blocks_charge: true,
            blocks_discharge: true,
            ..BANK
        };
        let v = env.apply(Ok(&out(54.0, 100.0, 200.0)), bank);
        assert_eq!((v.limits.ccl_a, v.limits.dcl_a), (0.0, 0.0));
    }
}
