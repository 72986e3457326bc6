//! The daemon's one error type: what a command fails with, printed once by `main`, which
//! takes its exit code from [`Error::exit_code`].
//!
//! `Display` gives the whole message as it is printed (file, key, line and cause); `source`
//! gives the cause (an I/O error, say) to a caller that wants to look at it. A variant that
//! only wraps another error is transparent: its source is the wrapped error's.

use std::fmt;
use std::path::PathBuf;

use crate::config::ConfigError;
use crate::plugins::Refused;

/// Exit code for configuration errors (and a command line that cannot be carried out).
pub const EXIT_CONFIG: i32 = 2;

/// Exit code for every other failure.
pub const EXIT_FAILED: i32 = 1;

/// What a command of the daemon's program failed with.
#[derive(Debug)]
pub enum Error {
    /// A problem in `config.yaml`, naming its file, line and key.
    Config(ConfigError),
    /// `check-config` found problems (each printed before this): the file and how many.
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// How many problems it has.
        count: usize,
    },
    /// A plugin file or folder that cannot be used.
    Refused(Refused),
    /// A file that is no loadable library for this machine (the caller names the file).
    Elf(String),
    /// A YAML text that cannot be parsed or written (the caller names the file).
    Yaml(serde_yaml::Error),
    /// A text that is no duration (`hint`: with the forms that are).
    Duration {
        /// The text as written.
        text: String,
        /// Whether to name the forms a duration takes.
        hint: bool,
    },
    /// A flight recording that cannot be read: the file when read from one, then where and
    /// what.
    Recording {
        /// The recording's file.
        file: Option<PathBuf>,
        /// The position and what is wrong there.
        message: String,
    },
    /// This program's own file cannot be found.
    Program(Option<std::io::Error>),
    /// Another program of ours cannot take over a subcommand.
    HandOver {
        /// Which program, for which subcommands.
        to: crate::cli::HandOver,
        /// Its file.
        program: PathBuf,
        /// Why it cannot run.
        source: std::io::Error,
    },
    /// `record` found no daemon running this program's file.
    NotRunning(PathBuf),
    /// The async runtime or the signal handlers cannot be set up.
    Runtime(&'static str, std::io::Error),
}

impl Error {
    /// The exit code `main` returns for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::Invalid { .. }
            | Error::Refused(_)
            | Error::Yaml(_)
            | Error::Duration { .. }
            | Error::Recording { .. } => EXIT_CONFIG,
            Error::Elf(_)
            | Error::Program(_)
            | Error::HandOver { .. }
            | Error::NotRunning(_)
            | Error::Runtime(..) => EXIT_FAILED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(err) => write!(f, "{err}"),
            Error::Invalid { file, count } => write!(f, "{}: {count} error(s)", file.display()),
            Error::Refused(refused) => write!(f, "{refused}"),
            Error::Elf(reason) => f.write_str(reason),
            Error::Yaml(err) => write!(f, "{err}"),
            Error::Duration { text, hint } => {
                write!(f, "`{text}` is not a duration")?;
                if *hint {
                    f.write_str("; write e.g. 500ms, 60s, 5m or 1h")?;
                }
                Ok(())
            }
            Error::Recording {
                file: Some(file),
                message,
            } => write!(f, "{}: {message}", file.display()),
            Error::Recording {
                file: None,
                message,
            } => f.write_str(message),
            Error::Program(Some(err)) => write!(f, "cannot find this program: {err}"),
            Error::Program(None) => f.write_str("cannot find this program's file"),
            Error::HandOver {
                to,
                program,
                source,
            } => write!(
                f,
                "{} run by {}: {source} ({})",
                to.commands,
                program.display(),
                to.missing
            ),
            Error::NotRunning(exe) => write!(f, "no running {} found", exe.display()),
            Error::Runtime(what, err) => write!(f, "cannot {what}: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Shown whole by `Display`: their own causes, not themselves.
            Error::Config(err) => err.source(),
            Error::Refused(refused) => refused.source(),
            Error::Yaml(err) => err.source(),
            Error::Program(Some(err))
            | Error::HandOver { source: err, .. }
            | Error::Runtime(_, err) => Some(err),
            _ => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::Config(err)
    }
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        Error::Refused(refused)
    }
}
