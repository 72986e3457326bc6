//! A config file as read (its text and path), its parse into [`Config`] with every error
//! naming the file, the key path and the line ([`ConfigError`]), and the checks across keys.

use std::path::{Path, PathBuf};

use plugin_api::DeviceRef;

use super::{Batteries, Config};

/// `batteries.frozen_after` is at least this many ticks (or 0, off).
const FROZEN_TICKS: f64 = 3.0;

/// The YAML crate's message without its position (`key: message`, from `key: message at line
/// L column C`), and the line (config files and scenario files report errors so).
pub fn yaml_message(err: &serde_yaml::Error) -> (Option<usize>, String) {
    let text = err.to_string();
    let body = match text.rfind(" at line ") {
        Some(at) => text[..at].trim_end_matches(',').to_string(),
        None => text.clone(),
    };
    (err.location().map(|l| l.line()), body)
}

/// One problem with the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key path, e.g. `strategy.config.charge_voltages`; empty for the whole file.
    pub key: String,
    /// The line of the key in the file, when found.
    pub line: Option<usize>,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The largest config file read (docs/commands.md §1): the shipped one, every key documented
/// in place, is 15 kB.
pub const CONFIG_MAX_BYTES: u64 = 1024 * 1024;

/// The text of the config file `file`: a regular file (a FIFO would hold the start for ever)
/// of at most [`CONFIG_MAX_BYTES`] (the text is parsed several times and kept for the
/// recordings).
pub fn read_config_text(file: &Path) -> Result<String, crate::state_file::ReadError> {
    crate::state_file::read_text_bounded(file, CONFIG_MAX_BYTES)
}

/// A config file as read: its text (for line numbers) and its path.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// Its text.
    pub text: String,
}

impl Source {
    /// Reads the file: a regular file of at most [`CONFIG_MAX_BYTES`] (docs/commands.md §1).
    pub fn read(file: &Path) -> Result<Self, ConfigError> {
        let text = read_config_text(file).map_err(|err| ConfigError {
            file: file.to_path_buf(),
            key: String::new(),
            line: None,
            message: format!("cannot read: {err}"),
        })?;
        Ok(Self {
            file: file.to_path_buf(),
            text,
        })
    }

