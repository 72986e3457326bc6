//! The bodies of the D-Bus fuzz targets (`fuzz/`, nightly) over seed inputs, on the stable
//! toolchain: D-Bus variants whole, cut short and made by hand, and messages that once broke
//! the value connection's reader. None may panic, and each gives a sensible result.

use venus_bus::variant::Field;
use zbus::zvariant::serialized::Context;
use zbus::zvariant::{to_bytes, Array, Dict, Signature, StructureBuilder, Value, LE};

#[path = "../../../fuzz/bodies/dbus.rs"]
mod fuzzing;

/// A value as another service sends it: the body of a `v`, little-endian.
fn encoded(value: &Value<'_>) -> Vec<u8> {
    to_bytes(Context::new_dbus(LE, 0), value)
        .expect("encode")
        .bytes()
        .to_vec()
}

fn sample_values() -> Vec<(Value<'static>, Field)> {
    let mut dict = Dict::new(&Signature::Str, &Signature::Variant);
    dict.append(Value::from("a"), Value::Value(Box::new(Value::I32(1))))
        .expect("dict entry");
    vec![
        (Value::F64(52.1), Field::Number(52.1)),
        (Value::F64(f64::NAN), Field::Number(f64::NAN)),
        (
            Value::F64(f64::NEG_INFINITY),
            Field::Number(f64::NEG_INFINITY),
        ),
        (Value::I32(-3), Field::Number(-3.0)),
        (Value::U8(255), Field::Number(255.0)),
        (Value::Bool(true), Field::Number(1.0)),
        (Value::I16(-7), Field::Number(-7.0)),
        (Value::U16(7), Field::Number(7.0)),
        (Value::U32(u32::MAX), Field::Number(4294967295.0)),
        (Value::I64(i64::MIN), Field::Number(i64::MIN as f64)),
        (Value::U64(u64::MAX), Field::Number(u64::MAX as f64)),
        (Value::from("Bat1_C7"), Field::Text("Bat1_C7".into())),
        (Value::from(""), Field::Text(String::new())),
        (Value::from(Vec::<i32>::new()), Field::Invalid),
        (Value::Array(Array::new(&Signature::Str)), Field::Invalid),
        (
            Value::from(vec![1i32, 2]),
            Field::Other("a non-empty array"),
        ),
        (Value::Dict(dict), Field::Other("a dict")),
        (
            Value::Structure(
                StructureBuilder::new()
                    .add_field(1u8)
                    .add_field("x")
                    .build()
                    .unwrap(),
            ),
            Field::Other("a structure"),
        ),
        (Value::Value(Box::new(Value::F64(2.5))), Field::Number(2.5)),
        (
            Value::from(zbus::zvariant::ObjectPath::from_static_str_unchecked(
                "/Soc",
            )),
            Field::Other("an unexpected type"),
        ),
    ]
}

#[test]
fn variants_decode_to_the_field_they_hold() {
    for (value, field) in sample_values() {
        let bytes = encoded(&value);
        let decoded = fuzzing::dbus_value(&bytes).unwrap_or_else(|| panic!("{value:?}"));
        assert!(fuzzing::same(&decoded, &field), "{value:?}: {decoded:?}");
    }
}

#[test]
fn cut_variants_decode_to_nothing_or_a_field() {
    for (value, _) in sample_values() {
        let bytes = encoded(&value);
        for cut in 0..bytes.len() {
            // A cut in the middle of a string or array is no variant; one that still holds a
            // whole variant is decoded, and the body checks the field.
            let _ = fuzzing::dbus_value(&bytes[..cut]);
        }
        assert_eq!(fuzzing::dbus_value(&bytes[..0]), None);
    }
}

#[test]
fn hand_made_variants_give_a_result() {
    let mut double = vec![1, b'd', 0, 0, 0, 0, 0, 0];
    double.extend_from_slice(&48.5f64.to_le_bytes());
    assert_eq!(fuzzing::dbus_value(&double), Some(Field::Number(48.5)));
    // `ai` holding nothing: the Venus invalid value.
    assert_eq!(
        fuzzing::dbus_value(&[2, b'a', b'i', 0, 0, 0, 0, 0]),
        Some(Field::Invalid)
    );
    let mut deep = Vec::new();
    for _ in 0..2000 {
        deep.extend_from_slice(&[1, b'v', 0]);
    }
    for seed in [
        vec![],
        vec![0],
        vec![1],
        vec![1, b'z', 0],
        vec![200, b'a'],
        vec![1, b'h', 0, 0, 0, 0, 0, 0],
        vec![1, b's', 0, 0, 0xff, 0xff, 0xff, 0xff],
        vec![1, b's', 0, 0, 2, 0, 0, 0, 0xff, 0xfe, 0],
        vec![2, b'a', b'y', 0, 0xff, 0xff, 0xff, 0x7f],
        vec![4, b'a', b'{', b's', b'}', 0],
        vec![5, b'(', b'(', b')', b')', 0],
        vec![1, b'd', 0, 0, 0, 0, 0],
        deep,
    ] {
        let _ = fuzzing::dbus_value(&seed);
    }
}

#[test]
fn the_value_connection_reads_variants_as_zvariant_does() {
    let mut seeds: Vec<Vec<u8>> = sample_values().iter().map(|(v, _)| encoded(v)).collect();
    let mut deep = Vec::new();
    for _ in 0..2000 {
        deep.extend_from_slice(&[1, b'v', 0]);
    }
    seeds.push(deep);
    seeds.push(vec![1, b'b', 0, 0, 7, 0, 0, 0]);
    seeds.push(vec![2, b'a', b'{', 0]);
    // A whole message: the fixed header, then garbage of every length.
    for len in 0..64 {
        let mut msg = vec![b'l', 4, 0, 1, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
        msg.extend((0..len).map(|k| (k * 37) as u8));
        seeds.push(msg);
    }
    for seed in &seeds {
        for cut in 0..=seed.len() {
            fuzzing::dbus_message(&seed[..cut]);
        }
    }
    // Whole variants: both decoders read them, to the same field.
    for (value, field) in sample_values() {
        let bytes = encoded(&value);
        let ours = venus_bus::wire::Body::new(&bytes, false).variant();
        assert!(
            ours.as_ref().is_ok_and(|f| fuzzing::same(f, &field)),
            "{value:?}: {ours:?}"
        );
    }
}

/// Inputs that once broke the value connection's reader, kept as files for `cargo fuzz` too.
const MESSAGE_SEEDS: [(&str, &[u8]); 3] = [
    (
        "unknown-header-field-open-structure",
        include_bytes!("../../../fuzz/seeds/dbus_message/unknown-header-field-open-structure"),
    ),
    (
        "unknown-header-field-open-dict-entry",
        include_bytes!("../../../fuzz/seeds/dbus_message/unknown-header-field-open-dict-entry"),
    ),
    (
        "unknown-header-field-two-types",
        include_bytes!("../../../fuzz/seeds/dbus_message/unknown-header-field-two-types"),
    ),
];

#[test]
fn an_unknown_header_field_with_a_broken_signature_is_refused() {
    for (name, seed) in MESSAGE_SEEDS {
        // Whole, the message is framed and refused; cut anywhere, it is never a panic.
        assert_eq!(
            venus_bus::wire::frame_len(seed),
            Ok(Some(seed.len())),
            "{name}"
        );
        assert!(venus_bus::wire::parse(seed).is_err(), "{name}");
        for cut in 0..=seed.len() {
            fuzzing::dbus_message(&seed[..cut]);
        }
    }
}
