//! The host owns DC-coupled feed-in, `/Settings/CGwacs/OvervoltageFeedIn` (docs/feedin.md §1).
//!
//! While feed-in is 1, DVCC runs the solar chargers at their maximum whatever the CCL, so a
//! CCL of 0, or one the host lowered, does nothing on a DC-coupled PV system. Each tick the
//! core decides the value the setting should have:
//!
//! * an **episode** starts when the published CCL is 0, when the host lowered it below the
//!   strategy's and the bank's charge current has come near it, or when the strategy asked
//!   for feed-in off; only a CCL DVCC can see counts (the host's causes wait until the service
//!   is registered); it needs the user's value read from settings first (never write 0 without
//!   knowing what to restore), and the daemon saves the episode before the first 0 is written;
//! * during it the setting should be 0 (re-disabled if something turns it on, logged once);
//! * it ends once no cause has held for `safety.feed_in_hold`; then the user's value is
//!   written back, and kept until the setting shows it, or shows anything but our 0 (the
//!   user changed it meanwhile: their value wins, never an old one written over it);
//! * the daemon writes whenever the wanted value differs from the setting read this tick, so
//!   a failed write is retried every tick.
//!
//! The memory is part of the persisted state: an episode survives a restart or kill -9.

use plugin_api::FeedInRequest;
use serde::{Deserialize, Serialize};

use crate::episode::Episode;

/// The feed-in memory, persisted with the rest of the state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedIn {
    /// True during an episode: feed-in is held at 0 by us.
    pub disabled_by_us: bool,
    /// The user's value to write back; kept after the episode until the setting shows it.
    /// Read back from the state file as any whole number (`1.0` is 1); what is no whole number
    /// does not read, and [`FeedIn::check_restored`] makes an episode without a value 1.
    #[serde(default, deserialize_with = "whole_number")]
    pub saved_value: Option<i64>,
    /// The strategy asked for feed-in off and has not asked for it back.
    #[serde(default)]
    pub strategy_off: bool,
    /// Seconds the episode's causes have been clear, towards `safety.feed_in_hold`; persisted
    /// in whole steps of [`HOLD_STEP_S`] so that a restart never shortens the hold.
    #[serde(default)]
    pub clear_for_s: f64,
    /// The bank's charge current came near a CCL the host lowered (latched until it falls
    /// clearly below, so the cause does not flap).
    #[serde(default)]
    pub near_lowered_ccl: bool,
}

/// The hold's time is saved in steps of this many seconds (a flash write per step, not per
/// tick).
pub const HOLD_STEP_S: f64 = 10.0;

impl FeedIn {
    /// Whether this memory differs from `before` enough to be written to the state file: any
    /// change but the hold's time within one step.
    pub fn worth_saving(&self, before: &FeedIn) -> bool {
        let step = |s: f64| (s / HOLD_STEP_S).floor();
        let same = FeedIn {
            clear_for_s: before.clear_for_s,
            ..self.clone()
        };
        same != *before || step(self.clear_for_s) != step(before.clear_for_s)
    }

    /// Makes a memory taken back from the state file one the tick can act on; a line for each
    /// value changed (docs/state.md §4). Each fails safe: never leaving feed-in off for good.
    /// - A user's value the setting does not take (it takes 0 or 1) is written back as 1: a
    ///   value the settings service refuses would be retried every tick and never shown, and
    ///   none at all would leave the setting at our 0 once the episode ends.
    /// - An open episode without a user's value (the saved one could not be read: of the wrong
    ///   type, or missing) likewise ends with 1: the episode is kept, never dropped.
    /// - A hold's time that is not finite or below 0 starts over at 0 (−1e6 s would hold
    ///   feed-in off for eleven days, NaN for ever).
    pub fn check_restored(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(value) = self.saved_value.filter(|v| !matches!(v, 0 | 1)) {
            problems.push(format!(
                "feed_in.saved_value: {value} is not a value the feed-in setting takes (0 or \
                 1); 1 (feed-in on) is written back instead"
            ));
            self.saved_value = Some(1);
        }
        if self.disabled_by_us && self.saved_value.is_none() {
            problems.push(
                "feed_in.saved_value: none for the open feed-in episode (disabled_by_us); 1 \
                 (feed-in on) is written back at its end"
                    .to_string(),
            );
            self.saved_value = Some(1);
        }
        if !(self.clear_for_s.is_finite() && self.clear_for_s >= 0.0) {
            problems.push(format!(
                "feed_in.clear_for_s: {} is not a time (finite, 0 s or more); the hold starts \
                 over",
                self.clear_for_s
            ));
            self.clear_for_s = 0.0;
        }
        problems
    }