    /// An error at `key` (a dotted path), with the key's line when it can be found.
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: key.to_string(),
            line: line_of_key(&self.text, key),
            message: message.into(),
        }
    }

    /// Parses the text into a [`Config`] and checks the host's values; plugins' sections are
    /// checked by [`crate::config::check`].
    pub fn parse(&self) -> Result<Config, Vec<ConfigError>> {
        // The tree of every key first: it refuses a key written twice anywhere, which the
        // typed parse would take the last of inside a plugin's section.
        let tree = match serde_yaml::from_str::<serde_yaml::Value>(&self.text) {
            Ok(tree) => Some(tree),
            Err(err) => match self.duplicate_key(&err) {
                Some(duplicate) => return Err(vec![duplicate]),
                None => None,
            },
        };
        let config: Config = serde_yaml::from_str(&self.text).map_err(|err| {
            let first = self.yaml_error(&err);
            self.all_missing(first)
        })?;
        let mut errors = tree
            .map(|tree| self.non_finite_in_plugin_sections(&tree))
            .unwrap_or_default();
        errors.extend(self.check(&config));
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }

    /// The parser stops at the first missing key; the others are found by filling each one
    /// found with a stand-in and parsing again, so that all are reported at once, each under
    /// its own key. `first` is returned alone when it is another error.
    fn all_missing(&self, first: ConfigError) -> Vec<ConfigError> {
        let Ok(mut tree) = serde_yaml::from_str::<serde_yaml::Value>(&self.text) else {
            return vec![first];
        };
        let mut errors = vec![first];
        // Bounded: a config has far fewer required keys.
        for _ in 0..32 {
            let last = errors.last().expect("one error");
            if !last.message.starts_with("missing field `") || last.key.is_empty() {
                break;
            }
            let mut at = &mut tree;
            let path: Vec<&str> = last.key.split('.').collect();
            let Some((field, parents)) = path.split_last() else {
                break;
            };
            for part in parents {
                match at.get_mut(*part) {
                    Some(next) => at = next,
                    None => return errors,
                }
            }
            let Some(map) = at.as_mapping_mut() else {
                break;
            };
            map.insert((*field).into(), serde_yaml::Value::from(0));
            let again = serde_yaml::to_string(&tree)
                .ok()
                .and_then(|text| serde_yaml::from_str::<Config>(&text).err());
            match again.map(|err| self.yaml_error(&err)) {
                Some(next) if next.message.starts_with("missing field `") => {
                    // Placed by its key in the user's text, not in the re-written one.
                    let line = line_of_key(&self.text, &next.key);
                    errors.push(ConfigError { line, ..next });
                }
                _ => break,
            }
        }
        errors
    }

    /// The parser's "duplicate entry" as an error under the key's whole path, at the line of
    /// its second occurrence (the parser names the first).
    fn duplicate_key(&self, err: &serde_yaml::Error) -> Option<ConfigError> {
        let (line, body) = yaml_message(err);
        let (parent, quoted) = body.split_once("duplicate entry with key ")?;
        let parent = parent.trim_end().trim_end_matches(':');
        let name = quoted.trim().trim_matches('"');
        let key = if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        };
        let column = err.location().map_or(1, |l| l.column());
        let (first, again) = line
            .and_then(|line| occurrences(&self.text, line, column, name))
            .map_or((line, line), |(first, again)| (Some(first), Some(again)));
        let first = first.map_or(String::new(), |l| format!(" (first at line {l})"));
        Some(ConfigError {
            file: self.file.clone(),
            key,
            line: again,
            message: format!(
                "written twice{first}: a key may be given once; keep the value meant and \
                 remove the other"
            ),
        })
    }

    fn yaml_error(&self, err: &serde_yaml::Error) -> ConfigError {
        // The crate's message reads "batteries.expected: invalid type: …, at line 3 column 13";
        // split it into our parts so every error has the same shape.
        let (line, body) = yaml_message(err);
        let (mut key, message) = match body.split_once(": ") {
            Some((key, message)) if !key.contains(' ') => (key.to_string(), message.to_string()),
            _ => (String::new(), body),
        };
        // A missing key belongs to the map the message names, whatever key the parser stood on.
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .filter(|_| !key.is_empty())
        {
            let key = format!("{key}.{field}");
            let line = line_of_key(&self.text, &key);
            return ConfigError {
                file: self.file.clone(),
                key,
                line,
                message,
            };
        }
        // A value's own error ("not a duration") carries the path of the enclosing map only;
        // the key on the reported line completes it.
        if let Some(own) = line.and_then(|l| key_at_line(&self.text, l)) {
            if !key.is_empty() && !key.ends_with(own.as_str()) {
                key = format!("{key}.{own}");
            }
        }
        let line = line.or_else(|| line_of_key(&self.text, &key));
        ConfigError {
            file: self.file.clone(),
            key,
            line,
            message,
        }
    }

    /// Plugins' sections cross to the plugin as JSON, which has no NaN nor infinity: `.nan`
    /// or `.inf` there would arrive as null, silently turning a setting off (or reading as
    /// "invalid type: null" for a value the user wrote as a number). Refused here, by key.
    fn non_finite_in_plugin_sections(&self, tree: &serde_yaml::Value) -> Vec<ConfigError> {
        let mut found = Vec::new();
        for section in [
            "strategy",
            "current_source",
            "shadow.strategy",
            "shadow.current_source",
        ] {
            let mut at = Some(tree);
            for part in section.split('.') {
                at = at.and_then(|v| v.get(part));
            }
            if let Some(config) = at.and_then(|v| v.get("config")) {
                non_finite(config, &format!("{section}.config"), &mut found);
            }
        }
        found
            .into_iter()
            .map(|(key, value)| {
                self.error(
                    &key,
                    format!(
                        "must be a finite number, found {value} (a plugin's section takes no \
                         NaN nor infinity: the plugin would get null)"
                    ),
                )
            })
            .collect()
    }

    /// `batteries.hold_for` and `frozen_after` against the tick (docs/battery-states.md §2,
    /// docs/battery-states.md §4): presence looks at each battery once a tick, so a time
    /// shorter than a tick or two cannot do what it says.
    fn check_presence_times(&self, b: &Batteries, interval_s: f64, errors: &mut Vec<ConfigError>) {
        let hold = b.hold_for.as_secs_f64();
        // Within a microsecond: 3 × 0.2 s is 0.6000000000000001 s in floating point.
        if hold + 1e-6 < interval_s {
            errors.push(self.error(
                "batteries.hold_for",
                format!(
                    "must be at least update_interval ({}), found {}: a battery that misses \
                     one update must be held until the next tick, not lost at once (CCL 0)",
                    seconds(interval_s),
                    seconds(hold)
                ),
            ));
        }
        let frozen = b.frozen_after.as_secs_f64();
        let least = FROZEN_TICKS * interval_s;
        if frozen > 0.0 && frozen + 1e-6 < least {
            errors.push(self.error(
                "batteries.frozen_after",
                format!(
                    "must be 0s (off) or at least {FROZEN_TICKS} × update_interval ({}), found \
                     {}: values are compared tick by tick, and a pack at rest, or one whose \
                     driver publishes slower than the tick, changes none over a tick or two; \
                     it would be frozen, then lost (CCL and DCL 0)",
                    seconds(least),
                    seconds(frozen)
                ),
            ));
        }
    }

    fn check(&self, config: &Config) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        let mut require = |ok: bool, key: &str, message: String| {
            if !ok {
                errors.push(self.error(key, message));
            }
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let s = &config.safety;
        require(
            positive(s.max_cell_voltage) && s.max_cell_voltage < 5.0,
            "safety.max_cell_voltage",
            format!(
                "must be a cell voltage above 0 and below 5 V, found {}",
                s.max_cell_voltage
            ),
        );
        require(
            positive(s.max_charge_current),
            "safety.max_charge_current",
            format!(
                "must be a current above 0 A, found {}",
                s.max_charge_current
            ),
        );
        require(
            positive(s.max_discharge_current),
            "safety.max_discharge_current",
            format!(
                "must be a current above 0 A, found {}",
                s.max_discharge_current
            ),
        );
        require(
            s.min_cell_voltage.is_finite()
                && s.min_cell_voltage > 0.0
                && s.min_cell_voltage < s.max_cell_voltage,
            "safety.min_cell_voltage",
            format!(
                "must be above 0 and below safety.max_cell_voltage ({}), found {}",
                s.max_cell_voltage, s.min_cell_voltage
            ),
        );
        let window = s.max_cell_voltage - s.min_cell_voltage;
        for (key, value) in [
            ("safety.max_cell_hysteresis", s.max_cell_hysteresis),
            ("safety.min_cell_hysteresis", s.min_cell_hysteresis),
        ] {
            require(
                value.is_finite() && value >= 0.0 && value < window,
                key,
                format!(
                    "must be at least 0 V and below the cell window \
                     (safety.max_cell_voltage - safety.min_cell_voltage = {window:.3}), found {value}"
                ),
            );
        }
        for (low_key, low, high_key, high) in [
            (
                "safety.min_charge_temperature",
                s.min_charge_temperature,
                "safety.max_charge_temperature",
                s.max_charge_temperature,
            ),
            (
                "safety.min_discharge_temperature",
                s.min_discharge_temperature,
                "safety.max_discharge_temperature",
                s.max_discharge_temperature,
            ),
        ] {
            require(
                (-60.0..=100.0).contains(&low) && (-60.0..=100.0).contains(&high) && low < high,
                low_key,
                format!(
                    "must be below {high_key} ({high}), both between -60 and 100 °C, found {low}"
                ),
            );
        }
        require(
            s.temperature_derate.is_finite() && s.temperature_derate >= 0.0,
            "safety.temperature_derate",
            format!("must be 0 °C or more, found {}", s.temperature_derate),
        );
        require(
            s.share_min_current.is_finite() && s.share_min_current > 0.0,
            "safety.share_min_current",
            format!("must be above 0 A, found {}", s.share_min_current),
        );
        require(
            s.plugin_failures >= 1,
            "safety.plugin_failures",
            "must be at least 1".to_string(),
        );
        require(
            s.recovery_charge_rate.is_finite()
                && s.recovery_charge_rate > 0.0
                && s.recovery_charge_rate <= 0.5,
            "safety.recovery_charge_rate",
            format!(
                "must be a charge rate above 0 and at most 0.5 (C: a fraction of the installed \
                 capacity per hour), found {}",
                s.recovery_charge_rate
            ),
        );
        let b = &config.batteries;
        if let Some(v) = s.max_charge_voltage {
            require(
                positive(v) && v < 1000.0,
                "safety.max_charge_voltage",
                format!("must be a bank voltage above 0 and below 1000 V, found {v}"),
            );
            // A cell voltage written here would stop every charge without a word.
            if let Some(cells) = b.cells.filter(|n| (1..=64).contains(n)) {
                let floor = f64::from(cells) * s.min_cell_voltage;
                require(
                    !v.is_finite() || v >= floor,
                    "safety.max_charge_voltage",
                    format!(
                        "is a bank voltage, not a cell voltage: {cells} cells × \
                         safety.min_cell_voltage {} V = {floor:.1} V at least, found {v}",
                        s.min_cell_voltage
                    ),
                );
            }
        }
        require(
            b.expected.is_none_or(|n| (1..=64).contains(&n)),
            "batteries.expected",
            format!(
                "must be between 1 and 64, found {}",
                b.expected.unwrap_or(0)
            ),
        );
        require(
            b.cells.is_none_or(|n| (1..=64).contains(&n)),
            "batteries.cells",
            format!("must be between 1 and 64, found {}", b.cells.unwrap_or(0)),
        );
        require(
            !b.product_name.0.is_empty() && b.product_name.0.iter().all(|n| !n.trim().is_empty()),
            "batteries.product_name",
            "must not be empty, nor hold an empty name (the default is SerialBattery)".into(),
        );
        match config.soc.monitor() {
            Some(DeviceRef::Instance(n)) => require(
                *n >= 0,
                "soc.source",
                format!("a VRM device instance is 0 or more, found {n}"),
            ),
            Some(DeviceRef::Name(name)) => require(
                !name.trim().is_empty(),
                "soc.source",
                "a custom name must not be empty".into(),
            ),
            None => {}
        }
        require(
            config.soc.efficiency > 0.0 && config.soc.efficiency <= 1.0,
            "soc.efficiency",
            format!(
                "must be above 0 and at most 1, found {}",
                config.soc.efficiency
            ),
        );
        require(
            config.soc.save_precision > 0.0 && config.soc.save_precision < 1.0,
            "soc.save_precision",
            format!(
                "must be above 0 and below 1, found {}",
                config.soc.save_precision
            ),
        );
        let interval = config.update_interval.as_secs_f64();
        require(
            (0.1..=60.0).contains(&interval),
            "update_interval",
            format!("must be between 100ms and 60s, found {interval}s"),
        );
        let name = &config.publish.service_name;
        require(
            valid_service_name(name),
            "publish.service_name",
            format!("must be com.victronenergy.battery.<suffix> with a suffix of letters, digits, _ or -, not starting with a digit; found `{name}`"),
        );
        if (0.1..=60.0).contains(&interval) {
            self.check_presence_times(&config.batteries, interval, &mut errors);
        }
        errors
    }
}

