//! What a published D-Bus path holds, and how it reads as text (docs/venus.md §2,
//! docs/service.md §5).
//!
//! Venus consumers show the `Text` of an item verbatim, so the texts follow the program this
//! replaces: `52.10V` where a path has a format, Python's `str()` where it has none (`55.0`,
//! `1e+16`), `0x%X` for `/ProductId` and `---` for an invalid value. Kept free of any D-Bus crate:
//! the bus module turns a [`Value`] into a variant.

use crate::decimal::{push_digits, push_fixed, Shortest};

/// A published value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Invalid: an empty `ai` array on the wire, `---` as text.
    Invalid,
    /// A measured quantity (`d`).
    Float(f64),
    /// An enum, flag, count or instance (`i`, or `x` beyond 32 bits).
    Int(i64),
    /// A text (`s`).
    Text(String),
}

impl Value {
    /// `Float` for a finite number, `Invalid` for `None`, NaN or infinity.
    pub fn float(value: Option<f64>) -> Self {
        match value {
            Some(v) if v.is_finite() => Value::Float(v),
            _ => Value::Invalid,
        }
    }

    /// `Int` for `Some`, `Invalid` for `None`.
    pub fn int(value: Option<i64>) -> Self {
        value.map_or(Value::Invalid, Value::Int)
    }

    /// `Text` for `Some`, `Invalid` for `None`.
    pub fn text(value: Option<&str>) -> Self {
        value.map_or(Value::Invalid, |t| Value::Text(t.to_string()))
    }

    /// Python equality, which decides whether a change is published: `1 == 1.0`.
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Float(a), Value::Int(b)) | (Value::Int(b), Value::Float(a)) => *a == *b as f64,
            _ => self == other,
        }
    }
}

/// How a path's value reads as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// Python `str(value)`.
    Plain,
    /// Fixed decimals and a unit: `Fixed(2, "V")` gives `52.10V`.
    Fixed(usize, &'static str),
    /// `0x%X`, for `/ProductId`.
    Hex,
}

impl TextFormat {
    /// The text of `value`.
    pub fn render(self, value: &Value) -> String {
        match (self, value) {
            (_, Value::Invalid) => "---".to_string(),
            (TextFormat::Fixed(decimals, unit), Value::Float(v)) => fixed(*v, decimals, unit),
            (TextFormat::Fixed(decimals, unit), Value::Int(v)) => fixed(*v as f64, decimals, unit),
            (TextFormat::Hex, Value::Int(v)) => format!("0x{v:X}"),
            (_, Value::Float(v)) => python_str(*v),
            (_, Value::Int(v)) => v.to_string(),
            (_, Value::Text(t)) => t.clone(),
        }
    }
}

/// `v` with `decimals` decimals and `unit` after them: `52.10V`.
fn fixed(v: f64, decimals: usize, unit: &str) -> String {
    let mut out = String::with_capacity(24 + unit.len());
    push_fixed(&mut out, v, decimals);
    out.push_str(unit);
    out
}

/// Python's `str(float)`: the shortest text that reads back as the same number, with `.0` on
/// whole numbers and exponent form below 1e-4 and from 1e16 (`1e-05`, `1.5e+16`).
pub fn python_str(v: f64) -> String {
    let Some(shortest) = Shortest::of(v) else {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    };
    let digits = shortest.digits();
    let exponent = shortest.exponent;
    // The digits are `first` (one) then `fraction`.
    let (first, fraction) = digits.split_at(1);
    let mut out = String::with_capacity(digits.len() + 24);
    if shortest.negative {
        out.push('-');
    }
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
            out.push_str(digits);
        } else if point as usize >= digits.len() {
            out.push_str(digits);
            out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(point as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str(first);
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(fraction);
        }
        out.push_str(if exponent < 0 { "e-" } else { "e+" });
        // Two digits at least: `1e-05`, `1e+300`.
        push_digits(&mut out, u64::from(exponent.unsigned_abs()), 2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_str_matches_python() {
        // Each pair was checked against CPython 3.11's str().
        for (v, text) in [
            (55.0, "55.0"),
            (53.900000000000006, "53.900000000000006"),
            (0.1, "0.1"),
            (-4.4, "-4.4"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (0.000015, "1.5e-05"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (123456.789, "123456.789"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e300, "1e+300"),
            (-1149636667324797.2, "-1149636667324797.2"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(python_str(v), text, "{v:?}");
        }
    }

    #[test]
    fn python_str_reads_back_as_the_same_number_in_python_form() {
        // Numbers of every size, from a fixed sequence of bit patterns.
        let mut bits = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            let v = f64::from_bits(bits);
            if !v.is_finite() {
                continue;
            }
            let text = python_str(v);
            assert_eq!(text.parse::<f64>(), Ok(v), "{text} for {v:e}");
            let magnitude = v.abs();
            if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
                let (mantissa, exponent) = text.split_once('e').expect(&text);
                assert!(
                    exponent.len() >= 3 && exponent.starts_with(['+', '-']),
                    "{text}"
                );
                assert!(!mantissa.ends_with(".0"), "{text}");
            } else {
                assert!(text.contains('.') && !text.contains('e'), "{text}");
            }
            // The digits of the shortest form that reads back, as Rust's `{:e}` finds them.
            let significant = |t: &str| -> String {
                let mantissa = t.split('e').next().unwrap_or(t);
                let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
                digits
                    .trim_start_matches('0')
                    .trim_end_matches('0')
                    .to_string()
            };
            // (Or, on an exact tie between two, the even one, as CPython takes it.)
            let theirs = significant(&format!("{v:e}"));
            assert!(
                crate::decimal::tests::same_digits_or_even_tie(&significant(&text), &theirs),
                "{text} against {theirs}"
            );
        }
    }

    #[test]
    fn texts_as_the_original_publishes_them() {
        assert_eq!(
            TextFormat::Fixed(2, "V").render(&Value::Float(52.1)),
            "52.10V"
        );
        assert_eq!(
            TextFormat::Fixed(2, "A").render(&Value::Float(-0.125)),
            "-0.12A"
        );
        assert_eq!(TextFormat::Fixed(0, "W").render(&Value::Float(2.5)), "2W");
        assert_eq!(TextFormat::Fixed(1, "A").render(&Value::Int(200)), "200.0A");
        assert_eq!(TextFormat::Hex.render(&Value::Int(0xBA44)), "0xBA44");
        assert_eq!(TextFormat::Plain.render(&Value::Float(78.0)), "78.0");
        assert_eq!(TextFormat::Plain.render(&Value::Int(1)), "1");
        assert_eq!(
            TextFormat::Plain.render(&Value::Text("Bat1_C7".into())),
            "Bat1_C7"
        );
        assert_eq!(TextFormat::Fixed(2, "V").render(&Value::Invalid), "---");
    }

    #[test]
    fn change_detection_uses_python_equality() {
        assert!(Value::Int(200).same_as(&Value::Float(200.0)));
        assert!(!Value::Int(200).same_as(&Value::Float(200.5)));
        assert!(!Value::Invalid.same_as(&Value::Int(0)));
        assert_eq!(Value::float(Some(f64::NAN)), Value::Invalid);
        assert_eq!(Value::int(None), Value::Invalid);
    }
}
