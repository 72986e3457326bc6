//! What the daemon does to fit on a Venus OS device: the system bus unless
//! `DBUS_SESSION_BUS_ADDRESS` is set, log lines that multilog can stamp (no colours, no time
//! stamps of its own when stdout is no terminal), and `--version`.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;

use aggregator_sim::{Scenario, Simulator};
use support::bus::{client, wait_for_name, OWN};
use support::world::runtime;
use venus_bus::private::PrivateBus;

const DAEMON: &str = env!("CARGO_BIN_EXE_dbus-aggregate-batteries");

const SCENARIO: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: -20 }
"#;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        r#"
update_interval: 200ms
batteries: {{ expected: 1, cells: 16, startup_wait: 20s }}
current_source: {{ plugin: bms }}
strategy: {{ plugin: serialbattery, config: {{ max_cell_voltage_soc_full: 3.55, min_cell_voltage_soc_empty: 2.9 }} }}
safety: {{ max_cell_voltage: 3.65, max_charge_current: 300, max_discharge_current: 300, min_cell_voltage: 2.5, min_charge_temperature: 0, max_charge_temperature: 45, min_discharge_temperature: -20, max_discharge_temperature: 55 }}
paths: {{ state_dir: "{}/state", plugins_dir: "{}" }}
"#,
        dir.display(),
        support::build_dir().display()
    );
    let file = dir.join("config.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Starts the daemon with `env` (names removed when their value is `None`) and tells whether
/// it registered its service on `bus` within 20 s.
fn registers_on(bus: &PrivateBus, env: &[(&str, Option<&str>)]) -> bool {
    runtime().block_on(async {
        let scenario = Scenario::parse(SCENARIO, "device scenario").unwrap();
        let _sim = Simulator::start(bus.address(), scenario).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(DAEMON);
        command
            .arg("--config")
            .arg(config(dir.path()))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut daemon = command.spawn().unwrap();
        let conn = client(bus.address()).await;
        let registered = wait_for_name(&conn, OWN, Duration::from_secs(20))
            .await
            .is_some();
        let _ = daemon.kill();
        let _ = daemon.wait();
        registered
    })
}

#[test]
fn without_a_session_bus_the_daemon_is_on_the_system_bus() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    assert!(registers_on(
        &bus,
        &[
            ("DBUS_SESSION_BUS_ADDRESS", None),
            ("DBUS_SYSTEM_BUS_ADDRESS", Some(bus.address())),
        ]
    ));
}

#[test]
fn a_session_bus_address_wins_over_the_system_bus() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    assert!(registers_on(
        &bus,
        &[
            ("DBUS_SESSION_BUS_ADDRESS", Some(bus.address())),
            (
                "DBUS_SYSTEM_BUS_ADDRESS",
                Some("unix:path=/nonexistent/bus")
            ),
        ]
    ));
}

/// A config the daemon refuses (no `safety:`): `run` logs its errors through the logger and
/// exits 2.
fn broken_config(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("config.yaml");
    std::fs::write(&file, "strategy: { plugin: no-such-plugin }\n").unwrap();
    file
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

#[test]
fn under_daemontools_log_lines_are_plain_and_unstamped() {
    let dir = tempfile::tempdir().unwrap();
    // Under supervise, stdout is the pipe to multilog, which stamps each line itself. With
    // its config error the daemon runs on (the fail-safe service), waiting for a bus that is
    // not there: ended after its first lines.
    let out = Command::new("timeout")
        .args(["-s", "KILL", "3", DAEMON, "--config"])
        .arg(broken_config(dir.path()))
        .arg("run")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.is_empty(), "the errors go to stdout");
    assert!(!log.contains('\x1b'), "no colours: {log:?}");
    for line in log.lines() {
        assert!(
            LEVELS
                .iter()
                .any(|level| line.trim_start().starts_with(level)),
            "a line starts with its level, no time stamp: {line:?}"
        );
    }
    assert!(
        log.contains("config.yaml:1: missing field `safety`"),
        "{log}"
    );
}

#[test]
fn on_a_terminal_log_lines_are_stamped_but_not_coloured() {
    let dir = tempfile::tempdir().unwrap();
    // Ended after its first lines, as above.
    let command = format!(
        "env -u DBUS_SESSION_BUS_ADDRESS DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus \
         timeout -s KILL 3 {DAEMON} --config {} run",
        broken_config(dir.path()).display()
    );
    // script(1) runs the daemon on a pseudo-terminal.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.contains('\x1b'), "no colours: {log:?}");
    let line = log
        .lines()
        .find(|line| line.contains("config.yaml:1: missing field `safety`"))
        .unwrap_or_else(|| panic!("{log}"));
    let stamp = line.split_whitespace().next().unwrap_or_default();
    assert!(
        stamp.len() > 20 && stamp.as_bytes()[4] == b'-' && stamp.contains('T'),
        "a line starts with its time: {line:?}"
    );
}

#[test]
fn every_program_tells_its_version() {
    let version = env!("CARGO_PKG_VERSION");
    let simulator = support::program("dbus-aggregate-batteries-sim");
    let importer = support::program("dbus-aggregate-batteries-import");
    for (program, name) in [
        (std::path::Path::new(DAEMON), "dbus-aggregate-batteries"),
        (simulator.as_path(), "dbus-aggregate-batteries-sim"),
        (importer.as_path(), "dbus-aggregate-batteries-import"),
    ] {
        let out = Command::new(program).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("{name} {version}"),
            "{name}"
        );
    }
}
