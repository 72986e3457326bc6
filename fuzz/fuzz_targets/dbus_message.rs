//! Any bytes as a message of the monitor's value connection: framed, parsed and decoded, never
//! a panic, and a variant read the same as zvariant reads it.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The two D-Bus targets share one file of bodies; each calls one of them.
#[allow(dead_code)]
#[path = "../bodies/dbus.rs"]
mod body;

fuzz_target!(|data: &[u8]| {
    body::dbus_message(data);
});
