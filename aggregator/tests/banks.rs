//! End to end, real banks (issue "Real banks"): CAN packs without cell data, a pack of another
//! cell count, every Victron DC source, a battery monitor's SoC, a pack protecting its cells,
//! and the bank at a glance (`/System/Batteries`, `/System/BatteriesOnline`). The simulator
//! plays a scenario of `scenarios/tests` on a private bus, the daemon runs as a process, and
//! every check reads the published service from the bus.

use crate::support;

use std::time::Duration;

use support::bus::{num, text, until};
use support::config::{yaml, TestConfig};
use support::simulated as sim;
use support::world::{runtime, World};

const SECONDS: Duration = Duration::from_secs(15);

fn scenario(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/tests")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// A fast tick with these `batteries:`, `current_source:`, `strategy:` and `soc:` sections
/// (YAML flow mappings), the bank's voltage bounded at 58 V.
fn config(batteries: &str, current: &str, strategy: &str, soc: &str) -> String {
    TestConfig::default()
        .set("batteries", yaml(batteries))
        .current_source(yaml(current))
        .strategy(yaml(strategy))
        .set("soc", yaml(soc))
        .safety(|s| s.max_charge_voltage(58.0))
        .to_yaml()
}

const PASS_THROUGH: &str = "{ plugin: serialbattery, config: {} }";
const BMS_CURRENT: &str = "{ plugin: bms }";

fn listing(
    items: &std::collections::HashMap<String, (zbus::zvariant::OwnedValue, String)>,
) -> serde_json::Value {
    let json = text(items, "/System/Batteries").expect("/System/Batteries is a text");
    serde_json::from_str(&json).unwrap_or_else(|err| panic!("{json}: {err}"))
}

#[test]
fn can_packs_without_cell_data_merge_with_what_they_have_under_pass_through() {
    runtime().block_on(async {
        // No batteries.cells: nobody knows the count, and the pass-through still works.
        let batteries = "{ product_name: [SerialBattery, Pylontech], include: \
                         [com.victronenergy.battery.socketcan_can0, \
                         com.victronenergy.battery.socketcan_can1], startup_wait: 20s }";
        let cfg = config(
            batteries,
            BMS_CURRENT,
            PASS_THROUGH,
            "{ source: batteries }",
        );
        let w = World::start(&scenario("can-packs.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
                && text(i, "/System/BatteriesOnline").as_deref() == Some("2/2")
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // Remaining Ah from installed × SoC (40 + 60), consumed from the rest.
        assert_eq!(num(&items, "/Capacity"), Some(100.0));
        assert_eq!(num(&items, "/ConsumedAmphours"), Some(-100.0));
        assert_eq!(num(&items, "/Soc"), Some(50.0));
        assert_eq!(num(&items, "/System/MinCellVoltage"), Some(3.35));
        assert_eq!(
            text(&items, "/System/MinVoltageCellId").as_deref(),
            Some("Pyl_?")
        );
        assert_eq!(num(&items, "/System/NrOfCellsPerBattery"), Some(0.0));
        // The packs' own CVL (15 × 3.45 V), not 0 V from an unknown cell count.
        let cvl = num(&items, "/Info/MaxChargeVoltage").unwrap();
        assert!((cvl - 51.75).abs() < 1e-9, "CVL {cvl}");
        assert!(num(&items, "/Info/MaxChargeCurrent").unwrap() > 0.0);
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        let packs = listing(&items);
        assert_eq!(packs.as_array().map(Vec::len), Some(2), "{packs}");
        assert_eq!(packs[0]["name"], "Pyl");
        assert_eq!(
            packs[0]["service"],
            "com.victronenergy.battery.socketcan_can0"
        );
        assert_eq!(packs[0]["state"], "online");
        assert_eq!(packs[0]["soc"], 40.0);
        assert_eq!(packs[0]["max_cell_voltage"], 3.35);
        assert_eq!(packs[1]["name"], "JK");
        assert_eq!(packs[1]["min_cell_voltage"], serde_json::Value::Null);
        assert_eq!(packs[1]["blocking_charge"], false);
        let log = w.daemon.log_text();
        assert!(
            !log.contains("not online"),
            "no pack counted broken:\n{log}"
        );
    });
}

#[test]
fn a_pack_of_another_cell_count_is_left_out_with_an_alarm_and_counted_not_online() {
    runtime().block_on(async {
        let batteries = "{ startup_wait: 2s }";
        let cfg = config(
            batteries,
            BMS_CURRENT,
            PASS_THROUGH,
            "{ source: batteries }",
        );
        let w = World::start(&scenario("cell-count-mismatch.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            text(i, "/System/BatteriesOnline").as_deref() == Some("2/3")
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/System/NrOfBatteries"), Some(2.0));
        assert_eq!(num(&items, "/System/NrOfCellsPerBattery"), Some(16.0));
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(2.0));
        // Merged only the two 16-cell packs: 5 A each.
        assert_eq!(num(&items, "/Dc/0/Current"), Some(10.0));
        // A pack not online: charging stops (batteries.on_lost: block_charge).
        assert_eq!(num(&items, "/Info/MaxChargeCurrent"), Some(0.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("battery Bat3 left out"), "{mode}");
        let packs = listing(&items);
        assert_eq!(packs[2]["name"], "Bat3");
        assert_eq!(packs[2]["state"], "left out");
        let log = w.daemon.log_text();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("left out") && !l.contains("mode:"))
            .collect();
        assert_eq!(lines.len(), 1, "one line:\n{log}");
        assert!(
            lines[0].contains("Bat3") && lines[0].contains("15 cells"),
            "{}",
            lines[0]
        );
    });
}

#[test]
fn every_dc_source_adds_to_the_bank_current_with_its_sign() {
    runtime().block_on(async {
        let batteries = "{ expected: 2, cells: 16, startup_wait: 20s }";
        // Multi 10 + solar 5 + Multi RS 2 + inverter −3 + charger 4 + Orion XS 6 +
        // alternator 7 + DC source 1 − DC load 2 − DC system 3 = 27 A; the BMV is no battery.
        let cfg = config(
            batteries,
            "{ plugin: victron }",
            PASS_THROUGH,
            "{ source: batteries }",
        );
        let w = World::start(&scenario("dc-sources.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Dc/0/Current") == Some(27.0)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/System/NrOfBatteries"), Some(2.0));
        drop(w);

        // The BMV by VRM instance, no solar chargers (a shunt measures them), two classes:
        // Multi 10 + Multi RS 2 + BMV 0.5 + charger 4 − DC load 2 = 14.5 A.
        let current = "{ plugin: victron, config: { smartshunts: [40], solar_chargers: false, \
                       dc_sources: [charger, dcload] } }";
        let cfg = config(batteries, current, PASS_THROUGH, "{ source: batteries }");
        let w = World::start(&scenario("dc-sources.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Dc/0/Current") == Some(14.5)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
    });
}

#[test]
fn the_soc_of_a_named_battery_monitor_is_published() {
    runtime().block_on(async {
        let batteries = "{ expected: 2, cells: 16, startup_wait: 20s }";
        let cfg = config(batteries, BMS_CURRENT, PASS_THROUGH, "{ source: House }");
        let w = World::start(&scenario("dc-sources.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Soc") == Some(73.5)).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        // Remaining Ah over the bank's 560 Ah.
        let capacity = num(&items, "/Capacity").unwrap();
        assert!((capacity - 411.6).abs() < 0.01, "{capacity}");
        drop(w);

        // By VRM instance; a monitor that is not there leaves the batteries' SoC (60 %).
        let cfg = config(batteries, BMS_CURRENT, PASS_THROUGH, "{ source: 41 }");
        let w = World::start(&scenario("dc-sources.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| num(i, "/Soc").is_some()).await;
        assert!(ok, "{items:?}");
        let soc = num(&items, "/Soc").unwrap();
        assert!((59.0..=61.0).contains(&soc), "SoC {soc}");
    });
}

#[test]
fn a_pack_protecting_its_cells_forces_the_lowest_cvl_until_it_recovers() {
    runtime().block_on(async {
        let batteries = "{ expected: 2, cells: 16, startup_wait: 20s }";
        let strategy = "{ plugin: serialbattery, config: { cvl: keep_max_until_all_float } }";
        let cfg = config(batteries, BMS_CURRENT, strategy, "{ source: batteries }");
        let w = World::start(&scenario("protecting-pack.yaml"), &cfg).await;
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeVoltage") == Some(56.0)
        })
        .await;
        assert!(
            ok,
            "highest CVL in Bulk: {items:?}\n{}",
            w.daemon.log_text()
        );
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeVoltage") == Some(55.6)
        })
        .await;
        assert!(
            ok,
            "lowest CVL under OVP: {items:?}\n{}",
            w.daemon.log_text()
        );
        let mode = text(&items, "/Info/ChargeMode").unwrap();
        assert!(mode.contains("battery Bat2 protecting its cells"), "{mode}");
        let (ok, items) = until(&w.conn, SECONDS, |i| {
            num(i, "/Info/MaxChargeVoltage") == Some(56.0)
        })
        .await;
        assert!(ok, "back after recovery: {items:?}");
    });
}

/// `swapped-adapters.yaml`'s bank: Bat2 (serial SB) excluded, nothing expected but what is found.
fn swapped_config() -> String {
    TestConfig::default()
        .batteries(|b| b.unset("expected").set("exclude", ["SB"]))
        .to_yaml()
}

/// The names, services and states of `/System/Batteries`.
fn packs(json: &str) -> Vec<(String, String, String)> {
    let listing: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|err| panic!("{json}: {err}"));
    let field = |pack: &serde_json::Value, key: &str| pack[key].as_str().unwrap_or("").to_string();
    (listing.as_array().into_iter().flatten())
        .map(|p| (field(p, "name"), field(p, "service"), field(p, "state")))
        .collect()
}

/// Bat1 alone, online on ttyUSB1.
fn bat1_on_usb1() -> Vec<(String, String, String)> {
    vec![(
        "Bat1".into(),
        "com.victronenergy.battery.ttyUSB1".into(),
        "online".into(),
    )]
}

/// docs/discovery.md §2 and §3: USB adapters come back swapped. The driver now on ttyUSB0 reads
/// the excluded pack: it is decided from its own nameplate and left out, not merged under the
/// name of the pack that was there; Bat1, now on ttyUSB1, is merged under its own name, with its
/// own capacity. In simulated time, every tick from the swap on.
#[test]
fn in_simulated_time_swapped_adapters_are_decided_by_their_own_nameplates() {
    let run = sim::run(
        &scenario("swapped-adapters.yaml"),
        &swapped_config(),
        Duration::from_secs(12),
    );
    let listing = |i: &sim::Items| packs(&sim::text(i, "/System/Batteries").unwrap_or_default());
    let start = run.until(0, "Bat1 online on ttyUSB0", |i| {
        listing(i)
            == [(
                "Bat1".to_string(),
                "com.victronenergy.battery.ttyUSB0".to_string(),
                "online".to_string(),
            )]
    });
    assert_eq!(
        sim::num(run.items(start), "/InstalledCapacity"),
        Some(280.0)
    );
    // The drivers come back at 7 s, each on the other adapter.
    let back = (start..run.ticks.len())
        .find(|&k| run.at_s(k) >= 7.0)
        .expect("a tick after the swap");
    let on_usb0_online = |i: &sim::Items| {
        listing(i)
            .iter()
            .any(|(_, service, state)| service.ends_with(".ttyUSB0") && state == "online")
    };
    let settled = run.until_keeping(
        back,
        "Bat1 alone, on ttyUSB1",
        |i| !on_usb0_online(i),
        |i| listing(i) == bat1_on_usb1(),
    );
    for k in settled..run.ticks.len() {
        let i = run.items(k);
        let at = run.at_s(k);
        assert_eq!(listing(i), bat1_on_usb1(), "at {at} s\n{}", run.log);
        assert_eq!(sim::num(i, "/System/NrOfBatteries"), Some(1.0), "at {at} s");
        assert_eq!(sim::num(i, "/InstalledCapacity"), Some(280.0), "at {at} s");
        assert_eq!(sim::num(i, "/Alarms/BmsCable"), Some(0.0), "at {at} s");
    }
    // Both back at one tick: the pack on ttyUSB0 is decided first, Bat1 leaves it, and is
    // found again on ttyUSB1.
    let left = "battery Bat1 (com.victronenergy.battery.ttyUSB0): the service is another device \
                now (not of the bank: in batteries.exclude)";
    assert_eq!(run.occurrences(left), 1, "{}", run.log);
    let again = "battery Bat1 found again: com.victronenergy.battery.ttyUSB1";
    assert_eq!(run.occurrences(again), 1, "{}", run.log);
    assert_eq!(run.occurrences("Bat1_2"), 0, "{}", run.log);
}

/// The same on a private bus: the drivers come back as new processes, in whatever order the
/// bus and the daemon's ticks see them.
#[test]
fn swapped_adapters_are_decided_by_their_own_nameplates() {
    runtime().block_on(async {
        let w = World::start(&scenario("swapped-adapters.yaml"), &swapped_config()).await;
        let listing = |i: &std::collections::HashMap<_, _>| {
            packs(&text(i, "/System/Batteries").unwrap_or_default())
        };
        let (ok, items) = until(&w.conn, Duration::from_secs(30), |i| {
            listing(i) == bat1_on_usb1() && num(i, "/System/NrOfBatteries") == Some(1.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(num(&items, "/InstalledCapacity"), Some(280.0));
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        // And so it stays.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let items = support::bus::items(&w.conn, support::bus::OWN).await;
        assert_eq!(listing(&items), bat1_on_usb1(), "{}", w.daemon.log_text());
        assert_eq!(num(&items, "/System/NrOfBatteries"), Some(1.0));
        assert!(
            !w.daemon.log_text().contains("Bat1_2"),
            "{}",
            w.daemon.log_text()
        );
    });
}
