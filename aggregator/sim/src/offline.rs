//! `simulate`: the configured strategy and current source (real plugins, loaded from disk as
//! the daemon loads them), the Coulomb counter and the safety envelope, i.e. the core's
//! [`Engine`], on a scenario's simulated batteries in simulated time: no bus, no sleeping.
//!
//! Every tick the models give what each device shows ([`Models::at`]); that becomes the
//! monitor's cache as the bus would fill it (only the paths the monitor keeps, each value as it
//! arrives off the wire), and the daemon's own gathering turns it into readings. Presence,
//! discovery and the engine are the daemon's too; the date comes from the scenario's `start:`
//! and moves on at midnight. Feed-in writes go to the simulated setting.
//!
//! The models do not react to the limits: the batteries do what the scenario says, and the
//! chart shows what the strategy asks of the chargers meanwhile.

// Readings and inputs are made from the cache exactly as the daemon makes them.
use aggregator::daemon::{gather, tick};
use tick::{BankMembers, TickTime};

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use plugin_api::{LocalDate, PluginKind};

use crate::battery::Item;
use crate::{BatteryStep, Error, Models, Scenario};
use aggregator::config::check::{check_to_run, Failed, Ready};
use aggregator_core::engine::Engine;
use aggregator_core::value::Value;
use venus_bus::monitor::{Cache, Class, Service, Values, FEED_IN_SETTING};
use venus_bus::variant::{to_wire, Field};

/// The CSV's header: one column per [`Sample`] field, units in the names.
pub const CSV_HEADER: &str = "time,elapsed_s,max_cell_v,min_cell_v,bank_v,current_a,cvl_v,\
                              ccl_a,dcl_a,soc_pct,feed_in,mode";

/// How to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Simulated time between ticks; `None`: the config's `update_interval`.
    pub tick: Option<Duration>,
    /// Simulated time between two samples kept.
    pub every: Duration,
    /// How long; `None`: one pass through the segments.
    pub length: Option<Duration>,
}

/// What the daemon would publish at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// The local date then.
    pub date: LocalDate,
    /// Seconds since that date's midnight.
    pub second_of_day: f64,
    /// The highest cell of the bank, V.
    pub max_cell_v: Option<f64>,
    /// The lowest cell, V.
    pub min_cell_v: Option<f64>,
    /// The bank voltage, V.
    pub bank_v: Option<f64>,
    /// The bank current, A (positive charges).
    pub current_a: Option<f64>,
    /// Charge voltage limit, V.
    pub cvl_v: f64,
    /// Charge current limit, A.
    pub ccl_a: f64,
    /// Discharge current limit, A.
    pub dcl_a: f64,
    /// State of charge, %.
    pub soc_pct: Option<f64>,
    /// `/Settings/CGwacs/OvervoltageFeedIn` after the tick (1: DC-coupled PV feeds in).
    pub feed_in: Option<i64>,
    /// `/Info/ChargeMode`.
    pub mode: String,
    /// What a recording holds beside it (a replay): the device's published values, and a
    /// shadow strategy's.
    pub beside: Option<Beside>,
}

impl Sample {
    /// The sample of one tick's outcome; where and when it was, and the feed-in setting after
    /// it, come from the caller (the simulated bus, or a recording).
    pub fn of(
        outcome: &aggregator_core::engine::Outcome,
        elapsed_s: f64,
        date: LocalDate,
        second_of_day: f64,
        feed_in: Option<i64>,
    ) -> Sample {
        let merged = &outcome.merged;
        Sample {
            elapsed_s,
            date,
            second_of_day,
            max_cell_v: merged.max_cell_voltage.as_ref().map(|e| e.value),
            min_cell_v: merged.min_cell_voltage.as_ref().map(|e| e.value),
            bank_v: merged.voltage_v,
            current_a: outcome.current_a,
            cvl_v: outcome.limits.cvl_v,
            ccl_a: outcome.limits.ccl_a,
            dcl_a: outcome.limits.dcl_a,
            soc_pct: outcome.soc_pct,
            feed_in,
            mode: outcome.mode.clone(),
            beside: None,
        }
    }
}

