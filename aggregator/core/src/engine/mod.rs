//! One tick of docs/tick.md §1 without the bus: batteries and devices in, everything to publish and
//! every request out.
//!
//! ```text
//! readings -> bank (merge) -> current source -> Coulomb counter -> strategy -> envelope
//!          -> degraded-bank policy -> outputs + requests (feed-in write, state to save)
//! ```
//!
//! The engine owns the plugins and the counter; it reads no clock (date and dt come in) and
//! touches no file or bus. The scheduler feeds it and carries out what it returns.

mod degrade;
use degrade::OnLostBlocks;
#[cfg(test)]
mod tests;
mod view;

use abi_stable::std_types::{ROption, RString, RVec};
use plugin_api::{
    BankView, BatteryState, BatteryState_NE, BatteryView, CurrentInputs, CurrentSourceBox,
    DcSourceView, LocalDate, ShuntView, SocReset, SolarChargerView, StrategyBox, StrategyOutput,
    VebusView,
};

use crate::bank::{merge, Member, Merged};
use crate::coulomb::CoulombCounter;
use crate::envelope::{BankFacts, Bounds, Enforced, Limits, SafetyEnvelope};
use crate::episode::{Edge, Episode, Episodes};
use crate::error::Error;
use crate::feedin::{FeedIn, FeedInControl, FeedInEvent, HostCause};
use crate::guard::{Acts, Guard, GuardBounds, Guarded};
use crate::memory::Memory;
use crate::presence::Battery;
use crate::reading::{plausible_bank_current, ALARMS};
use crate::state::{beyond_capacity, Latches, State, StrategyState};

/// How far below the strategy's CCL the host must have lowered it to count as lowered (A);
/// 2 % of the strategy's CCL where that is more.
const LOWERED_MARGIN_A: f64 = 1.0;

/// How near a lowered CCL the bank's charge current must come for feed-in to go off (A); 5 %
/// of the CCL where that is more. DVCC holds the chargers to the CCL only while feed-in is
/// off, so a current that reaches it is the sign that surplus PV would push past it. The
/// cause holds until the current falls below twice this margin under the CCL.
const NEAR_CCL_MARGIN_A: f64 = 2.0;

/// `batteries.on_lost`.
#[derive(Clone, Copy, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnLost {
    /// CCL 0, DCL scaled to the online batteries.
    BlockCharge,
    /// CCL 0, DCL 0.
    BlockAll,
    /// Both limits scaled to the online batteries.
    Continue,
}

/// Everything one tick needs besides the batteries.
#[derive(Clone, Debug)]
pub struct TickInputs {
    /// Cells in series per battery.
    pub cells: u32,
    /// Batteries the bank should have.
    pub expected: u32,
    /// Batteries left out of the merge for their cell count (another nominal voltage):
    /// counted as not online.
    pub left_out: Vec<String>,
    /// Multis/Quattros.
    pub vebus: Vec<VebusView>,
    /// Solar chargers.
    pub solar_chargers: Vec<SolarChargerView>,
    /// SmartShunts, battery monitors first.
    pub smartshunts: Vec<ShuntView>,
    /// Every other DC device (Multi RS, inverters, chargers, Orion XS, alternators, DC
    /// sources, loads, systems), current positive = into the bank.
    pub dc_sources: Vec<DcSourceView>,
    /// `/Soc` of the battery monitor `soc.source` names: published instead of the counter's
    /// or the batteries' SoC while valid.
    pub monitor_soc: Option<f64>,
    /// `/SystemState/LowSoc` of `com.victronenergy.system`.
    pub low_soc: Option<i64>,
    /// `/Settings/CGwacs/OvervoltageFeedIn` now.
    pub feed_in_setting: Option<i64>,
    /// Today, local time.
    pub date: LocalDate,
    /// Seconds since the last tick (monotonic).
    pub dt_s: f64,
}

