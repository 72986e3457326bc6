//! `serialbattery`: pass the BMSs' own charge limits through (docs/strategies.md §4; the original's
//! `OWN_CHARGE_PARAMETERS = False`).
//!
//! Each active battery (online or stale) brings its `/Info/MaxChargeVoltage`,
//! `/Info/MaxChargeCurrent` and `/Info/MaxDischargeCurrent`; the bank publishes
//!
//! * CVL: the lowest, or with `cvl: keep_max_until_all_float` the highest until every active
//!   battery reports a `Float` charge mode, and the lowest while a battery protects its cells
//!   (its charge mode contains one of `protecting_modes`, `OVP` by default, or, not in
//!   `Float`, its CVL is `protecting_drop_v` below the others'). A battery that publishes no charge mode never
//!   counts as floating: with such a pack the highest CVL stays until one protects (use
//!   `cvl: min` for banks of such packs);
//! * CCL and DCL for the whole bank: the lowest × the bank's batteries (`limits:
//!   min_times_count`), or the sum (`limits: sum`), a battery that blocks counting as 0. The
//!   bank is the expected batteries (more when more are online): while one is held or lost,
//!   the host scales the limits to the batteries online, so they are not scaled here too.
//!
//! The original never touched the PV feed-in setting in this mode, so this plugin always
//! answers `Keep`. A configured SoC reset needs cell data; without it there is none, and the
//! limits are passed on all the same.

use abi_stable::std_types::{ROption, RString};
use plugin_api::{
    log, parse_checked, BankView, BatteryView, Checker, FeedInRequest, PluginConfig, SocReset,
    StrategyImpl, StrategyOutput,
};
use serde::Deserialize;

/// How the bank CVL follows the batteries' CVLs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CvlRule {
    /// The lowest CVL: no battery is pushed above its own limit.
    #[default]
    Min,
    /// The highest CVL until every active battery's charge mode contains `Float`, then the
    /// lowest, so the last battery to finish still gets its absorption voltage. This is the
    /// documented meaning of `KEEP_MAX_CVL`; the 4.x program's code switches on the first
    /// battery in Float instead (docs/strategies.md §4).
    KeepMaxUntilAllFloat,
}

/// How the bank CCL and DCL follow the batteries' limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitsRule {
    /// The lowest limit × the bank's batteries (v3.4 pass-through): no battery gets more than
    /// its limit when the current splits evenly.
    #[default]
    MinTimesCount,
    /// The sum of the limits (the 4.x program's `CAN_batteries`): for BMSs whose limits already
    /// reflect their share.
    Sum,
}

impl LimitsRule {
    /// The limit of a bank of `bank_size` batteries from the active batteries' limits (already
    /// ≥ 0, blocks applied).
    ///
    /// The minimum is taken first and multiplied last, and the sum runs left to right from 0,
    /// as the original did, so the results match it to the last digit. A sum over fewer
    /// batteries than the bank has (one lost) stands for the bank as their mean × the bank's
    /// size, which the host then scales to the batteries online.
    fn combine(self, limits_a: &[f64], bank_size: u32) -> f64 {
        let bank_size = f64::from(bank_size);
        match self {
            LimitsRule::MinTimesCount => {
                limits_a.iter().copied().fold(f64::INFINITY, f64::min) * bank_size
            }
            LimitsRule::Sum => {
                let sum = limits_a.iter().fold(0.0, |sum, limit_a| sum + limit_a);
                let active = limits_a.len() as f64;
                if active == bank_size {
                    sum
                } else {
                    sum / active * bank_size
                }
            }
        }
    }
}

