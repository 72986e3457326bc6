//! The command line (docs/commands.md §1): what each subcommand does, for `main` to call.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config::check::{check, resolve_paths};
pub use crate::error::{Error, EXIT_CONFIG, EXIT_FAILED};
pub use crate::log_output::{LogOutput, FLUSH_LIMIT};
use crate::plugins;

/// The program that runs `demo`, `simulate` and `publish`, built beside the daemon but never installed on
/// a device: the daemon's binary holds none of the simulator's code, which it would otherwise
/// carry into memory on every device.
pub const SIMULATOR_PROGRAM: &str = "dbus-aggregate-batteries-sim";

/// The program that runs `import-config`, installed beside the daemon (a device imports the
/// Python program's settings once): the daemon's binary holds none of the importer's code.
pub const IMPORTER_PROGRAM: &str = "dbus-aggregate-batteries-import";

/// The daemon's program, which `demo` starts.
pub const DAEMON_PROGRAM: &str = "dbus-aggregate-batteries";

/// Where the config lives on a Venus OS device.
pub const DEFAULT_CONFIG: &str = "/data/apps/dbus-aggregate-batteries/config.yaml";

/// Merges parallel batteries into one virtual battery for Victron Venus OS.
#[derive(Debug, Parser)]
#[command(name = "dbus-aggregate-batteries", version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Load plugins from this folder instead of `paths.plugins_dir`.
    #[arg(long, global = true)]
    pub plugins_dir: Option<PathBuf>,
    /// What to do (default: `run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: read the batteries, publish the aggregate battery (the default).
    Run,
    /// Check the configuration and every plugin's section; exit 2 on any error.
    CheckConfig,
    /// List the plugins found, with kind, version and ABI status.
    Plugins,
    /// Turn the Python program's settings (`settings.py` or `config.ini`) and state files into
    /// a `config.yaml` (and `state/state.json` beside it), and print what each setting became.
    ImportConfig(ImportArgs),
    /// Start a private D-Bus with a simulated Venus OS system (two batteries charging and
    /// discharging) and the daemon, and show a live table; Ctrl-C stops everything.
    Demo {
        /// Stop after this long (e.g. `30s`); default: until Ctrl-C.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
    },
    /// Rehearse a strategy offline: run the configured plugins, counter and safety envelope
    /// on a scenario's simulated batteries in simulated time (a day takes seconds), and write
    /// `simulate.csv` and a chart, `simulate.svg`, into the output folder.
    Simulate {
        /// The scenario (YAML) with a `start:` date.
        #[arg(long, required_unless_present = "replay")]
        scenario: Option<PathBuf>,
        /// Replay a flight recording instead of a scenario (`replay.csv`, `replay.svg`): with
        /// its own configuration, unless `--config` names another.
        #[arg(long, conflicts_with = "scenario")]
        replay: Option<PathBuf>,
        /// The folder to write `simulate.csv` and `simulate.svg` into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Simulated time between two ticks; default: the config's `update_interval`.
        #[arg(long, value_parser = parse_duration)]
        tick: Option<std::time::Duration>,
        /// Simulated time between two rows of the CSV.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        every: std::time::Duration,
        /// How long to run; default: one pass through the scenario's segments.
        #[arg(long = "for", value_parser = parse_duration)]
        length: Option<std::time::Duration>,
    },
    /// Ask the running daemon to save its flight recording now (SIGUSR1 to every process of
    /// this program but this one); the file appears in `record.dir`, by default
    /// `recordings` in `paths.state_dir`.
    Record,
    /// Publish simulated Venus OS services from a scenario file on a session bus (never on the
    /// system bus), in real time: for tests and trials.
    Publish {
        /// The scenario (YAML); default: the demo's.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// The bus address; default: `DBUS_SESSION_BUS_ADDRESS`.
        #[arg(long)]
        address: Option<String>,
    },
}

