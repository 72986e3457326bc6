//! Faults under a running service: what it publishes meanwhile, and that it is still there.

use crate::support;

use std::time::{Duration, Instant};

use aggregator::state_file::{
    write_atomically, LoadProblem, StateStore, STATE_FILE, UNREADABLE_COPY,
};
use aggregator_sim::{Scenario, Simulator};
use support::bus::{
    client, items, num, number, text, until, until_keeping, wait_for_name, Daemon, OWN,
};
use support::config::{yaml, Section, TestConfig};
use support::simulated as sim;
use support::world::{runtime, World};
use venus_bus::private::PrivateBus;

use support::TWO_BATTERIES as SCENARIO;

/// The serialbattery pass-through with its own SoC bounds, a 3.65 V window.
fn config() -> String {
    TestConfig::default()
        .strategy(yaml(
            "{ plugin: serialbattery, config: { max_cell_voltage_soc_full: 3.55, min_cell_voltage_soc_empty: 2.9 } }",
        ))
        .safety(|s| s.max_cell_voltage(3.65))
        .to_yaml()
}

#[test]
fn the_bus_daemon_restarting_under_the_service_is_survived_and_the_counter_kept() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        // Without the guid, so the same address reaches the restarted bus.
        let address = format!("unix:path={}", socket.display());
        let mut bus = PrivateBus::start_at(&socket, write_atomically).expect("dbus-daemon");
        let sim = Simulator::start(&address, Scenario::parse(SCENARIO, "s").unwrap())
            .await
            .unwrap();
        let mut daemon = Daemon::start(&address, dir.path(), &config());
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

        // The killed bus left its socket behind.
        let _ = std::fs::remove_file(&socket);
        let _bus = PrivateBus::start_at(&socket, write_atomically).expect("dbus-daemon again");
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

/// A bank at rest (no current, no jitter): nothing of the daemon's state changes.
const AT_REST: &str = r#"
step: 100ms
jitter: false
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: 0 }
"#;

/// A private bus at a fixed address that can be killed and started again, with the simulated
/// services of `scenario` on it and the daemon under test.
struct DyingBus {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    address: String,
    scenario: &'static str,
    bus: Option<PrivateBus>,
    _sim: Option<Simulator>,
    daemon: Daemon,
}

impl DyingBus {
    /// The bus, the services and the daemon, once the daemon publishes the whole bank.
    async fn start(scenario: &'static str) -> DyingBus {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus");
        // Without the guid, so the same address reaches the restarted bus.
        let address = format!("unix:path={}", socket.display());
        let (bus, sim) = Self::bus_and_services(&socket, &address, scenario).await;
        let daemon = Daemon::start(&address, dir.path(), &config());
        let w = DyingBus {
            dir,
            socket,
            address,
            scenario,
            bus: Some(bus),
            _sim: Some(sim),
            daemon,
        };
        w.whole_bank().await;
        w
    }

    async fn bus_and_services(
        socket: &std::path::Path,
        address: &str,
        scenario: &str,
    ) -> (PrivateBus, Simulator) {
        // A killed bus leaves its socket behind.
        let _ = std::fs::remove_file(socket);
        let bus = PrivateBus::start_at(socket, write_atomically).expect("dbus-daemon");
        let scenario = Scenario::parse(scenario, "s").unwrap();
        let sim = Simulator::start(address, scenario).await.unwrap();
        (bus, sim)
    }

    /// Waits until the daemon has its name and publishes both packs.
    async fn whole_bank(&self) {
        let conn = client(&self.address).await;
        let owner = wait_for_name(&conn, OWN, Duration::from_secs(30)).await;
        assert!(
            owner.is_some(),
            "not registered:\n{}",
            self.daemon.log_text()
        );
        let (ok, items) = until(&conn, Duration::from_secs(10), |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}\n{}", self.daemon.log_text());
    }

    /// Kills the bus (and the services on it with it) and starts it again; returns once the
    /// daemon publishes the whole bank on the new one.
    async fn restart(&mut self) {
        if let Some(mut bus) = self.bus.take() {
            bus.stop();
        }
        self._sim = None;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(self.daemon.running(), "the daemon must survive the bus");
        let (bus, sim) = Self::bus_and_services(&self.socket, &self.address, self.scenario).await;
        (self.bus, self._sim) = (Some(bus), Some(sim));
        self.whole_bank().await;
    }

    /// `state.json`'s inode and time of change, or `None` without one: a write (a new file
    /// renamed over it) changes both.
    fn state_file(&self) -> Option<(u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.dir.path().join("state").join(STATE_FILE)).ok()?;
        Some((meta.ino(), meta.modified().ok()?))
    }
}

#[test]
fn a_bus_lost_again_and_again_does_not_rewrite_an_unchanged_state_file() {
    // docs/state.md §2: a save at a lost connection only when the file does not hold the state.
    runtime().block_on(async {
        let mut w = DyingBus::start(AT_REST).await;
        // The first loss writes the file if the daemon had not yet (what is saved is the same
        // bank at rest every time).
        w.restart().await;
        let first = w.state_file();
        assert!(first.is_some(), "{}", w.daemon.log_text());
        for round in 2..=4 {
            w.restart().await;
            assert_eq!(
                w.state_file(),
                first,
                "written again at loss {round}:\n{}",
                w.daemon.log_text()
            );
        }
        let log = w.daemon.log_text();
        assert_eq!(occurrences(&log, "reconnected to D-Bus"), 4, "{log}");
        // What is on disk is still the state: the counter at the packs' 60 %.
        let state = StateStore::new(w.dir.path().join("state"))
            .load()
            .expect("a readable state");
        let charge = state.charge_ah.expect("the counter saved");
        assert!((charge - 0.6 * 560.0).abs() < 1.0, "{charge} Ah");
    });
}

