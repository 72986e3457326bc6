//! `simulate --replay`: a configuration (the recording's own, or any other) over a flight
//! recording, tick by tick through the engine as the daemon ran it, with what the device
//! published kept beside what the replayed configuration publishes.
//!
//! The recording holds the engine's inputs (each pack's reading and state after presence, the
//! current source's devices, the feed-in setting as read, date and tick length), and at each
//! full line the engine's saved state and its memory besides (the envelope's last good limits
//! and faults in a row, the last limits with a battery online, the packs' current shares, the
//! feed-in hold's time unrounded): the replay restores both at its first tick and feeds the
//! ticks in order, so that a recording starting mid-run replays from where the device was.
//! The feed-in setting is the one the device read: a replayed configuration that would have
//! written another value does not change what follows.

use std::path::Path;

use aggregator_core::engine::{Engine, Settings};
use aggregator_core::memory::Memory;
use aggregator_core::state::State;

use crate::offline::{create_folder, file_name, to_csv, write, Beside, Sample};
use crate::Error;
use aggregator::config::check::{check_to_run, Failed};
use aggregator::record::{self, PublishedValues, Tick};

/// What a replay found.
pub struct Replayed {
    pub samples: Vec<Sample>,
    /// The first tick whose published values differ from the recording's (0.01 V, 0.01 A,
    /// 0.1 %), with what differs.
    pub first_difference: Option<String>,
    /// Where the file is cut, when it is.
    pub cut: Option<String>,
}

/// Whether two published values agree within 0.01 V, 0.01 A and 0.1 % SoC; else what differs.
pub fn differs(replayed: &PublishedValues, recorded: &PublishedValues) -> Option<String> {
    let mut what = Vec::new();
    let mut check = |name: &str, a: f64, b: f64, tolerance: f64| {
        if (a - b).abs() > tolerance {
            what.push(format!("{name} {a} replayed, {b} recorded"));
        }
    };
    check("CVL", replayed.cvl_v, recorded.cvl_v, 0.01);
    check("CCL", replayed.ccl_a, recorded.ccl_a, 0.01);
    check("DCL", replayed.dcl_a, recorded.dcl_a, 0.01);
    match (replayed.soc_pct, recorded.soc_pct) {
        (Some(a), Some(b)) => check("SoC", a, b, 0.1),
        (None, None) => {}
        (a, b) => what.push(format!("SoC {a:?} replayed, {b:?} recorded")),
    }
    if replayed.feed_in_write != recorded.feed_in_write {
        what.push(format!(
            "feed-in write {:?} replayed, {:?} recorded",
            replayed.feed_in_write, recorded.feed_in_write
        ));
    }
    (!what.is_empty()).then(|| what.join(", "))
}

/// The engine as it was before the recording's first tick: its saved state (`state`), then its
/// memory besides (`memory`). A recording without them (a run that started with it) starts
/// the engine fresh, as the daemon did; one without the memory (made before it was recorded)
/// starts it from the state alone, and a memory this program cannot read is left out with a
/// warning: either may differ in its first ticks where the memory would have counted.
fn start_where_recorded(
    engine: &mut Engine,
    number: u64,
    flat: &record::Flat,
) -> Result<(), Error> {
    if let Some(state) = flat.get("state") {
        let state: State =
            serde_json::from_value(state.clone()).map_err(|source| Error::RecordedState {
                tick: number,
                source,
            })?;
        for problem in engine.restore(&state) {
            eprintln!("warning: tick {number}: the recorded state: {problem}");
        }
    }
    if let Some(memory) = flat.get("memory") {
        match serde_json::from_value::<Memory>(memory.clone()) {
            Ok(memory) => engine.restore_memory(&memory),
            Err(e) => eprintln!(
                "warning: tick {number}: the recorded `memory` is not one this program reads \
                 ({e}); the replay starts from the state alone"
            ),
        }
    }
    Ok(())
}

