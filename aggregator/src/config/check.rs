//! Putting a configuration together: parse `config.yaml`, load the plugins it names, and have
//! each plugin check its own section. Used by `check-config` and at start-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugin_api::{CurrentSourceBox, PluginKind, StrategyBox};

use crate::config::{Config, ConfigError, PluginChoice, Source};
use crate::error::Error;
use crate::plugins::{self, Refused, Scan};

/// Below this, `batteries.frozen_after` is warned about.
const FROZEN_WARN: Duration = Duration::from_secs(60);

/// A configuration with its plugins built.
pub struct Ready {
    /// The parsed configuration, with `paths` made absolute.
    pub config: Config,
    /// What the plugins folder held.
    pub scan: Scan,
    /// The strategy, built from its section (an error only from [`check_to_run`]).
    pub strategy: Result<StrategyBox, Failed>,
    /// The current source, built from its section (an error only from [`check_to_run`]).
    pub current_source: Result<CurrentSourceBox, Failed>,
    /// Why no state file is read or written: the fail-safe of a broken file whose state folder
    /// cannot be told (docs/tick.md §6). `None` otherwise.
    pub state_unknown: Option<String>,
}

/// A plugin that was found and loaded but whose constructor refused its section.
#[derive(Clone, Debug)]
pub struct Failed {
    /// The plugin's name.
    pub plugin: String,
    /// The constructor's error text, as the plugin wrote it.
    pub text: String,
    /// The same, one error per line, placed under the section's keys.
    pub errors: Vec<ConfigError>,
}

/// The outcome of a check: what is ready, and every problem found.
pub struct Checked {
    /// Everything, when there was no error.
    pub ready: Option<Ready>,
    /// The errors, each naming file, key and line.
    pub errors: Vec<ConfigError>,
    /// Plugin files that were refused (not errors unless the config selects them).
    pub refused: Vec<Refused>,
}

/// Checks the config file and its plugins; `plugins_dir` overrides `paths.plugins_dir`.
/// Every plugin of the folder is loaded (so duplicates and refusals are reported).
pub fn check(file: &Path, plugins_dir: Option<&Path>) -> Checked {
    check_loading(file, plugins_dir, false)
}

/// What `run` starts from: as [`check`], loading only the two selected plugins when their
/// files are where the build puts them (a loaded library is never unloaded), and with a
/// plugin whose constructor fails handed over as [`Failed`] instead of failing the check.
///
/// Why the constructor alone is contained: a file that does not parse, or that names a plugin
/// that is not there, leaves the host without a configuration or a plugin to run; that is the
/// user's to fix, `check-config` reports it, and `run` exits with the config error code. Once
/// the file parses and the plugin is loaded, the host knows its bounds, its service name and
/// what to publish, and a constructor failing is a plugin fault like any other (docs/guard.md §3:
/// the process keeps running, the tick publishes the fail-safe limits). Exiting would also leave
/// DVCC with no controlling battery and the supervisor restarting the daemon for ever.
/// `check-config` still counts the constructor's errors as errors.
pub fn check_to_run(file: &Path, plugins_dir: Option<&Path>) -> Checked {
    check_loading(file, plugins_dir, true)
}

fn check_loading(file: &Path, plugins_dir: Option<&Path>, to_run: bool) -> Checked {
    match Source::read(file) {
        Ok(source) => check_source(source, file, plugins_dir, to_run),
        Err(err) => Checked {
            ready: None,
            errors: vec![err],
            refused: Vec::new(),
        },
    }
}

/// The config of `shadow:` in `file`: the file with the shadow's strategy (and current
/// source, when it names one) in place of the live ones, and no `shadow:`. `None` when the
/// file has no `shadow:`; the text, to check and run as a config of its own. The error is
/// the YAML parser's, for the caller to place in its file.
pub fn shadow_config_text(text: &str) -> Result<Option<String>, Error> {
    use serde_yaml::Value;
    let mut doc: Value = serde_yaml::from_str(text).map_err(Error::Yaml)?;
    let Some(map) = doc.as_mapping_mut() else {
        return Ok(None);
    };
    let Some(shadow) = map.remove("shadow") else {
        return Ok(None);
    };
    if shadow.is_null() {
        return Ok(None);
    }
    for key in ["strategy", "current_source"] {
        if let Some(choice) = shadow.get(key) {
            map.insert(Value::from(key), choice.clone());
        }
    }
    serde_yaml::to_string(&doc).map(Some).map_err(Error::Yaml)
}

