//! The flight recorder end to end: the daemon records on a private bus during a simulator
//! scenario, the `record` command has it save, and `simulate --replay` reproduces what it
//! published; the shadow strategy's recorded limits are what a replay of the shadow's config
//! gives, a panicking shadow leaves the live limits alone, and the shadow's plugin lines say
//! they are the shadow's. The live side runs in real time. Each test runs its daemon, and
//! `record`, from a path of its own to the program (a hard link, else a copy): `record` asks
//! every process running its program's file, so the tests run side by side, each asking only
//! its own daemon (and no other test's).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aggregator_sim::Scenario;
use support::config::{yaml, TestConfig};
use support::offline::{number, rows, scenarios, simulate, Row};
use support::world::World;

const DAEMON: &str = env!("CARGO_BIN_EXE_dbus-aggregate-batteries");

/// The shipped LTO config with the test's folders, the recorder saving into `recordings`
/// beside the config file (`@DIR@`) and `shadow` (a YAML section) appended.
fn config_with(shadow: &str) -> String {
    let shipped =
        std::fs::read_to_string(scenarios().join("lto-sunny-day-config.yaml")).expect("config");
    let text = shipped.replace(
        "plugins_dir: ../../target/release",
        "plugins_dir: \"@PLUGINS@\"\n  state_dir: \"@DIR@/state\"",
    );
    assert_ne!(text, shipped, "the config's paths section changed");
    format!("{text}\nrecord:\n  keep: 30m\n  dir: recordings\n  max_files: 3\n{shadow}\n")
}

/// The reasons in the names of the recordings saved for happenings in `folder`
/// (`recording-<time>-<reason>.jsonl.gz`, two reasons of one file joined by `-and-`).
fn happening_reasons(folder: &Path) -> Vec<String> {
    let mut reasons: Vec<String> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| {
            let n = n.strip_suffix(".jsonl.gz")?.strip_prefix("recording-")?;
            let reason = n.trim_start_matches(|c: char| c.is_ascii_digit());
            Some(reason.strip_prefix('-')?.to_string())
        })
        .filter(|r| r != "asked")
        .flat_map(|r| r.split("-and-").map(str::to_string).collect::<Vec<_>>())
        .collect();
    reasons.sort();
    reasons
}

/// Runs the scenario `agree-lto.yaml` live with `config`, asks the daemon for its recording
/// with the `record` command, waits until the recordings for happenings name `happenings`
/// (sorted; none: no wait), and returns the recording, the test's folder and the log.
fn record_live(config: &str, happenings: &[&str]) -> (PathBuf, tempfile::TempDir, String) {
    let scenario_file = scenarios().join("tests/agree-lto.yaml");
    let own = tempfile::tempdir().expect("temp dir");
    let program = own.path().join("dbus-aggregate-batteries");
    if std::fs::hard_link(DAEMON, &program).is_err() {
        std::fs::copy(DAEMON, &program).expect("copy the daemon's program");
    }
    support::world::runtime().block_on(async {
        let scenario_text = std::fs::read_to_string(&scenario_file).expect("scenario");
        let length = Scenario::parse(&scenario_text, "agree-lto.yaml")
            .expect("scenario")
            .length();
        // What a save cut short by a power cut leaves: removed when the daemon starts.
        let leftover = |dir: &Path| dir.join("recordings").join(".state-Cut123.tmp");
        let mut w = World::start_program(&program, &scenario_text, config, |dir| {
            std::fs::create_dir_all(dir.join("recordings")).expect("recordings");
            std::fs::write(leftover(dir), "{\"tick\":").expect("leftover");
        })
        .await;
        tokio::time::sleep(length).await;
        let asked = Command::new(&program)
            .arg("--config")
            .arg(w.dir.path().join("config.yaml"))
            .arg("record")
            .output()
            .expect("run record");
        let said = String::from_utf8_lossy(&asked.stdout).to_string();
        assert!(asked.status.success(), "record: {said}");
        let folder = w.dir.path().join("recordings");
        // The relative record.dir is the config file's folder's, not the daemon's working
        // folder's: `record` names it as the daemon resolves it.
        let into = format!("it goes into {} (", folder.display());
        assert!(
            said.contains("asked process") && said.contains(&into),
            "{said}"
        );
        let mut file = None;
        for _ in 0..100 {
            file = std::fs::read_dir(&folder).ok().and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.to_string_lossy().ends_with("-asked.jsonl.gz"))
            });
            if file.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A happening within a minute of the one saved before is saved once the minute has
        // passed: that may be after the scenario's end.
        for _ in 0..1500 {
            if happenings.is_empty() || happening_reasons(&folder) == happenings {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = w.daemon.log_text();
        let file = file.unwrap_or_else(|| panic!("no recording saved; log:\n{log}"));
        assert!(
            !leftover(w.dir.path()).exists(),
            "a temporary file of a cut save is left in the recordings' folder"
        );
        if let Some(sim) = w.sim.take() {
            sim.stop().await;
        }
        w.daemon.terminate().await;
        (file, w.dir, log)
    })
}

