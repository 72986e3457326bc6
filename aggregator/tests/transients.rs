//! End to end on a private bus: a transient never stops the house, the user's feed-in setting
//! is touched only for a cause DVCC can see, latches survive a restart, and a strategy that
//! keeps failing stops discharging with its cause named. Read from the published service, the
//! settings service and the state file.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use aggregator_core::value::Value;
use aggregator_sim::{Scenario, Simulator};
use support::bus::{client, num, text, until, until_keeping, wait_for_name, Daemon, OWN};
use support::config::{yaml, TestConfig};
use support::simulated as sim;
use support::world::{runtime, World};
use venus_bus::client::{self, SETTINGS};
use venus_bus::export::BusItemService;
use venus_bus::private::PrivateBus;

const FEED_IN: &str = "/Settings/CGwacs/OvervoltageFeedIn";
const SECONDS: Duration = Duration::from_secs(20);

/// 16-cell LFP batteries (`BATTERIES`), feed-in on; `SEGMENTS` replaced by the test's.
const BANK: &str = r#"
step: 100ms
batteries:
BATTERIES
SETTINGS
system: { low_soc: 0 }
segments:
SEGMENTS
"#;

const TWO: &str = "  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }";
const ONE: &str = "  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }";

/// A fast tick, an LFP safety section with a 2 s feed-in hold; `expected` batteries held for
/// `hold`, the `strategy:` section, and `failures` strategy faults in a row before DCL 0.
fn test_config(expected: u32, hold: &str, strategy: &str, failures: u32) -> TestConfig {
    TestConfig::default()
        .batteries(|b| b.expected(expected).hold_for(hold))
        .strategy(yaml(strategy))
        .safety(|s| {
            s.min_cell_voltage(2.80)
                .feed_in_hold("2s")
                .set("plugin_failures", failures)
        })
}

const PASS_THROUGH: &str = "{ plugin: serialbattery }";

fn bank(batteries: &str, segments: &str) -> String {
    BANK.replace("BATTERIES", batteries)
        .replace("SETTINGS", "settings: { overvoltage_feed_in: 1 }")
        .replace("SEGMENTS", segments)
}

fn config(expected: u32, hold: &str, strategy: &str) -> String {
    test_config(expected, hold, strategy, 50).to_yaml()
}

type Items = std::collections::HashMap<String, (zbus::zvariant::OwnedValue, String)>;

fn dcl(i: &Items) -> Option<f64> {
    num(i, "/Info/MaxDischargeCurrent")
}

fn mode(i: &Items) -> String {
    text(i, "/Info/ChargeMode").unwrap_or_default()
}

