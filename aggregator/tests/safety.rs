//! docs/guard.md and docs/feedin.md end to end: the host's limits on every strategy, read from the
//! published service and the settings service on a private bus, with the real plugins and the
//! simulator.

use crate::support;

use std::time::Duration;

use aggregator::child::Signal;
use aggregator_core::engine::Event;
use aggregator_core::feedin::{Cause, FeedInEvent};
use support::bus::{num, text, until};
use support::config::{yaml, TestConfig};
use support::simulated as sim;
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

/// A fast tick, a short hold, an LFP safety section with a 2 s feed-in hold; `strategy` is a
/// `strategy:` line, or `@LFP@` for the shared LFP strategy.
fn config_of(strategy: &str) -> TestConfig {
    let config = TestConfig::default()
        .batteries(|b| b.hold_for("1s"))
        .safety(|s| {
            s.min_cell_voltage(2.80)
                .feed_in_hold("2s")
                .set("plugin_failures", 50)
        });
    if strategy == "@LFP@" {
        config.lfp()
    } else {
        config.strategy(yaml(strategy)["strategy"].clone())
    }
}

const PASS_THROUGH: &str = "strategy: { plugin: serialbattery }";
/// A third party's strategy asking for 200 A whatever the bank.
const FIXED_200: &str =
    "strategy: { plugin: fault-test, config: { cvl: 55.2, ccl: 200, dcl: 200 } }";
const LTO_CV_ON_LFP: &str = "strategy: { plugin: lto-cv, config: { charge_voltage: 3.45, max_cell_voltage: 3.55, discharge_voltage: 3.0, min_cell_voltage: 2.9, cv1: 3.40, cv2: 3.50 } }";

fn bank(segments: &str) -> String {
    BANK.replace("SEGMENTS", segments)
}

