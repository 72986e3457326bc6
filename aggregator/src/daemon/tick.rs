//! One tick of the daemon, top-down: a snapshot of the bus, which services are batteries,
//! presence, the core's tick, publishing, then the side effects (feed-in write, state file).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aggregator_core::discovery::{Device, Nameplate, Role, Roster};
use aggregator_core::engine::{Event, Outcome, TickInputs};
use aggregator_core::feedin::FeedInEvent;
use aggregator_core::presence::{Battery, Change, Note, Presence, Timing, COMPLETE};
use aggregator_core::published::cell_path;
use aggregator_core::reading::BatteryReading;
use aggregator_core::value::Value;
use plugin_api::{BatteryState, DcSourceView, LocalDate, ShuntView, SolarChargerView, VebusView};

use super::{gather, log_event, Daemon};
use crate::bus::client::{self, Background, SETTINGS};
use crate::bus::monitor::{Cache, Class, FEED_IN_SETTING};
use crate::clock::calendar;
use crate::config::Config;
use crate::record::{self, PublishedValues};

/// What the tick takes from the monitor's cache.
pub struct BusSnapshot {
    /// Battery-class services that may be ours.
    batteries: Vec<Seen>,
    vebus: Vec<VebusView>,
    solar_chargers: Vec<SolarChargerView>,
    smartshunts: Vec<ShuntView>,
    dc_sources: Vec<DcSourceView>,
    monitor_soc: Option<f64>,
    low_soc: Option<i64>,
    feed_in_setting: Option<i64>,
    /// Whether `com.victronenergy.settings` is on the bus.
    settings_present: bool,
    /// Services found not ours whose process is no longer on the bus.
    ignored_gone: Vec<String>,
    /// Why the cache is too old to count as what the services say now, when it is (the
    /// daemon's view of the bus is behind): then nothing of it is taken as current.
    pub(crate) stale_view: Option<String>,
}

/// A battery-class service that may be ours, as the tick takes it from the cache.
struct Seen {
    service: String,
    /// Its owner and nameplate, when its membership is to be decided: seen for the first
    /// time, or owned by another process than the one decided (docs/discovery.md §2).
    decide: Option<(String, Nameplate)>,
    reading: BatteryReading,
}

/// The readings of the bank's batteries at a tick, in the order of their services: looked up
/// by service where they were taken, not moved into a map of their own (each is a kilobyte,
/// written into memory gone cold since the tick before).
pub(super) struct Readings(Vec<Seen>);

impl Readings {
    /// The readings `seen`, in any order.
    fn of(mut seen: Vec<Seen>) -> Self {
        // The cache hands them out in order: sorted only when it did not.
        if !seen.is_sorted_by(|a, b| a.service < b.service) {
            seen.sort_unstable_by(|a, b| a.service.cmp(&b.service));
        }
        Readings(seen)
    }

    /// The reading of `service`, if it is a battery of the bank at this tick.
    fn get(&self, service: &str) -> Option<&BatteryReading> {
        let k = (self.0)
            .binary_search_by(|s| s.service.as_str().cmp(service))
            .ok()?;
        Some(&self.0[k].reading)
    }
}

#[cfg(test)]
impl Readings {
    fn services(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|s| s.service.as_str())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn extend(&mut self, other: Readings) {
        let mut all = std::mem::take(&mut self.0);
        all.extend(other.0);
        *self = Readings::of(all);
    }
}

/// A service found to be a battery of the bank.
pub(super) struct KnownBattery {
    name: String,
    /// The unique name of the process it was decided for: another one is decided anew.
    owner: String,
    /// Its own `/System/NrOfCellsPerBattery`, when it publishes one.
    cells: Option<u32>,
    /// Left out: its cell count is not the bank's.
    excluded: bool,
}

/// Seconds a service that came and went must stay away, or stay, for its episode to end.
const PASSING_QUIET_S: f64 = 60.0;

/// A service that came and went before it was part of the bank: one line when it first
/// does, one with the count when it stops, nothing in between (a driver restarting in a loop
/// must not fill a device's small flash with log lines).
struct Passing {
    name: String,
    /// Times it went away.
    count: u32,
    since_s: f64,
    /// When it last went away, or was last seen again.
    last_s: f64,
}

/// Which battery-class services belong to the bank, decided once per process that owns the
/// service's name (docs/discovery.md §2).
pub struct BankMembers {
    roster: Roster,
    /// `batteries.cells`.
    cells: Option<u32>,
    known: BTreeMap<String, KnownBattery>,
    /// Services that are not ours, with the owner they were decided for.
    ignored: BTreeMap<String, String>,
    /// Batteries whose service another device took, by name: not found since
    /// (docs/discovery.md §5).
    departed: BTreeSet<String>,
    /// Services coming and going, by service name.
    passing: BTreeMap<String, Passing>,
    /// Batteries whose service goes and comes back, by service name.
    flapping: BTreeMap<String, Flapping>,
    /// Services that went away before they were part of the bank, and since when: their
    /// names are forgotten after [`FORGET_AFTER_S`].
    gone_since: BTreeMap<String, f64>,
    /// When `gone_since` is looked through next.
    sweep_at_s: f64,
}

/// Seconds after which the name given to a service that was never part of the bank, and
/// has been gone since, is forgotten: names that keep changing (a USB or BLE adapter
/// numbered anew, a driver with a counter in its name) must not grow the daemon's memory for
/// the life of the process.
const FORGET_AFTER_S: f64 = 3600.0;

/// A battery's service going away and coming back (docs/discovery.md §6): the first time is
/// said (gone, lost if it stays away that long, back); every going, loss and return after it
/// is counted, and said in one line once it has stayed, or stayed away, for
/// [`PASSING_QUIET_S`].
struct Flapping {
    name: String,
    /// Times it went away since the one said.
    more: u32,
    since_s: f64,
    /// When it last went away or came back.
    last_change_s: f64,
    /// When it last went away.
    last_gone_s: f64,
    /// Its service is away (gone, not back yet).
    away: bool,
    /// The first time (gone, back) was said: what follows is counted.
    counting: bool,
    /// Its state after the last change, for the line that ends the episode.
    state: BatteryState,
}

impl BankMembers {
    pub(crate) fn new(roster: Roster, cells: Option<u32>) -> Self {
        Self {
            roster,
            cells,
            known: BTreeMap::new(),
            ignored: BTreeMap::new(),
            departed: BTreeSet::new(),
            passing: BTreeMap::new(),
            flapping: BTreeMap::new(),
            gone_since: BTreeMap::new(),
            sweep_at_s: 0.0,
        }
    }

    /// The bank's members as `batteries:` and our own service name define them.
    pub fn of(config: &Config) -> Self {
        let roster = Roster::new((&config.batteries).into(), &config.publish.service_name);
        Self::new(roster, config.batteries.cells)
    }

    /// Whether a service owned by `owner` is read this tick (`None`: not ours), and whether its
    /// membership is to be decided (its nameplate is wanted).
    fn wants(&self, service: &str, owner: &str) -> Option<bool> {
        if self.ignored.get(service).is_some_and(|o| o == owner) {
            return None;
        }
        Some(self.known.get(service).is_none_or(|k| k.owner != owner))
    }