/// The plugin's `strategy.config` section. No SoC reset unless its voltage is given: a default
/// would be one chemistry's (an LTO default of 2.5 V resets an LFP bank to full every tick).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `min` or `keep_max_until_all_float`.
    #[serde(default)]
    pub cvl: CvlRule,
    /// `min_times_count` or `sum`.
    #[serde(default)]
    pub limits: LimitsRule,
    /// Highest-cell voltage at or above which the counter is reset to full, V.
    #[serde(default)]
    pub max_cell_voltage_soc_full: Option<f64>,
    /// Lowest-cell voltage at or below which the counter is reset to empty (with `zero_soc`), V.
    #[serde(default)]
    pub min_cell_voltage_soc_empty: Option<f64>,
    /// Allow the reset to empty (the 4.x program's `ZERO_SOC`, off by default as there).
    #[serde(default)]
    pub zero_soc: bool,
    /// With `keep_max_until_all_float`: a battery not in `Float` whose CVL is this much (V)
    /// below the highest of the others has lowered it to protect its cells, and the lowest CVL
    /// is used until it recovers.
    #[serde(default = "default_protecting_drop_v")]
    pub protecting_drop_v: f64,
    /// With `keep_max_until_all_float`: a battery whose `/Info/ChargeMode` contains one of these
    /// texts is protecting its cells (dbus-serialbattery shows `OVP` there), and the lowest CVL
    /// is used until it recovers.
    #[serde(default = "default_protecting_modes")]
    pub protecting_modes: Vec<String>,
}

fn default_protecting_drop_v() -> f64 {
    1.0
}

fn default_protecting_modes() -> Vec<String> {
    vec!["OVP".to_string()]
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cvl: CvlRule::default(),
            limits: LimitsRule::default(),
            max_cell_voltage_soc_full: None,
            min_cell_voltage_soc_empty: None,
            zero_soc: false,
            protecting_drop_v: default_protecting_drop_v(),
            protecting_modes: default_protecting_modes(),
        }
    }
}

impl PluginConfig for Config {
    /// Checks the reset voltages.
    fn check(&self) -> Result<(), String> {
        let mut check = Checker::new();
        if let Some(full) = self.max_cell_voltage_soc_full {
            check.positive("max_cell_voltage_soc_full", full);
        }
        if let Some(empty) = self.min_cell_voltage_soc_empty {
            check.positive("min_cell_voltage_soc_empty", empty);
        }
        if let (Some(full), Some(empty)) = (
            self.max_cell_voltage_soc_full,
            self.min_cell_voltage_soc_empty,
        ) {
            check.require(empty < full, "min_cell_voltage_soc_empty", || {
                format!("must be below max_cell_voltage_soc_full ({full}), found {empty}")
            });
        }
        check.require(
            !self.zero_soc || self.min_cell_voltage_soc_empty.is_some(),
            "min_cell_voltage_soc_empty",
            || "is required with zero_soc: true (the lowest cell voltage of an empty bank)".into(),
        );
        check.positive("protecting_drop_v", self.protecting_drop_v);
        for (k, text) in self.protecting_modes.iter().enumerate() {
            // An empty text is contained in every mode: every battery would be protecting.
            check.require(!text.is_empty(), &format!("protecting_modes[{k}]"), || {
                "must not be empty".to_string()
            });
        }
        check.finish()
    }
}

/// The strategy: a pure function of the bank and the config, but for whether the log has
/// said that a configured reset cannot look at the cells.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialBattery {
    config: Config,
    /// A configured reset without cell data has been logged, until cell data comes back.
    reset_without_cells_said: bool,
}

