//! The simulator's one error type: what `demo`, `simulate` and `publish` fail with, printed
//! once by its `main`, which takes the exit code from [`Error::exit_code`].
//!
//! `Display` gives the whole message as it is printed; `source` gives the cause to a caller
//! that wants to look at it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aggregator::config::check::Failed;
use aggregator::config::ConfigError;
use aggregator::error::{EXIT_CONFIG, EXIT_FAILED};

/// What a command of the simulator's program failed with.
#[derive(Debug)]
pub enum Error {
    /// A scenario that cannot be used: its file, its line or key, and what is wrong.
    Scenario {
        /// The file (or what stands for it: `demo.yaml`).
        file: String,
        /// The line, when the YAML parser knows it.
        line: Option<usize>,
        /// The key, when a check found it wrong.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A file the user named that cannot be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon's side: its program, a flight recording.
    Daemon(aggregator::error::Error),
    /// The configuration's problems, each naming its file, line and key.
    Config(Vec<ConfigError>),
    /// A plugin refused its section: a rehearsal with the fail-safe limits would show nothing.
    Refused {
        /// `strategy` or `current source`.
        kind: &'static str,
        /// The plugin and its errors.
        failed: Failed,
    },
    /// No bus address given (the simulator never takes the system bus by default).
    NoAddress,
    /// The address given is the system bus.
    SystemBus(String),
    /// A simulated service that could not come on the bus.
    Service {
        /// Its bus name.
        name: String,
        /// What failed (`cannot connect to ADDRESS`), when more than the name is worth saying.
        doing: Option<String>,
        /// The bus's error (boxed: zbus's error is large, and every result carries it).
        source: Box<venus_bus::Error>,
    },
    /// Every service that could not come on the bus in one step.
    Services(Vec<Error>),
    /// A file or folder that cannot be written or made.
    File {
        /// The file.
        path: PathBuf,
        /// `cannot write`, `cannot create`.
        doing: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Something of this machine's that failed: `doing` reads after "cannot".
    Io(&'static str, std::io::Error),
    /// The demo's daemon cannot be started.
    Program {
        /// Its file.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The demo's daemon stopped by itself.
    Stopped {
        /// How it ended.
        status: String,
        /// The end of its log.
        log: String,
    },
    /// The scenario has no `start:`, which `simulate` needs.
    NoStart,
    /// `--every` is no whole number of ticks.
    Every {
        /// `--every`.
        every: Duration,
        /// The tick.
        tick: Duration,
    },
    /// More ticks or samples than a rehearsal takes.
    TooLong {
        /// The length simulated.
        length: Duration,
        /// The tick.
        tick: Duration,
        /// What is too many: `ticks` or `samples`.
        what: &'static str,
        /// How many there would be.
        count: f64,
        /// The most taken.
        most: u64,
    },
    /// The scenario's saved state cannot be used.
    State(Vec<String>),
    /// A recorded tick's saved state is no state.
    RecordedState {
        /// The tick.
        tick: u64,
        /// Why.
        source: serde_json::Error,
    },
    /// Nothing to chart.
    NothingSimulated,
    /// The chart cannot be drawn.
    Chart(String),
    /// The replay with the recording's own configuration differs from what was published.
    Differs(String),
    /// A command line this program cannot carry out.
    Usage(String),
}

impl Error {
    /// The exit code `main` returns for this error: 2 for what the user gave (scenario,
    /// config, options, address, recording), 1 for what failed on the way.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Daemon(err) => err.exit_code(),
            Error::Scenario { .. }
            | Error::Read { .. }
            | Error::Config(_)
            | Error::Refused { .. }
            | Error::NoAddress
            | Error::SystemBus(_)
            | Error::NoStart
            | Error::Every { .. }
            | Error::TooLong { .. }
            | Error::State(_)
            | Error::RecordedState { .. }
            | Error::Usage(_) => EXIT_CONFIG,
            Error::Service { .. }
            | Error::Services(_)
            | Error::File { .. }
            | Error::Io(..)
            | Error::Program { .. }
            | Error::Stopped { .. }
            | Error::NothingSimulated
            | Error::Chart(_)
            | Error::Differs(_) => EXIT_FAILED,
        }
    }

    /// The lines to print, each after `error: ` (the configuration's problems one a line).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Error::Config(errors) => errors.iter().map(ToString::to_string).collect(),
            _ => vec![self.to_string()],
        }
    }
}

