//! Soak: the daemon for a long run against batteries that come and go, watching its memory.
//! Ignored by default; run it with
//! `cargo build --workspace && cargo test -p aggregator --test integration soak:: -- --ignored --nocapture`
//! (`SOAK_MINUTES`, default 30, sets the length).
//!
//! Acceleration: the daemon ticks every 100 ms (the shortest `update_interval` the config
//! accepts) and the simulator publishes every 100 ms, so a minute of soak is 600 ticks, ten
//! times a real minute. The default 30 minutes are 18 000 ticks, a fifth of a day's 86 400
//! one-second ticks; `SOAK_MINUTES=144` runs a full day's worth. The scenario loops once a
//! minute through what a day brings (night discharge, a driver restart, solar charge, a battery
//! lost, a frozen driver, a blocking BMS), with `hold_for` and `frozen_after` cut to seconds so
//! every loop goes through each state change, name owner change and recovery path.

use crate::support;

use std::time::{Duration, Instant};

use support::bus::{items, num, until, OWN};
use support::config::{yaml, TestConfig};
use support::world::{runtime, World};

const SCENARIO: &str = r#"
step: 100ms
jitter: true
repeat: true
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB2, custom_name: Bat3, device_instance: 3, cells: 16, capacity_ah: 280, soc: 60 }
vebus: { device_instance: 276 }
solar_chargers: 1
settings: { overvoltage_feed_in: 1 }
system: { low_soc: 0 }
segments:
  # Night: discharging through the Multi.
  - { duration: 12s, cell_voltage: [3.28, 3.22], battery_current: -15, vebus_current: -45, solar_current: 0 }
  # A driver restart shorter than hold_for: held.
  - duration: 3s
    batteries: { Bat2: { gone: true } }
  # Morning: solar charges.
  - { duration: 12s, cell_voltage: [3.25, 3.42], battery_current: 20, vebus_current: 0, solar_current: 60 }
  # A battery away longer than hold_for: lost, then back.
  - duration: 10s
    batteries: { Bat3: { gone: true } }
  # A driver that keeps old values: frozen, held, lost, back.
  - duration: 12s
    batteries: { Bat1: { frozen: true } }
  # A BMS blocks charging while another raises an alarm.
  - duration: 6s
    battery_current: 0
    solar_current: 0
    batteries:
      Bat1: { blocking_charge: true }
      Bat2: { alarms: { HighTemperature: 1 } }
  - { duration: 5s, cell_voltage: [3.42, 3.28] }
"#;

/// The scenario's loop, in seconds.
const LOOP_S: u64 = 60;

fn config() -> String {
    TestConfig::default()
        .update_interval("100ms")
        .batteries(|b| b.expected(3).hold_for("5s").frozen_after("3s"))
        .current_source(yaml("{ plugin: victron, config: { use_multi: true } }"))
        .section("soc", |s| s.set("save_precision", 0.0005))
        .lfp()
        .section("publish", |p| p.set("cell_voltages", true))
        .section("logging", |l| l.set("summary_every", "60s"))
        .to_yaml()
}

/// Growth of the resident set from the end of the warm-up to the end that is still no leak.
/// The allocator keeps freed pages and the heap's high-water mark moves with the timing of
/// bursts (a segment change sends every path at once while a name owner change is being
/// handled), so the same work can sit a few hundred KiB apart. A leak of 100 bytes a tick is
/// 1.8 MB over the default 30 minutes, above this margin.
const RSS_MARGIN_KIB: u64 = 1024;

/// A field of `/proc/<pid>/status` in kB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process (sockets included).
fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

