//! Bad input, end to end: batteries that put garbage on the bus, plugins whose constructor
//! fails, a settings service that comes late, a current source without its Multi. The
//! simulator plays the scenario on a private bus, the daemon runs as a process, and every check
//! reads the published service with a plain client. Each fault must leave the service there,
//! publishing sane values, with one log line when it starts (and one when it ends).

use crate::support;

use std::collections::HashMap;
use std::time::Duration;

use aggregator_sim::{Scenario, Simulator};
use support::bus::{num, until};
use support::config::{yaml, TestConfig};
use support::world::{runtime, World};
use venus_bus::client;
use venus_bus::variant::Field;
use zbus::zvariant::OwnedValue;

type Items = HashMap<String, (OwnedValue, String)>;

/// Two 16-cell batteries of 280 Ah at 3.35 V per cell (53.6 V), 5 A each. `SEGMENTS` is
/// replaced by the test's segments, `EXTRA` by more devices.
const BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
EXTRA
segments:
SEGMENTS
"#;

/// Good values throughout.
const STEADY: &str = "  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }";

fn scenario(extra: &str, segments: &str) -> String {
    BANK.replace("EXTRA", extra).replace("SEGMENTS", segments)
}

/// Bat1 publishes `value` at `path` for 3 s, after 3 s of good values and before good values
/// again.
fn bad_episode(path: &str, value: &str) -> String {
    let segments = format!(
        r#"
  - {{ duration: 3s, cell_voltage: 3.35, battery_current: 5 }}
  - duration: 3s
    cell_voltage: 3.35
    battery_current: 5
    batteries:
      Bat1:
        values:
          {path}: {value}
  - {{ duration: 1h, cell_voltage: 3.35, battery_current: 5 }}
"#
    );
    scenario("", &segments)
}

/// A strategy that behaves: CVL 55 V, CCL 50 A, DCL 60 A.
const GOOD_STRATEGY: &str = "{ plugin: fault-test, config: {} }";
const BMS_CURRENT: &str = "{ plugin: bms }";

fn test_config(current: &str, strategy: &str) -> TestConfig {
    TestConfig::default()
        .current_source(yaml(current))
        .strategy(yaml(strategy))
}

fn config(current: &str, strategy: &str) -> String {
    test_config(current, strategy).to_yaml()
}

const SECONDS: Duration = Duration::from_secs(15);

/// How many lines of the log contain `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

/// The text at a path of the published service.
/// A second later the daemon still runs, and its log has one line with `failed`, naming the
/// config `key`; returns the log.
async fn still_running_with_one_line(w: &mut World, failed: &str, key: &str) -> String {
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(w.daemon.running(), "{}", w.daemon.log_text());
    let log = w.daemon.log_text();
    assert_eq!(lines_with(&log, failed), 1, "{log}");
    let line = log.lines().find(|l| l.contains(failed)).unwrap();
    assert!(line.contains(key), "{line}");
    log
}

fn text(items: &Items, path: &str) -> Option<String> {
    match items.get(path).map(|(value, _)| Field::from_owned(value)) {
        Some(Field::Text(text)) => Some(text),
        _ => None,
    }
}

/// Every number the service publishes is finite.
fn all_finite(items: &Items) -> Result<(), String> {
    for (path, (value, _)) in items {
        if let Field::Number(v) = Field::from_owned(value) {
            if !v.is_finite() {
                return Err(format!("{path} = {v}"));
            }
        }
    }
    Ok(())
}