/// Something worth one log line, reported on change only.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The current source gave no value: the BMS current is used from now on.
    CurrentFallbackStarted,
    /// The current source is back, after this many ticks on the BMS current.
    CurrentFallbackEnded(u64),
    /// The strategy faulted (first tick of an episode), with its message.
    StrategyFault(String),
    /// The strategy is good again after this many faults in a row.
    StrategyRecovered(u32),
    /// The strategy faulted this many times in a row (`safety.plugin_failures`): discharging
    /// stopped until its first good result.
    DischargeStoppedByFaults(u32),
    /// A strategy value was clamped to a `safety` bound (first tick of an episode).
    Clamped(Vec<&'static str>),
    /// `/Info/ChargeMode` changed.
    ModeChanged(String),
    /// `safety.max_charge_voltage` is below `cells` × `safety.min_cell_voltage`: not a bank
    /// voltage, so left out of the envelope for the whole run (said once).
    ChargeVoltageIgnored {
        /// The bound as configured, V.
        bound_v: f64,
        /// Cells in series the bank has.
        cells: u32,
        /// `safety.min_cell_voltage`.
        min_cell_v: f64,
    },
    /// The counter was started from the BMS SoC (no saved value).
    CounterStartedFromBms(f64),
    /// The charge taken back from the state file without the capacity it refers to is more
    /// than the whole bank holds: dropped, the counter starts as with no saved value
    /// (docs/state.md §4).
    SavedChargeDropped {
        /// The charge restored, Ah.
        charge_ah: f64,
        /// The first whole bank's installed capacity, Ah.
        capacity_ah: f64,
    },
    /// Feed-in: an episode started or ended, was overridden, or cannot start.
    FeedIn(FeedInEvent),
    /// No battery gives any temperature: the temperature windows cannot act (once).
    NoTemperature,
    /// A battery online publishes no charge or discharge limit of its own: it caps nothing
    /// (once per battery name).
    NoPackLimit(String),
    /// A battery online publishes no data for these host bounds (names as in
    /// `/System/Batteries`' `bms_only`): they rest on its BMS alone (once per battery name).
    BmsOnly(String, Vec<&'static str>),
}

/// The outcome of one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The merged values of the online and stale batteries.
    pub merged: Merged,
    /// Batteries online.
    pub online: u32,
    /// Names of the lost batteries.
    pub lost: Vec<String>,
    /// Names of the batteries left out for their cell count.
    pub left_out: Vec<String>,
    /// Expected batteries never found (`batteries.expected` minus those known): a degraded
    /// bank as if they were lost (docs/discovery.md §5).
    pub missing: u32,
    /// `/Dc/0/Current` (from the current source, else the BMS sum).
    pub current_a: Option<f64>,
    /// `/Dc/0/Power`.
    pub power_w: Option<f64>,
    /// `/Soc`.
    pub soc_pct: Option<f64>,
    /// `/Capacity`.
    pub capacity_ah: Option<f64>,
    /// `/ConsumedAmphours`.
    pub consumed_ah: Option<f64>,
    /// `/TimeToGo`.
    pub time_to_go_s: Option<f64>,
    /// The three limits as published.
    pub limits: Limits,
    /// `/Info/ChargeMode`.
    pub mode: String,
    /// A value to write to the feed-in setting now.
    pub feed_in_write: Option<i64>,
    /// True when the persisted state changed enough to be written now.
    pub save_state: bool,
    /// Log-worthy changes.
    pub events: Vec<Event>,
}

/// Settings of the engine from `config.yaml`.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The safety bounds.
    pub bounds: Bounds,
    /// The host's cell, temperature and pack-limit rules.
    pub guard: GuardBounds,
    /// `safety.feed_in_hold`: seconds without a cause before feed-in is restored.
    pub feed_in_hold_s: f64,
    /// `batteries.on_lost`.
    pub on_lost: OnLost,
    /// `soc.own_counter`.
    pub own_counter: bool,
    /// `soc.efficiency`.
    pub efficiency: f64,
    /// `soc.save_precision`.
    pub save_precision: f64,
}

/// The bank at the start of a tick: the merge of the batteries online or held, and counts.
#[derive(Clone, Debug)]
struct BankSnapshot {
    merged: Merged,
    /// Batteries online or held (stale), which the merge is made of.
    active: usize,
    online: u32,
    /// Batteries held with their last reading.
    stale: u32,
    lost: Vec<String>,
    left_out: Vec<String>,
    /// Expected batteries never found.
    missing: u32,
}

impl BankSnapshot {
    fn of(batteries: &[Battery], expected: u32, left_out: &[String]) -> Self {
        let active: Vec<Member<'_>> = batteries
            .iter()
            .filter(|b| b.state != BatteryState::Lost)
            .map(|b| Member {
                name: &b.name,
                reading: &b.reading,
            })
            .collect();
        let online = batteries
            .iter()
            .filter(|b| b.state == BatteryState::Online)
            .count() as u32;
        let lost = batteries
            .iter()
            .filter(|b| b.state == BatteryState::Lost)
            .map(|b| b.name.clone())
            .collect();
        let stale = batteries
            .iter()
            .filter(|b| b.state == BatteryState::Stale)
            .count() as u32;
        let known = u32::try_from(batteries.len() + left_out.len()).unwrap_or(u32::MAX);
        BankSnapshot {
            merged: merge(&active),
            active: active.len(),
            online,
            stale,
            lost,
            left_out: left_out.to_vec(),
            missing: expected.saturating_sub(known),
        }
    }

    /// The bank's batteries: those known (held, lost and left out included) and the expected
    /// ones never found. Never fewer than those held, however many more were found than
    /// `batteries.expected` says (packs that came and went under new names are held for
    /// `hold_for` too).
    fn total(&self) -> u32 {
        let known = self.active + self.lost.len() + self.left_out.len();
        u32::try_from(known)
            .unwrap_or(u32::MAX)
            .saturating_add(self.missing)
    }

