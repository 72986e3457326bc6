//! Values on the wire (docs/venus.md §2), the one place that decides how: [`Encoded`] for
//! what we send, [`Held`] and [`Field::read`] for what we read. zbus's values (here) and the
//! value connection's hand-written encoder and decoder ([`wire`](crate::wire)) both go
//! through them, so the two cannot drift apart.
//!
//! Sending: a float is `d`, an integer `i` (`x` beyond 32 bits), a text `s` without NUL bytes,
//! invalid an empty `ai`, always directly inside the variant. Reading: every integer width, `d`
//! and `b` are numbers; any empty array is invalid; anything else is a value of the wrong type.

use std::borrow::Cow;

use zbus::zvariant::{OwnedValue, Value as Wire};

use aggregator_core::value::Value;

/// A published value as it goes on the wire.
#[derive(Clone, Debug, PartialEq)]
pub enum Encoded<'a> {
    /// `d`.
    Double(f64),
    /// `i`: an integer that fits 32 bits.
    Int32(i32),
    /// `x`: an integer beyond 32 bits.
    Int64(i64),
    /// `s`, as [`dbus_string`] makes it.
    Str(Cow<'a, str>),
    /// The Venus invalid value: an empty `ai`.
    Invalid,
}

impl<'a> Encoded<'a> {
    /// How `value` is sent.
    #[inline]
    pub fn of(value: &'a Value) -> Encoded<'a> {
        match value {
            Value::Invalid => Encoded::Invalid,
            Value::Float(v) => Encoded::Double(*v),
            Value::Int(v) => match i32::try_from(*v) {
                Ok(small) => Encoded::Int32(small),
                Err(_) => Encoded::Int64(*v),
            },
            Value::Text(t) => Encoded::Str(dbus_string(t)),
        }
    }

    /// The variant's signature.
    pub fn signature(&self) -> &'static str {
        match self {
            Encoded::Double(_) => "d",
            Encoded::Int32(_) => "i",
            Encoded::Int64(_) => "x",
            Encoded::Str(_) => "s",
            Encoded::Invalid => "ai",
        }
    }
}

/// A text as a D-Bus string may hold it: without NUL bytes (the bus drops a connection that
/// sends one), borrowed when there is none.
#[inline]
pub fn dbus_string(text: &str) -> Cow<'_, str> {
    if text.as_bytes().contains(&0) {
        Cow::Owned(text.replace('\0', ""))
    } else {
        Cow::Borrowed(text)
    }
}

/// The variant for a published value.
pub fn to_wire(value: &Value) -> Wire<'static> {
    match Encoded::of(value) {
        Encoded::Invalid => Wire::from(Vec::<i32>::new()),
        Encoded::Double(v) => Wire::F64(v),
        Encoded::Int32(v) => Wire::I32(v),
        Encoded::Int64(v) => Wire::I64(v),
        Encoded::Str(t) => Wire::from(t.into_owned()),
    }
}

/// A text (the `Text` of an item) as a string variant.
pub fn text_to_wire(text: &str) -> Wire<'static> {
    Wire::from(dbus_string(text).into_owned())
}

/// What a received variant holds, as a decoder sees it; [`Field::read`] applies the rules.
#[derive(Clone, Copy, Debug)]
pub enum Held<'a> {
    /// `b`.
    Bool(bool),
    /// `y`.
    U8(u8),
    /// `n`.
    I16(i16),
    /// `q`.
    U16(u16),
    /// `i`.
    I32(i32),
    /// `u`.
    U32(u32),
    /// `x`.
    I64(i64),
    /// `t`.
    U64(u64),
    /// `d`.
    F64(f64),
    /// `s`.
    Str(&'a str),
    /// An array that is not a dict.
    Array {
        /// Whether it has no element.
        empty: bool,
    },
    /// `a{…}`.
    Dict,
    /// `(…)`.
    Structure,
    /// Any other type (`o`, `g`, `h`).
    Other,
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
    /// The rules of reading: what a variant holding `held` means for a path we read.
    #[inline]
    pub fn read(held: Held<'_>) -> Field {
        match held {
            Held::Bool(v) => Field::Number(if v { 1.0 } else { 0.0 }),
            Held::U8(v) => Field::Number(f64::from(v)),
            Held::I16(v) => Field::Number(f64::from(v)),
            Held::U16(v) => Field::Number(f64::from(v)),
            Held::I32(v) => Field::Number(f64::from(v)),
            Held::U32(v) => Field::Number(f64::from(v)),
            Held::I64(v) => Field::Number(v as f64),
            Held::U64(v) => Field::Number(v as f64),
            Held::F64(v) => Field::Number(v),
            Held::Str(s) => Field::Text(s.to_string()),
            Held::Array { empty: true } => Field::Invalid,
            Held::Array { empty: false } => Field::Other("a non-empty array"),
            Held::Dict => Field::Other("a dict"),
            Held::Structure => Field::Other("a structure"),
            Held::Other => Field::Other("an unexpected type"),
        }
    }

    /// Decodes one zbus variant.
    pub fn from_wire(value: &Wire<'_>) -> Field {
        Field::read(match value {
            Wire::U8(v) => Held::U8(*v),
            Wire::Bool(v) => Held::Bool(*v),
            Wire::I16(v) => Held::I16(*v),
            Wire::U16(v) => Held::U16(*v),
            Wire::I32(v) => Held::I32(*v),
            Wire::U32(v) => Held::U32(*v),
            Wire::I64(v) => Held::I64(*v),
            Wire::U64(v) => Held::U64(*v),
            Wire::F64(v) => Held::F64(*v),
            Wire::Str(s) => Held::Str(s.as_str()),
            Wire::Array(a) => Held::Array {
                empty: a.is_empty(),
            },
            Wire::Value(inner) => return Field::from_wire(inner),
            Wire::Dict(_) => Held::Dict,
            Wire::Structure(_) => Held::Structure,
            _ => Held::Other,
        })
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
        assert_eq!(
            to_wire(&Value::Int(i64::from(i32::MIN))),
            Wire::I32(i32::MIN)
        );
        assert_eq!(
            to_wire(&Value::Int(i64::from(i32::MAX) + 1)),
            Wire::I64(1 << 31)
        );
    }

    #[test]
    fn nul_bytes_are_left_out_of_every_string() {
        assert_eq!(
            to_wire(&Value::Text("Bank\0 A\0".into())),
            Wire::from("Bank A")
        );
        assert_eq!(text_to_wire("5\0V"), Wire::from("5V"));
        assert!(matches!(dbus_string("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn the_signature_is_the_one_zbus_gives_the_variant() {
        for value in [
            Value::Invalid,
            Value::Float(1.5),
            Value::Int(7),
            Value::Int(1 << 40),
            Value::Text("t".into()),
        ] {
            let signature = Encoded::of(&value).signature();
            assert_eq!(to_wire(&value).value_signature().to_string(), signature);
        }
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
