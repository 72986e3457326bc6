//! What the strategy remembers across restarts, and its JSON form.
//!
//! ```json
//! {"last_balancing":"2026-01-09","phase":"normal","feed_in":"untouched",
//!  "discharge_latched":false,"dynamic_cvl":false}
//! ```
//!
//! The original kept only the day of the year of the last balancing; everything else started
//! afresh, so a restart mid-balancing or with feed-in switched off by it lost track
//! (docs/strategies.md §2.7). Every field is required: a state that does not parse is refused as a
//! whole.

use plugin_api::LocalDate;
use serde::{Deserialize, Serialize};

/// Where the balancing run stands (the original's `_balancing` 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Charging to the month's voltage.
    #[default]
    Normal,
    /// Charging to the balancing voltage until the bank is there with the cells together.
    Balancing,
    /// Goal reached: holding the balancing voltage until the bank falls to the normal voltage.
    GoalReached,
}

/// Whether this strategy has DC-coupled PV feed-in switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedIn {
    /// We have not asked for it to be disabled (the user's setting stands).
    #[default]
    Untouched,
    /// Disabled because a BMS blocks charge: restored as soon as it no longer does.
    Disabled,
    /// Disabled during an episode with dynamic CVL: restored once that is over and the cells
    /// are back within `cell_diff_max`, as the Python dbus-aggregate-batteries did.
    DisabledUntilBalanced,
}

/// The persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// Local date the last balancing run ended; `None` when none is recorded (balancing due).
    #[serde(with = "date_text")]
    pub last_balancing: Option<LocalDate>,
    /// Balancing phase.
    pub phase: Phase,
    /// Feed-in switched off by us.
    pub feed_in: FeedIn,
    /// DCL held at 0 after the lowest cell reached `min_cell_voltage`.
    pub discharge_latched: bool,
    /// The dynamic CVL reduction is active (so its start and end are logged once each).
    pub dynamic_cvl: bool,
}

impl State {
    /// The JSON text of the state.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string(self).map_err(|e| format!("cannot encode the state: {e}"))
    }

    /// Reads a state written by [`State::to_json`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("unreadable lfp-balancing state: {e}"))
    }
}

/// `Option<LocalDate>` as `"YYYY-MM-DD"` or `null`.
mod date_text {
    use plugin_api::LocalDate;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(date: &Option<LocalDate>, s: S) -> Result<S::Ok, S::Error> {
        date.map(|d| d.to_string()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LocalDate>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| text.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json() {
        let state = State {
            last_balancing: LocalDate::new(2028, 2, 29),
            phase: Phase::GoalReached,
            feed_in: FeedIn::DisabledUntilBalanced,
            discharge_latched: true,
            dynamic_cvl: true,
        };
        let text = state.to_json().unwrap();
        assert_eq!(
            text,
            r#"{"last_balancing":"2028-02-29","phase":"goal_reached","feed_in":"disabled_until_balanced","discharge_latched":true,"dynamic_cvl":true}"#
        );
        assert_eq!(State::from_json(&text).unwrap(), state);
        let fresh = State::default();
        assert_eq!(State::from_json(&fresh.to_json().unwrap()).unwrap(), fresh);
    }

    #[test]
    fn refuses_garbage() {
        for text in [
            "",
            "359",
            "{}",
            r#"{"last_balancing":"2026-02-30","phase":"normal","feed_in":"untouched","discharge_latched":false,"dynamic_cvl":false}"#,
            r#"{"last_balancing":null,"phase":"sleeping","feed_in":"untouched","discharge_latched":false,"dynamic_cvl":false}"#,
        ] {
            assert!(State::from_json(text).is_err(), "{text}");
        }
    }
}
