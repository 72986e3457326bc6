//! A log that nobody reads (docs/tick.md §8): under daemontools stdout is the pipe to
//! multilog, and a multilog that stops reading (a full `/var/log`, its service down) leaves
//! the pipe full. The tick goes on, the published limits keep moving, and SIGTERM stops the
//! daemon cleanly.

use crate::support;

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use aggregator::state_file::StateStore;
use support::bus::{num, until};
use support::config::TestConfig;
use support::world::{runtime, World};

/// Two packs whose BMSs allow 30 A, then 40 A, each for a second, over and over: the
/// pass-through's CCL follows them, a change every second as long as the tick runs.
const CHANGING_LIMITS: &str = r#"
step: 100ms
repeat: true
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - duration: 1s
    cell_voltage: 3.30
    battery_current: -20
    batteries: { Bat1: { limits: { ccl: 30 } }, Bat2: { limits: { ccl: 30 } } }
  - duration: 1s
    cell_voltage: 3.30
    battery_current: -20
    batteries: { Bat1: { limits: { ccl: 40 } }, Bat2: { limits: { ccl: 40 } } }
"#;

/// Fills the pipe whose reading end is `reader` to the last byte, through a writer of the
/// test's own that does not wait (the daemon's end keeps its blocking writes); the bytes
/// written.
fn fill(reader: &std::io::PipeReader) -> usize {
    let path = format!("/proc/self/fd/{}", reader.as_raw_fd());
    let mut filler = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap_or_else(|err| panic!("{path} opened for writing: {err}"));
    let mut written = 0;
    // Whole pages, then single bytes into what room is left.
    for chunk in [4096, 1] {
        loop {
            match filler.write(&vec![b'#'; chunk]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) => panic!("filling the pipe: {err}"),
            }
        }
    }
    written
}

#[test]
fn a_log_pipe_nobody_reads_stops_neither_the_limits_nor_sigterm() {
    runtime().block_on(async {
        // A summary line every tick: the log has something to write all the time.
        let config = TestConfig::default()
            .update_interval("100ms")
            .section("logging", |l| l.set("summary_every", "100ms"))
            .to_yaml();
        let (mut world, reader) = World::start_piped(CHANGING_LIMITS, &config).await;
        let (ok, items) = until(&world.conn, Duration::from_secs(10), |i| {
            num(i, "/Info/MaxChargeCurrent").is_some()
        })
        .await;
        assert!(ok, "{items:?}");

        let filled = fill(&reader);
        assert!(filled > 0, "the pipe took nothing");
        // The next summary line, a tick later, finds the pipe full.
        tokio::time::sleep(Duration::from_secs(1)).await;

        // The CCL follows the packs' 30 A and 40 A; each answer in time, or the daemon's
        // thread is held.
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 5 && tokio::time::Instant::now() < deadline {
            let ccl = tokio::time::timeout(
                Duration::from_secs(3),
                support::bus::number(&world.conn, "/Info/MaxChargeCurrent"),
            )
            .await
            .unwrap_or_else(|_| {
                panic!("no answer within 3 s with the log pipe full: the daemon is held")
            })
            .expect("a CCL");
            if seen.last() != Some(&ccl) {
                seen.push(ccl);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen.len() >= 5,
            "the CCL stood still with the log pipe full: {seen:?}"
        );

        // The pipe is still full: the lines waiting are given their time, then it stops, with
        // the state saved on the way out.
        let saved = world.dir.path().join("state/state.json");
        let _ = std::fs::remove_file(&saved);
        assert_eq!(world.daemon.terminate().await, Some(0));
        if let Err(err) = StateStore::new(world.dir.path().join("state")).load() {
            panic!("no state saved at the stop: {err}");
        }
        drop(reader);
    });
}
