//! The stable ABI between `dbus-aggregate-batteries` and its plugins.
//!
//! A plugin is a `cdylib` crate that depends on this crate (and on `abi_stable` of the same
//! version), implements one of two kinds, and exports its root module with
//! [`export_plugin!`]:
//!
//! * a **strategy** ([`StrategyImpl`]) turns the [`BankView`] of a tick into the charge limits
//!   and requests of a [`StrategyOutput`];
//! * a **current source** ([`CurrentSourceImpl`]) turns the [`CurrentInputs`] of a tick (the
//!   Multi, solar chargers and SmartShunts) into the bank current, or `None` when it cannot.
//!
//! Plugins never touch D-Bus, files or the clock: they get a snapshot and return values. The
//! host loads each plugin with `abi_stable`, which checks the layout of every type the plugin
//! shares with the host (see [ABI versions](#abi-versions-which-plugins-load)). A panic inside
//! a plugin is caught on the plugin's side by the code [`export_plugin!`] generates and reaches
//! the host as an error; the host's safety envelope then takes over.
//!
//! # A whole strategy plugin
//!
//! ```
//! use plugin_api::{parse_checked, BankView, Checker, PluginConfig, StrategyImpl, StrategyOutput};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     #[serde(default = "default_cell_v")]
//!     cell_voltage: f64,
//! }
//! fn default_cell_v() -> f64 { 3.45 }
//!
//! impl PluginConfig for Config {
//!     fn check(&self) -> Result<(), String> {
//!         let mut checker = Checker::new();
//!         checker.positive("cell_voltage", self.cell_voltage);
//!         checker.finish()
//!     }
//! }
//!
//! struct Fixed {
//!     config: Config,
//!     blocked: bool,
//! }
//!
//! impl StrategyImpl for Fixed {
//!     fn compute(&mut self, bank: &BankView) -> Result<StrategyOutput, String> {
//!         let cvl = self.config.cell_voltage * f64::from(bank.cells_per_battery);
//!         let blocked = bank.blocks_charge();
//!         if blocked != self.blocked {
//!             // Lines go to the daemon's log, tagged with the plugin's name: log a change,
//!             // not every tick.
//!             plugin_api::log::info(&format!("charge blocked by a BMS: {blocked}"));
//!             self.blocked = blocked;
//!         }
//!         let ccl = if blocked { 0.0 } else { 100.0 };
//!         Ok(StrategyOutput::limits(cvl, ccl, 100.0, "Fixed"))
//!     }
//! }
//!
//! fn new(config: &str) -> Result<Fixed, String> {
//!     parse_checked(config).map(|config| Fixed { config, blocked: false })
//! }
//!
//! plugin_api::export_plugin! {
//!     kind: strategy,
//!     name: "fixed",
//!     description: "Constant CVL",
//!     config: Config,
//!     new: new,
//! }
//! # fn main() {
//! #     let strategy = new(r#"{"cell_voltage": 3.4}"#).unwrap();
//! #     assert!(strategy.config.cell_voltage == 3.4);
//! #     assert!(new(r#"{"cell_voltage": -1}"#).is_err());
//! # }
//! ```
//!
//! Its `Cargo.toml` declares `crate-type = ["cdylib"]` and depends on `plugin-api` (the
//! version of the daemon it targets: see [ABI versions](#abi-versions-which-plugins-load)),
//! `abi_stable = "0.11"` and `serde` (with `derive`); for its tests, on `plugin-api` with the
//! `testing` feature in `[dev-dependencies]` (the builders of [`testing`]). Its release
//! profile keeps `panic = "unwind"` (the default): the daemon refuses a plugin built with
//! `panic = "abort"`, whose first panic would end the daemon instead of reaching it as an
//! error.
//!
//! # What a plugin is given
//!
//! * Missing values are [`ROption`]s, `RNone` when missing, in every view; no field is NaN.
//!   The bank's [`BankView::max_cell_voltage_v`] and [`BankView::min_cell_voltage_v`] are
//!   `RNone` when no online or stale pack publishes cell data; [`BankView::cell_extremes`]
//!   gives both or an error to return.
//! * Enums the host fills in ([`BatteryState`], [`DcClass`], [`ShuntClass`]) arrive as
//!   `abi_stable` non-exhaustive enums (`BatteryState_NE`, …): `as_enum()` gives the variant,
//!   or an error for one that a newer daemon added after the plugin was built; `==` compares
//!   with a variant.
//! * Logging: [`log::info`], [`log::warn`], [`log::error`], [`log::debug`] write to the
//!   daemon's log, tagged with the plugin's name (the plugin's own `tracing` or `println!`
//!   go nowhere useful).
//!
//! # Config keys the daemon checks
//!
//! The daemon reads a strategy's config section before the plugin does, and takes each of its
//! top-level keys named `*_voltage` or `*_voltages`, or with `cell_voltage` in its name, for a
//! **per-cell voltage**: the value (or each number of the list) must lie inside the safety
//! window `safety.min_cell_voltage` … `safety.max_cell_voltage`, or `check-config` and the
//! daemon refuse the config, naming the key. Name a per-cell voltage key that way so that it
//! gets this check. A key for a voltage of the whole bank (say 55.2 V) ends in
//! **`_bank_voltage`** (or `_bank_voltages` for a list) instead: it is not checked against
//! the cell window; the plugin checks it itself (e.g. with [`Checker::positive`]), and the
//! safety guard still bounds the CVL it leads to.
//!
//! # Plugin files
//!
//! The daemon loads every file of its plugins folder whose name ends in `.so`, which is what
//! cargo builds from a `cdylib`: `lib<crate name, - as _>.so`. Other files are skipped, and
//! `dbus-aggregate-batteries plugins` lists them as skipped. Naming the crate `plugin-<name>`,
//! after the name `config.yaml` selects it by (`plugin-lfp-balancing`, file
//! `libplugin_lfp_balancing.so`), lets the daemon open only the plugins it uses; under another
//! file name the plugin loads all the same, but the daemon then opens every `.so` file of the
//! folder to find it.
//!
//! # ABI versions: which plugins load
//!
//! This crate's version is the ABI version. The daemon loads a plugin built against the same
//! major version and the same or an older minor version; it refuses one built against another
//! major version, or a newer minor version than its own (whose additions it cannot honour),
//! naming both versions. `abi_stable` counts a 0.x minor version as a major one, which is why
//! the ABI starts at 1.
//!
//! To pin a plugin to the daemon it targets, depend on the daemon's minor version with a tilde
//! requirement, `plugin-api = "~3.0"`: `cargo update` then never moves it to a newer minor,
//! which that daemon would refuse. `dbus-aggregate-batteries plugins` prints the daemon's ABI.
//!
//! **Additive changes raise the minor version** (or the patch, for a change that touches no
//! type) and keep every plugin of the same major loading:
//! * a field appended to the root module [`PluginMod`] after its last prefix field
//!   (`resolve_config`), with `#[sabi(missing_field(...))]` giving the value the daemon
//!   assumes for a plugin built before the field existed, documented on the field;
//! * a field appended to an input view after its last prefix field: the views cross the ABI as
//!   `abi_stable` prefix types ([`abi::BankRef`], [`abi::BatteryRef`], [`abi::InputsRef`] and
//!   the device refs, see [`abi`]), lent by the host for the length of a call; the plain
//!   view a plugin reads ([`BankView`], [`BatteryView`], [`CurrentInputs`] and the device
//!   views) gets the field too. A plugin built before reads the fields it knows at the offsets
//!   it knows; give the field `#[sabi(missing_field(...))]` all the same (the layout check
//!   wants it of a field after the prefix);
//! * a variant added to an enum that crosses the ABI: every one is an `abi_stable`
//!   non-exhaustive enum ([`BatteryState`], [`DcClass`], [`ShuntClass`], [`SocReset`],
//!   [`FeedInRequest`], [`LogLevel`], [`Constructor`]), whose `as_enum()` fails for a variant
//!   the reading side does not know; each says what such a value means;
//! * a method appended to [`Strategy`] or [`CurrentSource`] after its last prefix method,
//!   only with a default body in the trait (which `abi_stable` runs for older plugins; without
//!   one, calling it on an older plugin panics), and the same default in [`StrategyImpl`] or
//!   [`CurrentSourceImpl`] (none has been appended yet: the first one comes with a test
//!   like the root module's, a plugin built before it loading);
//! * new types, functions and helpers that plugins call on their own side.
//!
//! **Breaking changes raise the major version** and refuse every plugin of the major before:
//! a changed field type, a removed, renamed or reordered field, a field added to the strategy's
//! output (returned by value: its size is part of the ABI), a moved `last_prefix_field`, a
//! changed method signature, a non-exhaustive enum grown beyond its storage.
//!
//! | version | what changed |
//! |---------|-------------|
//! | 1.0 | root module `name` … `new_current_source` (the prefix) |
//! | 1.1 | `needs_battery_limits` appended (missing: false) |
//! | 2.0 | breaking: [`CurrentInputs`] gains `dc_sources` (every other Venus DC device, one list with a [`DcClass`], so the next class is a new variant of a 2.x, not a new field); plugins of 1.x are refused. Its root module is the prefix, `name` … `new_current_source` |
//! | 2.1 | `needs_battery_limits` appended again after the prefix (missing: false), so that a 2.0 plugin loads on a 2.1 daemon |
//! | 3.0 | breaking, once for everything that could not grow; plugins of 2.x are refused naming both versions. **Enums**: every enum crossing the ABI is non-exhaustive (`WithNonExhaustive`), so a minor version may add a variant. **Missing values**: `ROption`, `RNone` when missing, in every view; the bank's `soc_pct`, `charge_ah`, cell extremes and their ids and a battery's cell extremes, `voltages_sum_v` and `installed_capacity_ah` were NaN or empty before. **Input views** cross as prefix types lent by the host, so a minor version may append a field. **One constructor per kind**: the root module's `kind`, `new_strategy` and `new_current_source` are one [`Constructor`], whose variant is the kind, so the wrong one cannot be exported. **`unwinds`**: the plugin's `cfg!(panic = "unwind")`; a plugin built with `panic = "abort"` is refused, naming the fix. **`resolve_config`**: the config section as the plugin reads it, defaults filled in, which `import-config` asks instead of knowing a plugin's defaults. `export_plugin!` takes the config type (`config:`). Root module: `name`, `version`, `description`, `set_logger`, `constructor`, `needs_battery_limits`, `unwinds`, `resolve_config` (the prefix) |