/// The recorded values drawn beside a replay's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Beside {
    /// What the device published.
    pub recorded: Option<aggregator::record::PublishedValues>,
    /// What the device's shadow strategy computed.
    pub shadow: Option<aggregator::record::PublishedValues>,
}

impl Sample {
    /// `2026-06-15T06:30:00`.
    pub fn time(&self) -> String {
        let s = self.second_of_day.round() as u64;
        format!(
            "{}T{:02}:{:02}:{:02}",
            self.date,
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// `simulate`: runs and writes `simulate.csv` and `simulate.svg` into `out`.
pub fn simulate_command(
    config: &Path,
    plugins_dir: Option<&Path>,
    scenario_file: &Path,
    out: &Path,
    options: Options,
) -> Result<(), Error> {
    let scenario = Scenario::load(scenario_file)?;
    let checked = check_to_run(config, plugins_dir);
    let Some(ready) = checked.ready else {
        return Err(Error::Config(checked.errors));
    };
    let strategy_name = ready.config.strategy.plugin.clone();
    let current_source_name = ready.config.current_source.plugin.clone();
    let started = Instant::now();
    let samples = run(ready, scenario, options)?;
    let elapsed = started.elapsed();
    let csv = out.join("simulate.csv");
    let svg = out.join("simulate.svg");
    let title = format!(
        "{} with {}: strategy {}, current source {}",
        file_name(scenario_file),
        file_name(config),
        strategy_name,
        current_source_name,
    );
    create_folder(out)?;
    write(&csv, to_csv(&samples).as_bytes())?;
    write(&svg, crate::chart::render(&samples, &title)?.as_bytes())?;
    let simulated = samples.last().map_or(0.0, |s| s.elapsed_s);
    eprintln!(
        "simulated {:.1} h in {:.1} s: {} and {}",
        simulated / 3600.0,
        elapsed.as_secs_f64(),
        csv.display(),
        svg.display()
    );
    Ok(())
}

/// A file's name (for a chart's title).
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string()
}

pub(crate) fn write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    aggregator::state_file::write_atomically(path, bytes).map_err(|source| Error::File {
        path: path.to_path_buf(),
        doing: "cannot write",
        source,
    })
}

pub(crate) fn create_folder(path: &Path) -> Result<(), Error> {
    aggregator::state_file::create_folder(path).map_err(|source| Error::File {
        path: path.to_path_buf(),
        doing: "cannot create",
        source,
    })
}

/// The samples as CSV ([`CSV_HEADER`]); an unknown value is an empty field.
pub fn to_csv(samples: &[Sample]) -> String {
    let mut text = String::with_capacity(samples.len() * 96 + CSV_HEADER.len() + 1);
    text.push_str(CSV_HEADER);
    text.push('\n');
    let num =
        |v: Option<f64>, decimals: usize| v.map_or(String::new(), |v| format!("{v:.decimals$}"));
    for s in samples {
        let mode = if s.mode.contains([',', '"']) {
            format!("\"{}\"", s.mode.replace('"', "\"\""))
        } else {
            s.mode.clone()
        };
        let _ = writeln!(
            text,
            "{},{},{},{},{},{},{:.3},{:.2},{:.2},{},{},{mode}",
            s.time(),
            s.elapsed_s,
            num(s.max_cell_v, 3),
            num(s.min_cell_v, 3),
            num(s.bank_v, 3),
            num(s.current_a, 2),
            s.cvl_v,
            s.ccl_a,
            s.dcl_a,
            num(s.soc_pct, 2),
            s.feed_in.map_or(String::new(), |f| f.to_string()),
        );
    }
    text
}

/// The most ticks one rehearsal simulates: three years of 1 s ticks.
pub const MOST_TICKS: u64 = 100_000_000;
/// The most samples one rehearsal keeps (each a few hundred bytes).
pub const MOST_SAMPLES: u64 = 2_000_000;

/// Runs the engine of `ready` on `scenario` and returns a sample every `options.every`.
pub fn run(ready: Ready, scenario: Scenario, options: Options) -> Result<Vec<Sample>, Error> {
    run_observed(ready, scenario, options, None)
}

/// One tick of a run as the daemon would publish it: for callers that look at more than the
/// samples (the tests of presence, holding and loss, in simulated time instead of waiting).
pub struct Observed<'a> {
    /// Seconds since the start.
    pub elapsed_s: f64,
    /// The batteries as presence gave them to the engine.
    pub batteries: &'a [aggregator_core::presence::Battery],
    /// The engine's other inputs.
    pub inputs: &'a aggregator_core::engine::TickInputs,
    /// The engine's outcome.
    pub outcome: &'a aggregator_core::engine::Outcome,
    /// Every path of the virtual battery after this tick, as the daemon's export holds them.
    pub published: &'a aggregator_core::published::Published,
    /// `/Settings/CGwacs/OvervoltageFeedIn` after the tick, as the next tick reads it.
    pub feed_in: Option<i64>,
    /// The engine after the tick: what the daemon would save in its state file now.
    pub engine: &'a Engine,
}

