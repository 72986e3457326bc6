//! The bodies of the fuzz targets `dbus_value` and `dbus_message` (`cargo +nightly fuzz run
//! dbus_value`, `… dbus_message`), which the D-Bus layer's stable tests
//! (`aggregator/bus/tests/fuzz_seeds.rs`) include and run over seed inputs: the very same code
//! on both toolchains. Each takes any bytes, must not panic, and checks that what it got back
//! makes sense; a failed check panics, which the fuzzer reports as a crash.

use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::{Value as Wire, LE};

use venus_bus::variant::{to_wire, Field};
use venus_bus::wire;

/// One D-Bus variant (`v`, little-endian D-Bus encoding) from any bytes, decoded as every
/// value we read from another service is. `None` when the bytes are no variant.
///
/// Checks: the decoded field describes itself, and what the simulator keeps of it decodes
/// back to the same field (a number stays that number, a text that text, anything else turns
/// invalid).
pub fn dbus_value(bytes: &[u8]) -> Option<Field> {
    let data = Data::new(bytes, Context::new_dbus(LE, 0));
    let (wire, _used): (Wire<'_>, usize) = data.deserialize().ok()?;
    let field = Field::from_wire(&wire);
    if let Ok(owned) = wire.try_to_owned() {
        let again = Field::from_owned(&owned);
        assert!(same(&again, &field), "owned {again:?}, borrowed {field:?}");
    }
    assert!(!field.kind().is_empty());
    if field.integer().is_some() {
        let v = field.number().expect("an integer is a number");
        assert!(v.is_finite() && v.fract() == 0.0, "{v} read as an integer");
    }
    let kept = Field::from_wire(&to_wire(&field.to_value()));
    let expected = match &field {
        Field::Other(_) => &Field::Invalid,
        other => other,
    };
    assert!(same(&kept, expected), "{field:?} came back as {kept:?}");
    Some(field)
}

/// A message of the monitor's value connection (`venus_bus::wire`) from any bytes: framed,
/// parsed, its body read as `PropertiesChanged` and as `ItemsChanged`; and the bytes read as
/// one variant by that decoder and by zvariant's, which must agree whenever both accept them.
/// Each accepts some bytes the other refuses: the value connection a boolean other than 0 or
/// 1, zvariant a string at the very end without its terminating nul.
pub fn dbus_message(bytes: &[u8]) {
    if let Ok(Some(len)) = wire::frame_len(bytes) {
        if len <= bytes.len() {
            if let Ok(msg) = wire::parse(&bytes[..len]) {
                let _ = msg.body.dict_value("Value");
                let _ = msg.body.items(|_| true, |_, _| {});
            }
        }
    }
    let body = wire::Body::new(bytes, false);
    let _ = body.dict_value("Value");
    let _ = body.items(|_| true, |_, _| {});
    let ours = body.variant();
    let data = Data::new(bytes, Context::new_dbus(LE, 0));
    if let Ok((value, _used)) = data.deserialize::<Wire<'_>>() {
        let theirs = Field::from_wire(&value);
        if let Ok(ours) = ours {
            assert!(same(&ours, &theirs), "ours {ours:?}, zvariant {theirs:?}");
        }
    }
}

/// Equal, with NaN equal to NaN.
pub fn same(a: &Field, b: &Field) -> bool {
    match (a, b) {
        (Field::Number(x), Field::Number(y)) => x == y || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}