#![deny(missing_docs)]
#![allow(non_local_definitions)] // emitted by #[sabi_trait] on current rustc
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod abi;
mod bank;
pub mod config;
mod current;
mod curve;
mod date;
mod limits;
pub mod log;
pub mod merge;
// Documented without the feature too (`cfg(doc)`), so that `cargo doc` in a plugin's crate,
// which documents its normal dependencies only, shows the builders its tests use.
#[cfg(any(feature = "testing", doc))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use abi_stable;
use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

pub use bank::{BankView, BatteryState, BatteryState_NE, BatteryView};
pub use config::{parse_checked, parse_config, Checker, PluginConfig};
pub use current::{
    CurrentInputs, DcClass, DcClass_NE, DcSourceView, DeviceRef, Measurement, ShuntClass,
    ShuntClass_NE, ShuntView, SolarChargerView, VebusView,
};
pub use curve::interpolate;
pub use date::LocalDate;
pub use limits::{FeedInRequest, SocReset, StrategyOutput};
pub use log::{HostLogger, LogLevel, LogLevel_NE};

use abi::{BankRef, InputsRef, OutputAbi};

/// The kind of a plugin, as its [`Constructor`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    /// Computes CVL, CCL and DCL (`strategy.plugin` in `config.yaml`).
    Strategy,
    /// Measures the bank current (`current_source.plugin` in `config.yaml`).
    CurrentSource,
}