/// Seconds as the config writes them (`0.6s`, `3s`), to the millisecond.
fn seconds(s: f64) -> String {
    format!("{}s", (s * 1000.0).round() / 1000.0)
}

/// The NaN and infinite numbers under `value` (at the key path `key`), each with its key path
/// and its YAML spelling.
fn non_finite(value: &serde_yaml::Value, key: &str, found: &mut Vec<(String, &'static str)>) {
    use serde_yaml::Value;
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(v) if v.is_nan() => found.push((key.to_string(), ".nan")),
            Some(v) if v.is_infinite() && v > 0.0 => found.push((key.to_string(), ".inf")),
            Some(v) if v.is_infinite() => found.push((key.to_string(), "-.inf")),
            _ => {}
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                non_finite(item, &format!("{key}[{i}]"), found);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                };
                non_finite(v, &format!("{key}.{name}"), found);
            }
        }
        Value::Tagged(tagged) => non_finite(&tagged.value, key, found),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// A name our service can own: `com.victronenergy.battery.<suffix>`, the suffix one valid
/// element.
pub fn valid_service_name(name: &str) -> bool {
    name.starts_with("com.victronenergy.battery.")
        && name.split('.').count() == 4
        && name.rsplit('.').next().is_some_and(valid_name_element)
}

