//! `lto-cv`: the constant-voltage charge policy of the original version 0.1 for LTO banks
//! (docs/strategies.md §3).
//!
//! * CVL is N × `charge_voltage`. Once the highest cell reaches `max_cell_voltage`, CVL follows
//!   the bank voltage minus that cell's excess, so the chargers stop pushing before the BMS has
//!   to disconnect, and the counter is reset to full.
//! * CCL steps down at `cv1` and `cv2` and is 0 at `max_cell_voltage` or when a BMS blocks.
//! * DCL is 0 at low bank voltage, at a low cell, or when a BMS blocks; the low-voltage cases
//!   latch until the bank is back above them by `empty_hysteresis`, and reset the counter to
//!   empty while they hold, not while the latch alone does.
//!
//! The policy never touched the PV feed-in setting, so this plugin always answers `Keep`.

use plugin_api::{
    parse_checked, BankView, Checker, FeedInRequest, PluginConfig, SocReset, StrategyImpl,
    StrategyOutput,
};
use serde::Deserialize;

/// The plugin's `strategy.config` section. Defaults are the settings of version 0.1
/// (docs/strategies.md §3); voltages are per cell.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Constant charge voltage per cell, V: CVL = N × this.
    #[serde(default = "default_charge_voltage")]
    pub charge_voltage: f64,
    /// Cell voltage at which CVL follows the bank voltage, CCL is 0 and the counter is full, V.
    #[serde(default = "default_max_cell_voltage")]
    pub max_cell_voltage: f64,
    /// Mean cell voltage at or below which DCL is 0 and the counter empty, V: N × this.
    #[serde(default = "default_discharge_voltage")]
    pub discharge_voltage: f64,
    /// Single-cell voltage at or below which DCL is 0 and the counter empty, V.
    #[serde(default = "default_min_cell_voltage")]
    pub min_cell_voltage: f64,
    /// CCL below `cv1`, A.
    #[serde(default = "default_max_charge_current")]
    pub max_charge_current: f64,
    /// DCL while no discharge condition holds, A.
    #[serde(default = "default_max_discharge_current")]
    pub max_discharge_current: f64,
    /// Highest-cell voltage from which CCL is `current_above_cv1`, V.
    #[serde(default = "default_cv1")]
    pub cv1: f64,
    /// CCL from `cv1` up to `cv2`, A.
    #[serde(default = "default_current_above_cv1")]
    pub current_above_cv1: f64,
    /// Highest-cell voltage from which CCL is `current_above_cv2`, V.
    #[serde(default = "default_cv2")]
    pub cv2: f64,
    /// CCL from `cv2` up to `max_cell_voltage`, A.
    #[serde(default = "default_current_above_cv2")]
    pub current_above_cv2: f64,
    /// The empty cut-off latches: DCL comes back once the bank is above `discharge_voltage`
    /// and the lowest cell above `min_cell_voltage`, each by this much per cell, V.
    #[serde(default = "default_empty_hysteresis")]
    pub empty_hysteresis: f64,
}

fn default_charge_voltage() -> f64 {
    2.48
}
fn default_max_cell_voltage() -> f64 {
    2.55
}
fn default_discharge_voltage() -> f64 {
    2.1
}
fn default_min_cell_voltage() -> f64 {
    2.0
}
fn default_max_charge_current() -> f64 {
    200.0
}
fn default_max_discharge_current() -> f64 {
    200.0
}
fn default_cv1() -> f64 {
    2.45
}
fn default_current_above_cv1() -> f64 {
    50.0
}
fn default_cv2() -> f64 {
    2.52
}
fn default_current_above_cv2() -> f64 {
    10.0
}
fn default_empty_hysteresis() -> f64 {
    0.1
}

impl Default for Config {
    fn default() -> Self {
        Self {
            charge_voltage: default_charge_voltage(),
            max_cell_voltage: default_max_cell_voltage(),
            discharge_voltage: default_discharge_voltage(),
            min_cell_voltage: default_min_cell_voltage(),
            max_charge_current: default_max_charge_current(),
            max_discharge_current: default_max_discharge_current(),
            cv1: default_cv1(),
            current_above_cv1: default_current_above_cv1(),
            cv2: default_cv2(),
            current_above_cv2: default_current_above_cv2(),
            empty_hysteresis: default_empty_hysteresis(),
        }
    }
}