    /// A battery lost, left out or an expected one never found (docs/battery-states.md §8).
    fn degraded(&self) -> bool {
        !self.lost.is_empty() || !self.left_out.is_empty() || self.missing > 0
    }
}

/// The published SoC and what goes with it.
struct SocOutputs {
    soc_pct: Option<f64>,
    capacity_ah: Option<f64>,
    consumed_ah: Option<f64>,
    time_to_go_s: Option<f64>,
}

/// What the feed-in step decided this tick.
struct FeedInStep {
    /// A value to write to the setting now.
    write: Option<i64>,
    /// The feed-in memory changed enough to be saved.
    save_state: bool,
    event: Option<Event>,
}

/// SoC and what goes with it from a battery monitor's `/Soc`, over the bank's capacity; the
/// time to go stays the batteries'.
fn monitor_soc(soc_pct: f64, merged: &Merged) -> SocOutputs {
    let installed = merged.installed_capacity_ah;
    let remaining = installed * soc_pct / 100.0;
    SocOutputs {
        soc_pct: Some(soc_pct),
        capacity_ah: Some(remaining),
        consumed_ah: Some(-(installed - remaining).abs()),
        time_to_go_s: merged.time_to_go_s,
    }
}

/// The tick's owner of plugins, counter, envelope and feed-in memory.
pub struct Engine {
    settings: Settings,
    strategy_name: String,
    /// The strategy, or why its constructor failed.
    strategy: Result<StrategyBox, Error>,
    /// The strategy state saved by an earlier run, kept to be saved again unchanged while the
    /// strategy could not be built (so fixing the config later loses nothing).
    unbuilt_state: Option<StrategyState>,
    /// `None` when its constructor failed.
    current_source: Option<CurrentSourceBox>,
    envelope: SafetyEnvelope,
    counter: Option<CoulombCounter>,
    /// The capacity the counter's charge refers to (`None` until known).
    counter_capacity: Option<f64>,
    feed_in: FeedIn,
    feed_in_control: FeedInControl,
    guard: Guard,
    /// The limits published on the last tick with a battery online: they stand while every
    /// battery is held (drivers restarting), lowered only by a cause that protects something.
    last_online: Option<Limits>,
    /// The strategy's faults in a row have reached `safety.plugin_failures`.
    failures_stop: Episode,
    /// The published limits reach DVCC (the service is registered): only then may the host's
    /// own causes touch feed-in.
    publishing: bool,
    /// No battery gives a temperature (said once per run).
    no_temperature: Episode,
    /// Batteries named for publishing no limit of their own (once per run each).
    no_limit: Episodes,
    /// Batteries named for leaving bounds to their BMS alone (once per run each).
    bms_only: Episodes,
    fallback_ticks: u64,
    /// A strategy value is clamped to a `safety` bound.
    clamping: Episode,
    /// `safety.max_charge_voltage` is below the bank's cells × `safety.min_cell_voltage`, so
    /// left out (said once per run).
    charge_voltage_ignored: Episode,
    mode: String,
}

impl Engine {
    /// An engine with a fresh state.
    pub fn new(
        settings: Settings,
        strategy_name: &str,
        strategy: StrategyBox,
        current_source: CurrentSourceBox,
    ) -> Self {
        Self::with_failures(settings, strategy_name, Ok(strategy), Ok(current_source))
    }

    /// An engine whose plugins may have failed to build (`Err` holds the constructor's error).
    /// Without a strategy every tick is a strategy fault of docs/guard.md §3: CCL 0, and DCL 0 as
    /// no good limits exist; the mode names the error. Without a current source every tick uses
    /// the batteries' own current, as docs/current.md §1 says for a source that has no value.
    pub fn with_failures(
        settings: Settings,
        strategy_name: &str,
        strategy: Result<StrategyBox, Error>,
        current_source: Result<CurrentSourceBox, Error>,
    ) -> Self {
        Self {
            settings,
            strategy_name: strategy_name.to_string(),
            strategy,
            unbuilt_state: None,
            current_source: current_source.ok(),
            envelope: SafetyEnvelope::new(settings.bounds),
            counter: None,
            counter_capacity: None,
            feed_in: FeedIn::default(),
            feed_in_control: FeedInControl::default(),
            guard: Guard::new(settings.guard),
            last_online: None,
            failures_stop: Episode::default(),
            publishing: true,
            no_temperature: Episode::default(),
            no_limit: Episodes::default(),
            bms_only: Episodes::default(),
            fallback_ticks: 0,
            clamping: Episode::default(),
            charge_voltage_ignored: Episode::default(),
            mode: String::new(),
        }
    }

