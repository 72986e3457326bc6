//! What must survive a restart: the Coulomb counter, the strategy's opaque state and the
//! feed-in memory. The host's state file holds it as JSON.

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
    /// The last local date the host's clock gave that could be right (days since 1970-01-01):
    /// it stands in while the clock reads an older date (a device booted without network time).
    #[serde(default)]
    pub last_plausible_day: Option<i64>,
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