/// The state file the daemon wrote, as JSON.
fn state_file(w: &World) -> serde_json::Value {
    let path = w.dir.path().join("state/state.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).expect("state.json")
}

/// Polls the settings service until feed-in is `value` (up to [`SECONDS`]).
async fn feed_in_becomes(w: &World, value: f64) -> Option<f64> {
    let until = std::time::Instant::now() + SECONDS;
    loop {
        let now = w.setting(FEED_IN).await;
        if now == Some(value) || std::time::Instant::now() > until {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 10 A out of the bank; the `gone` drivers restart after 5 s, away for 3 s.
fn restart(gone: &str) -> String {
    format!(
        "  - {{ duration: 5s, cell_voltage: 3.35, battery_current: -10 }}
  - {{ duration: 3s, cell_voltage: 3.35, battery_current: -10, batteries: {gone} }}
  - {{ duration: 1h, cell_voltage: 3.35, battery_current: -10 }}"
    )
}

/// docs/battery-states.md §9: both drivers of a two-pack bank restart together, and a one-pack
/// bank's driver restarts, each inside `hold_for`: discharge never stops, feed-in is never touched.
#[test]
fn drivers_restarting_inside_the_hold_never_stop_discharging() {
    runtime().block_on(async {
        // On the bus, the two-pack bank; the one-pack bank (and the two-pack one again, at
        // every tick) in simulated time below.
        for (batteries, expected, gone) in
            [(TWO, 2, "{ Bat1: { gone: true }, Bat2: { gone: true } }")]
        {
            let segments = restart(gone);
            let w = World::start(
                &bank(batteries, &segments),
                &config(expected, "8s", PASS_THROUGH),
            )
            .await;
            let (ok, items) = until(&w.conn, SECONDS, |i| dcl(i).is_some_and(|d| d > 0.0)).await;
            assert!(ok, "{items:?}\n{}", w.daemon.log_text());
            // Through the restart and back: DCL above 0 at every look, the held state named.
            let held_seen = std::cell::Cell::new(0);
            let watch = until_keeping(
                &w.conn,
                SECONDS,
                |i| {
                    if mode(i).contains("held: last limits kept") {
                        held_seen.set(held_seen.get() + 1);
                    }
                    dcl(i).is_some_and(|d| d > 0.0)
                },
                |i| {
                    held_seen.get() > 0
                        && num(i, "/System/NrOfModulesOnline") == Some(f64::from(expected))
                        && !mode(i).contains("held")
                },
            )
            .await;
            let items = watch.reached("back online after the restart");
            assert!(dcl(&items).is_some_and(|d| d > 0.0), "{items:?}");
            assert_eq!(
                w.setting(FEED_IN).await,
                Some(1.0),
                "{}",
                w.daemon.log_text()
            );
            assert!(!w.daemon.log_text().contains("set to 0"));
        }
    });
}

/// The same in simulated time (the daemon's tick through `simulate`'s offline runner), at
/// every tick instead of every look: DCL above 0 and the setting at 1 all through.
#[test]
fn in_simulated_time_drivers_restarting_inside_the_hold_never_stop_discharging() {
    let dcl = |i: &sim::Items| sim::num(i, "/Info/MaxDischargeCurrent");
    let mode = |i: &sim::Items| sim::text(i, "/Info/ChargeMode").unwrap_or_default();
    for (batteries, expected, gone) in [
        (TWO, 2, "{ Bat1: { gone: true }, Bat2: { gone: true } }"),
        (ONE, 1, "{ Bat1: { gone: true } }"),
    ] {
        let segments = restart(gone);
        let run = sim::run(
            &bank(batteries, &segments),
            &config(expected, "8s", PASS_THROUGH),
            Duration::from_secs(20),
        );
        let start = run.until(0, "DCL above 0", |i| dcl(i).is_some_and(|d| d > 0.0));
        let held_seen = std::cell::Cell::new(0);
        let back = run.until_keeping(
            start,
            "back online after the restart",
            |i| {
                if mode(i).contains("held: last limits kept") {
                    held_seen.set(held_seen.get() + 1);
                }
                dcl(i).is_some_and(|d| d > 0.0)
            },
            |i| {
                held_seen.get() > 0
                    && sim::num(i, "/System/NrOfModulesOnline") == Some(f64::from(expected))
                    && !mode(i).contains("held")
            },
        );
        assert!(dcl(run.items(back)).is_some_and(|d| d > 0.0));
        // The same packs back as new processes (docs/discovery.md §3): found once each, and
        // nothing said of them but their coming and going.
        assert_eq!(run.occurrences("found: "), expected as usize, "{}", run.log);
        assert_eq!(run.occurrences("another device"), 0, "{}", run.log);
        // Feed-in never touched: the setting read 1 after every tick.
        for tick in &run.ticks {
            assert_eq!(
                tick.feed_in,
                Some(1),
                "at {} s\n{}",
                tick.elapsed_s,
                run.log
            );
        }
    }
}

/// docs/feedin.md §2, §3 and §5: a start on a healthy bank (its batteries coming a few seconds
/// after the daemon) never writes the setting; a high cell then turns feed-in off with the episode
/// saved first; the restore, once read back, is forgotten, so a later start leaves a change the
/// user made.
#[test]
fn feed_in_is_touched_only_for_a_cause_dvcc_sees_and_a_confirmed_restore_is_forgotten() {
    runtime().block_on(async {
        let segments = "  - { duration: 3s, cell_voltage: 3.35, battery_current: 5, batteries: { Bat1: { gone: true }, Bat2: { gone: true } } }
  - { duration: 6s, cell_voltage: 3.35, battery_current: 5 }
  - { duration: 5s, cell_voltage: 3.35, battery_current: 5, batteries: { Bat1: { cells: { 5: 3.62 } } } }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }";
        let mut w = World::start(&bank(TWO, segments), &config(2, "2s", PASS_THROUGH)).await;
        // Healthy until the high cell: the setting is never written.
        let watch = until_keeping(
            &w.conn,
            SECONDS,
            |_| true,
            |i| num(i, "/System/MaxCellVoltage").is_some_and(|v| v >= 3.6),
        )
        .await;
        watch.reached("the high cell");
        let log = w.daemon.log_text();
        assert!(!log.contains("feed-in setting"), "{log}");
        // Off for the high cell, and the state file held the episode before the write.
        assert_eq!(feed_in_becomes(&w, 0.0).await, Some(0.0));
        let saved = state_file(&w);
        assert_eq!(saved["feed_in"]["disabled_by_us"], true, "{saved}");
        assert_eq!(saved["feed_in"]["saved_value"], 1, "{saved}");
        assert_eq!(saved["latches"]["high_cell"], true, "{saved}");
        // Back after the hold, and once read back no longer kept.
        assert_eq!(feed_in_becomes(&w, 1.0).await, Some(1.0));
        let (ok, items) = until(&w.conn, SECONDS, |_| {
            state_file(&w)["feed_in"]["saved_value"].is_null()
        })
        .await;
        assert!(ok, "{}\n{items:?}", state_file(&w));
        // Stopped; the user turns feed-in off meanwhile; a new start leaves it so.
        assert_eq!(w.daemon.terminate().await, Some(0));
        // Both runs log into the same file: the new one's lines come after these.
        let first_run = w.daemon.log_text().len();
        let off = client::set_value(&w.conn, SETTINGS, FEED_IN, &Value::Int(0))
            .await
            .expect("SetValue");
        assert_eq!(off, 0);
        let config = w.dir.path().join("config.yaml");
        w.daemon = Daemon::start_with(w.bus.address(), w.dir.path(), &config);
        assert!(wait_for_name(&w.conn, OWN, SECONDS).await.is_some());
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfModulesOnline") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");
        let log = w.daemon.log_text();
        assert_eq!(w.setting(FEED_IN).await, Some(0.0), "{log}");
        assert!(!log[first_run..].contains("feed-in setting"), "{log}");
    });
}

/// docs/tick.md §5: a settings service that takes the feed-in write and never answers: the ticks go
/// on (several between the write and its time-out, none held for it) and the high cell's CCL 0
/// is published by the tick that saw the cell.
#[test]
fn a_settings_service_that_never_answers_holds_no_tick() {
    runtime().block_on(async {
        let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
        let scenario = BANK
            .replace("BATTERIES", TWO)
            .replace("SETTINGS", "settings: { absent: true }")
            .replace(
                "SEGMENTS",
                "  - { duration: 6s, cell_voltage: 3.35, battery_current: 5 }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5, batteries: { Bat1: { cells: { 5: 3.62 } } } }",
            );
        let scenario = Scenario::parse(&scenario, "test scenario").expect("scenario");
        let _sim = Simulator::start(bus.address(), scenario)
            .await
            .expect("simulator");
        // Its own settings service: feed-in 1, a `SetValue` that never gets an answer (which
        // holds every call after it too), no `AddSettings`.
        let link = venus_bus::connect_with_writer(bus.address())
            .await
            .expect("connect");
        let settings = BusItemService::with_writer(link);
        settings.insert(FEED_IN, Value::Int(1), "1".into(), true);
        settings.on_set(Arc::new(|_, _| Box::pin(std::future::pending())));
        settings.serve().await.expect("serve");
        settings
            .connection()
            .request_name(SETTINGS)
            .await
            .expect("settings name");

        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(2, "2s", PASS_THROUGH, 50)
            .update_interval("1s")
            .section("logging", |l| l.set("summary_every", "1s"))
            .to_yaml();
        let daemon = Daemon::start(bus.address(), dir.path(), &config);
        let conn = client(bus.address()).await;
        assert!(wait_for_name(&conn, OWN, SECONDS).await.is_some());
        let (ok, items) = until(&conn, Duration::from_secs(30), |i| {
            num(i, "/Info/MaxChargeCurrent") == Some(0.0)
                && num(i, "/System/MaxCellVoltage").is_some_and(|v| v >= 3.6)
        })
        .await;
        assert!(ok, "{items:?}\n{}", daemon.log_text());
        // The write times out after some seconds; wait for its log line.
        let failed = "cannot write /Settings/CGwacs/OvervoltageFeedIn = 0";
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !daemon.log_text().contains(failed) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = daemon.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let summary = |l: &&str| l.contains("CVL ") && l.contains(" CCL ");
        let first_high = lines
            .iter()
            .position(|l| summary(l) && l.contains("max cell Bat1_C5 3.620V"))
            .unwrap_or_else(|| panic!("no tick saw the high cell:\n{log}"));
        // The tick that saw the high cell published CCL 0.
        assert!(lines[first_high].contains("CCL 0.0A"), "{}", lines[first_high]);
        let failure = lines
            .iter()
            .position(|l| l.contains(failed))
            .unwrap_or_else(|| panic!("the write never timed out:\n{log}"));
        let ticks_meanwhile = lines[first_high..failure]
            .iter()
            .filter(|l| summary(l))
            .count();
        assert!(
            ticks_meanwhile >= 3,
            "{ticks_meanwhile} ticks while the write waited:\n{log}"
        );
        // And the published CCL is still 0, the service answering.
        let now = support::bus::items(&conn, OWN).await;
        assert_eq!(num(&now, "/Info/MaxChargeCurrent"), Some(0.0));
    });
}

/// docs/guard.md §5: a high cell latches; the daemon is killed while the cell is back inside the
/// hysteresis band; the new one starts with the latch from the state file: charging stays stopped.
#[test]
fn the_high_cell_latch_survives_a_kill_inside_its_hysteresis() {
    runtime().block_on(async {
        let segments = "  - { duration: 5s, cell_voltage: 3.35, battery_current: 5, batteries: { Bat1: { cells: { 5: 3.62 } } } }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5, batteries: { Bat1: { cells: { 5: 3.57 } } } }";
        let mut w = World::start(&bank(TWO, segments), &config(2, "2s", PASS_THROUGH)).await;
        // Latched at 3.62 V, and still at 3.57 V (above 3.60 − 0.05).
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MaxCellVoltage").is_some_and(|v| (v - 3.57).abs() < 0.001)
        })
        .await;
        assert!(ok, "{items:?}");
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0), "{items:?}");
        assert_eq!(state_file(&w)["latches"]["high_cell"], true);
        w.daemon.kill_hard();
        let config = w.dir.path().join("config.yaml");
        w.daemon = Daemon::start_with(w.bus.address(), w.dir.path(), &config);
        assert!(wait_for_name(&w.conn, OWN, SECONDS).await.is_some());
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfModulesOnline") == Some(2.0)
                && num(i, "/System/MaxCellVoltage").is_some_and(|v| (v - 3.57).abs() < 0.001)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0), "{items:?}");
        assert_eq!(num(&items, "/Alarms/HighCellVoltage"), Some(2.0));
        assert!(mode(&items).contains("safety.max_cell_voltage"), "{}", mode(&items));
    });
}

