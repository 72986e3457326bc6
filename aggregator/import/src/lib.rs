//! `import-config`: the Python program's settings and state files into our `config.yaml` and
//! `state.json`.
//!
//! [`python`] reads a 3.x `settings.py` (evaluating its expressions), [`ini`] a 4.x
//! `config.ini` over its defaults file, [`stored`] the old state files; [`map`] turns the
//! settings into the new keys and a report of what each one became. Nothing is written unless
//! everything was read and the result parses; both files are written atomically.

pub mod cli;
mod ini;
mod map;
mod python;
mod stored;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use plugin_api::LocalDate;

use aggregator::state_file::{create_folder, write_atomically, StateStore};

/// A setting's value, as Python held it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A list or tuple.
    List(Vec<Value>),
}

impl Value {
    /// Python's truth value.
    pub fn truthy(&self) -> bool {
        match self {
            Value::None => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(items) => !items.is_empty(),
        }
    }

    /// What kind of value it is, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
        }
    }

    /// The number, for ints, floats and bools.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as Python prints it (`repr`), for the report.
    pub fn repr(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(true) => "True".into(),
            Value::Bool(false) => "False".into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => python_float(*f),
            Value::Str(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Value::List(items) => format!(
                "[{}]",
                items.iter().map(Value::repr).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// Python's `repr(float)`: the shortest text that reads back, `.0` on whole numbers.
pub fn python_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "nan"
        } else if f > 0.0 {
            "inf"
        } else {
            "-inf"
        }
        .into();
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        return format!(
            "{mantissa}e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.abs()
        );
    }
    let text = f.to_string();
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// Which program's settings file was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `settings.py` (up to 3.x).
    SettingsPy,
    /// `config.ini` over `config.default.ini` (4.x).
    ConfigIni,
}

/// One setting in effect, with where it was set.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Its value.
    pub value: Value,
    /// The line of its assignment.
    pub line: usize,
    /// Not in the user's file: the defaults file's (or the 4.x default) value.
    pub from_defaults: bool,
}

/// The settings of the old program, in the order of the file.
#[derive(Clone, Debug)]
pub struct OldSettings {
    /// The file read.
    pub file: PathBuf,
    /// Its kind.
    pub format: Format,
    /// The defaults file beside a `config.ini` (none: the 4.x defaults built in).
    pub defaults_file: Option<PathBuf>,
    names: Vec<String>,
    entries: HashMap<String, Entry>,
}

impl OldSettings {
    /// No settings yet, from `file`.
    pub fn new(file: &Path) -> Self {
        Self {
            file: file.to_path_buf(),
            format: Format::SettingsPy,
            defaults_file: None,
            names: Vec::new(),
            entries: HashMap::new(),
        }
    }

    /// Sets `name`; a second assignment replaces the first, at its own line.
    pub fn insert(&mut self, name: &str, value: Value, line: usize, from_defaults: bool) {
        let entry = Entry {
            value,
            line,
            from_defaults,
        };
        if self.entries.insert(name.to_string(), entry).is_none() {
            self.names.push(name.to_string());
        }
    }

    /// The setting `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The names, in the order they were first set.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The file a setting came from, for the report and errors.
    pub fn file_of(&self, name: &str) -> PathBuf {
        match (self.get(name), &self.defaults_file) {
            (Some(e), Some(defaults)) if e.from_defaults => defaults.clone(),
            _ => self.file.clone(),
        }
    }
}

/// A problem with the old files: the file, the line and the setting where known. The
/// importer's one error type.
#[derive(Clone, Debug)]
pub struct ImportError {
    /// The file.
    pub file: PathBuf,
    /// Its line.
    pub line: Option<usize>,
    /// The setting.
    pub setting: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The system's error, for a file that cannot be read or written.
    pub source: Option<std::sync::Arc<std::io::Error>>,
}

