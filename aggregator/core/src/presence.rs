//! Whether each battery is online, stale or lost (docs/battery-states.md §1 to §6), from the
//! readings over time.
//!
//! Pure: the caller passes a monotonic time in seconds with every observation. A battery is
//! **online** while its reading is complete ([`BatteryReading::check`]) and not frozen,
//! **stale** for up to `hold_for` after that stops (its last complete reading stands in), and
//! **lost** after that or when it never had a complete reading. **Frozen** means no value of it
//! changed for `frozen_after` while the bank carried current: a driver that lost its BMS but
//! keeps the old values on the bus. A bank at rest (no pack showing [`AT_REST_A`], no live
//! pack showing it, no device outside the packs carrying [`OUTSIDE_MOVING_A`]) changes nothing
//! and freezes nobody: at night with the loads off, a quiet bank
//! taken for frozen drivers would stop the inverter, and with it the current that could show
//! them alive.
//! A battery whose cell count changes while running is not online either: its cells no longer
//! line up with the bank's N (the count is `batteries.cells`, else its count when first online).
//!
//! A value outside its plausible range ([`crate::reading::PLAUSIBLE`]) reads as not published.
//! A value a battery has published and then stops publishing (invalid, gone, or now
//! implausible) makes it not online either: its cells, temperatures or limits would otherwise
//! drop out of the guard's rules unnoticed. Cell extremes it stops publishing are taken from
//! its cells where those are all there. A value it never published is not asked for. A service
//! that goes away and comes back (a driver restarting) states anew what it publishes but for the
//! values the guard reads: without one of those it is held (from its return when still held),
//! then lost, until the value is back, or until it has been back for `hold_for` without it
//! (then the value is no longer asked for), unless its last reading of it stood where a stop
//! of the guard acts ([`Presence::with_guard`]).
//!
//! A service that goes away having never had a complete reading, or never having been there for
//! `hold_for` without a break (a driver restarting in a loop), was never part of the bank: it is
//! [`Presence::passing`], never lost.
//!
//! Every change of state is reported once, so a fault that lasts is one log line when it
//! starts and one when the battery is online again, not one per tick; so is each implausible
//! value ([`Presence::take_notes`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use plugin_api::BatteryState;

use crate::error::Error;
use crate::guard::{GuardBounds, Window};
use crate::reading::{kept_value_path, BatteryReading, Implausible};

/// A battery as presence hands it to the engine: its name, service, state and last reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Battery {
    /// Display name, unique in the bank.
    pub name: String,
    /// D-Bus service name.
    pub service: String,
    /// Online, stale (held) or lost.
    pub state: BatteryState,
    /// Its reading (the last complete one when stale or lost).
    pub reading: BatteryReading,
}

/// Timing of the states.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Seconds a battery that is not online is held with its last complete reading.
    pub hold_for_s: f64,
    /// Seconds without any change after which a battery is frozen; 0 turns the check off.
    pub frozen_after_s: f64,
}

/// A change of a battery's state, for one log line.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The battery's name.
    pub name: String,
    /// Its state before; `None` at its first observation.
    pub previous: Option<BatteryState>,
    /// Its new state.
    pub state: BatteryState,
    /// Why, e.g. `/Dc/0/Voltage is invalid`, `service gone`, `frozen: no value changed for 120 s`.
    pub reason: String,
}

#[derive(Clone, Debug)]
struct Entry {
    name: String,
    /// `None` until the first observation.
    state: Option<BatteryState>,
    /// The cell count the battery is held to.
    cells: Option<i64>,
    /// Boxed, as the last complete one: a reading is a kilobyte, and a tick hands it from
    /// one to the other.
    last_seen: Option<Box<BatteryReading>>,
    /// The last complete reading when it is no longer the last seen; while the last seen is
    /// complete ([`Entry::seen_complete`]) it stands for both, so that each tick copies a
    /// reading once, not twice.
    last_complete: Option<Box<BatteryReading>>,
    /// The box of a reading no longer needed (a last complete one once the last seen is
    /// complete, or a last seen one that was not), for the next reading seen.
    spare: Option<Box<BatteryReading>>,
    seen_complete: bool,
    /// When a value of it last changed.
    changed_at: f64,
    /// Seconds the bank carried current since its last change (the frozen check's clock).
    unchanged_moving_s: f64,
    /// Its last observation.
    observed_at: Option<f64>,
    online_until: Option<f64>,
    /// The kept values ([`BatteryReading::for_each_kept_value`]) it has published.
    published: Vec<bool>,
    /// Back on the bus since then after its service was gone, not yet online again.
    back_at: Option<f64>,
    /// The values implausible now (an episode each, by path).
    implausible: Vec<Implausible>,
    /// Since when the service is on the bus without a break, and the longest such stretch.
    present_since: Option<f64>,
    longest_present_s: f64,
    /// Gone, never part of the bank: the caller forgets it.
    passing: bool,
}

impl Entry {
    /// A service seen for the first time.
    fn new(name: &str, cells: Option<i64>, now_s: f64) -> Self {
        Entry {
            name: name.to_string(),
            state: None,
            cells,
            last_seen: None,
            last_complete: None,
            spare: None,
            seen_complete: false,
            changed_at: now_s,
            unchanged_moving_s: 0.0,
            observed_at: None,
            online_until: None,
            published: Vec::new(),
            back_at: None,
            implausible: Vec::new(),
            present_since: None,
            longest_present_s: 0.0,
            passing: false,
        }
    }
}

impl Entry {
    /// The last complete reading, if it ever had one.
    fn complete(&self) -> Option<&BatteryReading> {
        if self.seen_complete {
            self.last_seen.as_deref()
        } else {
            self.last_complete.as_deref()
        }
    }
}