impl PluginKind {
    /// The word used in `config.yaml` and in logs: `strategy` or `current-source`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Strategy => "strategy",
            PluginKind::CurrentSource => "current-source",
        }
    }
}

/// A strategy's constructor.
#[repr(C)]
#[derive(StableAbi)]
pub struct NewStrategy {
    /// Builds the strategy from its config section (JSON text); the error names the bad key.
    pub new: extern "C" fn(config_json: RStr<'_>) -> RResult<StrategyBox, RString>,
}

/// A current source's constructor.
#[repr(C)]
#[derive(StableAbi)]
pub struct NewCurrentSource {
    /// Builds the current source from its config section (JSON text).
    pub new: extern "C" fn(config_json: RStr<'_>) -> RResult<CurrentSourceBox, RString>,
}

/// A plugin's one constructor, whose variant is the plugin's kind: a plugin exports the
/// constructor of its kind and no other.
///
/// Crosses the ABI as `Constructor_NE`, so that a minor version may add a kind; a daemon
/// refuses a plugin of a kind it does not know.
#[repr(u8)]
#[derive(StableAbi)]
#[sabi(kind(WithNonExhaustive(size = [usize; 2], traits())))]
pub enum Constructor {
    /// A strategy ([`StrategyImpl`]).
    Strategy(NewStrategy),
    /// A current source ([`CurrentSourceImpl`]).
    CurrentSource(NewCurrentSource),
}

/// A strategy as the host calls it across the ABI. Plugin authors implement
/// [`StrategyImpl`] instead; [`export_plugin!`] adapts it and catches its panics.
#[sabi_trait]
pub trait Strategy: Send {
    /// One tick: the limits and requests for this bank.
    fn compute(&mut self, bank: BankRef<'_>) -> RResult<OutputAbi, RString>;

    /// The state to persist (opaque text, JSON by convention; empty when stateless).
    fn save_state(&self) -> RResult<RString, RString>;

    /// Restores state saved by [`Strategy::save_state`] of an earlier run.
    #[sabi(last_prefix_field)]
    fn restore_state(&mut self, state: RStr<'_>) -> RResult<(), RString>;
}

/// A current source as the host calls it across the ABI. Plugin authors implement
/// [`CurrentSourceImpl`] instead.
#[sabi_trait]
pub trait CurrentSource: Send {
    /// One tick: the bank current, or `RNone` when the devices it needs have no valid value.
    #[sabi(last_prefix_field)]
    fn measure(&mut self, inputs: InputsRef<'_>) -> RResult<ROption<Measurement>, RString>;
}

/// A boxed strategy behind the ABI.
pub type StrategyBox = Strategy_TO<'static, RBox<()>>;
/// A boxed current source behind the ABI.
pub type CurrentSourceBox = CurrentSource_TO<'static, RBox<()>>;

impl StrategyBox {
    /// One tick through the ABI (the host's side): lends the bank to the plugin and takes
    /// its output back.
    pub fn compute_view(&mut self, bank: &BankView) -> RResult<StrategyOutput, RString> {
        abi::with_bank_ref(bank, |bank| self.compute(bank))
            .into_result()
            .and_then(|out| StrategyOutput::try_from(out).map_err(RString::from))
            .into()
    }
}

impl CurrentSourceBox {
    /// One tick through the ABI (the host's side).
    pub fn measure_inputs(
        &mut self,
        inputs: &CurrentInputs,
    ) -> RResult<ROption<Measurement>, RString> {
        abi::with_inputs_ref(inputs, |inputs| self.measure(inputs))
    }
}

/// What a strategy plugin implements: plain Rust, no ABI types to handle.
pub trait StrategyImpl: Send + 'static {
    /// One tick. Return an error text for a condition the plugin cannot handle; the host
    /// then applies its safety envelope (CCL 0, last good CVL and DCL).
    fn compute(&mut self, bank: &BankView) -> Result<StrategyOutput, String>;

    /// The state to persist across restarts; the host saves it atomically when a tick sets
    /// [`StrategyOutput::state_changed`] and at shutdown.
    fn save_state(&self) -> Result<String, String> {
        Ok(String::new())
    }

    /// Takes back what [`StrategyImpl::save_state`] returned in an earlier run. An error
    /// makes the host log it and go on with the freshly constructed state.
    fn restore_state(&mut self, _state: &str) -> Result<(), String> {
        Ok(())
    }
}

/// What a current-source plugin implements.
pub trait CurrentSourceImpl: Send + 'static {
    /// One tick: the bank current and power, or `None` when the devices it needs are missing
    /// or invalid (the host then uses the BMS current and logs it once per episode).
    fn measure(&mut self, inputs: &CurrentInputs) -> Option<Measurement>;
}

/// Adapts a [`CurrentSourceImpl`] to the ABI trait, catching panics.
#[doc(hidden)]
pub struct Guarded<T>(pub T);

/// Adapts a [`StrategyImpl`] to the ABI trait, catching panics; it keeps the bank of the last
/// tick, refilled in place at the next.
#[doc(hidden)]
pub struct GuardedStrategy<T> {
    strategy: T,
    bank: Option<BankView>,
}

impl<T: StrategyImpl> Strategy for GuardedStrategy<T> {
    fn compute(&mut self, bank: BankRef<'_>) -> RResult<OutputAbi, RString> {
        let (strategy, view) = (&mut self.strategy, &mut self.bank);
        guard(|| {
            let view = abi::refill_bank(view, bank);
            strategy.compute(view).map(OutputAbi::from)
        })
    }

