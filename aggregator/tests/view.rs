//! End to end, the daemon's view of the bus keeps up: a flood of other signals beside a bank
//! does not hold its readings back, nor does a large bank signalling every value on its own,
//! and the bus daemon queues nothing for us meanwhile. The batteries' currents ramp, so the
//! age of the daemon's view is read off its published current ([`support::lag`]).

use crate::support;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::config::TestConfig;
use support::lag::{rss_kib, LagProbe, Sample};
use support::world::{runtime, World};

/// A one-second tick, as on a device: the view must keep up with a second of signals.
fn config(expected: u32) -> String {
    TestConfig::default()
        .update_interval("1s")
        .batteries(|b| b.expected(expected).unset("cells"))
        .lfp()
        .safety(|s| {
            s.max_charge_voltage(116.0)
                .max_charge_current(3000.0)
                .max_discharge_current(3000.0)
        })
        .section("publish", |p| p.set("cell_voltages", false))
        .to_yaml()
}

/// Each battery's current ramps this fast (from -100 A to 100 A over 200 s).
const RAMP_A_PER_S: f64 = 1.0;

/// `batteries` packs of `cells` cells whose every value moves at every `step`, one
/// `PropertiesChanged` per changed value, their currents ramping at [`RAMP_A_PER_S`].
fn bank(batteries: usize, cells: usize, step: &str) -> String {
    let mut text = format!("step: {step}\nsignals: properties\njitter: true\nbatteries:\n");
    for k in 0..batteries {
        let _ = writeln!(
            text,
            "  - {{ service: ttyUSB{k}, custom_name: Bat{k}, device_instance: {k}, cells: \
             {cells}, capacity_ah: 280, soc: 60 }}"
        );
    }
    text.push_str(
        "segments:\n  - { duration: 200s, cell_voltage: 3.30, battery_current: [-100, 100] }\n",
    );
    text
}

/// Signals of a BusItem service we do not read, sent at `per_second` from a thread of its own
/// until `stop`; counts what it sent.
fn flood(
    address: String,
    per_second: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        runtime().block_on(async move {
            let conn = support::bus::client(&address).await;
            conn.request_name("com.victronenergy.temperature.flood")
                .await
                .expect("flood name");
            let text = "x".repeat(120);
            let started = std::time::Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Catch up with the rate in bursts, then sleep a little.
                let due = started.elapsed().as_secs_f64() * per_second as f64;
                while (k as f64) < due {
                    let mut body = std::collections::HashMap::new();
                    body.insert("Value", zbus::zvariant::Value::from(k as f64));
                    body.insert("Text", zbus::zvariant::Value::from(text.as_str()));
                    let path = format!("/Flood/{}", k % 500);
                    conn.emit_signal(
                        None::<&str>,
                        path.as_str(),
                        "com.victronenergy.BusItem",
                        "PropertiesChanged",
                        &body,
                    )
                    .await
                    .expect("flood signal");
                    k += 1;
                }
                sent.store(k, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    })
}

fn lags(samples: &[Sample]) -> String {
    samples
        .iter()
        .map(|s| format!("{:.2}", s.lag_s))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The samples whose lag is above `bound_s`; a loaded machine may delay one tick now and then,
/// a view that falls behind shows in every sample after some seconds.
fn late(samples: &[Sample], bound_s: f64) -> usize {
    samples.iter().filter(|s| s.lag_s > bound_s).count()
}

#[test]
fn a_flood_of_other_signals_does_not_hold_back_the_readings_nor_queue_up_in_the_bus() {
    runtime().block_on(async {
        let cfg = config(2);
        let w = World::start(&bank(2, 16, "100ms"), &cfg).await;
        let mut probe = LagProbe::start(w.bus.address(), RAMP_A_PER_S).await;
        let warm_up = probe.watch(Duration::from_secs(3)).await;
        assert!(
            !warm_up.is_empty(),
            "no current published; log:\n{}",
            w.daemon.log_text()
        );
        let bus_before_kib = rss_kib(w.bus.pid());

        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let flooding = flood(
            w.bus.address().to_string(),
            2000,
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        let during = probe.watch(Duration::from_secs(30)).await;
        stop.store(true, Ordering::Relaxed);
        flooding.join().expect("flood thread");
        let bus_flooded_kib = rss_kib(w.bus.pid());
        let after = probe.watch(Duration::from_secs(5)).await;
        let bus_after_kib = rss_kib(w.bus.pid());
        let sent = sent.load(Ordering::Relaxed);

        let log = w.daemon.log_text();
        let report = format!(
            "{sent} flood signals; lags during the flood: {}; after: {}; dbus-daemon VmRSS \
             {bus_before_kib} KiB before, {bus_flooded_kib} at the end of the flood, \
             {bus_after_kib} after; log:\n{log}",
            lags(&during),
            lags(&after)
        );
        eprintln!(
            "{sent} flood signals; lags during: {}; after: {}; dbus-daemon {bus_before_kib} / \
             {bus_flooded_kib} / {bus_after_kib} KiB",
            lags(&during),
            lags(&after)
        );
        assert!(sent > 40_000, "the flood was not sent: {report}");
        assert!(
            during.len() >= 20 && after.len() >= 3,
            "too few publishes: {report}"
        );
        assert!(
            late(&during, 2.0) <= during.len() / 10,
            "behind during the flood: {report}"
        );
        assert_eq!(late(&after, 2.0), 0, "behind after the flood: {report}");
        // What the bus daemon queues for a reader that does not keep up grows by the
        // flood's size (hundreds of KiB a second); its own work does not.
        let grown_kib = bus_flooded_kib
            .max(bus_after_kib)
            .saturating_sub(bus_before_kib);
        assert!(
            grown_kib < 8 * 1024,
            "dbus-daemon grew by {grown_kib} KiB: {report}"
        );
        assert!(
            !log.contains("view of the bus is"),
            "the view counted as old: {report}"
        );
    });
}

#[test]
fn a_large_bank_signalling_every_value_keeps_a_view_lag_under_one_tick() {
    runtime().block_on(async {
        let cfg = config(16);
        let w = World::start(&bank(16, 32, "500ms"), &cfg).await;
        let mut probe = LagProbe::start(w.bus.address(), RAMP_A_PER_S).await;
        let _warm_up = probe.watch(Duration::from_secs(3)).await;
        let samples = probe.watch(Duration::from_secs(20)).await;
        let report = format!("lags: {}; log:\n{}", lags(&samples), w.daemon.log_text());
        eprintln!("lags: {}", lags(&samples));
        assert!(samples.len() >= 12, "too few publishes: {report}");
        assert!(
            late(&samples, 1.0) <= samples.len() / 10,
            "behind: {report}"
        );
    });
}