/// `simulate --replay FILE [--config FILE]`: the CSV rows, what it said and its output folder.
fn replay(recording: &Path, config: Option<&Path>) -> (Vec<Row>, String, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(DAEMON);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let run = command
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .arg("simulate")
        .arg("--replay")
        .arg(recording)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("run simulate --replay");
    let said = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "simulate --replay failed: {said}");
    let csv = std::fs::read_to_string(out.path().join("replay.csv")).expect("replay.csv");
    let svg = std::fs::read_to_string(out.path().join("replay.svg")).expect("replay.svg");
    assert!(
        svg.contains("CCL published"),
        "the chart draws the published values"
    );
    (rows(&csv), said, out)
}

fn values(row: &Row, prefix: &str) -> [f64; 3] {
    [
        number(row, &format!("{prefix}cvl_v")),
        number(row, &format!("{prefix}ccl_a")),
        number(row, &format!("{prefix}dcl_a")),
    ]
}

fn close(a: [f64; 3], b: [f64; 3]) -> bool {
    a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 0.01)
}

/// A recording of the live daemon, replayed with its own config, gives every value the daemon
/// published (0.01 V, 0.01 A, 0.1 %); the shadow's recorded limits are those of a replay of
/// the shadow's config, which equals an offline `simulate` of that config on the scenario.
#[test]
fn a_live_recording_replays_to_the_published_values_and_the_shadow_to_its_own() {
    // Another LTO configuration: a lower first step with less current.
    let shadow = "shadow:
  strategy:
    plugin: lto-cv
    config:
      charge_voltage: 2.48
      max_cell_voltage: 2.55
      discharge_voltage: 2.10
      min_cell_voltage: 2.00
      max_charge_current: 100
      max_discharge_current: 120
      cv1: 2.44
      current_above_cv1: 30
      cv2: 2.50
      current_above_cv2: 5";
    let (file, dir, log) = record_live(&config_with(shadow), &["bound", "feed-in"]);
    assert!(log.contains("shadow strategy lto-cv"), "{log}");
    // Near the top of the charge feed-in is turned off and CCL falls to 0: two causes, both
    // saved (one file names both when they come at one tick; within a minute of the first,
    // the second is saved once the minute has passed, never dropped), each once however
    // often feed-in comes back.
    let folder = dir.path().join("recordings");
    let saved: Vec<String> = std::fs::read_dir(&folder)
        .expect("recordings")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        happening_reasons(&folder),
        ["bound", "feed-in"],
        "{saved:?}"
    );
    let asked = saved.iter().filter(|n| n.ends_with("-asked.jsonl.gz"));
    assert_eq!(asked.count(), 1, "{saved:?}");

    let (own, said, out) = replay(&file, None);
    assert!(
        said.contains("the replay publishes what the device published"),
        "{said}"
    );
    assert!(own.len() >= 20, "{} ticks recorded", own.len());
    for row in &own {
        assert!(
            close(values(row, ""), values(row, "published_")),
            "replayed and published differ: {row:?}"
        );
        let soc = |key: &str| row[key].parse::<f64>().ok();
        let agree = match (soc("soc_pct"), soc("published_soc_pct")) {
            (Some(a), Some(b)) => (a - b).abs() <= 0.1,
            (a, b) => a == b,
        };
        assert!(agree, "SoC differs: {row:?}");
    }
    let ccls: Vec<f64> = own.iter().map(|r| number(r, "published_ccl_a")).collect();
    for ccl in [120.0, 50.0, 10.0, 0.0] {
        assert!(ccls.contains(&ccl), "CCL {ccl} never published: {ccls:?}");
    }

    // The shadow: its own config, written by the replay beside the recording's.
    let shadow_config = out.path().join("recorded-shadow-config.yaml");
    let (shadowed, said, _) = replay(&file, Some(&shadow_config));
    assert!(said.contains("differs from what was published"), "{said}");
    for row in &shadowed {
        assert!(
            close(values(row, ""), values(row, "shadow_")),
            "the shadow's recorded limits are not the replay's: {row:?}"
        );
    }
    assert!(
        shadowed
            .iter()
            .any(|r| number(r, "shadow_ccl_a") != number(r, "published_ccl_a")),
        "the shadow computed the live limits: the comparison shows nothing"
    );

    // The replay of the shadow's config and an offline `simulate` of it agree: each replayed
    // tick is one that `simulate` computed within the seconds the live side lags behind the
    // scenario (the daemon's clock starts after the simulator's).
    let config_file = dir.path().join("shadow-config.yaml");
    std::fs::copy(&shadow_config, &config_file).expect("copy");
    let (offline, _) = simulate(
        &config_file,
        &scenarios().join("tests/agree-lto.yaml"),
        &["--tick", "100ms", "--every", "100ms"],
    );
    // From the first tick with the whole bank online (the simulator's bank is complete from
    // its first step; the daemon may find one battery a tick before the other).
    let online: Vec<&Row> = shadowed
        .iter()
        .skip_while(|r| r["bank_v"].is_empty() || r["mode"].contains("not found"))
        .collect();
    assert!(online.len() >= 15, "{} ticks online", online.len());
    for row in online {
        let t = number(row, "elapsed_s");
        let agrees = offline
            .iter()
            .filter(|o| (t - 1.0..=t + 6.0).contains(&number(o, "elapsed_s")))
            .any(|o| close(values(o, ""), values(row, "")));
        assert!(agrees, "replayed {row:?} is no offline value near {t:.1} s");
    }
}

