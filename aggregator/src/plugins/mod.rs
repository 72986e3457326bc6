//! Finding and loading plugins from disk (docs/commands.md §2).
//!
//! A plugin is a file of `paths.plugins_dir` whose name ends in `.so` (cargo names a cdylib
//! `lib<crate>.so`) exporting the root module of `plugin-api`; other files are skipped.
//! Loading runs code from the file, so a file or folder that others than its owner could have
//! written is refused before it is opened. `abi_stable` then checks that the plugin was built
//! against an ABI this daemon speaks: the same major version, no newer minor version (the
//! policy of `plugin-api`'s crate docs); a plugin built with `panic = "abort"` is refused too,
//! as its first panic would end the daemon. Each refusal is one clear line.
//!
//! Libraries are never unloaded: replacing a plugin means restarting the daemon.

pub mod elf;

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::abi_stability::check_layout_compatibility;
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use abi_stable::std_types::{RStr, RString};
use abi_stable::StableAbi;
use aggregator_core::Error as PluginError;
use plugin_api::{
    Constructor, CurrentSourceBox, HostLogger, LogLevel, LogLevel_NE, PluginKind, PluginModRef,
    StrategyBox, ABI_VERSION,
};

/// A plugin that loaded and passed the ABI checks.
#[derive(Clone)]
pub struct Plugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The name `config.yaml` selects it by.
    pub name: String,
    /// Strategy or current source.
    pub kind: PluginKind,
    /// The plugin's own version.
    pub version: String,
    /// The plugin ABI (`plugin-api` version) it was built against.
    pub abi_version: String,
    /// Its one-line description.
    pub description: String,
    /// A strategy that passes the batteries' own limits on (they must be valid for a battery
    /// to count as online).
    pub needs_battery_limits: bool,
    module: PluginModRef,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("abi_version", &self.abi_version)
            .finish()
    }
}

/// A file (or folder) that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The file or folder.
    pub path: PathBuf,
    /// One line: why.
    pub reason: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for Refused {}

/// Everything found in a plugins folder.
#[derive(Debug, Default)]
pub struct Scan {
    /// The plugins that loaded, by file name.
    pub plugins: Vec<Plugin>,
    /// The files that were refused, by file name.
    pub refused: Vec<Refused>,
    /// The files that were not tried: their names do not end in `.so`.
    pub skipped: Vec<PathBuf>,
}

impl Scan {
    /// The plugin of this name and kind, if one loaded.
    pub fn find(&self, name: &str, kind: PluginKind) -> Option<&Plugin> {
        self.plugins
            .iter()
            .find(|p| p.name == name && p.kind == kind)
    }
}

/// Loads only the plugins named in `names`, from the files that the build names after them
/// (`lib<crate>.so` with `plugin-` + name: `libplugin_lfp_balancing.so`); falls back to
/// [`scan`] when one is not found that way. Loaded libraries stay mapped for the life of the
/// process, so the daemon loads no more than it uses.
pub fn scan_for(dir: &Path, names: &[&str]) -> Result<Scan, Refused> {
    check_not_writable_by_others(dir)?;
    let mut scan = Scan::default();
    for name in names {
        let file = dir.join(format!("libplugin_{}.so", name.replace('-', "_")));
        match load(&file) {
            Ok(plugin) if plugin.name == *name => scan.plugins.push(plugin),
            _ => return scan_all(dir),
        }
    }
    Ok(scan)
}

/// Loads every `*.so` file of `dir` and lists the other files as skipped. Fails only when the
/// folder itself cannot be used.
pub fn scan(dir: &Path) -> Result<Scan, Refused> {
    scan_all(dir)
}

fn scan_all(dir: &Path) -> Result<Scan, Refused> {
    let refuse = |reason: String| Refused {
        path: dir.to_path_buf(),
        reason,
    };
    check_not_writable_by_others(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|err| refuse(format!("cannot list: {err}")))?;
    let mut scan = Scan::default();
    let (mut files, mut skipped): (Vec<PathBuf>, Vec<PathBuf>) = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|entry| entry.path())
        .partition(|path| path.extension().is_some_and(|ext| ext == "so"));
    files.sort();
    skipped.sort();
    scan.skipped = skipped;
    for file in files {
        match load(&file) {
            Ok(plugin) => {
                if let Some(twin) = scan.find(&plugin.name, plugin.kind) {
                    let reason = format!(
                        "a {} plugin named `{}` was already loaded from {}",
                        plugin.kind.as_str(),
                        plugin.name,
                        twin.path.display()
                    );
                    scan.refused.push(Refused { path: file, reason });
                } else {
                    scan.plugins.push(plugin);
                }
            }
            Err(refused) => scan.refused.push(refused),
        }
    }
    Ok(scan)
}