impl SerialBattery {
    /// A strategy with a checked config.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            reset_without_cells_said: false,
        }
    }

    /// The SoC reset the cells ask for. Without cell data a configured reset cannot look at
    /// the cells: there is none, the log says so once and the mode text for as long as it
    /// lasts (`Some` note). The limits are the packs' own and need no cells: an error here
    /// would take the bank's charging away, and its discharging after a few ticks, for a
    /// counter's reset.
    fn soc_reset(&mut self, bank: &BankView) -> (SocReset, Option<&'static str>) {
        let c = &self.config;
        // Empty wins: a cell at its low cut-off means the bank is not full.
        let empty_at = c.min_cell_voltage_soc_empty.filter(|_| c.zero_soc);
        let full_at = c.max_cell_voltage_soc_full;
        if empty_at.is_none() && full_at.is_none() {
            return (SocReset::None, None);
        }
        let (min_cell_v, max_cell_v) = match bank.cell_extremes() {
            Ok(extremes) => {
                self.reset_without_cells_said = false;
                extremes
            }
            Err(why) => {
                if !std::mem::replace(&mut self.reset_without_cells_said, true) {
                    log::warn(&format!(
                        "SoC reset off until the packs publish cells: {why}"
                    ));
                }
                return (SocReset::None, Some("SoC reset off: no cell data"));
            }
        };
        let reset = if empty_at.is_some_and(|v| min_cell_v <= v) {
            SocReset::Empty
        } else if full_at.is_some_and(|v| max_cell_v >= v) {
            SocReset::Full
        } else {
            SocReset::None
        };
        (reset, None)
    }
}

impl SerialBattery {
    /// The first active battery protecting its cells: its charge mode says so, or, not in
    /// `Float`, its CVL is `protecting_drop_v` below the highest of the others'.
    fn protecting<'a>(&self, active: &[&'a BatteryView], limits: &[BmsLimits]) -> Option<&'a str> {
        let c = &self.config;
        active
            .iter()
            .zip(limits)
            .enumerate()
            .find_map(|(k, (battery, own))| {
                let by_mode = battery
                    .charge_mode
                    .as_ref()
                    .into_option()
                    .is_some_and(|mode| {
                        c.protecting_modes
                            .iter()
                            .any(|text| mode.as_str().contains(text.as_str()))
                    });
                let others_max = limits
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != k)
                    .map(|(_, l)| l.cvl_v)
                    .fold(f64::NEG_INFINITY, f64::max);
                // Float is a lower CVL by design (16 LFP cells: 54.0 V against 55.2 V in
                // absorption), not a battery protecting its cells.
                let by_drop =
                    !is_float(&battery.charge_mode) && others_max - own.cvl_v > c.protecting_drop_v;
                (by_mode || by_drop).then_some(battery.name.as_str())
            })
    }
}

/// One battery's own limits, with a block already applied.
struct BmsLimits {
    cvl_v: f64,
    ccl_a: f64,
    dcl_a: f64,
}

impl BmsLimits {
    /// Reads the three limits; a missing one is an error naming the battery and the path.
    fn of(battery: &BatteryView) -> Result<Self, String> {
        let cvl_v = required(
            battery,
            battery.max_charge_voltage_v,
            "/Info/MaxChargeVoltage",
        )?;
        let ccl_a = required(
            battery,
            battery.max_charge_current_a,
            "/Info/MaxChargeCurrent",
        )?;
        let dcl_a = required(
            battery,
            battery.max_discharge_current_a,
            "/Info/MaxDischargeCurrent",
        )?;
        // A BMS sending a negative current limit means "none", not "reverse".
        let current = |blocked: bool, limit_a: f64| if blocked { 0.0 } else { limit_a.max(0.0) };
        Ok(Self {
            cvl_v,
            ccl_a: current(battery.blocks_charge(), ccl_a),
            dcl_a: current(battery.blocks_discharge(), dcl_a),
        })
    }
}

/// The host lets only batteries with all three limits go online, but a stale or oddly built
/// view must not turn into a made-up limit: the error lets the host's safety envelope apply.
fn required(battery: &BatteryView, value: ROption<f64>, path: &str) -> Result<f64, String> {
    value
        .into_option()
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            format!(
                "battery {} ({}): {path} is missing",
                battery.name, battery.service
            )
        })
}

fn is_float(mode: &ROption<RString>) -> bool {
    match mode {
        ROption::RSome(mode) => mode.as_str().contains("Float"),
        ROption::RNone => false,
    }
}

