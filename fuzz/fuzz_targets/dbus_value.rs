//! One D-Bus variant from any bytes, decoded as the values of other services are: a field or
//! nothing, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The two D-Bus targets share one file of bodies; each calls one of them.
#[allow(dead_code)]
#[path = "../bodies/dbus.rs"]
mod body;

fuzz_target!(|data: &[u8]| {
    let _ = body::dbus_value(data);
});