/// An implausible value of a battery, said once when it starts and once when it ends.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    /// The battery's name.
    pub name: String,
    /// `Some` when the value became implausible, `None` when it is no longer.
    pub implausible: Option<Implausible>,
    /// The path.
    pub path: String,
}

/// The reason of a change to online, but for a value no longer asked for.
pub const COMPLETE: &str = "complete reading";

/// Below this current (A) a pack is at rest: its values need not move.
pub const AT_REST_A: f64 = 0.5;

/// A device outside the packs (a Multi, a charger, a shunt) carrying this current (A) or more
/// moves the bank: a pack's values must move then. Well above an inverter's idle draw, which a
/// BMS may show as 0 A.
pub const OUTSIDE_MOVING_A: f64 = 5.0;

/// A pack whose values changed within this many seconds is live: the current it shows is
/// evidence that the bank moves.
const LIVE_S: f64 = 10.0;

/// The states of all batteries seen, keyed by service name (so ordered by it).
#[derive(Clone, Debug)]
pub struct Presence {
    timing: Timing,
    /// `batteries.cells`.
    cells: Option<u32>,
    entries: BTreeMap<String, Entry>,
    notes: Vec<Note>,
    /// Whether the bank carried current, judged once at the time given (the first
    /// observation of a tick), from the readings seen before.
    moving: Option<(f64, bool)>,
    /// The largest current of a device outside the packs this tick (A).
    outside_a: f64,
    /// The guard's bounds: a pack back after a restart is held to a kind of value whose last
    /// reading stood where they act.
    bounds: Option<GuardBounds>,
}