/// Replays the ticks of `recording` with the configuration in `config`.
pub fn replay(
    recording: &record::Recording,
    config: &Path,
    plugins_dir: Option<&Path>,
) -> Result<Replayed, Error> {
    let checked = check_to_run(config, plugins_dir);
    let Some(ready) = checked.ready else {
        return Err(Error::Config(checked.errors));
    };
    let refused = |kind, failed: Failed| Error::Refused { kind, failed };
    let strategy = ready
        .strategy
        .map_err(|failed| refused("strategy", failed))?;
    let current_source = ready
        .current_source
        .map_err(|failed| refused("current source", failed))?;
    let config = ready.config;
    let mut engine = Engine::with_failures(
        Settings::from(&config),
        &config.strategy.plugin,
        Ok(strategy),
        Ok(current_source),
    );
    let mut samples = Vec::with_capacity(recording.ticks.len());
    let mut first_difference = None;
    let mut start = None;
    for (k, (number, flat)) in recording.ticks.iter().enumerate() {
        let tick: Tick = record::unflatten(*number, flat)?;
        if k == 0 {
            start_where_recorded(&mut engine, *number, flat)?;
        }
        engine.set_publishing(flat.get("in/publishing") != Some(&serde_json::Value::Bool(false)));
        let outcome = engine.tick(&tick.batteries, &tick.inputs);
        let replayed = PublishedValues::of(&outcome);
        if first_difference.is_none() {
            if let Some(recorded) = &tick.published {
                if let Some(what) = differs(&replayed, recorded) {
                    first_difference = Some(format!("tick {number}: {what}"));
                }
            }
        }
        let t0 = *start.get_or_insert(tick.t_s);
        let elapsed_s = tick.t_s - t0;
        let feed_in = outcome.feed_in_write.or(tick.inputs.feed_in_setting);
        samples.push(Sample {
            beside: Some(Beside {
                recorded: tick.published,
                shadow: tick.shadow,
            }),
            ..Sample::of(&outcome, elapsed_s, tick.inputs.date, elapsed_s, feed_in)
        });
    }
    Ok(Replayed {
        samples,
        first_difference,
        cut: recording.cut.clone(),
    })
}

/// The CSV of a replay: `simulate`'s columns, then the recorded ones (`published_*`: what
/// the device published; `shadow_*`: its shadow strategy).
pub fn replay_csv(samples: &[Sample]) -> String {
    let plain = to_csv(samples);
    let mut lines = plain.lines();
    let mut text = String::with_capacity(plain.len() * 2);
    let header = lines.next().unwrap_or_default();
    text.push_str(header);
    text.push_str(
        ",published_cvl_v,published_ccl_a,published_dcl_a,published_soc_pct,published_feed_in,\
         shadow_cvl_v,shadow_ccl_a,shadow_dcl_a,shadow_soc_pct\n",
    );
    let cols = |p: Option<&PublishedValues>, feed_in: bool| match p {
        Some(p) => {
            let mut c = format!(
                "{:.3},{:.2},{:.2},{}",
                p.cvl_v,
                p.ccl_a,
                p.dcl_a,
                p.soc_pct.map_or(String::new(), |s| format!("{s:.2}"))
            );
            if feed_in {
                c.push(',');
                c.push_str(&p.feed_in_write.map_or(String::new(), |f| f.to_string()));
            }
            c
        }
        None if feed_in => ",,,,".to_string(),
        None => ",,,".to_string(),
    };
    for (line, s) in lines.zip(samples) {
        let b = s.beside.clone().unwrap_or_default();
        text.push_str(line);
        text.push(',');
        text.push_str(&cols(b.recorded.as_ref(), true));
        text.push(',');
        text.push_str(&cols(b.shadow.as_ref(), false));
        text.push('\n');
    }
    text
}

/// `simulate --replay FILE [--config FILE]`: writes `replay.csv` and `replay.svg` into `out`
/// (and `recorded-config.yaml`, the recording's own configuration, and
/// `recorded-shadow-config.yaml`, the shadow's, when one ran). An error too when the replay
/// with the recording's own configuration differs from what the device published.
pub fn replay_command(
    file: &Path,
    config: Option<&Path>,
    plugins_dir: Option<&Path>,
    out: &Path,
) -> Result<(), Error> {
    let recording = record::read(file)?;
    if let Some(cut) = &recording.cut {
        eprintln!(
            "warning: {}: {cut}; replaying the {} ticks before it",
            file.display(),
            recording.ticks.len()
        );
    }
    create_folder(out)?;
    let own = out.join("recorded-config.yaml");
    write(&own, recording.config.as_bytes())?;
    if let Some(text) = &recording.shadow_config {
        // The shadow's own config: `--config` with it replays what the shadow computed.
        let shadow = out.join("recorded-shadow-config.yaml");
        write(&shadow, text.as_bytes())?;
    }
    let config_file = config.unwrap_or(&own);
    let replayed = replay(&recording, config_file, plugins_dir)?;
    let title = format!(
        "replay of {} with {} (grey: published on the device)",
        file_name(file),
        if config.is_some() {
            file_name(config_file)
        } else {
            "its own config".to_string()
        }
    );
    let csv = out.join("replay.csv");
    let svg = out.join("replay.svg");
    write(&csv, replay_csv(&replayed.samples).as_bytes())?;
    write(
        &svg,
        crate::chart::render(&replayed.samples, &title)?.as_bytes(),
    )?;
    eprintln!(
        "replayed {} ticks: {} and {}",
        replayed.samples.len(),
        csv.display(),
        svg.display()
    );
    match (&replayed.first_difference, config) {
        (None, _) => {
            eprintln!("the replay publishes what the device published (0.01 V, 0.01 A, 0.1 %)");
            Ok(())
        }
        (Some(first), None) => Err(Error::Differs(first.clone())),
        (Some(first), Some(_)) => {
            eprintln!("the replayed config differs from what was published first at {first}");
            Ok(())
        }
    }
}
