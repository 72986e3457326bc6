//! Issue 14 end to end: the host's limits on every strategy, read from the published service
//! and the settings service on a private bus, with the real plugins and the simulator.

mod support;

use std::time::Duration;

use support::bus::{num, text, until};
use support::world::{runtime, World};

const FEED_IN: &str = "/Settings/CGwacs/OvervoltageFeedIn";
const SECONDS: Duration = Duration::from_secs(15);

/// Two 16-cell LFP batteries; feed-in on; `SEGMENTS` replaced by the test's.
const BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
settings: { overvoltage_feed_in: 1 }
system: { low_soc: 0 }
segments:
SEGMENTS
"#;

/// A fast tick, a short hold, an LFP safety section; `STRATEGY` replaced by the test's.
const CONFIG: &str = r#"
update_interval: 200ms
batteries: { expected: 2, cells: 16, startup_wait: 20s, hold_for: 1s }
current_source: { plugin: bms }
STRATEGY
safety: { max_cell_voltage: 3.60, min_cell_voltage: 2.80, min_charge_temperature: 0, max_charge_temperature: 45, min_discharge_temperature: -20, max_discharge_temperature: 55, max_charge_current: 300, max_discharge_current: 300, feed_in_hold: 2s, plugin_failures: 50 }
paths: { state_dir: "@DIR@/state", plugins_dir: "@PLUGINS@" }
logging: { summary_every: 0s }
"#;

const PASS_THROUGH: &str = "strategy: { plugin: serialbattery }";
/// A third party's strategy asking for 200 A whatever the bank.
const FIXED_200: &str =
    "strategy: { plugin: fault-test, config: { cvl: 55.2, ccl: 200, dcl: 200 } }";
const LTO_CV_ON_LFP: &str = "strategy: { plugin: lto-cv, config: { charge_voltage: 3.45, max_cell_voltage: 3.55, discharge_voltage: 3.0, min_cell_voltage: 2.9, cv1: 3.40, cv2: 3.50 } }";

fn bank(segments: &str) -> String {
    BANK.replace("SEGMENTS", segments)
}

fn config(strategy: &str) -> String {
    CONFIG.replace("STRATEGY", strategy)
}

/// Waits until the settings service holds `value` for feed-in; returns what it held last.
async fn feed_in_becomes(w: &World, value: f64, within: Duration) -> Option<f64> {
    let until = std::time::Instant::now() + within;
    loop {
        let now = w.setting(FEED_IN).await;
        if now == Some(value) || std::time::Instant::now() > until {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that feed-in becomes `value` within [`SECONDS`], with the daemon's log if not.
async fn expect_feed_in(w: &World, value: f64) {
    let now = feed_in_becomes(w, value, SECONDS).await;
    assert_eq!(now, Some(value), "{}", w.daemon.log_text());
}

#[test]
fn feed_in_goes_off_while_a_battery_is_lost_and_back_after_the_hold_time() {
    runtime().block_on(async {
        let segments = r#"
  - { duration: 5s, cell_voltage: 3.35, battery_current: 5 }
  - duration: 5s
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat1: { gone: true } }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }
"#;
        let w = World::start(&bank(segments), &config(PASS_THROUGH)).await;
        assert_eq!(feed_in_becomes(&w, 1.0, SECONDS).await, Some(1.0));
        expect_feed_in(&w, 0.0).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Alarms/BmsCable") == Some(0.0)
        })
        .await;
        assert!(ok, "{items:?}");
        let back = std::time::Instant::now();
        let feed_in = feed_in_becomes(&w, 1.0, SECONDS).await;
        let items = support::bus::items(&w.conn, support::bus::OWN).await;
        assert_eq!(
            feed_in,
            Some(1.0),
            "CCL {:?}\n{}",
            num(&items, "/Info/MaxChargeCurrent"),
            w.daemon.log_text()
        );
        // Not before the hold time (2 s) without a cause.
        assert!(
            back.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            back.elapsed()
        );
        let log = w.daemon.log_text();
        assert!(
            log.contains("DC-coupled feed-in disabled (the published CCL is 0"),
            "{log}"
        );
    });
}

