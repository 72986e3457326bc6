//! `dbus-aggregate-batteries`, the daemon: everything around the pure core
//! ([`aggregator_core`]) that runs on a device; the D-Bus layer is the crate `venus_bus`.
//!
//! - [`daemon`]: `run`, the tick loop (gathering the bus into readings, the core's tick,
//!   publishing, feed-in writes, the state file).
//! - [`config`]: `config.yaml` into typed settings, and the checks of `check-config`.
//! - [`plugins`]: checking and loading plugin files.
//! - [`clock`]: the tick's timer and today's local date.
//! - [`state_file`]: the one writer of files.
//! - [`cli`]: the subcommands; [`child`]: stopping child processes.
//! - [`log_output`]: the daemon's log lines, written to stdout by a thread of their own.
//! - [`error`]: what a command fails with, and its exit code.

pub mod child;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod log_output;
pub mod plugins;
pub mod record;
pub mod state_file;

/// The D-Bus layer under the name the daemon's modules use for it.
use venus_bus as bus;

#[cfg(test)]
mod testing {
    use std::sync::{Arc, Mutex};

    /// A single-threaded runtime with I/O and time, as the daemon runs on.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// The lines `run` logs at `level` and above, as the daemon writes them.
    pub fn logged(level: tracing::Level, run: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(level)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }
}