/// The daemon's open sockets: the fewest of ten samples over a second, so that a socket held
/// for a moment (a barrier's wait on a duplicate of the value connection's) does not count.
async fn sockets_of(pid: u32) -> usize {
    let mut fewest = usize::MAX;
    for _ in 0..10 {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the daemon's fds");
        let sockets = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count();
        fewest = fewest.min(sockets);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fewest
}

#[test]
fn a_connection_replaced_after_a_bus_loss_is_closed() {
    // One dead socket per process is little, but nothing of a connection the daemon no
    // longer uses may stay open.
    runtime().block_on(async {
        let mut w = DyingBus::start(AT_REST).await;
        let pid = w.daemon.pid();
        let before = sockets_of(pid).await;
        for round in 1..=2 {
            w.restart().await;
            let now = sockets_of(pid).await;
            assert!(
                now <= before,
                "after loss {round}: {now} sockets open, {before} before it:\n{}",
                w.daemon.log_text()
            );
        }
    });
}

// ---- battery presence (docs/battery-states.md) ---------------------------------------------

/// Two 16-cell LFP batteries of 280 Ah at 60 %, 20 A out of each. Without jitter the cells
/// stand still, so the limits are exact numbers to compare; the SoC, consumed Ah and time to
/// go still move every few seconds, so neither battery looks frozen to the default check.
/// `JITTER` and `SEGMENTS` are replaced by the test's.
const BANK: &str = r#"
step: 100ms
jitter: JITTER
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
SEGMENTS
"#;

fn bank(jitter: bool, segments: &str) -> String {
    BANK.replace("JITTER", &jitter.to_string())
        .replace("SEGMENTS", segments)
}

/// The LFP strategy on a fast tick; `batteries` changes the section of two 16-cell packs.
fn lfp(batteries: impl FnOnce(Section) -> Section) -> TestConfig {
    TestConfig::default().lfp().batteries(batteries)
}

/// Bat1 leaves the bus after 8 s for `seconds`, then stays.
fn bat1_gone_for(present_s: u32, seconds: u32) -> String {
    bank(
        false,
        &format!(
            r#"
  - {{ duration: {present_s}s, cell_voltage: 3.30, battery_current: -20 }}
  - duration: {seconds}s
    batteries: {{ Bat1: {{ gone: true }} }}
  - {{ duration: 1h }}
"#
        ),
    )
}

/// CVL, CCL and DCL as published.
type Limits = (Option<f64>, Option<f64>, Option<f64>);

fn limits(items: &Items) -> Limits {
    (
        num(items, "/Info/MaxChargeVoltage"),
        num(items, "/Info/MaxChargeCurrent"),
        num(items, "/Info/MaxDischargeCurrent"),
    )
}

type Items = std::collections::HashMap<String, (zbus::zvariant::OwnedValue, String)>;

/// The limits while one battery of two is held (docs/battery-states.md §8): old data does not get
/// full current, so CCL and DCL are scaled to the batteries online; CVL stays.
fn held_limits((cvl, ccl, dcl): Limits) -> Limits {
    (cvl, ccl.map(|c| c / 2.0), dcl.map(|d| d / 2.0))
}

/// Bat1 held: not online, but its last reading still merged, no cable alarm, the limits
/// scaled to the one battery of two online (or the whole bank's while both are online).
fn held_on_bus(before: Limits) -> impl Fn(&Items) -> bool + Copy {
    move |i| {
        num(i, "/Alarms/BmsCable") == Some(0.0)
            && (limits(i) == held_limits(before)
                || (num(i, "/System/NrOfBatteries") == Some(2.0) && limits(i) == before))
            && num(i, "/InstalledCapacity") == Some(560.0)
    }
}

/// Waits for the whole bank online; its limits then.
async fn whole_bank(w: &World) -> Limits {
    let (ok, items) = until(&w.conn, Duration::from_secs(10), |i| {
        num(i, "/System/NrOfBatteries") == Some(2.0) && num(i, "/Soc").is_some()
    })
    .await;
    assert!(ok, "{items:?}\n{}", w.daemon.log_text());
    let before = limits(&items);
    let (cvl, ccl, dcl) = before;
    assert!(
        cvl.is_some() && ccl.is_some_and(|c| c > 0.0) && dcl.is_some_and(|d| d > 0.0),
        "{before:?}"
    );
    assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
    assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
    before
}

fn occurrences(log: &str, text: &str) -> usize {
    log.matches(text).count()
}

// In simulated time (the daemon's tick through `simulate`'s offline runner): the default
// `hold_for` of 60 s and the real outages, computed instead of waited out. The same behaviour
// on a real bus, with the timings cut to seconds, follows these.

/// CVL, CCL and DCL as the daemon publishes them after a simulated tick.
fn sim_limits(items: &sim::Items) -> Limits {
    (
        sim::num(items, "/Info/MaxChargeVoltage"),
        sim::num(items, "/Info/MaxChargeCurrent"),
        sim::num(items, "/Info/MaxDischargeCurrent"),
    )
}

/// [`held_on_bus`] after a simulated tick.
fn sim_held(before: Limits) -> impl Fn(&sim::Items) -> bool + Copy {
    move |i| {
        sim::num(i, "/Alarms/BmsCable") == Some(0.0)
            && (sim_limits(i) == held_limits(before)
                || (sim::num(i, "/System/NrOfBatteries") == Some(2.0) && sim_limits(i) == before))
            && sim::num(i, "/InstalledCapacity") == Some(560.0)
    }
}

/// The first tick with the whole bank online, and its limits then.
fn sim_whole_bank(run: &sim::Run) -> (usize, Limits) {
    let at = run.until(0, "the whole bank", |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(2.0) && sim::num(i, "/Soc").is_some()
    });
    let items = run.items(at);
    let before = sim_limits(items);
    let (cvl, ccl, dcl) = before;
    assert!(
        cvl.is_some() && ccl.is_some_and(|c| c > 0.0) && dcl.is_some_and(|d| d > 0.0),
        "{before:?}"
    );
    assert_eq!(sim::num(items, "/Alarms/BmsCable"), Some(0.0));
    assert_eq!(sim::num(items, "/InstalledCapacity"), Some(560.0));
    (at, before)
}