#[test]
#[ignore = "a long run: cargo test -p aggregator --test integration soak:: -- --ignored"]
fn a_long_run_with_batteries_coming_and_going_does_not_grow() {
    let minutes: f64 = std::env::var("SOAK_MINUTES")
        .ok()
        .map(|m| m.parse().expect("SOAK_MINUTES is a number of minutes"))
        .unwrap_or(30.0);
    let total = Duration::from_secs_f64(minutes * 60.0);
    // At least one whole loop, and a sixth of the run, before the baseline is taken.
    let warm_up = Duration::from_secs(LOOP_S).max(total / 6);
    assert!(
        total >= warm_up + Duration::from_secs(LOOP_S),
        "SOAK_MINUTES={minutes} leaves no loop after the warm-up of {warm_up:?}"
    );
    runtime().block_on(async {
        let mut w = World::start(SCENARIO, &config()).await;
        let pid = w.daemon.pid();
        let started = Instant::now();
        let mut baseline: Option<(u64, usize)> = None;
        let mut peak_kib = 0;
        let mut polls = 0u64;
        while started.elapsed() < total {
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(
                w.daemon.running(),
                "the daemon died:\n{}",
                w.daemon.log_text()
            );
            // Still serving, with sane values.
            let now = items(&w.conn, OWN).await;
            polls += 1;
            assert!(
                num(&now, "/Info/MaxChargeVoltage").is_some_and(|v| v > 0.0),
                "{now:?}"
            );
            let rss = status_kib(pid, "VmRSS:").expect("VmRSS");
            let fds = open_fds(pid).expect("fds");
            peak_kib = peak_kib.max(rss);
            if baseline.is_none() && started.elapsed() >= warm_up {
                baseline = Some((rss, fds));
                eprintln!(
                    "soak: after the warm-up of {:.0} s: RSS {rss} KiB, {fds} fds",
                    warm_up.as_secs_f64()
                );
            }
            if polls.is_multiple_of(12) {
                eprintln!(
                    "soak: {:.0} s: RSS {rss} KiB, {fds} fds",
                    started.elapsed().as_secs_f64()
                );
            }
        }

        // The bank whole again at some point of the last loop.
        let (ok, now) = until(&w.conn, Duration::from_secs(LOOP_S + 10), |i| {
            num(i, "/System/NrOfBatteries") == Some(3.0)
        })
        .await;
        assert!(ok, "{now:?}");
        let rss = status_kib(pid, "VmRSS:").expect("VmRSS");
        let fds = open_fds(pid).expect("fds");
        let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
        let (base_rss, base_fds) = baseline.expect("a baseline");
        let ticks = (started.elapsed().as_secs_f64() * 10.0) as u64;
        eprintln!(
            "soak: {minutes} min, about {ticks} ticks: RSS {base_rss} KiB after the warm-up, \
             {rss} KiB at the end (peak sampled {peak_kib} KiB, VmHWM {hwm} KiB); fds \
             {base_fds} -> {fds}"
        );
        assert!(
            rss <= base_rss + RSS_MARGIN_KIB,
            "RSS grew from {base_rss} KiB to {rss} KiB"
        );
        assert!(fds <= base_fds, "file descriptors {base_fds} -> {fds}");
        // Every loop went through its faults and recoveries, to the end of the run.
        let log = w.daemon.log_text();
        let loops = started.elapsed().as_secs() / LOOP_S;
        let count = |text: &str| log.matches(text).count() as u64;
        let (lost, frozen, held) = (
            count("battery Bat3 lost (service gone)"),
            count("battery Bat1 lost (frozen"),
            count("battery Bat2 not online (service gone)"),
        );
        eprintln!(
            "soak: {loops} loops: Bat3 lost {lost} times, Bat1 lost frozen {frozen} times, Bat2 \
             held {held} times"
        );
        for (what, n) in [
            ("Bat3 lost", lost),
            ("Bat1 frozen", frozen),
            ("Bat2 held", held),
        ] {
            assert!(n + 1 >= loops, "{what} {n} times in {loops} loops");
        }
        assert!(
            !log.contains("Bat2 lost"),
            "a 3 s gap must be held, not lost"
        );
        assert!(w.daemon.running());
    });
}
