//! Values on the wire (VENUS-DBUS.md §1.4): what we send and how we read what others send.
//!
//! Sending: a float is `d`, an integer `i` (`x` beyond 32 bits), a text `s`, invalid an empty
//! `ai`, always directly inside the variant. Reading: every integer width, `d` and `b` are
//! numbers; any empty array is invalid; anything else is a value of the wrong type.

use zbus::zvariant::{OwnedValue, Value as Wire};

use aggregator_core::value::Value;

/// The variant for a published value.
pub fn to_wire(value: &Value) -> Wire<'static> {
    match value {
        Value::Invalid => Wire::from(Vec::<i32>::new()),
        Value::Float(v) => Wire::F64(*v),
        Value::Int(v) => match i32::try_from(*v) {
            Ok(small) => Wire::I32(small),
            Err(_) => Wire::I64(*v),
        },
        Value::Text(t) => Wire::from(t.clone()),
    }
}

/// A value read from another service.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    /// The Venus invalid value (any empty array).
    Invalid,
    /// Any number (`y n q i u x t d b`).
    Number(f64),
    /// A text.
    Text(String),
    /// Something else (a non-empty array, a dict, a structure): wrong for every path we read.
    Other(&'static str),
}

impl Field {
    /// Decodes one variant.
    pub fn from_wire(value: &Wire<'_>) -> Field {
        match value {
            Wire::U8(v) => Field::Number(f64::from(*v)),
            Wire::Bool(v) => Field::Number(if *v { 1.0 } else { 0.0 }),
            Wire::I16(v) => Field::Number(f64::from(*v)),
            Wire::U16(v) => Field::Number(f64::from(*v)),
            Wire::I32(v) => Field::Number(f64::from(*v)),
            Wire::U32(v) => Field::Number(f64::from(*v)),
            Wire::I64(v) => Field::Number(*v as f64),
            Wire::U64(v) => Field::Number(*v as f64),
            Wire::F64(v) => Field::Number(*v),
            Wire::Str(s) => Field::Text(s.as_str().to_string()),
            Wire::Array(a) if a.is_empty() => Field::Invalid,
            Wire::Array(_) => Field::Other("a non-empty array"),
            Wire::Value(inner) => Field::from_wire(inner),
            Wire::Dict(_) => Field::Other("a dict"),
            Wire::Structure(_) => Field::Other("a structure"),
            _ => Field::Other("an unexpected type"),
        }
    }

    /// Decodes an owned variant.
    pub fn from_owned(value: &OwnedValue) -> Field {
        Field::from_wire(value)
    }

    /// The number, if this is one.
    pub fn number(&self) -> Option<f64> {
        match self {
            Field::Number(v) => Some(*v),
            _ => None,
        }
    }

    /// The number as an integer, if it is a whole finite number.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Field::Number(v) if v.is_finite() && v.fract() == 0.0 => Some(*v as i64),
            _ => None,
        }
    }

    /// The text, if this is one.
    pub fn text(&self) -> Option<&str> {
        match self {
            Field::Text(t) => Some(t),
            _ => None,
        }
    }

    /// A short description of a value of the wrong type, for log lines.
    pub fn kind(&self) -> &'static str {
        match self {
            Field::Invalid => "invalid",
            Field::Number(_) => "a number",
            Field::Text(_) => "a text",
            Field::Other(what) => what,
        }
    }

    /// As a published value (used by the simulator, which keeps what it is sent).
    pub fn to_value(&self) -> Value {
        match self {
            Field::Number(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => Value::Int(*v as i64),
            Field::Number(v) => Value::Float(*v),
            Field::Text(t) => Value::Text(t.clone()),
            Field::Invalid | Field::Other(_) => Value::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{Array, Signature};

    #[test]
    fn invalid_is_an_empty_int32_array_directly_in_the_variant() {
        let wire = to_wire(&Value::Invalid);
        assert_eq!(wire.value_signature().to_string(), "ai");
        match wire {
            Wire::Array(a) => assert!(a.is_empty()),
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn numbers_keep_their_d_i_x_types() {
        assert_eq!(to_wire(&Value::Float(52.0)), Wire::F64(52.0));
        assert_eq!(to_wire(&Value::Int(512)), Wire::I32(512));
        assert_eq!(to_wire(&Value::Int(1 << 40)), Wire::I64(1 << 40));
        assert_eq!(to_wire(&Value::Text("x".into())).value_signature(), "s");
    }

    #[test]
    fn every_numeric_type_reads_as_a_number() {
        for wire in [
            Wire::U8(3),
            Wire::I16(3),
            Wire::U16(3),
            Wire::I32(3),
            Wire::U32(3),
            Wire::I64(3),
            Wire::U64(3),
            Wire::F64(3.0),
        ] {
            assert_eq!(Field::from_wire(&wire), Field::Number(3.0), "{wire:?}");
        }
        assert_eq!(Field::from_wire(&Wire::Bool(true)), Field::Number(1.0));
    }

    #[test]
    fn any_empty_array_is_invalid_and_other_shapes_are_named() {
        let empty_u = Wire::Array(Array::new(&Signature::U32));
        assert_eq!(Field::from_wire(&empty_u), Field::Invalid);
        assert_eq!(Field::from_wire(&to_wire(&Value::Invalid)), Field::Invalid);
        let list = Wire::from(vec![1i32, 2]);
        assert_eq!(Field::from_wire(&list).kind(), "a non-empty array");
        assert_eq!(Field::from_wire(&Wire::from("52")).number(), None);
        assert_eq!(Field::Number(2.5).integer(), None);
        assert_eq!(Field::Number(2.0).integer(), Some(2));
    }
}
