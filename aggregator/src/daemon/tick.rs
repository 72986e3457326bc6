//! One tick of the daemon, top-down: a snapshot of the bus, which services are batteries,
//! presence, the core's tick, publishing, then the side effects (feed-in write, state file).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use aggregator_core::discovery::{Nameplate, Role, Roster};
use aggregator_core::engine::{Event, Outcome, TickInputs};
use aggregator_core::feedin::FeedInEvent;
use aggregator_core::presence::{Battery, Change, Presence};
use aggregator_core::published::cell_path;
use aggregator_core::reading::BatteryReading;
use aggregator_core::value::Value;
use plugin_api::{BatteryState, ShuntView, SolarChargerView, VebusView};

use super::{gather, log_event, Daemon};
use crate::bus::client::{self, SETTINGS};
use crate::bus::monitor::{Class, FEED_IN_SETTING};
use crate::clock::calendar;

/// What the tick takes from the monitor's cache, read once.
pub(super) struct BusSnapshot {
    /// Battery-class services that may be ours: service, nameplate (only until the service
    /// is classified) and reading.
    batteries: Vec<(String, Option<Nameplate>, BatteryReading)>,
    vebus: Vec<VebusView>,
    solar_chargers: Vec<SolarChargerView>,
    smartshunts: Vec<ShuntView>,
    low_soc: Option<i64>,
    feed_in_setting: Option<i64>,
    /// Whether `com.victronenergy.settings` is on the bus.
    settings_present: bool,
}

/// A service found to be a battery of the bank.
pub(super) struct KnownBattery {
    name: String,
    /// Left out: its cell count is not the bank's.
    excluded: bool,
}

/// Which battery-class services belong to the bank, decided once per service.
pub(super) struct BankMembers {
    roster: Roster,
    /// `batteries.cells`.
    cells: Option<u32>,
    known: BTreeMap<String, KnownBattery>,
    /// Services that are not ours, until they are scanned again.
    ignored: BTreeSet<String>,
}

impl BankMembers {
    pub(super) fn new(roster: Roster, cells: Option<u32>) -> Self {
        Self {
            roster,
            cells,
            known: BTreeMap::new(),
            ignored: BTreeSet::new(),
        }
    }

    /// A service that came or went is classified again when next seen.
    pub(super) fn forget_ignored(&mut self, service: &str) {
        self.ignored.remove(service);
    }

    /// Whether a service's reading is wanted this tick, and whether its nameplate is.
    fn wants(&self, service: &str) -> Option<bool> {
        (!self.ignored.contains(service)).then(|| !self.known.contains_key(service))
    }

    /// Classifies the services seen for the first time; returns the readings of the bank's
    /// batteries by service.
    fn classify(
        &mut self,
        seen: Vec<(String, Option<Nameplate>, BatteryReading)>,
    ) -> BTreeMap<String, BatteryReading> {
        let mut readings = BTreeMap::new();
        for (service, nameplate, reading) in seen {
            if let Some(nameplate) = nameplate {
                match self.roster.classify(&service, &nameplate) {
                    Role::Battery(name) => {
                        let excluded = match (self.cells, reading.cells_per_battery) {
                            (Some(want), Some(have)) if i64::from(want) != have => {
                                tracing::error!(
                                    "battery {name} ({service}) has {have} cells, batteries.cells \
                                     is {want}: left out"
                                );
                                true
                            }
                            _ => false,
                        };
                        tracing::info!("battery {name} found: {service}");
                        self.known
                            .insert(service.clone(), KnownBattery { name, excluded });
                    }
                    Role::Ignored(why) => {
                        tracing::debug!("{service} ignored: {why}");
                        self.ignored.insert(service);
                        continue;
                    }
                    Role::SmartShunt | Role::Unknown => continue,
                }
            }
            readings.insert(service, reading);
        }
        readings
    }