impl PluginConfig for Config {
    /// Checks the values: positive, and in the order the steps need.
    fn check(&self) -> Result<(), String> {
        let mut check = Checker::new();
        for (key, value) in [
            ("charge_voltage", self.charge_voltage),
            ("max_cell_voltage", self.max_cell_voltage),
            ("discharge_voltage", self.discharge_voltage),
            ("min_cell_voltage", self.min_cell_voltage),
            ("cv1", self.cv1),
            ("cv2", self.cv2),
            ("max_charge_current", self.max_charge_current),
            ("max_discharge_current", self.max_discharge_current),
        ] {
            check.positive(key, value);
        }
        // A step current of 0 is a legitimate choice (stop charging at that step), so these
        // only have to be non-negative.
        check.non_negative("current_above_cv1", self.current_above_cv1);
        check.non_negative("current_above_cv2", self.current_above_cv2);
        check.non_negative("empty_hysteresis", self.empty_hysteresis);

        // NaN fails every comparison below, so it is reported here too.
        let c = self;
        check.require(c.cv1 < c.cv2, "cv1", || {
            format!("must be below cv2 ({}), found {}", c.cv2, c.cv1)
        });
        check.require(c.cv2 < c.max_cell_voltage, "cv2", || {
            format!(
                "must be below max_cell_voltage ({}), found {}",
                c.max_cell_voltage, c.cv2
            )
        });
        check.require(
            c.min_cell_voltage < c.max_cell_voltage,
            "min_cell_voltage",
            || {
                format!(
                    "must be below max_cell_voltage ({}), found {}",
                    c.max_cell_voltage, c.min_cell_voltage
                )
            },
        );
        check.require(
            c.charge_voltage <= c.max_cell_voltage,
            "charge_voltage",
            || {
                format!(
                    "must not be above max_cell_voltage ({}), found {}",
                    c.max_cell_voltage, c.charge_voltage
                )
            },
        );
        check.require(
            c.discharge_voltage < c.charge_voltage,
            "discharge_voltage",
            || {
                format!(
                    "must be below charge_voltage ({}), found {}",
                    c.charge_voltage, c.discharge_voltage
                )
            },
        );
        check.require(
            c.current_above_cv1 <= c.max_charge_current,
            "current_above_cv1",
            || {
                format!(
                    "must not be above max_charge_current ({}), found {}",
                    c.max_charge_current, c.current_above_cv1
                )
            },
        );
        check.require(
            c.current_above_cv2 <= c.current_above_cv1,
            "current_above_cv2",
            || {
                format!(
                    "must not be above current_above_cv1 ({}), found {}",
                    c.current_above_cv1, c.current_above_cv2
                )
            },
        );
        check.finish()
    }
}

/// What survives a restart: the empty latch.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    empty: bool,
}

/// The strategy: a function of the bank and the config, and of its empty latch.
#[derive(Debug, Clone, PartialEq)]
pub struct LtoCv {
    config: Config,
    /// At the empty cut-off until the bank is back above it by `empty_hysteresis`.
    empty: bool,
}

impl LtoCv {
    /// A strategy with a checked config.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            empty: false,
        }
    }
}