/// `import-config --from FILE [--state-from DIR] --out FILE [--force]`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The old program's `settings.py` (3.x) or `config.ini` (4.x; its `config.default.ini`
    /// beside it is read first).
    #[arg(long)]
    pub from: PathBuf,
    /// The folder of the old state files (`charge`, `last_balancing`, `storedvalue_*`).
    #[arg(long)]
    pub state_from: Option<PathBuf>,
    /// The `config.yaml` to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing `--out` file (and `state/state.json`).
    #[arg(long)]
    pub force: bool,
    /// The user's own DC-coupled feed-in setting, 0 or 1 (`/Settings/CGwacs/OvervoltageFeedIn`),
    /// when the old program was stopped while it held it at 0: the daemon writes it back once
    /// nothing keeps feed-in off (needs `--state-from`).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..=1))]
    pub user_feed_in: Option<i64>,
    /// The cells' lowest and highest voltage, V (`2.9:3.65`): `safety.min_cell_voltage` and
    /// `max_cell_voltage` for pass-through settings, whose cell voltages the old program never
    /// used (wins over them).
    #[arg(long, value_name = "MIN:MAX", value_parser = parse_pair)]
    pub cell_voltages: Option<(f64, f64)>,
    /// The bank's highest charge and discharge current, A (`200:300`): `safety.max_charge_current`
    /// and `max_discharge_current` for pass-through settings, where the old program capped
    /// neither.
    #[arg(long, value_name = "CHARGE:DISCHARGE", value_parser = parse_pair)]
    pub max_currents: Option<(f64, f64)>,
}

/// `A:B`, two numbers above 0 with the first below the second where they are a range.
fn parse_pair(text: &str) -> Result<(f64, f64), String> {
    let number = |part: &str| {
        part.trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .ok_or_else(|| format!("`{part}` is not a number above 0"))
    };
    let (a, b) = text
        .split_once(':')
        .ok_or_else(|| format!("expected two numbers as A:B, found `{text}`"))?;
    Ok((number(a)?, number(b)?))
}

fn parse_duration(text: &str) -> Result<std::time::Duration, Error> {
    crate::config::parse_duration(text)
}

/// `record` sends SIGUSR1 to every process of this program, and the signal's default action
/// ends a process. Ignored from the start, until the daemon's loop takes it (docs/commands.md):
/// a daemon still connecting to the bus, or a `check-config` that `enable.sh` runs meanwhile,
/// must not be ended by a request for a recording.
pub fn ignore_recording_requests() {
    // SAFETY: sets one signal's disposition to "ignore", before any thread is started; no
    // handler of ours runs.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
}

/// Logs to stdout at `level`, plain lines without colours; the bus library's own chatter only
/// from warnings up. Time stamps only when stdout is a terminal: under daemontools it is the
/// pipe to multilog, which stamps every line itself, and so is any other supervisor's. Each
/// line is written as it is logged: for the commands that print a report between the lines.
pub fn init_logging(level: tracing::Level) {
    install_logging(level, std::io::stdout);
}

/// The daemon's logging (`run`): [`init_logging`]'s lines, through a bounded buffer that a
/// thread of its own writes to stdout, so that a log nobody reads never holds the tick
/// (docs/tick.md §8). Panics are logged there too. The output, to flush at exit.
pub fn init_daemon_logging(level: tracing::Level) -> Option<LogOutput> {
    use std::os::fd::AsFd;
    // Its own descriptor of stdout: the writer thread never holds `std::io::stdout()`'s lock.
    let out: Box<dyn Write + Send> = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    };
    let notice = |count| {
        crate::log_output::capture(|| {
            tracing::warn!("{count} log lines dropped while the log output was blocked")
        })
    };
    match LogOutput::start(out, crate::log_output::BUFFER_BYTES, notice) {
        Ok(output) => {
            install_logging(level, output.clone());
            output.take_panics();
            Some(output)
        }
        Err(err) => {
            init_logging(level);
            tracing::warn!("no thread for the log output ({err}): lines go to stdout directly");
            None
        }
    }
}

