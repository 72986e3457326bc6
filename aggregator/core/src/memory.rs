//! What the engine carries from one tick to the next besides its [`State`](crate::state::State):
//! the safety envelope's last good limits and faults in a row, the limits of the last tick with
//! a battery online, the guard's measured current shares and the feed-in hold's time
//! unrounded. None of it is saved in the state file (a restart starts it afresh, on purpose: a
//! share measured before it says nothing of the bank after it); the flight recorder keeps it
//! with the state where a run of its ticks starts, so that a replay starting there starts
//! where the engine was (docs/tick.md §1).

use serde::{Deserialize, Serialize};

use crate::envelope::Limits;
use crate::guard::Shares;

/// The engine's memory between ticks, as [`Engine::memory`](crate::engine::Engine::memory)
/// gives it and [`Engine::restore_memory`](crate::engine::Engine::restore_memory) takes it back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// The last limits a strategy gave without fault: what a fault keeps (docs/guard.md §3).
    #[serde(default)]
    pub last_good: Option<Limits>,
    /// Strategy faults in a row: DCL 0 from `safety.plugin_failures` on.
    #[serde(default)]
    pub faults_in_a_row: u32,
    /// The limits published on the last tick with a battery online: what stands while every
    /// battery is held.
    #[serde(default)]
    pub last_online: Option<Limits>,
    /// The packs' shares of the bank current, which `safety.bms_limits: share` and
    /// `bms_limits_n_minus_one` cap by.
    #[serde(default)]
    pub shares: Shares,
    /// Seconds the feed-in episode's causes have been clear, unrounded (the state keeps them
    /// in steps of ten seconds).
    #[serde(default)]
    pub feed_in_clear_for_s: f64,
}