    /// Hands this tick's readings to presence, one log line per change of state.
    fn observe(
        &self,
        presence: &mut Presence,
        now_s: f64,
        readings: &BTreeMap<String, BatteryReading>,
        pass_through: bool,
    ) {
        for (service, known) in &self.known {
            if known.excluded {
                continue;
            }
            let reading = readings.get(service);
            if let Some(change) =
                presence.observe(now_s, service, &known.name, reading, pass_through)
            {
                log_change(&change);
            }
        }
    }

    /// Batteries known and not left out.
    fn counted(&self) -> u32 {
        self.known.values().filter(|k| !k.excluded).count() as u32
    }
}

/// One line per change: a bad value that lasts is logged when it starts and when the battery
/// is good again, never per tick.
fn log_change(change: &Change) {
    let name = &change.name;
    let reason = &change.reason;
    match (change.previous, change.state) {
        (None, BatteryState::Online) => tracing::info!("battery {name} online"),
        (Some(_), BatteryState::Online) => tracing::info!("battery {name} online again"),
        (None, _) => tracing::warn!("battery {name} not online yet ({reason})"),
        (Some(_), BatteryState::Stale) => {
            tracing::warn!("battery {name} not online ({reason}): holding its last values")
        }
        (Some(_), BatteryState::Lost) => tracing::warn!("battery {name} lost ({reason})"),
    }
}

/// The cell count of the bank: `batteries.cells`, else the first battery's own count.
fn bank_cells(configured: Option<u32>, batteries: &[Battery]) -> u32 {
    configured.unwrap_or_else(|| {
        batteries
            .iter()
            .find_map(|b| b.reading.cells_per_battery)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    })
}