fn install_logging<W>(level: tracing::Level, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = Targets::new()
        .with_default(LevelFilter::from_level(level))
        .with_target(
            "zbus",
            LevelFilter::WARN.min(LevelFilter::from_level(level)),
        );
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    if std::io::stdout().is_terminal() {
        registry.with(lines).init();
    } else {
        registry.with(lines.without_time()).init();
    }
}

impl Cli {
    /// The command line of the program `name`, which its usage and `--version` name.
    pub fn parse_as(name: &'static str) -> Cli {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().name(name).bin_name(name).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }
}

/// This program's folder: where cargo builds all the programs and plugins, and where they are
/// installed together.
pub fn program_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::Program(Some(e)))?;
    let dir = exe.parent().ok_or(Error::Program(None))?;
    Ok(dir.to_path_buf())
}

/// The program `name` in [`program_dir`].
pub fn sibling(name: &str) -> Result<PathBuf, Error> {
    Ok(program_dir()?.join(name))
}

/// A program of ours beside the daemon's that runs some of its subcommands.
#[derive(Clone, Copy, Debug)]
pub struct HandOver {
    /// Its file name, in [`program_dir`].
    pub program: &'static str,
    /// The subcommands it runs, for the error message (`` `import-config` ``).
    pub commands: &'static str,
    /// How to get it when it is missing.
    pub missing: &'static str,
}

/// `demo`, `simulate` and `publish`: the simulator's program.
pub const TO_SIMULATOR: HandOver = HandOver {
    program: SIMULATOR_PROGRAM,
    commands: "`demo`, `simulate` and `publish` are",
    missing: "it is built with `cargo build --workspace --release`; devices do not need it",
};

/// `import-config`: the importer's program.
pub const TO_IMPORTER: HandOver = HandOver {
    program: IMPORTER_PROGRAM,
    commands: "`import-config` is",
    missing: "it is built with `cargo build --workspace --release` and installed beside the daemon",
};

/// A subcommand of the daemon's program that another program of ours runs: that program takes
/// over this process with the same arguments. Returns only when it cannot, with why.
pub fn hand_over(to: HandOver) -> Error {
    use std::os::unix::process::CommandExt;
    let program = match sibling(to.program) {
        Ok(program) => program,
        Err(err) => return err,
    };
    let source = std::process::Command::new(&program)
        .args(std::env::args_os().skip(1))
        .exec();
    Error::HandOver {
        to,
        program,
        source,
    }
}

/// The log level `config.yaml` asks for (`info` when it cannot be read: `run` reports why).
pub fn log_level(config: &Path) -> tracing::Level {
    use crate::config::Level;
    match crate::config::Source::read(config).map(|s| s.parse()) {
        Ok(Ok(parsed)) => match parsed.logging.level {
            Level::Error => tracing::Level::ERROR,
            Level::Warn => tracing::Level::WARN,
            Level::Info => tracing::Level::INFO,
            Level::Debug => tracing::Level::DEBUG,
        },
        _ => tracing::Level::INFO,
    }
}

/// `record`: SIGUSR1 to the daemons running this program's file (found in `/proc`, so that
/// no pid file is written to flash); an error when none runs.
pub fn ask_recording(config: &Path, out: &mut impl Write) -> Result<(), Error> {
    let me = std::process::id();
    let exe = std::env::current_exe().and_then(std::fs::canonicalize);
    let Ok(exe) = exe else {
        return Err(Error::Program(None));
    };
    let mut asked = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || std::fs::read_link(entry.path().join("exe")).ok() != Some(exe.clone()) {
            continue;
        }
        let Ok(pid_t) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) with a pid read from /proc and a constant signal; no memory shared.
        if unsafe { libc::kill(pid_t, libc::SIGUSR1) } == 0 {
            asked.push(pid);
        }
    }
    if asked.is_empty() {
        return Err(Error::NotRunning(exe));
    }
    let folder = match crate::config::Source::read(config).map(|s| s.parse()) {
        Ok(Ok(mut parsed)) => {
            resolve_paths(&mut parsed, config, None);
            parsed.record.folder(&parsed.paths).display().to_string()
        }
        _ => "record.dir (default: recordings in paths.state_dir)".to_string(),
    };
    for pid in asked {
        let _ = writeln!(
            out,
            "asked process {pid} to save its recording; it goes into {folder} (the daemon's log names the file)"
        );
    }
    Ok(())
}

