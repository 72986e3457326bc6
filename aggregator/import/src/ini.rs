//! The 4.x `config.ini`, read as the 4.x program reads it: `config.default.ini` first, then the
//! user's file over it, both with a `[DEFAULT]` section only; an option the defaults file does
//! not have is an error, as there. Without a defaults file beside the user's, the 4.x defaults
//! (docs/commands.md §3) stand in for it.
//!
//! Values are typed by the 4.x parsers: a bool is true only for the text `true` (any case), an
//! empty int or float is 0, a list is split over lines and commas with `;` comments cut, and
//! `USE_SMARTSHUNTS` is a bool or a list of VRM instances and names.

use std::path::Path;

use super::{ImportError, OldSettings, Value};

/// How the 4.x program parses an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
    List,
    Shunts,
}

/// The options of the 4.x defaults file, their parsers and default texts.
const DEFAULTS: &[(&str, Kind, &str)] = &[
    ("NR_OF_BATTERIES", Kind::Int, "-1"),
    ("NR_OF_CELLS_PER_BATTERY", Kind::Int, "-1"),
    ("NR_OF_MPPTS", Kind::Int, "-1"),
    (
        "BATTERY_SERVICE_NAME",
        Kind::Text,
        "com.victronenergy.battery",
    ),
    (
        "DCLOAD_SERVICE_NAME",
        Kind::Text,
        "com.victronenergy.dcload",
    ),
    ("BATTERY_PRODUCT_NAME_PATH", Kind::Text, "/ProductName"),
    ("BATTERY_PRODUCT_NAME", Kind::Text, "SerialBattery"),
    ("BATTERY_INSTANCE_NAME_PATH", Kind::Text, "/Serial"),
    ("MULTI_KEYWORD", Kind::Text, "com.victronenergy.vebus"),
    ("MPPT_KEYWORD", Kind::Text, "com.victronenergy.solarcharger"),
    ("SMARTSHUNT_NAME_KEYWORD", Kind::Text, "SmartShunt"),
    ("SMARTSHUNT_INSTANCE_NAME_PATH", Kind::Text, "/CustomName"),
    ("SEARCH_TRIALS", Kind::Int, "10"),
    ("READ_TRIALS", Kind::Int, "10"),
    ("UPDATE_INTERVAL_FIND_DEVICES", Kind::Int, "1"),
    ("UPDATE_INTERVAL_DATA", Kind::Int, "1"),
    ("TIME_BEFORE_RESTART", Kind::Int, "15"),
    ("CURRENT_FROM_VICTRON", Kind::Bool, "False"),
    ("CAN_batteries", Kind::Bool, "False"),
    ("USE_SMARTSHUNTS", Kind::Shunts, "False"),
    ("INVERT_SMARTSHUNTS", Kind::Bool, "False"),
    ("SMARTSHUNT_AS_BATTERY_CURRENT", Kind::Bool, "False"),
    ("IGNORE_SMARTSHUNT_ABSENCE", Kind::Bool, "False"),
    ("OWN_SOC", Kind::Bool, "False"),
    ("ZERO_SOC", Kind::Bool, "False"),
    ("MAX_CELL_VOLTAGE_SOC_FULL", Kind::Float, "3.45"),
    ("MIN_CELL_VOLTAGE_SOC_EMPTY", Kind::Float, "2.90"),
    ("CHARGE_SAVE_PRECISION", Kind::Float, "0.0025"),
    ("OWN_CHARGE_PARAMETERS", Kind::Bool, "False"),
    ("BALANCING_VOLTAGE", Kind::Float, "3.40"),
    ("BALANCING_REPETITION", Kind::Int, "10"),
    (
        "CHARGE_VOLTAGE_LIST",
        Kind::List,
        "3.55, 3.50, 3.50, 3.45, 3.40, 3.40, 3.40, 3.40, 3.45, 3.50, 3.50, 3.55",
    ),
    ("MAX_CELL_VOLTAGE", Kind::Float, "3.45"),
    ("MIN_CELL_VOLTAGE", Kind::Float, "2.90"),
    ("MIN_CELL_HYSTERESIS", Kind::Float, "0.1"),
    ("CELL_DIFF_MAX", Kind::Float, "0.025"),
    ("BATTERY_EFFICIENCY", Kind::Float, "0.98"),
    ("MAX_CHARGE_CURRENT", Kind::Int, "200"),
    ("MAX_DISCHARGE_CURRENT", Kind::Int, "200"),
    ("CELL_CHARGE_LIMITING_VOLTAGE", Kind::List, ""),
    (
        "CELL_CHARGE_LIMITED_CURRENT",
        Kind::List,
        "0.2, 1, 1, 0.1, 0",
    ),
    ("CELL_DISCHARGE_LIMITING_VOLTAGE", Kind::List, ""),
    ("CELL_DISCHARGE_LIMITED_CURRENT", Kind::List, "0, 0.05, 1"),
    ("KEEP_MAX_CVL", Kind::Bool, "False"),
    ("SEND_CELL_VOLTAGES", Kind::Int, "0"),
    ("LOGGING", Kind::Text, "INFO"),
    ("LOG_PERIOD", Kind::Int, "300"),
];

