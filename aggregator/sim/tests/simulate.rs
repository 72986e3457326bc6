//! `simulate` on the shipped scenarios, through the daemon's program (which hands it to the
//! simulator's) with the built plugins: the CSV has every column and follows the strategy, the
//! chart shows every series. (Agreement with the live daemon: `simulate_live.rs`.)

use crate::support;

use std::path::Path;
use std::process::Command;

use aggregator_sim::offline::CSV_HEADER;
use support::offline::{number, scenarios, simulate, Row};

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
    // The counter is full at the peak. The strategy never asks for feed-in, but the host owns
    // it: off wherever the published CCL is 0 (a DC-coupled charger ignores the CCL while it is
    // on), the user's 1 before and again after the hold.
    assert_eq!(max_of(rows.iter(), "soc_pct"), 100.0);
    assert!(rows
        .iter()
        .filter(|r| number(r, "ccl_a") == 0.0)
        .all(|r| r["feed_in"] == "0"));
    assert_eq!(rows.first().unwrap()["feed_in"], "1");
    assert_eq!(rows.last().unwrap()["feed_in"], "1");
    assert!(max_of(rows.iter(), "dcl_a") == 150.0);
}

/// Runs `simulate` expecting a refusal (exit 2, nothing written); returns what it said.
fn refused(scenario: &Path, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    let run = Command::new(support::daemon_program())
        .arg("--config")
        .arg(scenarios().join("lto-sunny-day-config.yaml"))
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .args(["simulate", "--scenario"])
        .arg(scenario)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .expect("run simulate");
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(!out.exists(), "nothing written");
    stderr
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
    let stderr = refused(&scenario, &[]);
    assert!(stderr.contains("no `start:`"), "{stderr}");
}

#[test]
fn rows_between_ticks_are_refused() {
    let scenario = scenarios().join("lto-sunny-day.yaml");
    let stderr = refused(&scenario, &["--tick", "7s", "--every", "60s"]);
    assert!(
        stderr.contains("--every (60s) must be a whole number of ticks (7s"),
        "{stderr}"
    );
}

#[test]
fn a_rehearsal_longer_than_it_takes_is_refused_before_any_memory_is_asked_for() {
    let scenario = scenarios().join("lto-sunny-day.yaml");
    // 200,000 days of 1 s ticks: the samples alone would take tens of gigabytes.
    let stderr = refused(&scenario, &["--for", "200000d"]);
    assert!(
        stderr.contains("more than the 100000000 a rehearsal takes"),
        "{stderr}"
    );
    assert!(stderr.contains("ticks"), "{stderr}");
    // Fewer ticks, but a sample at every one of them.
    let stderr = refused(
        &scenario,
        &["--for", "40d", "--tick", "1s", "--every", "1s"],
    );
    assert!(
        stderr.contains("samples, more than the 2000000"),
        "{stderr}"
    );
}

#[test]
fn a_scenario_with_more_devices_than_a_bank_has_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("many.yaml");
    std::fs::write(
        &scenario,
        "start: 2026-06-15
solar_chargers: 100000000
batteries:
  - { service: ttyUSB0, \
         cells: 22 }
segments:
  - { duration: 1h }
",
    )
    .expect("write");
    let stderr = refused(&scenario, &[]);
    assert!(
        stderr.contains("solar_chargers: at most 64 devices, found 100000000"),
        "{stderr}"
    );
}

/// A strategy other than the one the scenario's saved state is for (as a third-party plugin
/// would be) rehearses on the shipped LFP week: it starts fresh, said once, and runs.
#[test]
fn another_strategy_rehearses_on_the_lfp_week_from_a_fresh_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = std::fs::read_to_string(scenarios().join("lfp-week-config.yaml")).unwrap();
    let start = shipped.find("\nstrategy:\n").expect("the strategy section") + 1;
    let end = start
        + shipped[start..]
            .find("\nsafety:")
            .expect("the safety section")
        + 1;
    let config = dir.path().join("config.yaml");
    let text = format!(
        "{}strategy:\n  plugin: fault-test\n  config: {{}}\n{}",
        &shipped[..start],
        &shipped[end..]
    );
    std::fs::write(&config, text).unwrap();
    let out = dir.path().join("out");
    let run = Command::new(support::daemon_program())
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .args(["simulate", "--scenario"])
        .arg(scenarios().join("lfp-week.yaml"))
        .arg("--out")
        .arg(&out)
        .args(["--tick", "60s", "--for", "24h"])
        .output()
        .expect("run simulate");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "note: the scenario's strategy state is `lfp-balancing`'s; `fault-test` starts fresh"
        ),
        "{stderr}"
    );
    let csv = std::fs::read_to_string(out.join("simulate.csv")).expect("simulate.csv");
    let rows = support::offline::rows(&csv);
    assert_complete(&rows, "2026-06-15T00:00:00", 24.0);
    // fault-test's limits when it behaves: CVL 55 V, CCL 50 A, DCL 60 A, mode `Test`.
    assert!(rows.iter().all(|r| r["mode"].starts_with("Test")), "{csv}");
    assert_eq!(max_of(rows.iter(), "cvl_v"), 55.0);
    assert_eq!(max_of(rows.iter(), "dcl_a"), 60.0);
}