fn config(strategy: &str) -> String {
    config_of(strategy).to_yaml()
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

/// The same in simulated time (the daemon's tick through `simulate`'s offline runner), with
/// `hold_for` and `feed_in_hold` at their defaults of 60 s and a 90 s outage: computed, not
/// waited out.
#[test]
fn in_simulated_time_feed_in_goes_off_while_a_battery_is_lost_and_back_after_the_hold_time() {
    // On the bus for longer than hold_for before it goes: a battery of the bank.
    let segments = r#"
  - { duration: 65s, cell_voltage: 3.35, battery_current: 5 }
  - duration: 90s
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat1: { gone: true } }
  - { duration: 1h, cell_voltage: 3.35, battery_current: 5 }
"#;
    let config = config_of(PASS_THROUGH)
        .batteries(|b| b.unset("hold_for"))
        .safety(|s| s.unset("feed_in_hold"))
        .to_yaml();
    let run = sim::run(&bank(segments), &config, Duration::from_secs(300));
    let feed_in_at = |from: usize, value: i64| {
        (from..run.ticks.len())
            .find(|&k| run.ticks[k].feed_in == Some(value))
            .unwrap_or_else(|| panic!("feed-in never {value} after tick {from}\n{}", run.log))
    };
    let on = feed_in_at(0, 1);
    let off = feed_in_at(on, 0);
    let back = run.until(off, "Bat1 back", |i| {
        sim::num(i, "/Alarms/BmsCable") == Some(0.0)
    });
    let restored = feed_in_at(back, 1);
    // Not before the hold time (60 s) without a cause.
    let held_s = run.at_s(restored) - run.at_s(back);
    assert!(held_s >= 59.5, "feed-in back {held_s} s after the battery");
    // What the daemon logs as "DC-coupled feed-in disabled (the published CCL is 0 ...)".
    let disabled = run.event(0, "feed-in disabled", |e| {
        matches!(
            e,
            Event::FeedIn(FeedInEvent::Disabled(Cause::ChargeStopped, 1))
        )
    });
    assert!(
        on <= disabled && disabled <= off,
        "disabled at tick {disabled}"
    );
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

/// Bat1's BMS blocks charging for the whole run: CCL 0, a feed-in episode.
const BAT1_BLOCKING: &str = r#"
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 5
    batteries: { Bat1: { blocking_charge: true } }
"#;

/// A blocking BMS turns feed-in off; `signal` stops the daemon, which writes the user's value
/// back, reads it back and saves a state without the episode, logging `<name>: stopping`
/// (docs/commands.md §4).
fn stopping_restores_feed_in(signal: Signal, name: &str) {
    runtime().block_on(async {
        let mut w = World::start(&bank(BAT1_BLOCKING), &config(FIXED_200)).await;
        expect_feed_in(&w, 0.0).await;
        // The episode is in the state file: a kill -9 here would resume it.
        assert_eq!(
            w.daemon.stop(signal).await,
            Some(0),
            "{}",
            w.daemon.log_text()
        );
        // Written back by the daemon itself as it stopped, and read back.
        let log = w.daemon.log_text();
        assert!(log.contains(&format!("{name}: stopping")), "{log}");
        assert!(log.contains("OvervoltageFeedIn restored to 1"), "{log}");
        assert_eq!(w.setting(FEED_IN).await, Some(1.0), "{log}");
        let state = std::fs::read_to_string(w.dir.path().join("state/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["feed_in"]["disabled_by_us"], false, "{state}");
    });
}

#[test]
fn a_blocking_bms_turns_feed_in_off_and_sigterm_restores_it() {
    stopping_restores_feed_in(Signal::TERM, "SIGTERM");
}

/// `svc -h` sends SIGHUP: a stop like SIGTERM's, not the default action's silent end.
#[test]
fn sighup_stops_as_sigterm_does_and_restores_feed_in() {
    stopping_restores_feed_in(Signal::HUP, "SIGHUP");
}

/// docs/state.md §2: with a state folder that cannot take the episode (a file in its way does
/// what a full or read-only /data does), the 0 is written all the same (safety first), one error
/// line names the user's value an unclean stop would lose, and the episode is saved at the first
/// tick the folder can take it, not a minute later. Before, nothing was said and the next try
/// came 60 s after the failed one.
#[test]
fn a_feed_in_episode_the_state_file_cannot_take_is_said_and_saved_as_soon_as_it_can_be() {
    runtime().block_on(async {
        let config = config_of(FIXED_200)
            .section("paths", |p| p.set("state_dir", "@DIR@/blocked/state"))
            .to_yaml();
        let w = World::start_prepared(&bank(BAT1_BLOCKING), &config, |dir| {
            std::fs::write(dir.join("blocked"), "a file, not a folder\n").unwrap();
        })
        .await;
        expect_feed_in(&w, 0.0).await;
        let log = w.daemon.log_text();
        let unsaved = "without the feed-in episode in the state file";
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(unsaved)).collect();
        assert_eq!(lines.len(), 1, "{log}");
        assert!(lines[0].contains("ERROR"), "{log}");
        assert!(lines[0].contains("the user's value 1 is lost"), "{log}");
        // The folder can take it now: saved within a few ticks.
        std::fs::remove_file(w.dir.path().join("blocked")).unwrap();
        let file = w.dir.path().join("blocked/state/state.json");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let saved = loop {
            let state = std::fs::read_to_string(&file).ok();
            let state = state.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            match state {
                Some(state) => break state,
                None if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                None => panic!("no state file within 5 s\n{}", w.daemon.log_text()),
            }
        };
        assert_eq!(saved["feed_in"]["disabled_by_us"], true, "{saved}");
        assert_eq!(saved["feed_in"]["saved_value"], 1, "{saved}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let log = w.daemon.log_text();
        assert_eq!(
            occurrences(&log, "the feed-in episode is in the state file"),
            1,
            "{log}"
        );
        assert_eq!(occurrences(&log, unsaved), 1, "{log}");
        assert_eq!(w.setting(FEED_IN).await, Some(0.0), "{log}");
    });
}

fn occurrences(log: &str, text: &str) -> usize {
    log.matches(text).count()
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
        let lto = config_of("strategy: { plugin: lto-cv }")
            .safety(|s| s.max_cell_voltage(2.60).min_cell_voltage(1.80))
            .to_yaml();
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

// ---------------------------------------------------------------------------------------------
// Safe when the data is not: recovery, chemistry evidence, packs without data, the share cap,
// the high-cell stop per pack, the pass-through's SoC reset.

type Items = std::collections::HashMap<String, (zbus::zvariant::OwnedValue, String)>;

fn listing(items: &Items) -> serde_json::Value {
    let json = text(items, "/System/Batteries").expect("/System/Batteries is a text");
    serde_json::from_str(&json).unwrap_or_else(|err| panic!("{json}: {err}"))
}

#[test]
fn a_deeply_discharged_bank_is_recharged_gently_then_fully() {
    runtime().block_on(async {
        // Cells at rest 0.3 V below safety.min_cell_voltage (2.80), the BMSs allowing charge
        // (100 A each, asking 3.45 V per cell), then charged back into the window.
        let segments = r#"
  - { duration: 6s, cell_voltage: 2.50, battery_current: 0 }
  - { duration: 1h, cell_voltage: 3.20, battery_current: 0 }
"#;
        let w = World::start(&bank(segments), &config(PASS_THROUGH)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MinCellVoltage").is_some_and(|v| v < 2.6)
                && num(i, "/Info/MaxChargeCurrent").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // 0.05 C of 2 × 280 Ah; discharging stopped; a low cell is no high-cell alarm.
        assert_eq!(
            num(&items, "/Info/MaxChargeCurrent"),
            Some(28.0),
            "{items:?}"
        );
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Alarms/LowCellVoltage"), Some(2.0));
        assert_eq!(num(&items, "/Alarms/HighCellVoltage"), Some(0.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("recovering a discharged bank"), "{mode}");
        // Above safety.min_cell_voltage + its hysteresis (3.00 V): the packs' full 2 × 100 A.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeCurrent") == Some(200.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert!(num(&items, "/System/MinCellVoltage").unwrap() > 3.0);
        assert!(num(&items, "/Info/MaxDischargeCurrent").unwrap() > 0.0);
        assert_eq!(num(&items, "/Alarms/LowCellVoltage"), Some(0.0));
    });
}

#[test]
fn an_lfp_config_on_an_lto_bank_never_charges_and_names_the_bms_voltage() {
    runtime().block_on(async {
        // LTO cells at 2.3 V, their BMSs asking 16 × 2.5 V.
        let segments = r#"
  - duration: 1h
    cell_voltage: 2.30
    battery_current: 0
    batteries: { Bat1: { limits: { cvl: 40 } }, Bat2: { limits: { cvl: 40 } } }
"#;
        let w = World::start(&bank(segments), &config(FIXED_200)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/Info/ChargeMode").is_some_and(|m| m.contains("another chemistry"))
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(0.0));
        assert_eq!(num(&items, "/Alarms/HighCellVoltage"), Some(0.0));
        assert_eq!(num(&items, "/Alarms/LowCellVoltage"), Some(2.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("charge voltage per cell"), "{mode}");
    });
}

/// Two CAN packs without temperatures: one gives its lowest and highest cell, the other
/// nothing per cell.
const CAN_PACKS: &str = r#"
step: 100ms
batteries:
  - { service: socketcan_can0, product_name: "Pylontech US5000", custom_name: Pyl, device_instance: 1, cells: 15, capacity_ah: 100, soc: 40, cell_data: minmax }
  - { service: socketcan_can1, product_name: "JK BMS CAN", custom_name: JK, device_instance: 2, cells: 15, capacity_ah: 100, soc: 60, cell_data: none }
settings: { overvoltage_feed_in: 1 }
system: { low_soc: 0 }
segments:
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 0
    batteries:
      Pyl: { values: { /Dc/0/Temperature: null, /System/MinCellTemperature: null, /System/MaxCellTemperature: null } }
      JK: { values: { /Dc/0/Temperature: null, /System/MinCellTemperature: null, /System/MaxCellTemperature: null } }
"#;

#[test]
fn packs_without_cells_or_temperatures_are_named_and_their_bms_alone_bounds_them() {
    runtime().block_on(async {
        // No cell count anywhere: safety.max_charge_voltage bounds the packs' 15 × 3.45 V.
        let cfg = config_of(PASS_THROUGH)
            .batteries(|b| b.unset("cells").set("product_name", ["Pylontech", "JK"]))
            .safety(|s| s.max_charge_voltage(50.5))
            .to_yaml();
        let w = World::start(CAN_PACKS, &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/System/BatteriesOnline").as_deref() == Some("2/2")
                && num(i, "/Info/MaxChargeVoltage").is_some()
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeVoltage"), Some(50.5));
        assert!(num(&items, "/Info/MaxChargeCurrent").unwrap() > 0.0);
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("no pack reports a temperature"), "{mode}");
        let packs = listing(&items);
        assert_eq!(
            packs[0]["bms_only"],
            serde_json::json!(["temperature"]),
            "{packs}"
        );
        assert_eq!(
            packs[1]["bms_only"],
            serde_json::json!(["max_cell_voltage", "min_cell_voltage", "temperature"]),
            "{packs}"
        );
        // Still so a while later, and each pack named once in the log.
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/Info/ChargeMode").is_some_and(|m| m.contains("no pack reports"))
                && w.daemon
                    .log_text()
                    .matches("battery JK publishes no data")
                    .count()
                    == 1
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let log = w.daemon.log_text();
        assert_eq!(
            log.matches("battery JK publishes no data").count(),
            1,
            "{log}"
        );
        assert_eq!(
            log.matches("battery Pyl publishes no data").count(),
            1,
            "{log}"
        );
    });
}

#[test]
fn lto_cv_without_cell_data_stops_charging_with_an_error() {
    runtime().block_on(async {
        let one_jk = CAN_PACKS.replace(
            "  - { service: socketcan_can0, product_name: \"Pylontech US5000\", custom_name: Pyl, device_instance: 1, cells: 15, capacity_ah: 100, soc: 40, cell_data: minmax }\n",
            "",
        ).replace("      Pyl: { values: { /Dc/0/Temperature: null, /System/MinCellTemperature: null, /System/MaxCellTemperature: null } }\n", "");
        let cfg = config_of(LTO_CV_ON_LFP)
            .batteries(|b| b.set("product_name", "JK").expected(1).cells(15))
            .to_yaml();
        let w = World::start(&one_jk, &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/Info/ChargeMode").is_some_and(|m| m.starts_with("Fault"))
                && w.daemon.log_text().contains("no cell data")
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        // Not CV at the full current with no cell data.
        assert!(
            !text(&items, "/Info/ChargeMode").unwrap().starts_with("CV"),
            "{items:?}"
        );
    });
}

/// The shipped pass-through config (a full reset at 3.45 V, zero_soc off) on CAN packs that
/// publish no cells, in simulated time: the reset cannot look at the cells, and the limits
/// are passed on all the same; with the reset an error, CCL was 0 at once and DCL 0 after
/// `plugin_failures` ticks: the house stopped for a counter's reset.
#[test]
fn in_simulated_time_a_reset_without_cell_data_leaves_the_packs_limits_on() {
    let one_jk = CAN_PACKS.replace(
        "  - { service: socketcan_can0, product_name: \"Pylontech US5000\", custom_name: Pyl, device_instance: 1, cells: 15, capacity_ah: 100, soc: 40, cell_data: minmax }\n",
        "",
    ).replace("      Pyl: { values: { /Dc/0/Temperature: null, /System/MinCellTemperature: null, /System/MaxCellTemperature: null } }\n", "");
    assert!(!one_jk.contains("Pyl"), "{one_jk}");
    let config = TestConfig::default()
        .batteries(|b| b.set("product_name", "JK").expected(1).cells(15))
        .strategy(yaml(
            "{ plugin: serialbattery, config: { max_cell_voltage_soc_full: 3.45, \
             min_cell_voltage_soc_empty: 3.00, zero_soc: false } }",
        ))
        .to_yaml();
    let run = sim::run(&one_jk, &config, Duration::from_secs(30));
    let last = run.items(run.ticks.len() - 1);
    assert!(
        sim::num(last, "/Info/MaxChargeCurrent").is_some_and(|a| a > 0.0)
            && sim::num(last, "/Info/MaxDischargeCurrent").is_some_and(|a| a > 0.0),
        "{last:?}\n{}",
        run.log
    );
    let mode = sim::text(last, "/Info/ChargeMode").unwrap_or_default();
    assert!(mode.contains("; SoC reset off: no cell data"), "{mode}");
    assert_eq!(
        run.occurrences("SoC reset off until the packs publish cells"),
        1,
        "{}",
        run.log
    );
}

/// A pack with a cell above the bound restarts its driver and comes back publishing no cells
/// (in simulated time): it is held to them, its last cells standing (then lost), so the
/// high-cell stop never ends on the other pack's cells.
#[test]
fn in_simulated_time_a_pack_back_without_its_cells_does_not_end_the_high_cell_stop() {
    let no_cells: String = (1..=16)
        .map(|k| format!("/Voltages/Cell{k}: invalid, "))
        .collect();
    let segments = format!(
        r#"
  - {{ duration: 1m, cell_voltage: 3.40, battery_current: 10 }}
  - {{ duration: 2m, cell_voltage: 3.40, battery_current: 10, batteries: {{ Bat2: {{ cells: {{ 5: 3.63 }} }} }} }}
  - {{ duration: 50s, cell_voltage: 3.40, battery_current: 10, batteries: {{ Bat2: {{ gone: true }} }} }}
  - duration: 10m
    cell_voltage: 3.40
    battery_current: 10
    batteries:
      Bat2: {{ cells: {{ 5: 3.63 }}, values: {{ {no_cells}/System/MaxCellVoltage: invalid, /System/MinCellVoltage: invalid, /System/NrOfCellsPerBattery: invalid, /Voltages/Sum: invalid }} }}
"#
    );
    let config = config_of(PASS_THROUGH)
        .batteries(|b| b.unset("hold_for"))
        .to_yaml();
    let run = sim::run(&bank(&segments), &config, Duration::from_secs(420));
    let stopped = run.until(0, "the high-cell stop", |i| {
        sim::text(i, "/Info/ChargeMode")
            .is_some_and(|m| m.contains("cell at safety.max_cell_voltage"))
    });
    for k in stopped..run.ticks.len() {
        assert_eq!(
            sim::num(run.items(k), "/Info/MaxChargeCurrent"),
            Some(0.0),
            "at {} s: Bat2's cell at 3.63 V is still the last known\n{}",
            run.at_s(k),
            run.log
        );
    }
    assert!(
        run.log.contains("battery Bat2 lost ("),
        "held, then lost: {}",
        run.log
    );
}

#[test]
fn the_share_cap_follows_a_rising_share_on_the_next_tick() {
    runtime().block_on(async {
        // Bat1 may take 10 A: it goes from -2 A of a 100 A bank to 30 % of it.
        let segments = r#"
  - duration: 4s
    cell_voltage: 3.35
    battery_current: 0
    batteries:
      Bat1: { current: -2, limits: { ccl: 10 } }
      Bat2: { current: 102, limits: { ccl: 1000 } }
  - duration: 1h
    cell_voltage: 3.35
    battery_current: 0
    batteries:
      Bat1: { current: 30, limits: { ccl: 10 } }
      Bat2: { current: 70, limits: { ccl: 1000 } }
"#;
        let w = World::start(&bank(segments), &config(FIXED_200)).await;
        let near = |v: &serde_json::Value, x: f64| v.as_f64().is_some_and(|v| (v - x).abs() < 0.5);
        // Every snapshot showing the new currents (listing and limits come from one tick)
        // has the cap of the new share: 10 A / 0.3.
        let mut seen = 0;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            let Some(json) = text(i, "/System/Batteries") else {
                return false;
            };
            let packs: serde_json::Value = serde_json::from_str(&json).unwrap();
            if near(&packs[0]["current"], 30.0) && near(&packs[1]["current"], 70.0) {
                let ccl = num(i, "/Info/MaxChargeCurrent").unwrap();
                assert!(
                    ccl <= 33.4,
                    "CCL {ccl} with Bat1 at 30 % of the bank: {json}"
                );
                seen += 1;
            }
            seen >= 10
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let ccl = num(&items, "/Info/MaxChargeCurrent").unwrap();
        assert!((ccl - 33.3).abs() < 0.2, "CCL {ccl}");
    });
}

#[test]
fn the_high_cell_stop_cvl_is_below_the_high_pack_not_the_bank_mean() {
    runtime().block_on(async {
        // Bat1 at about 57.32 V with one cell at 3.62 V; Bat2 at about 57.44 V, none high.
        let segments = r#"
  - duration: 1h
    cell_voltage: 3.58
    battery_current: 2
    batteries:
      Bat1: { cells: { 5: 3.62 } }
      Bat2: { cell_offset: 0.01 }
"#;
        // A strategy asking the highest CVL the envelope allows (16 × 3.60 V).
        let high_cvl =
            "strategy: { plugin: fault-test, config: { cvl: 57.6, ccl: 200, dcl: 200 } }";
        let w = World::start(&bank(segments), &config(high_cvl)).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/MaxCellVoltage").is_some_and(|v| v > 3.61)
                && num(i, "/Info/MaxChargeCurrent") == Some(0.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let packs = listing(&items);
        let v1 = packs[0]["voltage"].as_f64().unwrap();
        let high1 = packs[0]["max_cell_voltage"].as_f64().unwrap();
        let bank_v = num(&items, "/Dc/0/Voltage").unwrap();
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        assert!(
            (cvl - (v1 - (high1 - 3.60))).abs() < 0.011,
            "CVL {cvl}, Bat1 {v1} V with {high1} V, bank {bank_v} V"
        );
        // The bank's mean less the excess would be above the high pack.
        assert!(bank_v - (high1 - 3.60) > v1, "{packs}");
    });
}

#[test]
fn the_pass_through_resets_no_soc_unless_configured() {
    runtime().block_on(async {
        // An LFP bank at 60 % with the reset keys left out: 3.35 V cells are above LTO's
        // 2.5 V, which reset the counter to 100 % every tick when it was the default.
        let segments = "  - { duration: 1h, cell_voltage: 3.35, battery_current: 0 }";
        let w = World::start(&bank(segments), &config(PASS_THROUGH)).await;
        let mut polls = 0;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            if let Some(soc) = num(i, "/Soc") {
                assert!(soc < 65.0, "SoC {soc}");
                polls += 1;
            }
            polls >= 20
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
    });
}
