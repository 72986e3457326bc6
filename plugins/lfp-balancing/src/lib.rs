//! `lfp-balancing`: monthly CVL with periodic balancing, dynamic CVL reduction, CCL/DCL curves
//! and the discharge latch: the original's `OWN_CHARGE_PARAMETERS = True` policy with the
//! fixes docs/strategies.md §2 names.
//!
//! Each tick, in the original's order:
//! 1. the balancing phase picks the month's voltage or the balancing voltage;
//! 2. the counter is reset to full at the balancing voltage, to empty at the lowest cell;
//! 3. a cell at or above `max_cell_voltage` lowers the CVL by the cells' excess (dynamic CVL);
//! 4. feed-in is disabled while that, or a BMS blocking charge, lasts;
//! 5. CCL and DCL follow the curves of the highest and lowest cell.

mod config;
mod state;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use plugin_api::abi_stable::std_types::{ROption, RString};
use plugin_api::{
    interpolate, log, parse_checked, BankView, FeedInRequest, LocalDate, SocReset, StrategyImpl,
    StrategyOutput,
};

pub use config::{Config, Curve};
use state::{FeedIn, Phase, State};

/// The strategy: its config, the resolved curves and the persisted state.
#[derive(Debug, Clone, PartialEq)]
pub struct LfpBalancing {
    config: Config,
    charge_curve: Curve,
    discharge_curve: Curve,
    state: State,
}

/// Builds the strategy from its config section (JSON text).
pub fn new(config_json: &str) -> Result<LfpBalancing, String> {
    parse_checked(config_json).map(LfpBalancing::with_config)
}

/// The two target voltages of a tick.
struct Targets {
    normal_v: f64,
    balancing_v: f64,
    /// `balancing_v` less the tolerance: where the goal and the full reset count as reached.
    reached_v: f64,
}

impl LfpBalancing {
    /// A strategy with a fresh state: no balancing recorded, so one is due.
    pub fn with_config(config: Config) -> Self {
        Self {
            charge_curve: config.charge_curve(),
            discharge_curve: config.discharge_curve(),
            config,
            state: State::default(),
        }
    }

    /// Forgets a last balancing dated after today: the host hands on no date before one it
    /// handed on, except once the clock has read earlier dates for a day, when the later ones
    /// were a clock set ahead by mistake (docs/tick.md §2). That balancing was dated by the wrong
    /// clock, so it is forgotten rather than counted from: one is due, as with a fresh state
    /// (docs/strategies.md §2.2). A date forgotten cannot come back, so it is logged once.
    fn forget_a_later_balancing(&mut self, today: LocalDate) {
        if let Some(last) = self.state.last_balancing.filter(|last| *last > today) {
            log::warn(&format!(
                "the last balancing is dated {last}, after today ({today}): dated by a clock that \
                 was set ahead; forgotten, so a balancing is due"
            ));
            self.state.last_balancing = None;
        }
    }

    fn targets(&self, bank: &BankView) -> Result<Targets, String> {
        let per_cell = usize::from(bank.date.month)
            .checked_sub(1)
            .and_then(|i| self.config.charge_voltages.get(i))
            .ok_or_else(|| format!("the bank's date {} has no month 1 to 12", bank.date))?;
        let cells = f64::from(bank.cells_per_battery);
        // N × per-cell voltage, in this order, so that 22 × 2.45 is the original's
        // 53.900000000000006.
        Ok(Targets {
            normal_v: cells * per_cell,
            balancing_v: cells * self.config.balancing_voltage,
            reached_v: cells * (self.config.balancing_voltage - self.config.target_tolerance),
        })
    }