/// An error of the shadow's config as the file has it: its keys under `shadow.`, at their
/// line in the file's `text` (the shadow's own text is the file rewritten).
pub fn shadow_error(error: &ConfigError, text: &str) -> ConfigError {
    let mut error = error.clone();
    if error.key.starts_with("strategy") || error.key.starts_with("current_source") {
        error.key = format!("shadow.{}", error.key);
        error.line = crate::config::line_of_key(text, &error.key);
    }
    error
}

/// The shadow's strategy and current source, built from the file as the daemon runs them.
pub struct ShadowReady {
    /// The shadow's config: the file with the shadow's plugins in place of the live ones.
    pub config: Config,
    /// Its text, for the recordings.
    pub text: String,
    /// The shadow's strategy.
    pub strategy: StrategyBox,
    /// The shadow's current source (the live one's config when it names none).
    pub current_source: CurrentSourceBox,
}

/// `shadow:` of the file `file` (its `text`) checked and built as the daemon runs it, for
/// `check-config` and `run` alike: `Ok(None)` without one; else every error, each under its
/// `shadow.` key: the file's, and a constructor's, the strategy's or the current source's.
pub fn shadow_ready(
    file: &Path,
    text: &str,
    plugins_dir: Option<&Path>,
) -> Result<Option<ShadowReady>, Vec<ConfigError>> {
    let shadow_text = match shadow_config_text(text) {
        Ok(Some(shadow_text)) => shadow_text,
        Ok(None) => return Ok(None),
        Err(err) => {
            return Err(vec![ConfigError {
                file: file.to_path_buf(),
                key: "shadow".into(),
                line: crate::config::line_of(text, &["shadow"]),
                message: err.to_string(),
            }])
        }
    };
    let checked = check_text_to_run(file, shadow_text.clone(), plugins_dir);
    let mut errors: Vec<ConfigError> = checked
        .errors
        .iter()
        .map(|e| shadow_error(e, text))
        .collect();
    let Some(ready) = checked.ready else {
        return Err(errors);
    };
    let failed = |f: &Failed| {
        f.errors
            .iter()
            .map(|e| shadow_error(e, text))
            .collect::<Vec<_>>()
    };
    if let Err(f) = &ready.strategy {
        errors.extend(failed(f));
    }
    if let Err(f) = &ready.current_source {
        errors.extend(failed(f));
    }
    match (ready.strategy, ready.current_source) {
        (Ok(strategy), Ok(current_source)) if errors.is_empty() => Ok(Some(ShadowReady {
            config: ready.config,
            text: shadow_text,
            strategy,
            current_source,
        })),
        _ => Err(errors),
    }
}

/// [`check_to_run`] of a config's text (a shadow's), with `file` for relative paths and
/// error messages.
pub fn check_text_to_run(file: &Path, text: String, plugins_dir: Option<&Path>) -> Checked {
    check_text_loading(file, text, plugins_dir, true)
}

/// [`check`] of a config's text not written yet (an import's), with `file`, where it is to be
/// written, for relative paths and error messages: what `check-config` will say of that file.
pub fn check_text(file: &Path, text: String, plugins_dir: Option<&Path>) -> Checked {
    check_text_loading(file, text, plugins_dir, false)
}

fn check_text_loading(
    file: &Path,
    text: String,
    plugins_dir: Option<&Path>,
    to_run: bool,
) -> Checked {
    let source = Source {
        file: file.to_path_buf(),
        text,
    };
    check_source(source, file, plugins_dir, to_run)
}