/// From `stale_at` (the tick Bat1 went stale), Bat1 `held` (and the bank counting one
/// battery) until it is lost (`/Alarms/BmsCable` 2), which must come `hold_for` (60 s) later.
fn sim_lost_after_holding(
    run: &sim::Run,
    stale_at: usize,
    held: impl Fn(&sim::Items) -> bool,
) -> usize {
    let at = run.until_keeping(
        stale_at,
        "Bat1 lost",
        |i| held(i) && sim::num(i, "/System/NrOfBatteries") == Some(1.0),
        |i| sim::num(i, "/Alarms/BmsCable") == Some(2.0),
    );
    let held_for = run.at_s(at) - run.at_s(stale_at);
    assert!((55.0..=75.0).contains(&held_for), "lost after {held_for} s");
    at
}

#[test]
fn a_battery_gone_for_20_s_is_held_without_alarm_and_comes_back_online() {
    // Default hold_for (60 s), frozen_after and on_lost: a serialbattery driver restart.
    let config = lfp(|b| b).to_yaml();
    let run = sim::run(&bat1_gone_for(8, 20), &config, Duration::from_secs(60));
    let (start, before) = sim_whole_bank(&run);

    // Held: not online (docs/bank.md §1 counts online batteries only), but its last reading is
    // still merged, no cable alarm, the limits scaled to the one battery of two online.
    let held = sim_held(before);
    let stale_at = run.until_keeping(start, "Bat1 held", held, |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(1.0)
    });
    let items = run.items(stale_at);
    assert!(held(items), "{items:?}");
    assert_eq!(sim::num(items, "/System/BatteriesParallel"), Some(1.0));

    // All through the 20 s, and back online after.
    let back = run.until_keeping(
        stale_at,
        "Bat1 back",
        |i| held(i) && sim::num(i, "/System/NrOfBatteries") == Some(1.0),
        |i| sim::num(i, "/System/NrOfBatteries") == Some(2.0),
    );
    let away = run.at_s(back) - run.at_s(stale_at);
    assert!((15.0..=30.0).contains(&away), "held for {away} s");
    let items = run.items(back);
    assert!(held(items), "{items:?}");

    let log = &run.log;
    assert_eq!(
        run.occurrences("battery Bat1 not online (service gone): holding its last values"),
        1,
        "{log}"
    );
    assert_eq!(run.occurrences("battery Bat1 online"), 2, "{log}");
    assert!(!log.contains("battery Bat1 lost"), "{log}");
}

#[test]
fn a_battery_gone_for_90_s_is_lost_after_60_s_charging_stops_and_it_recovers() {
    // Default hold_for (60 s) and on_lost (block_charge).
    let config = lfp(|b| b).to_yaml();
    // On the bus for longer than hold_for before it goes: a battery of the bank (one
    // that goes sooner is passing, never lost).
    let run = sim::run(&bat1_gone_for(65, 90), &config, Duration::from_secs(200));
    let (start, before) = sim_whole_bank(&run);
    let (cvl, _, dcl) = before;

    let held = sim_held(before);
    let stale_at = run.until_keeping(start, "Bat1 held", held, |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(1.0)
    });

    // Held for hold_for, then lost.
    let lost_at = sim_lost_after_holding(&run, stale_at, held);
    let items = run.items(lost_at);

    // block_charge: CCL 0, DCL scaled to the one battery of two online, CVL kept; the
    // lost battery is no longer merged.
    let lost = |i: &sim::Items| {
        let (c, ccl, d) = sim_limits(i);
        sim::num(i, "/Alarms/BmsCable") == Some(2.0)
            && ccl == Some(0.0)
            && c == cvl
            && d.zip(dcl)
                .is_some_and(|(d, before)| (d - before / 2.0).abs() < 1e-9)
            && sim::num(i, "/InstalledCapacity") == Some(280.0)
            && sim::num(i, "/System/NrOfBatteries") == Some(1.0)
    };
    assert!(lost(items), "{before:?} -> {items:?}");
    let mode = sim::text(items, "/Info/ChargeMode").unwrap_or_default();
    assert!(mode.ends_with("battery lost"), "mode {mode:?}");
    let log = &run.log;
    assert_eq!(
        run.occurrences("battery Bat1 lost (service gone)"),
        1,
        "{log}"
    );

    // Back after 90 s: online, the limits and the alarm as before.
    let back = run.until_keeping(lost_at, "Bat1 back", lost, |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(2.0)
            && sim::num(i, "/Alarms/BmsCable") == Some(0.0)
    });
    let items = run.items(back);
    assert_eq!(sim_limits(items), before, "{items:?}");
    assert_eq!(sim::num(items, "/InstalledCapacity"), Some(560.0));
    let mode = sim::text(items, "/Info/ChargeMode").unwrap_or_default();
    assert!(!mode.contains("lost"), "mode {mode:?}");
    assert_eq!(run.occurrences("battery Bat1 online"), 2, "{log}");
}

/// Bat1 stops publishing after 8 s for 75 s while it stays on the bus; jitter moves every
/// value of a live battery every step.
fn bat1_frozen() -> String {
    bank(
        true,
        r#"
  - { duration: 8s, cell_voltage: 3.30, battery_current: -20 }
  - duration: 75s
    batteries: { Bat1: { frozen: true } }
  - { duration: 1h }
"#,
    )
}

/// Bat1's driver restarting in a loop (docs/discovery.md §6): on the bus for 5 s, away for 3 s
/// (lost after `hold_for`, 2 s), `cycles` times.
fn bat1_restarting(cycles: u32) -> String {
    let mut segments = String::new();
    for _ in 0..cycles {
        segments.push_str("  - { duration: 3s, batteries: { Bat1: { gone: true } } }\n");
        segments.push_str("  - { duration: 5s }\n");
    }
    segments
}

