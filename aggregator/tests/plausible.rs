//! Absurd values, values that stop and services that come and go, end to end: the simulator
//! plays the scenario on a private bus, the daemon runs as a process, every check reads the
//! published service with a plain client and, at the end, the state file. The absurd values
//! themselves run in simulated time (the daemon's tick through `simulate`'s offline runner),
//! two of them on the bus as well.
//!
//! A value outside its plausible range is a missing value: it never reaches the published
//! values, the counter, a strategy or the state file. A pack that stops publishing a value it
//! published is held, then lost. A service that was never part of the bank is never counted
//! as a lost battery.

use crate::support;

use std::time::Duration;

use aggregator::state_file::StateStore;
use aggregator_core::state::State;
use aggregator_core::value::Value;
use support::bus::{items, num, text, until, until_keeping, OWN};
use support::config::TestConfig;
use support::simulated as sim;
use support::world::{runtime, World};

type Items = std::collections::HashMap<String, (zbus::zvariant::OwnedValue, String)>;

const SECONDS: Duration = Duration::from_secs(20);

/// Two 16-cell LFP packs of 280 Ah at 60 % and 3.35 V per cell, 5 A into each; `EXTRA` and
/// `SEGMENTS` replaced by the test's.
const BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
EXTRA
segments:
SEGMENTS
"#;

/// lfp-balancing, the batteries' current, the counter saved often (every 0.0001 × 560 Ah).
fn test_config(hold: &str) -> TestConfig {
    TestConfig::default()
        .batteries(|b| b.hold_for(hold))
        .lfp()
        .section("soc", |s| s.set("save_precision", 0.0001))
}

fn config(hold: &str) -> String {
    test_config(hold).to_yaml()
}