    /// Whether a known battery's service is owned by another process than the one decided.
    fn owned_anew(&self, service: &str, owner: &str) -> bool {
        self.known.get(service).is_some_and(|k| k.owner != owner)
    }

    /// Decides the services seen for the first time or owned by a new process; returns the
    /// readings of the bank's batteries by service.
    fn classify(&mut self, presence: &mut Presence, mut seen: Vec<Seen>) -> Readings {
        if seen.iter().all(|s| s.decide.is_none()) {
            return Readings::of(seen);
        }
        // Known batteries not settled with their process: gone from the bus, or owned anew.
        // A device found on another service may have moved from one of them.
        let mut unsettled: BTreeSet<String> = self.known.keys().cloned().collect();
        for s in seen.iter().filter(|s| s.decide.is_none()) {
            unsettled.remove(&s.service);
        }
        // The known services first: a device that left one is free before another names it.
        seen.sort_by_key(|s| !self.known.contains_key(&s.service));
        let mut readings = Vec::with_capacity(seen.len());
        for mut s in seen {
            if let Some((owner, nameplate)) = s.decide.take() {
                let cells = (s.reading.cells_per_battery).and_then(|n| u32::try_from(n).ok());
                let decided =
                    self.decide(presence, &s.service, owner, &nameplate, cells, &unsettled);
                if !decided {
                    continue;
                }
                // Settled now: no device found later at this tick moved from it.
                unsettled.remove(&s.service);
            }
            readings.push(s);
        }
        Readings::of(readings)
    }

    /// Decides one service from its nameplate: whether it is a battery of the bank, and which.
    /// A new process on a known battery's service is the same battery when it is the same
    /// device, and another one otherwise, the battery that was there leaving the bank. Returns
    /// whether the service's reading is the bank's.
    fn decide(
        &mut self,
        presence: &mut Presence,
        service: &str,
        owner: String,
        nameplate: &Nameplate,
        cells: Option<u32>,
        unsettled: &BTreeSet<String>,
    ) -> bool {
        match self.roster.rule_out(service, nameplate) {
            // A battery (`rule_out` names none).
            None | Some(Role::Battery(_)) => {}
            // Undecided: not read meanwhile (a known battery is as while its service is away).
            Some(Role::Unknown) => return false,
            Some(Role::Monitor) => {
                if self.depart(presence, service, "a battery monitor") {
                    self.roster.leave(service);
                }
                return false;
            }
            Some(Role::Ignored(why)) => {
                if self.depart(presence, service, &format!("not of the bank: {why}")) {
                    self.roster.leave(service);
                }
                tracing::debug!("{service} ignored: {why}");
                self.ignored.insert(service.to_string(), owner);
                return false;
            }
        }
        if let Some(known) = self.known.get(service) {
            let name = self.roster.name(service, nameplate);
            if name == known.name {
                // The same pack (its driver restarted): only what it publishes is new.
                let known = self.known.get_mut(service).expect("known");
                known.owner = owner;
                known.cells = cells.or(known.cells);
                return true;
            }
            // Named anew: the roster keeps the old name for the device that left.
            self.depart(presence, service, &format!("battery {name}"));
            self.found(service, owner, name, cells, None);
            return true;
        }
        // A device found again where another service had it (USB adapters enumerated in
        // another order): its name goes with it.
        let device = Device::of(nameplate);
        let from = (device.identifiable())
            .then(|| {
                unsettled.iter().find(|other| {
                    *other != service
                        && self.known.contains_key(*other)
                        && (self.roster.device_on(other)).is_some_and(|d| d.same(&device))
                })
            })
            .flatten();
        if let Some(from) = from {
            self.roster.leave(from);
            self.known.remove(from);
            self.flapping.remove(from);
            presence.forget(from);
        }
        let name = self.roster.name(service, nameplate);
        self.found(service, owner, name, cells, from.map(String::as_str));
        true
    }

    /// A battery of the bank found on `service` (`from`: the service it was on).
    fn found(
        &mut self,
        service: &str,
        owner: String,
        name: String,
        cells: Option<u32>,
        from: Option<&str>,
    ) {
        if let Some(from) = from {
            tracing::info!("battery {name} found: {service} (it was on {from})");
        } else if self.departed.remove(&name) {
            tracing::info!("battery {name} found again: {service}");
        } else if self.passing.contains_key(service) {
            tracing::debug!("battery {name} found again: {service}");
        } else {
            tracing::info!("battery {name} found: {service}");
        }
        let known = KnownBattery {
            name,
            owner,
            cells,
            excluded: false,
        };
        self.gone_since.remove(service);
        self.known.insert(service.to_string(), known);
    }

    /// The battery known on `service` left the bank: another device (`now`) has its service.
    /// It counts as not found until it is found again, here or on another service
    /// (docs/discovery.md §5). Whether there was one.
    fn depart(&mut self, presence: &mut Presence, service: &str, now: &str) -> bool {
        let Some(known) = self.known.remove(service) else {
            return false;
        };
        self.flapping.remove(service);
        presence.forget(service);
        let name = known.name;
        tracing::warn!(
            "battery {name} ({service}): the service is another device now ({now}); {name} \
             counts as not found until it is found again"
        );
        self.departed.insert(name);
        true
    }

    /// Leaves out the packs whose cell count is not the bank's (another nominal voltage is
    /// never merged), one log line when a pack is left out or taken back.
    fn leave_out_other_cell_counts(&mut self, presence: &mut Presence, readings: &Readings) {
        // A pack's count is the first it publishes: one that changes later is a glitch that
        // presence holds the pack through, not another nominal voltage.
        for (service, known) in &mut self.known {
            if known.cells.is_none() {
                known.cells = readings
                    .get(service)
                    .and_then(|r| r.cells_per_battery)
                    .and_then(|n| u32::try_from(n).ok());
            }
        }
        let bank = self.bank_cells();
        let configured = self.cells.is_some();
        for (service, known) in &mut self.known {
            let excluded = matches!(known.cells, Some(have) if bank != 0 && have != bank);
            if excluded == known.excluded {
                continue;
            }
            known.excluded = excluded;
            let (name, have) = (&known.name, known.cells.unwrap_or(0));
            if !excluded {
                tracing::info!("battery {name} has the bank's {bank} cells: merged again");
            } else if configured {
                tracing::error!(
                    "battery {name} ({service}) has {have} cells, batteries.cells is {bank}: \
                     left out"
                );
            } else {
                tracing::error!(
                    "battery {name} ({service}) has {have} cells, the bank's other batteries \
                     {bank}: left out (batteries.cells sets the count)"
                );
            }
            if excluded {
                presence.forget(service);
            }
        }
    }

