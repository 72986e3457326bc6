//! Parsing and checking a plugin's config section.
//!
//! The host keeps each plugin's section of `config.yaml` and hands it over as JSON text. A
//! plugin parses it into its own typed struct with [`parse_config`] (serde, with
//! `#[serde(deny_unknown_fields)]`) and checks values with the helpers here, so that every
//! error names the key: the host prefixes the section path and the line in `config.yaml`.
//! A config struct that implements [`PluginConfig`] does both in one call, [`parse_checked`].

use serde::de::DeserializeOwned;

/// Parses a JSON config section into `T`; errors name the key (`curve.voltages[2]: …`).
///
/// An empty text or `null` is read as an empty map, so a plugin whose keys all have defaults
/// accepts a missing section.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let json = match json.trim() {
        "" | "null" => "{}",
        text => text,
    };
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = strip_position(&err.inner().to_string());
        if path == "." || path.is_empty() {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// A plugin's config struct: deserialized from its section, then checked.
///
/// serde catches wrong types and unknown keys; [`PluginConfig::check`] catches values serde
/// accepts but the plugin cannot use (a negative current, voltages in the wrong order). Build
/// it with [`parse_checked`].
pub trait PluginConfig: DeserializeOwned {
    /// Ok, or every bad value, one per line, each naming its key; collect them with a
    /// [`Checker`]. The default accepts every value serde accepts.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }

    /// The config with every value the plugin derives from others filled in (a curve derived
    /// from voltages), for [`crate::PluginMod::resolve_config`]. The default changes nothing:
    /// serde's defaults are already filled in.
    fn resolved(self) -> Self {
        self
    }
}

/// Parses a config section with [`parse_config`], then runs [`PluginConfig::check`] on it.
pub fn parse_checked<T: PluginConfig>(json: &str) -> Result<T, String> {
    let config: T = parse_config(json)?;
    config.check()?;
    Ok(config)
}

/// serde_json appends "at line 1 column 42" of the JSON text, which means nothing to the user.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Collects config errors so a plugin reports all of them at once, one per line.
#[derive(Debug, Default)]
pub struct Checker {
    errors: Vec<String>,
}

impl Checker {
    /// An empty checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error for `key` when `ok` is false.
    pub fn require(&mut self, ok: bool, key: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.errors.push(format!("{key}: {}", message()));
        }
    }

    /// `value` must be finite and > 0.
    pub fn positive(&mut self, key: &str, value: f64) {
        self.require(value.is_finite() && value > 0.0, key, || {
            format!("must be a number above 0, found {value}")
        });
    }

    /// `value` must be finite and ≥ 0.
    pub fn non_negative(&mut self, key: &str, value: f64) {
        self.require(value.is_finite() && value >= 0.0, key, || {
            format!("must be a number of 0 or more, found {value}")
        });
    }

    /// `value` must lie in `[low, high]`.
    pub fn within(&mut self, key: &str, value: f64, low: f64, high: f64) {
        self.require(
            value.is_finite() && value >= low && value <= high,
            key,
            || format!("must be between {low} and {high}, found {value}"),
        );
    }

    /// `values` must have exactly `len` entries.
    pub fn length(&mut self, key: &str, values: &[f64], len: usize) {
        self.require(values.len() == len, key, || {
            format!("must have {len} values, found {}", values.len())
        });
    }

    /// A piecewise-linear curve: both lists of the same length, at least 2 points, voltages
    /// strictly ascending, factors finite and ≥ 0.
    pub fn curve(&mut self, key: &str, voltages: &[f64], factors: &[f64]) {
        self.require(voltages.len() == factors.len(), key, || {
            format!(
                "`voltages` has {} values and `factors` has {}; they must be of equal length",
                voltages.len(),
                factors.len()
            )
        });
        self.require(voltages.len() >= 2, &format!("{key}.voltages"), || {
            format!("needs at least 2 points, found {}", voltages.len())
        });
        self.require(
            voltages.windows(2).all(|w| w[0] < w[1]) && voltages.iter().all(|v| v.is_finite()),
            &format!("{key}.voltages"),
            || format!("must be strictly ascending, found {voltages:?}"),
        );
        self.require(
            factors.iter().all(|f| f.is_finite() && *f >= 0.0),
            &format!("{key}.factors"),
            || format!("must be numbers of 0 or more, found {factors:?}"),
        );
    }

    /// Ok, or every error joined by newlines.
    pub fn finish(self) -> Result<(), String> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        #[serde(default)]
        current_a: f64,
    }

    impl PluginConfig for Limit {
        fn check(&self) -> Result<(), String> {
            let mut checker = Checker::new();
            checker.positive("current_a", self.current_a);
            checker.finish()
        }
    }

    #[test]
    fn parse_checked_parses_then_checks() {
        let limit: Limit = parse_checked(r#"{"current_a": 5}"#).unwrap();
        assert_eq!(limit.current_a, 5.0);
        assert_eq!(
            parse_checked::<Limit>("").unwrap_err(),
            "current_a: must be a number above 0, found 0"
        );
        let err = parse_checked::<Limit>(r#"{"current": 5}"#).unwrap_err();
        assert!(err.starts_with("current: unknown field"), "{err}");
    }
}