#[test]
fn in_simulated_time_a_driver_restarting_in_a_loop_is_said_once_then_counted() {
    // docs/discovery.md §6: the first going is said (gone, lost, back); the others are counted
    // and said in one line once the pack has stayed, or stayed away, for 60 s. Then again:
    // five restarts, and away for good (a line naming it lost), and back at last.
    let mut segments =
        String::from("  - { duration: 70s, cell_voltage: 3.30, battery_current: -20 }\n");
    segments.push_str(&bat1_restarting(10));
    segments.push_str("  - { duration: 70s }\n");
    segments.push_str(&bat1_restarting(5));
    segments.push_str("  - { duration: 70s, batteries: { Bat1: { gone: true } } }\n");
    segments.push_str("  - { duration: 1h }\n");
    let config = lfp(|b| b.hold_for("2s")).to_yaml();
    let run = sim::run(&bank(false, &segments), &config, Duration::from_secs(350));
    let log = &run.log;
    let service = "Bat1 (com.victronenergy.battery.ttyUSB0)";
    // Each loop: its first going and return, whole.
    assert_eq!(
        run.occurrences("battery Bat1 not online (service gone): holding its last values"),
        2,
        "{log}"
    );
    assert_eq!(
        run.occurrences("battery Bat1 lost (service gone)"),
        2,
        "{log}"
    );
    // Both loops' first return, and the return after the pack stayed away for good.
    assert_eq!(run.occurrences("battery Bat1 online again"), 3, "{log}");
    // The rest counted: the first loop's nine more once it stayed, the second's four more
    // restarts and its last going once it stayed away.
    let stayed = format!("battery {service} went away and came back 9 more times in ");
    assert_eq!(run.occurrences(&stayed), 1, "{log}");
    let line = log.lines().find(|l| l.contains(&stayed)).unwrap();
    assert!(line.contains("s; back for 60 s now"), "{line}");
    let away = format!("battery {service} went away and came back 5 more times in ");
    assert_eq!(run.occurrences(&away), 1, "{log}");
    let line = log.lines().find(|l| l.contains(&away)).unwrap();
    assert!(
        line.contains("WARN") && line.ends_with("now: lost"),
        "{line}"
    );
    // The last return comes after the line saying it stayed away.
    let said_away = log.find(&away).unwrap();
    let back = log.rfind("battery Bat1 online again").unwrap();
    assert!(back > said_away, "{log}");
}

/// Night with the loads off, in simulated time: both packs at 0 A, no value moving for ten
/// minutes. A quiet bank is not two frozen drivers: were it taken for them, DCL 0 would stop
/// the inverter and nothing would move again to bring them back.
#[test]
fn in_simulated_time_a_bank_at_rest_is_not_frozen() {
    let quiet = bank(
        false,
        r#"
  - { duration: 1h, cell_voltage: 3.30, battery_current: 0 }
"#,
    );
    let run = sim::run(&quiet, &lfp(|b| b).to_yaml(), Duration::from_secs(600));
    let (start, _) = sim_whole_bank(&run);
    for k in start..run.ticks.len() {
        let items = run.items(k);
        assert!(
            sim::num(items, "/Info/MaxDischargeCurrent").is_some_and(|a| a > 0.0)
                && sim::num(items, "/System/NrOfBatteries") == Some(2.0),
            "at {} s: {items:?}\n{}",
            run.at_s(k),
            run.log
        );
    }
    assert_eq!(run.occurrences("frozen"), 0, "{}", run.log);
}

/// Both drivers hang at rest (one USB hub), then a solar charger puts 40 A in, in simulated
/// time: the charger's current shows that the bank moves, so the packs' still values are
/// frozen ones, although no pack shows any current.
#[test]
fn in_simulated_time_packs_still_while_a_charger_carries_current_are_frozen() {
    let scenario = r#"
step: 100ms
jitter: false
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
solar_chargers: 1
segments:
  - { duration: 5m, cell_voltage: 3.30, battery_current: 0, solar_current: 0 }
  - { duration: 1h, batteries: { Bat1: { frozen: true }, Bat2: { frozen: true } }, solar_current: 40 }
"#;
    let config = lfp(|b| b)
        .current_source(yaml("{ plugin: victron }"))
        .to_yaml();
    let run = sim::run(scenario, &config, Duration::from_secs(600));
    let charger_at = run.log.find("segment 2 of 2").expect("the second segment");
    assert!(
        run.log.find("frozen").is_some_and(|at| at > charger_at),
        "frozen after the charger starts, not before: {}",
        run.log
    );
    assert_eq!(run.occurrences("not online (frozen"), 2, "{}", run.log);
    assert!(
        run.log.contains(
            "battery Bat1 not online (frozen: no value changed for 120 s while the bank \
             carried current)"
        ),
        "{}",
        run.log
    );
}