impl StrategyImpl for LtoCv {
    /// One tick of Variant A.
    ///
    /// Deviation from 0.1: the clamped CVL (bank voltage minus the cell excess) is also capped
    /// at N × `charge_voltage`, as versions 2.3+ did for their reduction, so a high bank voltage
    /// can never raise the CVL above the normal one. A bank without active batteries or without
    /// a cell count is an error, so the host's safety envelope applies instead of an empty
    /// reset computed from zeros.
    fn compute(&mut self, bank: &BankView) -> Result<StrategyOutput, String> {
        if bank.active_batteries().next().is_none() {
            return Err("no active battery".into());
        }
        if bank.cells_per_battery == 0 {
            return Err("cells_per_battery is 0".into());
        }
        let (min_cell_v, max_cell_v) = bank.cell_extremes()?;
        let c = &self.config;
        let cells = f64::from(bank.cells_per_battery);
        let normal_cvl_v = cells * c.charge_voltage;

        let cell_full = max_cell_v >= c.max_cell_voltage;
        let cvl_v = if cell_full {
            (bank.voltage_v - (max_cell_v - c.max_cell_voltage)).min(normal_cvl_v)
        } else {
            normal_cvl_v
        };

        let charge_blocked = bank.blocks_charge();
        let ccl_a = if cell_full || charge_blocked {
            0.0
        } else if max_cell_v >= c.cv2 {
            c.current_above_cv2
        } else if max_cell_v >= c.cv1 {
            c.current_above_cv1
        } else {
            c.max_charge_current
        };

        let h = c.empty_hysteresis;
        let at_cut_off =
            bank.voltage_v <= cells * c.discharge_voltage || min_cell_v <= c.min_cell_voltage;
        let clear = bank.voltage_v > cells * (c.discharge_voltage + h)
            && min_cell_v > c.min_cell_voltage + h;
        // A latch, as lfp-balancing's: a bank resting just above the cut-off does not flap.
        // It is saved, so a restart inside the hysteresis does not let go of it.
        let was_empty = self.empty;
        if at_cut_off {
            self.empty = true;
        } else if clear {
            self.empty = false;
        }
        let empty = self.empty;
        let discharge_blocked = bank.blocks_discharge();
        let dcl_a = if empty || discharge_blocked {
            0.0
        } else {
            c.max_discharge_current
        };

        // The reset follows the cut-off itself, not the latch: a bank recharging inside the
        // band would otherwise lose every Ah it takes (docs/strategies.md §3). Empty wins: a
        // bank at its low cut-off is not full, whatever one cell says.
        let soc_reset = if at_cut_off {
            SocReset::Empty
        } else if cell_full {
            SocReset::Full
        } else {
            SocReset::None
        };

        let mode = if empty {
            "Empty"
        } else if charge_blocked || discharge_blocked {
            "Blocked"
        } else if cell_full {
            "Cell full"
        } else if max_cell_v >= c.cv1 {
            "CV limited"
        } else {
            "CV"
        };

        Ok(StrategyOutput {
            soc_reset,
            feed_in: FeedInRequest::Keep,
            state_changed: self.empty != was_empty,
            ..StrategyOutput::limits(cvl_v, ccl_a, dcl_a, mode)
        })
    }

    /// The empty latch, as `{"empty": true}`.
    fn save_state(&self) -> Result<String, String> {
        serde_json::to_string(&Saved { empty: self.empty })
            .map_err(|e| format!("cannot encode the lto-cv state: {e}"))
    }

    /// Takes back the empty latch; an empty text (a state saved before the latch was kept)
    /// starts unlatched.
    fn restore_state(&mut self, state: &str) -> Result<(), String> {
        if state.trim().is_empty() {
            return Ok(());
        }
        let saved: Saved =
            serde_json::from_str(state).map_err(|e| format!("unreadable lto-cv state: {e}"))?;
        self.empty = saved.empty;
        Ok(())
    }
}

fn new(config: &str) -> Result<LtoCv, String> {
    parse_checked(config).map(LtoCv::new)
}