impl Presence {
    /// No battery seen yet.
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            cells: None,
            entries: BTreeMap::new(),
            notes: Vec::new(),
            moving: None,
            outside_a: 0.0,
            bounds: None,
        }
    }

    /// Holds every battery to this cell count (`batteries.cells`) rather than to its own
    /// count when first online.
    pub fn with_cells(mut self, cells: Option<u32>) -> Self {
        self.cells = cells;
        self
    }

    /// Records this tick's reading of a battery service, or `None` when the service is gone.
    pub fn observe(
        &mut self,
        now_s: f64,
        service: &str,
        name: &str,
        reading: Option<&BatteryReading>,
        needs_bms_limits: bool,
    ) -> Option<Change> {
        self.observe_seen(now_s, service, name, reading, needs_bms_limits, true)
    }

    /// Records a tick at which the battery's values cannot be seen although its service may
    /// still be there (the host's view of the bus is old): held, then lost, as a battery
    /// whose values stop; never taken as passing, however briefly it was seen before.
    pub fn observe_unseen(&mut self, now_s: f64, service: &str, name: &str) -> Option<Change> {
        self.observe_seen(now_s, service, name, None, false, false)
    }

    fn observe_seen(
        &mut self,
        now_s: f64,
        service: &str,
        name: &str,
        reading: Option<&BatteryReading>,
        needs_bms_limits: bool,
        seen: bool,
    ) -> Option<Change> {
        let configured = self.cells.map(i64::from);
        let moving = self.bank_moving(now_s);
        // Its name copied only the first time (this runs for every battery at every tick).
        if !self.entries.contains_key(service) {
            self.entries
                .insert(service.to_string(), Entry::new(name, configured, now_s));
        }
        // Just inserted when it was not there.
        let entry = self.entries.get_mut(service)?;
        let found = reading.map(BatteryReading::implausible).unwrap_or_default();
        let reading = reading.map(|r| plausible(r, &found));
        let reading = reading.as_deref();
        note_implausible(&mut self.notes, entry, reading.is_some(), found);
        match reading {
            Some(_) => {
                if entry.present_since.is_none() {
                    // Back after its service was gone (a driver restarted, perhaps another
                    // version): what it publishes is stated anew but for the values the guard
                    // reads, so that no stop of the guard ends on the other packs' values while
                    // this pack's are not there.
                    still_asked_for(&mut entry.published, |kind| {
                        !matches!(kind, Kind::Unguarded)
                    });
                    if entry.published.iter().any(|p| *p) {
                        entry.back_at = Some(now_s);
                    }
                    if entry.state == Some(BatteryState::Stale) {
                        // Still held: the hold starts again from its return, so that a value
                        // the driver gives a few seconds late does not lose a pack (nor, when
                        // every driver restarted, the whole bank).
                        entry.online_until = Some(now_s);
                    }
                }
                let since = *entry.present_since.get_or_insert(now_s);
                entry.longest_present_s = entry.longest_present_s.max(now_s - since);
            }
            None if seen => entry.present_since = None,
            None => {}
        }
        let mut missing = reading.and_then(|r| stopped_publishing(&mut entry.published, r));
        let mut restated = None;
        if let (Some(path), Some(back), Some(r)) = (missing.clone(), entry.back_at, reading) {
            if now_s - back >= self.timing.hold_for_s {
                // Back for `hold_for` without it (a driver of another version, a sensor
                // gone): no longer asked for, as a value it never published, but for the
                // cells (temperatures) while its last reading of them stood where the guard
                // acts: the guard must see them again before it may let go.
                let (cells, temperatures) = match (self.bounds, entry.complete()) {
                    (Some(b), Some(last)) => {
                        (cells_near_bounds(last, &b), heat_near_bounds(last, &b))
                    }
                    _ => (false, false),
                };
                still_asked_for(&mut entry.published, |kind| match kind {
                    Kind::Cells => cells,
                    Kind::Temperature => temperatures,
                    Kind::OtherGuarded | Kind::Unguarded => false,
                });
                missing = stopped_publishing(&mut entry.published, r);
                if missing.is_none() {
                    restated = Some(format!(
                        "back for {:.0} s without {path}: no longer asked for",
                        now_s - back
                    ));
                }
            }
        }
        let since_observed = entry.observed_at.map_or(0.0, |t| (now_s - t).max(0.0));
        entry.observed_at = Some(now_s);
        if let Some(reading) = reading {
            if entry.last_seen.as_deref() != Some(reading) {
                entry.changed_at = now_s;
                entry.unchanged_moving_s = 0.0;
                let seen = match entry.spare.take() {
                    Some(mut spare) => {
                        *spare = reading.clone();
                        spare
                    }
                    None => Box::new(reading.clone()),
                };
                let before = entry.last_seen.replace(seen);
                if std::mem::take(&mut entry.seen_complete) {
                    entry.last_complete = before;
                } else {
                    entry.spare = before;
                }
            } else if moving || current_moves(reading) {
                // Its own frozen current counts: a pack showing current changes something.
                entry.unchanged_moving_s += since_observed;
            }
        }
        let frozen_for = entry.unchanged_moving_s;
        let verdict = match reading {
            None if seen => Err("service gone".to_string()),
            None => Err("values not seen".to_string()),
            Some(r) => match r
                .check(needs_bms_limits)
                .map_err(|u| u.to_string())
                .and_then(|()| {
                    same_cells(entry.cells, configured.is_some(), r).map_err(|e| e.to_string())
                })
                .and_then(|()| match missing {
                    Some(path) => Err(stopped_reason(&path, &entry.implausible)),
                    None => Ok(()),
                }) {
                Err(reason) => Err(reason),
                Ok(())
                    if self.timing.frozen_after_s > 0.0
                        && frozen_for >= self.timing.frozen_after_s =>
                {
                    Err(format!(
                        "frozen: no value changed for {frozen_for:.0} s while the bank carried \
                         current"
                    ))
                }
                Ok(()) => Ok(r),
            },
        };
        let (state, reason) = match verdict {
            Ok(r) => {
                if entry.cells.is_none() {
                    entry.cells = r.cells_per_battery;
                }
                entry.seen_complete = true;
                if let Some(spare) = entry.last_complete.take() {
                    entry.spare = Some(spare);
                }
                entry.online_until = None;
                entry.back_at = None;
                // Its text is made only when the state changes (most ticks it does not).
                (BatteryState::Online, restated)
            }
            Err(reason) => {
                let since = *entry.online_until.get_or_insert(now_s);
                let ever_complete = entry.complete().is_some();
                let held = ever_complete && now_s - since < self.timing.hold_for_s;
                // Gone having never been part of the bank (never complete, or never on the
                // bus for `hold_for` without a break): passing, not lost.
                let brief = !ever_complete || entry.longest_present_s < self.timing.hold_for_s;
                if seen && reading.is_none() && !held && brief {
                    entry.passing = true;
                    entry.state = Some(BatteryState::Lost);
                    return None;
                }
                (
                    if held {
                        BatteryState::Stale
                    } else {
                        BatteryState::Lost
                    },
                    Some(reason),
                )
            }
        };
        let report = (Some(state) != entry.state).then(|| Change {
            name: entry.name.clone(),
            previous: entry.state,
            state,
            reason: reason.unwrap_or_else(|| COMPLETE.to_string()),
        });
        entry.state = Some(state);
        report
    }

    /// The guard's bounds (`safety:`): a pack back after a restart without its cells (its
    /// temperatures) is held to them while its last reading of them stood where a stop or a
    /// derating of the guard acts.
    pub fn with_guard(mut self, bounds: GuardBounds) -> Self {
        self.bounds = Some(bounds);
        self
    }

    /// The largest current of the devices outside the packs this tick (chargers, inverters, a
    /// shunt), before the packs are observed.
    pub fn set_outside_current(&mut self, current_a: f64) {
        self.outside_a = if current_a.is_finite() {
            current_a.abs()
        } else {
            0.0
        };
    }

    /// Whether the bank carries current, judged once for `now_s`: a device outside the packs
    /// carries [`OUTSIDE_MOVING_A`], or a live pack online (a value changed within
    /// [`LIVE_S`]) shows [`AT_REST_A`] or more. A frozen pack's old current is no evidence:
    /// it would freeze the quiet packs beside it.
    fn bank_moving(&mut self, now_s: f64) -> bool {
        if let Some((at, moving)) = self.moving {
            if at == now_s {
                return moving;
            }
        }
        let moving = self.outside_a >= OUTSIDE_MOVING_A
            || self.entries.values().any(|e| {
                e.present_since.is_some()
                    && e.state == Some(BatteryState::Online)
                    && now_s - e.changed_at <= LIVE_S
                    && e.last_seen.as_deref().is_some_and(current_moves)
            });
        self.moving = Some((now_s, moving));
        moving
    }

    /// Whether a service went away before it was part of the bank (it never had a complete
    /// reading, or was never on the bus for `hold_for` without a break): the caller forgets
    /// it rather than counting it as a lost battery.
    pub fn passing(&self, service: &str) -> bool {
        self.entries.get(service).is_some_and(|e| e.passing)
    }

    /// The implausible values that started or ended since the last call.
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Forgets a battery (left out of the bank): it is not held, lost or counted.
    pub fn forget(&mut self, service: &str) {
        self.entries.remove(service);
    }

    /// The batteries for the engine, ordered by service name; those never complete are left
    /// out (they have nothing to contribute and count as missing).
    pub fn batteries(&self) -> Vec<Battery> {
        self.entries
            .iter()
            .filter_map(|(service, e)| {
                Some(Battery {
                    name: e.name.clone(),
                    service: service.clone(),
                    state: e.state?,
                    reading: e.complete()?.clone(),
                })
            })
            .collect()
    }

    /// Services known, with their state.
    pub fn states(&self) -> impl Iterator<Item = (&str, BatteryState)> {
        self.entries
            .iter()
            .filter_map(|(s, e)| Some((s.as_str(), e.state?)))
    }
}