    /// Takes back a saved state; returns a line to log for each part that could not be used.
    pub fn restore(&mut self, state: &State) -> Vec<String> {
        let (state, mut problems) = state.checked();
        // With the counter off, a charge saved while it ran is not taken back: it would run
        // and reset unseen, and the strategies would be given its SoC instead of the one
        // published.
        if let Some(charge) = state.charge_ah.filter(|_| self.settings.own_counter) {
            self.counter = Some(self.new_counter(charge));
            self.counter_capacity = state.capacity_ah;
        }
        self.feed_in = state.feed_in.clone();
        self.guard
            .set_latches(state.latches.high_cell, state.latches.low_cell);
        let strategy = match &mut self.strategy {
            Ok(strategy) => strategy,
            Err(_) => {
                self.unbuilt_state = state.strategy.clone();
                return problems;
            }
        };
        match &state.strategy {
            Some(saved) if saved.plugin == self.strategy_name => {
                if let Err(err) = strategy
                    .restore_state(saved.state.as_str().into())
                    .into_result()
                {
                    problems.push(format!(
                        "strategy state not restored ({err}); starting fresh"
                    ));
                    // The fresh strategy does not know it asked for feed-in off, and would
                    // never ask for it back.
                    self.feed_in_control
                        .strategy_changed(&mut self.feed_in, self.settings.feed_in_hold_s);
                }
            }
            Some(saved) => {
                problems.push(format!(
                    "saved strategy state belongs to `{}`, not `{}`; starting fresh",
                    saved.plugin, self.strategy_name
                ));
                // The old strategy's feed-in request is not this one's to keep.
                self.feed_in_control
                    .strategy_changed(&mut self.feed_in, self.settings.feed_in_hold_s);
            }
            None => {}
        }
        problems
    }

    /// The state to persist now.
    pub fn state(&self) -> State {
        let strategy = match &self.strategy {
            Ok(strategy) => match strategy.save_state().into_result() {
                Ok(text) => Some(StrategyState {
                    plugin: self.strategy_name.clone(),
                    state: text.into(),
                }),
                Err(_) => None,
            },
            Err(_) => self.unbuilt_state.clone(),
        };
        State {
            charge_ah: self.counter.as_ref().map(CoulombCounter::charge_ah),
            capacity_ah: self.counter_capacity,
            strategy,
            feed_in: self.feed_in.to_save(),
            latches: {
                let (high_cell, low_cell) = self.guard.latches();
                Latches {
                    high_cell,
                    low_cell,
                }
            },
            last_plausible_day: None,
        }
    }

    /// What the engine carries from tick to tick besides [`Engine::state`] that changes what
    /// it publishes: never saved, but recorded where a run of the flight recording starts.
    pub fn memory(&self) -> Memory {
        Memory {
            last_good: self.envelope.last_good(),
            faults_in_a_row: self.envelope.faults_in_a_row(),
            last_online: self.last_online,
            shares: self.guard.shares(),
            feed_in_clear_for_s: self.feed_in.clear_for_s,
        }
    }

    /// Takes back what [`Engine::memory`] gave, after [`Engine::restore`] took back the state
    /// of the same moment: a replay then goes on where the engine was, not from a fresh start.
    pub fn restore_memory(&mut self, memory: &Memory) {
        self.envelope
            .resume(memory.last_good, memory.faults_in_a_row);
        // Not a new episode of faults: its start was said before.
        let stop = memory.faults_in_a_row >= self.settings.bounds.plugin_failures;
        self.failures_stop.follow(stop);
        self.last_online = memory.last_online.filter(Limits::usable);
        self.guard.resume_shares(&memory.shares);
        self.feed_in.resume_hold(memory.feed_in_clear_for_s);
    }

    /// Records that [`Engine::state`] was written.
    pub fn state_saved(&mut self) {
        if let Some(counter) = &mut self.counter {
            counter.mark_saved();
        }
    }

    fn new_counter(&self, charge_ah: f64) -> CoulombCounter {
        CoulombCounter::new(
            charge_ah,
            self.settings.efficiency,
            self.settings.save_precision,
        )
    }