plugin_api::export_plugin! {
    kind: strategy,
    name: "lto-cv",
    description: "LTO constant voltage of version 0.1: CVL N x charge_voltage, CCL steps at cv1/cv2",
    config: Config,
    new: new,
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;
    use plugin_api::testing::{BankBuilder, BatteryBuilder};
    use plugin_api::{BatteryState, BatteryView};

    const CELLS: u32 = 22;

    /// One online battery that neither blocks nor limits.
    fn battery() -> BatteryView {
        BatteryBuilder::new("Bat1")
            .cell_extremes(2.38, 2.40)
            .voltage(52.8)
            .limits(55.0, 100.0, 100.0)
            .charge_mode("Bulk")
            .build()
    }

    /// A bank of one battery at 2.40 V per cell (52.8 V): every rule is idle.
    fn bank() -> BankView {
        BankBuilder::new()
            .battery(battery())
            .cells_per_battery(CELLS)
            .build()
    }

    fn with_max_cell(max_cell_v: f64) -> BankView {
        BankView {
            max_cell_voltage_v: ROption::RSome(max_cell_v),
            ..bank()
        }
    }

    fn run(bank: &BankView) -> StrategyOutput {
        LtoCv::new(Config::default()).compute(bank).unwrap()
    }

    fn assert_close(actual: f64, expected: f64) {
        assert!((actual - expected).abs() < 1e-9, "{actual} != {expected}");
    }

    #[test]
    fn no_cell_data_is_an_error() {
        for (low, high) in [(f64::NAN, 2.4), (2.4, f64::NAN), (2.4, f64::INFINITY)] {
            let bank = BankView {
                min_cell_voltage_v: ROption::RSome(low),
                max_cell_voltage_v: ROption::RSome(high),
                ..bank()
            };
            let err = LtoCv::new(Config::default()).compute(&bank).unwrap_err();
            assert!(err.contains("no cell data"), "{err}");
        }
    }

    #[test]
    fn normal_tick_is_constant_voltage_at_full_currents() {
        let out = run(&bank());
        assert_close(out.cvl_v, 54.56);
        assert_eq!((out.ccl_a, out.dcl_a), (200.0, 200.0));
        assert_eq!(out.soc_reset, SocReset::None);
        assert_eq!(out.feed_in, FeedInRequest::Keep);
        assert_eq!(out.mode.as_str(), "CV");
        assert!(!out.state_changed);
    }

    #[test]
    fn ccl_steps_down_at_cv1_and_cv2() {
        for (max_cell_v, ccl_a, mode) in [
            (2.449, 200.0, "CV"),
            (2.45, 50.0, "CV limited"),
            (2.519, 50.0, "CV limited"),
            (2.52, 10.0, "CV limited"),
            (2.549, 10.0, "CV limited"),
            (2.55, 0.0, "Cell full"),
        ] {
            let out = run(&with_max_cell(max_cell_v));
            assert_eq!(out.ccl_a, ccl_a, "max cell {max_cell_v}");
            assert_eq!(out.mode.as_str(), mode, "max cell {max_cell_v}");
        }
    }

    #[test]
    fn cell_at_max_clamps_cvl_to_bank_voltage_minus_excess_and_resets_full() {
        let out = run(&BankView {
            voltage_v: 54.40,
            ..with_max_cell(2.57)
        });
        assert_close(out.cvl_v, 54.38);
        assert_eq!(out.ccl_a, 0.0);
        assert_eq!(out.soc_reset, SocReset::Full);
        assert_eq!(out.mode.as_str(), "Cell full");

        let at_limit = run(&BankView {
            voltage_v: 54.40,
            ..with_max_cell(2.55)
        });
        assert_close(at_limit.cvl_v, 54.40);
        assert_eq!(at_limit.soc_reset, SocReset::Full);
    }

    #[test]
    fn clamped_cvl_never_exceeds_the_normal_cvl() {
        // 0.1 would publish 55.0 − 0.01 = 54.99 here, above N × charge_voltage.
        let out = run(&BankView {
            voltage_v: 55.0,
            ..with_max_cell(2.56)
        });
        assert_close(out.cvl_v, 54.56);
    }

    #[test]
    fn low_bank_voltage_alone_empties() {
        let at = run(&BankView {
            voltage_v: 46.2,
            ..bank()
        });
        assert_eq!(at.dcl_a, 0.0);
        assert_eq!(at.soc_reset, SocReset::Empty);
        assert_eq!(at.mode.as_str(), "Empty");
        assert_eq!(at.ccl_a, 200.0);

        let above = run(&BankView {
            voltage_v: 46.21,
            ..bank()
        });
        assert_eq!(above.dcl_a, 200.0);
        assert_eq!(above.soc_reset, SocReset::None);
    }

    #[test]
    fn the_empty_cut_off_latches_until_the_hysteresis() {
        let mut strategy = LtoCv::new(Config::default());
        let mut tick = |voltage_v: f64, min_cell_v: f64| {
            let out = strategy
                .compute(&BankView {
                    voltage_v,
                    min_cell_voltage_v: ROption::RSome(min_cell_v),
                    ..bank()
                })
                .unwrap();
            (out.dcl_a, out.soc_reset)
        };
        // At the cut-off (22 × 2.1 = 46.2 V): latched, and the counter is empty.
        assert_eq!(tick(46.2, 2.05), (0.0, SocReset::Empty));
        // Recharging inside the band (below 22 × 2.2 V, lowest cell below 2.1 V): DCL stays
        // 0, but the Ah going in are counted, not reset away every tick.
        assert_eq!(tick(46.3, 2.05), (0.0, SocReset::None));
        assert_eq!(tick(47.0, 2.05), (0.0, SocReset::None));
        assert_eq!(tick(48.5, 2.1), (0.0, SocReset::None));
        assert_eq!(tick(48.3, 2.2), (0.0, SocReset::None));
        // Above the band on both: DCL is back, still without a reset.
        assert_eq!(tick(48.5, 2.2), (200.0, SocReset::None));
    }

    #[test]
    fn inside_the_empty_band_a_full_cell_resets_to_full() {
        let mut strategy = LtoCv::new(Config::default());
        let mut tick = |voltage_v: f64| {
            strategy
                .compute(&BankView {
                    voltage_v,
                    ..with_max_cell(2.56)
                })
                .unwrap()
        };
        let empty = tick(46.2);
        assert_eq!((empty.dcl_a, empty.soc_reset), (0.0, SocReset::Empty));
        // Off the cut-off the empty condition no longer holds, so the full one decides.
        let inside = tick(47.0);
        assert_eq!((inside.dcl_a, inside.soc_reset), (0.0, SocReset::Full));
        assert_eq!(inside.mode.as_str(), "Empty");
    }

    #[test]
    fn low_cell_alone_empties() {
        let at = run(&BankView {
            min_cell_voltage_v: ROption::RSome(2.0),
            ..bank()
        });
        assert_eq!(at.dcl_a, 0.0);
        assert_eq!(at.soc_reset, SocReset::Empty);
        assert_eq!(at.mode.as_str(), "Empty");

        let above = run(&BankView {
            min_cell_voltage_v: ROption::RSome(2.001),
            ..bank()
        });
        assert_eq!(above.dcl_a, 200.0);
        assert_eq!(above.soc_reset, SocReset::None);
    }

    #[test]
    fn empty_wins_over_full() {
        let out = run(&BankView {
            min_cell_voltage_v: ROption::RSome(1.95),
            ..with_max_cell(2.56)
        });
        assert_eq!(out.soc_reset, SocReset::Empty);
        assert_eq!((out.ccl_a, out.dcl_a), (0.0, 0.0));
    }

    #[test]
    fn blocked_charge_stops_charging_only() {
        let mut by_module = bank();
        by_module.modules_blocking_charge = 1;
        let mut by_io = bank();
        by_io.batteries[0].allow_to_charge = ROption::RSome(0);
        for bank in [by_module, by_io] {
            let out = run(&bank);
            assert_eq!((out.ccl_a, out.dcl_a), (0.0, 200.0));
            assert_eq!(out.soc_reset, SocReset::None);
            assert_eq!(out.mode.as_str(), "Blocked");
        }
    }

    #[test]
    fn blocked_discharge_stops_discharging_without_a_reset() {
        let mut by_module = bank();
        by_module.modules_blocking_discharge = 1;
        let mut by_io = bank();
        by_io.batteries[0].allow_to_discharge = ROption::RSome(0);
        for bank in [by_module, by_io] {
            let out = run(&bank);
            assert_eq!((out.ccl_a, out.dcl_a), (200.0, 0.0));
            assert_eq!(out.soc_reset, SocReset::None);
            assert_eq!(out.mode.as_str(), "Blocked");
        }
    }

    #[test]
    fn a_lost_battery_does_not_block() {
        let mut lost = battery();
        lost.state = plugin_api::BatteryState_NE::new(BatteryState::Lost);
        lost.allow_to_charge = ROption::RSome(0);
        let mut bank = bank();
        bank.batteries.push(lost);
        assert_eq!(run(&bank).ccl_a, 200.0);
    }

    #[test]
    fn no_active_battery_is_an_error() {
        let mut bank = bank();
        bank.batteries[0].state = plugin_api::BatteryState_NE::new(BatteryState::Lost);
        let err = LtoCv::new(Config::default()).compute(&bank).unwrap_err();
        assert!(err.contains("no active battery"), "{err}");
    }

    #[test]
    fn missing_section_gives_the_defaults_of_0_1() {
        assert_eq!(parse_checked::<Config>("").unwrap(), Config::default());
        assert_eq!(parse_checked::<Config>("{}").unwrap(), Config::default());
    }

    #[test]
    fn config_keys_are_read() {
        let config = parse_checked::<Config>(
            r#"{"charge_voltage": 2.5, "cv2": 2.5, "max_cell_voltage": 2.53}"#,
        )
        .unwrap();
        assert_eq!((config.charge_voltage, config.cv2), (2.5, 2.5));
        assert_eq!(config.max_cell_voltage, 2.53);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_checked::<Config>(r#"{"charge_volts": 2.5}"#).unwrap_err();
        assert!(err.contains("charge_volts"), "{err}");
    }

    #[test]
    fn negative_current_is_named() {
        let err = parse_checked::<Config>(r#"{"max_discharge_current": -5}"#).unwrap_err();
        assert!(err.starts_with("max_discharge_current: "), "{err}");
    }

    #[test]
    fn threshold_order_errors_are_all_reported() {
        let err = parse_checked::<Config>(r#"{"cv1": 2.53, "cv2": 2.6, "current_above_cv2": 60}"#)
            .unwrap_err();
        let keys: Vec<&str> = err.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(keys, ["cv2", "current_above_cv2"], "{err}");

        let err = parse_checked::<Config>(r#"{"cv1": 2.52, "cv2": 2.45}"#).unwrap_err();
        assert!(err.starts_with("cv1: must be below cv2"), "{err}");
    }

    #[test]
    fn min_cell_must_be_below_max_cell() {
        let err = parse_checked::<Config>(r#"{"min_cell_voltage": 2.6}"#).unwrap_err();
        assert!(err.contains("min_cell_voltage: must be below"), "{err}");
    }

    #[test]
    fn the_empty_latch_survives_a_restart_inside_the_hysteresis() {
        let mut s = LtoCv::new(Config::default());
        let cells = f64::from(CELLS);
        let at = |v_cell: f64| BankView {
            voltage_v: cells * v_cell,
            min_cell_voltage_v: ROption::RSome(v_cell),
            ..bank()
        };
        // At the cut-off (2.1 V per cell): latched, and the change is worth saving.
        let out = s.compute(&at(2.09)).unwrap();
        assert_eq!(out.dcl_a, 0.0);
        assert!(out.state_changed);
        assert!(!s.compute(&at(2.09)).unwrap().state_changed);
        let saved = s.save_state().unwrap();
        // Restarted inside the hysteresis (2.15 V < 2.1 + 0.1): still latched, no reset.
        let mut after = LtoCv::new(Config::default());
        after.restore_state(&saved).unwrap();
        let inside = after.compute(&at(2.15)).unwrap();
        assert_eq!((inside.dcl_a, inside.soc_reset), (0.0, SocReset::None));
        // Without the saved latch it would have let go.
        assert!(
            LtoCv::new(Config::default())
                .compute(&at(2.15))
                .unwrap()
                .dcl_a
                > 0.0
        );
        // Above the band it lets go, and says so.
        let out = after.compute(&at(2.25)).unwrap();
        assert!(out.dcl_a > 0.0 && out.state_changed);
        // An older state (nothing saved) and a broken one.
        assert!(after.restore_state("").is_ok());
        assert!(after.restore_state("{\"empty\": 3}").is_err());
    }
}