/// A shadow strategy that panics at every tick: the daemon runs on, the live limits are what
/// a replay without any shadow gives, the shadow's fault is logged once and recorded as CCL 0.
#[test]
fn a_panicking_shadow_leaves_the_live_limits_alone() {
    let shadow = "shadow:
  strategy:
    plugin: fault-test
    config: { fault: panic, after_ticks: 0 }";
    let (file, _dir, log) = record_live(&config_with(shadow), &[]);
    let faults: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shadow strategy fault:"))
        .collect();
    assert_eq!(faults.len(), 1, "logged once: {faults:#?}");
    assert!(log.contains("deliberate panic"), "{log}");
    let (rows, said, _) = replay(&file, None);
    assert!(
        said.contains("the replay publishes what the device published"),
        "{said}"
    );
    assert!(rows.len() >= 20);
    assert!(rows.iter().all(|r| number(r, "shadow_ccl_a") == 0.0));
    assert!(
        rows.iter().any(|r| number(r, "published_ccl_a") > 0.0),
        "the live strategy charges"
    );
}

/// A shadow strategy that takes 1.5 s a tick (far beyond its budget): the live tick never
/// waits for it, the live limits are what a replay without any shadow gives, and the recording
/// says at each tick why the shadow's limits are missing (late, or busy with an earlier tick).
#[test]
fn a_slow_shadow_is_recorded_late_and_leaves_the_live_limits_alone() {
    let shadow = "shadow:
  strategy:
    plugin: fault-test
    config: { fault: slow, slow_ms: 1500, ccl: 7 }";
    let (file, _dir, log) = record_live(&config_with(shadow), &[]);
    assert!(
        log.contains("the shadow strategy gave no answer within"),
        "{log}"
    );
    let recording = aggregator::record::read(&file).expect("recording");
    assert!(
        recording.ticks.len() >= 20,
        "{} ticks",
        recording.ticks.len()
    );
    for (tick, flat) in &recording.ticks {
        assert!(
            flat.contains_key("shadow/ccl") != flat.contains_key("shadow/skipped"),
            "tick {tick}: the shadow's limits or why they are missing: {flat:?}"
        );
    }
    // Once the bank is found the strategy computes, and takes its 1.5 s.
    let skipped: Vec<&str> = (recording.ticks.iter())
        .filter(|(_, flat)| flat.contains_key("bat/0/name"))
        .map(|(_, flat)| {
            flat.get("shadow/skipped")
                .and_then(|v| v.as_str())
                .unwrap_or("")
        })
        .collect();
    assert!(skipped.len() >= 20, "{skipped:?}");
    assert!(skipped.contains(&"late"), "{skipped:?}");
    assert!(
        skipped.iter().all(|s| *s == "late" || *s == "busy"),
        "every tick without the shadow's answer, and saying why: {skipped:?}"
    );
    let (rows, said, _) = replay(&file, None);
    assert!(
        said.contains("the replay publishes what the device published"),
        "{said}"
    );
    assert!(
        rows.iter().any(|r| number(r, "published_ccl_a") > 7.0),
        "the live strategy charges on its own limits"
    );
}

/// lfp-balancing as the live and as the shadow strategy, each with no balancing recorded yet:
/// both say that they raise CVL for a balancing, and the shadow's line says it is the
/// shadow's (else it reads as the live strategy acting).
#[test]
fn the_shadows_plugin_lines_say_they_are_the_shadows() {
    let scenario = "
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - { duration: 60s, cell_voltage: 3.35, battery_current: 5 }
";
    let mut balancing = yaml(support::bus::LFP_STRATEGY)["strategy"].clone();
    balancing["config"]["balancing_voltage"] = yaml("3.48");
    let config = TestConfig::default()
        .strategy(balancing.clone())
        .section("shadow", |s| s.set("strategy", balancing))
        .to_yaml();
    let said = "CVL increase for balancing activated";
    let log = support::world::runtime().block_on(async {
        let mut w = World::start(scenario, &config).await;
        for _ in 0..200 {
            if w.daemon.log_text().matches(said).count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(sim) = w.sim.take() {
            sim.stop().await;
        }
        w.daemon.terminate().await;
        w.daemon.log_text()
    });
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(said)).collect();
    assert_eq!(lines.len(), 2, "{log}");
    let shadow = format!("INFO shadow: {said}");
    let live = format!("INFO {said}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(&shadow)).count(),
        1,
        "{lines:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains(&live)).count(),
        1,
        "{lines:#?}"
    );
}
