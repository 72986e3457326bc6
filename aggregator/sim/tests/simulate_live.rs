//! `simulate` agrees with the live daemon on a private bus. A test binary of its own, so that
//! it runs alone: the live side runs in real time and a busy machine delays it.

use crate::support;

use std::time::{Duration, Instant};

use aggregator_sim::Scenario;
use support::bus::{items, num, OWN};
use support::offline::{number, scenarios, simulate};
use support::world::World;

/// The live daemon and `simulate` on the same short scenario (an LTO cell running up through
/// both current steps to the top and back) with the same strategy and config file: every value
/// the daemon publishes is one `simulate` computed within the 2.5 s of simulated time before
/// (a tick of 1 s out of phase with the simulator's steps, and the bus on a busy machine),
/// to 0.01 V, 0.01 A and 0.1 % SoC.
#[test]
fn simulate_agrees_with_the_live_daemon() {
    let scenario_file = scenarios().join("tests/agree-lto.yaml");
    let shipped =
        std::fs::read_to_string(scenarios().join("lto-sunny-day-config.yaml")).expect("config");
    // The daemon's folders in the test's own (placeholders of support::bus::Daemon::start).
    let config_text = shipped.replace(
        "plugins_dir: ../../target/release",
        "plugins_dir: \"@PLUGINS@\"\n  state_dir: \"@DIR@/state\"",
    );
    assert_ne!(config_text, shipped, "the config's paths section changed");

    let (live, dir) = support::world::runtime().block_on(async {
        let scenario_text = std::fs::read_to_string(&scenario_file).expect("scenario");
        let length = Scenario::parse(&scenario_text, "agree-lto.yaml")
            .expect("scenario")
            .length()
            .as_secs_f64();
        // Before the simulator's own start: a live sample is never earlier than its time.
        let t0 = Instant::now();
        let mut w = World::start(&scenario_text, &config_text).await;
        let mut live = Vec::new();
        while t0.elapsed().as_secs_f64() < length - 1.0 {
            let got = items(&w.conn, OWN).await;
            let t = t0.elapsed().as_secs_f64();
            let value = |path| num(&got, path).unwrap_or(f64::NAN);
            live.push([
                t,
                value("/Info/MaxChargeVoltage"),
                value("/Info/MaxChargeCurrent"),
                value("/Info/MaxDischargeCurrent"),
                value("/Soc"),
            ]);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        if let Some(sim) = w.sim.take() {
            sim.stop().await;
        }
        w.daemon.terminate().await;
        (live, w.dir)
    });

    let (offline, _) = simulate(
        &dir.path().join("config.yaml"),
        &scenario_file,
        &["--tick", "100ms", "--every", "100ms"],
    );
    let offline: Vec<[f64; 5]> = offline
        .iter()
        .map(|r| {
            [
                number(r, "elapsed_s"),
                number(r, "cvl_v"),
                number(r, "ccl_a"),
                number(r, "dcl_a"),
                number(r, "soc_pct"),
            ]
        })
        .collect();

    assert!(live.len() >= 40, "{} live samples", live.len());
    let tolerance = [0.0, 0.01, 0.01, 0.01, 0.1];
    for sample in &live {
        let t = sample[0];
        let agrees = offline
            .iter()
            .filter(|o| o[0] >= t - 2.5 && o[0] <= t + 0.2)
            .any(|o| (1..5).all(|k| (o[k] - sample[k]).abs() <= tolerance[k]));
        let near: Vec<&[f64; 5]> = offline
            .iter()
            .filter(|o| (o[0] - t).abs() <= 2.5)
            .step_by(5)
            .collect();
        assert!(
            agrees,
            "live {sample:?} is no offline value near {t:.2} s: {near:?}"
        );
    }
    // The stretch goes through every step of the policy, so agreeing means something.
    let ccls: Vec<f64> = live.iter().map(|s| s[2]).collect();
    for ccl in [120.0, 50.0, 10.0, 0.0] {
        assert!(
            ccls.contains(&ccl),
            "the daemon never published CCL {ccl}: {ccls:?}"
        );
    }
    assert!(
        live.iter().any(|s| s[4] == 100.0),
        "the counter is full at the top"
    );
}
