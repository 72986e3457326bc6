//! Stopping a child process as a user would: a signal, then a bounded wait. The demo stops its
//! daemon so, and so do the bench and the tests: the daemon saves its state on SIGTERM.

use std::io;
use std::process::Child;
use std::time::{Duration, Instant};

pub use rustix::process::Signal;

/// Sends `signal` to the process `pid` (a child of ours, not yet reaped).
pub fn send(pid: u32, signal: Signal) -> io::Result<()> {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("process id {pid}")))?;
    rustix::process::kill_process(target, signal).map_err(io::Error::from)
}

/// SIGTERM, then the exit code once the child has exited (None: still running after
/// `within`, or killed by a signal).
pub fn terminate(child: &mut Child, within: Duration) -> Option<i32> {
    // A child that already exited is found by the wait below.
    let _ = send(child.id(), Signal::TERM);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn terminate_stops_a_child_and_gives_its_exit_code() {
        // `sh` exits 7 from its TERM trap: the signal arrived and the code came back.
        let mut child = Command::new("sh")
            .args(["-c", "trap 'exit 7' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(terminate(&mut child, Duration::from_secs(10)), Some(7));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_reported_running() {
        let mut child = Command::new("sh")
            .args(["-c", "trap '' TERM; while :; do sleep 0.05; done"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(terminate(&mut child, Duration::from_millis(300)), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