#[test]
fn a_frozen_battery_is_held_then_lost_and_back_when_its_values_move() {
    // frozen_after is 120 s by default; 3 s here. hold_for keeps its default of 60 s.
    let config = lfp(|b| b.frozen_after("3s")).to_yaml();
    let run = sim::run(&bat1_frozen(), &config, Duration::from_secs(120));
    let (start, _) = sim_whole_bank(&run);

    // Not before 8 s + 3 s, then held as a stale battery: its last reading merged, no alarm,
    // charging allowed.
    let held = |i: &sim::Items| {
        sim::num(i, "/Alarms/BmsCable") == Some(0.0)
            && sim::num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
            && sim::num(i, "/InstalledCapacity") == Some(560.0)
    };
    let stale_at = run.until_keeping(start, "Bat1 frozen", held, |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(1.0)
    });
    let detected = run.at_s(stale_at);
    assert!(
        detected >= 10.5,
        "frozen after {detected} s of the scenario"
    );
    assert!(
        run.log
            .contains("battery Bat1 not online (frozen: no value changed for 3 s while the bank carried current)"),
        "{}",
        run.log
    );

    // After hold_for: lost, block_charge.
    let lost_at = sim_lost_after_holding(&run, stale_at, held);
    let lost = |i: &sim::Items| {
        sim::num(i, "/Alarms/BmsCable") == Some(2.0)
            && sim::num(i, "/Info/MaxChargeCurrent") == Some(0.0)
            && sim::num(i, "/InstalledCapacity") == Some(280.0)
    };
    let items = run.items(lost_at);
    assert!(lost(items), "{items:?}");
    assert!(run.log.contains("battery Bat1 lost (frozen"));

    // Its values move again: online at once.
    let back = run.until_keeping(lost_at, "Bat1 back", lost, |i| {
        sim::num(i, "/System/NrOfBatteries") == Some(2.0)
    });
    let items = run.items(back);
    assert_eq!(sim::num(items, "/Alarms/BmsCable"), Some(0.0));
    assert!(sim::num(items, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0));
    assert_eq!(sim::num(items, "/InstalledCapacity"), Some(560.0));
    assert_eq!(run.occurrences("battery Bat1 online"), 2);
}

// ---- the same on a real bus, on short timings -------------------------------------------

/// Waits while Bat1 is `held` (and the bank counts one battery) until it is lost
/// (`/Alarms/BmsCable` 2), no sooner than `hold_for` after it went stale at `stale_at`.
async fn lost_after_holding(
    w: &World,
    stale_at: Instant,
    hold_for_s: f64,
    held: impl Fn(&Items) -> bool,
) -> Items {
    let items = until_keeping(
        &w.conn,
        Duration::from_secs(30),
        |i| held(i) && num(i, "/System/NrOfBatteries") == Some(1.0),
        |i| num(i, "/Alarms/BmsCable") == Some(2.0),
    )
    .await
    .reached("Bat1 lost");
    let held_for = stale_at.elapsed().as_secs_f64();
    assert!(held_for >= hold_for_s - 0.5, "lost after {held_for} s");
    items
}

#[test]
fn on_the_bus_a_battery_gone_within_hold_for_is_held_without_alarm_and_comes_back_online() {
    runtime().block_on(async {
        let config = lfp(|b| b.hold_for("10s")).to_yaml();
        let mut w = World::start(&bat1_gone_for(5, 3), &config).await;
        let before = whole_bank(&w).await;
        let held = held_on_bus(before);
        let items = until_keeping(&w.conn, Duration::from_secs(15), held, |i| {
            num(i, "/System/NrOfBatteries") == Some(1.0)
        })
        .await
        .reached("Bat1 held");
        assert!(held(&items), "{items:?}");
        assert_eq!(num(&items, "/System/BatteriesParallel"), Some(1.0));
        let items = until_keeping(
            &w.conn,
            Duration::from_secs(15),
            |i| held(i) && num(i, "/System/NrOfBatteries") == Some(1.0),
            |i| num(i, "/System/NrOfBatteries") == Some(2.0),
        )
        .await
        .reached("Bat1 back");
        assert!(held(&items), "{items:?}");
        let log = w.daemon.log_text();
        assert_eq!(
            occurrences(
                &log,
                "battery Bat1 not online (service gone): holding its last values"
            ),
            1,
            "{log}"
        );
        assert_eq!(occurrences(&log, "battery Bat1 online"), 2, "{log}");
        assert!(!log.contains("battery Bat1 lost"), "{log}");
        assert!(w.daemon.running());
    });
}

#[test]
fn on_the_bus_a_battery_gone_past_hold_for_is_lost_charging_stops_and_it_recovers() {
    runtime().block_on(async {
        let config = lfp(|b| b.hold_for("3s")).to_yaml();
        let mut w = World::start(&bat1_gone_for(5, 8), &config).await;
        let before = whole_bank(&w).await;
        let (cvl, _, dcl) = before;
        let held = held_on_bus(before);
        until_keeping(&w.conn, Duration::from_secs(15), held, |i| {
            num(i, "/System/NrOfBatteries") == Some(1.0)
        })
        .await
        .reached("Bat1 held");
        let stale_at = Instant::now();
        let items = lost_after_holding(&w, stale_at, 3.0, held).await;
        let lost = |i: &Items| {
            let (c, ccl, d) = limits(i);
            num(i, "/Alarms/BmsCable") == Some(2.0)
                && ccl == Some(0.0)
                && c == cvl
                && d.zip(dcl)
                    .is_some_and(|(d, before)| (d - before / 2.0).abs() < 1e-9)
                && num(i, "/InstalledCapacity") == Some(280.0)
                && num(i, "/System/NrOfBatteries") == Some(1.0)
        };
        assert!(lost(&items), "{before:?} -> {items:?}");
        let mode = text(&items, "/Info/ChargeMode").unwrap_or_default();
        assert!(mode.ends_with("battery lost"), "mode {mode:?}");
        let log = w.daemon.log_text();
        assert_eq!(
            occurrences(&log, "battery Bat1 lost (service gone)"),
            1,
            "{log}"
        );
        let items = until_keeping(&w.conn, Duration::from_secs(20), lost, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0) && num(i, "/Alarms/BmsCable") == Some(0.0)
        })
        .await
        .reached("Bat1 back");
        assert_eq!(limits(&items), before, "{items:?}");
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
        let log = w.daemon.log_text();
        assert_eq!(occurrences(&log, "battery Bat1 online"), 2, "{log}");
        assert!(w.daemon.running());
    });
}