/// Plays [`bad_episode`] and checks: Bat1 not online during it, its last good values held
/// (nothing of the garbage published), online again after; one log line naming `reason`
/// when it starts, one when it ends; the daemon still running.
fn a_bad_value_is_one_episode(path: &str, value: &str, reason: &str) {
    runtime().block_on(async {
        // Twice the good limits: held, the bank gets what one battery of two can take.
        let config = config(
            BMS_CURRENT,
            "{ plugin: fault-test, config: { ccl: 100, dcl: 120 } }",
        );
        let mut w = World::start(&bad_episode(path, value), &config).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "never both online: {items:?}\n{}", w.daemon.log_text());

        // During: Bat1 stale, its last complete reading merged.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(1.0)
        })
        .await;
        assert!(ok, "Bat1 stayed online: {items:?}\n{}", w.daemon.log_text());
        assert_eq!(all_finite(&items), Ok(()));
        assert_eq!(num(&items, "/Dc/0/Voltage"), Some(53.6));
        assert_eq!(num(&items, "/Dc/0/Current"), Some(10.0));
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
        assert_eq!(num(&items, "/System/NrOfCellsPerBattery"), Some(16.0));
        // Held, not lost: the strategy's limits scaled to the batteries online (1 of 2).
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(50.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(60.0));
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        // A few more ticks of the fault: still one line.
        tokio::time::sleep(Duration::from_millis(600)).await;

        // After: online again.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "Bat1 not back: {items:?}\n{}", w.daemon.log_text());
        assert_eq!(all_finite(&items), Ok(()));

        let log = w.daemon.log_text();
        assert_eq!(lines_with(&log, reason), 1, "reason `{reason}`:\n{log}");
        assert_eq!(lines_with(&log, "battery Bat1 not online"), 1, "{log}");
        assert_eq!(lines_with(&log, "battery Bat1 online again"), 1, "{log}");
        assert_eq!(lines_with(&log, "battery Bat1 lost"), 0, "{log}");
        assert_eq!(lines_with(&log, "panicked"), 0, "{log}");
        assert!(w.daemon.running(), "{log}");
    });
}

#[test]
fn nan_voltage_holds_the_battery_with_one_line() {
    a_bad_value_is_one_episode(
        "/Dc/0/Voltage",
        "nan",
        "battery Bat1 not online (/Dc/0/Voltage is not finite (NaN))",
    );
}

#[test]
fn infinite_soc_holds_the_battery_with_one_line() {
    // Not one of the paths a complete reading needs, but merged: it would make the bank's
    // SoC infinite.
    a_bad_value_is_one_episode(
        "/Soc",
        "inf",
        "battery Bat1 not online (/Soc is not finite (inf))",
    );
}

#[test]
fn a_text_for_the_current_holds_the_battery_with_one_line() {
    a_bad_value_is_one_episode(
        "/Dc/0/Current",
        "lots",
        "battery Bat1 not online (/Dc/0/Current is a text, not a number)",
    );
}

#[test]
fn a_negative_capacity_holds_the_battery_with_one_line() {
    a_bad_value_is_one_episode(
        "/InstalledCapacity",
        "-280",
        "battery Bat1 not online (/InstalledCapacity is -280 Ah, not above 0 Ah)",
    );
}

#[test]
fn zero_ah_holds_the_battery_with_one_line() {
    a_bad_value_is_one_episode(
        "/InstalledCapacity",
        "0",
        "battery Bat1 not online (/InstalledCapacity is 0 Ah, not above 0 Ah)",
    );
}

#[test]
fn a_cell_count_changing_while_running_holds_the_battery_with_one_line() {
    a_bad_value_is_one_episode(
        "/System/NrOfCellsPerBattery",
        "15",
        "battery Bat1 not online (/System/NrOfCellsPerBattery is 15, batteries.cells is 16)",
    );
}

#[test]
fn a_strategy_whose_constructor_fails_publishes_the_fail_safe_and_keeps_running() {
    runtime().block_on(async {
        let strategy = "{ plugin: fault-test, config: { fault: constructor_error } }";
        let mut w = World::start(&scenario("", STEADY), &config(BMS_CURRENT, strategy)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
                && num(i, "/Info/MaxChargeVoltage").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // docs/guard.md §3 with no good result ever: CCL 0, DCL 0, CVL at the bank voltage.
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(0.0));
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        assert!((cvl - 53.6).abs() < 1e-9, "CVL {cvl}");
        let mode = text(&items, "/Info/ChargeMode").unwrap_or_default();
        assert!(
            mode.contains("fault-test") && mode.contains("constructor_error"),
            "mode `{mode}`"
        );
        // The rest of the battery is published as usual.
        assert_eq!(num(&items, "/Dc/0/Voltage"), Some(53.6));
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));

        let log = still_running_with_one_line(
            &mut w,
            "strategy plugin fault-test could not be started",
            "strategy.config.fault",
        )
        .await;
        assert_eq!(
            lines_with(&log, "strategy fault:"),
            0,
            "not per tick:\n{log}"
        );
        assert_eq!(
            lines_with(&log, "dbus-aggregate-batteries 0"),
            1,
            "one start:\n{log}"
        );

        // check-config still calls it an error.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"))
            .arg("--config")
            .arg(w.dir.path().join("config.yaml"))
            .arg("check-config")
            .output()
            .expect("check-config");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}");
        assert!(stdout.contains("strategy.config.fault"), "{stdout}");
    });
}