    fn save_state(&self) -> RResult<RString, RString> {
        guard(|| self.strategy.save_state().map(RString::from))
    }

    fn restore_state(&mut self, state: RStr<'_>) -> RResult<(), RString> {
        guard(|| self.strategy.restore_state(state.as_str()))
    }
}

impl<T: CurrentSourceImpl> CurrentSource for Guarded<T> {
    fn measure(&mut self, inputs: InputsRef<'_>) -> RResult<ROption<Measurement>, RString> {
        guard(|| Ok(self.0.measure(&abi::inputs_from_ref(inputs)).into()))
    }
}

/// Boxes a strategy for the ABI.
#[doc(hidden)]
pub fn strategy_box<T: StrategyImpl>(strategy: T) -> StrategyBox {
    let guarded = GuardedStrategy {
        strategy,
        bank: None,
    };
    Strategy_TO::from_value(guarded, sabi_trait::TD_Opaque)
}

/// Boxes a current source for the ABI.
#[doc(hidden)]
pub fn current_source_box<T: CurrentSourceImpl>(source: T) -> CurrentSourceBox {
    CurrentSource_TO::from_value(Guarded(source), sabi_trait::TD_Opaque)
}

thread_local! {
    static PANIC_PLACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `body`, turning an error or a panic into an error text for the host.
///
/// A panic must never unwind across the ABI: `abi_stable` would end the whole daemon. This is
/// the one place that stops it.
pub fn guard<T>(body: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(value)) => RResult::ROk(value),
        Ok(Err(message)) => RResult::RErr(message.into()),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown payload".to_string());
            let place = PANIC_PLACE
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            RResult::RErr(format!("panicked{place}: {message}").into())
        }
    }
}

/// Replaces the default panic message on stderr: [`guard`] reports the panic to the host,
/// which logs it once. Called from the code [`export_plugin!`] generates.
#[doc(hidden)]
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()));
        PANIC_PLACE.with(|p| *p.borrow_mut() = place);
    }));
}