/// Bat1 publishes `value` at `path` for 4 s, after 4 s of good values and before good values
/// again.
fn absurd_episode(path: &str, value: &str) -> String {
    let segments = format!(
        r#"
  - {{ duration: 4s, cell_voltage: 3.35, battery_current: 5 }}
  - duration: 4s
    cell_voltage: 3.35
    battery_current: 5
    batteries:
      Bat1:
        values:
          {path}: {value}
  - {{ duration: 1h, cell_voltage: 3.35, battery_current: 5 }}
"#
    );
    BANK.replace("EXTRA", "").replace("SEGMENTS", &segments)
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// Nothing of an absurd value in what is published (`num` reads a published path,
/// `all_finite` says whether every published number is finite): the bank's voltage, current
/// and SoC are those of its packs, the limits no higher than `before`.
fn sane_with(all_finite: bool, num: impl Fn(&str) -> Option<f64>, before: (f64, f64)) -> bool {
    let near = |path, want: f64, by: f64| num(path).is_none_or(|v| (v - want).abs() <= by);
    all_finite
        && near("/Dc/0/Voltage", 53.6, 0.5)
        && near("/Dc/0/Current", 10.0, 5.0)
        && near("/Soc", 60.0, 1.0)
        && num("/Info/MaxChargeCurrent").is_none_or(|c| c <= before.0 + 1e-9)
        && num("/Info/MaxDischargeCurrent").is_none_or(|d| d <= before.1 + 1e-9)
}

/// [`sane_with`] on what a client reads off the bus.
fn sane(i: &Items, before: (f64, f64)) -> bool {
    let all_finite = i.values().all(|(value, _)| {
        !matches!(
            venus_bus::variant::Field::from_owned(value),
            venus_bus::variant::Field::Number(v) if !v.is_finite()
        )
    });
    sane_with(all_finite, |path| num(i, path), before)
}

/// [`sane_with`] on what a simulated tick published.
fn sim_sane(i: &sim::Items, before: (f64, f64)) -> bool {
    let all_finite = i
        .values()
        .all(|value| !matches!(value, Value::Float(v) if !v.is_finite()));
    sane_with(all_finite, |path| sim::num(i, path), before)
}

/// The log lines of an absurd episode at `path`: one when it starts, one when it ends; no
/// balancing, no battery lost.
fn assert_one_episode_logged(log: &str, path: &str) {
    let started = format!("battery Bat1: {path} is ");
    assert_eq!(lines_with(log, &started), 1, "{log}");
    assert_eq!(
        lines_with(log, &format!("battery Bat1: {path} plausible again")),
        1,
        "{log}"
    );
    assert_eq!(lines_with(log, "Balancing goal reached"), 0, "{log}");
    assert_eq!(lines_with(log, "battery Bat1 lost"), 0, "{log}");
}

/// The state the daemon saved (or would save) after an absurd episode: the counter near the
/// packs' 60 %, no balancing recorded.
fn assert_saved_after_episode(state: &State, log: &str) {
    let soc = 100.0 * state.charge_ah.unwrap_or(f64::NAN) / state.capacity_ah.unwrap_or(1.0);
    assert!(
        (59.0..=61.0).contains(&soc),
        "saved SoC {soc}: {state:?}\n{log}"
    );
    let strategy = state
        .strategy
        .as_ref()
        .map(|s| s.state.as_str())
        .unwrap_or_default();
    assert!(strategy.contains("\"last_balancing\":null"), "{strategy}");
}

/// Plays [`absurd_episode`] in simulated time (the daemon's tick through `simulate`'s offline
/// runner) and checks, on every tick: before it, the whole bank and its limits; during it,
/// Bat1 not online and nothing of the value published; after it, Bat1 online again; one log
/// line naming the path when it starts and one when it ends; no balancing recorded and a
/// counter near the packs' 60 % in the state the daemon would save.
fn an_absurd_value_is_missing(path: &str, value: &str) {
    let run = sim::run(
        &absurd_episode(path, value),
        &config("60s"),
        Duration::from_secs(15),
    );
    let whole = run.until(0, "the whole bank", |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(2.0)
            && sim::num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
    });
    let items = run.items(whole);
    let before = (
        sim::num(items, "/Info/MaxChargeCurrent").unwrap_or(0.0),
        sim::num(items, "/Info/MaxDischargeCurrent").unwrap_or(0.0),
    );
    // During: Bat1 held with its last plausible reading.
    let held = run.until_keeping(
        whole,
        "Bat1 held",
        |i| sim_sane(i, before),
        |i| sim::num(i, "/System/NrOfBatteries") == Some(1.0),
    );
    // After: online again, nothing of the value published meanwhile.
    let back = run.until_keeping(
        held,
        "Bat1 back",
        |i| sim_sane(i, before),
        |i| sim::num(i, "/System/NrOfBatteries") == Some(2.0),
    );
    let after = run.items(back);
    assert!(sim_sane(after, before), "{after:?}");
    assert_one_episode_logged(&run.log, path);
    assert_saved_after_episode(&run.state, &run.log);
}

/// [`an_absurd_value_is_missing`] on a real bus: the simulator plays the episode, the daemon
/// runs as a process, a client reads what it publishes and, once it stopped, its state file.
fn on_the_bus_an_absurd_value_is_missing(path: &str, value: &str) {
    runtime().block_on(async {
        let mut w = World::start(&absurd_episode(path, value), &config("60s")).await;
        let whole = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
                && num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
        })
        .await;
        assert!(whole.0, "{:?}\n{}", whole.1, w.daemon.log_text());
        let before = (
            num(&whole.1, "/Info/MaxChargeCurrent").unwrap_or(0.0),
            num(&whole.1, "/Info/MaxDischargeCurrent").unwrap_or(0.0),
        );
        // During: Bat1 held with its last plausible reading.
        until_keeping(
            &w.conn,
            SECONDS,
            |i| sane(i, before),
            |i| num(i, "/System/NrOfBatteries") == Some(1.0),
        )
        .await
        .reached("Bat1 held");
        // After: online again, nothing of the value published meanwhile.
        let after = until_keeping(
            &w.conn,
            SECONDS,
            |i| sane(i, before),
            |i| num(i, "/System/NrOfBatteries") == Some(2.0),
        )
        .await
        .reached("Bat1 back");
        assert!(sane(&after, before), "{after:?}");

        let log = w.daemon.log_text();
        assert_one_episode_logged(&log, path);
        assert_eq!(w.daemon.terminate().await, Some(0), "{log}");

        let state = StateStore::new(w.dir.path().join("state"))
            .load()
            .unwrap_or_else(|problem| panic!("{problem}\n{log}"));
        assert_saved_after_episode(&state, &log);
    });
}