    /// Hands this tick's readings to presence, one log line per change of state. With a
    /// `stale_view` (why the readings are old), no reading counts: the batteries are held,
    /// then lost, as when their values stop.
    fn observe(
        &mut self,
        presence: &mut Presence,
        now_s: f64,
        readings: &Readings,
        pass_through: bool,
        stale_view: Option<&str>,
    ) {
        self.leave_out_other_cell_counts(presence, readings);
        for (service, known) in &self.known {
            if known.excluded {
                continue;
            }
            if let Some(why) = stale_view {
                if let Some(mut change) = presence.observe_unseen(now_s, service, &known.name) {
                    change.reason = why.to_string();
                    log_change(&change);
                }
                continue;
            }
            let reading = readings.get(service);
            if let Some(change) =
                presence.observe(now_s, service, &known.name, reading, pass_through)
            {
                if self.passing.contains_key(service)
                    || !say_come_go(&mut self.flapping, service, &change, now_s)
                {
                    tracing::debug!("battery {} (coming and going): {change:?}", known.name);
                } else {
                    log_change(&change);
                }
            }
        }
        for note in presence.take_notes() {
            log_note(&note);
        }
        self.forget_passing(presence, now_s);
        self.forget_names(now_s);
        self.flapping.retain(|service, f| {
            if now_s - f.last_change_s < PASSING_QUIET_S {
                return true;
            }
            let (name, n, over_s) = (&f.name, f.more, f.last_gone_s - f.since_s);
            if n == 0 {
                // Nothing was counted: every change was said.
            } else if f.away {
                let state = if f.state == BatteryState::Lost {
                    "lost"
                } else {
                    "held"
                };
                tracing::warn!(
                    "battery {name} ({service}) went away and came back {n} more times in \
                     {over_s:.0} s; gone for {:.0} s now: {state}",
                    now_s - f.last_gone_s
                );
            } else {
                tracing::info!(
                    "battery {name} ({service}) went away and came back {n} more times in \
                     {over_s:.0} s; back for {:.0} s now",
                    now_s - f.last_change_s
                );
            }
            false
        });
    }

    /// Forgets the names of the services gone for [`FORGET_AFTER_S`] that were never part of
    /// the bank; looked through once a minute.
    fn forget_names(&mut self, now_s: f64) {
        if now_s < self.sweep_at_s {
            return;
        }
        self.sweep_at_s = now_s + PASSING_QUIET_S;
        let roster = &mut self.roster;
        self.gone_since.retain(|service, since| {
            let keep = now_s - *since < FORGET_AFTER_S;
            if !keep {
                roster.forget(service);
            }
            keep
        });
    }

    /// The services found not ours whose process is no longer on the bus (`owner_of`: a
    /// service's owner now, if it is there).
    fn ignored_gone<'a>(&self, owner_of: impl Fn(&str) -> Option<&'a str>) -> Vec<String> {
        (self.ignored.iter())
            .filter(|(service, owner)| owner_of(service) != Some(owner.as_str()))
            .map(|(service, _)| service.clone())
            .collect()
    }

    /// Forgets the services not ours whose process left the bus: another process on the
    /// name is decided anew anyway.
    fn forget_ignored(&mut self, gone: &[String]) {
        for service in gone {
            self.ignored.remove(service);
        }
    }

    /// Forgets the services that went away before they were part of the bank: never counted
    /// as lost batteries. One line per service and episode.
    fn forget_passing(&mut self, presence: &mut Presence, now_s: f64) {
        let gone: Vec<String> = self
            .known
            .keys()
            .filter(|service| presence.passing(service))
            .cloned()
            .collect();
        for service in gone {
            presence.forget(&service);
            let Some(known) = self.known.remove(&service) else {
                continue;
            };
            self.gone_since.insert(service.clone(), now_s);
            match self.passing.get_mut(&service) {
                Some(p) => {
                    p.count += 1;
                    p.last_s = now_s;
                }
                None => {
                    tracing::info!(
                        "battery {} ({service}) went away before it was part of the bank: not \
                         counted as lost; if it comes and goes again, one line says how often",
                        known.name
                    );
                    self.passing.insert(
                        service,
                        Passing {
                            name: known.name,
                            count: 1,
                            since_s: now_s,
                            last_s: now_s,
                        },
                    );
                }
            }
        }
        if self.passing.is_empty() {
            return;
        }
        let states: BTreeMap<&str, BatteryState> = presence.states().collect();
        self.passing.retain(|service, p| {
            let here = states.get(service.as_str()) == Some(&BatteryState::Online);
            if !here && states.contains_key(service.as_str()) {
                // Back but not online yet: the episode goes on.
                p.last_s = now_s;
            }
            if now_s - p.last_s < PASSING_QUIET_S {
                return true;
            }
            let (name, n, over_s) = (&p.name, p.count, p.last_s - p.since_s);
            if here {
                tracing::info!(
                    "battery {name} ({service}) stays now, after going away {n} times in {over_s:.0} s"
                );
            } else {
                tracing::info!(
                    "battery {name} ({service}) went away {n} times in {over_s:.0} s; gone since"
                );
            }
            false
        });
    }

    /// Batteries known, those left out included (a pack left out for its cell count counts
    /// as a battery not online), and those whose service another device took, not found
    /// since.
    fn counted(&self) -> u32 {
        (self.known.len() + self.departed.len()) as u32
    }

    /// Names of the batteries left out for their cell count.
    fn left_out(&self) -> Vec<String> {
        self.known
            .values()
            .filter(|k| k.excluded)
            .map(|k| k.name.clone())
            .collect()
    }

    /// The bank's cell count: `batteries.cells`, else the count most packs publish (a tie
    /// goes to the first pack by service name); 0 when nobody knows it.
    fn bank_cells(&self) -> u32 {
        if let Some(cells) = self.cells {
            return cells;
        }
        let mut best = (0, 0);
        for cells in self.known.values().filter_map(|k| k.cells) {
            let votes = self
                .known
                .values()
                .filter(|k| k.cells == Some(cells))
                .count();
            if votes > best.1 {
                best = (cells, votes);
            }
        }
        best.0
    }
}

/// One line per change: a bad value that lasts is logged when it starts and when the battery
/// is good again, never per tick.
fn log_change(change: &Change) {
    let name = &change.name;
    let reason = &change.reason;
    match (change.previous, change.state) {
        (None, BatteryState::Online) => tracing::info!("battery {name} online"),
        (Some(_), BatteryState::Online) if reason == COMPLETE => {
            tracing::info!("battery {name} online again")
        }
        (Some(_), BatteryState::Online) => tracing::info!("battery {name} online again ({reason})"),
        (None, _) => tracing::warn!("battery {name} not online yet ({reason})"),
        (Some(_), BatteryState::Stale) => {
            tracing::warn!("battery {name} not online ({reason}): holding its last values")
        }
        (Some(_), BatteryState::Lost) => tracing::warn!("battery {name} lost ({reason})"),
    }
}