#[test]
fn a_config_error_at_start_publishes_the_fail_safe_with_the_error_as_mode_and_keeps_running() {
    runtime().block_on(async {
        // A typo in a host key: the file does not parse as a config.
        let typo = test_config(BMS_CURRENT, GOOD_STRATEGY)
            .batteries(|b| b.unset("startup_wait").set("startup_wiat", "20s"))
            .to_yaml();
        let mut w = World::start(&scenario("", STEADY), &typo).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent").is_some() && text(i, "/Info/ChargeMode").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // Charge and discharge stopped, as for a strategy that refuses its section.
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(0.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap_or_default();
        assert!(
            mode.starts_with("Fault") && mode.contains("batteries: unknown field `startup_wiat`"),
            "mode `{mode}`"
        );
        // Logged once, naming the key; the daemon runs on.
        let log = still_running_with_one_line(
            &mut w,
            "could not be started",
            "unknown field `startup_wiat`",
        )
        .await;
        let errors = log
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains("startup_wiat"))
            .count();
        assert_eq!(errors, 1, "{log}");

        // check-config still calls it an error.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries"))
            .arg("--config")
            .arg(w.dir.path().join("config.yaml"))
            .arg("check-config")
            .output()
            .expect("check-config");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{stdout}");
        assert!(stdout.contains("startup_wiat"), "{stdout}");
    });
}

