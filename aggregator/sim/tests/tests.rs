//! The simulator's integration tests, one test binary: every file of this folder is a module here.

// Tests write their fixtures, configs and logs as they like: `clippy.toml` keeps file writes
// to the state writer in the programs only.
#![allow(clippy::disallowed_methods)]

// The daemon's test helpers (the daemon on a private bus, the simulated world, `simulate`),
// shared with its tests; this crate's tests use a part of them.
#[allow(dead_code)]
#[path = "../../tests/support/mod.rs"]
mod support;

mod demo;
mod replay;
mod simulate;
mod simulate_live;
mod simulator;
mod value_connection;
