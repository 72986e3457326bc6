//! The daemon's integration tests, one test binary (cargo builds one per file otherwise, each
//! compiling the shared helpers again): every file of this folder is a module here, and
//! `architecture::every_test_file_is_a_module` fails on a file left out.

// Tests write their fixtures, configs and logs as they like: `clippy.toml` keeps file writes
// to the state writer in the programs only.
#![allow(clippy::disallowed_methods)]

mod support;

mod architecture;
mod bad_input;
mod banks;
mod check_config;
mod conformance;
mod device;
mod docs;
mod engine;
mod faults;
mod fuzz_seeds;
mod gui_page;
mod install;
mod log_output;
mod plausible;
mod plugin_loading;
mod programs;
mod properties;
mod recorder_live;
mod safety;
mod scenarios;
mod soak;
mod stalled_bus;
mod switch;
mod transients;
mod view;