#[test]
fn on_the_bus_a_frozen_battery_is_held_then_lost_and_back_when_its_values_move() {
    runtime().block_on(async {
        let scenario = bank(
            true,
            r#"
  - { duration: 5s, cell_voltage: 3.30, battery_current: -20 }
  - duration: 10s
    batteries: { Bat1: { frozen: true } }
  - { duration: 1h }
"#,
        );
        let config = lfp(|b| b.frozen_after("2s").hold_for("3s")).to_yaml();
        let mut w = World::start(&scenario, &config).await;
        whole_bank(&w).await;
        let held = |i: &Items| {
            num(i, "/Alarms/BmsCable") == Some(0.0)
                && num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
                && num(i, "/InstalledCapacity") == Some(560.0)
        };
        until_keeping(&w.conn, Duration::from_secs(15), held, |i| {
            num(i, "/System/NrOfBatteries") == Some(1.0)
        })
        .await
        .reached("Bat1 frozen");
        let stale_at = Instant::now();
        let log = w.daemon.log_text();
        assert!(
            log.contains("battery Bat1 not online (frozen: no value changed for 2 s while the bank carried current)"),
            "{log}"
        );
        let items = lost_after_holding(&w, stale_at, 3.0, held).await;
        let lost = |i: &Items| {
            num(i, "/Alarms/BmsCable") == Some(2.0)
                && num(i, "/Info/MaxChargeCurrent") == Some(0.0)
                && num(i, "/InstalledCapacity") == Some(280.0)
        };
        assert!(lost(&items), "{items:?}");
        assert!(w.daemon.log_text().contains("battery Bat1 lost (frozen"));
        let items = until_keeping(&w.conn, Duration::from_secs(20), lost, |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await
        .reached("Bat1 back");
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        assert!(num(&items, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0));
        assert_eq!(num(&items, "/InstalledCapacity"), Some(560.0));
        assert_eq!(occurrences(&w.daemon.log_text(), "battery Bat1 online"), 2);
        assert!(w.daemon.running());
    });
}

#[test]
fn no_battery_at_start_registers_fail_safe_then_merges_the_one_that_appears() {
    runtime().block_on(async {
        let scenario = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - duration: 10s
    cell_voltage: 3.30
    battery_current: -20
    batteries: { Bat1: { gone: true } }
  - { duration: 1h }
"#;
        // startup_wait is 30 s by default; 3 s here, well before the battery comes at 10 s.
        // No `expected`: the bank is what has been seen.
        let config = lfp(|b| b.unset("expected").startup_wait("3s")).to_yaml();
        let started = Instant::now();
        let mut w = World::start(scenario, &config).await;
        let registered = started.elapsed().as_secs_f64();
        assert!(
            (3.0..10.0).contains(&registered),
            "registered after {registered} s"
        );
        let log = w.daemon.log_text();
        assert!(log.contains("with safe values"), "{log}");

        // docs/battery-states.md §9, docs/tick.md §4: the fail-safe values, with the alarm.
        let items = items(&w.conn, OWN).await;
        let safe = |i: &Items| {
            num(i, "/Info/MaxChargeCurrent") == Some(0.0)
                && num(i, "/Info/MaxDischargeCurrent") == Some(0.0)
        };
        assert!(safe(&items), "{items:?}");
        assert_eq!(num(&items, "/System/NrOfBatteries"), Some(0.0));
        let mode = text(&items, "/Info/ChargeMode").unwrap_or_default();
        assert!(mode.starts_with("No battery online"), "mode {mode:?}");
        // Checked last, so that the rest is known good either way.
        let alarm_without_battery = num(&items, "/Alarms/BmsCable");

        // Safe until the battery is there, then merged with normal limits.
        let items = until_keeping(
            &w.conn,
            Duration::from_secs(20),
            |i| num(i, "/System/NrOfBatteries") != Some(0.0) || safe(i),
            |i| {
                num(i, "/System/NrOfBatteries") == Some(1.0)
                    && num(i, "/Info/MaxChargeCurrent").is_some_and(|c| c > 0.0)
            },
        )
        .await
        .reached("Bat1 merged");
        let merged = started.elapsed().as_secs_f64();
        assert!(merged >= 10.0, "merged after {merged} s");
        assert!(num(&items, "/Info/MaxDischargeCurrent").is_some_and(|d| d > 0.0));
        assert_eq!(num(&items, "/InstalledCapacity"), Some(280.0));
        assert_eq!(num(&items, "/Alarms/BmsCable"), Some(0.0));
        let soc = num(&items, "/Soc").unwrap();
        assert!((59.0..=60.0).contains(&soc), "SoC {soc}");
        let log = w.daemon.log_text();
        assert!(log.contains("battery Bat1 found"), "{log}");
        assert!(w.daemon.running());
        assert_eq!(
            alarm_without_battery,
            Some(2.0),
            "docs/battery-states.md §9: the fail-safe values with no battery online include \
             the alarm (/Alarms/BmsCable 2)"
        );
    });
}

// ---- a strategy that panics (docs/guard.md §3) ---------------------------------------------

#[test]
fn a_panicking_strategy_publishes_the_fail_safe_and_the_daemon_runs_on() {
    runtime().block_on(async {
        // 25 good ticks (5 s), then a panic every tick. plugin_failures (default 5) is raised
        // to 25 so both steps of docs/guard.md §3 are seen: CCL 0 first, DCL 0 after that many.
        let config = TestConfig::default()
            .strategy(yaml(
                "{ plugin: fault-test, config: { fault: panic, after_ticks: 25 } }",
            ))
            .safety(|s| s.set("plugin_failures", 25))
            .to_yaml();
        let segments = "  - { duration: 1h, cell_voltage: 3.30, battery_current: -20 }";
        let mut w = World::start(&bank(true, segments), &config).await;
        // The fault-test plugin's good limits.
        let good = (Some(55.0), Some(50.0), Some(60.0));
        let (ok, items) = until(&w.conn, Duration::from_secs(5), |i| limits(i) == good).await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        assert_eq!(text(&items, "/Info/ChargeMode").as_deref(), Some("Test"));

        // The panics: CCL 0, the last good CVL and DCL, the mode says so.
        let faulted = |i: &Items| {
            num(i, "/Info/MaxChargeCurrent") == Some(0.0)
                && num(i, "/Info/MaxChargeVoltage") == Some(55.0)
                && text(i, "/Info/ChargeMode").is_some_and(|m| m.starts_with("Fault"))
        };
        let items = until_keeping(
            &w.conn,
            Duration::from_secs(15),
            |i| limits(i) == good,
            faulted,
        )
        .await
        .reached("fault published");
        assert_eq!(num(&items, "/Info/MaxDischargeCurrent"), Some(60.0));

        // After plugin_failures in a row: DCL 0 too; and it stays so.
        until_keeping(&w.conn, Duration::from_secs(15), faulted, |i| {
            faulted(i) && num(i, "/Info/MaxDischargeCurrent") == Some(0.0)
        })
        .await
        .reached("DCL 0");
        let (ok, items) = until(&w.conn, Duration::from_secs(2), |i| {
            !(faulted(i) && num(i, "/Info/MaxDischargeCurrent") == Some(0.0))
        })
        .await;
        assert!(
            !ok,
            "the fail-safe must hold while the plugin panics: {items:?}"
        );

        // Logged once for the whole episode, with the plugin's message.
        let log = w.daemon.log_text();
        assert_eq!(occurrences(&log, "strategy fault:"), 1, "{log}");
        assert_eq!(
            occurrences(&log, "fault-test: deliberate panic"),
            1,
            "{log}"
        );
        assert!(w.daemon.running(), "{log}");
        // Still serving the bus.
        assert!(number(&w.conn, "/Soc").await.is_some());
    });
}

// ---- the state file (docs/state.md) --------------------------------------------------------

/// A state file saved often: every 0.0001 × 560 Ah = 0.056 Ah, about every 5 s at 40 A (the
/// default 0.0025 would take two minutes).
fn lfp_saving_often() -> String {
    lfp(|b| b)
        .section("soc", |s| s.set("save_precision", 0.0001))
        .to_yaml()
}

/// The bank discharging at 40 A with `content` as its state file before the start, and the
/// first SoC it publishes.
async fn started_with_state_file(content: Vec<u8>) -> (World, f64) {
    let segments = "  - { duration: 1h, cell_voltage: 3.30, battery_current: -20 }";
    let w = World::start_prepared(&bank(false, segments), &lfp_saving_often(), move |dir| {
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("state").join(STATE_FILE), content).unwrap();
    })
    .await;
    let (ok, items) = until(&w.conn, Duration::from_secs(10), |i| {
        num(i, "/Soc").is_some()
    })
    .await;
    assert!(ok, "{items:?}");
    let soc = num(&items, "/Soc").unwrap();
    (w, soc)
}

