//! `simulate` on the shipped scenarios, through the daemon's program (which hands it to the
//! simulator's) with the built plugins: the CSV has every column and follows the strategy, the
//! chart shows every series; and its numbers agree with the live daemon on a private bus.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aggregator::sim::offline::CSV_HEADER;
use aggregator::sim::Scenario;
use support::bus::{items, num, OWN};
use support::world::World;

const DAEMON: &str = env!("CARGO_BIN_EXE_dbus-aggregate-batteries");

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// One CSV row by column name.
type Row = HashMap<String, String>;

/// Runs `simulate` and returns the rows of the CSV and the SVG text.
fn simulate(config: &Path, scenario: &Path, extra: &[&str]) -> (Vec<Row>, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let run = Command::new(DAEMON)
        .arg("--config")
        .arg(config)
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .arg("simulate")
        .arg("--scenario")
        .arg(scenario)
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .output()
        .expect("run simulate");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "simulate failed: {stderr}");
    eprintln!(
        "simulate took {:.1} s: {stderr}",
        started.elapsed().as_secs_f64()
    );
    let csv = std::fs::read_to_string(out.path().join("simulate.csv")).expect("simulate.csv");
    let svg = std::fs::read_to_string(out.path().join("simulate.svg")).expect("simulate.svg");
    let mut lines = csv.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|line| {
            let fields = split_csv(line);
            assert_eq!(fields.len(), header.len(), "row {line:?}");
            header.iter().cloned().zip(fields).collect()
        })
        .collect();
    (rows, svg)
}

/// The fields of a CSV line (quoted fields may hold commas).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("a field").push(c),
        }
    }
    fields
}

fn number(row: &Row, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column} is no number in {row:?}"))
}

fn on_day<'a>(rows: &'a [Row], date: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
    rows.iter().filter(move |r| r["time"].starts_with(date))
}

fn max_of<'a>(rows: impl Iterator<Item = &'a Row>, column: &str) -> f64 {
    rows.map(|r| number(r, column))
        .fold(f64::NEG_INFINITY, f64::max)
}

fn min_of<'a>(rows: impl Iterator<Item = &'a Row>, column: &str) -> f64 {
    rows.map(|r| number(r, column))
        .fold(f64::INFINITY, f64::min)
}

/// Every column is there, every row has a value in each, and time runs on in steps of a
/// minute from the scenario's start.
fn assert_complete(rows: &[Row], first_time: &str, hours: f64) {
    let expected: Vec<&str> = CSV_HEADER.split(',').collect();
    for column in [
        "time",
        "max_cell_v",
        "min_cell_v",
        "bank_v",
        "current_a",
        "cvl_v",
        "ccl_a",
        "dcl_a",
        "soc_pct",
        "feed_in",
        "mode",
    ] {
        assert!(expected.contains(&column), "no column {column}");
    }
    assert_eq!(rows.len() as f64, hours * 60.0 + 1.0, "a row a minute");
    assert_eq!(rows[0]["time"], first_time);
    for (k, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), expected.len());
        for column in &expected {
            assert!(!row[*column].is_empty(), "{column} empty in {row:?}");
        }
        assert_eq!(number(row, "elapsed_s"), k as f64 * 60.0);
    }
}

/// The chart: one line per series with its legend text, and the axes named with units.
fn assert_chart(svg: &str, series: &[&str]) {
    assert!(svg.len() > 10_000, "an SVG of {} bytes", svg.len());
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    for text in series.iter().chain(&[
        "Bank voltage (V)",
        "Cell voltage (V)",
        "Current (A)",
        "State of charge (%)",
        "local time",
    ]) {
        assert!(
            svg.contains(&format!("\n{text}\n")),
            "no text {text:?} in the chart"
        );
    }
    // The series' colours: blue bank voltage and current, red limits and highest cell, green
    // lowest cell, orange -DCL, purple SoC.
    for colour in ["#1F77B4", "#D62728", "#2CA02C", "#FF7F0E", "#9467BD"] {
        let lines = svg
            .match_indices("<polyline")
            .filter(|(at, _)| svg[*at..].split('>').next().unwrap().contains(colour))
            .count();
        assert!(
            lines >= 2,
            "{lines} lines in {colour}: a series and its legend"
        );
    }
}

const SERIES: [&str; 8] = [
    "bank voltage",
    "CVL",
    "highest cell",
    "lowest cell",
    "current (+ charging)",
    "CCL",
    "-DCL",
    "SoC",
];