    /// One tick: the bank's snapshot, then measure, count, strategy, envelope, degrade,
    /// requests and mode, each a step below.
    pub fn tick(&mut self, batteries: &[Battery], inputs: &TickInputs) -> Outcome {
        let bank = BankSnapshot::of(batteries, inputs.expected, &inputs.left_out);
        // Nothing to compute from: fail safe without asking the plugins (a bank with no
        // battery is not a plugin fault).
        if bank.active == 0 {
            return self.nothing_online(bank, inputs);
        }
        let mut events = Vec::new();
        let ((current_a, power_w), fallback) = self.measure(&bank.merged, inputs);
        events.extend(fallback);
        events.extend(self.count(&bank, inputs, current_a));
        let view = self.bank_view(batteries, &bank, inputs, current_a, power_w);
        let result = self.run_strategy(&view);
        let (enforced, envelope_events) = self.enforce(&result, &view, &bank.merged, inputs.cells);
        events.extend(envelope_events);
        // Degraded first, so that a stale bank is scaled to the batteries online or capped by
        // their own limits, whichever is lower, and not both at once.
        let (degraded, on_lost) = if bank.online == 0 {
            (
                self.hold_last(&enforced, &view, &bank, inputs.expected),
                OnLostBlocks::default(),
            )
        } else {
            self.degrade(enforced.limits, &bank, inputs.expected)
        };
        let voltage_v = bank.merged.voltage_v.unwrap_or(f64::NAN);
        let latches = self.guard.latches();
        let mut guarded =
            self.guard
                .apply(degraded, batteries, voltage_v, inputs.dt_s, inputs.cells);
        self.apply_on_lost(&mut guarded, on_lost, batteries);
        let latches_changed = self.guard.latches() != latches;
        events.extend(self.note_guard(&guarded.acts, batteries));
        let limits = guarded.limits;
        let mut save_state = latches_changed;
        save_state |= self.carry_out(&result, &bank);
        let (request, strategy_ccl) = match &result {
            Ok(out) => (out.feed_in, out.ccl_a),
            Err(_) => (plugin_api::FeedInRequest::Keep, f64::NAN),
        };
        // Lowered by the host: below what the strategy asked (a CCL the strategy itself
        // asked for leaves feed-in to the strategy). The margin keeps a cap that only
        // approaches the strategy's (smoothed shares at equal loads) from holding it.
        let lowered = strategy_ccl.is_finite()
            && limits.ccl_a < strategy_ccl - LOWERED_MARGIN_A.max(0.02 * strategy_ccl);
        let was_near = self.feed_in.near_lowered_ccl;
        let near = self.near_lowered_ccl(lowered, limits.ccl_a, current_a);
        save_state |= near != was_near;
        let host = HostCause {
            charge_stopped: limits.ccl_a <= 0.0,
            charge_lowered: near,
            limits_seen: self.publishing,
        };
        let feed_in = self.feed_in(request, host, inputs);
        save_state |= feed_in.save_state;
        events.extend(feed_in.event);
        let recovering =
            guarded.acts.recovering_a.is_some() || guarded.acts.recovering_stuck_a.is_some();
        let mut mode = self.mode(&result, &enforced, &bank, inputs.expected, recovering);
        let acting = guarded.acts.describe();
        if !acting.is_empty() {
            mode.push_str("; ");
            mode.push_str(&acting);
        }
        let stops = self.stop_causes(&view, &bank, inputs.expected, &guarded.acts);
        if !stops.is_empty() {
            mode.push_str("; ");
            mode.push_str(&stops);
        }
        // Said once, whole: a rule that holds must not make it alternate tick by tick.
        events.extend(self.set_mode(&mode));
        if bank.online > 0 {
            self.last_online = Some(limits);
        }
        let (mut soc, soc_to_save) = self.soc(&bank.merged, current_a, inputs.low_soc);
        save_state |= soc_to_save;
        if let Some(soc_pct) = inputs.monitor_soc.filter(|s| (0.0..=100.0).contains(s)) {
            soc = monitor_soc(soc_pct, &bank.merged);
        }
        let mut merged = bank.merged;
        raise_alarms(&mut merged.alarms, &guarded.acts);
        Outcome {
            merged,
            online: bank.online,
            lost: bank.lost,
            left_out: bank.left_out,
            missing: bank.missing,
            current_a,
            power_w,
            soc_pct: soc.soc_pct,
            capacity_ah: soc.capacity_ah,
            consumed_ah: soc.consumed_ah,
            time_to_go_s: soc.time_to_go_s,
            limits,
            mode,
            feed_in_write: feed_in.write,
            save_state,
            events,
        }
    }

    /// No battery online or held: CCL and DCL 0; the last good CVL stays, so DVCC keeps a
    /// sane value.
    fn nothing_online(&mut self, bank: BankSnapshot, inputs: &TickInputs) -> Outcome {
        let mode = "No battery online: charge and discharge stopped".to_string();
        let mut events: Vec<Event> = self.set_mode(&mode).into_iter().collect();
        let stopped = HostCause {
            charge_stopped: true,
            charge_lowered: false,
            limits_seen: self.publishing,
        };
        let feed_in = self.feed_in(plugin_api::FeedInRequest::Keep, stopped, inputs);
        events.extend(feed_in.event);
        let cvl_v = self.envelope.last_good().map_or(0.0, |l| l.cvl_v);
        Outcome {
            merged: bank.merged,
            online: bank.online,
            lost: bank.lost,
            left_out: bank.left_out,
            missing: bank.missing,
            current_a: None,
            power_w: None,
            soc_pct: None,
            capacity_ah: None,
            consumed_ah: None,
            time_to_go_s: None,
            limits: Limits {
                cvl_v,
                ccl_a: 0.0,
                dcl_a: 0.0,
            },
            mode,
            feed_in_write: feed_in.write,
            save_state: feed_in.save_state,
            events,
        }
    }