fn check_source(source: Source, file: &Path, plugins_dir: Option<&Path>, to_run: bool) -> Checked {
    let fail = |errors| Checked {
        ready: None,
        errors,
        refused: Vec::new(),
    };
    let mut config = match source.parse() {
        Ok(config) => config,
        Err(errors) => return fail(errors),
    };
    resolve_paths(&mut config, file, plugins_dir);

    let scanned = if to_run {
        let names = [
            config.strategy.plugin.as_str(),
            config.current_source.plugin.as_str(),
        ];
        plugins::scan_for(&config.paths.plugins_dir, &names)
    } else {
        plugins::scan(&config.paths.plugins_dir)
    };
    let scan = match scanned {
        Ok(scan) => scan,
        Err(refused) => {
            return fail(vec![source.error("paths.plugins_dir", refused.to_string())]);
        }
    };
    let mut errors = strategy_within_safety(&source, &config);
    // Without either, nothing bounds the CVL when the packs publish no cell count, whatever
    // the strategy, the pass-through included.
    if config.safety.max_charge_voltage.is_none() && config.batteries.cells.is_none() {
        errors.push(
            source.error(
                "safety.max_charge_voltage",
                "is required unless batteries.cells is set: the bank voltage no strategy may \
             exceed (V)"
                    .to_string(),
            ),
        );
    }
    let strategy = build(
        &source,
        &scan,
        "strategy",
        &config.strategy,
        PluginKind::Strategy,
        &mut errors,
        |p, json| p.new_strategy(json),
    );
    let current_source = build(
        &source,
        &scan,
        "current_source",
        &config.current_source,
        PluginKind::CurrentSource,
        &mut errors,
        |p, json| p.new_current_source(json),
    );
    // An own strategy computes its voltages from the cell count; a pass-through one does not
    // need it. Packs may not publish one (CAN BMSs), so check-config asks for it.
    let own_strategy = scan
        .find(&config.strategy.plugin, PluginKind::Strategy)
        .is_some_and(|p| !p.needs_battery_limits);
    if !to_run && own_strategy && config.batteries.cells.is_none() {
        errors.push(source.error(
            "batteries.cells",
            format!(
                "strategy {} computes its limits from the cell count: set batteries.cells \
                 (packs on CAN often publish no /System/NrOfCellsPerBattery)",
                config.strategy.plugin
            ),
        ));
    }
    if !to_run {
        let strategy_failed = strategy.as_ref().and_then(|s| s.as_ref().err());
        let source_failed = current_source.as_ref().and_then(|c| c.as_ref().err());
        for failed in [strategy_failed, source_failed].into_iter().flatten() {
            errors.extend(failed.errors.iter().cloned());
        }
    }
    let refused = scan.refused.clone();
    let ready = match (strategy, current_source) {
        (Some(strategy), Some(current_source)) if errors.is_empty() => Some(Ready {
            config,
            scan,
            strategy,
            current_source,
            state_unknown: None,
        }),
        _ => None,
    };
    Checked {
        ready,
        errors,
        refused,
    }
}

/// The host's part of the voltage orders (docs/guard.md §13): a strategy section's top-level keys
/// named `*_voltage` or `*_voltages`, or holding `cell_voltage` in their name (a cell voltage
/// that sets something off, as `max_cell_voltage_soc_full`), are per-cell voltages by
/// convention, and must lie inside
/// `safety.min_cell_voltage`..=`safety.max_cell_voltage`. The order of the section's own keys
/// (months ≤ balancing < max cell) is the plugin's to check; the host knows the bounds, so it
/// checks against them without an ABI change, for third-party plugins as well. A key named
/// `*_bank_voltage` or `*_bank_voltages` is a voltage of the whole bank, the documented way
/// out (`plugin-api`'s crate docs): not a cell voltage, so not checked here.
fn strategy_within_safety(source: &Source, config: &Config) -> Vec<ConfigError> {
    let Some(section) = config.strategy.config.as_object() else {
        return Vec::new();
    };
    let (low, high) = (
        config.safety.min_cell_voltage,
        config.safety.max_cell_voltage,
    );
    let mut errors = Vec::new();
    for (key, value) in section {
        if key.ends_with("_bank_voltage") || key.ends_with("_bank_voltages") {
            continue;
        }
        if !(key.ends_with("_voltage")
            || key.ends_with("_voltages")
            || key.contains("cell_voltage"))
        {
            continue;
        }
        let values: Vec<(String, f64)> = match value {
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((format!("{key}[{i}]"), v.as_f64()?)))
                .collect(),
            other => other
                .as_f64()
                .map(|v| (key.clone(), v))
                .into_iter()
                .collect(),
        };
        for (name, v) in values {
            if v > high {
                errors.push(source.error(
                    &format!("strategy.config.{key}"),
                    format!("{name} = {v} is above safety.max_cell_voltage ({high})"),
                ));
            } else if v < low {
                errors.push(source.error(
                    &format!("strategy.config.{key}"),
                    format!("{name} = {v} is below safety.min_cell_voltage ({low})"),
                ));
            }
        }
    }
    errors
}