/// Loads one plugin file.
pub fn load(path: &Path) -> Result<Plugin, Refused> {
    let refuse = |reason: String| Refused {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        check_not_writable_by_others(dir)?;
    }
    check_not_writable_by_others(path)?;
    // A link: the folder of the file it leads to, where that file could be swapped.
    if let Ok(real) = std::fs::canonicalize(path) {
        if let Some(dir) = real.parent().filter(|_| real != path) {
            check_not_writable_by_others(dir).map_err(|refused| Refused {
                path: path.to_path_buf(),
                reason: format!("it leads to {}: {}", real.display(), refused.reason),
            })?;
        }
    }
    crate::plugins::elf::check_file(path).map_err(|err| refuse(err.to_string()))?;
    let header = lib_header_from_path(path).map_err(|err| refuse(explain(&err)))?;
    // abi_stable lets a plugin of a newer minor version through to the layout check, whose
    // message does not say which versions met; refuse it here, naming both.
    let plugin_abi = header.version_strings().version.as_str();
    let module = match abi_age(plugin_abi, ABI_VERSION) {
        Some(AbiAge::Same) => header.init_root_module::<PluginModRef>(),
        Some(AbiAge::Older) => older_root_module(header),
        None => return Err(refuse(version_mismatch(plugin_abi))),
    }
    .map_err(|err| refuse(explain(&err)))?;
    let kind = match module.constructor().as_enum() {
        Ok(Constructor::Strategy(_)) => PluginKind::Strategy,
        Ok(Constructor::CurrentSource(_)) => PluginKind::CurrentSource,
        Err(_) => {
            return Err(refuse(format!(
                "a plugin of a kind this daemon does not know (plugin ABI {plugin_abi}, this \
                 daemon {ABI_VERSION})"
            )))
        }
    };
    if !module.unwinds() {
        return Err(refuse(format!(
            "`{}` was built with panic = \"abort\": its first panic would end the daemon; \
             rebuild it with panic = \"unwind\" in its profile (cargo's default; remove \
             `panic = \"abort\"` from [profile.release] of its Cargo.toml)",
            module.name()
        )));
    }
    (module.set_logger())(HostLogger { log: host_log });
    Ok(Plugin {
        path: path.to_path_buf(),
        name: module.name().to_string(),
        kind,
        version: module.version().to_string(),
        abi_version: plugin_abi.to_string(),
        description: module.description().to_string(),
        needs_battery_limits: module.needs_battery_limits(),
        module,
    })
}

/// The root module of a plugin built against an older minor version of the ABI.
///
/// abi_stable checks that the library has every field of the loader's root module, so it
/// refuses a plugin that lacks the fields appended since. The check is made from the plugin's
/// side instead: every field and type it has must match ours, and we may have more.
fn older_root_module(header: &LibHeader) -> Result<PluginModRef, LibraryError> {
    let Some(theirs) = header.layout() else {
        return header.init_root_module::<PluginModRef>();
    };
    check_layout_compatibility(theirs, <PluginModRef as StableAbi>::LAYOUT)
        .into_result()
        .map_err(|err| LibraryError::AbiInstability(err.to_formatted_error()))?;
    // SAFETY: the plugin's root module is a prefix of ours, field by field and type by type
    // (checked just above); the fields it lacks are read only through their accessors, which
    // see from the module's own field count that they are missing and give their default.
    unsafe { header.unchecked_layout::<PluginModRef>() }
        .map_err(|err| err.into_library_error::<PluginModRef>())
}

impl Plugin {
    /// Builds the strategy from its config section (JSON text).
    pub fn new_strategy(&self, config_json: &str) -> Result<StrategyBox, PluginError> {
        match self.module.constructor().as_enum() {
            Ok(Constructor::Strategy(ctor)) => (ctor.new)(RStr::from_str(config_json))
                .into_result()
                .map_err(|err| PluginError::Plugin(err.into_string())),
            _ => Err(PluginError::Plugin(format!(
                "{} is a {}, not a strategy",
                self.name,
                self.kind.as_str()
            ))),
        }
    }