/// Whether a change of a battery's state is said (docs/discovery.md §6): a service that goes
/// away and comes back is said the first time (gone, lost, back); its goings, losses and
/// returns after that are counted until it has stayed, or stayed away, for
/// [`PASSING_QUIET_S`]. Any other change (a bad value, a frozen pack) is always said.
fn say_come_go(
    flapping: &mut BTreeMap<String, Flapping>,
    service: &str,
    change: &Change,
    now_s: f64,
) -> bool {
    let service_gone = change.reason == "service gone";
    let gone = service_gone && change.previous == Some(BatteryState::Online);
    let stays_away = service_gone && !gone;
    let back = change.state == BatteryState::Online && change.previous.is_some();
    let Some(f) = flapping.get_mut(service) else {
        if gone {
            flapping.insert(
                service.to_string(),
                Flapping {
                    name: change.name.clone(),
                    more: 0,
                    since_s: now_s,
                    last_change_s: now_s,
                    last_gone_s: now_s,
                    away: true,
                    counting: false,
                    state: change.state,
                },
            );
        }
        return true;
    };
    if gone {
        f.more += u32::from(f.counting);
        (f.last_change_s, f.last_gone_s) = (now_s, now_s);
        f.away = true;
    } else if stays_away && f.away {
        // Lost while away: part of this going.
    } else if back && f.away {
        f.last_change_s = now_s;
        f.away = false;
        f.state = change.state;
        // The first return is said; from then on the comings and goings are counted.
        return !std::mem::replace(&mut f.counting, true);
    } else {
        return true;
    }
    f.state = change.state;
    !f.counting
}

/// One line when a value becomes implausible, one when it is plausible again.
fn log_note(note: &Note) {
    let name = &note.name;
    match &note.implausible {
        Some(i) => tracing::warn!("battery {name}: {i}; taken as missing"),
        None => tracing::info!("battery {name}: {} plausible again", note.path),
    }
}

/// `/Voltages/<battery>_Cell<k>` of the batteries online or held, when published.
pub fn cell_paths(publish: bool, batteries: &[Battery]) -> Vec<(String, Option<f64>)> {
    if !publish {
        return Vec::new();
    }
    batteries
        .iter()
        .filter(|b| b.state != BatteryState::Lost)
        .flat_map(|b| {
            b.reading
                .cell_voltages_v
                .iter()
                .enumerate()
                .map(|(k, v)| (cell_path(&b.name, k + 1), *v))
        })
        .collect()
}

/// What the tick takes from the monitor's cache, read once.
pub fn snapshot(cache: &Cache, members: &BankMembers, config: &Config) -> BusSnapshot {
    // Room for the bank and one more, so that no reading is moved twice.
    let mut batteries = Vec::with_capacity(members.known.len() + 1);
    // Told apart once a tick: the name test is a good part of a large bank's gathering.
    let mut monitors = Vec::new();
    for (service, s) in cache.of_class(Class::Battery) {
        if gather::is_monitor(s) {
            monitors.push((service, s));
            // A battery's service now owned by a monitor: decided, so the battery leaves.
            if members.owned_anew(service, &s.owner) {
                batteries.push(Seen {
                    service: service.clone(),
                    decide: Some((s.owner.clone(), gather::nameplate(s))),
                    reading: BatteryReading::default(),
                });
            }
            continue;
        }
        let Some(decide) = members.wants(service, &s.owner) else {
            continue;
        };
        let decide = decide.then(|| (s.owner.clone(), gather::nameplate(s)));
        let reading = gather::battery_reading(s);
        batteries.push(Seen {
            service: service.clone(),
            decide,
            reading,
        });
    }
    BusSnapshot {
        batteries,
        vebus: gather::vebus(cache),
        solar_chargers: gather::solar_chargers(cache),
        smartshunts: gather::smartshunts(cache, &monitors),
        dc_sources: gather::dc_sources(cache),
        monitor_soc: (config.soc.monitor())
            .and_then(|device| gather::monitor_soc(&monitors, device)),
        low_soc: gather::single_integer(cache, Class::System, "/SystemState/LowSoc"),
        feed_in_setting: gather::single_integer(cache, Class::Settings, FEED_IN_SETTING),
        settings_present: cache.of_class(Class::Settings).next().is_some(),
        ignored_gone: members
            .ignored_gone(|service| cache.services.get(service).map(|s| s.owner.as_str())),
        stale_view: None,
    }
}

/// Presence with the timing and cell count of `batteries:` and the guard's bounds.
pub fn presence_of(config: &Config) -> Presence {
    Presence::new(Timing {
        hold_for_s: config.batteries.hold_for.as_secs_f64(),
        frozen_after_s: config.batteries.frozen_after.as_secs_f64(),
    })
    .with_cells(config.batteries.cells)
    .with_guard(aggregator_core::engine::Settings::from(config).guard)
}

/// How long a tick reads the value connection at most to catch up with the bus: half a tick,
/// at most 500 ms (the tick's work must still be done in time).
pub(crate) fn catch_up_limit(config: &Config) -> Duration {
    (config.update_interval / 2).min(Duration::from_millis(500))
}

/// The age of the view of the bus beyond which its values count as old: three ticks, at
/// least 2 s (so that one slow tick on a busy machine is not an episode).
pub(crate) fn stale_view_after(config: &Config) -> Duration {
    (config.update_interval * 3).max(Duration::from_secs(2))
}

/// Episodes of an old view of the bus.
#[derive(Debug, Default)]
pub(crate) struct ViewAge {
    /// Since when the view is too old to count as current, while it is.
    since: Option<Instant>,
}

/// The start or end of an episode, for the log.
#[derive(Debug, PartialEq)]
pub(crate) enum ViewNews {
    /// The view became too old: its age.
    Behind(Duration),
    /// It is current again: how long it was behind.
    CaughtUp(Duration),
}

impl ViewAge {
    /// The view's `age` at `now` against `bound`: the reason it counts as old (the same text
    /// all through an episode, for the mode), and the news of an episode starting or ending.
    pub(crate) fn update(
        &mut self,
        age: Duration,
        bound: Duration,
        now: Instant,
    ) -> (Option<String>, Option<ViewNews>) {
        let news = match (age > bound, self.since) {
            (true, None) => {
                self.since = Some(now.checked_sub(age).unwrap_or(now));
                Some(ViewNews::Behind(age))
            }
            (false, Some(since)) => {
                self.since = None;
                Some(ViewNews::CaughtUp(now.saturating_duration_since(since)))
            }
            _ => None,
        };
        let reason = self.since.map(|_| {
            format!(
                "the daemon's view of the bus is more than {} s old",
                bound.as_secs_f64()
            )
        });
        (reason, news)
    }
}

/// When a tick happens: monotonic seconds, the local date, seconds since the last tick.
#[derive(Clone, Copy, Debug)]
pub struct TickTime {
    pub now_s: f64,
    pub date: LocalDate,
    pub dt_s: f64,
}

/// From a snapshot to the engine's inputs: classification, presence (at `now_s`, monotonic
/// seconds) and the bank's counts. The daemon's tick and `simulate` both run this.
pub fn inputs(
    snapshot: BusSnapshot,
    members: &mut BankMembers,
    presence: &mut Presence,
    pass_through: bool,
    config: &Config,
    time: TickTime,
) -> (Vec<Battery>, TickInputs) {
    presence.set_outside_current(outside_current(&snapshot));
    members.forget_ignored(&snapshot.ignored_gone);
    let readings = members.classify(presence, snapshot.batteries);
    let stale = snapshot.stale_view.as_deref();
    members.observe(presence, time.now_s, &readings, pass_through, stale);
    let batteries = presence.batteries();
    let inputs = TickInputs {
        cells: members.bank_cells(),
        left_out: members.left_out(),
        expected: (config.batteries.expected).unwrap_or(members.counted()),
        vebus: snapshot.vebus,
        solar_chargers: snapshot.solar_chargers,
        smartshunts: snapshot.smartshunts,
        dc_sources: snapshot.dc_sources,
        monitor_soc: snapshot.monitor_soc,
        low_soc: snapshot.low_soc,
        // An old value is not what the setting holds now: nothing is written from it.
        feed_in_setting: snapshot.feed_in_setting.filter(|_| stale.is_none()),
        date: time.date,
        dt_s: time.dt_s,
    };
    (batteries, inputs)
}