#[test]
fn a_current_source_whose_constructor_fails_falls_back_to_the_bms_current() {
    runtime().block_on(async {
        let current = "{ plugin: victron, config: { use_multi: 7 } }";
        let mut w = World::start(&scenario("", STEADY), &config(current, GOOD_STRATEGY)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Dc/0/Current") == Some(10.0) && num(i, "/Info/MaxChargeCurrent").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // The strategy is fine: its limits stand.
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(50.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(60.0));
        let log = still_running_with_one_line(
            &mut w,
            "current source plugin victron could not be started",
            "current_source.config.use_multi",
        )
        .await;
        assert_eq!(lines_with(&log, "current source has no value"), 1, "{log}");
    });
}

#[test]
fn a_config_naming_a_missing_plugin_publishes_the_fail_safe_naming_the_key() {
    runtime().block_on(async {
        let strategy = "{ plugin: no-such-strategy, config: {} }";
        let mut w = World::start(&scenario("", STEADY), &config(BMS_CURRENT, strategy)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent").is_some() && text(i, "/Info/ChargeMode").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(0.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap_or_default();
        assert!(mode.contains("strategy.plugin"), "mode `{mode}`");
        still_running_with_one_line(&mut w, "could not be started", "strategy.plugin").await;
    });
}

#[test]
fn settings_that_appear_later_get_our_settings_and_give_the_custom_name() {
    runtime().block_on(async {
        let without = scenario("settings: { absent: true }", STEADY);
        let mut w = World::start(&without, &config(BMS_CURRENT, GOOD_STRATEGY)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // Published with the preferred instance and no name.
        assert_eq!(num(&items, "/DeviceInstance"), Some(100.0));
        assert_eq!(text(&items, "/CustomName").as_deref(), Some(""));

        // localsettings starts: another device holds instance 100, and a name is stored.
        let uid = "/Settings/Devices/aggregatebatteries";
        let late = format!(
            r#"
system: {{ absent: true }}
settings:
  preset:
    /Settings/Devices/other/ClassAndVrmInstance: "battery:100"
    {uid}/CustomName: Garage bank
"#
        );
        let late = Scenario::parse(&late, "late settings").expect("scenario");
        let _settings = Simulator::start(w.bus.address(), late)
            .await
            .expect("settings");
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/CustomName").as_deref() == Some("Garage bank")
        })
        .await;
        assert!(ok, "name not adopted: {items:?}\n{}", w.daemon.log_text());
        // Registered with 100: kept, and said once.
        assert_eq!(num(&items, "/DeviceInstance"), Some(100.0));
        let instance = client::get_value(
            &w.conn,
            "com.victronenergy.settings",
            &format!("{uid}/ClassAndVrmInstance"),
        )
        .await
        .expect("our instance setting");
        assert_eq!(
            instance,
            Field::Text("battery:101".into()),
            "AddSettings done"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        let log = w.daemon.log_text();
        assert_eq!(lines_with(&log, "gives device instance 101"), 1, "{log}");
        assert_eq!(lines_with(&log, "custom name `Garage bank`"), 1, "{log}");

        // The name is now kept in settings.
        let reply = w
            .conn
            .call_method(
                Some(support::bus::OWN),
                "/CustomName",
                Some("com.victronenergy.BusItem"),
                "SetValue",
                &(zbus::zvariant::Value::from("Shed bank"),),
            )
            .await
            .expect("SetValue");
        assert_eq!(reply.body().deserialize::<i32>().ok(), Some(0));
        let stored = client::get_value(
            &w.conn,
            "com.victronenergy.settings",
            &format!("{uid}/CustomName"),
        )
        .await
        .expect("name setting");
        assert_eq!(stored, Field::Text("Shed bank".into()));
        assert!(w.daemon.running(), "{log}");
    });
}

#[test]
fn no_multi_for_the_victron_current_source_falls_back_to_the_bms_current() {
    runtime().block_on(async {
        let current = "{ plugin: victron, config: { use_multi: true } }";
        let mut w = World::start(&scenario("", STEADY), &config(current, GOOD_STRATEGY)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Dc/0/Current") == Some(10.0) && num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let power = num(&items, "/Dc/0/Power").unwrap();
        assert!((power - 10.0 * 53.6).abs() < 0.01, "power {power}");
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(50.0));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let log = w.daemon.log_text();
        assert_eq!(lines_with(&log, "current source has no value"), 1, "{log}");
        assert!(w.daemon.running(), "{log}");
    });
}

#[test]
fn a_state_file_that_cannot_be_written_is_one_log_line_not_one_a_tick() {
    // Two 10 Ah packs charging at 50 A each: the counter wants a save every two seconds. The
    // state folder cannot be made (a file is in its way: a full or read-only /data does the
    // same).
    let scenario = BANK
        .replace("capacity_ah: 280", "capacity_ah: 10")
        .replace("EXTRA", "")
        .replace(
            "SEGMENTS",
            "  - { duration: 1h, cell_voltage: 3.35, battery_current: 50 }",
        );
    let config = TestConfig::default()
        .section("paths", |p| p.set("state_dir", "@DIR@/blocked/state"))
        .to_yaml();
    runtime().block_on(async {
        let w = World::start_prepared(&scenario, &config, |dir| {
            std::fs::write(dir.join("blocked"), "a file, not a folder\n").unwrap();
        })
        .await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let log = w.daemon.log_text();
        assert_eq!(lines_with(&log, "cannot write the state file"), 1, "{log}");
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Soc").is_some()).await;
        assert!(ok, "{items:?}");
    });
}

#[test]
fn a_recording_request_does_not_end_a_daemon_still_connecting() {
    // `record` signals every process of the program, a daemon that has not reached its loop
    // yet (no bus so far) included.
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = support::bus::Daemon::start(
        "unix:path=/nonexistent/bus",
        dir.path(),
        &config(BMS_CURRENT, GOOD_STRATEGY),
    );
    let deadline = std::time::Instant::now() + SECONDS;
    while !daemon.log_text().contains("cannot connect") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    aggregator::child::send(daemon.pid(), aggregator::child::Signal::USR1).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.running(), "{}", daemon.log_text());
    daemon.kill_hard();
}

#[test]
fn a_damaged_last_plausible_date_in_the_state_file_is_no_date() {
    let scenario = scenario("", STEADY);
    let config = config(BMS_CURRENT, GOOD_STRATEGY);
    runtime().block_on(async {
        let w = World::start_prepared(&scenario, &config, |dir| {
            std::fs::create_dir_all(dir.join("state")).unwrap();
            std::fs::write(
                dir.join("state/state.json"),
                r#"{"charge_ah":300.0,"last_plausible_day":9223372036854775807}"#,
            )
            .unwrap();
        })
        .await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Soc").is_some()).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let log = w.daemon.log_text();
        assert!(log.contains("is no date; none kept"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    });
}