    /// The memory as the state file keeps it: the hold's time rounded down to its step.
    pub fn to_save(&self) -> FeedIn {
        FeedIn {
            clear_for_s: saved_hold_s(self.clear_for_s),
            ..self.clone()
        }
    }

    /// Takes back the hold's time unrounded (`clear_for_s` as the tick had it) where this
    /// memory's is that time as [`FeedIn::to_save`] keeps it; otherwise (another episode, or a
    /// hold ended since) the memory's own stands.
    pub fn resume_hold(&mut self, clear_for_s: f64) {
        if clear_for_s.is_finite() && saved_hold_s(clear_for_s) == self.clear_for_s {
            self.clear_for_s = clear_for_s;
        }
    }
}

/// The user's value as the state file holds it: a whole number, written as an integer or as a
/// number with no fraction (`1.0`, as a hand edit or another JSON writer may have it), or null.
/// Anything else is refused, naming what it is.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};

    struct Whole;

    impl<'de> Visitor<'de> for Whole {
        type Value = Option<i64>;

        fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
            f.write_str("a whole number (the feed-in setting takes 0 or 1) or null")
        }

        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            // Within i64's range, where every such float is a whole number exactly.
            let whole = v.fract() == 0.0 && (-9.2e18..9.2e18).contains(&v);
            if whole {
                Ok(Some(v as i64))
            } else {
                Err(E::invalid_value(Unexpected::Float(v), &self))
            }
        }
    }

    d.deserialize_option(Whole)
}

/// The hold's time as the state file keeps it: rounded down to its step.
fn saved_hold_s(clear_for_s: f64) -> f64 {
    (clear_for_s / HOLD_STEP_S).floor() * HOLD_STEP_S
}

/// Why an episode started, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The published CCL is 0.
    ChargeStopped,
    /// The host lowered the CCL below the strategy's.
    ChargeLowered,
    /// The strategy asked for feed-in off.
    StrategyRequest,
}

/// Something about feed-in worth one log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedInEvent {
    /// An episode started; the user's value was this.
    Disabled(Cause, i64),
    /// Something turned feed-in back on during an episode (logged once per episode).
    Overridden,
    /// The cause cleared for the hold time: the user's value goes back.
    Restoring(i64),
    /// An episode is wanted but the setting cannot be read, so nothing is written.
    SettingUnknown,
}

/// The episode's memory that is not persisted: what was logged.
#[derive(Clone, Debug, Default)]
pub struct FeedInControl {
    seen_off: bool,
    /// Something turned feed-in back on during this episode (said once per episode).
    overridden: Episode,
    /// The setting could not be read when an episode was wanted (said once until one starts).
    unknown: Episode,
}

/// This tick's causes besides the strategy's request, and whether the limits reach DVCC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostCause {
    /// The published CCL is 0.
    pub charge_stopped: bool,
    /// The host lowered the CCL below the strategy's.
    pub charge_lowered: bool,
    /// The published limits reach DVCC (the service is registered). Until they do, no episode
    /// starts, for any cause: the user's setting is not touched for limits DVCC cannot see.
    pub limits_seen: bool,
}

impl FeedInControl {
    /// Ends the strategy's part in an episode (another strategy is configured than the one
    /// that asked): restored at once unless a host cause holds.
    pub fn strategy_changed(&mut self, memory: &mut FeedIn, hold_s: f64) {
        memory.strategy_off = false;
        memory.clear_for_s = hold_s;
    }

