//! `demo` as a user runs it: the table shows the bank, and Ctrl-C leaves no process behind.

use crate::support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aggregator::child;

/// Processes whose command line mentions `marker`.
fn processes_mentioning(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let cmdline = entry.path().join("cmdline");
        if let Ok(bytes) = std::fs::read(&cmdline) {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            if text.contains(marker) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn the_demo_shows_the_bank_and_ctrl_c_stops_everything() {
    // Every temporary file of the demo (its bus socket and config, the daemon's config) goes
    // under this folder, so its name finds every process the demo started.
    let tmp = tempfile::tempdir().expect("temp dir");
    let marker = tmp.path().display().to_string();
    let mut demo = Command::new(support::daemon_program())
        .arg("--plugins-dir")
        .arg(support::build_dir())
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start demo");

    // Let it run until the bank has been shown a few times.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = false;
    while Instant::now() < deadline {
        if processes_mentioning(&marker).len() >= 2 {
            started = true;
        }
        if started {
            std::thread::sleep(Duration::from_secs(4));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(started, "the demo started no bus and no daemon");
    let children = processes_mentioning(&marker);
    assert!(
        children.iter().any(|p| p.contains("dbus-daemon"))
            && children.iter().any(|p| p.contains(" run")),
        "{children:?}"
    );

    // Ctrl-C.
    child::send(demo.id(), child::Signal::INT).expect("SIGINT to the demo");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    demo.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    demo.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}\n{out}\n{err}");
    assert!(out.contains("Bat1") && out.contains("Bat2"), "{out}");
    assert!(out.contains("CVL") && out.contains("registered"), "{out}");
    assert!(
        out.contains("SIGTERM: stopping"),
        "the daemon saved and stopped:\n{out}"
    );

    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(processes_mentioning(&marker), Vec::<String>::new());
}

/// `demo --config` runs that configuration (here another strategy, as a third-party one would
/// be), and a relative `--plugins-dir` is the folder the command was given in.
#[test]
fn the_demo_runs_the_given_config_with_a_relative_plugins_dir() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let shipped = include_str!("../../scenarios/demo-config.yaml");
    let start = shipped.find("\nstrategy:\n").expect("the strategy section") + 1;
    let end = start
        + shipped[start..]
            .find("\nsafety:")
            .expect("the safety section")
        + 1;
    let config = tmp.path().join("my-config.yaml");
    std::fs::write(
        &config,
        format!(
            "{}strategy:\n  plugin: fault-test\n  config: {{}}\n{}",
            &shipped[..start],
            &shipped[end..]
        ),
    )
    .unwrap();
    let build = support::build_dir();
    let out = Command::new(support::daemon_program())
        .current_dir(build.parent().expect("target/"))
        .arg("--config")
        .arg(&config)
        .arg("--plugins-dir")
        .arg(build.file_name().expect("the profile's folder"))
        .args(["demo", "--for", "10s"])
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("mode: Test"), "fault-test's mode:\n{text}");
}