/// The name of the defaults file the 4.x program reads before the user's.
pub const DEFAULTS_FILE: &str = "config.default.ini";

/// One `key = value` of an ini file.
struct Option_ {
    name: String,
    text: String,
    line: usize,
}

/// Reads `file` (text `text`) over the `config.default.ini` beside it, or over the built-in
/// 4.x defaults when there is none.
pub fn read(file: &Path, text: &str) -> Result<OldSettings, ImportError> {
    let mut settings = OldSettings::new(file);
    settings.format = super::Format::ConfigIni;
    let defaults_path = file.with_file_name(DEFAULTS_FILE);
    let reading_defaults_itself = file.file_name() == defaults_path.file_name();
    let defaults: Vec<(String, Kind, String, usize)> =
        if defaults_path.exists() && !reading_defaults_itself {
            let defaults_text = std::fs::read_to_string(&defaults_path)
                .map_err(|e| ImportError::io(&defaults_path, "cannot read", e))?;
            settings.defaults_file = Some(defaults_path.clone());
            options(&defaults_path, &defaults_text)?
                .into_iter()
                .map(|o| {
                    let kind = kind_of(&o.name).unwrap_or(Kind::Text);
                    (o.name, kind, o.text, o.line)
                })
                .collect()
        } else {
            DEFAULTS
                .iter()
                .map(|(name, kind, text)| (name.to_string(), *kind, text.to_string(), 0))
                .collect()
        };
    let defaults_file = settings.defaults_file.clone();
    for (name, kind, text, line) in &defaults {
        let at = defaults_file.as_deref().unwrap_or(file);
        let value = parse(at, *line, name, *kind, text)?;
        settings.insert(name, value, *line, true);
    }
    for option in options(file, text)? {
        let Some((_, kind, _, _)) = defaults.iter().find(|d| d.0 == option.name) else {
            return Err(ImportError {
                file: file.to_path_buf(),
                line: Some(option.line),
                setting: Some(option.name.clone()),
                message: format!(
                    "unknown option (not in {}; the 4.x program refuses it too)",
                    defaults_file
                        .as_deref()
                        .map_or_else(|| "the 4.x defaults".into(), |f| f.display().to_string())
                ),
                source: None,
            });
        };
        let value = parse(file, option.line, &option.name, *kind, &option.text)?;
        settings.insert(&option.name, value, option.line, false);
    }
    Ok(settings)
}

fn kind_of(name: &str) -> Option<Kind> {
    DEFAULTS.iter().find(|d| d.0 == name).map(|d| d.1)
}

/// The options of the `[DEFAULT]` section, as configparser reads them: `#` and `;` comment
/// lines, `=` or `:` between name and value, indented lines continuing a value.
fn options(file: &Path, text: &str) -> Result<Vec<Option_>, ImportError> {
    let mut options: Vec<Option_> = Vec::new();
    let mut section: Option<String> = None;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        let indented = raw.starts_with([' ', '\t']);
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.is_empty() {
            // Empty lines inside a value are kept by configparser; trailing ones are stripped.
            if let Some(last) = options.last_mut() {
                last.text.push('\n');
            }
            continue;
        }
        if indented && section.is_some() {
            if let Some(last) = options.last_mut() {
                last.text.push('\n');
                last.text.push_str(trimmed);
                continue;
            }
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if name != "DEFAULT" {
                return Err(ImportError::at(
                    file,
                    line,
                    format!("unknown section [{name}] (only [DEFAULT] is read)"),
                ));
            }
            section = Some(name.to_string());
            continue;
        }
        if section.is_none() {
            return Err(ImportError::at(
                file,
                line,
                "no [DEFAULT] section header before the first option",
            ));
        }
        let Some(at) = trimmed.find(['=', ':']) else {
            return Err(ImportError::at(
                file,
                line,
                format!("expected `NAME = value`, found `{trimmed}`"),
            ));
        };
        let name = trimmed[..at].trim().to_string();
        if let Some(first) = options.iter().find(|o| o.name == name) {
            return Err(ImportError {
                file: file.to_path_buf(),
                line: Some(line),
                setting: Some(name),
                message: format!("set twice (first at line {})", first.line),
                source: None,
            });
        }
        options.push(Option_ {
            name,
            text: trimmed[at + 1..].trim().to_string(),
            line,
        });
    }
    for option in &mut options {
        option.text = option.text.trim_end().to_string();
    }
    Ok(options)
}

