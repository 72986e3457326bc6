//! `dbus-aggregate-batteries`, the host: everything around the pure core
//! ([`aggregator_core`]) that touches the world.
//!
//! - [`daemon`]: `run`, the tick loop (gathering the bus into readings, the core's tick,
//!   publishing, feed-in writes, the state file).
//! - [`bus`]: everything that speaks D-Bus.
//! - [`config`]: `config.yaml` into typed settings, and the checks of `check-config`.
//! - [`plugins`]: checking and loading plugin files.
//! - [`clock`]: the tick's timer and today's local date.
//! - [`state_file`]: the one writer of files.
//! - [`sim`]: the simulated Venus system, `demo`, `publish` and `simulate`.
//! - [`import`]: `import-config`, the Python program's settings and state into ours.
//! - [`cli`]: the subcommands; [`child`]: stopping child processes.

pub mod bus;
pub mod child;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod import;
pub mod plugins;
pub mod record;
pub mod sim;
pub mod state_file;

#[cfg(test)]
mod testing {
    /// A single-threaded runtime with I/O and time, as the daemon runs on.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }
}