/// The reading without its implausible values, its cell extremes from its cells where it
/// publishes none or a cell lies beyond them; borrowed when there is nothing to change (nearly
/// always).
fn plausible<'a>(r: &'a BatteryReading, found: &[Implausible]) -> Cow<'a, BatteryReading> {
    let fill = r.cells_widen_extremes();
    if found.is_empty() && !fill {
        return Cow::Borrowed(r);
    }
    let mut r = r.clone();
    r.drop_implausible(found);
    r.extremes_from_cells();
    Cow::Owned(r)
}

/// Records this reading's implausible values; a note for each that starts or ends. While the
/// service is gone, nothing starts or ends.
fn note_implausible(notes: &mut Vec<Note>, entry: &mut Entry, seen: bool, found: Vec<Implausible>) {
    if !seen {
        return;
    }
    if found.is_empty() && entry.implausible.is_empty() {
        return;
    }
    let name = &entry.name;
    for was in &entry.implausible {
        if !found.iter().any(|i| i.path == was.path) {
            notes.push(Note {
                name: name.clone(),
                implausible: None,
                path: was.path.clone(),
            });
        }
    }
    for i in &found {
        if !entry.implausible.iter().any(|was| was.path == i.path) {
            notes.push(Note {
                name: name.clone(),
                path: i.path.clone(),
                implausible: Some(i.clone()),
            });
        }
    }
    entry.implausible = found;
}

/// What the guard makes of a kept value.
enum Kind {
    /// Cells, their extremes, the voltage sum.
    Cells,
    /// Temperatures.
    Temperature,
    /// The BMS's own limits and blocks.
    OtherGuarded,
    /// Not read by the guard.
    Unguarded,
}

/// What the guard makes of the kept value at `position`.
fn kind_of(position: usize) -> Kind {
    let path = kept_value_path(position);
    match path.as_ref() {
        p if p.starts_with("/Voltages/Cell") => Kind::Cells,
        "/System/MaxCellVoltage" | "/System/MinCellVoltage" | "/Voltages/Sum" => Kind::Cells,
        "/Dc/0/Temperature" | "/System/MinCellTemperature" | "/System/MaxCellTemperature" => {
            Kind::Temperature
        }
        "/Info/MaxChargeVoltage"
        | "/Info/MaxChargeCurrent"
        | "/Info/MaxDischargeCurrent"
        | "/Io/AllowToCharge"
        | "/Io/AllowToDischarge"
        | "/System/NrOfModulesBlockingCharge"
        | "/System/NrOfModulesBlockingDischarge" => Kind::OtherGuarded,
        _ => Kind::Unguarded,
    }
}

/// Whether a reading's cells stand where a cell stop of the guard acts or lets go: at or above
/// the high bound less its hysteresis, at or below the low bound plus its hysteresis.
fn cells_near_bounds(r: &BatteryReading, b: &GuardBounds) -> bool {
    let cells = r.cell_voltages_v.iter().flatten().copied();
    let mut high = r.max_cell_voltage_v.into_iter().chain(cells.clone());
    let mut low = r.min_cell_voltage_v.into_iter().chain(cells);
    high.any(|v| v >= b.max_cell_voltage_v - b.max_cell_hysteresis_v)
        || low.any(|v| v <= b.min_cell_voltage_v + b.min_cell_hysteresis_v)
}

/// Whether a reading's temperatures stand where the guard stops or derates a limit.
fn heat_near_bounds(r: &BatteryReading, b: &GuardBounds) -> bool {
    let d = b.temperature_derate_c;
    let outside = |t: f64, w: Window| t <= w.min_c + d || t >= w.max_c - d;
    [
        r.temperature_c,
        r.min_cell_temperature_c,
        r.max_cell_temperature_c,
    ]
    .into_iter()
    .flatten()
    .any(|t| outside(t, b.charge_temperature) || outside(t, b.discharge_temperature))
}

/// Forgets that the kept values of the kinds `asked` refuses were published: they are no
/// longer asked for.
fn still_asked_for(published: &mut [bool], asked: impl Fn(Kind) -> bool) {
    for (k, p) in published.iter_mut().enumerate() {
        if *p && !asked(kind_of(k)) {
            *p = false;
        }
    }
}

/// Whether a reading shows [`AT_REST_A`] or more.
fn current_moves(r: &BatteryReading) -> bool {
    r.current_a.is_some_and(|a| a.abs() >= AT_REST_A)
}

/// Marks the kept values a reading holds as published; the first one published before and
/// missing now, if any.
fn stopped_publishing(published: &mut Vec<bool>, r: &BatteryReading) -> Option<String> {
    let mut first = None;
    let mut len = 0;
    r.for_each_kept_value(|k, there| {
        len = k + 1;
        if k >= published.len() {
            published.resize(k + 1, false);
        }
        if there {
            published[k] = true;
        } else if published[k] && first.is_none() {
            first = Some(k);
        }
    });
    // Cells beyond those of this reading (fewer cells published than before).
    if first.is_none() {
        first = published.iter().skip(len).position(|p| *p).map(|k| k + len);
    }
    first.map(|k| kept_value_path(k).into_owned())
}