#[test]
fn a_pack_voltage_of_1e9_is_missing() {
    an_absurd_value_is_missing("/Dc/0/Voltage", "1e9");
}

#[test]
fn on_the_bus_a_pack_voltage_of_1e9_is_missing() {
    on_the_bus_an_absurd_value_is_missing("/Dc/0/Voltage", "1e9");
}

#[test]
fn a_pack_voltage_of_2_to_the_62_is_missing() {
    an_absurd_value_is_missing("/Dc/0/Voltage", "4611686018427387904");
}

#[test]
fn a_pack_current_of_1e9_is_missing() {
    an_absurd_value_is_missing("/Dc/0/Current", "1e9");
}

#[test]
fn a_pack_current_of_minus_1e9_is_missing() {
    an_absurd_value_is_missing("/Dc/0/Current", "-1e9");
}

#[test]
fn a_pack_soc_of_1e9_is_missing() {
    an_absurd_value_is_missing("/Soc", "1e9");
}

#[test]
fn a_pack_ccl_of_minus_1e9_is_missing() {
    an_absurd_value_is_missing("/Info/MaxChargeCurrent", "-1e9");
}

#[test]
fn a_cell_of_minus_1e9_v_is_missing() {
    an_absurd_value_is_missing("/Voltages/Cell3", "-1e9");
}

#[test]
fn a_cell_of_0_v_is_missing() {
    an_absurd_value_is_missing("/Voltages/Cell3", "0");
}

#[test]
fn on_the_bus_a_cell_of_0_v_is_missing() {
    on_the_bus_an_absurd_value_is_missing("/Voltages/Cell3", "0");
}

#[test]
fn a_soc_of_1e9_from_the_start_never_starts_the_counter() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat1: { values: { /Soc: 1e9 } } }
"#;
        let scenario = BANK.replace("EXTRA", "").replace("SEGMENTS", segments);
        let mut w = World::start(&scenario, &config("60s")).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0) && num(i, "/Soc").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let soc = num(&items, "/Soc").unwrap_or(f64::NAN);
        assert!((59.0..=61.0).contains(&soc), "SoC {soc}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let log = w.daemon.log_text();
        assert_eq!(
            lines_with(&log, "battery Bat1: /Soc is 1000000000.0"),
            1,
            "{log}"
        );
        assert_eq!(w.daemon.terminate().await, Some(0), "{log}");
        let state = StateStore::new(w.dir.path().join("state"))
            .load()
            .unwrap_or_else(|problem| panic!("{problem}\n{log}"));
        let saved = 100.0 * state.charge_ah.unwrap_or(f64::NAN) / state.capacity_ah.unwrap_or(1.0);
        assert!(
            (59.0..=61.0).contains(&saved),
            "saved SoC {saved}: {state:?}"
        );
    });
}

