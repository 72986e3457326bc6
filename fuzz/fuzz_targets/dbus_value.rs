//! One D-Bus variant from any bytes, decoded as the values of other services are: a field or
//! nothing, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = aggregator::fuzzing::dbus_value(data);
});
