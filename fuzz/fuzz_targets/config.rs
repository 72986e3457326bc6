//! `config.yaml` from any bytes: a config or errors that say what is wrong, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/config.rs"]
mod body;

fuzz_target!(|data: &[u8]| {
    let _ = body::config(data);
});