fn parse(
    file: &Path,
    line: usize,
    name: &str,
    kind: Kind,
    text: &str,
) -> Result<Value, ImportError> {
    let fail = |message: String| ImportError {
        file: file.to_path_buf(),
        line: (line > 0).then_some(line),
        setting: Some(name.to_string()),
        message,
        source: None,
    };
    let text = text.trim();
    match kind {
        Kind::Bool => Ok(Value::Bool(text.eq_ignore_ascii_case("true"))),
        Kind::Text => Ok(Value::Str(text.to_string())),
        Kind::Int if text.is_empty() => Ok(Value::Int(0)),
        Kind::Float if text.is_empty() => Ok(Value::Float(0.0)),
        Kind::Int => text
            .parse()
            .map(Value::Int)
            .map_err(|_| fail(format!("`{text}` is not a whole number"))),
        Kind::Float => text
            .parse()
            .map(Value::Float)
            .map_err(|_| fail(format!("`{text}` is not a number"))),
        Kind::List => list(text, &fail),
        Kind::Shunts => shunts(text, &fail),
    }
}

/// A 4.x list: per line, `;` and what follows cut, a trailing comma dropped, split on commas.
/// `fail` places a message at the setting.
fn list(text: &str, fail: &dyn Fn(String) -> ImportError) -> Result<Value, ImportError> {
    let mut items = Vec::new();
    for line in text.lines() {
        let line = line.split(';').next().unwrap_or("").trim();
        let line = line.strip_suffix(',').unwrap_or(line).trim();
        if line.is_empty() {
            continue;
        }
        for item in line.split(',') {
            let item = item.trim();
            let number = item
                .parse()
                .map_err(|_| fail(format!("`{item}` in the list is not a number")))?;
            items.push(Value::Float(number));
        }
    }
    Ok(Value::List(items))
}

