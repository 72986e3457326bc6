//! `dbus-aggregate-batteries`: merges several parallel batteries into one virtual battery for
//! Victron Venus OS and computes the charge limits DVCC obeys.
//!
//! The core is pure: [`reading`] (a typed battery reading and whether it can be merged),
//! [`bank`] (the merge), [`coulomb`] (the counter), [`envelope`] (the safety envelope) and
//! [`feedin`] (carrying out feed-in requests). [`state`] is the only module that writes files,
//! [`plugins`] the only one that loads code, [`config`] and [`check`] read `config.yaml`.

pub mod bank;
pub mod bus;
pub mod calendar;
pub mod check;
pub mod child;
pub mod cli;
pub mod config;
pub mod coulomb;
pub mod daemon;
pub mod demo;
pub mod discovery;
pub mod elf;
pub mod engine;
pub mod envelope;
pub mod feedin;
#[doc(hidden)]
pub mod fuzzing;
pub mod gather;
pub mod import;
pub mod plugins;
pub mod presence;
pub mod published;
pub mod reading;
pub mod scheduler;
pub mod sim;
pub mod state;
pub mod value;

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