/// The largest current of the devices outside the packs (Multis, chargers, other DC devices,
/// shunts), A: whether the bank moves, for the frozen check (docs/battery-states.md §4).
fn outside_current(snapshot: &BusSnapshot) -> f64 {
    let vebus = snapshot.vebus.iter().map(|v| v.current_a);
    let solar = snapshot.solar_chargers.iter().map(|c| c.current_a);
    let shunts = snapshot.smartshunts.iter().map(|s| s.current_a);
    let others = snapshot.dc_sources.iter().map(|d| d.current_a);
    vebus
        .chain(solar)
        .chain(shunts)
        .chain(others)
        .filter_map(|a| a.into_option())
        .filter(|a| a.is_finite())
        .fold(0.0, |most, a| most.max(a.abs()))
}

impl Daemon {
    pub(super) async fn tick(&mut self) {
        let now = Instant::now();
        let dt_s = self
            .bank
            .last_tick
            .map_or(0.0, |last| now.duration_since(last).as_secs_f64());
        self.bank.last_tick = Some(now);
        let now_s = now.duration_since(self.bank.started).as_secs_f64();
        self.log_discovery();

        let age = self
            .link
            .monitor
            .catch_up(catch_up_limit(&self.config))
            .await;
        let stale_view = self.view_age(age);
        let mut snapshot = self
            .link
            .monitor
            .read(|cache| snapshot(cache, &self.bank.members, &self.config));
        snapshot.stale_view = stale_view.clone();
        if self.settings.pending && snapshot.settings_present {
            self.settings_appeared(now).await;
        } else if stale_view.is_none() {
            self.follow_custom_name().await;
        }
        let last_plausible_day = self.bank.dates.last_plausible_day();
        let date = self.bank.dates.date(calendar::today(), now_s);
        // A date taken back after a clock set ahead is saved at once: a power cut must not bring
        // the wrong one back for another day (docs/state.md §2).
        let set_back = self.bank.dates.last_plausible_day() < last_plausible_day;
        let (batteries, inputs) = inputs(
            snapshot,
            &mut self.bank.members,
            &mut self.bank.presence,
            self.bank.pass_through,
            &self.config,
            TickTime { now_s, date, dt_s },
        );
        let restore_point = (self.recorder.as_ref())
            .filter(|r| r.wants_state())
            .map(|_| (self.bank.engine.state(), self.bank.engine.memory()));
        // The shadow computes on its own thread while the live engine does.
        let publishing = self.link.registered;
        if let Some(shadow) = &mut self.shadow {
            shadow.give(&batteries, &inputs, publishing);
        }
        let mut outcome = self.bank.engine.tick(&batteries, &inputs);
        outcome.save_state |= set_back;
        for event in &outcome.events {
            log_event(event, &self.bank.store.path());
        }
        if let Some(why) = stale_view {
            outcome.mode = format!("{}; {why}", outcome.mode);
        }
        self.publish(&batteries, &outcome, &inputs, now).await;
        self.side_effects(&outcome).await;
        // Only then is the shadow's answer waited for (within its budget).
        let shadow = match &mut self.shadow {
            Some(shadow) => Some(shadow.take().await),
            None => None,
        };
        if let Some(shadow) = &shadow {
            self.last_shadow = Some(shadow.as_ref().map(|s| s.limits).map_err(|m| *m));
        }
        let tick = record::TickRecord {
            now_s,
            batteries: &batteries,
            inputs: &inputs,
            publishing: Some(publishing),
            state: restore_point.as_ref().map(|(state, _)| state),
            memory: restore_point.as_ref().map(|(_, memory)| memory),
            out: Some(&outcome),
            shadow: shadow
                .as_ref()
                .map(|s| s.as_ref().map_err(|missing| *missing)),
        };
        self.record(&tick, &outcome);
        self.summary(now, &outcome);
    }

    /// The tick into the flight recorder; a recording saved when something happened (once
    /// per episode of its cause: [`record::Happenings`]).
    fn record(&mut self, tick: &record::TickRecord, outcome: &Outcome) {
        let Some(recorder) = &mut self.recorder else {
            return;
        };
        recorder.push(tick);
        let before = self.recorded_before.take();
        let happened = record::happenings(
            &self.config.record.save_on,
            outcome,
            before.as_ref().map(|(p, _)| p),
            before.as_ref().map_or(0, |(_, lost)| *lost),
        );
        self.recorded_before = Some((PublishedValues::of(outcome), outcome.lost.len()));
        if let Some(what) = self.happenings.judge(tick.now_s, &happened) {
            self.save_recording(&what);
        }
    }

    /// Whether the view of the bus is too old to count as current: the reason, for the
    /// mode and the batteries' log lines, while it is; one log line when it starts and one
    /// when it ends.
    fn view_age(&mut self, age: Duration) -> Option<String> {
        let (stale, news) =
            self.log
                .view
                .update(age, stale_view_after(&self.config), Instant::now());
        match news {
            Some(ViewNews::Behind(age)) => tracing::warn!(
                "the daemon's view of the bus is {:.1} s old (more is queued for it than it \
                 reads): the batteries' values count as old until it has caught up",
                age.as_secs_f64()
            ),
            Some(ViewNews::CaughtUp(behind)) => tracing::info!(
                "the daemon's view of the bus is current again, after {:.1} s behind",
                behind.as_secs_f64()
            ),
            None => {}
        }
        stale
    }

    /// The tick's values onto the bus: one `ItemsChanged` once registered; before that, the
    /// name is requested once the bank is complete or `startup_wait` has passed.
    async fn publish(
        &mut self,
        batteries: &[Battery],
        outcome: &Outcome,
        inputs: &TickInputs,
        now: Instant,
    ) {
        let cells = cell_paths(self.config.publish.cell_voltages, batteries);
        let changed = self
            .bank
            .published
            .update(outcome, batteries, inputs.cells, &cells);
        let changed = self.export(changed);
        self.signal(changed).await;
        if !self.link.registered {
            // The name is asked for in the background; its answer comes at a later tick.
            let complete = outcome.online >= inputs.expected.max(1);
            let waited =
                now.duration_since(self.link.attached) >= self.config.batteries.startup_wait;
            if self.link.name_call.is_none() && (complete || waited) {
                self.request_our_name(complete);
            }
        }
    }

