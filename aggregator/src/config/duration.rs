//! Durations as `config.yaml` and the scenario files write them: `500ms`, `60s`, `5m`, `1h`,
//! `1d` or a plain number of seconds; never a panic on a number beyond `Duration`'s range.

use std::time::Duration;

use serde::Deserializer;

use crate::error::Error;

/// A duration as `500ms`, `60s`, `5m`, `1h` or a plain number of seconds (`config.yaml`'s and
/// the scenario files', `deserialize_with`).
pub fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    // A visitor, not an untagged enum: the enum buffers the value, and an error raised after
    // that carries the position of the enclosing map instead of the value's.
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as 500ms, 60s, 5m or 1h")
        }
        fn visit_f64<E: serde::de::Error>(self, seconds: f64) -> Result<Duration, E> {
            // Not `from_secs_f64`: it panics on a number beyond `Duration`'s range (`1e30`).
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| E::custom(format!("`{seconds}` is not a duration")))
        }
        fn visit_i64<E: serde::de::Error>(self, seconds: i64) -> Result<Duration, E> {
            self.visit_f64(seconds as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, seconds: u64) -> Result<Duration, E> {
            self.visit_f64(seconds as f64)
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_duration(text).map_err(E::custom)
        }
    }
    de.deserialize_any(Visitor)
}

/// A duration as written in `config.yaml` (`500ms`, `60s`, `5m`, `1h`, a plain number of
/// seconds).
pub fn parse_duration(text: &str) -> Result<Duration, Error> {
    let seconds = parse_seconds(text)?;
    Duration::try_from_secs_f64(seconds).map_err(|_| Error::Duration {
        text: text.to_string(),
        hint: false,
    })
}

fn parse_seconds(text: &str) -> Result<f64, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let factor = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    match number.trim().parse::<f64>() {
        Ok(n) if factor.is_finite() => Ok(n * factor),
        _ => Err(Error::Duration {
            text: text.to_string(),
            hint: true,
        }),
    }
}
