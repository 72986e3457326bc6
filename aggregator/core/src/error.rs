//! The core's one error type: what a plugin refused and what keeps a reading out of the bank.

use std::fmt;

/// Why the core has no value: a plugin's error, or a battery's reading that cannot be merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// A plugin's constructor or step failed: its text as the plugin wrote it (one
    /// `key: message` per line).
    Plugin(String),
    /// The strategy was never built; the source is its constructor's error.
    NotStarted {
        /// The strategy plugin's name.
        strategy: String,
        /// Why its constructor failed.
        source: Box<Error>,
    },
    /// A battery's `/System/NrOfCellsPerBattery` is not the count it is held to.
    CellCount {
        /// The count the battery is held to.
        want: i64,
        /// The count it publishes.
        have: i64,
        /// The count is `batteries.cells`, not the battery's own first count.
        configured: bool,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Plugin(text) => f.write_str(text),
            Error::NotStarted { strategy, source } => {
                write!(f, "strategy {strategy} not started: {source}")
            }
            Error::CellCount {
                want,
                have,
                configured: true,
            } => write!(
                f,
                "/System/NrOfCellsPerBattery is {have}, batteries.cells is {want}"
            ),
            Error::CellCount { want, have, .. } => write!(
                f,
                "/System/NrOfCellsPerBattery changed from {want} to {have}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::NotStarted { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