/// The `shadow:` section's strategy and current source built from their sections as the
/// daemon builds them; their errors printed under `shadow.` keys. Returns how many there are.
fn check_shadow(
    config: &Path,
    text: &str,
    plugins_dir: Option<&Path>,
    out: &mut impl Write,
) -> usize {
    match crate::config::check::shadow_ready(config, text, plugins_dir) {
        Ok(_) => 0,
        Err(errors) => {
            for error in &errors {
                let _ = writeln!(out, "error: {error}");
            }
            errors.len()
        }
    }
}

/// Prints a command's error where the command printed its report: `error: ` before it, except
/// `check-config`'s summary, which follows the errors it counts.
pub fn print_error(err: &Error, out: &mut impl Write) {
    let _ = match err {
        Error::Invalid { .. } => writeln!(out, "{err}"),
        _ => writeln!(out, "error: {err}"),
    };
}

/// A command's exit code as `main` returns it (one outside 0..=255 as 1, a failure).
pub fn exit_code(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// `check-config`: prints every problem; an error counting them when there is one.
pub fn check_config(
    config: &Path,
    plugins_dir: Option<&Path>,
    out: &mut impl Write,
) -> Result<(), Error> {
    let checked = check(config, plugins_dir);
    for refused in &checked.refused {
        let _ = writeln!(out, "warning: plugin refused: {refused}");
    }
    for error in &checked.errors {
        let _ = writeln!(out, "error: {error}");
    }
    match checked.ready {
        Some(ready) => {
            if let Ok(source) = crate::config::Source::read(config) {
                for warning in crate::config::check::warnings(&source, &ready.config) {
                    let _ = writeln!(out, "warning: {warning}");
                }
                let count = check_shadow(config, &source.text, plugins_dir, out);
                if count > 0 {
                    return Err(Error::Invalid {
                        file: config.to_path_buf(),
                        count,
                    });
                }
            }
            let _ = writeln!(
                out,
                "{}: ok (strategy {}, current source {}, plugins from {})",
                config.display(),
                ready.config.strategy.plugin,
                ready.config.current_source.plugin,
                ready.config.paths.plugins_dir.display()
            );
            Ok(())
        }
        None => Err(Error::Invalid {
            file: config.to_path_buf(),
            count: checked.errors.len(),
        }),
    }
}

/// `plugins`: lists what the plugins folder holds.
pub fn list_plugins(
    config: &Path,
    plugins_dir: Option<&Path>,
    out: &mut impl Write,
) -> Result<(), Error> {
    let dir = match plugins_dir {
        Some(dir) => dir.to_path_buf(),
        None => match crate::config::Source::read(config)
            .and_then(|s| s.parse().map_err(|mut e| e.remove(0)))
        {
            Ok(mut parsed) => {
                resolve_paths(&mut parsed, config, None);
                parsed.paths.plugins_dir
            }
            Err(err) => return Err(err.into()),
        },
    };
    let _ = writeln!(
        out,
        "plugins in {} (this daemon: plugin ABI {})",
        dir.display(),
        plugins::abi_version()
    );
    let scan = plugins::scan(&dir)?;
    for p in &scan.plugins {
        let file = p.path.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "  {:<16} {:<15} {:<8} ABI ok {:<6} {}  ({file})",
            p.name,
            p.kind.as_str(),
            p.version,
            p.abi_version,
            p.description
        );
    }
    for r in &scan.refused {
        let file = r.path.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(out, "  refused {file}: {}", r.reason);
    }
    for path in &scan.skipped {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let _ = writeln!(
            out,
            "  skipped {file}: not a plugin file name (plugin files end in .so, as cargo names \
             a cdylib: lib<crate>.so)"
        );
    }
    if scan.plugins.is_empty() {
        let _ = writeln!(out, "  (no plugin found)");
    }
    Ok(())
}
