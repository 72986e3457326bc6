//! Carrying out a strategy's feed-in requests on `/Settings/CGwacs/OvervoltageFeedIn`.
//!
//! The strategy says disable / restore; this module remembers the user's value when it
//! disables, so that restore writes back exactly what the user had, even after a restart in the
//! middle of an episode (the memory is part of the persisted state).

use plugin_api::FeedInRequest;
use serde::{Deserialize, Serialize};

/// The feed-in memory, persisted with the rest of the state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedIn {
    /// True while feed-in is off because we turned it off.
    pub disabled_by_us: bool,
    /// The user's value before we turned it off (`None`: unknown, e.g. no settings service).
    pub saved_value: Option<i64>,
}

impl FeedIn {
    /// Decides the write for this tick's request, given the setting's current value; returns
    /// the value to write, if any.
    pub fn on_request(&mut self, request: FeedInRequest, current: Option<i64>) -> Option<i64> {
        match request {
            FeedInRequest::Keep => None,
            FeedInRequest::Disable if !self.disabled_by_us => {
                self.disabled_by_us = true;
                self.saved_value = current;
                (current != Some(0)).then_some(0)
            }
            FeedInRequest::Disable => (current.is_some_and(|v| v != 0)).then_some(0),
            FeedInRequest::Restore if self.disabled_by_us => {
                self.disabled_by_us = false;
                let saved = self.saved_value.take();
                saved.filter(|&v| Some(v) != current)
            }
            FeedInRequest::Restore => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FeedInRequest::*;

    #[test]
    fn disables_then_restores_the_users_value() {
        let mut f = FeedIn::default();
        assert_eq!(f.on_request(Keep, Some(1)), None);
        assert_eq!(f.on_request(Disable, Some(1)), Some(0));
        assert_eq!(f.saved_value, Some(1));
        assert_eq!(
            f.on_request(Disable, Some(0)),
            None,
            "already off: no second write"
        );
        assert_eq!(f.on_request(Restore, Some(0)), Some(1));
        assert_eq!(f, FeedIn::default());
        assert_eq!(
            f.on_request(Restore, Some(1)),
            None,
            "restore only what we disabled"
        );
    }

    #[test]
    fn a_user_who_had_it_off_keeps_it_off() {
        let mut f = FeedIn::default();
        assert_eq!(f.on_request(Disable, Some(0)), None);
        assert_eq!(f.on_request(Restore, Some(0)), None);
    }

    #[test]
    fn re_disables_if_someone_turned_it_back_on_mid_episode() {
        let mut f = FeedIn::default();
        f.on_request(Disable, Some(1));
        assert_eq!(f.on_request(Disable, Some(1)), Some(0));
        assert_eq!(
            f.saved_value,
            Some(1),
            "the saved value is the one from before the episode"
        );
    }

    #[test]
    fn survives_a_restart_mid_episode() {
        let mut f = FeedIn::default();
        f.on_request(Disable, Some(1));
        let text = serde_json::to_string(&f).unwrap();
        let mut after_restart: FeedIn = serde_json::from_str(&text).unwrap();
        assert_eq!(after_restart.on_request(Restore, Some(0)), Some(1));
    }
}
