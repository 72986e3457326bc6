//! Faults under a running service: what it publishes meanwhile, and that it is still there.

mod support;

use std::time::Duration;

use aggregator::bus::private::PrivateBus;
use aggregator::sim::{Scenario, Simulator};
use support::bus::{client, num, until, wait_for_name, Daemon, OWN};
use support::world::runtime;

const SCENARIO: &str = r#"
step: 100ms
jitter: true
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: -20 }
"#;

const CONFIG: &str = r#"
update_interval: 200ms
batteries: { expected: 2, cells: 16, startup_wait: 20s }
current_source: { plugin: bms }
strategy: { plugin: serialbattery, config: { max_cell_voltage_soc_full: 3.55, min_cell_voltage_soc_empty: 2.9 } }
safety: { max_cell_voltage: 3.65, max_charge_current: 300, max_discharge_current: 300 }
paths: { state_dir: "@DIR@/state", plugins_dir: "@PLUGINS@" }
logging: { summary_every: 0s }
"#;

#[test]
fn the_bus_daemon_restarting_under_the_service_is_survived_and_the_counter_kept() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        // Without the guid, so the same address reaches the restarted bus.
        let address = format!("unix:path={}", socket.display());
        let mut bus = PrivateBus::start_at(&socket).expect("dbus-daemon");
        let sim = Simulator::start(&address, Scenario::parse(SCENARIO, "s").unwrap())
            .await
            .unwrap();
        let mut daemon = Daemon::start(&address, dir.path(), CONFIG);
        let conn = client(&address).await;
        assert!(
            wait_for_name(&conn, OWN, Duration::from_secs(20))
                .await
                .is_some(),
            "{}",
            daemon.log_text()
        );
        let (ok, items) = until(&conn, Duration::from_secs(10), |i| {
            num(i, "/Soc").is_some() && num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");
        // Discharging at 40 A: the counter moves down from 60 %.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = support::bus::number(&conn, "/Soc").await.unwrap();
        assert!(before < 60.0, "the counter runs: {before}");

        // The bus dies and everything on it with it.
        drop(conn);
        bus.stop();
        drop(sim);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(daemon.running(), "the daemon must survive the bus");

        let _bus = PrivateBus::start_at(&socket).expect("dbus-daemon again");
        let _sim = Simulator::start(&address, Scenario::parse(SCENARIO, "s").unwrap())
            .await
            .unwrap();
        let conn = client(&address).await;
        assert!(
            wait_for_name(&conn, OWN, Duration::from_secs(30))
                .await
                .is_some(),
            "not registered again:\n{}",
            daemon.log_text()
        );
        let (ok, items) = until(&conn, Duration::from_secs(10), |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");
        // The counter went on from where it was (the simulated BMS says 60 % again).
        let after = num(&items, "/Soc").unwrap();
        assert!(
            after <= before && after > before - 1.0,
            "counter {before} -> {after}"
        );
        let log = daemon.log_text();
        assert!(log.contains("reconnected to D-Bus"), "{log}");
        assert!(daemon.running());
    });
}