/// docs/guard.md §3: a strategy that fails from its first tick: charging stops at once, discharging
/// goes on with what the packs allow, then stops after `plugin_failures` faults in a row, logged
/// once and named in the mode text.
#[test]
fn a_failing_strategy_stops_discharging_after_the_failures_and_says_so() {
    runtime().block_on(async {
        let segments = "  - { duration: 1h, cell_voltage: 3.35, battery_current: -10 }";
        let config = test_config(
            2,
            "2s",
            "{ plugin: fault-test, config: { fault: error } }",
            25,
        )
        .to_yaml();
        let w = World::start(&bank(TWO, segments), &config).await;
        let watch = until_keeping(
            &w.conn,
            SECONDS,
            |i| num(i, "/Info/MaxChargeCurrent") == Some(0.0),
            |i| mode(i).starts_with("Fault") && dcl(i).is_some_and(|d| d > 0.0),
        )
        .await;
        let items = watch.reached("a first fault with discharge going on");
        // The packs' own 100 A each under the 300 A bound.
        assert_eq!(dcl(&items), Some(200.0), "{items:?}");
        let (ok, items) = until(&w.conn, SECONDS, |i| dcl(i) == Some(0.0)).await;
        assert!(ok, "{items:?}");
        assert!(
            mode(&items).contains("discharging stopped (safety.plugin_failures)"),
            "{}",
            mode(&items)
        );
        let log = w.daemon.log_text();
        assert_eq!(
            log.matches("times in a row (safety.plugin_failures)")
                .count(),
            1,
            "{log}"
        );
    });
}

