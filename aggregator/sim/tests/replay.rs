//! `simulate --replay` of a recording that starts mid-run: the daemon's tick in simulated time
//! (`support::simulated`) recorded as the daemon records it, the recording cut at each run of
//! its ticks (where a recording whose start was dropped begins), each cut replayed with the
//! recording's own config.

use crate::support;

use std::time::Duration;

use aggregator::record::{self, Recorder, Recording, TickRecord};
use aggregator_sim::replay::replay;
use support::config::{yaml, TestConfig};

/// The scenario: a pack's share falling, a hold of every pack, a feed-in hold (its comments).
fn scenario() -> String {
    let path = support::daemon_dir().join("tests/fixtures/replay/mid-run.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// 200 ms ticks: a run of the recording ([`record::FULL_EVERY`] ticks) is 12 s.
fn config() -> String {
    let strategy = "{ plugin: fault-test, config: { cvl: 55.2, ccl: 200, dcl: 200, fault: error, after_ticks: 375 } }";
    TestConfig::default()
        .batteries(|b| b.hold_for("8s"))
        .strategy(yaml(strategy))
        .safety(|s| s.feed_in_hold("20s").set("plugin_failures", 30))
        .to_yaml()
}

/// The scenario's 100 s recorded as the daemon records them: with the engine's memory at the
/// start of each run, and as a recording made before the memory was recorded.
fn recordings() -> (Recording, Recording) {
    let mut recorders: Option<[Recorder; 2]> = None;
    let mut before = None;
    support::simulated::run_with(
        &scenario(),
        &config(),
        Duration::from_secs(100),
        |text, o| {
            let recorders = recorders.get_or_insert_with(|| {
                [(); 2].map(|_| Recorder::new(1e9, 64 << 20, text.to_string()))
            });
            for (with_memory, recorder) in [true, false].into_iter().zip(recorders.iter_mut()) {
                // The engine before this tick is the one after the last: none before the first,
                // which a replay starts fresh as the daemon did.
                let restore_point = before.as_ref().filter(|_| recorder.wants_state());
                recorder.push(&TickRecord {
                    publishing: Some(true),
                    state: restore_point.map(|(state, _)| state),
                    memory: restore_point
                        .filter(|_| with_memory)
                        .map(|(_, memory)| memory),
                    out: Some(o.outcome),
                    ..TickRecord::inputs(o.elapsed_s, o.batteries, o.inputs)
                });
            }
            before = Some((o.engine.state(), o.engine.memory()));
        },
    );
    let [with, without] = recorders.expect("ticks were run");
    let read = |r: Recorder| record::read_from(&r.file_bytes("test")[..]).expect("readable");
    (read(with), read(without))
}

/// The recording from its run starting at tick `from` on, as a recording whose first runs
/// were dropped holds it.
fn from_tick(recording: &Recording, from: u64) -> Recording {
    Recording {
        header: recording.header.clone(),
        config: recording.config.clone(),
        shadow_config: recording.shadow_config.clone(),
        ticks: (recording.ticks.iter())
            .filter(|(n, _)| *n >= from)
            .cloned()
            .collect(),
        cut: None,
    }
}

/// The first difference of a replay of `recording` with its own config, for each tick a run
/// starts at.
fn first_differences(recording: &Recording) -> Vec<(u64, Option<String>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let own = dir.path().join("recorded-config.yaml");
    std::fs::write(&own, &recording.config).expect("write the config");
    let starts = (recording.ticks.iter())
        .filter(|(n, _)| n % record::FULL_EVERY == 0)
        .map(|(n, _)| *n);
    starts
        .map(|from| {
            let cut = from_tick(recording, from);
            let replayed = replay(&cut, &own, None).expect("the replay runs");
            assert_eq!(replayed.samples.len(), cut.ticks.len(), "from tick {from}");
            (from, replayed.first_difference)
        })
        .collect()
}

#[test]
fn a_recording_starting_mid_run_replays_to_what_was_published() {
    let (with_memory, _) = recordings();
    assert_eq!(with_memory.ticks.len(), 501);
    let differences = first_differences(&with_memory);
    assert_eq!(differences.len(), 9);
    for (from, first) in differences {
        assert_eq!(first, None, "the replay from tick {from}");
    }
}

#[test]
fn a_recording_without_the_engines_memory_still_replays() {
    let (_, without_memory) = recordings();
    let flat = &without_memory.ticks[60].1;
    assert!(flat.contains_key("state") && !flat.contains_key("memory"));
    let differences = first_differences(&without_memory);
    // From the daemon's start, as ever: the same values.
    assert_eq!(differences[0], (0, None));
    // From a run inside the falling share, the hold, the feed-in hold or the faults, it
    // replays every tick but may differ in its first ones: what the memory is recorded for.
    let differing: Vec<u64> = (differences.iter())
        .filter(|(_, first)| first.is_some())
        .map(|(from, _)| *from)
        .collect();
    assert!(!differing.is_empty(), "{differences:?}");
}