impl ImportError {
    /// An error at a line of `file`.
    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: Some(line),
            setting: None,
            message: message.into(),
            source: None,
        }
    }

    /// An error about a whole file.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            setting: None,
            message: message.into(),
            source: None,
        }
    }

    /// The exit code `main` returns for it: every import error is the old files' or the
    /// command line's.
    pub fn exit_code(&self) -> i32 {
        aggregator::error::EXIT_CONFIG
    }

    /// A file that cannot be read or written (`doing`: `cannot read`).
    pub fn io(file: &Path, doing: &str, err: std::io::Error) -> Self {
        Self {
            message: format!("{doing}: {err}"),
            source: Some(std::sync::Arc::new(err)),
            ..Self::file(file, String::new())
        }
    }
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(setting) = &self.setting {
            write!(f, ": {setting}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|err| err as &(dyn std::error::Error + 'static))
    }
}

/// What `import-config` was asked to do.
#[derive(Clone, Debug)]
pub struct Request {
    /// `settings.py` or `config.ini`.
    pub from: PathBuf,
    /// The folder of the old state files.
    pub state_from: Option<PathBuf>,
    /// The `config.yaml` to write.
    pub out: PathBuf,
    /// Replace existing files.
    pub force: bool,
    /// The user's feed-in value, which the old program held at 0 when it was stopped.
    pub user_feed_in: Option<i64>,
    /// Where the plugins the import asks are (`--plugins-dir`); see [`plugins_folder`].
    pub plugins_dir: Option<PathBuf>,
    /// Bounds the command line gives (`--cell-voltages`, `--max-currents`).
    pub given: Given,
}

pub use map::Given;

/// The folder of the plugins the import asks for their defaults: `--plugins-dir`, else the
/// device's plugins folder where it exists, else `plugins` beside this program (a bundle's
/// layout, as `install/migrate.sh` runs it), else this program's own folder (where cargo
/// builds the plugins).
pub fn plugins_folder(given: Option<&Path>) -> Result<PathBuf, map::ResolveError> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    let device = aggregator::config::Paths::default().plugins_dir;
    if device.is_dir() {
        return Ok(device);
    }
    let program = aggregator::cli::program_dir()?;
    let beside = program.join("plugins");
    Ok(if beside.is_dir() { beside } else { program })
}

/// Asks the `lfp-balancing` plugin of `folder` for its config section as it reads it.
fn resolve_lfp(folder: &Path, json: &str) -> Result<String, map::ResolveError> {
    let scan = aggregator::plugins::scan_for(folder, &["lfp-balancing"])?;
    let plugin = scan
        .find("lfp-balancing", plugin_api::PluginKind::Strategy)
        .ok_or_else(|| {
            format!(
                "no lfp-balancing plugin in {} (name the folder with --plugins-dir)",
                folder.display()
            )
        })?;
    Ok(plugin.resolve_config(json)?)
}

/// The folder, relative to the written config, that its `paths.state_dir` names.
pub const STATE_DIR: &str = "state";

