//! End to end: the simulator plays a scenario on a private bus, the daemon runs as a process,
//! and every check reads the published service from the bus.

use crate::support;

use std::time::Duration;

use support::bus::{num, until};
use support::config::{yaml, TestConfig};
use support::world::{runtime, World};

/// Two 16-cell LFP batteries of 280 Ah; `SEGMENTS` is replaced by the test's segments.
const BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
EXTRA
settings: { overvoltage_feed_in: 1 }
system: { low_soc: 0 }
segments:
SEGMENTS
"#;

fn scenario(extra: &str, segments: &str) -> String {
    BANK.replace("EXTRA", extra).replace("SEGMENTS", segments)
}

/// The LFP strategy of `config.yaml`'s example, on a fast tick.
fn lfp_config(expected: u32, current: &str) -> TestConfig {
    TestConfig::default()
        .batteries(|b| b.expected(expected))
        .current_source(yaml(current))
        .lfp()
        .safety(|s| s.feed_in_hold("1s"))
}

fn lfp(expected: u32, current: &str) -> String {
    lfp_config(expected, current).to_yaml()
}

const BMS_CURRENT: &str = "{ plugin: bms }";
const SECONDS: Duration = Duration::from_secs(15);

#[test]
fn a_normal_charge_merges_the_bank_and_charges_at_the_balancing_voltage() {
    runtime().block_on(async {
        let segments = "  - { duration: 1h, cell_voltage: 3.35, battery_current: 20 }";
        let w = World::start(&scenario("", segments), &lfp(2, BMS_CURRENT)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Dc/0/Current") == Some(40.0) && num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // 16 cells at 3.35 V: 53.6 V each, the mean published.
        assert_eq!(num(&items, "/Dc/0/Voltage"), Some(53.6));
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
        // A fresh state balances at once: 16 × 3.45 V.
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        assert!((cvl - 55.2).abs() < 1e-9, "CVL {cvl}");
        assert!(num(&items, "/Info/MaxChargeCurrent").unwrap() > 0.0);
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(200.0));
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        let soc = num(&items, "/Soc").unwrap();
        assert!((59.0..=61.0).contains(&soc), "SoC {soc}");
    });
}

#[test]
fn a_high_cell_reduces_the_cvl_disables_feed_in_and_restores_it_after_recovery() {
    runtime().block_on(async {
        let segments = r#"
  - { duration: 3s, cell_voltage: 3.40, battery_current: 10 }
  - duration: 4s
    cell_voltage: 3.40
    battery_current: 10
    batteries: { Bat2: { cells: { 5: 3.56 } } }
  - { duration: 1h, cell_voltage: 3.40, battery_current: 0 }
"#;
        let w = World::start(&scenario("", segments), &lfp(2, BMS_CURRENT)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MaxCellVoltage") == Some(3.56)
                && num(i, "/Info/MaxChargeVoltage").is_some_and(|v| v < 55.2)
        })
        .await;
        assert!(ok, "no reduction: {items:?}\n{}", w.daemon.log_text());
        // Each battery's sum less its cells' excess over 3.50 V: Bat2 15 × 3.40 + 3.56 − 0.06
        // = 54.50 V, Bat1 16 × 3.40 = 54.40 V; the lowest wins (docs/strategies.md §2.4).
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        assert!((cvl - 54.4).abs() < 0.011, "CVL {cvl}");
        let mut feed_in = None;
        for _ in 0..50 {
            feed_in = w.setting("/Settings/CGwacs/OvervoltageFeedIn").await;
            if feed_in == Some(0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(feed_in, Some(0.0), "feed-in not disabled");

        // The cell comes down, the spread is 0: the user's 1 comes back.
        let (ok, _) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeVoltage").is_some_and(|v| (v - 55.2).abs() < 1e-9)
        })
        .await;
        assert!(ok, "{}", w.daemon.log_text());
        for _ in 0..50 {
            feed_in = w.setting("/Settings/CGwacs/OvervoltageFeedIn").await;
            if feed_in == Some(1.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(feed_in, Some(1.0), "feed-in not restored");
    });
}

#[test]
fn a_bms_blocking_charge_sets_ccl_0() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 10
    batteries: { Bat1: { blocking_charge: true } }
"#;
        let w = World::start(&scenario("", segments), &lfp(2, BMS_CURRENT)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfModulesBlockingCharge") == Some(1.0)
        })
        .await;
        assert!(ok, "{items:?}");
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Io/AllowToCharge"), Some(0.0));
        assert!(num(&items, "/Info/MaxDischargeCurrent").unwrap() > 0.0);
    });
}

