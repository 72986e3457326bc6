//! Logging from inside a plugin.
//!
//! A plugin is a separate shared library with its own copy of every static, so the host's
//! `tracing` subscriber is not visible in it. The host hands over a [`HostLogger`] right after
//! loading; [`log`] forwards each line through it. Before that, lines are dropped.

use std::sync::OnceLock;

use abi_stable::std_types::RStr;
use abi_stable::StableAbi;

/// Severity of a log line. Crosses the ABI as the non-exhaustive `LogLevel_NE`, so that a minor
/// version may add a level.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug))))]
pub enum LogLevel {
    /// Something is wrong and the plugin falls back to a safe value.
    Error,
    /// Something unusual the user should know of.
    Warn,
    /// A change of mode or state.
    Info,
    /// Detail for troubleshooting.
    Debug,
}

/// The host's log sink, handed to the plugin once after loading.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct HostLogger {
    /// Writes one line: level, the plugin's name, the message.
    pub log: extern "C" fn(level: LogLevel_NE, plugin: RStr<'_>, message: RStr<'_>),
}

static LOGGER: OnceLock<(HostLogger, &'static str)> = OnceLock::new();

/// Installs the host's logger (called by the code [`crate::export_plugin!`] generates).
pub fn install(logger: HostLogger, plugin: &'static str) {
    let _ = LOGGER.set((logger, plugin));
}

/// Sends one line to the host's log.
pub fn log(level: LogLevel, message: &str) {
    if let Some((logger, plugin)) = LOGGER.get() {
        (logger.log)(
            LogLevel_NE::new(level),
            RStr::from_str(plugin),
            RStr::from_str(message),
        );
    }
}

/// Logs at [`LogLevel::Info`].
pub fn info(message: &str) {
    log(LogLevel::Info, message);
}

/// Logs at [`LogLevel::Error`].
pub fn error(message: &str) {
    log(LogLevel::Error, message);
}

/// Logs at [`LogLevel::Debug`].
pub fn debug(message: &str) {
    log(LogLevel::Debug, message);
}

/// Logs at [`LogLevel::Warn`].
pub fn warn(message: &str) {
    log(LogLevel::Warn, message);
}