/// `items` joined with `sep`.
fn joined<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T], sep: &str) -> fmt::Result {
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Scenario {
                file,
                line,
                key,
                message,
            } => {
                f.write_str(file)?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                if let Some(key) = key {
                    write!(f, ": {key}")?;
                }
                write!(f, ": {message}")
            }
            Error::Read { path, source } => {
                write!(f, "{}: cannot read: {source}", path.display())
            }
            Error::Chart(message) | Error::Usage(message) => f.write_str(message),
            Error::Daemon(err) => write!(f, "{err}"),
            Error::Config(errors) => joined(f, errors, "\n"),
            Error::Refused { kind, failed } => {
                write!(f, "{kind} plugin {} refused its section: ", failed.plugin)?;
                joined(f, &failed.errors, "; ")
            }
            Error::NoAddress => f.write_str(
                "no bus address: pass one or set DBUS_SESSION_BUS_ADDRESS (the simulator never \
                 runs on the system bus; start a private bus with `dbus-daemon --session \
                 --print-address --fork`)",
            ),
            Error::SystemBus(address) => write!(
                f,
                "{address} is the system bus; the simulator only runs on a session or private bus"
            ),
            Error::Service {
                name,
                doing: Some(doing),
                source,
            } => write!(f, "{name}: {doing}: {source}"),
            Error::Service { name, source, .. } => write!(f, "{name}: {source}"),
            Error::Services(errors) => joined(f, errors, "; "),
            Error::File {
                path,
                doing,
                source,
            } => write!(f, "{}: {doing}: {source}", path.display()),
            Error::Io(doing, source) => write!(f, "cannot {doing}: {source}"),
            Error::Program { program, source } => {
                write!(f, "cannot start the daemon {}: {source}", program.display())
            }
            Error::Stopped { status, log } => {
                write!(f, "the daemon stopped ({status}); its log:\n{log}")
            }
            Error::NoStart => f.write_str(
                "the scenario has no `start:`; simulate needs the local date to start from (e.g. \
                 `start: 2026-06-15` or `start: 2026-06-15T06:00`), as strategies charge by the \
                 date",
            ),
            Error::Every { every, tick } => write!(
                f,
                "--every ({every:?}) must be a whole number of ticks ({tick:?}, from --tick or the \
                 config's update_interval), and a tick above 0"
            ),
            Error::TooLong {
                length,
                tick,
                what,
                count,
                most,
            } => write!(
                f,
                "{length:?} at a tick of {tick:?} is {count:.0} {what}, more than the {most} a \
                 rehearsal takes: give a shorter --for (or scenario), a longer --tick or --every"
            ),
            Error::State(problems) => {
                f.write_str("the scenario's state: ")?;
                joined(f, problems, "; ")
            }
            Error::RecordedState { tick, source } => {
                write!(f, "tick {tick}: `state` is not a saved state ({source})")
            }
            Error::NothingSimulated => f.write_str("nothing was simulated: no sample to chart"),
            Error::Differs(first) => write!(
                f,
                "with the recording's own config the replay differs first at {first}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Shown whole by `Display`: its own cause, not itself.
            Error::Daemon(err) => err.source(),
            Error::Service { source, .. } => Some(source.as_ref()),
            Error::File { source, .. }
            | Error::Read { source, .. }
            | Error::Io(_, source)
            | Error::Program { source, .. } => Some(source),
            Error::RecordedState { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<aggregator::error::Error> for Error {
    fn from(err: aggregator::error::Error) -> Self {
        Error::Daemon(err)
    }
}