    /// The decision of one tick: the value the setting should have (`None`: leave it), with
    /// an event to log.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &mut self,
        memory: &mut FeedIn,
        request: FeedInRequest,
        host: HostCause,
        setting: Option<i64>,
        dt_s: f64,
        hold_s: f64,
    ) -> (Option<i64>, Option<FeedInEvent>) {
        match request {
            FeedInRequest::Disable => memory.strategy_off = true,
            FeedInRequest::Restore => memory.strategy_off = false,
            FeedInRequest::Keep => {}
        }
        let cause = if host.charge_stopped {
            Some(Cause::ChargeStopped)
        } else if host.charge_lowered {
            Some(Cause::ChargeLowered)
        } else if memory.strategy_off {
            Some(Cause::StrategyRequest)
        } else {
            None
        };
        // A request remembered, not acted on, until the limits are seen; an episode under way
        // goes on.
        let cause = cause.filter(|_| host.limits_seen || memory.disabled_by_us);
        let mut event = None;
        if !memory.disabled_by_us
            && memory
                .saved_value
                .is_some_and(|saved| setting.is_some_and(|now| now == saved || now != 0))
        {
            // A restore under way (from before a restart too) is done: the setting shows the
            // user's value, or something other than our 0, which someone set meanwhile.
            memory.saved_value = None;
        }
        match (cause, memory.disabled_by_us) {
            (Some(cause), false) => match setting {
                Some(now) => {
                    memory.disabled_by_us = true;
                    // A restore still under way keeps the value from before the last episode.
                    let user = *memory.saved_value.get_or_insert(now);
                    memory.clear_for_s = 0.0;
                    self.seen_off = now == 0;
                    self.overridden.end();
                    self.unknown.end();
                    event = Some(FeedInEvent::Disabled(cause, user));
                }
                None if self.unknown.start() => event = Some(FeedInEvent::SettingUnknown),
                None => {}
            },
            (Some(_), true) => memory.clear_for_s = 0.0,
            (None, true) => {
                memory.clear_for_s += dt_s.max(0.0);
                if memory.clear_for_s >= hold_s {
                    memory.disabled_by_us = false;
                    memory.clear_for_s = 0.0;
                    if let Some(user) = memory.saved_value {
                        event = Some(FeedInEvent::Restoring(user));
                    }
                }
            }
            (None, false) => {}
        }
        if memory.disabled_by_us {
            match setting {
                Some(0) => self.seen_off = true,
                Some(_) if self.seen_off && self.overridden.start() => {
                    event = event.or(Some(FeedInEvent::Overridden));
                }
                _ => {}
            }
        }
        if !memory.disabled_by_us && setting.is_some() && setting == memory.saved_value {
            // The user's value is back (read back from the settings): nothing more to restore.
            memory.saved_value = None;
        }
        (
            self.wanted(memory)
                .filter(|&w| setting.is_some_and(|s| s != w)),
            event,
        )
    }

    /// The value the setting should have now.
    pub fn wanted(&self, memory: &FeedIn) -> Option<i64> {
        if memory.disabled_by_us {
            Some(0)
        } else {
            memory.saved_value
        }
    }

    /// At shutdown: the episode ends whatever its cause (nobody will hold the limits any
    /// more); returns the user's value to write back. Kept in memory until written.
    pub fn release(&mut self, memory: &mut FeedIn) -> Option<i64> {
        memory.disabled_by_us = false;
        memory.strategy_off = false;
        memory.saved_value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FeedInRequest::*;

    const NONE: HostCause = HostCause {
        charge_stopped: false,
        charge_lowered: false,
        limits_seen: true,
    };
    const STOPPED: HostCause = HostCause {
        charge_stopped: true,
        charge_lowered: false,
        limits_seen: true,
    };
    const UNSEEN: HostCause = HostCause {
        limits_seen: false,
        ..NONE
    };

    #[test]
    fn a_strategys_request_waits_until_the_limits_are_seen() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        // Not registered yet (another program holds the name): the request is remembered,
        // the user's setting untouched.
        assert_eq!(
            c.decide(&mut m, Disable, UNSEEN, Some(1), 1.0, 3.0),
            (None, None)
        );
        assert_eq!(
            c.decide(&mut m, Keep, UNSEEN, Some(1), 1.0, 3.0),
            (None, None)
        );
        assert_eq!(m.saved_value, None);
        // Registered: the episode starts without another request.
        let (write, event) = c.decide(&mut m, Keep, NONE, Some(1), 1.0, 3.0);
        assert_eq!(write, Some(0));
        assert_eq!(
            event,
            Some(FeedInEvent::Disabled(Cause::StrategyRequest, 1))
        );
        // An episode under way goes on while the limits are not seen (a reconnect).
        assert_eq!(c.decide(&mut m, Keep, UNSEEN, Some(0), 1.0, 3.0).0, None);
        assert!(m.disabled_by_us);
    }

    #[test]
    fn a_host_cause_disables_then_restores_after_the_hold_time() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(1), 1.0, 3.0).0, None);
        let (write, event) = c.decide(&mut m, Keep, STOPPED, Some(1), 1.0, 3.0);
        assert_eq!(write, Some(0));
        assert_eq!(event, Some(FeedInEvent::Disabled(Cause::ChargeStopped, 1)));
        assert_eq!(c.decide(&mut m, Keep, STOPPED, Some(0), 1.0, 3.0).0, None);
        // Cleared: held 3 s before the user's value goes back.
        for _ in 0..2 {
            assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 3.0).0, None);
        }
        let (write, event) = c.decide(&mut m, Keep, NONE, Some(0), 1.0, 3.0);
        assert_eq!((write, event), (Some(1), Some(FeedInEvent::Restoring(1))));
        // The write failed: retried while the setting does not show it.
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 3.0).0, Some(1));
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(1), 1.0, 3.0).0, None);
        assert_eq!(m, FeedIn::default());
    }

    #[test]
    fn never_writes_without_knowing_the_users_value() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        let (write, event) = c.decide(&mut m, Keep, STOPPED, None, 1.0, 3.0);
        assert_eq!((write, event), (None, Some(FeedInEvent::SettingUnknown)));
        assert_eq!(
            c.decide(&mut m, Keep, STOPPED, None, 1.0, 3.0),
            (None, None)
        );
        assert!(!m.disabled_by_us);
    }

    #[test]
    fn re_disables_if_someone_turned_it_back_on_and_logs_once() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        c.decide(&mut m, Disable, NONE, Some(1), 1.0, 3.0);
        c.decide(&mut m, Keep, NONE, Some(0), 1.0, 3.0);
        let (write, event) = c.decide(&mut m, Keep, NONE, Some(1), 1.0, 3.0);
        assert_eq!((write, event), (Some(0), Some(FeedInEvent::Overridden)));
        assert_eq!(
            c.decide(&mut m, Keep, NONE, Some(1), 1.0, 3.0),
            (Some(0), None)
        );
        assert_eq!(m.saved_value, Some(1), "the value from before the episode");
    }

    #[test]
    fn a_user_who_had_it_off_keeps_it_off() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        assert_eq!(c.decide(&mut m, Disable, NONE, Some(0), 1.0, 0.0).0, None);
        assert_eq!(c.decide(&mut m, Restore, NONE, Some(0), 1.0, 0.0).0, None);
        assert_eq!(m, FeedIn::default());
    }

    #[test]
    fn survives_a_restart_and_is_released_at_shutdown() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        c.decide(&mut m, Keep, STOPPED, Some(1), 1.0, 60.0);
        let text = serde_json::to_string(&m).unwrap();
        let mut after: FeedIn = serde_json::from_str(&text).unwrap();
        let mut c = FeedInControl::default();
        assert_eq!(
            c.decide(&mut after, Keep, STOPPED, Some(0), 1.0, 60.0).0,
            None
        );
        assert!(after.disabled_by_us);
        assert_eq!(c.release(&mut after), Some(1));
        // An old state file without `strategy_off` still reads.
        let old: FeedIn =
            serde_json::from_str(r#"{"disabled_by_us": true, "saved_value": 1}"#).unwrap();
        assert!(old.disabled_by_us && !old.strategy_off);
    }

    /// docs/state.md §4: `1.0` is 1; a value that is no whole number is not read, and an open
    /// episode without a value keeps going and ends with 1 (it once was dropped, leaving
    /// feed-in at our 0 for good).
    #[test]
    fn a_bad_saved_value_never_drops_an_open_episode() {
        let read = |value: &str| {
            serde_json::from_str::<FeedIn>(&format!(
                r#"{{"disabled_by_us": true, "saved_value": {value}}}"#
            ))
        };
        assert_eq!(read("1.0").unwrap().saved_value, Some(1));
        assert_eq!(read("0.0").unwrap().saved_value, Some(0));
        assert_eq!(read("7.0").unwrap().saved_value, Some(7));
        assert_eq!(read("null").unwrap().saved_value, None);
        for bad in [r#""1""#, "0.5", "1e308", "true", "[1]"] {
            let err = read(bad).unwrap_err().to_string();
            assert!(err.contains("a whole number"), "{bad}: {err}");
        }
        // What the state file's reader keeps of `"1"`: the episode, without its value.
        let mut m = FeedIn {
            disabled_by_us: true,
            ..FeedIn::default()
        };
        let problems = m.check_restored();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("feed_in.saved_value: none"),
            "{problems:?}"
        );
        assert_eq!(m.saved_value, Some(1));
        // The episode holds feed-in at 0 while its cause holds, then writes 1 back.
        let mut c = FeedInControl::default();
        assert_eq!(c.decide(&mut m, Keep, STOPPED, Some(0), 1.0, 2.0).0, None);
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 2.0).0, None);
        let (write, event) = c.decide(&mut m, Keep, NONE, Some(0), 1.0, 2.0);
        assert_eq!((write, event), (Some(1), Some(FeedInEvent::Restoring(1))));
        // Without an episode, no value is none: nothing to restore.
        let mut idle = FeedIn::default();
        assert!(idle.check_restored().is_empty());
        assert_eq!(idle.saved_value, None);
    }

    #[test]
    fn another_strategy_restores_at_once_when_no_host_cause_holds() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        c.decide(&mut m, Disable, NONE, Some(1), 1.0, 60.0);
        let mut c = FeedInControl::default();
        c.strategy_changed(&mut m, 60.0);
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 60.0).0, Some(1));
    }

    #[test]
    fn a_restore_left_from_before_a_restart_never_overwrites_a_users_change() {
        // Stopped with the restore written but not read back: the value is still kept.
        let mut m = FeedIn {
            disabled_by_us: false,
            saved_value: Some(1),
            ..FeedIn::default()
        };
        let mut c = FeedInControl::default();
        // Meanwhile the user chose 2 (or anything but our 0): theirs stands, nothing written.
        assert_eq!(
            c.decide(&mut m, Keep, NONE, Some(2), 1.0, 60.0),
            (None, None)
        );
        assert_eq!(m.saved_value, None);
        // A later episode saves what the setting shows then, not the old value.
        let (write, event) = c.decide(&mut m, Keep, STOPPED, Some(2), 1.0, 60.0);
        assert_eq!(write, Some(0));
        assert_eq!(event, Some(FeedInEvent::Disabled(Cause::ChargeStopped, 2)));
        // Still showing our 0: the restore under way goes on.
        let mut m = FeedIn {
            saved_value: Some(1),
            ..FeedIn::default()
        };
        assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 60.0).0, Some(1));
    }

    #[test]
    fn the_hold_survives_a_restart_in_whole_steps_and_is_saved_once_a_step() {
        let (mut c, mut m) = (FeedInControl::default(), FeedIn::default());
        c.decide(&mut m, Keep, STOPPED, Some(1), 1.0, 60.0);
        let mut saves = 0;
        for _ in 0..35 {
            let before = m.clone();
            assert_eq!(c.decide(&mut m, Keep, NONE, Some(0), 1.0, 60.0).0, None);
            saves += usize::from(m.worth_saving(&before));
        }
        assert_eq!(saves, 3, "at 10, 20 and 30 s");
        // Restarted after 35 s clear: the saved 30 s count, so the hold is never shorter.
        let text = serde_json::to_string(&m.to_save()).unwrap();
        let mut after: FeedIn = serde_json::from_str(&text).unwrap();
        assert_eq!(after.clear_for_s, 30.0);
        let mut c = FeedInControl::default();
        for _ in 0..29 {
            assert_eq!(c.decide(&mut after, Keep, NONE, Some(0), 1.0, 60.0).0, None);
        }
        assert_eq!(
            c.decide(&mut after, Keep, NONE, Some(0), 1.0, 60.0).0,
            Some(1)
        );
    }
}