    /// Steps the balancing phase (docs/strategies.md §2.2, in that order) and returns the phase's CVL
    /// and mode text.
    fn balance(&mut self, bank: &BankView, cells: Cells, targets: &Targets) -> (f64, &'static str) {
        let today = bank.date;
        let at_goal =
            bank.voltage_v >= targets.reached_v && cells.diff_v() < self.config.cell_diff_max;
        let state = &mut self.state;
        if targets.balancing_v <= targets.normal_v {
            // Normal charging already reaches the balancing voltage: just record when it did.
            if at_goal && state.last_balancing != Some(today) {
                state.last_balancing = Some(today);
                log::info(&format!(
                    "Balancing goal reached with full charging set as normal; last balancing is \
                     now {today}"
                ));
            }
            return (targets.normal_v, "Normal");
        }

        if state.phase == Phase::Normal {
            let every = i64::from(self.config.balancing_every_days);
            match state.last_balancing.map(|last| today.days_since(last)) {
                Some(days) if days < every => {}
                since => {
                    state.phase = Phase::Balancing;
                    log::info(&match since {
                        None => "CVL increase for balancing activated: no balancing recorded yet"
                            .to_string(),
                        Some(days) => format!(
                            "CVL increase for balancing activated: {days} days since {}",
                            state.last_balancing.unwrap_or(today)
                        ),
                    });
                }
            }
        }
        if state.phase == Phase::Balancing && at_goal {
            state.phase = Phase::GoalReached;
            log::info("Balancing goal reached");
        }
        if state.phase == Phase::GoalReached && bank.voltage_v <= targets.normal_v {
            state.phase = Phase::Normal;
            state.last_balancing = Some(today);
            log::info(&format!(
                "CVL increase for balancing de-activated; last balancing {today}"
            ));
        }
        match state.phase {
            Phase::Normal => (targets.normal_v, "Normal"),
            Phase::Balancing => (targets.balancing_v, "Balancing"),
            Phase::GoalReached => (targets.balancing_v, "Balanced, holding"),
        }
    }

    /// Lowers `phase_cvl` while a cell is at or above `max_cell_voltage`: each battery may
    /// charge to its cell sum minus the cells' excess, and the bank to the lowest of those.
    fn dynamic_cvl(&mut self, bank: &BankView, cells: Cells, phase_cvl: f64) -> f64 {
        let limit = self.config.max_cell_voltage;
        let active = if self.state.dynamic_cvl {
            cells.max_v >= limit - self.config.max_cell_hysteresis
        } else {
            cells.max_v >= limit
        };
        if active != self.state.dynamic_cvl {
            self.state.dynamic_cvl = active;
            log::info(&if active {
                format!(
                    "Dynamic CVL reduction started due to max. cell voltage: {} {:.3}V",
                    cell_id(&bank.max_cell_id),
                    cells.max_v
                )
            } else {
                "Dynamic CVL reduction finished".to_string()
            });
        }
        if !active {
            return phase_cvl;
        }
        // A battery without a cell sum sets no bound of its own.
        bank.active_batteries()
            .filter_map(|battery| {
                let sum_v = battery.voltages_sum_v.into_option()?;
                Some(sum_v - battery.cell_overvoltage_v(limit))
            })
            .fold(f64::INFINITY, f64::min)
            .min(phase_cvl)
    }

    /// Feed-in is off while the dynamic CVL runs or a BMS blocks charge, since with it on DVCC
    /// lets the solar chargers ignore the CCL. Requests go out on transitions only.
    fn feed_in(&mut self, bank: &BankView, cells: Cells) -> FeedInRequest {
        let blocked = bank.blocks_charge();
        let dynamic = self.state.dynamic_cvl;
        let feed_in = &mut self.state.feed_in;
        let (next, request) = match *feed_in {
            FeedIn::Untouched if dynamic || blocked => {
                log::info(if dynamic {
                    "DC-coupled PV feed-in disabled during the dynamic CVL reduction"
                } else {
                    "DC-coupled PV feed-in disabled while a BMS blocks charging"
                });
                let next = if dynamic {
                    FeedIn::DisabledUntilBalanced
                } else {
                    FeedIn::Disabled
                };
                (next, FeedInRequest::Disable)
            }
            FeedIn::Untouched => (FeedIn::Untouched, FeedInRequest::Keep),
            // A block that turns into a dynamic-CVL episode waits for the cells like one.
            FeedIn::Disabled if dynamic => (FeedIn::DisabledUntilBalanced, FeedInRequest::Keep),
            FeedIn::Disabled if blocked => (FeedIn::Disabled, FeedInRequest::Keep),
            FeedIn::DisabledUntilBalanced
                if dynamic || blocked || cells.diff_v() >= self.config.cell_diff_max =>
            {
                (FeedIn::DisabledUntilBalanced, FeedInRequest::Keep)
            }
            FeedIn::Disabled | FeedIn::DisabledUntilBalanced => {
                log::info("DC-coupled PV feed-in restored");
                (FeedIn::Untouched, FeedInRequest::Restore)
            }
        };
        *feed_in = next;
        request
    }