/// `/Voltages/<battery>_Cell<k>` of the batteries online or held, when published.
fn cell_paths(publish: bool, batteries: &[Battery]) -> Vec<(String, Option<f64>)> {
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

impl Daemon {
    pub(super) async fn tick(&mut self) {
        let now = Instant::now();
        let dt_s = self
            .last_tick
            .map_or(0.0, |last| now.duration_since(last).as_secs_f64());
        self.last_tick = Some(now);
        let now_s = now.duration_since(self.started).as_secs_f64();
        self.log_discovery();

        let snapshot = self.snapshot();
        if self.settings_pending && snapshot.settings_present {
            self.settings_appeared(now).await;
        }
        let readings = self.members.classify(snapshot.batteries);
        self.members
            .observe(&mut self.presence, now_s, &readings, self.pass_through);
        let batteries = self.presence.batteries();
        let inputs = TickInputs {
            cells: bank_cells(self.config.batteries.cells, &batteries),
            expected: (self.config.batteries.expected).unwrap_or(self.members.counted()),
            vebus: snapshot.vebus,
            solar_chargers: snapshot.solar_chargers,
            smartshunts: snapshot.smartshunts,
            low_soc: snapshot.low_soc,
            feed_in_setting: snapshot.feed_in_setting,
            date: calendar::today(),
            dt_s,
        };
        let outcome = self.engine.tick(&batteries, &inputs);
        for event in &outcome.events {
            log_event(event);
        }
        self.publish(&batteries, &outcome, &inputs, now).await;
        self.side_effects(&outcome).await;
        self.summary(now, &outcome);
    }

    /// Reads the monitor's cache once.
    fn snapshot(&self) -> BusSnapshot {
        self.monitor.with(|cache| {
            let mut batteries = Vec::new();
            for (service, s) in cache.of_class(Class::Battery) {
                let Some(wants_nameplate) = self.members.wants(service) else {
                    continue;
                };
                if gather::is_smartshunt(s) {
                    continue;
                }
                let nameplate = wants_nameplate.then(|| gather::nameplate(s));
                batteries.push((service.clone(), nameplate, gather::battery_reading(s)));
            }
            BusSnapshot {
                batteries,
                vebus: gather::vebus(cache),
                solar_chargers: gather::solar_chargers(cache),
                smartshunts: gather::smartshunts(cache),
                low_soc: gather::single_integer(cache, Class::System, "/SystemState/LowSoc"),
                feed_in_setting: gather::single_integer(cache, Class::Settings, FEED_IN_SETTING),
                settings_present: cache.of_class(Class::Settings).next().is_some(),
            }
        })
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
        let changed = self.published.update(outcome, inputs.cells, &cells);
        let changed = self.export(changed);
        if self.registered {
            if let Err(err) = self.exported.items_changed(&changed).await {
                tracing::warn!("ItemsChanged not sent: {err}");
            }
        } else {
            let complete = outcome.online >= inputs.expected.max(1);
            let waited = now.duration_since(self.attached) >= self.config.batteries.startup_wait;
            if complete || waited {
                self.register(complete).await;
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
            self.feed_in_failure_logged = false;
        }
        // Written whenever the wanted value differs from the setting read this tick, so a
        // failed write is retried every tick; logged once per episode.
        if let Some(value) = outcome.feed_in_write {
            let v = Value::Int(value);
            let failure = match client::set_value(&self.conn, SETTINGS, FEED_IN_SETTING, &v).await {
                Ok(0) => {
                    tracing::info!("feed-in setting {FEED_IN_SETTING} set to {value}");
                    None
                }
                Ok(code) => Some(format!(
                    "{SETTINGS} refused {FEED_IN_SETTING} = {value} ({code})"
                )),
                Err(err) => Some(format!("cannot write {FEED_IN_SETTING} = {value}: {err}")),
            };
            if let Some(failure) = failure {
                if !self.feed_in_failure_logged {
                    self.feed_in_failure_logged = true;
                    tracing::warn!("{failure}; retrying every tick");
                }
            }
        }
        if outcome.save_state {
            self.save_state();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregator_core::discovery::Rules;
    use aggregator_core::presence::Timing;

    const OWN: &str = "com.victronenergy.battery.aggregate";

    fn members(cells: Option<u32>) -> BankMembers {
        let rules = Rules {
            product_name: "SerialBattery".into(),
            include: Vec::new(),
            exclude: Vec::new(),
        };
        BankMembers::new(Roster::new(rules, OWN), cells)
    }

    fn plate(product: &str, custom: &str) -> Option<Nameplate> {
        Some(Nameplate {
            product_name: Some(product.into()),
            custom_name: Some(custom.into()),
            serial: None,
            device_instance: Some(1),
        })
    }

    fn reading(cells: i64) -> BatteryReading {
        BatteryReading {
            cells_per_battery: Some(cells),
            ..BatteryReading::default()
        }
    }

    #[test]
    fn services_are_classified_once_and_others_ignored_until_scanned_again() {
        let mut m = members(Some(16));
        let bat = "com.victronenergy.battery.ttyUSB0".to_string();
        let other = "com.victronenergy.battery.socketcan".to_string();
        let seen = m.classify(vec![
            (bat.clone(), plate("SerialBattery(JK)", "Left"), reading(16)),
            (other.clone(), plate("Pylontech", "P"), reading(15)),
        ]);
        assert_eq!(seen.keys().collect::<Vec<_>>(), [&bat]);
        assert_eq!(m.wants(&bat), Some(false), "known: no nameplate needed");
        assert_eq!(m.wants(&other), None, "ignored");
        m.forget_ignored(&other);
        assert_eq!(m.wants(&other), Some(true));
        assert_eq!(m.counted(), 1);
    }

    #[test]
    fn a_battery_of_another_cell_count_is_left_out_of_presence() {
        let mut m = members(Some(16));
        let bat = "com.victronenergy.battery.ttyUSB1".to_string();
        let seen = m.classify(vec![(bat, plate("SerialBattery", "X"), reading(8))]);
        assert_eq!(m.counted(), 0);
        let mut presence = Presence::new(Timing {
            hold_for_s: 60.0,
            frozen_after_s: 0.0,
        });
        m.observe(&mut presence, 0.0, &seen, false);
        assert_eq!(presence.states().count(), 0);
    }

    #[test]
    fn cells_come_from_the_config_else_the_batteries() {
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
        assert_eq!(bank_cells(Some(16), std::slice::from_ref(&battery)), 16);
        assert_eq!(bank_cells(None, std::slice::from_ref(&battery)), 8);
        assert_eq!(bank_cells(None, &[]), 0);
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
