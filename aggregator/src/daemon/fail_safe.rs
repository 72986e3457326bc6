//! A config file with errors at start: the service still comes up, with charge and discharge
//! stopped and the error as `/Info/ChargeMode`, as for a strategy that refuses its section.
//! Exiting instead would leave DVCC without its BMS while the supervisor restarts the daemon,
//! which exits again, for ever.
//!
//! What the file still tells (read leniently, line by line where it is no YAML: the service
//! name, the device instance, the cell count, the state folder and the strategy's name) is kept, so that the GUI's choices keep pointing at the
//! service and the feed-in memory and counter are the ones of the bank; everything else comes
//! from the shipped default configuration. No plugin is loaded.

use std::path::{Path, PathBuf};

use crate::config::check::{resolve_paths, Failed, Ready};
use crate::config::{
    read_config_text, valid_service_name, Config, ConfigError, PluginChoice, Source,
};
use crate::plugins::Scan;

/// The current source's error text: not loaded, the strategy's error says why.
pub const NOT_LOADED: &str = "not loaded: the config has errors";

/// The shipped default configuration, which parses (a test says so).
const SHIPPED: &str = include_str!("../../../config.yaml");

/// The service to run for `file`, whose `errors` keep it from running as configured: no
/// strategy (its error is the config's first error), no current source.
///
/// The few keys kept are read from the YAML tree when the file parses as YAML, else line by
/// line from its text ([`recovered`]): a tab or a wrong indentation, the commonest slips of
/// hand-editing, must not cost them. When the state folder cannot be told for sure (the file
/// cannot be read, or its `paths.state_dir` line cannot be made out), no state file is read
/// or written and no recording is kept (docs/tick.md §6): the shipped folder may be another
/// bank's.
pub fn ready(file: &Path, errors: &[ConfigError]) -> Ready {
    let mut config = shipped();
    let text = read_config_text(file);
    let tree = (text.as_ref().ok()).and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(t).ok());
    let told = |section: &str, key: &str| -> Told {
        match (&text, &tree) {
            (_, Some(tree)) => match tree.get(section).and_then(|part| part.get(key)) {
                None => Told::Absent,
                Some(value) => scalar(value).map_or(Told::Unclear, Told::Value),
            },
            (Ok(text), None) => recovered(text, section, key),
            (Err(_), _) => Told::Unclear,
        }
    };
    // Only a name the bus lets us own: with another (`…battery.2nd`), DVCC would never see
    // the fail-safe service; the shipped name stands in.
    if let Some(name) = told("publish", "service_name")
        .value()
        .filter(|n| valid_service_name(n))
    {
        config.publish.service_name = name;
    }
    if let Some(instance) = told("publish", "device_instance")
        .value()
        .and_then(|n| n.parse::<u32>().ok())
    {
        config.publish.device_instance = instance;
    }
    // The shipped default's cell count is of one bank, not of this one: a pack of another
    // count would be reported as left out. The file's own count, where it reads as one.
    config.batteries.cells = told("batteries", "cells")
        .value()
        .and_then(|n| n.parse::<u32>().ok());
    let state_unknown = match told("paths", "state_dir") {
        Told::Value(dir) => {
            config.paths.state_dir = PathBuf::from(dir);
            None
        }
        Told::Absent => None,
        Told::Unclear => Some(match &text {
            Err(err) => format!(
                "{} cannot be read ({err}), so its state folder is not known",
                file.display()
            ),
            Ok(_) => format!(
                "{}: paths.state_dir cannot be made out of the broken text",
                file.display()
            ),
        }),
    };
    if state_unknown.is_some() {
        // The recordings go into the state folder unless `record.dir` says otherwise.
        config.record.keep = std::time::Duration::ZERO;
    }
    let strategy = told("strategy", "plugin")
        .value()
        .unwrap_or_else(|| "(unknown)".into());
    config.strategy = PluginChoice {
        plugin: strategy.clone(),
        ..config.strategy
    };
    resolve_paths(&mut config, file, None);

    let first = errors.first().map_or_else(
        || format!("{} has errors", file.display()),
        ToString::to_string,
    );
    let text = format!("config error: {first}");
    let current_source = config.current_source.plugin.clone();
    Ready {
        config,
        scan: Scan {
            plugins: Vec::new(),
            refused: Vec::new(),
            skipped: Vec::new(),
        },
        strategy: Err(Failed {
            plugin: strategy,
            text,
            errors: errors.to_vec(),
        }),
        current_source: Err(Failed {
            plugin: current_source,
            text: NOT_LOADED.into(),
            errors: Vec::new(),
        }),
        state_unknown,
    }
}

/// What a broken file tells of one key.
#[derive(Debug, PartialEq)]
enum Told {
    /// The key's value, as text.
    Value(String),
    /// The file does not set it: the default applies.
    Absent,
    /// It may set it, but how cannot be told.
    Unclear,
}

impl Told {
    fn value(self) -> Option<String> {
        match self {
            Told::Value(value) => Some(value),
            Told::Absent | Told::Unclear => None,
        }
    }
}

