//! A simulated Venus OS system on D-Bus: the other side of every integration test and of the
//! `publish` subcommand; and the same system without a bus for `simulate` ([`offline`]).
//!
//! A [`Scenario`] (YAML, see [`scenario`]) declares dbus-serialbattery batteries, optionally a
//! Multi, solar chargers and a SmartShunt, plus localsettings and systemcalc, and segments
//! that move their values over time. The [`Simulator`] publishes each on its own connection
//! exactly as the real programs do (every path first, then the name; `PropertiesChanged` per
//! path as velib or one `ItemsChanged` per step), so a consumer cannot tell it from a GX
//! device. [`publish`] refuses to run on the system bus.
//!
//! - [`scenario`]: the file format, its checks, and where in the scenario a moment falls.
//! - `battery`: one battery's state of charge and every path derived from the cells.
//! - `devices`: the Multi, solar chargers, SmartShunt and `com.victronenergy.system`.
//! - `settings`: localsettings (`AddSetting`, `AddSettings`, instance allocation).
//! - `service`: a service on its own connection that can leave the bus and come back.
//! - [`offline`]: `simulate`, the engine on the models in simulated time; `chart` draws it.
//! - [`error`]: what the commands fail with, and their exit codes.

mod battery;
mod chart;
pub mod demo;
mod devices;
pub mod error;
pub mod offline;
pub mod replay;
pub mod scenario;
mod service;
mod settings;

use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use battery::{BatteryModel, Presence};
use scenario::{solar_name, VEBUS_NAME};
use service::Service;
use settings::{SettingsStore, SETTINGS_NAME};
use venus_bus::export::BusItemService;

pub use error::Error;
pub use scenario::{Scenario, Signals, Start, DEMO_SCENARIO};