    /// Whether the bank's charge current has come near a CCL the host lowered (latched with a
    /// margin, kept in the feed-in memory).
    fn near_lowered_ccl(&mut self, lowered: bool, ccl_a: f64, current_a: Option<f64>) -> bool {
        let margin = NEAR_CCL_MARGIN_A.max(0.05 * ccl_a);
        let current = current_a.filter(|c| c.is_finite()).unwrap_or(0.0);
        let near = &mut self.feed_in.near_lowered_ccl;
        if !lowered || ccl_a <= 0.0 {
            // A CCL of 0 is its own cause.
            *near = false;
        } else if current >= ccl_a - margin {
            *near = true;
        } else if current < ccl_a - 2.0 * margin {
            *near = false;
        }
        *near
    }

    /// Whether the published limits reach DVCC (the daemon: once its service is registered).
    /// Until they do, no feed-in episode starts, for the host's causes or the strategy's
    /// request (kept until then): a CCL nobody sees does not hold the chargers, a start would
    /// otherwise turn feed-in off on every bank, and another program may still hold the name.
    pub fn set_publishing(&mut self, publishing: bool) {
        self.publishing = publishing;
    }

    /// The feed-in setting read back after a restore was written (at shutdown): once it shows
    /// the user's value, that value is no longer kept to be written again.
    pub fn feed_in_read_back(&mut self, setting: i64) {
        if !self.feed_in.disabled_by_us && self.feed_in.saved_value == Some(setting) {
            self.feed_in.saved_value = None;
        }
    }

    /// The feed-in step: the write to make, whether the memory is worth saving, its log line.
    fn feed_in(
        &mut self,
        request: plugin_api::FeedInRequest,
        host: HostCause,
        inputs: &TickInputs,
    ) -> FeedInStep {
        let host = if self.publishing {
            host
        } else {
            HostCause {
                charge_stopped: false,
                charge_lowered: false,
                limits_seen: false,
            }
        };
        let before = self.feed_in.clone();
        let (write, event) = self.feed_in_control.decide(
            &mut self.feed_in,
            request,
            host,
            inputs.feed_in_setting,
            inputs.dt_s,
            self.settings.feed_in_hold_s,
        );
        FeedInStep {
            write,
            save_state: self.feed_in.worth_saving(&before),
            event: event.map(Event::FeedIn),
        }
    }

    /// At shutdown: ends a feed-in episode whatever its cause, as nobody holds the limits
    /// any more; returns the user's value to write back.
    pub fn release_feed_in(&mut self) -> Option<i64> {
        self.feed_in_control.release(&mut self.feed_in)
    }

    /// The once-only log lines of the guard: no temperature at all, a pack without limits.
    fn note_guard(&mut self, acts: &Acts, batteries: &[Battery]) -> Vec<Event> {
        let mut events = Vec::new();
        if acts.no_temperature && self.no_temperature.start() {
            events.push(Event::NoTemperature);
        }
        for b in batteries.iter().filter(|b| b.state == BatteryState::Online) {
            let only = crate::guard::BmsOnly::of(&b.reading);
            if !only.is_empty() && self.bms_only.start(&b.name) {
                events.push(Event::BmsOnly(b.name.clone(), only.names().collect()));
            }
        }
        if self.settings.guard.bms_limits == crate::guard::BmsLimits::Ignore {
            return events;
        }
        for b in batteries.iter().filter(|b| b.state == BatteryState::Online) {
            let r = &b.reading;
            let none = r.max_charge_current_a.is_none() || r.max_discharge_current_a.is_none();
            if none && self.no_limit.start(&b.name) {
                events.push(Event::NoPackLimit(b.name.clone()));
            }
        }
        events
    }

    /// The counter: started from the BMS SoC once the whole bank is there (a bank still
    /// coming together would start it from a part), kept at the same SoC when the bank's
    /// capacity changes, then integrated. A charge restored without its capacity is checked
    /// against the first whole bank's, which is known only then.
    fn count(
        &mut self,
        bank: &BankSnapshot,
        inputs: &TickInputs,
        current_a: Option<f64>,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let capacity = bank.merged.installed_capacity_ah;
        // A battery left out for its cell count is not in the merge: it never comes online,
        // and the bank is whole without it.
        let left_out = u32::try_from(inputs.left_out.len()).unwrap_or(u32::MAX);
        let complete = (bank.active as u32).saturating_add(left_out) >= inputs.expected.max(1);
        let unchecked = self.counter_capacity.is_none() && capacity > 0.0 && complete;
        if let Some(charge_ah) = (self.counter.as_ref().map(CoulombCounter::charge_ah))
            .filter(|&charge| unchecked && beyond_capacity(charge, capacity))
        {
            self.counter = None;
            events.push(Event::SavedChargeDropped {
                charge_ah,
                capacity_ah: capacity,
            });
        }
        if self.settings.own_counter && self.counter.is_none() && capacity > 0.0 && complete {
            if let Some(soc) = bank.merged.soc_pct {
                let charge = soc / 100.0 * capacity;
                self.counter = Some(self.new_counter(charge));
                self.counter_capacity = Some(capacity);
                events.push(Event::CounterStartedFromBms(soc));
            }
        }
        let Some(counter) = &mut self.counter else {
            return events;
        };
        if capacity <= 0.0 {
            return events;
        }
        match self.counter_capacity {
            Some(before) if before != capacity => {
                counter.rescale(capacity / before);
                self.counter_capacity = Some(capacity);
            }
            Some(_) => {}
            // Restored without the capacity it refers to: the first whole bank.
            None if complete => self.counter_capacity = Some(capacity),
            None => {}
        }
        if let (Some(current), Some(_)) = (current_a, self.counter_capacity) {
            counter.step(current, inputs.dt_s, capacity);
        }
        events
    }