/// A corrupt state file in place before the start: logged, the counter starts from the
/// batteries' SoC, and a good file replaces it.
async fn corrupt_state_file_is_replaced(content: &[u8]) {
    let (mut w, soc) = started_with_state_file(content.to_vec()).await;
    assert!((59.5..=60.0).contains(&soc), "SoC {soc}");
    let log = w.daemon.log_text();
    assert!(
        log.contains("saved state is unreadable")
            && log.contains("starting from the batteries' SoC"),
        "{log}"
    );
    assert!(
        log.contains("SoC counter started from the batteries' SoC 60.0 %"),
        "{log}"
    );

    // Read as a file, not with `StateStore::load`: that removes the temporary files of writes
    // cut short, as at a start, and would take the running daemon's write from under it.
    let path = w.dir.path().join("state").join(STATE_FILE);
    let read = || -> Result<aggregator_core::state::State, String> {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let state = loop {
        match read() {
            Ok(state) if state.charge_ah.is_some() => break state,
            other if Instant::now() >= deadline => {
                panic!("no good state file: {other:?}\n{}", w.daemon.log_text())
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let saved_soc = 100.0 * state.charge_ah.unwrap() / 560.0;
    assert!((59.0..=60.0).contains(&saved_soc), "saved {saved_soc} %");
    assert_eq!(state.capacity_ah, Some(560.0));
    // What could not be read is kept beside, as it was.
    let copy = w.dir.path().join("state").join(UNREADABLE_COPY);
    assert_eq!(std::fs::read(&copy).unwrap(), content);
    assert!(w.daemon.running());
}

#[test]
fn an_empty_state_file_is_logged_and_replaced() {
    runtime().block_on(corrupt_state_file_is_replaced(b""));
}

#[test]
fn a_truncated_state_file_is_logged_and_replaced() {
    runtime().block_on(corrupt_state_file_is_replaced(
        br#"{ "charge_ah": 300.5, "capacity_ah": 56"#,
    ));
}

#[test]
fn a_garbage_state_file_is_logged_and_replaced() {
    runtime().block_on(corrupt_state_file_is_replaced(
        b"\x00\x01\xff garbage \xfe{{{",
    ));
}

/// docs/state.md §1: a state file of a newer version (after a downgrade) keeps that version's
/// keys through this version's saves, at the top and inside a part.
#[test]
fn a_newer_versions_keys_in_the_state_file_are_written_back() {
    runtime().block_on(async {
        let file = serde_json::json!({
            "charge_ah": 300.0,
            "capacity_ah": 560.0,
            "feed_in": { "disabled_by_us": false, "ramp_s": 30 },
            "soc_model": { "k": 2, "curve": [1.5, 2] },
        });
        let (mut w, soc) = started_with_state_file(file.to_string().into_bytes()).await;
        // The counter restored from the file (300 of 560 Ah), not the batteries' 60 %.
        assert!((53.0..=53.6).contains(&soc), "SoC {soc}");
        assert_eq!(
            w.daemon.terminate().await,
            Some(0),
            "{}",
            w.daemon.log_text()
        );
        let log = w.daemon.log_text();
        for key in ["soc_model", "feed_in.ramp_s"] {
            assert!(log.contains(&format!("{key}: unknown key")), "{log}");
        }
        let path = w.dir.path().join("state").join(STATE_FILE);
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved["soc_model"], file["soc_model"], "{saved}");
        assert_eq!(saved["feed_in"]["ramp_s"], 30, "{saved}");
        // This version's own values are its own: the counter moved on.
        let charge = saved["charge_ah"].as_f64().unwrap();
        assert!(charge < 300.0, "{saved}");
    });
}

/// Two small batteries of 20 Ah whose BMSs say 80 % whatever happens: 80 A out of a 40 Ah
/// bank moves the counter 0.056 %/s away from them, so a counter restored from the file is
/// told apart from one started from the BMS SoC.
const SMALL_BANK: &str = r#"
step: 100ms
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 20, soc: 80 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 20, soc: 80 }
segments:
  - duration: 1h
    cell_voltage: 3.30
    battery_current: -40
    batteries:
      Bat1: { values: { /Soc: 80 } }
      Bat2: { values: { /Soc: 80 } }
"#;

fn saved_soc(w: &World) -> f64 {
    let state = StateStore::new(w.dir.path().join("state"))
        .load()
        .unwrap_or_else(|err| panic!("{err}\n{}", w.daemon.log_text()));
    let charge = state.charge_ah.expect("a saved charge");
    assert_eq!(state.capacity_ah, Some(40.0));
    100.0 * charge / 40.0
}

fn restart(w: &mut World) {
    let config = w.dir.path().join("config.yaml");
    w.daemon = Daemon::start_with(w.bus.address(), w.dir.path(), &config);
}

#[test]
fn sigterm_saves_the_counter_and_the_restarted_daemon_continues_from_it() {
    runtime().block_on(async {
        let config = lfp(|b| b).to_yaml();
        let mut w = World::start(SMALL_BANK, &config).await;
        // About 9 s of discharge.
        let (ok, items) = until(&w.conn, Duration::from_secs(20), |i| {
            num(i, "/Soc").is_some_and(|s| s < 79.5)
        })
        .await;
        assert!(ok, "{items:?}\n{}", w.daemon.log_text());
        let published = number(&w.conn, "/Soc").await.unwrap();
        assert_eq!(
            w.daemon.terminate().await,
            Some(0),
            "{}",
            w.daemon.log_text()
        );
        assert!(w.daemon.log_text().contains("SIGTERM: stopping"));

        // Saved on the way out: what was published, less at most a tick or two of discharge.
        // The file holds the charge in Ah: 100 × charge / 40 here and the daemon's SoC are two
        // roundings of one number when no tick came between, which differ in the last bits.
        let saved = saved_soc(&w);
        assert!(
            saved <= published + 1e-9 && saved > published - 0.1,
            "published {published} %, saved {saved} %"
        );

        let logged = w.daemon.log_text().len();
        restart(&mut w);
        assert!(
            wait_for_name(&w.conn, OWN, Duration::from_secs(20))
                .await
                .is_some(),
            "{}",
            w.daemon.log_text()
        );
        let (ok, items) = until(&w.conn, Duration::from_secs(10), |i| {
            num(i, "/Soc").is_some()
        })
        .await;
        assert!(ok, "{items:?}");
        // From the file, not from the BMSs' 80 %.
        let first = num(&items, "/Soc").unwrap();
        assert!(
            first <= saved && first > saved - 0.3,
            "saved {saved} %, first published after the restart {first} %"
        );
        let after = w.daemon.log_text()[logged..].to_string();
        assert!(after.contains("state restored from"), "{after}");
        assert!(!after.contains("SoC counter started"), "{after}");
        assert!(w.daemon.running());
    });
}

/// A number in [0, 1) that differs from run to run (std's hash keys are seeded randomly).
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn kill_9_at_a_random_moment_leaves_a_readable_state_file() {
    runtime().block_on(async {
        // The counter moves enough every tick to be saved every tick (100 ms), so a kill has a
        // real chance to fall into a write.
        let config = lfp(|b| b)
            .update_interval("100ms")
            .section("soc", |s| s.set("save_precision", 0.00001))
            .to_yaml();
        let mut w = World::start(SMALL_BANK, &config).await;
        let mut store = StateStore::new(w.dir.path().join("state"));
        let mut moments = Vec::new();
        for round in 0..6 {
            if round > 0 {
                restart(&mut w);
            }
            // Anywhere in the first 3 s of a run: start-up, the first saves, steady state.
            let ms = (random_fraction() * 3000.0) as u64;
            moments.push(ms);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            assert!(w.daemon.running(), "{}", w.daemon.log_text());
            w.daemon.kill_hard();
            match store.load() {
                Ok(_) | Err(LoadProblem::Missing(_)) => {}
                Err(problem) => panic!("killed {ms} ms into run {round}: {problem}"),
            }
        }
        // At least the first run (registered, then up to 3 s) saved something.
        let state = store
            .load()
            .unwrap_or_else(|err| panic!("killed at {moments:?} ms: {err}"));
        assert!(state.charge_ah.is_some(), "killed at {moments:?} ms");
        // A kill inside a write leaves its temporary file behind (the rename never came);
        // the state file itself is whole either way.
        let leftovers = std::fs::read_dir(w.dir.path().join("state"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != STATE_FILE)
            .count();
        eprintln!("killed at {moments:?} ms; temporary files left behind: {leftovers}");
        let log = w.daemon.log_text();
        assert!(!log.contains("saved state is unreadable"), "{log}");
        restart(&mut w);
        assert!(
            wait_for_name(&w.conn, OWN, Duration::from_secs(20))
                .await
                .is_some(),
            "{}",
            w.daemon.log_text()
        );
        assert!(w.daemon.running());
        assert!(w.daemon.log_text().contains("state restored from"));
    });
}