    /// What the engine asked for besides publishing: the feed-in write and the state file.
    async fn side_effects(&mut self, outcome: &Outcome) {
        if outcome.events.iter().any(|e| {
            matches!(
                e,
                Event::FeedIn(FeedInEvent::Disabled(..) | FeedInEvent::Restoring(_))
            )
        }) {
            self.settings.feed_in_failing.end();
        }
        // The episode reaches the state file before its first 0 is written: a power cut in
        // between must not lose the user's value. A file that cannot take it does not hold
        // the 0 back (charging on past a high cell is worse): said, and tried at every tick
        // (docs/state.md §2).
        let started = outcome.events.iter().find_map(|e| match e {
            Event::FeedIn(FeedInEvent::Disabled(_, user)) => Some(*user),
            _ => None,
        });
        self.save_state_at_tick(outcome.save_state, started, Instant::now());
        self.feed_in_answered();
        // Written whenever the wanted value differs from the setting read this tick, so a
        // failed write is retried (one write at a time, in the background: a settings service
        // that does not answer never holds the tick).
        if let Some(value) = outcome.feed_in_write {
            if self.settings.feed_in_call.is_none() {
                let (conn, v) = (self.link.conn.clone(), Value::Int(value));
                let call = Background::start(async move {
                    client::set_value(&conn, SETTINGS, FEED_IN_SETTING, &v).await
                });
                self.settings.feed_in_call = Some((value, call));
            }
        }
    }