    /// The strategy's output, or why there is none (a fault, or a strategy never started).
    fn run_strategy(&mut self, view: &BankView) -> Result<StrategyOutput, Error> {
        match &mut self.strategy {
            Ok(strategy) => strategy
                .compute_view(view)
                .into_result()
                .map_err(|err| Error::Plugin(err.into())),
            Err(err) => Err(Error::NotStarted {
                strategy: self.strategy_name.clone(),
                source: Box::new(err.clone()),
            }),
        }
    }

    /// The safety envelope on the strategy's result, with its log events.
    fn enforce(
        &mut self,
        result: &Result<StrategyOutput, Error>,
        view: &BankView,
        merged: &Merged,
        cells: u32,
    ) -> (Enforced, Vec<Event>) {
        let mut events = Vec::new();
        events.extend(self.plausible_charge_voltage(cells));
        let facts = BankFacts {
            cells,
            blocks_charge: view.blocks_charge(),
            blocks_discharge: view.blocks_discharge(),
            voltage_v: merged.voltage_v.unwrap_or(0.0),
        };
        let fault = result.as_ref().err().map(Error::to_string);
        let output = result
            .as_ref()
            .map_err(|_| fault.as_deref().unwrap_or_default());
        let mut enforced = self.envelope.apply(output, facts);
        if self.strategy.is_err() {
            // A strategy that never started gives no limits on any tick to come.
            enforced.limits.dcl_a = 0.0;
        }
        let stop = self.envelope.faults_in_a_row() >= self.settings.bounds.plugin_failures;
        if self.failures_stop.follow(stop) == Some(Edge::Started) && self.strategy.is_ok() {
            events.push(Event::DischargeStoppedByFaults(
                self.envelope.faults_in_a_row(),
            ));
        }
        // A strategy that never started was logged when it failed, with its config key.
        if let (Some(fault), Ok(_)) = (&enforced.fault, &self.strategy) {
            if self.envelope_fault_started() {
                events.push(Event::StrategyFault(fault.clone()));
            }
        }
        if let Some(n) = enforced.recovered_after {
            events.push(Event::StrategyRecovered(n));
        }
        let clamping = !enforced.clamped.is_empty();
        if self.clamping.follow(clamping) == Some(Edge::Started) {
            events.push(Event::Clamped(enforced.clamped.clone()));
        }
        (enforced, events)
    }

    /// `safety.max_charge_voltage` for a bank of `cells` cells in series. Below cells ×
    /// `safety.min_cell_voltage` it cannot be a bank voltage (a cell voltage written there,
    /// most likely): obeyed, it would stop every charge with nothing to say why. It is left
    /// out instead; the CVL stays under N × `safety.max_cell_voltage`, which the cell count
    /// known here gives. Its event, the first time.
    fn plausible_charge_voltage(&mut self, cells: u32) -> Option<Event> {
        let bound_v = self.settings.bounds.max_charge_voltage_v;
        let min_cell_v = self.settings.guard.min_cell_voltage_v;
        let implausible = cells > 0 && bound_v < f64::from(cells) * min_cell_v;
        self.envelope
            .set_max_charge_voltage(if implausible { f64::INFINITY } else { bound_v });
        (implausible && self.charge_voltage_ignored.start()).then_some(
            Event::ChargeVoltageIgnored {
                bound_v,
                cells,
                min_cell_v,
            },
        )
    }

    /// The strategy's requests besides feed-in: a SoC reset; whether its state is to be saved.
    fn carry_out(&mut self, result: &Result<StrategyOutput, Error>, bank: &BankSnapshot) -> bool {
        let Ok(out) = result else {
            return false;
        };
        if let Some(counter) = &mut self.counter {
            match out.soc_reset {
                SocReset::Full => counter.reset_full(bank.merged.installed_capacity_ah),
                SocReset::Empty => counter.reset_empty(),
                SocReset::None => {}
            }
        }
        out.state_changed
    }