/// Every tick from the first publish allows discharging: the house never stops.
fn discharge_allowed_all_along(run: &sim::Run) {
    for k in 0..run.ticks.len() {
        let items = run.items(k);
        if sim::num(items, "/System/NrOfBatteries").is_none() {
            continue;
        }
        assert!(
            sim::num(items, "/Info/MaxDischargeCurrent").is_some_and(|a| a > 0.0),
            "at {} s: {items:?}\n{}",
            run.at_s(k),
            run.log
        );
    }
}

/// Both packs' drivers restarting together, as an update of the driver does.
fn all_drivers_restart(back: &str) -> String {
    format!(
        r#"
step: 1s
jitter: true
templates:
  - &notemp {{ values: {{ /Dc/0/Temperature: invalid, /System/MaxCellTemperature: invalid, /System/MinCellTemperature: invalid }} }}
  - &nomin {{ values: {{ /System/MinCellTemperature: invalid }} }}
batteries:
{TWO}
vebus: {{}}
segments:
  - {{ duration: 5m, cell_voltage: 3.28, battery_current: -30, vebus_current: -60 }}
  - {{ duration: 45s, batteries: {{ Bat1: {{ gone: true }}, Bat2: {{ gone: true }} }} }}
{back}
"#
    )
}

/// In simulated time: every driver restarts together (45 s gone) and comes back with its
/// temperatures 20 s late. Held from their return, the packs are never lost, so the house
/// keeps its discharge limit all along.
#[test]
fn in_simulated_time_drivers_back_with_a_value_late_are_held_not_lost() {
    let scenario = all_drivers_restart(
        "  - { duration: 20s, batteries: { Bat1: *notemp, Bat2: *notemp } }\n  - { duration: 5m }",
    );
    let config = TestConfig::default()
        .batteries(|b| b.unset("hold_for").expected(2))
        .strategy(yaml(PASS_THROUGH))
        .to_yaml();
    let run = sim::run(&scenario, &config, Duration::from_secs(600));
    discharge_allowed_all_along(&run);
    assert_eq!(run.occurrences(" lost ("), 0, "{}", run.log);
}

/// In simulated time: a new version of the driver no longer publishes
/// `/System/MinCellTemperature` on any pack. Its last reading far from the guard's bounds,
/// the path is no longer asked for once the packs have been back for `hold_for`: the bank is
/// whole again, not lost until the daemon restarts.
#[test]
fn in_simulated_time_drivers_back_without_a_path_for_good_are_taken_as_they_are() {
    let scenario =
        all_drivers_restart("  - { duration: 1h, batteries: { Bat1: *nomin, Bat2: *nomin } }");
    let config = TestConfig::default()
        .batteries(|b| b.unset("hold_for").expected(2))
        .strategy(yaml(PASS_THROUGH))
        .to_yaml();
    let run = sim::run(&scenario, &config, Duration::from_secs(900));
    let last = run.items(run.ticks.len() - 1);
    assert_eq!(
        sim::num(last, "/System/NrOfBatteries"),
        Some(2.0),
        "{}",
        run.log
    );
    assert!(
        run.log
            .contains("without /System/MinCellTemperature: no longer asked for"),
        "{}",
        run.log
    );
    discharge_allowed_all_along(&run);
}