    /// The answer to the feed-in write under way, once it came; a failure logged once per
    /// episode.
    fn feed_in_answered(&mut self) {
        let Some((value, call)) = &mut self.settings.feed_in_call else {
            return;
        };
        let value = *value;
        let Some(answer) = call.answer() else {
            return;
        };
        self.settings.feed_in_call = None;
        let failure = match answer {
            Some(Ok(0)) => {
                tracing::info!("feed-in setting {FEED_IN_SETTING} set to {value}");
                return;
            }
            Some(Ok(code)) => format!("{SETTINGS} refused {FEED_IN_SETTING} = {value} ({code})"),
            Some(Err(err)) => format!(
                "cannot write {FEED_IN_SETTING} = {value}: {}",
                crate::bus::peer_error(SETTINGS, &err)
            ),
            None => format!("{FEED_IN_SETTING} = {value}: the call ended without an answer"),
        };
        if self.settings.feed_in_failing.start() {
            tracing::warn!("{failure}; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregator_core::discovery::{Rules, Selector};
    use aggregator_core::presence::Timing;

    const OWN: &str = "com.victronenergy.battery.aggregate";

    fn members(cells: Option<u32>) -> BankMembers {
        members_with(cells, Vec::new())
    }

    /// Members of a bank that excludes these batteries.
    fn members_with(cells: Option<u32>, exclude: Vec<Selector>) -> BankMembers {
        let rules = Rules {
            product_name: vec!["SerialBattery".into()],
            include: Vec::new(),
            exclude,
        };
        BankMembers::new(Roster::new(rules, OWN), cells)
    }

    fn plate(product: &str, custom: &str) -> Option<Nameplate> {
        Some(Nameplate {
            product_name: Some(product.into()),
            custom_name: Some(custom.into()),
            serial: None,
            device_instance: Some(1),
            publishes_charge_voltage: true,
        })
    }

    /// A serialbattery pack's nameplate with this custom name and serial.
    fn pack(custom: &str, serial: &str) -> Option<Nameplate> {
        plate("SerialBattery(JK)", custom).map(|p| Nameplate {
            serial: Some(serial.into()),
            ..p
        })
    }

    fn reading(cells: i64) -> BatteryReading {
        BatteryReading {
            cells_per_battery: Some(cells),
            ..BatteryReading::default()
        }
    }

    /// A service as the tick takes it from the cache, owned by `owner`: with its nameplate when
    /// `plate` is given (its membership is to be decided).
    fn seen(service: &str, owner: &str, plate: Option<Nameplate>, reading: BatteryReading) -> Seen {
        Seen {
            service: service.into(),
            decide: plate.map(|p| (owner.into(), p)),
            reading,
        }
    }

    #[test]
    fn readings_are_found_by_their_service_in_whatever_order_they_came() {
        let services = [
            "com.victronenergy.battery.ttyUSB2",
            "com.victronenergy.battery.a",
        ];
        let with_cells = |k: usize| reading(16 + k as i64);
        for order in [[0, 1], [1, 0]] {
            let seen_in_order = order
                .iter()
                .map(|&k| seen(services[k], ":1.7", None, with_cells(k)))
                .collect();
            let readings = Readings::of(seen_in_order);
            for (k, service) in services.iter().enumerate() {
                let found = readings.get(service).and_then(|r| r.cells_per_battery);
                assert_eq!(found, Some(16 + k as i64), "{service} in order {order:?}");
            }
            assert!(readings.get("com.victronenergy.battery.b").is_none());
        }
    }

    fn presence() -> Presence {
        Presence::new(Timing {
            hold_for_s: 60.0,
            frozen_after_s: 0.0,
        })
    }

    #[test]
    fn services_are_decided_once_per_owner_and_others_ignored_until_owned_anew() {
        let mut m = members(Some(16));
        let mut presence = presence();
        let bat = "com.victronenergy.battery.ttyUSB0";
        let other = "com.victronenergy.battery.socketcan";
        let read = m.classify(
            &mut presence,
            vec![
                seen(bat, ":1.1", plate("SerialBattery(JK)", "Left"), reading(16)),
                seen(other, ":1.2", plate("Pylontech", "P"), reading(15)),
            ],
        );
        assert_eq!(read.services().collect::<Vec<_>>(), [bat]);
        assert_eq!(
            m.wants(bat, ":1.1"),
            Some(false),
            "known: no nameplate needed"
        );
        assert_eq!(m.wants(other, ":1.2"), None, "ignored");
        assert_eq!(
            m.wants(other, ":1.3"),
            Some(true),
            "another process: decided anew"
        );
        assert_eq!(
            m.wants(bat, ":1.4"),
            Some(true),
            "another process: decided anew"
        );
        assert!(m.owned_anew(bat, ":1.4") && !m.owned_anew(bat, ":1.1"));
        assert_eq!(m.counted(), 1);
    }

    /// One tick of these services through membership and presence; the batteries' names and
    /// states after it.
    fn tick(
        m: &mut BankMembers,
        presence: &mut Presence,
        now_s: f64,
        services: Vec<Seen>,
    ) -> Vec<(String, String, BatteryState)> {
        let read = m.classify(presence, services);
        m.observe(presence, now_s, &read, false, None);
        presence
            .batteries()
            .into_iter()
            .map(|b| (b.service, b.name, b.state))
            .collect()
    }

    /// A reading that is complete with 16 cells.
    fn complete() -> BatteryReading {
        BatteryReading {
            voltage_v: Some(53.0),
            current_a: Some(-10.0),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.32),
            min_cell_voltage_v: Some(3.30),
            ..reading(16)
        }
    }

    #[test]
    fn services_gone_for_long_leave_nothing_behind_and_the_bank_is_kept() {
        let mut m = members(Some(16));
        let mut p = presence();
        let bat = "com.victronenergy.battery.ttyUSB0";
        let stays = || seen(bat, ":1.1", None, complete());
        let left = vec![(bat.to_string(), "Left".to_string(), BatteryState::Online)];
        let first = vec![seen(bat, ":1.1", pack("Left", "S1"), complete())];
        assert_eq!(tick(&mut m, &mut p, 0.0, first), left);
        // Beside it, a service not ours and a pack that stays a second, each under a new name
        // every time (an adapter numbered anew).
        let mut now_s = 0.0;
        for k in 0..20 {
            let other = format!("com.victronenergy.battery.ble_{k}");
            let brief = format!("com.victronenergy.battery.ttyUSB{}", k + 10);
            let owner = format!(":2.{k}");
            let here = vec![
                stays(),
                seen(&other, &owner, plate("Other BMS", "O"), complete()),
                seen(
                    &brief,
                    &owner,
                    pack(&format!("P{k}"), &format!("SP{k}")),
                    complete(),
                ),
            ];
            now_s += 1.0;
            tick(&mut m, &mut p, now_s, here);
            assert_eq!(m.ignored.len(), 1, "ignored while it is there");
            assert_eq!(
                m.ignored_gone(|s| (s == other).then_some(owner.as_str()))
                    .len(),
                0
            );
            // Its process left: nothing of it is kept (the snapshot finds it gone).
            let gone = m.ignored_gone(|s| (s == bat).then_some(":1.1"));
            m.forget_ignored(&gone);
            assert!(m.ignored.is_empty(), "{:?}", m.ignored);
            now_s += 1.0;
            tick(&mut m, &mut p, now_s, vec![stays()]);
        }
        // Held, then passing: forgotten but for the name given, kept for an hour.
        let mut states = Vec::new();
        for _ in 0..70 {
            now_s += 1.0;
            states = tick(&mut m, &mut p, now_s, vec![stays()]);
        }
        assert_eq!(states, left);
        assert_eq!(m.known.len(), 1);
        assert_eq!(m.roster.named_count(), 21);
        for _ in 0..61 {
            now_s += 60.0;
            assert_eq!(tick(&mut m, &mut p, now_s, vec![stays()]), left);
        }
        assert_eq!(m.roster.named_count(), 1, "only the bank's pack is named");
        assert!(m.gone_since.is_empty() && m.passing.is_empty() && m.flapping.is_empty());
        // One of them back: named as before, by its custom name.
        let brief = "com.victronenergy.battery.ttyUSB10";
        let back = vec![stays(), seen(brief, ":3.1", pack("P0", "SP0"), complete())];
        now_s += 1.0;
        let states = tick(&mut m, &mut p, now_s, back);
        assert!(states.contains(&(brief.to_string(), "P0".to_string(), BatteryState::Online)));
    }

    #[test]
    fn a_driver_restart_of_the_same_pack_keeps_its_name_and_its_hold() {
        let mut m = members(Some(16));
        let mut p = presence();
        let usb0 = "com.victronenergy.battery.ttyUSB0";
        let left = || pack("Left", "S1");
        let first = vec![seen(usb0, ":1.1", left(), complete())];
        let online = |name: &str, state| vec![(usb0.to_string(), name.to_string(), state)];
        assert_eq!(
            tick(&mut m, &mut p, 0.0, first),
            online("Left", BatteryState::Online)
        );
        assert_eq!(
            tick(
                &mut m,
                &mut p,
                70.0,
                vec![seen(usb0, ":1.1", None, complete())]
            ),
            online("Left", BatteryState::Online)
        );
        assert_eq!(
            tick(&mut m, &mut p, 71.0, Vec::new()),
            online("Left", BatteryState::Stale),
            "held while its driver restarts"
        );
        // The new process, renamed meanwhile but with its serial: the same pack.
        let back = vec![seen(usb0, ":1.7", pack("Renamed", "S1"), complete())];
        assert_eq!(
            tick(&mut m, &mut p, 72.0, back),
            online("Left", BatteryState::Online)
        );
        assert_eq!(m.wants(usb0, ":1.7"), Some(false));
        assert_eq!(m.counted(), 1);
        assert!(m.departed.is_empty());
    }

    #[test]
    fn another_device_taking_a_batterys_service_is_decided_from_its_own_nameplate() {
        let mut m = members_with(Some(16), vec![Selector::Name("SB".into())]);
        let mut p = presence();
        let usb = |k: u32| format!("com.victronenergy.battery.ttyUSB{k}");
        let (usb0, usb1, usb2) = (usb(0), usb(1), usb(2));
        let start = vec![
            seen(&usb0, ":1.1", pack("Bat1", "SA"), complete()),
            seen(&usb1, ":1.2", pack("Bat2", "SB"), complete()),
        ];
        let bat1 = |service: &str, state| (service.to_string(), "Bat1".to_string(), state);
        assert_eq!(
            tick(&mut m, &mut p, 0.0, start),
            [bat1(&usb0, BatteryState::Online)],
            "SB is excluded"
        );
        assert_eq!(m.wants(&usb1, ":1.2"), None);

        // The adapters enumerated the other way round, both new processes seen at one tick:
        // the excluded pack on ttyUSB0 is not merged as Bat1, and Bat1 keeps its name on
        // ttyUSB1.
        let swapped = vec![
            seen(&usb0, ":1.3", pack("Bat2", "SB"), complete()),
            seen(&usb1, ":1.4", pack("Bat1", "SA"), complete()),
        ];
        assert_eq!(
            tick(&mut m, &mut p, 100.0, swapped),
            [bat1(&usb1, BatteryState::Online)]
        );
        assert_eq!(m.wants(&usb0, ":1.3"), None, "ignored now");
        assert_eq!((m.counted(), m.bank_cells()), (1, 16));

        // Bat1 away, its service taken by the excluded pack: Bat1 counts as not found (the
        // bank expects it) until it is found again.
        let read = m.classify(
            &mut p,
            vec![seen(&usb1, ":1.5", pack("Bat2", "SB"), complete())],
        );
        assert!(read.is_empty(), "{:?}", read.services().collect::<Vec<_>>());
        m.observe(&mut p, 101.0, &read, false, None);
        assert!(p.batteries().is_empty());
        assert_eq!(m.counted(), 1, "Bat1 is still expected");
        assert_eq!(
            tick(
                &mut m,
                &mut p,
                102.0,
                vec![seen(&usb2, ":1.6", pack("Bat1", "SA"), complete())]
            ),
            [bat1(&usb2, BatteryState::Online)],
            "found again, with its name"
        );
        assert_eq!(m.counted(), 1);

        // Another pack of the bank takes Bat1's service: its own name, its own cell count
        // (left out), and Bat1 counts as not found.
        let other = vec![seen(&usb2, ":1.8", pack("Bat3", "SC"), reading(15))];
        let read = m.classify(&mut p, other);
        m.observe(&mut p, 103.0, &read, false, None);
        assert_eq!(m.left_out(), ["Bat3"]);
        assert!(p.batteries().is_empty(), "Bat1 forgotten, Bat3 left out");
        assert_eq!(m.counted(), 2);

        // Bat1 moves to a service while its old one is away: its name goes with it.
        let mut m = members(Some(16));
        let mut p = presence();
        let start = vec![seen(&usb0, ":1.1", pack("Bat1", "SA"), complete())];
        tick(&mut m, &mut p, 0.0, start);
        tick(
            &mut m,
            &mut p,
            70.0,
            vec![seen(&usb0, ":1.1", None, complete())],
        );
        let moved = vec![seen(&usb1, ":1.2", pack("Bat1", "SA"), complete())];
        assert_eq!(
            tick(&mut m, &mut p, 71.0, moved),
            [bat1(&usb1, BatteryState::Online)]
        );
        assert_eq!(m.counted(), 1);
        // A pack of the same serial on a service that is there is another pack.
        let twin = vec![
            seen(&usb1, ":1.2", None, complete()),
            seen(&usb2, ":1.3", pack("Bat1", "SA"), complete()),
        ];
        let names: Vec<String> = tick(&mut m, &mut p, 72.0, twin)
            .into_iter()
            .map(|(_, name, _)| name)
            .collect();
        assert_eq!(names, ["Bat1", "Bat1_2"]);
    }

    #[test]
    fn a_battery_of_another_cell_count_is_left_out_of_presence() {
        let mut m = members(Some(16));
        let mut presence = presence();
        let bat = "com.victronenergy.battery.ttyUSB1";
        let read = m.classify(
            &mut presence,
            vec![seen(bat, ":1.1", plate("SerialBattery", "X"), reading(8))],
        );
        assert_eq!(m.counted(), 1, "counted, as a battery not online");
        m.observe(&mut presence, 0.0, &read, false, None);
        assert_eq!(m.left_out(), ["X"]);
        assert_eq!(presence.states().count(), 0);
    }

    #[test]
    fn without_a_configured_count_most_packs_set_it_and_a_pack_seen_first_is_left_out_later() {
        let mut m = members(None);
        assert_eq!(m.bank_cells(), 0, "nobody knows it yet");
        let mut presence = presence();
        let service = |k: u32| format!("com.victronenergy.battery.ttyUSB{k}");
        let odd = m.classify(
            &mut presence,
            vec![seen(
                &service(0),
                ":1.0",
                plate("SerialBattery", "A"),
                reading(15),
            )],
        );
        m.observe(&mut presence, 0.0, &odd, false, None);
        assert_eq!((m.bank_cells(), m.left_out().len()), (15, 0));
        let mut read = m.classify(
            &mut presence,
            vec![
                seen(
                    &service(1),
                    ":1.1",
                    plate("SerialBattery", "B"),
                    reading(16),
                ),
                seen(
                    &service(2),
                    ":1.2",
                    plate("SerialBattery", "C"),
                    reading(16),
                ),
                seen(
                    &service(3),
                    ":1.3",
                    plate("SerialBattery", "D"),
                    BatteryReading::default(),
                ),
            ],
        );
        read.extend(odd);
        m.observe(&mut presence, 1.0, &read, false, None);
        assert_eq!(m.bank_cells(), 16);
        assert_eq!(m.left_out(), ["A"]);
        assert_eq!(m.counted(), 4);
        assert!(presence.states().all(|(name, _)| name != "A"), "forgotten");
    }

    /// A bank of one battery as the cache shows it; `stale_view` says the view is old.
    fn one_battery(first: bool, stale_view: Option<&str>) -> BusSnapshot {
        let reading = BatteryReading {
            voltage_v: Some(53.0),
            current_a: Some(10.0),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.35),
            min_cell_voltage_v: Some(3.30),
            ..reading(16)
        };
        BusSnapshot {
            batteries: vec![seen(
                "com.victronenergy.battery.ttyUSB0",
                ":1.1",
                plate("SerialBattery(JK)", "Left").filter(|_| first),
                reading,
            )],
            vebus: Vec::new(),
            solar_chargers: Vec::new(),
            smartshunts: Vec::new(),
            dc_sources: Vec::new(),
            monitor_soc: None,
            low_soc: None,
            feed_in_setting: Some(1),
            settings_present: true,
            ignored_gone: Vec::new(),
            stale_view: stale_view.map(str::to_string),
        }
    }

    #[test]
    fn an_old_view_of_the_bus_holds_the_batteries_then_loses_them_and_leaves_feed_in_alone() {
        let config: Config = serde_yaml::from_str(
            "strategy: { plugin: lto-cv }
batteries: { hold_for: 10s }
safety: { max_cell_voltage: 3.6, max_charge_current: 300, max_discharge_current: 300, \
min_cell_voltage: 2.8, min_charge_temperature: 0, max_charge_temperature: 45, \
min_discharge_temperature: -20, max_discharge_temperature: 55 }",
        )
        .expect("config");
        let mut m = members(Some(16));
        let mut presence = presence_of(&config);
        let old = Some("the daemon's view of the bus is more than 3 s old");
        // Simulated seconds: a fresh tick, then the view is old from 1 s to 12 s.
        let mut tick = |now_s: f64, first: bool, stale: Option<&str>| {
            let time = TickTime {
                now_s,
                date: LocalDate {
                    year: 2026,
                    month: 6,
                    day: 15,
                },
                dt_s: 1.0,
            };
            let snapshot = one_battery(first, stale);
            let (batteries, inputs) = inputs(snapshot, &mut m, &mut presence, false, &config, time);
            let states: Vec<BatteryState> = batteries.iter().map(|b| b.state).collect();
            (states, inputs.feed_in_setting)
        };
        assert_eq!(tick(0.0, true, None), (vec![BatteryState::Online], Some(1)));
        assert_eq!(
            tick(1.0, false, old),
            (vec![BatteryState::Stale], None),
            "held, and the setting's old value is not taken as its value now"
        );
        assert_eq!(tick(10.5, false, old), (vec![BatteryState::Stale], None));
        assert_eq!(
            tick(11.5, false, old),
            (vec![BatteryState::Lost], None),
            "lost once the hold time has passed"
        );
        assert_eq!(
            tick(12.5, false, None),
            (vec![BatteryState::Online], Some(1)),
            "current again"
        );
    }

    #[test]
    fn an_old_view_is_one_episode_with_one_reason() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let bound = Duration::from_secs(3);
        let mut view = ViewAge::default();
        let age = Duration::from_millis;
        assert_eq!(view.update(age(2), bound, at(1000)), (None, None));
        let (reason, news) = view.update(age(3500), bound, at(5000));
        let reason = reason.expect("old");
        assert_eq!(reason, "the daemon's view of the bus is more than 3 s old");
        assert_eq!(news, Some(ViewNews::Behind(age(3500))));
        assert_eq!(
            view.update(age(9000), bound, at(10_500)),
            (Some(reason.clone()), None),
            "the same text while it lasts, logged once"
        );
        assert_eq!(
            view.update(age(1), bound, at(11_000)),
            (None, Some(ViewNews::CaughtUp(age(9500))))
        );
        assert_eq!(view.update(age(1), bound, at(12_000)), (None, None));
    }

    #[test]
    fn cell_paths_follow_the_batteries() {
        let battery = Battery {
            name: "B".into(),
            service: "s".into(),
            state: BatteryState::Online,
            reading: BatteryReading {
                cells_per_battery: Some(8),
                cell_voltages_v: vec![Some(3.3), None],
                ..BatteryReading::default()
            },
        };
        let paths = cell_paths(true, std::slice::from_ref(&battery));
        assert_eq!(
            paths,
            [
                ("/Voltages/B_Cell1".to_string(), Some(3.3)),
                ("/Voltages/B_Cell2".to_string(), None)
            ]
        );
        assert!(cell_paths(false, &[battery]).is_empty());
    }
}