/// Why a battery is not online when a value it published is missing.
fn stopped_reason(path: &str, implausible: &[Implausible]) -> String {
    match implausible.iter().find(|i| i.path == path) {
        Some(i) => i.to_string(),
        None => format!("{path} no longer published"),
    }
}

/// Whether a reading has the cell count the battery is held to (`configured`: the count is
/// `batteries.cells`, not the battery's own first count).
fn same_cells(held_to: Option<i64>, configured: bool, r: &BatteryReading) -> Result<(), Error> {
    match (held_to, r.cells_per_battery) {
        (Some(want), Some(have)) if want != have => Err(Error::CellCount {
            want,
            have,
            configured,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        hold_for_s: 60.0,
        frozen_after_s: 120.0,
    };
    const SERVICE: &str = "com.victronenergy.battery.ttyUSB0";

    fn reading(current: f64) -> BatteryReading {
        BatteryReading {
            voltage_v: Some(53.0),
            current_a: Some(current),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.35),
            min_cell_voltage_v: Some(3.30),
            ..Default::default()
        }
    }

    fn run(p: &mut Presence, from: u32, to: u32, r: Option<&BatteryReading>) -> Vec<(u32, Change)> {
        (from..to)
            .filter_map(|t| {
                p.observe(f64::from(t), SERVICE, "Bat1", r, false)
                    .map(|c| (t, c))
            })
            .collect()
    }

    #[test]
    fn a_short_gap_is_held_a_long_one_is_lost_and_recovery_is_logged() {
        let mut p = Presence::new(TIMING);
        let good = reading(1.0);
        let changes = run(&mut p, 0, 10, Some(&good));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.state, BatteryState::Online);

        // A driver restart of 20 s: held, never lost.
        let changes = run(&mut p, 10, 30, None);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].1.state, changes[0].1.reason.as_str()),
            (BatteryState::Stale, "service gone")
        );
        assert_eq!(p.batteries()[0].state, BatteryState::Stale);
        assert_eq!(
            p.batteries()[0].reading,
            good,
            "the last complete reading stands in"
        );
        // Back for 70 s: on the bus for longer than `hold_for` without a break, so a battery
        // of the bank (one never there that long is passing, not lost).
        let changes = run(&mut p, 30, 100, Some(&reading(2.0)));
        assert_eq!(changes[0].1.state, BatteryState::Online);

        // 90 s away: stale, then lost at 60 s.
        let changes = run(&mut p, 100, 190, None);
        let states: Vec<_> = changes.iter().map(|(t, c)| (*t, c.state)).collect();
        assert_eq!(
            states,
            vec![(100, BatteryState::Stale), (160, BatteryState::Lost)]
        );
        assert!(!p.passing(SERVICE));
        let changes = run(&mut p, 190, 191, Some(&reading(3.0)));
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    fn observe_two(
        p: &mut Presence,
        from: u32,
        to: u32,
        a: &BatteryReading,
        b: &BatteryReading,
    ) -> Vec<(u32, Change)> {
        (from..to)
            .flat_map(|t| {
                let at = f64::from(t);
                [
                    p.observe(at, SERVICE, "Bat1", Some(a), false),
                    p.observe(
                        at,
                        "com.victronenergy.battery.ttyUSB1",
                        "Bat2",
                        Some(b),
                        false,
                    ),
                ]
                .into_iter()
                .flatten()
                .map(move |c| (t, c))
            })
            .collect()
    }

    #[test]
    fn a_bank_at_rest_freezes_nobody_but_a_pack_still_while_the_bank_moves_is_frozen() {
        // Night, loads off: two packs at 0 A, nothing moving for an hour. Taken for frozen
        // drivers, they would be lost, DCL 0 would stop the inverter, and nothing would move.
        let mut p = Presence::new(TIMING);
        let rest = reading(0.0);
        let changes = observe_two(&mut p, 0, 3600, &rest, &rest);
        assert_eq!(changes.len(), 2, "only online: {changes:?}");
        // Bat1 carries current again; Bat2's driver shows its old 0 A and nothing moves:
        // frozen after 120 s of the bank moving.
        let changes: Vec<_> = (3600..3800)
            .flat_map(|t| {
                let moving = reading(if t % 2 == 0 { 20.0 } else { 21.0 });
                observe_two(&mut p, t, t + 1, &moving, &rest)
            })
            .collect();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0].1.name, "Bat2");
        assert_eq!(
            (changes[0].0, changes[0].1.state),
            (3720, BatteryState::Stale)
        );
        assert_eq!(
            changes[0].1.reason,
            "frozen: no value changed for 120 s while the bank carried current"
        );
        assert_eq!(
            (changes[1].0, changes[1].1.state),
            (3780, BatteryState::Lost)
        );
    }

    #[test]
    fn a_frozen_packs_old_current_does_not_freeze_the_quiet_one_beside_it() {
        // A's driver froze showing -20 A: frozen, then lost. B is at rest at night: A's old
        // current is no evidence that the bank moves.
        let mut p = Presence::new(TIMING);
        let frozen = reading(-20.0);
        let rest = reading(0.0);
        let changes = observe_two(&mut p, 0, 3600, &frozen, &rest);
        let states: Vec<_> = changes
            .iter()
            .map(|(t, c)| (*t, c.name.as_str(), c.state))
            .collect();
        assert_eq!(
            states,
            vec![
                (0, "Bat1", BatteryState::Online),
                (0, "Bat2", BatteryState::Online),
                (120, "Bat1", BatteryState::Stale),
                (180, "Bat1", BatteryState::Lost),
            ]
        );
    }

    #[test]
    fn a_pack_frozen_at_rest_is_found_once_a_device_outside_the_packs_carries_current() {
        // The one pack of a bank, its driver frozen at 0.2 A overnight; in the morning the
        // solar chargers put 50 A in.
        let mut p = Presence::new(TIMING);
        let still = reading(0.2);
        let changes = run(&mut p, 0, 3600, Some(&still));
        assert_eq!(changes.len(), 1, "at rest, not frozen: {changes:?}");
        p.set_outside_current(3.0);
        let changes = run(&mut p, 3600, 3800, Some(&still));
        assert!(
            changes.is_empty(),
            "an inverter's idle draw moves nothing: {changes:?}"
        );
        p.set_outside_current(50.0);
        let changes = run(&mut p, 3800, 3930, Some(&still));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].0, changes[0].1.state),
            (3919, BatteryState::Stale)
        );
    }

    #[test]
    fn a_battery_whose_values_never_move_is_frozen() {
        let mut p = Presence::new(TIMING);
        let same = reading(1.0);
        let changes = run(&mut p, 0, 200, Some(&same));
        let states: Vec<_> = changes.iter().map(|(t, c)| (*t, c.state)).collect();
        assert_eq!(
            states,
            vec![
                (0, BatteryState::Online),
                (120, BatteryState::Stale),
                (180, BatteryState::Lost)
            ]
        );
        assert!(
            changes[1].1.reason.starts_with("frozen"),
            "{:?}",
            changes[1]
        );
        // One value moving brings it back at once.
        let changes = run(&mut p, 200, 201, Some(&reading(1.1)));
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    #[test]
    fn frozen_check_can_be_turned_off() {
        let mut p = Presence::new(Timing {
            frozen_after_s: 0.0,
            ..TIMING
        });
        let changes = run(&mut p, 0, 500, Some(&reading(1.0)));
        assert_eq!(changes.len(), 1);
    }

    #[test]
    fn a_bad_value_makes_it_not_online_naming_the_path() {
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 5, Some(&reading(1.0)));
        let mut bad = reading(1.0);
        bad.voltage_v = Some(f64::NAN);
        let changes = run(&mut p, 5, 6, Some(&bad));
        assert_eq!(changes[0].1.reason, "/Dc/0/Voltage is not finite");
        assert_eq!(changes[0].1.state, BatteryState::Stale);
    }

    #[test]
    fn a_battery_never_complete_is_lost_and_not_handed_on() {
        let mut p = Presence::new(TIMING);
        let mut empty = reading(1.0);
        empty.installed_capacity_ah = Some(0.0);
        let changes = run(&mut p, 0, 3, Some(&empty));
        assert_eq!(
            changes.len(),
            1,
            "said once why it is not online: {changes:?}"
        );
        assert_eq!(changes[0].1.previous, None);
        assert_eq!(changes[0].1.state, BatteryState::Lost);
        assert_eq!(
            changes[0].1.reason,
            "/InstalledCapacity is 0 Ah, not above 0 Ah"
        );
        assert!(p.batteries().is_empty());
        assert_eq!(p.states().next(), Some((SERVICE, BatteryState::Lost)));
    }

    #[test]
    fn a_bad_value_is_one_change_when_it_starts_and_one_when_it_ends() {
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 5, Some(&reading(1.0)));
        let mut bad = reading(1.0);
        bad.bad_values.push(crate::reading::BadValue {
            path: "/Dc/0/Current".into(),
            problem: "a text, not a number".into(),
        });
        let changes = run(&mut p, 5, 20, Some(&bad));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].1.previous, Some(BatteryState::Online));
        assert_eq!(changes[0].1.reason, "/Dc/0/Current is a text, not a number");
        let changes = run(&mut p, 20, 30, Some(&reading(2.0)));
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].1.previous, changes[0].1.state),
            (Some(BatteryState::Stale), BatteryState::Online)
        );
    }

    #[test]
    fn a_cell_count_that_changes_while_running_makes_it_not_online() {
        let with_cells = |n| BatteryReading {
            cells_per_battery: Some(n),
            ..reading(f64::from(n as u32))
        };
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 2, Some(&with_cells(16)));
        let changes = run(&mut p, 2, 4, Some(&with_cells(15)));
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].1.state, changes[0].1.reason.as_str()),
            (
                BatteryState::Stale,
                "/System/NrOfCellsPerBattery changed from 16 to 15"
            )
        );
        assert_eq!(p.batteries()[0].reading.cells_per_battery, Some(16));
        let changes = run(&mut p, 4, 5, Some(&with_cells(16)));
        assert_eq!(changes[0].1.state, BatteryState::Online);

        // With `batteries.cells` the configured count is the one.
        let mut p = Presence::new(TIMING).with_cells(Some(16));
        let changes = run(&mut p, 0, 1, Some(&with_cells(15)));
        assert_eq!(
            changes[0].1.reason,
            "/System/NrOfCellsPerBattery is 15, batteries.cells is 16"
        );
    }

    #[test]
    fn a_value_published_then_missing_makes_it_not_online_until_it_is_back() {
        let mut p = Presence::new(TIMING);
        let mut full = reading(1.0);
        full.max_cell_temperature_c = Some(25.0);
        run(&mut p, 0, 5, Some(&full));
        let mut without = full.clone();
        without.max_cell_temperature_c = None;
        let changes = run(&mut p, 5, 70, Some(&without));
        let states: Vec<_> = changes.iter().map(|(t, c)| (*t, c.state)).collect();
        assert_eq!(states, [(5, BatteryState::Stale), (65, BatteryState::Lost)]);
        assert_eq!(
            changes[0].1.reason,
            "/System/MaxCellTemperature no longer published"
        );
        assert_eq!(p.batteries()[0].reading, full, "its last complete reading");
        let changes = run(&mut p, 70, 71, Some(&full));
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    #[test]
    fn a_pack_that_never_published_a_value_is_not_asked_for_it() {
        let mut p = Presence::new(TIMING);
        let mut can = reading(1.0);
        can.max_cell_voltage_v = None;
        can.min_cell_voltage_v = None;
        let changes = run(&mut p, 0, 100, Some(&can));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    #[test]
    fn extremes_that_stop_are_taken_from_the_cells_but_cells_that_stop_are_missing() {
        let mut p = Presence::new(TIMING);
        let mut full = reading(1.0);
        full.cell_voltages_v = vec![Some(3.30); 16];
        full.cell_voltages_v[1] = Some(3.35);
        assert_eq!(
            run(&mut p, 0, 5, Some(&full))[0].1.state,
            BatteryState::Online
        );
        let mut no_extremes = full.clone();
        no_extremes.max_cell_voltage_v = None;
        no_extremes.min_cell_voltage_v = None;
        assert!(
            run(&mut p, 5, 10, Some(&no_extremes)).is_empty(),
            "still online"
        );
        assert_eq!(p.batteries()[0].reading.max_cell_voltage_v, Some(3.35));
        let mut no_cell = full.clone();
        no_cell.cell_voltages_v[1] = None;
        let changes = run(&mut p, 10, 11, Some(&no_cell));
        assert_eq!(
            (changes[0].1.state, changes[0].1.reason.as_str()),
            (BatteryState::Stale, "/Voltages/Cell2 no longer published")
        );
        // Fewer cells than before.
        let mut fewer = full.clone();
        fewer.cell_voltages_v.pop();
        run(&mut p, 11, 12, Some(&full));
        let changes = run(&mut p, 12, 13, Some(&fewer));
        assert_eq!(changes[0].1.reason, "/Voltages/Cell16 no longer published");
    }

    #[test]
    fn an_absurd_value_is_missing_and_noted_once_when_it_starts_and_once_when_it_ends() {
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 5, Some(&reading(1.0)));
        let mut absurd = reading(1.0);
        absurd.voltage_v = Some(1e9);
        let changes = run(&mut p, 5, 20, Some(&absurd));
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.state, BatteryState::Stale);
        assert_eq!(p.batteries()[0].reading.voltage_v, Some(53.0), "never 1e9");
        let notes = p.take_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].path, "/Dc/0/Voltage");
        assert_eq!(notes[0].implausible.as_ref().map(|i| i.value), Some(1e9));
        run(&mut p, 20, 21, Some(&reading(2.0)));
        let notes = p.take_notes();
        assert_eq!(
            notes
                .iter()
                .map(|n| (n.path.as_str(), n.implausible.is_some()))
                .collect::<Vec<_>>(),
            [("/Dc/0/Voltage", false)]
        );
        // An optional value never published plausibly is simply missing: online.
        let mut p = Presence::new(TIMING);
        let mut soc = reading(1.0);
        soc.soc_pct = Some(1e9);
        let changes = run(&mut p, 0, 3, Some(&soc));
        assert_eq!(changes[0].1.state, BatteryState::Online);
        assert_eq!(p.batteries()[0].reading.soc_pct, None);
        assert_eq!(p.take_notes().len(), 1);
        // Published plausibly first, then absurd: not online, naming the value.
        let mut good = reading(1.0);
        good.soc_pct = Some(50.0);
        run(&mut p, 3, 4, Some(&good));
        let changes = run(&mut p, 4, 5, Some(&soc));
        assert_eq!(changes[0].1.state, BatteryState::Stale);
        assert_eq!(
            changes[0].1.reason,
            "/Soc is 1000000000.0, outside 0 to 100"
        );
        assert_eq!(p.batteries()[0].reading.soc_pct, Some(50.0));
    }

    #[test]
    fn a_service_gone_before_it_was_part_of_the_bank_is_passing_not_lost() {
        // Never complete: passing as soon as it is gone.
        let mut p = Presence::new(TIMING);
        let mut incomplete = reading(1.0);
        incomplete.voltage_v = None;
        run(&mut p, 0, 1, Some(&incomplete));
        assert!(run(&mut p, 1, 2, None).is_empty(), "no change said");
        assert!(p.passing(SERVICE));
        // Complete for 10 s: held, then passing where it would be lost.
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 10, Some(&reading(1.0)));
        let changes = run(&mut p, 10, 100, None);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].1.state, BatteryState::Stale);
        assert!(p.passing(SERVICE));
        // Coming and going every second for 100 s: never there for `hold_for` at a stretch.
        let mut p = Presence::new(TIMING);
        for t in 0..100 {
            let seen = (t % 2 == 0).then(|| reading(f64::from(t)));
            p.observe(f64::from(t), SERVICE, "Bat1", seen.as_ref(), false);
        }
        run(&mut p, 100, 170, None);
        assert!(p.passing(SERVICE));
        // There for longer than `hold_for`: a battery of the bank, lost.
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 61, Some(&reading(1.0)));
        let changes = run(&mut p, 61, 130, None);
        assert_eq!(changes.last().map(|c| c.1.state), Some(BatteryState::Lost));
        assert!(!p.passing(SERVICE));
    }

    #[test]
    fn a_battery_whose_values_cannot_be_seen_is_held_then_lost_never_passing() {
        // Seen complete for one second only, then the host's view of the bus goes old: its
        // service is still there, so it is not a service passing by.
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 1, Some(&reading(1.0)));
        let held = p.observe_unseen(1.0, SERVICE, "Bat1").expect("a change");
        assert_eq!(
            (held.state, held.reason.as_str()),
            (BatteryState::Stale, "values not seen")
        );
        let mut last = None;
        for t in 2..100 {
            if let Some(change) = p.observe_unseen(f64::from(t), SERVICE, "Bat1") {
                last = Some(change.state);
            }
        }
        assert_eq!(last, Some(BatteryState::Lost));
        assert!(!p.passing(SERVICE));
        assert_eq!(p.batteries()[0].state, BatteryState::Lost);
    }

    /// A pack that lost its temperature sensor, then its driver restarted without it and
    /// without `/Soh`, back at 190 s.
    fn back_without_its_temperature(
        p: &mut Presence,
        temperature_c: f64,
    ) -> (BatteryReading, BatteryReading) {
        let mut full = reading(1.0);
        full.max_cell_temperature_c = Some(temperature_c);
        full.soh_pct = Some(98.0);
        run(p, 0, 70, Some(&full));
        let mut without = full.clone();
        without.max_cell_temperature_c = None;
        // Its temperature stops while the service stays: held, then lost, as long as it lasts.
        let changes = run(p, 70, 140, Some(&without));
        assert_eq!(changes.last().map(|c| c.1.state), Some(BatteryState::Lost));
        run(p, 140, 190, None);
        let back = BatteryReading {
            max_cell_temperature_c: None,
            soh_pct: None,
            ..reading(2.0)
        };
        (full, back)
    }

    #[test]
    fn a_driver_back_without_a_value_the_guard_reads_is_held_to_it_until_back_for_hold_for() {
        let mut p = Presence::new(TIMING).with_guard(crate::guard::tests::BOUNDS);
        let (full, back) = back_without_its_temperature(&mut p, 25.0);
        // The temperature, which the guard reads, is still asked for, and its last complete
        // reading stands; /Soh is stated anew at once.
        let changes = run(&mut p, 190, 249, Some(&back));
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(p.batteries()[0].reading, full);
        // Back for hold_for without it, its last temperature far from the guard's bounds: no
        // longer asked for (a driver of another version, a sensor gone).
        let changes = run(&mut p, 249, 251, Some(&back));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].0, changes[0].1.state),
            (250, BatteryState::Online)
        );
        assert_eq!(
            changes[0].1.reason,
            "back for 60 s without /System/MaxCellTemperature: no longer asked for"
        );
    }

    #[test]
    fn a_driver_back_without_the_temperature_it_last_gave_near_a_bound_stays_out() {
        // Its last temperature, 44 °C, within the derating below the charge window's 45 °C:
        // the guard must see it again before it may let go.
        let mut p = Presence::new(TIMING).with_guard(crate::guard::tests::BOUNDS);
        let (full, back) = back_without_its_temperature(&mut p, 44.0);
        let mut changes = Vec::new();
        for t in 190..1000 {
            let moving = BatteryReading {
                current_a: Some(2.0 + f64::from(t % 2)),
                ..back.clone()
            };
            changes.extend(run(&mut p, t, t + 1, Some(&moving)));
        }
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(p.batteries()[0].state, BatteryState::Lost);
        assert_eq!(p.batteries()[0].reading, full);
        // Its temperature back, cooler: online.
        let cool = BatteryReading {
            max_cell_temperature_c: Some(30.0),
            ..back
        };
        let changes = run(&mut p, 1000, 1001, Some(&cool));
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    #[test]
    fn a_driver_back_while_held_is_held_again_from_its_return() {
        // Gone 45 s (held), back with its cells 20 s late: held all along, never lost.
        let mut p = Presence::new(TIMING);
        run(&mut p, 0, 70, Some(&reading(1.0)));
        let gone = run(&mut p, 70, 115, None);
        assert_eq!(gone.last().map(|c| c.1.state), Some(BatteryState::Stale));
        let mut no_cells = reading(2.0);
        no_cells.max_cell_voltage_v = None;
        no_cells.min_cell_voltage_v = None;
        let changes = run(&mut p, 115, 135, Some(&no_cells));
        assert!(changes.is_empty(), "{changes:?}");
        let changes = run(&mut p, 135, 136, Some(&reading(3.0)));
        assert_eq!(changes[0].1.state, BatteryState::Online);
    }

    #[test]
    fn a_driver_back_within_hold_for_is_held_with_its_last_cells_until_they_come() {
        let mut p = Presence::new(TIMING);
        let mut high = reading(1.0);
        high.max_cell_voltage_v = Some(3.63);
        run(&mut p, 0, 70, Some(&high));
        // Restarting: gone for 40 s, back with its cells not yet published.
        run(&mut p, 70, 110, None);
        let mut no_cells = reading(2.0);
        no_cells.max_cell_voltage_v = None;
        no_cells.min_cell_voltage_v = None;
        let changes = run(&mut p, 110, 120, Some(&no_cells));
        assert!(changes.is_empty(), "{changes:?}");
        let held = &p.batteries()[0];
        assert_eq!(held.state, BatteryState::Stale);
        assert_eq!(held.reading.max_cell_voltage_v, Some(3.63));
        // Its cells come: online with them.
        let changes = run(&mut p, 120, 121, Some(&reading(2.0)));
        assert_eq!(changes[0].1.state, BatteryState::Online);
        assert_eq!(p.batteries()[0].reading.max_cell_voltage_v, Some(3.35));
    }
}
