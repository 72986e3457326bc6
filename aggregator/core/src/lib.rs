//! The pure core of `dbus-aggregate-batteries`: from typed battery readings to the values and
//! limits to publish, with no I/O, no clock and nothing of D-Bus. The host (the `aggregator`
//! crate) reads the bus, runs the tick and carries out what this returns.
//!
//! ```text
//! readings -> presence (online/stale/lost) -> engine: merge (bank) -> current source
//!     -> Coulomb counter -> strategy -> safety envelope -> degraded bank -> published values
//! ```
//!
//! [`discovery`] decides which services are batteries, [`reading`] is a battery's typed values
//! and the one check of whether they can be merged, [`presence`] tracks each battery over time,
//! [`bank`] merges them, [`coulomb`] counts charge, [`envelope`] enforces the safety bounds on
//! any strategy, [`guard`] the host's cell, temperature and pack-limit rules after it,
//! [`feedin`] owns the feed-in setting, [`episode`] says a lasting condition once, [`engine`]
//! runs one tick over all of them, [`value`] and [`published`] are the D-Bus surface as plain
//! values ([`decimal`] writes their numbers), [`state`] is what survives a restart, [`memory`]
//! what the engine carries between ticks besides it (for a replay that starts mid-run), and
//! [`Error`] is what a plugin or a reading can fail with.

pub mod bank;
pub mod coulomb;
pub mod decimal;
pub mod discovery;
pub mod engine;
pub mod envelope;
pub mod episode;
pub mod error;
pub mod feedin;
pub mod guard;
pub mod listing;
pub mod memory;
pub mod path_hash;
pub mod presence;
pub mod published;
pub mod reading;
pub mod state;
pub mod value;

pub use error::Error;