    /// Builds the current source from its config section (JSON text).
    pub fn new_current_source(&self, config_json: &str) -> Result<CurrentSourceBox, PluginError> {
        match self.module.constructor().as_enum() {
            Ok(Constructor::CurrentSource(ctor)) => (ctor.new)(RStr::from_str(config_json))
                .into_result()
                .map_err(|err| PluginError::Plugin(err.into_string())),
            _ => Err(PluginError::Plugin(format!(
                "{} is a {}, not a current source",
                self.name,
                self.kind.as_str()
            ))),
        }
    }

    /// The plugin's config section as the plugin reads it, every default filled in (JSON
    /// text), from the section given (JSON text); parsed, not checked.
    pub fn resolve_config(&self, config_json: &str) -> Result<String, PluginError> {
        (self.module.resolve_config())(RStr::from_str(config_json))
            .into_result()
            .map(RString::into_string)
            .map_err(|err| PluginError::Plugin(err.into_string()))
    }
}

/// Refuses a file or folder that its group or everyone may write, or that another user than
/// root or this program's own owns: whoever can write it could make this daemon, which runs
/// as root on Venus, execute their code.
fn check_not_writable_by_others(path: &Path) -> Result<(), Refused> {
    let refuse = |reason: String| Refused {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|err| refuse(format!("cannot read: {err}")))?;
    let (owner, me) = (unix_owner(&meta), rustix::process::geteuid().as_raw());
    if owner != 0 && owner != me {
        let what = if meta.is_dir() { "folder" } else { "file" };
        return Err(refuse(format!(
            "{what} is owned by user {owner}, neither root nor the user this program runs as \
             ({me}); refused, run `chown root` on it"
        )));
    }
    let mode = unix_mode(&meta);
    if mode & 0o022 != 0 {
        let what = if meta.is_dir() { "folder" } else { "file" };
        return Err(refuse(format!(
            "{what} is writable by others than its owner (mode {:o}); refused, run `chmod go-w` on it",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(unix)]
fn unix_owner(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.uid()
}

#[cfg(not(unix))]
fn unix_owner(_meta: &std::fs::Metadata) -> u32 {
    0
}

#[cfg(unix)]
fn unix_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}

#[cfg(not(unix))]
fn unix_mode(_meta: &std::fs::Metadata) -> u32 {
    0
}

/// One line for `abi_stable`'s multi-line errors; the whole text goes to the debug log.
fn explain(err: &LibraryError) -> String {
    tracing::debug!("plugin load error in full: {err}");
    match err {
        LibraryError::OpenError { err, .. } => {
            format!(
                "not a loadable shared library ({})",
                first_line(&err.to_string())
            )
        }
        LibraryError::GetSymbolError { .. } => {
            "a shared library, but not a dbus-aggregate-batteries plugin (no root module)".into()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            version_mismatch(&actual_version.to_string())
        }
        LibraryError::AbiInstability(details) => {
            let text = details.to_string();
            let summary: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    l.starts_with("Error:") || l.starts_with("Expected:") || l.starts_with("Found:")
                })
                .take(3)
                .collect();
            format!(
                "its ABI types differ from plugin ABI {ABI_VERSION} of this daemon: {}",
                if summary.is_empty() {
                    first_line(&text)
                } else {
                    summary.join(" ")
                }
            )
        }
        LibraryError::InvalidAbiHeader(_) | LibraryError::InvalidCAbi { .. } => {
            "built with an incompatible abi_stable or compiler ABI".into()
        }
        other => first_line(&other.to_string()),
    }
}

/// How the ABI a plugin was built against stands to ours, when we can load it.
#[derive(Debug, PartialEq, Eq)]
enum AbiAge {
    /// The same minor version: abi_stable's own check applies.
    Same,
    /// An older minor version of our major: it may lack fields appended since.
    Older,
}

/// Same major version and no newer minor (a 0.x minor version counts as a major, as in
/// cargo's semver rule and abi_stable's); `None` when the plugin cannot load.
fn abi_age(plugin: &str, host: &str) -> Option<AbiAge> {
    // (major, minor) in cargo's sense: for 0.y.z, 0.y is the major and z the minor version.
    let parts = |v: &str| -> Option<((u64, u64), u64)> {
        let mut it = v.split('.').map(str::parse::<u64>);
        let (x, y) = (it.next()?.ok()?, it.next()?.ok()?);
        Some(if x == 0 {
            ((0, y), it.next()?.ok()?)
        } else {
            ((x, 0), y)
        })
    };
    let ((pmaj, pmin), (hmaj, hmin)) = (parts(plugin)?, parts(host)?);
    match (pmaj == hmaj, pmin.cmp(&hmin)) {
        (true, std::cmp::Ordering::Equal) => Some(AbiAge::Same),
        (true, std::cmp::Ordering::Less) => Some(AbiAge::Older),
        _ => None,
    }
}

fn version_mismatch(plugin_abi: &str) -> String {
    format!(
        "built against plugin ABI {plugin_abi}, but this daemon speaks plugin ABI {ABI_VERSION}; \
         rebuild the plugin against plugin-api {ABI_VERSION} (or update the daemon)"
    )
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}

thread_local! {
    /// Whether the plugins called on this thread work for the `shadow:` engine.
    static SHADOW: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (the `shadow:` engine's work: made, restored, ticked) with the log lines of the
/// plugins it calls starting `shadow: `. One plugin file serves the live and the shadow
/// engine, and its lines name only the plugin: with the same plugin in both (the README's
/// example), a shadow's "CVL increase for balancing activated" would read as the live
/// strategy acting.
pub fn as_shadow<T>(f: impl FnOnce() -> T) -> T {
    let was = SHADOW.replace(true);
    let out = f();
    SHADOW.set(was);
    out
}

/// Receives the plugins' log lines and hands them to `tracing`.
extern "C" fn host_log(level: LogLevel_NE, plugin: RStr<'_>, message: RStr<'_>) {
    let (plugin, message) = (plugin.as_str(), message.as_str());
    let tagged;
    let message = if SHADOW.get() {
        tagged = format!("shadow: {message}");
        tagged.as_str()
    } else {
        message
    };
    match level.as_enum() {
        Ok(LogLevel::Error) => tracing::error!(plugin, "{message}"),
        Ok(LogLevel::Warn) => tracing::warn!(plugin, "{message}"),
        // An unknown level cannot come from a plugin, which is never newer than its host;
        // were it to, the line is logged, not lost.
        Ok(LogLevel::Info) | Err(_) => tracing::info!(plugin, "{message}"),
        Ok(LogLevel::Debug) => tracing::debug!(plugin, "{message}"),
    }
}

/// The plugin ABI version of this daemon, for `plugins` and the start-up log.
pub fn abi_version() -> &'static str {
    PluginModRef::VERSION_STRINGS.version.as_str()
}

#[cfg(test)]
mod tests {
    use super::{abi_age, as_shadow, host_log, AbiAge};
    use abi_stable::std_types::RStr;
    use plugin_api::{LogLevel, LogLevel_NE};

    #[test]
    fn the_shadows_plugin_lines_say_so() {
        let say = || {
            host_log(
                LogLevel_NE::new(LogLevel::Info),
                RStr::from_str("lfp-balancing"),
                RStr::from_str("CVL increase for balancing activated"),
            )
        };
        let lines = crate::testing::logged(tracing::Level::INFO, || {
            say();
            as_shadow(say);
            say();
        });
        let line = |tag: &str| {
            format!("INFO {tag}CVL increase for balancing activated plugin=\"lfp-balancing\"")
        };
        let expected = [line(""), line("shadow: "), line("")];
        let lines: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_plugin_of_our_major_and_no_newer_minor_loads() {
        assert_eq!(abi_age("1.1.0", "1.1.0"), Some(AbiAge::Same));
        assert_eq!(
            abi_age("1.1.4", "1.1.0"),
            Some(AbiAge::Same),
            "patches touch no type"
        );
        assert_eq!(abi_age("1.0.0", "1.1.0"), Some(AbiAge::Older));
        assert_eq!(
            abi_age("1.2.0", "1.1.0"),
            None,
            "a newer minor may need what we lack"
        );
        assert_eq!(abi_age("2.0.0", "1.1.0"), None);
        assert_eq!(abi_age("0.2.0", "1.1.0"), None);
        assert_eq!(abi_age("garbage", "1.1.0"), None);
    }

    #[test]
    fn a_zero_minor_version_counts_as_a_major() {
        assert_eq!(abi_age("0.2.0", "0.2.0"), Some(AbiAge::Same));
        assert_eq!(abi_age("0.2.0", "0.2.1"), Some(AbiAge::Older));
        assert_eq!(abi_age("0.1.0", "0.2.0"), None);
        assert_eq!(abi_age("0.3.0", "0.2.0"), None);
    }
}