/// One element of a well-known bus name: letters, digits, `_`, `-`, not starting with a digit.
pub fn valid_name_element(element: &str) -> bool {
    !element.is_empty()
        && !element.starts_with(|c: char| c.is_ascii_digit())
        && element
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The lines of the first and the second `key` of the mapping that starts at `line`,
/// `column` (1-based, where the parser places a duplicate entry): both on that line (flow
/// style), else the lines of the block mapping that start with it at that column.
fn occurrences(text: &str, line: usize, column: usize, key: &str) -> Option<(usize, usize)> {
    let starts = |s: &str| {
        let s = s.trim_start_matches(['"', '\'']);
        s.strip_prefix(key).is_some_and(|rest| {
            rest.trim_start_matches(['"', '\''])
                .trim_start()
                .starts_with(':')
        })
    };
    let lines: Vec<&str> = text.lines().collect();
    let rest = lines
        .get(line.checked_sub(1)?)?
        .get(column.saturating_sub(1)..)
        .unwrap_or("");
    let on_line = rest
        .match_indices(key)
        .filter(|(at, _)| {
            let before = rest[..*at].trim_end_matches(['"', '\'']);
            (before.is_empty() || before.ends_with([' ', ',', '{'])) && starts(&rest[*at..])
        })
        .count();
    if on_line >= 2 {
        return Some((line, line));
    }
    let indent = column.checked_sub(1)?;
    let mut found = Vec::new();
    for (index, raw) in lines.iter().enumerate().skip(line - 1) {
        let content = raw.split(" #").next().unwrap_or("");
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut at = content.len() - trimmed.len();
        let mut trimmed = trimmed;
        // A sequence item's first key stands after its `- `.
        if let Some(item) = trimmed.strip_prefix("- ") {
            at += trimmed.len() - item.trim_start().len();
            trimmed = item.trim_start();
        }
        if at < indent {
            break;
        }
        if at == indent && starts(trimmed) {
            found.push(index + 1);
            if let [first, second] = found[..] {
                return Some((first, second));
            }
        }
    }
    None
}

/// The key a block-style line `line` (1-based) starts with, if any.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?;
    let (key, _) = content.trim_start().split_once(':')?;
    let key = key.trim();
    (!key.is_empty() && !key.contains(' ') && !key.starts_with('-')).then(|| key.to_string())
}

/// The 1-based line of the dotted `key` in `text` ([`line_of`]); an item of a list
/// (`curve.voltages[2]`) is found at the list's key.
pub fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let path: Vec<&str> = (key.split('.'))
        .filter(|part| !part.is_empty())
        .map(|part| part.split('[').next().unwrap_or(part))
        .collect();
    line_of(text, &path)
}

/// The 1-based line of the block-style key `path` in `text`, or of its longest prefix found.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (depth matched, line)
    for (index, raw) in text.lines().enumerate() {
        let content = raw.split(" #").next().unwrap_or("");
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = content.len() - trimmed.len();
        let Some((key, _)) = trimmed.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.contains(' ') || key.starts_with('-') {
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let depth = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if depth == stack.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, index + 1));
            if depth == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}
