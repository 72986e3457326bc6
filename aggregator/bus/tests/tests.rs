//! The D-Bus layer's integration tests, one test binary: every file of this folder is a module here.

// Tests write their fixtures, configs and logs as they like: `clippy.toml` keeps file writes
// to the state writer in the programs only.
#![allow(clippy::disallowed_methods)]

mod export;
mod fuzz_seeds;
mod message_writer;
mod monitor;
mod value_connection;

/// The private bus's configuration file, written as the test's own (the daemon's programs pass
/// their state writer; this crate's tests do not depend on the daemon).
fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