impl StrategyImpl for SerialBattery {
    /// One tick of pass-through.
    ///
    /// The limits are the whole bank's (docs/strategies.md §4): `min_times_count` multiplies by
    /// the expected batteries (the online ones when more are online), not by those online: a
    /// held or lost battery's share is taken off once, by the host's scaling to the batteries
    /// online (docs/battery-states.md §8), not here as well. A held battery's last limits still
    /// bound the minimum.
    fn compute(&mut self, bank: &BankView) -> Result<StrategyOutput, String> {
        let active: Vec<&BatteryView> = bank.active_batteries().collect();
        if active.is_empty() {
            return Err("no active battery".into());
        }
        let limits = active
            .iter()
            .map(|battery| BmsLimits::of(battery))
            .collect::<Result<Vec<_>, _>>()?;

        let c = &self.config;
        let cvls = limits.iter().map(|l| l.cvl_v);
        // A battery without a charge mode never counts as floating.
        let all_float = active.iter().all(|b| is_float(&b.charge_mode));
        let protecting = match c.cvl {
            CvlRule::KeepMaxUntilAllFloat => self.protecting(&active, &limits),
            CvlRule::Min => None,
        };
        let cvl_v = match c.cvl {
            CvlRule::KeepMaxUntilAllFloat if !all_float && protecting.is_none() => {
                cvls.fold(f64::NEG_INFINITY, f64::max)
            }
            _ => cvls.fold(f64::INFINITY, f64::min),
        };

        let bank_size = bank.batteries_expected.max(bank.batteries_online);
        let ccls: Vec<f64> = limits.iter().map(|l| l.ccl_a).collect();
        let dcls: Vec<f64> = limits.iter().map(|l| l.dcl_a).collect();
        let ccl_a = c.limits.combine(&ccls, bank_size);
        let dcl_a = c.limits.combine(&dcls, bank_size);

        let mut text = mode(&active, protecting);
        let (soc_reset, note) = self.soc_reset(bank);
        if let Some(note) = note {
            text = format!("{text}; {note}");
        }
        Ok(StrategyOutput {
            soc_reset,
            feed_in: FeedInRequest::Keep,
            ..StrategyOutput::limits(cvl_v, ccl_a, dcl_a, &text)
        })
    }
}

/// `Pass-through`, with the BMSs' charge mode appended when all active batteries report the
/// same one.
fn mode(active: &[&BatteryView], protecting: Option<&str>) -> String {
    if let Some(name) = protecting {
        return format!("Pass-through: battery {name} protecting its cells, lowest CVL");
    }
    let first = active
        .first()
        .and_then(|b| b.charge_mode.as_ref().into_option());
    match first {
        Some(first)
            if active
                .iter()
                .all(|b| b.charge_mode.as_ref().into_option() == Some(first)) =>
        {
            format!("Pass-through: {first}")
        }
        _ => "Pass-through".to_string(),
    }
}

fn new(config: &str) -> Result<SerialBattery, String> {
    parse_checked(config).map(SerialBattery::new)
}

