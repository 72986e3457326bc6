//! What a strategy returns: the limits and its requests to the host.

use abi_stable::std_types::RString;
use abi_stable::StableAbi;

/// A request to reset the host's Coulomb counter.
///
/// Crosses the ABI as the non-exhaustive `SocReset_NE`, so that a minor version may add a
/// request.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
pub enum SocReset {
    /// Leave the counter alone.
    None,
    /// The bank is full: set the charge to the installed capacity.
    Full,
    /// The bank is empty: set the charge to 0.
    Empty,
}

/// What to do with the DC-coupled PV feed-in (`/Settings/CGwacs/OvervoltageFeedIn`).
///
/// While feed-in is on, DVCC ignores the CCL for solar chargers, so a strategy that must stop
/// charging asks for it to be disabled. The host saves the user's value when it disables and
/// writes that value back on `Restore`; a strategy never needs to know it. Crosses the ABI as
/// the non-exhaustive `FeedInRequest_NE`.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
pub enum FeedInRequest {
    /// No change this tick.
    Keep,
    /// Turn feed-in off (the host saves the user's value first).
    Disable,
    /// Put the user's saved value back.
    Restore,
}

/// The result of one strategy tick.
#[derive(Clone, Debug, PartialEq)]
pub struct StrategyOutput {
    /// Charge voltage limit for the bank, V (`/Info/MaxChargeVoltage`).
    pub cvl_v: f64,
    /// Charge current limit, A (`/Info/MaxChargeCurrent`), ≥ 0.
    pub ccl_a: f64,
    /// Discharge current limit, A (`/Info/MaxDischargeCurrent`), ≥ 0.
    pub dcl_a: f64,
    /// Counter reset request.
    pub soc_reset: SocReset,
    /// Feed-in request.
    pub feed_in: FeedInRequest,
    /// Short text published as `/Info/ChargeMode`, e.g. `Balancing` or `Normal`.
    pub mode: RString,
    /// True when the strategy's persisted state changed and should be saved now.
    pub state_changed: bool,
}

impl StrategyOutput {
    /// Limits with no requests and an unchanged state.
    pub fn limits(cvl_v: f64, ccl_a: f64, dcl_a: f64, mode: &str) -> Self {
        Self {
            cvl_v,
            ccl_a,
            dcl_a,
            soc_reset: SocReset::None,
            feed_in: FeedInRequest::Keep,
            mode: mode.into(),
            state_changed: false,
        }
    }
}