#[test]
fn a_cell_below_min_sets_dcl_0_and_soc_0_then_the_latch_holds_until_the_hysteresis() {
    runtime().block_on(async {
        let segments = r#"
  - { duration: 3s, cell_voltage: 3.20, battery_current: -20 }
  - duration: 3s
    cell_voltage: 3.20
    battery_current: -20
    batteries: { Bat1: { cells: { 3: 2.88 } } }
  - duration: 3s
    cell_voltage: 3.20
    battery_current: 0
    batteries: { Bat1: { cells: { 3: 2.95 } } }
  - { duration: 1h, cell_voltage: 3.20, battery_current: 0 }
"#;
        let w = World::start(&scenario("", segments), &lfp(2, BMS_CURRENT)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MinCellVoltage") == Some(2.88)
        })
        .await;
        assert!(ok, "{items:?}");
        let (ok, items) = until(&w.conn, Duration::from_secs(2), |i| {
            num(i, "/Info/MaxDischargeCurrent") == Some(0.0) && num(i, "/Soc") == Some(0.0)
        })
        .await;
        assert!(ok, "DCL/SoC: {items:?}\n{}", w.daemon.log_text());
        // Back to 2.95 V: above the minimum, below minimum + hysteresis: still latched.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MinCellVoltage") == Some(2.95)
        })
        .await;
        assert!(ok, "{items:?}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            support::bus::number(&w.conn, "/Info/MaxDischargeCurrent").await,
            Some(0.0),
            "the latch must hold below min + hysteresis"
        );
        // All cells at 3.20 V: released.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxDischargeCurrent").is_some_and(|d| d > 0.0)
        })
        .await;
        assert!(ok, "latch never released: {items:?}");
    });
}

const VICTRON_DEVICES: &str = r#"
vebus: { device_instance: 276 }
solar_chargers: 1
smartshunt: { class: dcload, device_instance: 40, custom_name: Loads }
"#;

const VICTRON_SEGMENT: &str = r#"
  - { duration: 1h, cell_voltage: 3.35, battery_current: 7, vebus_current: 10, solar_current: 5, shunt_current: 3 }
"#;

#[test]
fn the_current_comes_from_multi_solar_and_a_dc_load_shunt() {
    runtime().block_on(async {
        let current = "{ plugin: victron, config: { use_multi: true, smartshunts: all } }";
        let w = World::start(
            &scenario(VICTRON_DEVICES, VICTRON_SEGMENT),
            &lfp(2, current),
        )
        .await;
        // 10 A (Multi) + 5 A (solar) − 3 A (to the loads) = 12 A, not the BMS sum of 14 A.
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Dc/0/Current") == Some(12.0)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let power = num(&items, "/Dc/0/Power").unwrap();
        assert!((power - 12.0 * 53.6).abs() < 0.01, "power {power}");
    });
}

#[test]
fn an_inverted_shunt_is_added() {
    runtime().block_on(async {
        let current = "{ plugin: victron, config: { use_multi: true, smartshunts: all, invert_smartshunts: true } }";
        let w = World::start(
            &scenario(VICTRON_DEVICES, VICTRON_SEGMENT),
            &lfp(2, current),
        )
        .await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Dc/0/Current") == Some(18.0)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
    });
}

/// A solar charger and an inverter that publishes no `/Dc/0/Current`, with this AC output.
fn inverter_without_dc_current(ac_out: &str) -> String {
    format!("solar_chargers: 1\ndc_devices:\n  - {{ class: inverter, ac_out: [{ac_out}] }}\n")
}

const INVERTER_SEGMENT: &str = r#"
  - { duration: 1h, cell_voltage: 3.35, battery_current: 7, solar_current: 5 }
"#;