/// The root module every plugin exports.
///
/// An `abi_stable` prefix type: the fields up to `resolve_config` (the last prefix field) are
/// in every plugin of ABI 3; a field appended in a minor version is missing from a plugin
/// built before. Read those through the accessors of [`PluginModRef`], which give the default
/// named on the field for such a plugin; without a `missing_field` attribute an accessor
/// returns an `Option`.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// The name `config.yaml` selects the plugin by, e.g. `lfp-balancing`.
    pub name: RStr<'static>,
    /// The plugin's own version, e.g. `1.2.0`.
    pub version: RStr<'static>,
    /// One line for `dbus-aggregate-batteries plugins`.
    pub description: RStr<'static>,
    /// Hands the host's logger to the plugin; called once, right after loading.
    pub set_logger: extern "C" fn(HostLogger),
    /// The constructor of the plugin's kind.
    pub constructor: &'static Constructor_NE,
    /// A strategy that passes the batteries' own limits on: the host then counts a battery
    /// online only while its `/Info/MaxChargeVoltage`, `/Info/MaxChargeCurrent` and
    /// `/Info/MaxDischargeCurrent` are valid, so that no limit of the bank rests on a battery
    /// that has none. False for every other plugin.
    pub needs_battery_limits: bool,
    /// True when the plugin was built with `panic = "unwind"` (`cfg!(panic = "unwind")` in the
    /// plugin's build). Its panics are then caught on its side and reach the host as errors;
    /// built with `panic = "abort"`, its first panic would end the daemon, which therefore
    /// refuses to load it.
    pub unwinds: bool,
    /// The plugin's config section as the plugin reads it, every default filled in and every
    /// value it derives from others written out (JSON text in, JSON text out); parsed, not
    /// checked. What `import-config` and `check-config` ask a plugin instead of knowing its
    /// defaults.
    #[sabi(last_prefix_field)]
    pub resolve_config: extern "C" fn(config_json: RStr<'_>) -> RResult<RString, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "dbus_aggregate_batteries_plugin";
    const NAME: &'static str = "dbus-aggregate-batteries plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The version of this crate, which is the ABI version: the daemon loads plugins built against
/// the same major version and no newer minor version (see the crate docs).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A config section as the plugin reads it, defaults filled in (see
/// [`PluginMod::resolve_config`]). Called from the code [`export_plugin!`] generates.
#[doc(hidden)]
pub fn resolve_config<T: PluginConfig + serde::Serialize>(json: &str) -> Result<String, String> {
    let config: T = parse_config(json)?;
    serde_json::to_string(&config.resolved()).map_err(|err| err.to_string())
}

/// Exports a plugin's root module.
///
/// * `kind`: `strategy` or `current_source`; the root module gets the one constructor of
///   that kind ([`Constructor`]);
/// * `name`, `description`: see [`PluginMod`];
/// * `config`: the plugin's config struct, which implements [`PluginConfig`] and
///   `serde::Serialize` (for [`PluginMod::resolve_config`]);
/// * `new`: a function `fn(&str) -> Result<T, String>` that builds the plugin from its
///   config section (JSON text), where `T` implements [`StrategyImpl`] for a strategy or
///   [`CurrentSourceImpl`] for a current source: the other kind does not compile;
/// * a strategy that passes the batteries' own limits on adds `needs_battery_limits: true`
///   (see [`PluginMod::needs_battery_limits`]).
///
/// It also records whether the plugin was built with `panic = "unwind"`
/// ([`PluginMod::unwinds`]). See the crate docs for a whole plugin.
///
/// A strategy exported as a current source does not compile:
///
/// ```compile_fail
/// use plugin_api::{BankView, StrategyImpl, StrategyOutput};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Config {}
/// impl plugin_api::PluginConfig for Config {}
///
/// struct Fixed;
/// impl StrategyImpl for Fixed {
///     fn compute(&mut self, _: &BankView) -> Result<StrategyOutput, String> {
///         Ok(StrategyOutput::limits(55.0, 10.0, 10.0, "Fixed"))
///     }
/// }
/// fn new(_: &str) -> Result<Fixed, String> { Ok(Fixed) }
///
/// plugin_api::export_plugin! {
///     kind: current_source,
///     name: "fixed",
///     description: "a strategy",
///     config: Config,
///     new: new,
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    (kind: strategy, name: $name:expr, description: $desc:expr, config: $config:ty,
     new: $new:path $(,)?) => {
        $crate::export_plugin! {
            kind: strategy, name: $name, description: $desc, config: $config, new: $new,
            needs_battery_limits: false,
        }
    };
    (kind: strategy, name: $name:expr, description: $desc:expr, config: $config:ty,
     new: $new:path, needs_battery_limits: $needs:expr $(,)?) => {
        extern "C" fn __plugin_new(
            config: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::StrategyBox,
            $crate::abi_stable::std_types::RString,
        > {
            $crate::guard(|| $new(config.as_str()).map($crate::strategy_box))
        }
        $crate::export_plugin!(@module $name, $desc, $config, $needs,
            $crate::Constructor::Strategy($crate::NewStrategy { new: __plugin_new }));
    };
    (kind: current_source, name: $name:expr, description: $desc:expr, config: $config:ty,
     new: $new:path $(,)?) => {
        extern "C" fn __plugin_new(
            config: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::CurrentSourceBox,
            $crate::abi_stable::std_types::RString,
        > {
            $crate::guard(|| $new(config.as_str()).map($crate::current_source_box))
        }
        $crate::export_plugin!(@module $name, $desc, $config, false,
            $crate::Constructor::CurrentSource($crate::NewCurrentSource { new: __plugin_new }));
    };
    (@module $name:expr, $desc:expr, $config:ty, $needs:expr, $constructor:expr) => {
        extern "C" fn __plugin_set_logger(logger: $crate::HostLogger) {
            $crate::log::install(logger, $name);
            $crate::install_panic_hook();
        }

        extern "C" fn __plugin_resolve_config(
            config: $crate::abi_stable::std_types::RStr<'_>,
        ) -> $crate::abi_stable::std_types::RResult<
            $crate::abi_stable::std_types::RString,
            $crate::abi_stable::std_types::RString,
        > {
            $crate::guard(|| {
                $crate::resolve_config::<$config>(config.as_str())
                    .map($crate::abi_stable::std_types::RString::from)
            })
        }

        static __PLUGIN_CONSTRUCTOR: $crate::Constructor_NE =
            $crate::Constructor_NE::new($constructor);

        /// The plugin's root module, found by the host when it loads the library.
        #[$crate::abi_stable::export_root_module]
        pub fn get_root_module() -> $crate::PluginModRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::PluginMod {
                name: $crate::abi_stable::std_types::RStr::from_str($name),
                version: $crate::abi_stable::std_types::RStr::from_str(env!("CARGO_PKG_VERSION")),
                description: $crate::abi_stable::std_types::RStr::from_str($desc),
                set_logger: __plugin_set_logger,
                constructor: &__PLUGIN_CONSTRUCTOR,
                needs_battery_limits: $needs,
                unwinds: cfg!(panic = "unwind"),
                resolve_config: __plugin_resolve_config,
            }
            .leak_into_prefix()
        }
    };
}