/// Bat1 publishes its cell extremes, then stops: while a cell is above the safety bound, the
/// high-cell stop holds (the pack is held, then lost), and never lets go at once.
#[test]
fn extremes_that_stop_during_a_high_cell_stop_never_release_it() {
    runtime().block_on(async {
        let segments = r#"
  - { duration: 3s, cell_voltage: 3.40, battery_current: 5 }
  - duration: 3s
    cell_voltage: 3.40
    battery_current: 5
    batteries: { Bat1: { cells: { 5: 3.62 } } }
  - duration: 1h
    cell_voltage: 3.40
    battery_current: 5
    batteries:
      Bat1:
        cells: { 5: 3.62 }
        values: { /System/MaxCellVoltage: invalid, /System/MinCellVoltage: invalid, /Voltages/Cell5: invalid }
"#;
        let scenario = BANK.replace("EXTRA", "").replace("SEGMENTS", segments);
        let w = World::start(&scenario, &config("2s")).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent") == Some(0.0)
                && num(i, "/Alarms/HighCellVoltage") == Some(2.0)
        })
        .await;
        assert!(ok, "no high-cell stop: {items:?}\n{}", w.daemon.log_text());
        // From here on CCL stays 0: held, then lost (on_lost block_charge).
        let lost = until_keeping(
            &w.conn,
            SECONDS,
            |i| num(i, "/Info/MaxChargeCurrent") == Some(0.0),
            |i| num(i, "/Alarms/BmsCable") == Some(2.0),
        )
        .await
        .reached("Bat1 lost");
        let mode = text(&lost, "/Info/ChargeMode").unwrap_or_default();
        assert!(mode.contains("battery lost"), "{mode}");
        let log = w.daemon.log_text();
        assert!(
            log.contains("battery Bat1 not online (/Voltages/Cell5 no longer published)")
                || log.contains("battery Bat1 not online (/System/MaxCellVoltage no longer published)"),
            "{log}"
        );
    });
}

/// Services appearing and vanishing every 0.2 s beside the two packs: once they are gone, the
/// two packs make the whole bank again (no "battery lost", CCL back), and each service that
/// came and went has one line, not one per coming and going.
#[test]
fn services_coming_and_going_never_block_the_bank() {
    runtime().block_on(async {
        const CHURN: usize = 12;
        let extra: String = (1..=CHURN)
            .map(|k| {
                format!(
                    "  - {{ service: churn{k}, custom_name: Churn{k}, device_instance: {}, cells: 16, capacity_ah: 100, soc: 50 }}\n",
                    10 + k
                )
            })
            .collect();
        let gone_all = |gone: bool| -> String {
            (1..=CHURN)
                .map(|k| format!("Churn{k}: {{ gone: {gone} }}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut segments = format!(
            "  - {{ duration: 3s, cell_voltage: 3.35, battery_current: 5, batteries: {{ {} }} }}\n",
            gone_all(true)
        );
        for k in 0..30 {
            segments.push_str(&format!(
                "  - {{ duration: 200ms, cell_voltage: 3.35, battery_current: 5, batteries: {{ {} }} }}\n",
                gone_all(k % 2 == 1)
            ));
        }
        segments.push_str(&format!(
            "  - {{ duration: 1h, cell_voltage: 3.35, battery_current: 5, batteries: {{ {} }} }}\n",
            gone_all(true)
        ));
        let scenario = BANK
            .replace("EXTRA", extra.trim_end())
            .replace("SEGMENTS", &segments);
        // No `expected`: the bank is what has been seen, as a user without the key has it.
        let config = test_config("2s")
            .batteries(|b| b.unset("expected"))
            .to_yaml();
        let w = World::start(&scenario, &config).await;
        // Past the churn (3 s + 6 s) and the hold: the two packs are the bank.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let (ok, whole) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
                && num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
                && num(i, "/Alarms/BmsCable") == Some(0.0)
        })
        .await;
        let log = w.daemon.log_text();
        assert!(ok, "{whole:?}\n{log}");
        let mode = text(&whole, "/Info/ChargeMode").unwrap_or_default();
        assert!(!mode.contains("lost") && !mode.contains("not found"), "{mode}");
        let now = items(&w.conn, OWN).await;
        assert_eq!(num(&now, "/System/NrOfBatteries"), Some(2.0));
        // Fifteen comings and goings each: found, online, gone, back, went away before it was
        // part of the bank, and at most one line counting the rest.
        for k in 1..=CHURN {
            let name = format!("Churn{k} ");
            let lines = lines_with(&log, &name);
            assert!(lines <= 6, "{lines} lines for {name}:\n{log}");
        }
        assert_eq!(lines_with(&log, "lost ("), 0, "{log}");
    });
}