    /// DCL, with the latch set at `min_cell_voltage` and cleared strictly above
    /// `min_cell_voltage + min_cell_hysteresis`.
    fn dcl(&mut self, bank: &BankView, cells: Cells) -> f64 {
        let min_cell = cells.min_v;
        let config = &self.config;
        let latched = if min_cell <= config.min_cell_voltage {
            true
        } else if min_cell > config.min_cell_voltage + config.min_cell_hysteresis {
            false
        } else {
            self.state.discharge_latched
        };
        if latched != self.state.discharge_latched {
            self.state.discharge_latched = latched;
            log::info(&if latched {
                format!(
                    "Discharge latched off: min. cell {} {min_cell:.3}V",
                    cell_id(&bank.min_cell_id)
                )
            } else {
                format!(
                    "Discharge latch cleared: min. cell {} {min_cell:.3}V",
                    cell_id(&bank.min_cell_id)
                )
            });
        }
        if latched || bank.blocks_discharge() {
            return 0.0;
        }
        let curve = &self.discharge_curve;
        config.max_discharge_current * interpolate(&curve.voltages, &curve.factors, min_cell)
    }
}

/// The bank's lowest and highest cell this tick (a tick without them is refused first).
#[derive(Clone, Copy)]
struct Cells {
    min_v: f64,
    max_v: f64,
}

impl Cells {
    fn diff_v(self) -> f64 {
        self.max_v - self.min_v
    }
}

fn cell_id(id: &ROption<RString>) -> &str {
    id.as_ref().map_or("", |id| id.as_str())
}

impl StrategyImpl for LfpBalancing {
    fn compute(&mut self, bank: &BankView) -> Result<StrategyOutput, String> {
        // Every target is N × a per-cell voltage: with N = 0 they are all 0, the bank is
        // always "full" and at the goal. Refused before any state moves, so the host's safety
        // envelope applies instead (docs/strategies.md §2.2).
        if bank.cells_per_battery == 0 {
            return Err(
                "cells_per_battery is 0: the limits are per cell and need the cell count \
                 (batteries.cells, or /System/NrOfCellsPerBattery of the packs)"
                    .into(),
            );
        }
        let (min_v, max_v) = bank.cell_extremes()?;
        let cells = Cells { min_v, max_v };
        let before = self.state.clone();
        let targets = self.targets(bank)?;
        self.forget_a_later_balancing(bank.date);
        let (phase_cvl, phase_mode) = self.balance(bank, cells, &targets);

        // Empty after full: if both hold, the original ended at 0 %.
        let soc_reset = if self.config.zero_soc && cells.min_v <= self.config.min_cell_voltage {
            SocReset::Empty
        } else if bank.voltage_v >= targets.reached_v {
            SocReset::Full
        } else {
            SocReset::None
        };

        let cvl = self.dynamic_cvl(bank, cells, phase_cvl);
        let feed_in = self.feed_in(bank, cells);
        let charge_blocked = bank.blocks_charge();
        let ccl = if charge_blocked {
            0.0
        } else {
            let curve = &self.charge_curve;
            self.config.max_charge_current
                * interpolate(&curve.voltages, &curve.factors, cells.max_v)
        };
        let dcl = self.dcl(bank, cells);

        // Parts joined by "; " because the goal-reached text has a comma of its own.
        let mode = [
            (true, phase_mode),
            (self.state.dynamic_cvl, "dynamic CVL"),
            (charge_blocked, "charge blocked"),
            (bank.blocks_discharge(), "discharge blocked"),
            (self.state.discharge_latched, "low cell latch"),
        ]
        .into_iter()
        .filter_map(|(on, part)| on.then_some(part))
        .collect::<Vec<_>>()
        .join("; ");

        Ok(StrategyOutput {
            cvl_v: cvl,
            ccl_a: ccl,
            dcl_a: dcl,
            soc_reset,
            feed_in,
            mode: mode.as_str().into(),
            state_changed: self.state != before,
        })
    }

    fn save_state(&self) -> Result<String, String> {
        self.state.to_json()
    }

    fn restore_state(&mut self, state: &str) -> Result<(), String> {
        self.state = State::from_json(state)?;
        Ok(())
    }
}

plugin_api::export_plugin! {
    kind: strategy,
    name: "lfp-balancing",
    description: "Monthly CVL with balancing every N days, dynamic CVL, CCL/DCL curves (v3.4 policy)",
    config: config::Config,
    new: new,
}