/// docs/current.md §5: such an inverter counts what it delivers over its DC voltage.
#[test]
fn an_inverter_without_a_dc_current_counts_its_ac_output() {
    runtime().block_on(async {
        let current = "{ plugin: victron, config: { use_multi: false } }";
        let near = |a: f64| {
            move |i: &std::collections::HashMap<_, _>| {
                num(i, "/Dc/0/Current").is_some_and(|v| (v - a).abs() < 0.01)
            }
        };
        // L1 by its power, L2 by volts × amps, over the inverter's (the bank's) 53.6 V:
        // 5 A (solar) − 536 W / 53.6 V − 230 V × 1.165 A / 53.6 V = −10 A, not the BMS's 14 A.
        let devices =
            inverter_without_dc_current("{ power: 536 }, { voltage: 230, current: 1.165 }");
        let w = World::start(&scenario(&devices, INVERTER_SEGMENT), &lfp(2, current)).await;
        let (ok, items) = until(&w.conn, SECONDS, near(-10.0)).await;
        let log = w.daemon.log_text();
        assert!(ok, "{items:?}\n{log}");
        assert!(!log.contains("current source has no value"), "{log}");
        drop(w);

        // Without its AC output either: the batteries' own current, said once.
        let devices = inverter_without_dc_current("");
        let w = World::start(&scenario(&devices, INVERTER_SEGMENT), &lfp(2, current)).await;
        let (ok, items) = until(&w.conn, SECONDS, near(14.0)).await;
        let log = w.daemon.log_text();
        assert!(ok, "{items:?}\n{log}");
        assert_eq!(
            log.matches("current source has no value").count(),
            1,
            "{log}"
        );
    });
}

/// The pass-through strategy, on a fast tick.
fn pass_through(startup_wait: &str) -> String {
    TestConfig::default()
        .batteries(|b| b.startup_wait(startup_wait))
        .to_yaml()
}

#[test]
fn pass_through_takes_the_lowest_cvl_and_min_times_count() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries:
      Bat1: { limits: { cvl: 55.2, ccl: 100, dcl: 150 } }
      Bat2: { limits: { cvl: 54.8, ccl: 80, dcl: 120 } }
"#;
        let config = pass_through("20s");
        let w = World::start(&scenario("", segments), &config).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeVoltage") == Some(54.8)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(160.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(240.0));
    });
}

#[test]
fn pass_through_leaves_out_a_battery_without_its_own_limits() {
    runtime().block_on(async {
        // The strategy declares it needs them (plugin ABI); lfp-balancing would merge Bat2.
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries:
      Bat2: { values: { /Info/MaxChargeVoltage: invalid } }
"#;
        let config = pass_through("1s");
        let w = World::start(&scenario("", segments), &config).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Dc/0/Current") == Some(5.0)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let log = w.daemon.log_text();
        assert!(
            log.contains("battery Bat2 not online yet") && log.contains("/Info/MaxChargeVoltage"),
            "{log}"
        );
        assert!(log.contains("battery Bat1 online"), "{log}");
    });
}

#[test]
fn alarms_are_the_maximum_over_the_batteries() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries:
      Bat1: { alarms: { HighVoltage: 1, LowSoc: 1 } }
      Bat2: { alarms: { HighVoltage: 2 } }
"#;
        let w = World::start(&scenario("", segments), &lfp(2, BMS_CURRENT)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Alarms/HighVoltage") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");
        assert_eq!(num(&items, "/Alarms/LowSoc"), Some(1.0));
        assert_eq!(num(&items, "/Alarms/LowVoltage"), Some(0.0));
    });
}

#[test]
fn a_third_battery_that_appears_while_running_is_merged() {
    runtime().block_on(async {
        let third = r#"  - { service: ttyUSB2, custom_name: Bat3, device_instance: 3, cells: 16, capacity_ah: 280, soc: 60 }"#;
        let text = BANK
            .replace(
                "EXTRA",
                "",
            )
            .replace(
                "  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }",
                &format!("  - {{ service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }}\n{third}"),
            )
            .replace(
                "SEGMENTS",
                r#"
  - duration: 3s
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat3: { gone: true } }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }
"#,
            );
        // No `expected`: the bank is what has been seen.
        let config = lfp_config(2, BMS_CURRENT)
            .batteries(|b| b.unset("expected"))
            .to_yaml();
        let w = World::start(&text, &config).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(3.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/InstalledCapacity"), Some(840.0));
        assert_eq!(num(&items, "/Dc/0/Current"), Some(15.0));
        assert!(w.daemon.log_text().contains("battery Bat3 found"));
    });
}
