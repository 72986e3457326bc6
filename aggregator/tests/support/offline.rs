//! Running `simulate` through the daemon's program and reading its CSV.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The shipped scenarios' folder.
pub fn scenarios() -> PathBuf {
    super::daemon_dir().join("scenarios")
}

/// One CSV row by column name.
pub type Row = HashMap<String, String>;

/// Runs `simulate` and returns the rows of the CSV and the SVG text.
pub fn simulate(config: &Path, scenario: &Path, extra: &[&str]) -> (Vec<Row>, String) {
    let out = tempfile::tempdir().expect("temp dir");
    let started = Instant::now();
    let run = Command::new(super::daemon_program())
        .arg("--config")
        .arg(config)
        .arg("--plugins-dir")
        .arg(super::build_dir())
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
    (rows(&csv), svg)
}

/// The rows of a CSV text with a header line.
pub fn rows(csv: &str) -> Vec<Row> {
    let mut lines = csv.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header")
        .split(',')
        .map(str::to_string)
        .collect();
    lines
        .map(|line| {
            let fields = split_csv(line);
            assert_eq!(fields.len(), header.len(), "row {line:?}");
            header.iter().cloned().zip(fields).collect()
        })
        .collect()
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

pub fn number(row: &Row, column: &str) -> f64 {
    row[column]
        .parse()
        .unwrap_or_else(|_| panic!("{column} is no number in {row:?}"))
}