#[test]
fn a_cell_past_the_safety_bound_stops_charging_under_the_pass_through() {
    runtime().block_on(async {
        let segments = r#"
  - { duration: 3s, cell_voltage: 3.40, battery_current: 10 }
  - duration: 1h
    cell_voltage: 3.40
    battery_current: 10
    batteries: { Bat2: { cells: { 5: 3.62 } } }
"#;
        let w = World::start(&bank(segments), &config(PASS_THROUGH)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MaxCellVoltage") == Some(3.62)
                && num(i, "/Info/MaxChargeCurrent") == Some(0.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // The BMSs allow 100 A each; the host stops it, pulls CVL below the bank voltage
        // and says why.
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        let voltage = num(&items, "/Dc/0/Voltage").unwrap();
        assert!(cvl < voltage, "CVL {cvl} at {voltage} V");
        assert_eq!(num(&items, "/Alarms/HighCellVoltage"), Some(2.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("safety.max_cell_voltage"), "{mode}");
        assert_eq!(feed_in_becomes(&w, 0.0, SECONDS).await, Some(0.0));
    });
}

#[test]
fn a_strategy_that_panics_turns_feed_in_off() {
    runtime().block_on(async {
        let segments = "  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }";
        let strategy = "strategy: { plugin: fault-test, config: { cvl: 55.2, ccl: 100, dcl: 100, fault: panic, after_ticks: 15 } }";
        let w = World::start(&bank(segments), &config(strategy)).await;
        assert_eq!(feed_in_becomes(&w, 1.0, SECONDS).await, Some(1.0));
        expect_feed_in(&w, 0.0).await;
        let items = support::bus::items(&w.conn, support::bus::OWN).await;
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
    });
}

#[test]
fn a_blocking_bms_turns_feed_in_off_and_sigterm_restores_it() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat1: { blocking_charge: true } }
"#;
        let mut w = World::start(&bank(segments), &config(FIXED_200)).await;
        expect_feed_in(&w, 0.0).await;
        // The episode is in the state file: a kill -9 here would resume it.
        assert_eq!(w.daemon.terminate(), Some(0));
        assert_eq!(
            w.setting(FEED_IN).await,
            Some(1.0),
            "{}",
            w.daemon.log_text()
        );
        let state = std::fs::read_to_string(w.dir.path().join("state/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["feed_in"]["disabled_by_us"], false, "{state}");
    });
}

#[test]
fn a_cold_bank_gets_no_charge_current_with_every_strategy() {
    runtime().block_on(async {
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 2
    batteries:
      Bat1: { values: { /Dc/0/Temperature: -5, /System/MinCellTemperature: -5, /System/MaxCellTemperature: -4 } }
      Bat2: { values: { /Dc/0/Temperature: 10, /System/MinCellTemperature: 9, /System/MaxCellTemperature: 11 } }
"#;
        for strategy in [
            "@LFP@",
            LTO_CV_ON_LFP,
            PASS_THROUGH,
            FIXED_200,
        ] {
            let w = World::start(&bank(segments), &config(strategy)).await;
            let (ok, items) = until(&w.conn, SECONDS, |i| {
                num(i, "/System/MinCellTemperature") == Some(-5.0)
                    && num(i, "/Info/MaxChargeCurrent") == Some(0.0)
            })
            .await;
            assert!(ok, "{strategy}: {items:?}\n{}", w.daemon.log_text());
            assert!(num(&items, "/Info/MaxDischargeCurrent").unwrap() > 0.0, "{strategy}");
            assert_eq!(num(&items, "/Alarms/LowChargeTemperature"), Some(2.0));
            let mode = text(&items, "/Info/ChargeMode").unwrap();
            assert!(mode.contains("too cold to charge"), "{strategy}: {mode}");
        }
    });
}

#[test]
fn the_packs_own_limits_cap_an_own_strategy() {
    runtime().block_on(async {
        // At low current: the smallest pack limit × packs online. Then the charge current
        // comes near that cap.
        let segments = r#"
  - duration: 8s
    cell_voltage: 3.35
    battery_current: 1
    batteries:
      Bat1: { limits: { ccl: 10 } }
      Bat2: { limits: { ccl: 10 } }
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 9.5
    batteries:
      Bat1: { limits: { ccl: 10 } }
      Bat2: { limits: { ccl: 10 } }
"#;
        let w = World::start(&bank(segments), &config(FIXED_200)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent") == Some(20.0)
                && text(i, "/Info/ChargeMode")
                    .is_some_and(|m| m.contains("charge capped by the packs' own limits"))
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // Lowered below the strategy's 200 A, but 2 A flow: feed-in is left on all along
        // (a cap that does not bind the current keeps nothing from DC-coupled PV).
        let mut polls = 0;
        loop {
            let items = support::bus::items(&w.conn, support::bus::OWN).await;
            if num(&items, "/Dc/0/Current").is_some_and(|c| c > 15.0) {
                break;
            }
            assert_eq!(w.setting(FEED_IN).await, Some(1.0), "{items:?}");
            polls += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(polls > 10, "the low-current segment was seen {polls} times");
        // 19 A against the 20 A cap: off, as DVCC holds the chargers to the CCL only then.
        assert_eq!(feed_in_becomes(&w, 0.0, SECONDS).await, Some(0.0));
        let items = support::bus::items(&w.conn, support::bus::OWN).await;
        assert!(
            text(&items, "/Info/ChargeMode").is_some_and(|m| m.contains("feed-in off")),
            "{items:?}"
        );
        drop(w);

        // Unequal shares: 35 A and 15 A on packs allowing 50 A each cap the bank at 71.4 A.
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 25
    batteries:
      Bat1: { current: 35, limits: { ccl: 50 } }
      Bat2: { current: 15, limits: { ccl: 50 } }
"#;
        let w = World::start(&bank(segments), &config(FIXED_200)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent").is_some_and(|c| (c - 71.4).abs() < 0.2)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
    });
}

#[test]
fn an_lto_config_on_an_lfp_bank_runs_with_charging_stopped_and_says_why() {
    runtime().block_on(async {
        let segments = "  - { duration: 1h, cell_voltage: 3.30, battery_current: 0 }";
        let lto = CONFIG
            .replace("STRATEGY", "strategy: { plugin: lto-cv }")
            .replace(
                "max_cell_voltage: 3.60, min_cell_voltage: 2.80",
                "max_cell_voltage: 2.60, min_cell_voltage: 1.80",
            );
        let w = World::start(&bank(segments), &lto).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/Info/ChargeMode").is_some_and(|m| m.contains("another chemistry"))
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Alarms/HighCellVoltage"), Some(2.0));
    });
}
