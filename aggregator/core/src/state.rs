//! What must survive a restart: the Coulomb counter, the strategy's opaque state, the
//! feed-in memory and the guard's cell latches. The host's state file holds it as JSON.

use serde::{Deserialize, Serialize};

use crate::feedin::FeedIn;

/// Everything persisted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The Coulomb counter in Ah; `None` until the first tick with a bank.
    #[serde(default)]
    pub charge_ah: Option<f64>,
    /// The bank capacity the charge refers to; a bank of another size rescales it.
    #[serde(default)]
    pub capacity_ah: Option<f64>,
    /// The strategy's state, tagged with the plugin's name so another strategy does not get it.
    #[serde(default)]
    pub strategy: Option<StrategyState>,
    /// The feed-in memory.
    #[serde(default)]
    pub feed_in: FeedIn,
    /// The guard's cell latches: a restart inside a hysteresis band does not let go of them.
    #[serde(default)]
    pub latches: Latches,
    /// The last local date the host's clock gave that could be right (days since 1970-01-01):
    /// it stands in while the clock reads an older date (a device booted without network time),
    /// until the clock has read such dates, none before the build date, for a day of running
    /// (docs/tick.md §2).
    #[serde(default)]
    pub last_plausible_day: Option<i64>,
}

impl State {
    /// The state with every value checked before it is taken back (docs/state.md §4), and a
    /// line for each value dropped or changed: a charge or capacity that is not one, or a charge
    /// above its capacity, is dropped (the counter starts from the batteries' SoC), the feed-in
    /// memory as [`FeedIn::check_restored`] says.
    pub fn checked(&self) -> (State, Vec<String>) {
        let mut state = self.clone();
        let mut problems = Vec::new();
        if let Some(charge) = state.charge_ah.filter(|c| !(c.is_finite() && *c >= 0.0)) {
            problems.push(format!(
                "charge_ah: {charge} is not a charge (finite, 0 Ah or more); not restored"
            ));
            state.charge_ah = None;
        }
        if let Some(capacity) = state.capacity_ah.filter(|c| !(c.is_finite() && *c > 0.0)) {
            problems.push(format!(
                "capacity_ah: {capacity} is not a capacity (finite, above 0 Ah); not restored"
            ));
            state.capacity_ah = None;
        }
        // Of a charge beside its capacity, the capacity is the bound; one saved without it is
        // checked against the first whole bank's (the engine's count).
        if let (Some(charge), Some(capacity)) = (state.charge_ah, state.capacity_ah) {
            if beyond_capacity(charge, capacity) {
                problems.push(format!(
                    "charge_ah: {charge:?} is more than the capacity_ah {capacity:?} it refers \
                     to; not restored"
                ));
                state.charge_ah = None;
            }
        }
        problems.extend(state.feed_in.check_restored());
        (state, problems)
    }
}

/// Whether a saved charge is more than `capacity_ah` can hold (docs/state.md §4): beyond the
/// rounding of a rescaled charge, which the counter's next step clamps.
pub fn beyond_capacity(charge_ah: f64, capacity_ah: f64) -> bool {
    charge_ah > capacity_ah * (1.0 + 1e-9)
}

/// A strategy's opaque state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyState {
    /// The plugin's name.
    pub plugin: String,
    /// What the plugin returned from `save_state`.
    pub state: String,
}

/// The guard's cell latches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latches {
    /// A cell reached `safety.max_cell_voltage` and has not fallen below its hysteresis.
    #[serde(default)]
    pub high_cell: bool,
    /// A cell reached `safety.min_cell_voltage` and has not risen above its hysteresis.
    #[serde(default)]
    pub low_cell: bool,
}