/// What is allowed but will not do what it seems to: a strategy's maximum current above the
/// safety bound it is capped at (its steps above the cap are never published, and DC-coupled
/// feed-in follows the capped CCL). The packs' own limits are known only on the bus; the
/// daemon caps at their sum there, without a word here. And a `batteries.frozen_after` below a
/// minute: long enough for the tick (shorter is refused), but a live pack at rest may change
/// no value for that long (docs/battery-states.md §4).
pub fn warnings(source: &Source, config: &Config) -> Vec<ConfigError> {
    let mut found = Vec::new();
    let frozen = config.batteries.frozen_after;
    if !frozen.is_zero() && frozen < FROZEN_WARN {
        found.push(source.error(
            "batteries.frozen_after",
            format!(
                "{}s is short: a live pack at rest may change no value for a minute or more, \
                 and would be taken as frozen, then lost (the default is 120s)",
                frozen.as_secs_f64()
            ),
        ));
    }
    let Some(section) = config.strategy.config.as_object() else {
        return found;
    };
    for (key, bound, bound_key) in [
        (
            "max_charge_current",
            config.safety.max_charge_current,
            "safety.max_charge_current",
        ),
        (
            "max_discharge_current",
            config.safety.max_discharge_current,
            "safety.max_discharge_current",
        ),
    ] {
        if let Some(asked) = section.get(key).and_then(serde_json::Value::as_f64) {
            if asked > bound {
                found.push(source.error(
                    &format!("strategy.config.{key}"),
                    format!(
                        "{asked} A is above {bound_key} ({bound} A): the published limit is \
                         capped at {bound} A, and the strategy's steps above it never show"
                    ),
                ));
            }
        }
    }
    found
}

/// Makes `paths` and `record.dir` absolute against the config file's folder; `plugins_dir`
/// (the command line's `--plugins-dir`) wins over the file's value.
pub fn resolve_paths(config: &mut Config, file: &Path, plugins_dir: Option<&Path>) {
    let base = file.parent().unwrap_or(Path::new("."));
    config.paths.state_dir = resolve(base, &config.paths.state_dir);
    config.paths.plugins_dir = match plugins_dir {
        Some(dir) => dir.to_path_buf(),
        None => resolve(base, &config.paths.plugins_dir),
    };
    config.record.dir = (config.record.dir.as_deref()).map(|dir| resolve(base, dir));
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Finds the plugin a section selects and builds it. A plugin not found is an error recorded
/// in `errors` (`None`); a constructor's failure comes back as [`Failed`], its errors naming
/// keys.
fn build<T>(
    source: &Source,
    scan: &Scan,
    section: &str,
    choice: &PluginChoice,
    kind: PluginKind,
    errors: &mut Vec<ConfigError>,
    construct: impl Fn(&plugins::Plugin, &str) -> Result<T, aggregator_core::Error>,
) -> Option<Result<T, Failed>> {
    let Some(plugin) = scan.find(&choice.plugin, kind) else {
        errors.push(source.error(
            &format!("{section}.plugin"),
            not_found(scan, &choice.plugin, kind),
        ));
        return None;
    };
    let json = choice.config.to_string();
    Some(construct(plugin, &json).map_err(|err| {
        let text = err.to_string();
        let mut errors: Vec<ConfigError> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| plugin_error(source, section, &choice.plugin, line))
            .collect();
        if errors.is_empty() {
            errors.push(plugin_error(
                source,
                section,
                &choice.plugin,
                "the constructor failed without a message",
            ));
        }
        Failed {
            plugin: choice.plugin.clone(),
            text,
            errors,
        }
    }))
}

fn not_found(scan: &Scan, name: &str, kind: PluginKind) -> String {
    if let Some(other) = scan.plugins.iter().find(|p| p.name == name) {
        return format!(
            "`{name}` is a {} plugin, not a {} plugin",
            other.kind.as_str(),
            kind.as_str()
        );
    }
    let mut known: Vec<&str> = scan
        .plugins
        .iter()
        .filter(|p| p.kind == kind)
        .map(|p| p.name.as_str())
        .collect();
    known.sort_unstable();
    let mut message = format!("no {} plugin named `{name}`", kind.as_str());
    if known.is_empty() {
        message.push_str(" (no plugin of that kind was found)");
    } else {
        message.push_str(&format!("; available: {}", known.join(", ")));
    }
    if let Some(refused) = scan
        .refused
        .iter()
        .find(|r| r.path.to_string_lossy().contains(&name.replace('-', "_")))
    {
        message.push_str(&format!("; refused: {refused}"));
    }
    message
}

/// A plugin's error line reads `key: message` (or just a message); place it under the section.
fn plugin_error(source: &Source, section: &str, plugin: &str, line: &str) -> ConfigError {
    let (key, message) = match line.split_once(": ") {
        Some((key, message)) if !key.is_empty() && !key.contains(' ') => (key, message),
        _ => ("", line),
    };
    let full_key = match key {
        "" => format!("{section}.config"),
        key => format!("{section}.config.{key}"),
    };
    source.error(&full_key, format!("{message} (plugin {plugin})"))
}