#[test]
fn the_lfp_week_charges_to_the_month_and_balances_on_the_balancing_day() {
    let dir = scenarios();
    let (rows, svg) = simulate(
        &dir.join("lfp-week-config.yaml"),
        &dir.join("lfp-week.yaml"),
        &["--tick", "20s"],
    );
    assert_complete(&rows, "2026-06-15T00:00:00", 7.0 * 24.0);
    let mut series = SERIES.to_vec();
    series.push("feed-in off");
    assert_chart(&svg, &series);

    // June charges to 16 × 3.35 V; the last balancing was on 11 June, every 7 days: the 18th.
    let normal_v = 16.0 * 3.35;
    let balancing_v = 16.0 * 3.50;
    for day in ["15", "16", "17", "19", "20", "21"] {
        let date = format!("2026-06-{day}");
        let cvl = max_of(on_day(&rows, &date), "cvl_v");
        assert!((cvl - normal_v).abs() < 1e-6, "{date}: CVL up to {cvl}");
        assert!(
            on_day(&rows, &date).all(|r| !r["mode"].starts_with("Balanc")),
            "{date} is no balancing day"
        );
    }
    let balancing_day = "2026-06-18";
    let cvl = max_of(on_day(&rows, balancing_day), "cvl_v");
    assert!((cvl - balancing_v).abs() < 1e-6, "balancing CVL {cvl}");
    let bank = max_of(on_day(&rows, balancing_day), "bank_v");
    assert!(bank >= balancing_v, "the bank reaches {bank} V");
    let modes: Vec<&str> = on_day(&rows, balancing_day)
        .map(|r| r["mode"].as_str())
        .collect();
    for mode in ["Balancing", "Balanced, holding", "Normal"] {
        assert!(modes.contains(&mode), "no {mode:?} on the balancing day");
    }
    // Bat2's cell 7 at 3.56 V: the CVL comes down below the balancing voltage, feed-in is off
    // for a while and back on by the evening; the counter is set to full at the top.
    let lowered = on_day(&rows, balancing_day)
        .filter(|r| r["mode"].starts_with("Balancing") && number(r, "max_cell_v") >= 3.55)
        .map(|r| number(r, "cvl_v"))
        .fold(f64::INFINITY, f64::min);
    assert!(
        lowered < balancing_v - 0.005,
        "CVL {lowered} with a cell at 3.56 V"
    );
    assert_eq!(min_of(on_day(&rows, balancing_day), "feed_in"), 0.0);
    assert_eq!(number(rows.last().expect("rows"), "feed_in"), 1.0);
    assert_eq!(max_of(on_day(&rows, balancing_day), "soc_pct"), 100.0);
    // The charge current tapers at the top and never goes above the strategy's 150 A.
    assert!(max_of(rows.iter(), "ccl_a") <= 150.0);
    assert!(min_of(on_day(&rows, balancing_day), "ccl_a") < 20.0);
}

#[test]
fn the_sunny_lto_day_steps_the_charge_current_and_stops_it_at_the_peaking_cell() {
    let dir = scenarios();
    let (rows, svg) = simulate(
        &dir.join("lto-sunny-day-config.yaml"),
        &dir.join("lto-sunny-day.yaml"),
        &["--tick", "5s"],
    );
    assert_complete(&rows, "2026-07-04T00:00:00", 24.0);
    assert_chart(&svg, &SERIES);
    let at = |max_cell: fn(f64) -> bool| {
        rows.iter()
            .filter(move |r| max_cell(number(r, "max_cell_v")))
            .map(|r| number(r, "ccl_a"))
    };
    // 120 A below cv1 2.45 V, 50 A from there, 10 A from cv2 2.52 V, 0 A from 2.55 V.
    assert!(at(|v| v < 2.45).all(|ccl| ccl == 120.0));
    assert!(at(|v| (2.45..2.52).contains(&v)).all(|ccl| ccl == 50.0));
    assert!(at(|v| (2.52..2.55).contains(&v)).all(|ccl| ccl == 10.0));
    let stopped: Vec<f64> = at(|v| v >= 2.55).collect();
    assert!(!stopped.is_empty() && stopped.iter().all(|ccl| *ccl == 0.0));
    // The CVL is 22 × 2.48 V, or the bank less the cell's excess at the peak, never above.
    for row in &rows {
        let cvl = number(row, "cvl_v");
        assert!(cvl <= 22.0 * 2.48 + 1e-6, "CVL {cvl}");
    }
    // The counter is full at the peak; feed-in is never touched by this strategy.
    assert_eq!(max_of(rows.iter(), "soc_pct"), 100.0);
    assert!(rows.iter().all(|r| r["feed_in"] == "1"));
    assert!(max_of(rows.iter(), "dcl_a") == 150.0);
}

#[test]
fn a_scenario_without_a_start_date_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("no-start.yaml");
    std::fs::write(
        &scenario,
        "batteries:\n  - { service: ttyUSB0, cells: 22 }\nsegments:\n  - { duration: 1h }\n",
    )
    .expect("write");
    let out = dir.path().join("out");
    let run = Command::new(DAEMON)
        .arg("--config")
        .arg(scenarios().join("lto-sunny-day-config.yaml"))
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .args(["simulate", "--scenario"])
        .arg(&scenario)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run simulate");
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("no `start:`"), "{stderr}");
    assert!(!out.exists(), "nothing written");
}

/// The live daemon and `simulate` on the same short scenario (an LTO cell running up through
/// both current steps to the top and back) with the same strategy and config file: every value
/// the daemon publishes is one `simulate` computed within the 1.5 s of simulated time before
/// (the daemon's tick and the simulator's step are not in phase), to 0.01 V, 0.01 A and 0.1 %
/// SoC.
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
        w.daemon.terminate();
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
            .filter(|o| o[0] >= t - 1.5 && o[0] <= t + 0.2)
            .any(|o| (1..5).all(|k| (o[k] - sample[k]).abs() <= tolerance[k]));
        let near: Vec<&[f64; 5]> = offline
            .iter()
            .filter(|o| (o[0] - t).abs() <= 1.5)
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