/// A running simulation: every service connected and stepping on tokio tasks.
pub struct Simulator {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Connects every service to the bus at `address`, registers them, and runs the scenario
    /// on tokio tasks of the current runtime. Every service due on the bus at the start (all
    /// but a battery `gone` in the first segment) owns its name when this returns.
    pub async fn start(address: &str, scenario: Scenario) -> Result<Simulator, Error> {
        let start = Instant::now();
        let step = scenario.step;
        let mut world = World::new(address, scenario);
        if let Err(err) = world.register_fixed().await {
            world.shutdown().await;
            return Err(err);
        }
        if let Err(err) = world.step(Duration::ZERO).await {
            world.shutdown().await;
            return Err(err);
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start + step, step);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    // A stop, or the Simulator dropped without one.
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        if let Err(err) = world.step(start.elapsed()).await {
                            tracing::warn!("simulator: {err}");
                        }
                    }
                }
            }
            world.shutdown().await;
        });
        Ok(Simulator {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Stops publishing and drops every connection (services leave the bus).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// What each simulated device shows at one moment, without a bus: the simulator publishes it,
/// `simulate` reads it as the monitor's cache would hold it.
pub(crate) struct Moment {
    /// Per battery, in scenario order.
    pub(crate) batteries: Vec<BatteryStep>,
    /// The Multi's paths.
    pub(crate) vebus: Option<Vec<battery::Item>>,
    /// Each solar charger's paths.
    pub(crate) solars: Vec<Vec<battery::Item>>,
    /// The SmartShunt's paths.
    pub(crate) shunt: Option<Vec<battery::Item>>,
    /// Each other DC device's paths, in scenario order.
    pub(crate) dc_devices: Vec<Vec<battery::Item>>,
}

/// What a battery does at a moment.
pub(crate) enum BatteryStep {
    /// On the bus with these values.
    Publish(Vec<battery::Item>),
    /// On the bus, keeping the values it last showed (frozen).
    Hold,
    /// Off the bus.
    Gone,
}

/// The scenario and the battery models: every device's values at a moment.
pub(crate) struct Models {
    pub(crate) scenario: Scenario,
    batteries: Vec<BatteryModel>,
    segment: Option<usize>,
}

impl Models {
    pub(crate) fn new(scenario: Scenario) -> Models {
        Models {
            batteries: scenario
                .batteries
                .iter()
                .enumerate()
                .map(|(index, spec)| BatteryModel::new(spec.clone(), index))
                .collect(),
            segment: None,
            scenario,
        }
    }

    /// Moves everything to `elapsed` since the start; `shown(i)` says whether battery `i`
    /// shows values already (a frozen battery is first shown with its first values).
    pub(crate) fn at(&mut self, elapsed: Duration, shown: impl Fn(usize) -> bool) -> Moment {
        let position = self.scenario.position(elapsed);
        if position.map(|(index, _)| index) != self.segment {
            self.segment = position.map(|(index, _)| index);
            if let Some((index, _)) = position {
                tracing::info!(
                    "simulator: segment {} of {}",
                    index + 1,
                    self.scenario.segments.len()
                );
            }
        }
        let segment = position.map(|(index, fraction)| (&self.scenario.segments[index], fraction));
        let jitter = self.scenario.jitter;
        let elapsed_s = elapsed.as_secs_f64();

        let mut batteries = Vec::with_capacity(self.batteries.len());
        for (index, model) in self.batteries.iter_mut().enumerate() {
            let over = segment.and_then(|(s, _)| s.overrides[index].as_ref());
            batteries.push(match BatteryModel::presence(over) {
                Presence::Frozen if shown(index) => {
                    model.hold(elapsed_s);
                    BatteryStep::Hold
                }
                Presence::Gone => {
                    model.advance(elapsed_s, segment, over, jitter);
                    BatteryStep::Gone
                }
                Presence::Present | Presence::Frozen => {
                    BatteryStep::Publish(model.advance(elapsed_s, segment, over, jitter))
                }
            });
        }

        let bank_v = if self.batteries.is_empty() {
            segment.map_or(3.30, |(s, f)| s.cell_voltage.at(f)) * 16.0
        } else {
            self.batteries
                .iter()
                .map(BatteryModel::voltage_v)
                .sum::<f64>()
                / self.batteries.len() as f64
        };
        let at = |ramp: fn(&scenario::Segment) -> scenario::Ramp| {
            segment.map_or(0.0, |(s, f)| ramp(s).at(f))
        };
        let scenario = &self.scenario;
        let connected = segment.map_or(1, |(s, _)| s.vebus_connected);
        Moment {
            batteries,
            vebus: scenario.vebus.map(|instance| {
                devices::vebus(instance, at(|s| s.vebus_current), bank_v, connected)
            }),
            solars: (0..scenario.solar_chargers)
                .map(|index| devices::solar_charger(index, at(|s| s.solar_current), bank_v))
                .collect(),
            shunt: scenario
                .shunt
                .as_ref()
                .map(|spec| devices::smartshunt(spec, at(|s| s.shunt_current), bank_v)),
            dc_devices: (scenario.dc_devices.iter().enumerate())
                .map(|(k, spec)| devices::dc_device(spec, k, bank_v))
                .collect(),
        }
    }

    /// The services whose values never change (settings, system), by bus name.
    pub(crate) fn fixed(&self) -> Vec<(String, Vec<battery::Item>)> {
        let mut fixed = Vec::new();
        if let Some(spec) = &self.scenario.settings {
            fixed.push((SETTINGS_NAME.to_string(), SettingsStore::new(spec).1));
        }
        if let Some(low_soc) = self.scenario.system {
            fixed.push((SYSTEM_NAME.to_string(), devices::system(low_soc)));
        }
        fixed
    }
}

const SYSTEM_NAME: &str = "com.victronenergy.system";

/// The simulated system: the models and their services.
struct World {
    models: Models,
    batteries: Vec<Service>,
    vebus: Option<Service>,
    solars: Vec<Service>,
    shunt: Option<Service>,
    dc_devices: Vec<Service>,
    /// Services whose values never change: settings and system.
    fixed: Vec<(Service, Vec<battery::Item>)>,
}

impl World {
    fn new(address: &str, scenario: Scenario) -> World {
        let batteries = scenario
            .batteries
            .iter()
            .map(|spec| Service::new(spec.bus_name(), address, false, None))
            .collect();
        let plain = |name: String| Service::new(name, address, false, None);
        let mut fixed = Vec::new();
        if let Some(spec) = &scenario.settings {
            let (store, items) = SettingsStore::new(spec);
            let setup = Box::new(move |exported: &BusItemService| store.install(exported));
            let service = Service::new(SETTINGS_NAME.to_string(), address, true, Some(setup));
            fixed.push((service, items));
        }
        if let Some(low_soc) = scenario.system {
            fixed.push((plain(SYSTEM_NAME.to_string()), devices::system(low_soc)));
        }
        World {
            vebus: scenario.vebus.map(|_| plain(VEBUS_NAME.to_string())),
            solars: (0..scenario.solar_chargers)
                .map(|i| plain(solar_name(i)))
                .collect(),
            shunt: scenario.shunt.as_ref().map(|s| plain(s.bus_name())),
            dc_devices: scenario
                .dc_devices
                .iter()
                .enumerate()
                .map(|(k, d)| plain(d.bus_name(k)))
                .collect(),
            batteries,
            fixed,
            models: Models::new(scenario),
        }
    }

    /// Registers settings and system, which other services' owners expect to find first.
    async fn register_fixed(&mut self) -> Result<(), Error> {
        for (service, items) in &mut self.fixed {
            service.register(items.clone()).await?;
        }
        Ok(())
    }

    /// Moves everything to `elapsed` since the start and publishes it; a service that is due
    /// on the bus and not there is registered. Returns what could not be registered.
    async fn step(&mut self, elapsed: Duration) -> Result<(), Error> {
        let live: Vec<bool> = self.batteries.iter().map(Service::is_live).collect();
        let moment = self.models.at(elapsed, |index| live[index]);
        let signals = self.models.scenario.signals;
        let mut errors = Vec::new();
        for (service, step) in self.batteries.iter_mut().zip(moment.batteries) {
            match step {
                BatteryStep::Hold => {}
                BatteryStep::Gone => service.unregister().await,
                BatteryStep::Publish(items) => {
                    publish_or_register(service, items, signals, &mut errors).await
                }
            }
        }
        let devices = self
            .vebus
            .iter_mut()
            .zip(moment.vebus)
            .chain(self.solars.iter_mut().zip(moment.solars))
            .chain(self.shunt.iter_mut().zip(moment.shunt));
        for (service, items) in devices {
            publish_or_register(service, items, signals, &mut errors).await;
        }
        for (service, items) in self.dc_devices.iter_mut().zip(moment.dc_devices) {
            publish_or_register(service, items, signals, &mut errors).await;
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Services(errors))
        }
    }

    /// Every service leaves the bus.
    async fn shutdown(&mut self) {
        for service in &mut self.batteries {
            service.unregister().await;
        }
        for service in self
            .vebus
            .iter_mut()
            .chain(self.solars.iter_mut())
            .chain(self.shunt.iter_mut())
            .chain(self.dc_devices.iter_mut())
            .chain(self.fixed.iter_mut().map(|(service, _)| service))
        {
            service.unregister().await;
        }
    }
}

async fn publish_or_register(
    service: &mut Service,
    items: Vec<battery::Item>,
    signals: Signals,
    errors: &mut Vec<Error>,
) {
    if service.is_live() {
        service.publish(items, signals).await;
    } else if let Err(err) = service.register(items).await {
        errors.push(err);
    }
}

/// For the `publish` subcommand: loads the scenario file (the demo's without one) and runs it
/// until SIGINT or SIGTERM. See [`publish`].
pub fn publish_command(scenario: Option<&Path>, address: Option<&str>) -> Result<(), Error> {
    let scenario = scenario.map_or_else(Scenario::demo, Scenario::load)?;
    publish(scenario, address)
}

/// Runs a scenario until SIGINT or SIGTERM on a current-thread runtime of its own. Refuses the
/// system bus: the address comes from `address` or `DBUS_SESSION_BUS_ADDRESS`, and it is an
/// error if neither is given.
pub fn publish(scenario: Scenario, address: Option<&str>) -> Result<(), Error> {
    let address = bus_address(address)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Io("start the async runtime", err))?;
    runtime.block_on(async move {
        let names = scenario.bus_names();
        let simulator = Simulator::start(&address, scenario).await?;
        eprintln!(
            "simulating {} on {address}; stop with Ctrl-C",
            names.join(", ")
        );
        let waited = interrupted().await;
        simulator.stop().await;
        waited.map_err(|err| Error::Io("wait for a signal", err))
    })
}

/// The bus to simulate on: never the system bus.
fn bus_address(address: Option<&str>) -> Result<String, Error> {
    let address = match address {
        Some(address) => address.to_string(),
        None => std::env::var("DBUS_SESSION_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
            .ok_or(Error::NoAddress)?,
    };
    let system = std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok();
    if address.contains("system_bus_socket") || system.as_deref() == Some(address.as_str()) {
        return Err(Error::SystemBus(address));
    }
    Ok(address)
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_bus_is_refused() {
        let err = bus_address(Some("unix:path=/var/run/dbus/system_bus_socket"))
            .expect_err("system bus")
            .to_string();
        assert!(err.contains("is the system bus"), "{err}");
        assert_eq!(
            bus_address(Some("unix:path=/tmp/x")).ok(),
            Some("unix:path=/tmp/x".to_string())
        );
    }
}