    /// `/Info/ChargeMode`: the strategy's, or the fault; what is lost or missing appended.
    fn mode(
        &mut self,
        result: &Result<StrategyOutput, Error>,
        enforced: &Enforced,
        bank: &BankSnapshot,
        expected: u32,
        recovering: bool,
    ) -> String {
        let mut mode = match (&enforced.fault, &self.strategy, result) {
            (Some(_), Err(err), _) => format!(
                "Fault: strategy {} not started ({}): charge and discharge stopped",
                self.strategy_name,
                err.to_string().lines().next().unwrap_or_default()
            ),
            (Some(_), Ok(_), _) => "Fault: charging stopped".to_string(),
            (None, _, Ok(out)) => out.mode.as_str().to_owned(),
            (None, _, Err(_)) => String::new(),
        };
        if self.charge_voltage_ignored.holds() {
            mode.push_str("; safety.max_charge_voltage ignored (not a bank voltage)");
        }
        if bank.degraded() && self.settings.on_lost == OnLost::BlockAll {
            mode.push_str(if recovering {
                "; discharge stopped, charging only to recover (batteries.on_lost: block_all)"
            } else {
                "; charge and discharge stopped (batteries.on_lost: block_all)"
            });
        }
        if !bank.lost.is_empty() {
            mode.push_str("; battery lost");
        }
        for name in &bank.left_out {
            mode = format!("{mode}; battery {name} left out (another cell count)");
        }
        if bank.missing > 0 {
            mode = format!("{mode}; {} of {expected} batteries not found", bank.missing);
        }
        mode
    }

    /// The mode of this tick: its log event when it changed.
    fn set_mode(&mut self, mode: &str) -> Option<Event> {
        if mode == self.mode {
            return None;
        }
        self.mode = mode.to_string();
        Some(Event::ModeChanged(mode.to_string()))
    }

    /// SoC, capacity, consumed Ah and time to go: the own counter's, else the batteries';
    /// whether the counter wants its charge saved.
    fn soc(
        &self,
        merged: &Merged,
        current_a: Option<f64>,
        low_soc: Option<i64>,
    ) -> (SocOutputs, bool) {
        let capacity = merged.installed_capacity_ah;
        match &self.counter {
            Some(counter)
                if self.settings.own_counter
                    && capacity > 0.0
                    && self.counter_capacity.is_some() =>
            {
                let out = counter.outputs(capacity, current_a.unwrap_or(0.0), low_soc);
                let outputs = SocOutputs {
                    soc_pct: Some(out.soc_pct),
                    capacity_ah: Some(out.capacity_ah),
                    consumed_ah: Some(out.consumed_ah),
                    time_to_go_s: out.time_to_go_s,
                };
                (outputs, counter.wants_save(capacity))
            }
            _ => {
                let outputs = SocOutputs {
                    soc_pct: merged.soc_pct,
                    capacity_ah: merged.capacity_ah,
                    consumed_ah: merged.consumed_ah,
                    time_to_go_s: merged.time_to_go_s,
                };
                (outputs, false)
            }
        }
    }

    fn envelope_fault_started(&self) -> bool {
        // The envelope counts faults in a row; the first of an episode is the one to log.
        self.envelope.faults_in_a_row() == 1
    }

    /// The current source's value, or the BMS sum (current and power), with the start or end
    /// of an episode on the BMS sum.
    fn measure(
        &mut self,
        merged: &Merged,
        inputs: &TickInputs,
    ) -> ((Option<f64>, Option<f64>), Option<Event>) {
        let inputs = CurrentInputs {
            bms_current_a: merged.current_a.unwrap_or(f64::NAN),
            bms_power_w: merged.power_w.unwrap_or(f64::NAN),
            bank_voltage_v: merged.voltage_v.unwrap_or(f64::NAN),
            vebus: inputs.vebus.clone().into(),
            solar_chargers: inputs.solar_chargers.clone().into(),
            smartshunts: inputs.smartshunts.clone().into(),
            dc_sources: inputs.dc_sources.clone().into(),
        };
        let result = self
            .current_source
            .as_mut()
            .map(|c| c.measure_inputs(&inputs));
        let measured = match result.map(|r| r.into_result()) {
            // A current the bank cannot carry is a device's absurd value: the counter and
            // the strategy never see it.
            Some(Ok(ROption::RSome(m)))
                if m.current_a.is_finite()
                    && m.power_w.is_finite()
                    && plausible_bank_current(m.current_a, merged.installed_capacity_ah) =>
            {
                Some(m)
            }
            _ => None,
        };
        match measured {
            Some(m) => {
                let ended = (self.fallback_ticks > 0)
                    .then(|| Event::CurrentFallbackEnded(std::mem::take(&mut self.fallback_ticks)));
                ((Some(m.current_a), Some(m.power_w)), ended)
            }
            None => {
                let started = (self.fallback_ticks == 0).then_some(Event::CurrentFallbackStarted);
                self.fallback_ticks += 1;
                ((merged.current_a, merged.power_w), started)
            }
        }
    }
}

/// The host's alarms over the batteries' own (the higher wins).
fn raise_alarms(alarms: &mut [Option<i64>; ALARMS.len()], acts: &Acts) {
    for (name, level) in acts.alarms() {
        if level == 0 {
            continue;
        }
        if let Some(i) = ALARMS.iter().position(|a| *a == name) {
            alarms[i] = Some(alarms[i].unwrap_or(0).max(level));
        }
    }
}
