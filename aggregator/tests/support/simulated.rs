//! The daemon's tick in simulated time: `simulate`'s offline runner (the daemon's own snapshot,
//! presence and engine steps on a scenario's simulated devices) with every tick's published
//! paths and the log lines the daemon would write. No bus, no waiting: a 90 s outage takes
//! as long as computing 450 ticks.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregator::config::check::check_to_run;
use aggregator_core::engine::Event;
use aggregator_core::state::State;
use aggregator_core::value::Value;
use aggregator_sim::offline::{run_observed, Observed, Options};
use aggregator_sim::Scenario;

/// Every published path of the virtual battery after one tick.
pub type Items = BTreeMap<String, Value>;

/// One tick as the bus would show it.
#[derive(Clone, Debug)]
pub struct Tick {
    /// Simulated seconds since the start.
    pub elapsed_s: f64,
    /// The published paths.
    pub items: Items,
    /// `/Settings/CGwacs/OvervoltageFeedIn` after the tick.
    pub feed_in: Option<i64>,
    /// What the engine reported (the daemon logs one line for each).
    pub events: Vec<Event>,
}

/// A whole run: every tick, the daemon's log and what it would save at the end.
pub struct Run {
    pub ticks: Vec<Tick>,
    pub log: String,
    /// The state the daemon would write to its state file after the last tick (as it does
    /// when it stops).
    pub state: State,
}

/// The date simulated runs start on when the scenario names none (strategies charge by the
/// date, so the runner needs one).
const START: &str = "start: 2026-06-15T12:00\n";

/// Runs `config_yaml` (with `@DIR@`, `@PLUGINS@` and `@LFP@` replaced as for the daemon on
/// the bus) on `scenario_yaml` for `length` of simulated time, one tick every
/// `update_interval`.
pub fn run(scenario_yaml: &str, config_yaml: &str, length: Duration) -> Run {
    run_with(scenario_yaml, config_yaml, length, |_, _| {})
}

/// [`run`], and `also` after every tick with the config's text as the daemon read it and the
/// tick (its inputs, outcome and engine).
pub fn run_with(
    scenario_yaml: &str,
    config_yaml: &str,
    length: Duration,
    mut also: impl FnMut(&str, &Observed),
) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("config.yaml");
    let config_text = super::bus::config_text(dir.path(), config_yaml);
    std::fs::write(&config, &config_text).expect("write config");
    let scenario_text = if scenario_yaml.contains("\nstart:") {
        scenario_yaml.to_string()
    } else {
        format!("{START}{scenario_yaml}")
    };
    let scenario = Scenario::parse(&scenario_text, "scenario").expect("a valid scenario");
    let checked = check_to_run(&config, Some(&super::build_dir()));
    let errors: Vec<String> = checked.errors.iter().map(ToString::to_string).collect();
    let ready = checked
        .ready
        .unwrap_or_else(|| panic!("the config is refused: {}", errors.join("; ")));
    let tick = ready.config.update_interval;
    let options = Options {
        tick: None,
        every: tick,
        length: Some(length),
    };
    let log = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let mut ticks = Vec::new();
    let mut state = State::default();
    let mut observe = |o: &Observed| {
        state = o.engine.state();
        let items = published_items(o);
        ticks.push(Tick {
            elapsed_s: o.elapsed_s,
            items,
            feed_in: o.feed_in,
            events: o.outcome.events.clone(),
        });
        also(&config_text, o);
    };
    tracing::subscriber::with_default(subscriber, || {
        run_observed(ready, scenario, options, Some(&mut observe)).expect("the run")
    });
    let log = String::from_utf8_lossy(&log.0.lock().expect("log")).into_owned();
    Run { ticks, log, state }
}

fn published_items(o: &Observed) -> Items {
    o.published
        .items()
        .iter()
        .map(|(path, item)| (path.to_string(), item.value.clone()))
        .collect()
}

/// A path's value as a number (`None` when invalid or text).
pub fn num(items: &Items, path: &str) -> Option<f64> {
    match items.get(path)? {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A path's value as text.
pub fn text(items: &Items, path: &str) -> Option<String> {
    match items.get(path)? {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    }
}

impl Run {
    /// The first tick from `from` on where `reached` holds; every tick before it (from
    /// `from` on) must satisfy `keep`. Panics naming `what` when `reached` never comes or
    /// `keep` breaks first. The same checks as `support::bus::until_keeping`, on every tick
    /// instead of the values a client happened to read.
    pub fn until_keeping(
        &self,
        from: usize,
        what: &str,
        keep: impl Fn(&Items) -> bool,
        reached: impl Fn(&Items) -> bool,
    ) -> usize {
        for (index, tick) in self.ticks.iter().enumerate().skip(from) {
            if reached(&tick.items) {
                return index;
            }
            assert!(
                keep(&tick.items),
                "{what}: broken at {:.1} s before it was reached: {:?}\n{}",
                tick.elapsed_s,
                tick.items,
                self.log
            );
        }
        panic!("{what}: never reached\n{}", self.log);
    }

    /// The first tick from `from` on where `reached` holds.
    pub fn until(&self, from: usize, what: &str, reached: impl Fn(&Items) -> bool) -> usize {
        self.until_keeping(from, what, |_| true, reached)
    }

    /// The published paths at a tick.
    pub fn items(&self, index: usize) -> &Items {
        &self.ticks[index].items
    }

    /// The simulated seconds at a tick.
    pub fn at_s(&self, index: usize) -> f64 {
        self.ticks[index].elapsed_s
    }

    /// The first tick from `from` on with an event `wanted` accepts.
    pub fn event(&self, from: usize, what: &str, wanted: impl Fn(&Event) -> bool) -> usize {
        (from..self.ticks.len())
            .find(|&k| self.ticks[k].events.iter().any(&wanted))
            .unwrap_or_else(|| panic!("{what}: no such event\n{}", self.log))
    }

    /// How often `text` is in the log.
    pub fn occurrences(&self, text: &str) -> usize {
        self.log.matches(text).count()
    }
}

/// The log lines of a run, written by the subscriber of its thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}
