//! The switch from the Python program, on the daemon's side: the device instance that
//! `import-config` carries over is the one published, so that the GUI's battery monitor
//! (`/Settings/SystemSetup/BatteryService`) and DVCC's controlling BMS
//! (`/Settings/SystemSetup/BmsInstance`), which name the old program's instance, keep pointing
//! at the bank. The settings service is the simulator's, on a private bus.

use crate::support;

use std::time::Duration;

use support::bus::{num, until};
use support::config::TestConfig;
use support::world::{runtime, World};
use venus_bus::client::get_value;

const SETTINGS: &str = "com.victronenergy.settings";

/// A device that ran the Python program 3.4 (instance 0) as its battery monitor and BMS; its
/// packs have instances of their own.
const SCENARIO: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
settings:
  preset:
    "/Settings/SystemSetup/BatteryService": "com.victronenergy.battery/0"
    "/Settings/SystemSetup/BmsInstance": 0
    "/Settings/Devices/serialbattery_ttyUSB0/ClassAndVrmInstance": "battery:1"
    "/Settings/Devices/serialbattery_ttyUSB1/ClassAndVrmInstance": "battery:2"
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: 10 }
"#;

/// As `import-config` writes it for a 3.4 install: `publish.device_instance: 0`.
fn config() -> TestConfig {
    TestConfig::default()
        .safety(|s| s.max_cell_voltage(3.65))
        .section("publish", |p| p.set("device_instance", 0))
}

#[test]
fn the_carried_over_instance_is_published_and_the_guis_choices_still_name_it() {
    runtime().block_on(async {
        let w = World::start(SCENARIO, &config().to_yaml()).await;
        let (ok, items) = until(&w.conn, Duration::from_secs(15), |i| {
            num(i, "/DeviceInstance").is_some() && num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/DeviceInstance"), Some(0.0));
        // Stored for the next start, and what the GUI's choices name.
        let stored = get_value(
            &w.conn,
            SETTINGS,
            "/Settings/Devices/aggregatebatteries/ClassAndVrmInstance",
        )
        .await
        .unwrap();
        assert_eq!(stored.text(), Some("battery:0"));
        let monitor = get_value(&w.conn, SETTINGS, "/Settings/SystemSetup/BatteryService")
            .await
            .unwrap();
        assert_eq!(monitor.text(), Some("com.victronenergy.battery/0"));
        assert_eq!(
            w.setting("/Settings/SystemSetup/BmsInstance").await,
            Some(0.0)
        );
    });
}

/// The Python program held DC-coupled feed-in at 0 when it was stopped; the user said it was
/// on (`migrate.sh --user-feed-in 1`), and `import-config` put that into the state.
const FEED_IN_LEFT_OFF: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
settings: { overvoltage_feed_in: 0 }
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: 10 }
"#;

#[test]
fn the_users_feed_in_value_from_the_switch_comes_back_not_the_0_the_old_program_left() {
    runtime().block_on(async {
        // The user's value back 1 s after no cause holds feed-in off.
        let config = config().safety(|s| s.feed_in_hold("1s")).to_yaml();
        let w = World::start_prepared(FEED_IN_LEFT_OFF, &config, |dir| {
            let state = aggregator_core::state::State {
                feed_in: aggregator_core::feedin::FeedIn {
                    disabled_by_us: true,
                    saved_value: Some(1),
                    ..Default::default()
                },
                ..Default::default()
            };
            aggregator::state_file::StateStore::new(dir.join("state"))
                .save(&state)
                .unwrap();
        })
        .await;
        let mut back = None;
        for _ in 0..100 {
            back = w.setting("/Settings/CGwacs/OvervoltageFeedIn").await;
            if back == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(back, Some(1.0), "{}", w.daemon.log_text());
    });
}