/// [`run`], and `observe` called after every tick (not only the samples kept); the published
/// paths are kept up to date only when someone observes them.
pub fn run_observed(
    ready: Ready,
    scenario: Scenario,
    options: Options,
    mut observe: Option<&mut dyn FnMut(&Observed)>,
) -> Result<Vec<Sample>, Error> {
    let Ready {
        config,
        scan,
        strategy,
        current_source,
        ..
    } = ready;
    let start = scenario.start().ok_or(Error::NoStart)?;
    // A rehearsal with the fail-safe limits of a plugin that refused its section would show
    // nothing worth seeing: the refusal is the answer.
    let refused = |kind, failed: Failed| Error::Refused { kind, failed };
    let strategy = strategy.map_err(|failed| refused("strategy", failed))?;
    let current_source = current_source.map_err(|failed| refused("current source", failed))?;
    let tick = options.tick.unwrap_or(config.update_interval);
    if tick.is_zero()
        || options.every.is_zero()
        || !options.every.as_nanos().is_multiple_of(tick.as_nanos())
    {
        return Err(Error::Every {
            every: options.every,
            tick,
        });
    }
    let length = options.length.unwrap_or_else(|| scenario.length());

    let mut engine = Engine::with_failures(
        aggregator_core::engine::Settings::from(&config),
        &config.strategy.plugin,
        Ok(strategy),
        Ok(current_source),
    );
    if let Some(state) = scenario.state() {
        // A scenario's strategy state is that of the strategy it was written for; rehearsing
        // another strategy on it starts that one fresh (the counter and the latches still
        // come from the scenario).
        let mut state = state.clone();
        if let Some(saved) = state
            .strategy
            .take_if(|saved| saved.plugin != config.strategy.plugin)
        {
            eprintln!(
                "note: the scenario's strategy state is `{}`'s; `{}` starts fresh",
                saved.plugin, config.strategy.plugin
            );
        }
        let problems = engine.restore(&state);
        if !problems.is_empty() {
            return Err(Error::State(problems));
        }
    }
    let pass_through = scan
        .find(&config.strategy.plugin, PluginKind::Strategy)
        .is_some_and(|plugin| plugin.needs_battery_limits);
    let mut members = BankMembers::of(&config);
    let mut presence = tick::presence_of(&config);

    let battery_names: Vec<String> = scenario.batteries().iter().map(|b| b.bus_name()).collect();
    let mut models = Models::new(scenario);
    let mut cache = Cache::default();
    let mut owners = Owners::default();
    for (name, items) in models.fixed() {
        put(&mut cache, &mut owners, &name, &items);
    }

    let ticks = (length.as_secs_f64() / tick.as_secs_f64()).floor();
    let every_ticks = (options.every.as_nanos() / tick.as_nanos()).max(1) as f64;
    let samples_wanted = (ticks / every_ticks).floor() + 1.0;
    for (what, count, most) in [
        ("ticks", ticks, MOST_TICKS),
        ("samples", samples_wanted, MOST_SAMPLES),
    ] {
        if count > most as f64 {
            return Err(Error::TooLong {
                length,
                tick,
                what,
                count,
                most,
            });
        }
    }
    let (ticks, every_ticks) = (ticks as u64, every_ticks as u64);
    let mut samples = Vec::with_capacity(samples_wanted as usize);
    let mut published = aggregator_core::published::Published::default();
    for k in 0..=ticks {
        // k ≤ MOST_TICKS, well within a u32.
        let elapsed = tick * k as u32;
        let elapsed_s = elapsed.as_secs_f64();
        let moment = models.at(elapsed, |index| {
            cache.services.contains_key(&battery_names[index])
        });
        for (name, step) in battery_names.iter().zip(moment.batteries) {
            match step {
                BatteryStep::Publish(items) => put(&mut cache, &mut owners, name, &items),
                BatteryStep::Hold => {}
                BatteryStep::Gone => {
                    cache.services.remove(name);
                }
            }
        }
        if let Some(items) = moment.vebus {
            put(&mut cache, &mut owners, super::VEBUS_NAME, &items);
        }
        for (index, items) in moment.solars.iter().enumerate() {
            put(&mut cache, &mut owners, &super::solar_name(index), items);
        }
        if let (Some(items), Some(spec)) = (moment.shunt, &models.scenario.shunt) {
            put(&mut cache, &mut owners, &spec.bus_name(), &items);
        }

        for (index, items) in moment.dc_devices.iter().enumerate() {
            let name = models.scenario.dc_devices[index].bus_name(index);
            put(&mut cache, &mut owners, &name, items);
        }

        // The daemon's tick, from its cache to the engine.
        let (date, second_of_day) = start.at(elapsed_s);
        let dt_s = if k == 0 { 0.0 } else { tick.as_secs_f64() };
        let snapshot = tick::snapshot(&cache, &members, &config);
        let (batteries, inputs) = tick::inputs(
            snapshot,
            &mut members,
            &mut presence,
            pass_through,
            &config,
            TickTime {
                now_s: elapsed_s,
                date,
                dt_s,
            },
        );
        let outcome = engine.tick(&batteries, &inputs);
        if let Some(value) = outcome.feed_in_write {
            // localsettings takes the write: the next tick reads it back.
            if let Some(settings) = cache.services.get_mut(super::settings::SETTINGS_NAME) {
                (settings.values).insert(FEED_IN_SETTING, Field::Number(value as f64));
            }
        }
        if let Some(observe) = observe.as_mut() {
            let cells = tick::cell_paths(config.publish.cell_voltages, &batteries);
            published.update(&outcome, &batteries, inputs.cells, &cells);
            observe(&Observed {
                elapsed_s,
                batteries: &batteries,
                inputs: &inputs,
                outcome: &outcome,
                published: &published,
                feed_in: gather::single_integer(&cache, Class::Settings, FEED_IN_SETTING),
                engine: &engine,
            });
        }
        if k % every_ticks == 0 {
            let feed_in = gather::single_integer(&cache, Class::Settings, FEED_IN_SETTING);
            samples.push(Sample::of(
                &outcome,
                elapsed_s,
                date,
                second_of_day,
                feed_in,
            ));
        }
    }
    Ok(samples)
}

/// The unique names the simulated services get, as the bus gives one to each connection: a
/// service back after it was gone is another process, which the daemon decides anew
/// (docs/discovery.md §2).
#[derive(Default)]
struct Owners(u64);

impl Owners {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!(":sim.{}", self.0)
    }
}

/// A service's values into the cache as the monitor keeps them: only the paths it reads, each
/// value as it comes off the wire.
fn put(cache: &mut Cache, owners: &mut Owners, name: &str, items: &[Item]) {
    let Some(class) = Class::of(name) else {
        return;
    };
    let values: Values = items
        .iter()
        .filter(|(path, _, _)| class.reads(path))
        .map(|(path, value, _)| (path, wire_field(value)))
        .collect();
    match cache.services.get_mut(name) {
        Some(service) => service.values = values,
        None => {
            cache.services.insert(
                name.to_string(),
                Service {
                    class,
                    owner: owners.next(),
                    values,
                    changed_at: Instant::now(),
                    scanned: true,
                },
            );
        }
    }
}

fn wire_field(value: &Value) -> Field {
    Field::from_wire(&to_wire(value))
}