plugin_api::export_plugin! {
    kind: strategy,
    name: "serialbattery",
    description: "Pass-through of the BMSs' own limits: min CVL, min CCL/DCL x batteries or sum",
    config: Config,
    new: new,
    needs_battery_limits: true,
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing::{BankBuilder, BatteryBuilder};
    use plugin_api::BatteryState;

    /// An online battery with the given limits, in Bulk, blocking nothing.
    fn battery(name: &str, cvl_v: f64, ccl_a: f64, dcl_a: f64) -> BatteryView {
        BatteryBuilder::new(name)
            .cell_extremes(2.40, 2.42)
            .voltage(53.0)
            .limits(cvl_v, ccl_a, dcl_a)
            .charge_mode("Bulk")
            .build()
    }

    /// A bank of these batteries, counted online when they are, cells between both reset
    /// voltages.
    fn bank(batteries: Vec<BatteryView>) -> BankView {
        BankBuilder::new()
            .batteries(batteries)
            .cells_per_battery(22)
            .build()
    }

    /// Three batteries with different limits: CVLs 55.0 / 54.6 / 55.2, CCLs 100 / 33.3 / 120,
    /// DCLs 150 / 200 / 99.9.
    fn three() -> Vec<BatteryView> {
        vec![
            battery("A", 55.0, 100.0, 150.0),
            battery("B", 54.6, 33.3, 200.0),
            battery("C", 55.2, 120.0, 99.9),
        ]
    }

    fn with_modes(modes: [Option<&str>; 3]) -> BankView {
        let mut batteries = three();
        for (battery, mode) in batteries.iter_mut().zip(modes) {
            battery.charge_mode = mode.map(RString::from).into();
        }
        bank(batteries)
    }

    fn run_with(config: &str, bank: &BankView) -> StrategyOutput {
        SerialBattery::new(parse_checked::<Config>(config).unwrap())
            .compute(bank)
            .unwrap()
    }

    fn run(bank: &BankView) -> StrategyOutput {
        run_with("", bank)
    }

    const KEEP_MAX: &str = r#"{"cvl": "keep_max_until_all_float"}"#;
    const SUM: &str = r#"{"limits": "sum"}"#;

    #[test]
    fn cvl_is_the_minimum() {
        let out = run(&bank(three()));
        assert_eq!(out.cvl_v, 54.6);
        assert_eq!(out.feed_in, FeedInRequest::Keep);
        assert!(!out.state_changed);
    }

    #[test]
    fn keep_max_holds_the_maximum_while_one_battery_is_not_in_float() {
        let out = run_with(
            KEEP_MAX,
            &with_modes([Some("Float"), Some("Bulk"), Some("Float")]),
        );
        assert_eq!(out.cvl_v, 55.2);
    }

    #[test]
    fn keep_max_falls_to_the_minimum_once_all_are_in_float() {
        let modes = [Some("Float"), Some("Float (Balancing)"), Some("Float")];
        assert_eq!(run_with(KEEP_MAX, &with_modes(modes)).cvl_v, 54.6);
    }

    #[test]
    fn keep_max_counts_a_missing_charge_mode_as_not_float() {
        let out = run_with(KEEP_MAX, &with_modes([Some("Float"), None, Some("Float")]));
        assert_eq!(out.cvl_v, 55.2);
    }

    #[test]
    fn min_rule_ignores_the_charge_modes() {
        let out = run(&with_modes([Some("Bulk"), None, Some("Float")]));
        assert_eq!(out.cvl_v, 54.6);
    }

    #[test]
    fn pass_through_parity_min_times_batteries() {
        // docs/strategies.md §4: `_min(CCLs) * NR_OF_BATTERIES` in version 3.4; Python prints
        // 33.3 * 3 as 99.89999999999999 and 99.9 * 3 as 299.70000000000005.
        let out = run(&bank(three()));
        assert_eq!(out.ccl_a, 99.89999999999999);
        assert_eq!(out.dcl_a, 299.70000000000005);
    }

    #[test]
    fn the_limits_are_the_whole_banks_with_a_battery_held() {
        // The host scales them to the batteries online; a held battery's last limits still
        // bound the minimum.
        let mut batteries = three();
        batteries[2].state = plugin_api::BatteryState_NE::new(BatteryState::Stale);
        let out = run(&bank(batteries));
        assert_eq!(out.ccl_a, 33.3 * 3.0);
        assert_eq!(out.dcl_a, 99.9 * 3.0);
    }

    #[test]
    fn lost_batteries_do_not_bound_the_limits_of_the_whole_bank() {
        let mut batteries = three();
        batteries[1].state = plugin_api::BatteryState_NE::new(BatteryState::Lost);
        batteries[1].max_charge_current_a = ROption::RNone;
        let out = run(&bank(batteries.clone()));
        assert_eq!(out.cvl_v, 55.0);
        assert_eq!(out.ccl_a, 100.0 * 3.0);
        // The sum of the two active ones stands for three batteries as their mean × 3.
        let out = run_with(SUM, &bank(batteries));
        assert_eq!(out.ccl_a, (100.0 + 120.0) / 2.0 * 3.0);
        assert_eq!(out.dcl_a, (150.0 + 99.9) / 2.0 * 3.0);
    }

    #[test]
    fn more_batteries_online_than_expected_count_as_the_bank() {
        let out = run(&BankBuilder::new()
            .batteries(three())
            .cells_per_battery(22)
            .expected(2)
            .build());
        assert_eq!(out.ccl_a, 33.3 * 3.0);
    }

    #[test]
    fn keep_max_takes_a_battery_in_float_for_floating_not_protecting() {
        // 16 LFP cells: absorption at 3.45 V a cell, float at 3.375 V, 1.2 V apart.
        let bank = bank(vec![
            BatteryBuilder::new("A")
                .cell_extremes(3.40, 3.42)
                .limits(55.2, 100.0, 100.0)
                .charge_mode("Absorption")
                .build(),
            BatteryBuilder::new("B")
                .cell_extremes(3.37, 3.38)
                .limits(54.0, 100.0, 100.0)
                .charge_mode("Float")
                .build(),
        ]);
        let out = run_with(KEEP_MAX, &bank);
        assert_eq!(out.cvl_v, 55.2, "{}", out.mode);
        // The same drop outside Float is a battery protecting its cells.
        let mut protecting = bank.clone();
        protecting.batteries[1].charge_mode = ROption::RSome("Absorption".into());
        assert_eq!(run_with(KEEP_MAX, &protecting).cvl_v, 54.0);
    }

    #[test]
    fn sum_adds_the_limits() {
        let out = run_with(SUM, &bank(three()));
        assert_eq!(out.ccl_a, 100.0 + 33.3 + 120.0);
        assert_eq!(out.dcl_a, 150.0 + 200.0 + 99.9);
        assert_eq!(out.cvl_v, 54.6);
    }

    #[test]
    fn a_battery_blocking_charge_zeroes_the_minimum() {
        let mut batteries = three();
        batteries[0].modules_blocking_charge = 1;
        let out = run(&bank(batteries));
        assert_eq!(out.ccl_a, 0.0);
        assert_eq!(out.dcl_a, 299.70000000000005);
    }

    #[test]
    fn a_battery_blocking_is_left_out_of_the_sum() {
        let mut batteries = three();
        batteries[0].allow_to_charge = ROption::RSome(0);
        batteries[2].allow_to_discharge = ROption::RSome(0);
        let out = run_with(SUM, &bank(batteries));
        assert_eq!(out.ccl_a, 33.3 + 120.0);
        assert_eq!(out.dcl_a, 150.0 + 200.0);
    }

    #[test]
    fn negative_bms_limits_count_as_zero() {
        let mut batteries = three();
        batteries[1].max_charge_current_a = ROption::RSome(-5.0);
        assert_eq!(run(&bank(batteries.clone())).ccl_a, 0.0);
        assert_eq!(run_with(SUM, &bank(batteries)).ccl_a, 220.0);
    }

    #[test]
    fn a_missing_limit_names_the_battery_and_the_path() {
        for (index, path) in [
            (0, "/Info/MaxChargeVoltage"),
            (1, "/Info/MaxChargeCurrent"),
            (2, "/Info/MaxDischargeCurrent"),
        ] {
            let mut batteries = three();
            let battery = &mut batteries[index];
            match index {
                0 => battery.max_charge_voltage_v = ROption::RNone,
                1 => battery.max_charge_current_a = ROption::RSome(f64::NAN),
                _ => battery.max_discharge_current_a = ROption::RNone,
            }
            let name = battery.name.to_string();
            let err = SerialBattery::new(Config::default())
                .compute(&bank(batteries))
                .unwrap_err();
            assert!(
                err.contains(&format!("battery {name} ")) && err.contains(path),
                "{err}"
            );
        }
    }

    #[test]
    fn no_active_battery_is_an_error() {
        let mut batteries = three();
        for battery in &mut batteries {
            battery.state = plugin_api::BatteryState_NE::new(BatteryState::Lost);
        }
        let err = SerialBattery::new(Config::default())
            .compute(&bank(batteries))
            .unwrap_err();
        assert_eq!(err, "no active battery");
    }

    const RESETS: &str = r#"{"max_cell_voltage_soc_full": 2.5, "min_cell_voltage_soc_empty": 1.9}"#;
    const RESETS_ZERO: &str = r#"{"max_cell_voltage_soc_full": 2.5, "min_cell_voltage_soc_empty": 1.9, "zero_soc": true}"#;

    #[test]
    fn full_reset_at_max_cell_voltage_soc_full() {
        let mut at = bank(three());
        at.max_cell_voltage_v = ROption::RSome(2.5);
        assert_eq!(run_with(RESETS, &at).soc_reset, SocReset::Full);
        at.max_cell_voltage_v = ROption::RSome(2.499);
        assert_eq!(run_with(RESETS, &at).soc_reset, SocReset::None);
    }

    #[test]
    fn no_reset_unless_configured() {
        // An LFP bank near full and the keys left out: no reset, whatever the cells say.
        let mut lfp = bank(three());
        lfp.max_cell_voltage_v = ROption::RSome(3.45);
        lfp.min_cell_voltage_v = ROption::RSome(2.5);
        assert_eq!(run(&lfp).soc_reset, SocReset::None);
        // zero_soc without its voltage is a config error naming the key.
        let err = parse_checked::<Config>(r#"{"zero_soc": true}"#).unwrap_err();
        assert!(err.starts_with("min_cell_voltage_soc_empty"), "{err}");
    }

    #[test]
    fn without_cell_data_a_configured_reset_is_off_and_the_limits_pass_on() {
        let mut none = bank(three());
        none.max_cell_voltage_v = ROption::RNone;
        none.min_cell_voltage_v = ROption::RNone;
        assert_eq!(run(&none).ccl_a, 33.3 * 3.0);
        // CAN packs that publish no cells, with the shipped config's full reset.
        let mut strategy = SerialBattery::new(parse_checked::<Config>(RESETS_ZERO).unwrap());
        let out = strategy.compute(&none).expect("the limits need no cells");
        assert_eq!((out.ccl_a, out.soc_reset), (33.3 * 3.0, SocReset::None));
        assert!(
            out.mode.as_str().ends_with("; SoC reset off: no cell data"),
            "{}",
            out.mode
        );
        // The cells back: the reset looks at them again, and the note is gone.
        let mut low = bank(three());
        low.min_cell_voltage_v = ROption::RSome(1.8);
        let out = strategy.compute(&low).unwrap();
        assert_eq!(out.soc_reset, SocReset::Empty);
        assert!(!out.mode.as_str().contains("no cell data"), "{}", out.mode);
    }

    #[test]
    fn empty_reset_only_with_zero_soc() {
        let mut low = bank(three());
        low.min_cell_voltage_v = ROption::RSome(1.9);
        assert_eq!(run_with(RESETS, &low).soc_reset, SocReset::None);
        assert_eq!(run_with(RESETS_ZERO, &low).soc_reset, SocReset::Empty);
        low.min_cell_voltage_v = ROption::RSome(1.901);
        assert_eq!(run_with(RESETS_ZERO, &low).soc_reset, SocReset::None);
    }

    #[test]
    fn empty_reset_wins_over_full() {
        let mut both = bank(three());
        both.max_cell_voltage_v = ROption::RSome(2.6);
        both.min_cell_voltage_v = ROption::RSome(1.8);
        assert_eq!(run_with(RESETS_ZERO, &both).soc_reset, SocReset::Empty);
    }

    #[test]
    fn a_battery_protecting_its_cells_forces_the_lowest_cvl_until_it_recovers() {
        let keep = SerialBattery::new(Config {
            cvl: CvlRule::KeepMaxUntilAllFloat,
            ..Config::default()
        });
        let with_mode = |name: &str, cvl: f64, mode: &str| {
            BatteryBuilder::new(name)
                .cell_extremes(2.40, 2.42)
                .voltage(53.0)
                .limits(cvl, 100.0, 100.0)
                .charge_mode(mode)
                .build()
        };
        let cvl = |batteries: Vec<BatteryView>| {
            let mut s = keep.clone();
            let out = s.compute(&bank(batteries)).unwrap();
            (out.cvl_v, out.mode.to_string())
        };
        // In Bulk, the highest CVL.
        let bulk = vec![
            with_mode("A", 55.2, "Bulk"),
            with_mode("B", 54.8, "Absorption"),
        ];
        assert_eq!(cvl(bulk).0, 55.2);
        // B reports OVP: the lowest, and the mode names B.
        let ovp = vec![
            with_mode("A", 55.2, "Bulk"),
            with_mode("B", 54.8, "Bulk OVP"),
        ];
        let (v, mode) = cvl(ovp);
        assert_eq!(v, 54.8);
        assert!(mode.contains("battery B protecting"), "{mode}");
        // B lowered its CVL by more than the threshold without saying so.
        let dropped = vec![with_mode("A", 55.2, "Bulk"), with_mode("B", 53.0, "Bulk")];
        assert_eq!(cvl(dropped).0, 53.0);
        // A battery that publishes no mode never floats: the highest CVL stays.
        let silent = vec![
            with_mode("A", 55.2, "Float"),
            BatteryBuilder::new("B")
                .cell_extremes(2.40, 2.42)
                .voltage(53.0)
                .limits(54.8, 100.0, 100.0)
                .build(),
        ];
        assert_eq!(cvl(silent).0, 55.2);
    }

    #[test]
    fn mode_shows_the_bms_mode_when_all_agree() {
        assert_eq!(run(&bank(three())).mode.as_str(), "Pass-through: Bulk");
        let mixed = with_modes([Some("Float"), Some("Bulk"), Some("Float")]);
        assert_eq!(run(&mixed).mode.as_str(), "Pass-through");
        let missing = with_modes([None, None, None]);
        assert_eq!(run(&missing).mode.as_str(), "Pass-through");
    }

    #[test]
    fn missing_section_gives_the_defaults() {
        let config = parse_checked::<Config>("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            (config.cvl, config.limits),
            (CvlRule::Min, LimitsRule::MinTimesCount)
        );
        assert!(!config.zero_soc);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse_checked::<Config>(r#"{"keep_max_cvl": true}"#).unwrap_err();
        assert!(err.contains("keep_max_cvl"), "{err}");
    }

    #[test]
    fn bad_enum_values_name_the_key_and_the_valid_values() {
        let err = parse_checked::<Config>(r#"{"cvl": "max"}"#).unwrap_err();
        assert!(err.starts_with("cvl: "), "{err}");
        assert!(err.contains("keep_max_until_all_float"), "{err}");
        let err = parse_checked::<Config>(r#"{"limits": "average"}"#).unwrap_err();
        assert!(err.starts_with("limits: "), "{err}");
        assert!(
            err.contains("min_times_count") && err.contains("sum"),
            "{err}"
        );
    }

    #[test]
    fn reset_voltages_are_checked_together() {
        let err = parse_checked::<Config>(
            r#"{"max_cell_voltage_soc_full": -1, "min_cell_voltage_soc_empty": 2.0}"#,
        )
        .unwrap_err();
        let keys: Vec<&str> = err.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            ["max_cell_voltage_soc_full", "min_cell_voltage_soc_empty"],
            "{err}"
        );
    }
}