/// `USE_SMARTSHUNTS`: a bool word, or a list of VRM instances (ints) and names (strings).
fn shunts(text: &str, fail: &dyn Fn(String) -> ImportError) -> Result<Value, ImportError> {
    let lower = text.to_ascii_lowercase();
    match lower.as_str() {
        "" | "false" | "no" | "0" => return Ok(Value::Bool(false)),
        "true" | "yes" | "1" => return Ok(Value::Bool(true)),
        _ => {}
    }
    let json = text.replace('\'', "\"");
    let expected = "must be true, false or a list of VRM instances and names, e.g. [278, 'Bank']";
    let parsed: serde_json::Value =
        serde_json::from_str(&json).map_err(|_| fail(format!("`{text}` {expected}")))?;
    let serde_json::Value::Array(items) = parsed else {
        return Err(fail(format!("`{text}` {expected}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            serde_json::Value::String(s) => Ok(Value::Str(s)),
            serde_json::Value::Number(n) if n.is_i64() => Ok(Value::Int(n.as_i64().unwrap_or(0))),
            other => Err(fail(format!("`{other}` in USE_SMARTSHUNTS: {expected}"))),
        })
        .collect::<Result<_, _>>()
        .map(Value::List)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::*;

    fn read_text(text: &str) -> Result<OldSettings, ImportError> {
        // A folder without a defaults file: the built-in 4.x defaults apply.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.ini");
        std::fs::write(&file, text).unwrap();
        read(&file, text)
    }

    fn value(settings: &OldSettings, name: &str) -> Value {
        settings.get(name).expect(name).value.clone()
    }

    #[test]
    fn the_users_file_wins_over_the_defaults() {
        let s = read_text("[DEFAULT]\nNR_OF_BATTERIES = 2\nOWN_SOC = True\n").unwrap();
        assert_eq!(value(&s, "NR_OF_BATTERIES"), Value::Int(2));
        assert!(!s.get("NR_OF_BATTERIES").unwrap().from_defaults);
        assert_eq!(value(&s, "OWN_SOC"), Value::Bool(true));
        assert_eq!(value(&s, "BALANCING_VOLTAGE"), Value::Float(3.4));
        assert!(s.get("BALANCING_VOLTAGE").unwrap().from_defaults);
    }

    #[test]
    fn the_4x_parsers() {
        let s = read_text(
            "[DEFAULT]\nOWN_SOC = yes\nKEEP_MAX_CVL = TRUE\nLOG_PERIOD =\n\
             CHARGE_VOLTAGE_LIST = 2.50, 2.45, ; winter\n    2.45, 2.40,\n\n    2.35\n\
             USE_SMARTSHUNTS = [278, 'Bank A']\n",
        )
        .unwrap();
        assert_eq!(value(&s, "OWN_SOC"), Value::Bool(false));
        assert_eq!(value(&s, "KEEP_MAX_CVL"), Value::Bool(true));
        assert_eq!(value(&s, "LOG_PERIOD"), Value::Int(0));
        assert_eq!(
            value(&s, "CHARGE_VOLTAGE_LIST"),
            Value::List([2.5, 2.45, 2.45, 2.4, 2.35].map(Value::Float).to_vec())
        );
        assert_eq!(
            value(&s, "USE_SMARTSHUNTS"),
            Value::List(vec![Value::Int(278), Value::Str("Bank A".into())])
        );
        assert_eq!(s.get("USE_SMARTSHUNTS").unwrap().line, 9);
    }

    #[test]
    fn errors_name_file_line_and_option() {
        let error = |text: &str| read_text(text).unwrap_err();
        let e = error("[DEFAULT]\nNR_OF_BATTERIES = 2\nNR_OF_BATTERIE = 2\n");
        assert_eq!(
            (e.line, e.setting.as_deref()),
            (Some(3), Some("NR_OF_BATTERIE"))
        );
        assert!(e.message.contains("unknown option"), "{e}");
        let e = error("NR_OF_BATTERIES = 2\n");
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("[DEFAULT]"), "{e}");
        let e = error("[DEFAULT]\n\nMAX_CHARGE_CURRENT = 2OO\n");
        assert_eq!(
            e.to_string().split_once(": ").unwrap().1,
            "MAX_CHARGE_CURRENT: `2OO` is not a whole number"
        );
        assert_eq!(e.line, Some(3));
        let e = error("[DEFAULT]\nCELL_CHARGE_LIMITED_CURRENT = 0.2, 1,\n  x\n");
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("`x`"), "{e}");
        let e = error("[DEFAULT]\nUSE_SMARTSHUNTS = [1.5]\n");
        assert_eq!(e.setting.as_deref(), Some("USE_SMARTSHUNTS"));
        let e = error("[DEFAULT]\nOWN_SOC = True\nOWN_SOC = False\n");
        assert!(e.message.contains("set twice (first at line 2)"), "{e}");
        let e = error("[DEFAULT]\n[extra]\n");
        assert!(e.message.contains("unknown section [extra]"), "{e}");
    }

    #[test]
    fn a_defaults_file_beside_is_read_first() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = dir.path().join(DEFAULTS_FILE);
        std::fs::write(
            &defaults,
            "[DEFAULT]\nNR_OF_BATTERIES = 3\nOWN_SOC = True\n",
        )
        .unwrap();
        let file = dir.path().join("config.ini");
        let s = read(&file, "[DEFAULT]\nOWN_SOC = False\n").unwrap();
        assert_eq!(value(&s, "NR_OF_BATTERIES"), Value::Int(3));
        assert_eq!(value(&s, "OWN_SOC"), Value::Bool(false));
        assert_eq!(s.file_of("NR_OF_BATTERIES"), defaults);
        assert_eq!(s.get("BALANCING_VOLTAGE"), None);
        let e = read(&file, "[DEFAULT]\nBALANCING_VOLTAGE = 2.5\n").unwrap_err();
        assert!(e.message.contains(DEFAULTS_FILE), "{e}");
    }
}
