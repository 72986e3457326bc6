//! Any bytes as a message of the monitor's value connection: framed, parsed and decoded, never
//! a panic, and a variant read the same as zvariant reads it.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    aggregator::fuzzing::dbus_message(data);
});