/// A YAML scalar as text; `None` for anything else.
fn scalar(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::String(text) => Some(text.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The value of `section.key` in a `text` the YAML parser refuses, read line by line: the
/// lines of the top-level `section:` (block style, or a one-line `{ … }`) that set `key` to a
/// plain or quoted scalar, indented with spaces or tabs alike (not those of a map inside it). Unclear when they set it to
/// different values or to something else than one scalar, or when `key` is written elsewhere
/// (an indented `section:`); absent only when the text does not name `key` at all.
fn recovered(text: &str, section: &str, key: &str) -> Told {
    let mut found: Vec<String> = Vec::new();
    let mut unclear = false;
    let mut named = false;
    let mut inside = false;
    let mut child: Option<&str> = None;
    for raw in text.lines() {
        let line = without_comment(raw);
        if line.trim().is_empty() {
            continue;
        }
        named |= line.contains(key);
        if !line.starts_with(char::is_whitespace) {
            // A list item at the section's own indentation belongs to the key above it.
            if line.starts_with('-') {
                continue;
            }
            inside = false;
            child = None;
            let Some((name, rest)) = line.split_once(':') else {
                continue;
            };
            if unquoted(name.trim_end()) != Some(section) {
                continue;
            }
            if rest.trim().is_empty() {
                inside = true;
                continue;
            }
            // The whole section on its line: `publish: { service_name: …, … }`.
            let value = serde_yaml::from_str::<serde_yaml::Value>(line);
            match value
                .as_ref()
                .map(|v| v.get(section).and_then(|s| s.get(key)))
            {
                Ok(Some(value)) => match scalar(value) {
                    Some(value) => found.push(value),
                    None => unclear = true,
                },
                Ok(None) => {}
                Err(_) => unclear |= rest.contains(key),
            }
            continue;
        }
        if !inside {
            continue;
        }
        // The section's keys, not those of a map inside it (a plugin's `config:`); a line
        // indented otherwise than the first (a tab among spaces) counts as one of them.
        let content = line.trim_start();
        let indent = &line[..line.len() - content.len()];
        let child = *child.get_or_insert(indent);
        if indent.len() > child.len() && indent.starts_with(child) {
            continue;
        }
        let Some((name, value)) = content.trim_end().split_once(':') else {
            continue;
        };
        if unquoted(name.trim_end()) != Some(key) {
            continue;
        }
        match plain_scalar(value) {
            Some(value) => found.push(value),
            None => unclear = true,
        }
    }
    found.sort();
    found.dedup();
    match found.as_slice() {
        [one] if !unclear => Told::Value(one.clone()),
        [] if !unclear && !named => Told::Absent,
        _ => Told::Unclear,
    }
}

/// `line` without its comment: from a `#` at its start or after a blank, outside quotes.
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    let mut blank_before = true;
    for (at, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if blank_before => return &line[..at],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        blank_before = c.is_whitespace();
    }
    line
}

/// A key as written, without its quotes (`'paths'`, `"paths"`); `None` for a key in
/// unbalanced quotes.
fn unquoted(key: &str) -> Option<&str> {
    match key.as_bytes() {
        [b'"', .., b'"'] | [b'\'', .., b'\''] if key.len() >= 2 => Some(&key[1..key.len() - 1]),
        [b'"' | b'\'', ..] => None,
        _ => Some(key),
    }
}

/// The scalar written after a key's colon, plain or quoted without escapes; `None` for
/// anything else (nothing: a block below, a flow collection, an anchor, a tag, a block
/// scalar).
fn plain_scalar(value: &str) -> Option<String> {
    let value = value.trim();
    let first = value.chars().next()?;
    match first {
        '"' => {
            let inner = value.strip_prefix('"')?.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then(|| inner.to_string())
        }
        '\'' => {
            let inner = value.strip_prefix('\'')?.strip_suffix('\'')?;
            Some(inner.replace("''", "'"))
        }
        '{' | '[' | '|' | '>' | '&' | '*' | '!' | '%' | '@' | '`' => None,
        _ => Some(value.to_string()),
    }
}

fn shipped() -> Config {
    let source = Source {
        file: PathBuf::from("config.yaml (shipped default)"),
        text: SHIPPED.to_string(),
    };
    match source.parse() {
        Ok(config) => config,
        // Checked by a test: the shipped default parses.
        Err(errors) => panic!("the shipped default config does not parse: {errors:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests write their fixtures (clippy.toml).
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_parses() {
        let config = shipped();
        assert_eq!(
            config.publish.service_name,
            "com.victronenergy.battery.aggregate"
        );
    }

    #[test]
    fn what_a_broken_file_still_tells_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "batteries: { expectd: 2 }\nstrategy: { plugin: lto-cv }\n\
             publish: { service_name: com.victronenergy.battery.bank2, device_instance: 0 }\n\
             paths: { state_dir: state }\n",
        )
        .unwrap();
        let error = ConfigError {
            file: file.clone(),
            key: "batteries.expectd".into(),
            line: Some(1),
            message: "unknown field `expectd`".into(),
        };
        let ready = ready(&file, std::slice::from_ref(&error));
        assert_eq!(
            ready.config.publish.service_name,
            "com.victronenergy.battery.bank2"
        );
        assert_eq!(ready.config.publish.device_instance, 0);
        assert_eq!(ready.config.paths.state_dir, dir.path().join("state"));
        let failed = ready.strategy.err().expect("no strategy");
        assert_eq!(failed.plugin, "lto-cv");
        assert!(failed.text.contains("batteries.expectd"), "{}", failed.text);
    }

    /// docs/tick.md §6: a tab (a YAML syntax error) costs none of the keys kept, so the
    /// fail-safe reads and writes the bank's own state file, not the shipped folder's.
    #[test]
    fn a_file_that_is_no_yaml_still_tells_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        let text = "batteries:\n  expected: 2\n\tcells: 16\n\
                    publish:\n  service_name: \"com.victronenergy.battery.bank2\"  # ours\n\
                    \x20 device_instance: 7\n\
                    paths:\n  plugins_dir: /opt/plugins\n  state_dir: /data/bank2 # the folder\n\
                    strategy:\n  plugin: 'lto-cv'\n  config:\n    plugin: other\n";
        assert!(serde_yaml::from_str::<serde_yaml::Value>(text).is_err());
        std::fs::write(&file, text).unwrap();
        let ready = ready(&file, &[]);
        assert_eq!(
            ready.config.publish.service_name,
            "com.victronenergy.battery.bank2"
        );
        assert_eq!(ready.config.publish.device_instance, 7);
        assert_eq!(ready.config.batteries.cells, Some(16));
        assert_eq!(ready.config.paths.state_dir, Path::new("/data/bank2"));
        assert_eq!(ready.state_unknown, None);
        assert!(!ready.config.record.keep.is_zero());
        assert_eq!(ready.strategy.err().expect("no strategy").plugin, "lto-cv");
    }

    /// docs/tick.md §6: a state folder that cannot be told uses no state file (the shipped
    /// one may be another bank's); one the file does not set is the shipped one.
    #[test]
    fn a_state_folder_that_cannot_be_told_uses_no_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        let shipped_dir = shipped().paths.state_dir;
        for (text, known) in [
            // Not set: the shipped folder, also with a tab elsewhere.
            ("batteries:\n\texpected: 2\n", true),
            ("paths:\n  plugins_dir: p\n\tfoo: 1\n", true),
            // Set, but not to be made out.
            ("paths:\n  state_dir: [a\n\tfoo: 1\n", false),
            (
                "paths:\n  state_dir: /a\n  state_dir: /b\n\tfoo: 1\n",
                false,
            ),
            ("\tpaths:\n  state_dir: /a\n", false),
            ("paths: { state_dir: /a, \n", false),
        ] {
            std::fs::write(&file, text).unwrap();
            let ready = ready(&file, &[]);
            assert_eq!(ready.state_unknown.is_none(), known, "{text:?}");
            assert_eq!(ready.config.record.keep.is_zero(), !known, "{text:?}");
            if known {
                assert_eq!(ready.config.paths.state_dir, shipped_dir, "{text:?}");
            }
        }
        // A file that cannot be read says nothing.
        let ready = ready(&dir.path().join("missing.yaml"), &[]);
        let why = ready.state_unknown.expect("unknown");
        assert!(why.contains("missing.yaml cannot be read"), "{why}");
    }

    #[test]
    fn lines_are_read_as_yaml_reads_them() {
        assert_eq!(without_comment("a: 'x # y' # z"), "a: 'x # y' ");
        assert_eq!(without_comment("a: x#y"), "a: x#y");
        assert_eq!(plain_scalar(" 'it''s' "), Some("it's".into()));
        assert_eq!(plain_scalar(" \"a\\b\""), None);
        assert_eq!(plain_scalar(""), None);
        assert_eq!(plain_scalar(" &anchor x"), None);
        assert_eq!(unquoted("\"paths\""), Some("paths"));
        assert_eq!(unquoted("'paths"), None);
        let text =
            "publish: { service_name: com.victronenergy.battery.b, device_instance: 3 }\n\tx";
        assert_eq!(
            recovered(text, "publish", "device_instance"),
            Told::Value("3".into())
        );
    }

    #[test]
    fn a_service_name_the_bus_refuses_gives_way_to_the_shipped_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        for name in [
            "com.victronenergy.battery.2nd",
            "com.victronenergy.battery.bank.two",
            "'com.victronenergy.battery.bank 2'",
        ] {
            std::fs::write(&file, format!("publish: {{ service_name: {name} }}\n")).unwrap();
            let ready = ready(&file, &[]);
            assert_eq!(
                ready.config.publish.service_name, "com.victronenergy.battery.aggregate",
                "{name}"
            );
        }
    }
}