/// Reads the old files, writes `config.yaml` (and `state/state.json`), returns the report.
/// `today` places the old day-of-year balancing date in the calendar.
pub fn import(request: &Request, today: LocalDate) -> Result<String, ImportError> {
    let out_dir = match request.out.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let state_store = StateStore::new(out_dir.join(STATE_DIR));
    let mut targets = vec![request.out.clone()];
    if request.state_from.is_some() {
        targets.push(state_store.path());
    }
    if !request.force {
        if let Some(existing) = targets.iter().find(|t| t.exists()) {
            return Err(ImportError::file(
                existing,
                "exists already; pass --force to replace it",
            ));
        }
    }

    let settings = read_settings(&request.from)?;
    // The plugin is loaded only when the settings need what it derives.
    let resolve = |json: &str| resolve_lfp(&plugins_folder(request.plugins_dir.as_deref())?, json);
    let mut mapped = map::map(
        &settings,
        &request.out,
        request.state_from.is_some(),
        request.given,
        &resolve,
    )?;
    let state = match &request.state_from {
        Some(dir) => {
            let (mut state, rows) = stored::read(dir, &mapped.strategy, today)?;
            mapped.state_rows = rows;
            if let Some(value) = request.user_feed_in {
                // Taken over as an episode of our own: the value goes back once no cause
                // holds feed-in off, instead of the 0 the old program left being taken as
                // the user's.
                state.feed_in = aggregator_core::feedin::FeedIn {
                    disabled_by_us: true,
                    saved_value: Some(value),
                    ..Default::default()
                };
                mapped.state_rows.push(map::Row::became(
                    format!("--user-feed-in {value}"),
                    vec![
                        ("feed_in.disabled_by_us".into(), "true".into()),
                        ("feed_in.saved_value".into(), value.to_string()),
                    ],
                ));
            }
            Some(state)
        }
        None if request.user_feed_in.is_some() => {
            return Err(ImportError::file(
                &request.from,
                "--user-feed-in is kept in the state: it needs --state-from",
            ));
        }
        None => None,
    };

    // Required bounds are never made up: without them there is no config to write.
    if !mapped.missing.is_empty() {
        let how = if mapped.missing_how.is_empty() {
            "add the settings they come from, or write config.yaml by hand".to_string()
        } else {
            mapped.missing_how.join("; ")
        };
        return Err(ImportError::file(
            &request.from,
            format!(
                "the old settings give no value for {}, which the config requires; nothing was \
                 written ({how})",
                mapped.missing.join(", ")
            ),
        ));
    }
    // Checked as `check-config` checks the written file, plugins included: a config the
    // daemon or a plugin refuses is never written, and the error names the old settings.
    let plugins = plugins_folder(request.plugins_dir.as_deref()).map_err(|err| {
        ImportError::file(
            &request.from,
            format!("cannot find the plugins to check the imported config with: {err}"),
        )
    })?;
    let checked =
        aggregator::config::check::check_text(&request.out, mapped.yaml.clone(), Some(&plugins));
    let warnings = match &checked.ready {
        Some(ready) => {
            let source = aggregator::config::Source {
                file: request.out.clone(),
                text: mapped.yaml.clone(),
            };
            aggregator::config::check::warnings(&source, &ready.config)
        }
        None => return Err(mapped.refused(&request.from, &plugins, &checked.errors)),
    };

    if let Some(state) = &state {
        state_store
            .save(state)
            .map_err(|e| ImportError::io(&state_store.path(), "cannot write", e))?;
    }
    if let Some(folder) = request.out.parent().filter(|f| !f.as_os_str().is_empty()) {
        create_folder(folder).map_err(|e| ImportError::io(folder, "cannot create", e))?;
    }
    write_atomically(&request.out, mapped.yaml.as_bytes())
        .map_err(|e| ImportError::io(&request.out, "cannot write", e))?;
    let mut report = mapped.report(
        &settings,
        request,
        state.is_some().then(|| state_store.path()),
    );
    for warning in warnings {
        report.push_str(&format!("warning: {warning}\n"));
    }
    Ok(report)
}

/// Reads `settings.py` or `config.ini` (told apart by the name, else by a `[section]` line).
pub fn read_settings(file: &Path) -> Result<OldSettings, ImportError> {
    let text =
        std::fs::read_to_string(file).map_err(|e| ImportError::io(file, "cannot read", e))?;
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let is_ini = match extension {
        "ini" => true,
        "py" => false,
        _ => text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
            .is_some_and(|l| l.starts_with('[')),
    };
    if is_ini {
        ini::read(file, &text)
    } else {
        python::read(file, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_does() {
        assert_eq!(python_float(2.45), "2.45");
        assert_eq!(python_float(200.0), "200.0");
        assert_eq!(python_float(2.9 + 0.05), "2.9499999999999997");
        assert_eq!(python_float(1e16), "1e+16");
        assert_eq!(python_float(0.00001), "1e-05");
        assert_eq!(python_float(0.0025), "0.0025");
    }
}
