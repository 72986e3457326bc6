//! Properties of the safety envelope (docs/guard.md §2 to §4) over arbitrary inputs.
//!
//! Two levels: the envelope alone, fed any strategy result (NaN, infinities, negative and huge
//! limits, errors) in any order; and the whole tick, with the real strategy and current source
//! plugins loaded from disk, fed any bank of 1 to 16 batteries of 4 to 32 cells. Whatever comes
//! in, what is published stays within the user's `safety` section, a BMS that blocks charging
//! gets CCL 0, and no published number is NaN or infinite.
//!
//! The batteries a tick receives keep the one promise the presence tracker makes: a battery is
//! online or stale only with a reading that passes `BatteryReading::check`; one that does not
//! is lost here, its reading still shown to the plugins. Within that, a battery's numbers are
//! plausible, or any finite ones (negative, huge), or anything at all (NaN, infinity) wherever
//! `check` lets them through; flags and counts are any integer; the Multi's and the chargers'
//! currents are any number. Half the runs are calm (the whole bank there, plausible values),
//! so that the undegraded bank gets its share.

use crate::support;

use std::collections::HashMap;

use aggregator::plugins::{load, Plugin};
use aggregator_core::engine::OnLost;
use aggregator_core::engine::{Engine, Outcome, Settings, TickInputs};
use aggregator_core::envelope::{BankFacts, Bounds, Limits, SafetyEnvelope};
use aggregator_core::guard::{BmsLimits, Guard, GuardBounds, Window};
use aggregator_core::presence::{Battery, Presence, Timing};
use aggregator_core::published::{DeviceInfo, Published};
use aggregator_core::reading::{BatteryReading, Slot, ALARMS, ALARM_BMS_CABLE, BATTERY_PATHS};
use aggregator_core::value::Value;
use plugin_api::{BatteryState, LocalDate, SolarChargerView, StrategyOutput, VebusView};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use support::plugins_dir_with;

// ---------------------------------------------------------------------------------------------
// Inputs

/// Any number a BMS, a plugin or a bus may produce: ordinary values most of the time, and the
/// troublemakers (NaN, ±infinity, ±0, the extremes, subnormals) often enough to matter.
fn any_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -1000.0..1000.0f64,
        2 => proptest::num::f64::ANY,
        2 => prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            1e300,
            -1e300,
            1e9,
            -1e9,
        ]),
    ]
}

/// Any finite number, huge and negative included.
fn finite_number() -> impl Strategy<Value = f64> {
    any_number().prop_map(|v| if v.is_finite() { v } else { 1.0 })
}

fn maybe<T: std::fmt::Debug + Clone + 'static>(
    value: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![1 => Just(None), 4 => value.prop_map(Some)]
}

/// A flag or count as a BMS publishes it: mostly 0 or 1, sometimes any integer.
fn any_flag() -> impl Strategy<Value = Option<i64>> {
    maybe(prop_oneof![
        4 => 0i64..=3,
        1 => any::<i64>(),
        1 => prop::sample::select(vec![i64::MIN, -1, i64::MAX]),
    ])
}

/// The `safety` section as `check-config` lets it through: every bound positive and finite,
/// the cell voltage below 5 V, at least one fault before DCL goes to 0.
fn bounds() -> impl Strategy<Value = Bounds> {
    let current = || {
        prop_oneof![
            4 => 1.0..1000.0f64,
            1 => prop::sample::select(vec![f64::MIN_POSITIVE, 1e-9, 0.1, 1e12, f64::MAX]),
        ]
    };
    (1e-3..5.0f64, current(), current(), 1u32..=6).prop_map(
        |(max_cell_voltage_v, max_charge_current_a, max_discharge_current_a, plugin_failures)| {
            Bounds {
                max_cell_voltage_v,
                max_charge_current_a,
                max_discharge_current_a,
                plugin_failures,
                max_charge_voltage_v: f64::INFINITY,
            }
        },
    )
}

/// The host's rules as `check-config` lets them through: a cell window below the envelope's
/// bound, windows of temperature with their lower edge below the upper.
fn guard_bounds(max_cell_voltage_v: f64) -> impl Strategy<Value = GuardBounds> {
    let window = || {
        (-40.0..30.0f64, 1.0..60.0f64).prop_map(|(min_c, w)| Window {
            min_c,
            max_c: min_c + w,
        })
    };
    (
        0.05..0.95f64,
        0.0..0.2f64,
        0.0..0.3f64,
        window(),
        window(),
        prop_oneof![Just(0.0), 0.1..10.0f64],
        prop::sample::select(vec![
            BmsLimits::Share,
            BmsLimits::MinTimesCount,
            BmsLimits::Sum,
            BmsLimits::Ignore,
        ]),
        0.1..20.0f64,
        (0.01..0.5f64, any::<bool>()),
    )
        .prop_map(
            move |(
                low,
                max_h,
                min_h,
                charge,
                discharge,
                derate,
                bms_limits,
                share_min,
                (recovery, n_minus_one),
            )| {
                GuardBounds {
                    max_cell_voltage_v,
                    max_cell_hysteresis_v: max_h * max_cell_voltage_v,
                    min_cell_voltage_v: low * max_cell_voltage_v,
                    min_cell_hysteresis_v: min_h * max_cell_voltage_v,
                    charge_temperature: charge,
                    discharge_temperature: discharge,
                    temperature_derate_c: derate,
                    bms_limits,
                    share_min_current_a: share_min,
                    recovery_charge_rate_c: recovery,
                    bms_limits_n_minus_one: n_minus_one,
                }
            },
        )
}

/// What a strategy hands the envelope: its three limits, or its error (or panic) text.
fn strategy_result() -> impl Strategy<Value = Result<(f64, f64, f64), String>> {
    prop_oneof![
        5 => (any_number(), any_number(), any_number()).prop_map(Ok),
        1 => "[a-z :]{0,20}".prop_map(Err),
    ]
}

fn bank_facts() -> impl Strategy<Value = BankFacts> {
    (4u32..=32, any::<bool>(), any::<bool>(), any_number()).prop_map(
        |(cells, blocks_charge, blocks_discharge, voltage_v)| BankFacts {
            cells,
            blocks_charge,
            blocks_discharge,
            voltage_v,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// The envelope itself

/// docs/guard.md §2 on published limits: finite, CVL within [0, N × max cell voltage], CCL and DCL
/// within [0, their bound].
fn within_bounds(limits: Limits, bounds: Bounds, cells: u32) -> Result<(), TestCaseError> {
    let cvl_max = f64::from(cells) * bounds.max_cell_voltage_v;
    let Limits {
        cvl_v,
        ccl_a,
        dcl_a,
    } = limits;
    prop_assert!(
        cvl_v.is_finite() && ccl_a.is_finite() && dcl_a.is_finite(),
        "a limit is not finite: {limits:?}"
    );
    prop_assert!(
        (0.0..=cvl_max).contains(&cvl_v),
        "CVL {cvl_v} outside [0, {cells} × {}]",
        bounds.max_cell_voltage_v
    );
    prop_assert!(
        (0.0..=bounds.max_charge_current_a).contains(&ccl_a),
        "CCL {ccl_a} outside [0, {}]",
        bounds.max_charge_current_a
    );
    prop_assert!(
        (0.0..=bounds.max_discharge_current_a).contains(&dcl_a),
        "DCL {dcl_a} outside [0, {}]",
        bounds.max_discharge_current_a
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_envelope_holds_for_any_strategy_result(
        bounds in bounds(),
        ticks in vec((strategy_result(), bank_facts()), 1..24),
    ) {
        let mut envelope = SafetyEnvelope::new(bounds);
        let mut faults_in_a_row = 0;
        for (result, facts) in ticks {
            let output = result
                .as_ref()
                .map(|&(cvl, ccl, dcl)| StrategyOutput::limits(cvl, ccl, dcl, "Test"));
            let verdict = envelope.apply(output.as_ref().map_err(|err| err.as_str()), facts);
            let limits = verdict.limits;
            within_bounds(limits, bounds, facts.cells)?;
            if facts.blocks_charge {
                prop_assert_eq!(limits.ccl_a, 0.0, "a BMS blocks charging");
            }
            if facts.blocks_discharge {
                prop_assert_eq!(limits.dcl_a, 0.0, "a BMS blocks discharging");
            }

            // A sane result is taken as it is, only clamped to the bounds; anything else is a
            // fault: CCL 0 at once, DCL 0 after `plugin_failures` in a row.
            let sane = match result {
                Ok((cvl, ccl, dcl)) => [cvl, ccl, dcl].iter().all(|v| v.is_finite())
                    && cvl > 0.0
                    && ccl >= 0.0
                    && dcl >= 0.0,
                Err(_) => false,
            };
            prop_assert_eq!(verdict.fault.is_none(), sane, "{:?}", result);
            if let (true, Ok((cvl, ccl, dcl))) = (sane, result) {
                faults_in_a_row = 0;
                let cvl_max = f64::from(facts.cells) * bounds.max_cell_voltage_v;
                prop_assert_eq!(limits.cvl_v, cvl.min(cvl_max));
                if !facts.blocks_charge {
                    prop_assert_eq!(limits.ccl_a, ccl.min(bounds.max_charge_current_a));
                }
                if !facts.blocks_discharge {
                    prop_assert_eq!(limits.dcl_a, dcl.min(bounds.max_discharge_current_a));
                }
            } else {
                faults_in_a_row += 1;
                prop_assert_eq!(limits.ccl_a, 0.0, "a fault stops charging");
                if faults_in_a_row >= bounds.plugin_failures {
                    prop_assert_eq!(limits.dcl_a, 0.0, "{} faults in a row", faults_in_a_row);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The guard only ever lowers a limit, and keeps finite limits finite and non-negative.
    #[test]
    fn the_guard_never_raises_a_limit(
        guard in (1e-3..5.0f64).prop_flat_map(guard_bounds),
        ticks in vec((bank(3, 16, false), 0.0..400.0f64, 0.0..400.0f64, 0.0..2.0f64), 1..12),
    ) {
        let mut g = Guard::new(guard);
        for (batteries, ccl, dcl, dt) in ticks {
            let limits = Limits { cvl_v: 55.0, ccl_a: ccl, dcl_a: dcl };
            let out = g.apply(limits, &batteries, 53.0, dt, 16).limits;
            prop_assert!(out.ccl_a.is_finite() && out.dcl_a.is_finite() && out.cvl_v.is_finite());
            prop_assert!((0.0..=ccl).contains(&out.ccl_a), "CCL {} from {}", out.ccl_a, ccl);
            prop_assert!((0.0..=dcl).contains(&out.dcl_a), "DCL {} from {}", out.dcl_a, dcl);
            prop_assert!(out.cvl_v <= 55.0 && out.cvl_v > 0.0);
            windows_hold(&guard, &batteries, out)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The whole tick with the real plugins

/// The plugins the tick runs with, each with a config section: every built-in strategy, and
/// the `fault-test` strategy standing for a third party's plugin that returns anything.
#[derive(Clone, Debug)]
enum StrategyChoice {
    Plugin(&'static str, &'static str),
    /// `fault-test` returning these limits (JSON cannot carry NaN or infinity; the `nan` and
    /// `out_of_range` faults do).
    Fixed(f64, f64, f64),
}

impl StrategyChoice {
    fn file_and_config(&self) -> (&'static str, String) {
        match self {
            StrategyChoice::Plugin(file, config) => (file, config.to_string()),
            StrategyChoice::Fixed(cvl, ccl, dcl) => (
                FAULT_TEST,
                serde_json::json!({ "cvl": cvl, "ccl": ccl, "dcl": dcl }).to_string(),
            ),
        }
    }
}

const FAULT_TEST: &str = "libplugin_fault_test.so";

fn strategy_choice() -> impl Strategy<Value = StrategyChoice> {
    let plugin = prop::sample::select(vec![
        ("libplugin_lfp_balancing.so", "{}"),
        (
            "libplugin_lfp_balancing.so",
            r#"{"balancing_every_days": 1}"#,
        ),
        ("libplugin_lto_cv.so", "{}"),
        ("libplugin_serialbattery.so", "{}"),
        (
            "libplugin_serialbattery.so",
            r#"{"cvl": "keep_max_until_all_float", "limits": "sum", "zero_soc": true, "max_cell_voltage_soc_full": 2.5, "min_cell_voltage_soc_empty": 1.9}"#,
        ),
        (FAULT_TEST, r#"{"fault": "nan"}"#),
        (FAULT_TEST, r#"{"fault": "out_of_range", "after_ticks": 1}"#),
        (FAULT_TEST, r#"{"fault": "error", "after_ticks": 1}"#),
        (FAULT_TEST, r#"{"fault": "panic", "after_ticks": 2}"#),
    ]);
    prop_oneof![
        4 => plugin.prop_map(|(file, config)| StrategyChoice::Plugin(file, config)),
        1 => (limit(), limit(), limit())
            .prop_map(|(cvl, ccl, dcl)| StrategyChoice::Fixed(cvl, ccl, dcl)),
    ]
}

/// A limit a strategy may return: mostly plausible, else any finite number.
fn limit() -> impl Strategy<Value = f64> {
    prop_oneof![0.0..1000.0f64, finite_number()]
}

const CURRENT_SOURCES: [(&str, &str); 2] = [
    ("libplugin_bms.so", "{}"),
    ("libplugin_victron.so", r#"{"use_multi": true}"#),
];

/// How far a battery's values stray from what a BMS sends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Values in a BMS's ranges, none missing, flags 0 or 1.
    Steady,
    /// Values in a BMS's ranges, one in twenty missing, flags 0 or 1.
    Plausible,
    /// Any finite values (negative, huge), flags any integer.
    Finite,
    /// Any values at all (NaN, infinity), flags any integer.
    Garbage,
}

/// One number of a reading; `range` is where a plausible one lies.
fn number(kind: Kind, range: std::ops::Range<f64>) -> BoxedStrategy<Option<f64>> {
    match kind {
        Kind::Steady => range.prop_map(Some).boxed(),
        Kind::Plausible => prop_oneof![1 => Just(None), 19 => range.prop_map(Some)].boxed(),
        Kind::Finite => prop_oneof![1 => Just(None), 9 => finite_number().prop_map(Some)].boxed(),
        Kind::Garbage => maybe(any_number()).boxed(),
    }
}

/// A flag (`/Io/AllowToCharge`) or a count (`…BlockingCharge`): `usual` most of the time.
fn flag(kind: Kind, usual: i64, other: i64) -> BoxedStrategy<Option<i64>> {
    match kind {
        Kind::Steady => prop_oneof![39 => Just(Some(usual)), 1 => Just(Some(other))].boxed(),
        Kind::Plausible => prop_oneof![
            1 => Just(None),
            8 => Just(Some(usual)),
            2 => Just(Some(other)),
        ]
        .boxed(),
        Kind::Finite | Kind::Garbage => any_flag().boxed(),
    }
}

/// A battery's reading of `cells` cells.
fn reading(cells: u32, kind: Kind) -> impl Strategy<Value = BatteryReading> {
    let n = f64::from(cells);
    let cell = || number(kind, 1.5..4.0);
    let core = (
        number(kind, 1.5 * n..4.0 * n),
        number(kind, -300.0..300.0),
        number(kind, 10.0..1000.0).prop_map(|c| c.map(f64::abs)),
        cell(),
        cell(),
        number(kind, -20_000.0..20_000.0),
        number(kind, -20.0..60.0),
        number(kind, 0.0..100.0),
        number(kind, 0.0..1e6),
        number(kind, 1.5 * n..4.0 * n),
    );
    let more = (
        number(kind, 2.0 * n..4.0 * n),
        number(kind, 0.0..500.0),
        number(kind, 0.0..500.0),
        number(kind, -1000.0..0.0),
        number(kind, 0.0..1000.0),
        number(kind, -20.0..60.0),
        number(kind, -20.0..60.0),
    );
    let flags = (
        flag(kind, 1, 0),
        flag(kind, 1, 0),
        flag(kind, 0, 1),
        flag(kind, 0, 1),
        flag(kind, 1, 0),
        flag(kind, 1, 0),
        vec(flag(kind, 0, 1), ALARMS.len()),
    );
    let mode = maybe(prop::sample::select(vec![
        "Bulk",
        "Absorption",
        "Float",
        "",
    ]));
    let cell_list = vec(cell(), cells as usize);
    (core, more, flags, mode, cell_list, any_flag()).prop_map(
        move |(
            (voltage, current, capacity, max_cell, min_cell, power, temp, soc, ttg, sum),
            (cvl, ccl, dcl, consumed, remaining, max_temp, min_temp),
            (
                allow_charge,
                allow_discharge,
                blocking_charge,
                blocking_discharge,
                online,
                balance,
                alarms,
            ),
            mode,
            cell_voltages_v,
            connected,
        )| {
            let mut reading = BatteryReading {
                connected,
                voltage_v: voltage,
                current_a: current,
                power_w: power,
                temperature_c: temp,
                installed_capacity_ah: capacity,
                consumed_ah: consumed,
                capacity_ah: remaining,
                soc_pct: soc,
                time_to_go_s: ttg,
                max_cell_temperature_c: max_temp,
                min_cell_temperature_c: min_temp,
                max_temperature_cell_id: Some("T1".into()),
                min_temperature_cell_id: None,
                max_cell_voltage_v: max_cell,
                min_cell_voltage_v: min_cell,
                max_voltage_cell_id: Some("C1".into()),
                min_voltage_cell_id: Some("C2".into()),
                voltages_sum_v: sum,
                cells_per_battery: Some(i64::from(cells)),
                modules_online: online,
                modules_offline: Some(0),
                modules_blocking_charge: blocking_charge,
                modules_blocking_discharge: blocking_discharge,
                allow_to_charge: allow_charge,
                allow_to_discharge: allow_discharge,
                allow_to_balance: balance,
                max_charge_voltage_v: cvl,
                max_charge_current_a: ccl,
                max_discharge_current_a: dcl,
                charge_mode: mode.map(str::to_string),
                cell_voltages_v,
                ..Default::default()
            };
            reading.alarms.copy_from_slice(&alarms);
            reading
        },
    )
}

/// A battery as the presence tracker hands it over: online or stale only with a reading that
/// passes `BatteryReading::check` (one that does not is not merged: here it is lost, with
/// that reading still shown to the plugins). In a calm run the batteries are plausible and
/// rarely lost, so that the undegraded bank gets its share of the runs.
fn battery(index: usize, cells: u32, calm: bool) -> impl Strategy<Value = Battery> {
    let (online, stale, lost) = if calm { (18, 2, 0) } else { (14, 3, 2) };
    let state = prop_oneof![
        online => Just(BatteryState::Online),
        stale => Just(BatteryState::Stale),
        lost => Just(BatteryState::Lost),
    ];
    let kind = if calm {
        prop_oneof![9 => Just(Kind::Steady), 1 => Just(Kind::Plausible)].boxed()
    } else {
        prop_oneof![
            6 => Just(Kind::Plausible),
            2 => Just(Kind::Finite),
            2 => Just(Kind::Garbage),
        ]
        .boxed()
    };
    (state, kind).prop_flat_map(move |(state, kind)| {
        reading(cells, kind).prop_map(move |mut reading| {
            let mut state = state;
            if state != BatteryState::Lost {
                // Grounds for losing a battery, left to the lost ones.
                reading.connected = Some(1);
                reading.alarms[ALARM_BMS_CABLE] = Some(0);
                if reading.check(false).is_err() {
                    state = BatteryState::Lost;
                }
            }
            Battery {
                name: format!("Bat{}", index + 1),
                service: format!("com.victronenergy.battery.ttyUSB{index}"),
                state,
                reading,
            }
        })
    })
}

/// One tick's bank: the same batteries every tick (by name), each in any state with any reading.
fn bank(n: usize, cells: u32, calm: bool) -> impl Strategy<Value = Vec<Battery>> {
    (0..n).map(|k| battery(k, cells, calm)).collect::<Vec<_>>()
}

/// One tick's surroundings besides the bank.
fn surroundings(cells: u32, expected: u32) -> impl Strategy<Value = TickInputs> {
    (
        maybe(any_number()),
        vec(maybe(any_number()), 0..3),
        maybe(0i64..=1),
        maybe(0i64..=1),
        0i64..40_000,
        prop_oneof![4 => 0.5..2.0f64, 1 => 0.0..100.0f64],
    )
        .prop_map(
            move |(multi, chargers, low_soc, feed_in, day, dt_s)| TickInputs {
                cells,
                expected,
                left_out: Vec::new(),
                dc_sources: Vec::new(),
                monitor_soc: None,
                vebus: vec![VebusView {
                    service: "com.victronenergy.vebus.ttyS4".into(),
                    connected: Some(1).into(),
                    current_a: multi.into(),
                }],
                solar_chargers: chargers
                    .into_iter()
                    .enumerate()
                    .map(|(k, current)| SolarChargerView {
                        service: format!("com.victronenergy.solarcharger.ttyUSB{k}").into(),
                        current_a: current.into(),
                    })
                    .collect(),
                smartshunts: Vec::new(),
                low_soc,
                feed_in_setting: feed_in,
                date: LocalDate::from_days_since_epoch(day),
                dt_s,
            },
        )
}

#[derive(Clone, Debug)]
struct Run {
    bounds: Bounds,
    guard: GuardBounds,
    on_lost: OnLost,
    own_counter: bool,
    strategy: StrategyChoice,
    current_source: usize,
    cells: u32,
    ticks: Vec<(Vec<Battery>, TickInputs)>,
}

fn run() -> impl Strategy<Value = Run> {
    let settings = (
        bounds().prop_flat_map(|b| (Just(b), guard_bounds(b.max_cell_voltage_v))),
        prop::sample::select(vec![
            OnLost::BlockCharge,
            OnLost::BlockAll,
            OnLost::Continue,
        ]),
        any::<bool>(),
        strategy_choice(),
        0..CURRENT_SOURCES.len(),
    );
    // Half the runs calm: the bank as expected, its batteries plausible.
    let bank_and_ticks =
        (1usize..=16, 4u32..=32, any::<bool>()).prop_flat_map(|(n, cells, calm)| {
            let expected = if calm {
                Just(n as u32).boxed()
            } else {
                (0..=n as u32 + 1).boxed()
            };
            expected.prop_flat_map(move |expected| {
                let tick = (bank(n, cells, calm), surroundings(cells, expected));
                vec(tick, 1..=3).prop_map(move |ticks| (cells, ticks))
            })
        });
    (settings, bank_and_ticks).prop_map(
        |(((bounds, guard), on_lost, own_counter, strategy, current_source), (cells, ticks))| Run {
            bounds,
            guard,
            on_lost,
            own_counter,
            strategy,
            current_source,
            cells,
            ticks,
        },
    )
}

/// Every plugin the runs use, loaded once from private copies of the built libraries.
struct Plugins {
    by_file: HashMap<&'static str, Plugin>,
    _dir: tempfile::TempDir,
}

impl Plugins {
    fn load() -> Self {
        let files = [
            "libplugin_lfp_balancing.so",
            "libplugin_lto_cv.so",
            "libplugin_serialbattery.so",
            FAULT_TEST,
            CURRENT_SOURCES[0].0,
            CURRENT_SOURCES[1].0,
        ];
        let dir = plugins_dir_with(&files);
        let by_file = files
            .iter()
            .map(|file| (*file, load(&dir.path().join(file)).expect("load plugin")))
            .collect();
        Self { by_file, _dir: dir }
    }

    fn engine(&self, run: &Run) -> Engine {
        let (file, config) = run.strategy.file_and_config();
        let strategy = &self.by_file[file];
        let (current_file, current_config) = CURRENT_SOURCES[run.current_source];
        let settings = Settings {
            bounds: run.bounds,
            guard: run.guard,
            feed_in_hold_s: 60.0,
            on_lost: run.on_lost,
            own_counter: run.own_counter,
            efficiency: 0.985,
            save_precision: 0.0025,
        };
        Engine::new(
            settings,
            &strategy.name,
            strategy
                .new_strategy(&config)
                .unwrap_or_else(|err| panic!("{file} with {config}: {err}")),
            self.by_file[current_file]
                .new_current_source(current_config)
                .expect("current source"),
        )
    }
}

/// The feed-in setting of the tick whose batteries are `batteries`.
fn around_feed_in(run: &Run, batteries: &[Battery]) -> Option<i64> {
    run.ticks
        .iter()
        .find(|(b, _)| std::ptr::eq(b.as_slice(), batteries))
        .and_then(|(_, around)| around.feed_in_setting)
}

/// The guard (docs/guard.md §5 to §8) on the published limits: the cell and temperature windows,
/// the packs' own limits, old data, and feed-in off whenever charging is stopped.
fn host_rules_hold(
    run: &Run,
    batteries: &[Battery],
    feed_in: Option<i64>,
    outcome: &Outcome,
    last_online: Option<Limits>,
) -> Result<(), TestCaseError> {
    let g = run.guard;
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let ccl = outcome.limits.ccl_a;
    let dcl = outcome.limits.dcl_a;
    windows_hold(&g, batteries, outcome.limits)?;
    let online: Vec<&Battery> = batteries
        .iter()
        .filter(|b| b.state == BatteryState::Online)
        .collect();
    // The packs' own limits, of those online or held: a held pack's last reading stands in
    // for it in every cap (docs/guard.md §8), as it still shares the current.
    let own = |limit: fn(&BatteryReading) -> Option<f64>| -> Option<f64> {
        batteries
            .iter()
            .filter(|b| b.state != BatteryState::Lost)
            .map(|b| finite(limit(&b.reading)).filter(|l| *l >= 0.0))
            .sum::<Option<f64>>()
    };
    // With none online the last online tick's limits bound them (below).
    if g.bms_limits != BmsLimits::Ignore && outcome.merged.count > 0 && !online.is_empty() {
        if let Some(sum) = own(|r| r.max_charge_current_a) {
            prop_assert!(
                ccl <= sum * (1.0 + 1e-9),
                "CCL {} above the packs' {}",
                ccl,
                sum
            );
        }
        if let Some(sum) = own(|r| r.max_discharge_current_a) {
            prop_assert!(
                dcl <= sum * (1.0 + 1e-9),
                "DCL {} above the packs' {}",
                dcl,
                sum
            );
        }
    }
    // No battery online: old data only. The limits of the last tick with one online stand
    // (drivers restarting must not stop the house), never more; with none, nothing stands.
    if online.is_empty() {
        let last = last_online.unwrap_or(Limits {
            cvl_v: 0.0,
            ccl_a: 0.0,
            dcl_a: 0.0,
        });
        prop_assert!(
            ccl <= last.ccl_a && dcl <= last.dcl_a,
            "no battery online: CCL {} DCL {} above the last online {:?}",
            ccl,
            dcl,
            last_online
        );
    }
    if ccl == 0.0 && feed_in == Some(1) {
        prop_assert_eq!(
            outcome.feed_in_write,
            Some(0),
            "charging stopped, feed-in on"
        );
    }
    Ok(())
}

/// The cell and temperature windows of the guard on limits for `batteries`.
fn windows_hold(
    g: &GuardBounds,
    batteries: &[Battery],
    limits: Limits,
) -> Result<(), TestCaseError> {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let active = || batteries.iter().filter(|b| b.state != BatteryState::Lost);
    let (ccl, dcl) = (limits.ccl_a, limits.dcl_a);
    if let Some(b) = active()
        .find(|b| finite(b.reading.max_cell_voltage_v).is_some_and(|v| v >= g.max_cell_voltage_v))
    {
        prop_assert_eq!(ccl, 0.0, "{} has a cell at safety.max_cell_voltage", b.name);
    }
    if let Some(b) = active()
        .find(|b| finite(b.reading.min_cell_voltage_v).is_some_and(|v| v <= g.min_cell_voltage_v))
    {
        prop_assert_eq!(dcl, 0.0, "{} has a cell at safety.min_cell_voltage", b.name);
    }
    for b in active() {
        let r = &b.reading;
        let low = finite(r.min_cell_temperature_c).or(finite(r.temperature_c));
        let high = finite(r.max_cell_temperature_c).or(finite(r.temperature_c));
        let outside =
            |w: Window| low.is_some_and(|t| t <= w.min_c) || high.is_some_and(|t| t >= w.max_c);
        if outside(g.charge_temperature) {
            prop_assert_eq!(ccl, 0.0, "{} outside the charge window", b.name);
        }
        if outside(g.discharge_temperature) {
            prop_assert_eq!(dcl, 0.0, "{} outside the discharge window", b.name);
        }
    }
    Ok(())
}

/// The properties of one tick's outcome, and of what it publishes.
fn check_outcome(
    run: &Run,
    batteries: &[Battery],
    outcome: &Outcome,
    published: &mut Published,
    last_online: Option<Limits>,
    low_cell_latched: bool,
) -> Result<(), TestCaseError> {
    within_bounds(outcome.limits, run.bounds, run.cells)?;

    let active = || batteries.iter().filter(|b| b.state != BatteryState::Lost);
    let blocks = |allow: Option<i64>, modules: Option<i64>| {
        allow == Some(0) || modules.is_some_and(|n| n > 0)
    };
    if let Some(b) =
        active().find(|b| blocks(b.reading.allow_to_charge, b.reading.modules_blocking_charge))
    {
        prop_assert_eq!(outcome.limits.ccl_a, 0.0, "{} blocks charging", b.name);
    }
    if let Some(b) = active().find(|b| {
        blocks(
            b.reading.allow_to_discharge,
            b.reading.modules_blocking_discharge,
        )
    }) {
        prop_assert_eq!(outcome.limits.dcl_a, 0.0, "{} blocks discharging", b.name);
    }
    if active().next().is_none() {
        prop_assert_eq!((outcome.limits.ccl_a, outcome.limits.dcl_a), (0.0, 0.0));
    }
    if !outcome.lost.is_empty() && run.on_lost != OnLost::Continue {
        // A battery lost stops charging, but for the way out of a bank that cannot discharge
        // (the low-cell stop, docs/guard.md §6, or a cause of its own,
        // docs/battery-states.md §8): at most the recovery current of the packs online or held.
        let capacity: f64 = active()
            .filter_map(|b| b.reading.installed_capacity_ah.filter(|c| c.is_finite()))
            .filter(|c| *c > 0.0)
            .sum();
        let recovery = run.guard.recovery_charge_rate_c * capacity;
        prop_assert!(
            outcome.limits.ccl_a <= recovery * (1.0 + 1e-9),
            "a battery is lost: CCL {} above the recovery current {recovery}",
            outcome.limits.ccl_a
        );
        if !low_cell_latched && outcome.limits.dcl_a > 0.0 {
            prop_assert_eq!(outcome.limits.ccl_a, 0.0, "a battery is lost");
        }
    }
    host_rules_hold(
        run,
        batteries,
        around_feed_in(run, batteries),
        outcome,
        last_online,
    )?;

    // Every number the service publishes, cell voltages included.
    let cell_paths: Vec<(String, Option<f64>)> = active()
        .flat_map(|b| {
            b.reading
                .cell_voltages_v
                .iter()
                .enumerate()
                .map(|(k, v)| (aggregator_core::published::cell_path(&b.name, k + 1), *v))
        })
        .collect();
    published.update(outcome, &[], run.cells, &cell_paths);
    for (path, item) in published.items() {
        if let Value::Float(v) = item.value {
            prop_assert!(v.is_finite(), "{} is published as {}", path, v);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Missing never gives more

/// Takes away the value at `position` of a reading: the numbers, counts and texts of
/// `BATTERY_PATHS`, then the alarms, then the cells. False when it was not there.
fn take_away(r: &mut BatteryReading, position: usize) -> bool {
    let alarms = BATTERY_PATHS.len();
    let cells = alarms + ALARMS.len();
    if position < alarms {
        match BATTERY_PATHS[position].slot {
            Slot::Number(_, field) => field(r).take().is_some(),
            Slot::Integer(_, field) => field(r).take().is_some(),
            Slot::Text(_, field) => field(r).take().is_some(),
        }
    } else if position < cells {
        r.alarms[position - alarms].take().is_some()
    } else {
        r.cell_voltages_v
            .get_mut(position - cells)
            .is_some_and(|c| c.take().is_some())
    }
}

/// A bank that published the same readings for a few ticks, and which of its values goes
/// missing in the next.
#[derive(Clone, Debug)]
struct Removal {
    run: Run,
    pack: usize,
    position: usize,
}

fn removal() -> impl Strategy<Value = Removal> {
    // A cell bound of a real chemistry, so that cells inside the window are plausible ones.
    let real = (2.4..4.2f64, bounds()).prop_map(|(max_cell_voltage_v, b)| Bounds {
        max_cell_voltage_v,
        ..b
    });
    let settings = (
        real.prop_flat_map(|b| (Just(b), guard_bounds(b.max_cell_voltage_v))),
        prop::sample::select(vec![
            OnLost::BlockCharge,
            OnLost::BlockAll,
            OnLost::Continue,
        ]),
        any::<bool>(),
        // The real strategies, or fixed limits: a strategy's own faults are the envelope's
        // business, and would make most limits 0 here.
        prop_oneof![
            4 => strategy_choice().prop_filter("a real strategy", |s| {
                matches!(s, StrategyChoice::Plugin(file, _) if *file != FAULT_TEST)
            }),
            1 => (0.0..1000.0f64, 0.0..1000.0f64, 0.0..1000.0f64)
                .prop_map(|(cvl, ccl, dcl)| StrategyChoice::Fixed(cvl, ccl, dcl)),
        ],
        0..CURRENT_SOURCES.len(),
    );
    let bank_and_tick = (1usize..=6, 4u32..=32).prop_flat_map(|(n, cells)| {
        let kind = prop_oneof![4 => Just(Kind::Steady), 1 => Just(Kind::Plausible)];
        let readings = vec(kind.prop_flat_map(move |k| reading(cells, k)), n);
        (
            Just(cells),
            readings,
            surroundings(cells, n as u32),
            0..n,
            // Any value, half of the time one that the host's rules or the strategies read.
            prop_oneof![
                0..BATTERY_PATHS.len() + ALARMS.len() + cells as usize,
                prop::sample::select(guarded_positions()),
            ],
            // Most banks inside the host's windows, so that there are limits to raise.
            prop_oneof![3 => Just(true), 1 => Just(false)],
        )
    });
    (settings, bank_and_tick).prop_map(
        |(
            ((bounds, guard), on_lost, own_counter, strategy, current_source),
            (cells, readings, around, pack, position, inside),
        )| {
            let mut guard = guard;
            if inside {
                // Windows that overlap, so that a temperature can be inside both.
                guard.charge_temperature = Window {
                    min_c: 0.0,
                    max_c: 45.0,
                };
                guard.discharge_temperature = Window {
                    min_c: -20.0,
                    max_c: 55.0,
                };
            }
            let batteries: Vec<Battery> = readings
                .into_iter()
                .enumerate()
                .map(|(k, mut reading)| {
                    if inside {
                        into_windows(&mut reading, &guard);
                    }
                    reading.connected = Some(1);
                    reading.alarms[ALARM_BMS_CABLE] = Some(0);
                    Battery {
                        name: format!("Bat{}", k + 1),
                        service: format!("com.victronenergy.battery.ttyUSB{k}"),
                        state: BatteryState::Online,
                        reading,
                    }
                })
                .collect();
            let around = TickInputs {
                dt_s: 1.0,
                ..around
            };
            Removal {
                run: Run {
                    bounds,
                    guard,
                    on_lost,
                    own_counter,
                    strategy,
                    current_source,
                    cells,
                    ticks: vec![(batteries, around)],
                },
                pack,
                position,
            }
        },
    )
}

/// A reading moved inside the host's windows as a healthy pack would publish it: its cells
/// between the low and high cell bounds, its voltage their sum, its extremes theirs, its
/// temperatures inside both windows, its current within 5 C.
fn into_windows(r: &mut BatteryReading, g: &GuardBounds) {
    let low = (g.min_cell_voltage_v + g.min_cell_hysteresis_v).max(1.2);
    let high = g.max_cell_voltage_v - g.max_cell_hysteresis_v;
    for c in r.cell_voltages_v.iter_mut().flatten() {
        *c = low + (*c - 1.5) / 2.5 * (high - low);
    }
    let cells: Option<Vec<f64>> = r.cell_voltages_v.iter().copied().collect();
    if let Some(cells) = cells.filter(|c| !c.is_empty()) {
        let sum: f64 = cells.iter().sum();
        r.voltage_v = r.voltage_v.map(|_| sum);
        r.voltages_sum_v = r.voltages_sum_v.map(|_| sum);
        let max = cells.iter().copied().fold(f64::MIN, f64::max);
        let min = cells.iter().copied().fold(f64::MAX, f64::min);
        r.max_cell_voltage_v = r.max_cell_voltage_v.map(|_| max);
        r.min_cell_voltage_v = r.min_cell_voltage_v.map(|_| min);
    }
    let t_low = g
        .charge_temperature
        .min_c
        .max(g.discharge_temperature.min_c);
    let t_high = g
        .charge_temperature
        .max_c
        .min(g.discharge_temperature.max_c);
    let t = (t_low + t_high) / 2.0;
    for temp in [
        &mut r.temperature_c,
        &mut r.max_cell_temperature_c,
        &mut r.min_cell_temperature_c,
    ] {
        *temp = temp.map(|_| t);
    }
    if let (Some(i), Some(c)) = (r.current_a, r.installed_capacity_ah) {
        r.current_a = Some(i.clamp(-5.0 * c, 5.0 * c));
    }
    if let (Some(v), Some(i)) = (r.voltage_v, r.current_a) {
        r.power_w = r.power_w.map(|_| v * i);
    }
}

/// The positions of [`take_away`] that limits are made from: cells and temperatures, the
/// packs' own limits and flags, what decides whether a pack is merged.
fn guarded_positions() -> Vec<usize> {
    let paths = [
        "/Connected",
        "/Dc/0/Voltage",
        "/Dc/0/Current",
        "/Dc/0/Temperature",
        "/Soc",
        "/System/MaxCellTemperature",
        "/System/MinCellTemperature",
        "/System/MaxCellVoltage",
        "/System/MinCellVoltage",
        "/System/NrOfModulesBlockingCharge",
        "/System/NrOfModulesBlockingDischarge",
        "/Io/AllowToCharge",
        "/Io/AllowToDischarge",
        "/Info/MaxChargeVoltage",
        "/Info/MaxChargeCurrent",
        "/Info/MaxDischargeCurrent",
    ];
    let mut positions: Vec<usize> = paths
        .iter()
        .map(|p| {
            BATTERY_PATHS
                .iter()
                .position(|b| b.path == *p)
                .unwrap_or_else(|| panic!("{p} is read"))
        })
        .collect();
    positions.push(BATTERY_PATHS.len() + ALARM_BMS_CABLE);
    positions
}

/// Presence and the engine over `readings` at second `t`: the published limits.
fn tick_through_presence(
    presence: &mut Presence,
    engine: &mut Engine,
    readings: &[Battery],
    around: &TickInputs,
    t: f64,
) -> Limits {
    for b in readings {
        presence.observe(t, &b.service, &b.name, Some(&b.reading), false);
    }
    let o = engine.tick(&presence.batteries(), around);
    o.limits
}

#[test]
fn removing_any_value_a_pack_published_never_raises_the_published_ccl_or_dcl() {
    let plugins = Plugins::load();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 96,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&removal(), |removal| {
        let run = &removal.run;
        let (batteries, around) = &run.ticks[0];
        let mut spoiled = batteries.clone();
        prop_assume!(take_away(
            &mut spoiled[removal.pack].reading,
            removal.position
        ));
        let timing = Timing {
            hold_for_s: 60.0,
            frozen_after_s: 0.0,
        };
        // Two banks alike for three ticks; in the fourth one of them misses the value.
        let (mut whole, mut missing) = (plugins.engine(run), plugins.engine(run));
        let (mut seen_whole, mut seen_missing) = (Presence::new(timing), Presence::new(timing));
        for t in 0..3 {
            let t = f64::from(t);
            tick_through_presence(&mut seen_whole, &mut whole, batteries, around, t);
            tick_through_presence(&mut seen_missing, &mut missing, batteries, around, t);
        }
        let full = tick_through_presence(&mut seen_whole, &mut whole, batteries, around, 3.0);
        let less = tick_through_presence(&mut seen_missing, &mut missing, &spoiled, around, 3.0);
        let path = kept_value_path_or_text(removal.position);
        prop_assert!(
            less.ccl_a <= full.ccl_a + 1e-9 && less.dcl_a <= full.dcl_a + 1e-9,
            "without {} of Bat{}: {:?}, with it: {:?}",
            path,
            removal.pack + 1,
            less,
            full
        );
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The path at a position of [`take_away`], for the failure message.
fn kept_value_path_or_text(position: usize) -> String {
    let alarms = BATTERY_PATHS.len();
    let cells = alarms + ALARMS.len();
    if position < alarms {
        BATTERY_PATHS[position].path.to_string()
    } else if position < cells {
        format!("/Alarms/{}", ALARMS[position - alarms])
    } else {
        format!("/Voltages/Cell{}", position - cells + 1)
    }
}

#[test]
fn the_tick_holds_the_envelope_for_any_bank_with_the_real_plugins() {
    let plugins = Plugins::load();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&run(), |run| {
        let mut engine = plugins.engine(&run);
        let mut published = Published::new(&DeviceInfo {
            device_instance: 512,
            custom_name: "Bank".into(),
            process_name: "dbus-aggregate-batteries".into(),
        });
        let mut last_online = None;
        for (batteries, around) in &run.ticks {
            let outcome = engine.tick(batteries, around);
            let low_cell_latched = engine.state().latches.low_cell;
            check_outcome(
                &run,
                batteries,
                &outcome,
                &mut published,
                last_online,
                low_cell_latched,
            )?;
            if outcome.online > 0 {
                last_online = Some(outcome.limits);
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// A bank whose packs are only held never stops the house

/// A chemistry's windows and a strategy suited to it.
#[derive(Clone, Copy, Debug)]
struct Chemistry {
    /// Cells inside the window, clear of every latch's hysteresis, V.
    cells_v: (f64, f64),
    max_cell_v: f64,
    min_cell_v: f64,
    /// The packs' own CVL per cell, V.
    pack_cvl_v: f64,
}

const LFP: Chemistry = Chemistry {
    cells_v: (3.15, 3.35),
    max_cell_v: 3.65,
    min_cell_v: 2.8,
    pack_cvl_v: 3.45,
};
const LTO: Chemistry = Chemistry {
    cells_v: (2.25, 2.44),
    max_cell_v: 2.6,
    min_cell_v: 1.8,
    pack_cvl_v: 2.5,
};

/// A pack's reading as a BMS that allows both directions sends it, cells and temperatures
/// inside their windows.
fn allowing_reading(cells: u32, chem: Chemistry) -> impl Strategy<Value = BatteryReading> {
    let n = f64::from(cells);
    let (low, high) = chem.cells_v;
    (
        vec(low..high, cells as usize),
        -100.0..100.0f64,
        10.0..40.0f64,
        5.0..200.0f64,
        5.0..200.0f64,
        20.0..90.0f64,
    )
        .prop_map(move |(cell_voltages, current, temp, ccl, dcl, soc)| {
            let sum: f64 = cell_voltages.iter().sum();
            let max = cell_voltages.iter().copied().fold(f64::MIN, f64::max);
            let min = cell_voltages.iter().copied().fold(f64::MAX, f64::min);
            let mut reading = BatteryReading {
                connected: Some(1),
                voltage_v: Some(sum),
                current_a: Some(current),
                power_w: Some(sum * current),
                temperature_c: Some(temp),
                installed_capacity_ah: Some(280.0),
                capacity_ah: Some(2.8 * soc),
                consumed_ah: Some(2.8 * (100.0 - soc)),
                soc_pct: Some(soc),
                max_cell_voltage_v: Some(max),
                max_voltage_cell_id: Some("C1".into()),
                min_cell_voltage_v: Some(min),
                min_voltage_cell_id: Some("C2".into()),
                voltages_sum_v: Some(sum),
                cells_per_battery: Some(i64::from(cells)),
                modules_online: Some(1),
                modules_offline: Some(0),
                modules_blocking_charge: Some(0),
                modules_blocking_discharge: Some(0),
                allow_to_charge: Some(1),
                allow_to_discharge: Some(1),
                max_charge_voltage_v: Some(n * chem.pack_cvl_v),
                max_charge_current_a: Some(ccl),
                max_discharge_current_a: Some(dcl),
                cell_voltages_v: cell_voltages.into_iter().map(Some).collect(),
                ..Default::default()
            };
            reading.alarms = [Some(0); ALARMS.len()];
            reading
        })
}

#[derive(Clone, Debug)]
struct HeldRun {
    chem: Chemistry,
    strategy: (&'static str, &'static str),
    bms_limits: BmsLimits,
    on_lost: OnLost,
    cells: u32,
    /// Each tick: every pack's state (online or held, never lost) and reading. The first tick
    /// has every pack online, as the presence tracker holds only a pack it has seen.
    ticks: Vec<Vec<Battery>>,
}

fn held_run() -> impl Strategy<Value = HeldRun> {
    let chem_and_strategy = prop_oneof![
        Just((LFP, ("libplugin_lfp_balancing.so", "{}"))),
        Just((LFP, ("libplugin_serialbattery.so", "{}"))),
        Just((LTO, ("libplugin_lto_cv.so", "{}"))),
        Just((LTO, ("libplugin_serialbattery.so", r#"{"limits": "sum"}"#))),
    ];
    let bms_limits = prop::sample::select(vec![
        BmsLimits::Share,
        BmsLimits::MinTimesCount,
        BmsLimits::Sum,
        BmsLimits::Ignore,
    ]);
    let on_lost = prop::sample::select(vec![
        OnLost::BlockCharge,
        OnLost::BlockAll,
        OnLost::Continue,
    ]);
    (
        chem_and_strategy,
        bms_limits,
        on_lost,
        1usize..=6,
        prop::sample::select(vec![8u32, 16, 22]),
    )
        .prop_flat_map(|((chem, strategy), bms_limits, on_lost, n, cells)| {
            let pack = move |k: usize, first: bool| {
                let state = if first {
                    Just(BatteryState::Online).boxed()
                } else {
                    prop_oneof![
                        1 => Just(BatteryState::Online),
                        2 => Just(BatteryState::Stale),
                    ]
                    .boxed()
                };
                (state, allowing_reading(cells, chem)).prop_map(move |(state, reading)| Battery {
                    name: format!("Bat{}", k + 1),
                    service: format!("com.victronenergy.battery.ttyUSB{k}"),
                    state,
                    reading,
                })
            };
            let tick = move |first: bool| (0..n).map(|k| pack(k, first)).collect::<Vec<_>>();
            // After the first tick, some ticks with every pack held, as when all drivers
            // restart together.
            let all_held = tick(false).prop_map(|mut packs: Vec<Battery>| {
                for b in &mut packs {
                    b.state = BatteryState::Stale;
                }
                packs
            });
            let later = prop_oneof![tick(false), all_held];
            (tick(true), vec(later, 1..=4)).prop_map(move |(first, later)| HeldRun {
                chem,
                strategy,
                bms_limits,
                on_lost,
                cells,
                ticks: std::iter::once(first).chain(later).collect(),
            })
        })
}

#[test]
fn a_bank_whose_packs_are_only_held_keeps_its_discharge() {
    let plugins = Plugins::load();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&held_run(), |run| {
        let (file, config) = run.strategy;
        let strategy = &plugins.by_file[file];
        let settings = Settings {
            bounds: Bounds {
                max_cell_voltage_v: run.chem.max_cell_v,
                max_charge_current_a: 300.0,
                max_discharge_current_a: 300.0,
                plugin_failures: 3,
                max_charge_voltage_v: f64::INFINITY,
            },
            guard: GuardBounds {
                max_cell_voltage_v: run.chem.max_cell_v,
                max_cell_hysteresis_v: 0.05,
                min_cell_voltage_v: run.chem.min_cell_v,
                min_cell_hysteresis_v: 0.1,
                charge_temperature: Window {
                    min_c: 0.0,
                    max_c: 45.0,
                },
                discharge_temperature: Window {
                    min_c: -20.0,
                    max_c: 55.0,
                },
                temperature_derate_c: 5.0,
                bms_limits: run.bms_limits,
                share_min_current_a: 5.0,
                recovery_charge_rate_c: 0.05,
                bms_limits_n_minus_one: false,
            },
            feed_in_hold_s: 60.0,
            on_lost: run.on_lost,
            own_counter: true,
            efficiency: 0.985,
            save_precision: 0.0025,
        };
        let mut engine = Engine::new(
            settings,
            &strategy.name,
            strategy.new_strategy(config).expect("strategy"),
            plugins.by_file[CURRENT_SOURCES[0].0]
                .new_current_source(CURRENT_SOURCES[0].1)
                .expect("current source"),
        );
        for (tick, batteries) in run.ticks.iter().enumerate() {
            let around = TickInputs {
                cells: run.cells,
                expected: batteries.len() as u32,
                left_out: Vec::new(),
                dc_sources: Vec::new(),
                monitor_soc: None,
                vebus: Vec::new(),
                solar_chargers: Vec::new(),
                smartshunts: Vec::new(),
                low_soc: Some(0),
                feed_in_setting: Some(1),
                date: LocalDate::new(2026, 6, 1).expect("date"),
                dt_s: 1.0,
            };
            let outcome = engine.tick(batteries, &around);
            prop_assert!(
                outcome.limits.dcl_a > 0.0,
                "tick {}: DCL {} with {} of {} packs online, mode {:?}",
                tick,
                outcome.limits.dcl_a,
                outcome.online,
                batteries.len(),
                outcome.mode
            );
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------------------------
// A discharged bank can always be recharged

/// A chemistry's window and the built-in strategies configured for it, as `check-config`
/// lets them through: (max cell, min cell, cells, BMS CVL per cell, strategies).
type DischargedBank = (f64, f64, u32, f64, &'static [(&'static str, &'static str)]);

const LFP_WINDOW: DischargedBank = (
    3.60,
    2.90,
    16,
    3.45,
    &[
        ("libplugin_serialbattery.so", "{}"),
        (
            "libplugin_lto_cv.so",
            r#"{"charge_voltage": 3.45, "max_cell_voltage": 3.55, "discharge_voltage": 3.0, "min_cell_voltage": 2.9, "cv1": 3.40, "cv2": 3.50}"#,
        ),
    ],
);
const LTO_WINDOW: DischargedBank = (
    2.60,
    1.80,
    22,
    2.50,
    &[
        ("libplugin_serialbattery.so", "{}"),
        ("libplugin_lto_cv.so", "{}"),
        ("libplugin_lfp_balancing.so", "{}"),
    ],
);

/// One pack whose BMS allows charging (its own CCL above 0, no block), its cells all at or
/// below `min_cell` (none above the window), its temperatures inside the charge window or
/// not published at all.
fn discharged_pack(
    index: usize,
    (_, min_cell, cells, cvl_per_cell, _): DischargedBank,
) -> impl Strategy<Value = Battery> {
    let n = f64::from(cells);
    (
        (min_cell - 0.8..=min_cell, 0.0..=0.3f64),
        -50.0..50.0f64,
        20.0..400.0f64,
        0.0..30.0f64,
        maybe(1.0..44.0f64),
        (0.5..300.0f64, 0.0..300.0f64, any::<bool>()),
        (maybe(0i64..=1), any::<bool>()),
    )
        .prop_map(
            move |(
                (low, spread),
                current,
                capacity,
                soc,
                temperature,
                (ccl, dcl, with_cells),
                (allow_discharge, with_allow),
            )| {
                let high = (low + spread).min(min_cell);
                let cell_voltages_v = if with_cells {
                    (0..cells)
                        .map(|k| Some(low + (high - low) * f64::from(k) / (n - 1.0)))
                        .collect()
                } else {
                    Vec::new()
                };
                Battery {
                    name: format!("Bat{}", index + 1),
                    service: format!("com.victronenergy.battery.ttyUSB{index}"),
                    state: BatteryState::Online,
                    reading: BatteryReading {
                        connected: Some(1),
                        voltage_v: Some(n * (low + high) / 2.0),
                        current_a: Some(current),
                        temperature_c: temperature,
                        installed_capacity_ah: Some(capacity),
                        soc_pct: Some(soc),
                        max_cell_voltage_v: Some(high),
                        min_cell_voltage_v: Some(low),
                        cells_per_battery: Some(i64::from(cells)),
                        allow_to_charge: with_allow.then_some(1),
                        allow_to_discharge: allow_discharge,
                        modules_blocking_charge: Some(0),
                        max_charge_voltage_v: Some(n * cvl_per_cell),
                        max_charge_current_a: Some(ccl),
                        max_discharge_current_a: Some(dcl),
                        cell_voltages_v,
                        ..Default::default()
                    },
                }
            },
        )
}

fn discharged() -> impl Strategy<Value = Run> {
    (
        prop::sample::select(vec![LFP_WINDOW, LTO_WINDOW]),
        prop::sample::select(vec![
            BmsLimits::Share,
            BmsLimits::MinTimesCount,
            BmsLimits::Sum,
            BmsLimits::Ignore,
        ]),
        (0.01..=0.5f64, any::<bool>(), 0usize..3),
        1usize..=4,
        1usize..=4,
    )
        .prop_flat_map(
            |(chemistry, bms_limits, (recovery, n_minus_one, pick), n, ticks)| {
                let (max_cell, min_cell, cells, _, strategies) = chemistry;
                let (file, config) = strategies[pick % strategies.len()];
                let bank = (0..n)
                    .map(|k| discharged_pack(k, chemistry))
                    .collect::<Vec<_>>();
                vec(bank, ticks).prop_map(move |banks| {
                    let around = TickInputs {
                        cells,
                        expected: n as u32,
                        left_out: Vec::new(),
                        dc_sources: Vec::new(),
                        monitor_soc: None,
                        vebus: Vec::new(),
                        solar_chargers: Vec::new(),
                        smartshunts: Vec::new(),
                        low_soc: Some(0),
                        feed_in_setting: Some(1),
                        date: LocalDate::new(2026, 1, 15).unwrap(),
                        dt_s: 1.0,
                    };
                    Run {
                        bounds: Bounds {
                            max_cell_voltage_v: max_cell,
                            max_charge_current_a: 300.0,
                            max_discharge_current_a: 300.0,
                            plugin_failures: 5,
                            max_charge_voltage_v: f64::from(cells) * max_cell,
                        },
                        guard: GuardBounds {
                            max_cell_voltage_v: max_cell,
                            max_cell_hysteresis_v: 0.05,
                            min_cell_voltage_v: min_cell,
                            min_cell_hysteresis_v: 0.2,
                            charge_temperature: Window {
                                min_c: 0.0,
                                max_c: 45.0,
                            },
                            discharge_temperature: Window {
                                min_c: -20.0,
                                max_c: 55.0,
                            },
                            temperature_derate_c: 5.0,
                            bms_limits,
                            share_min_current_a: 5.0,
                            recovery_charge_rate_c: recovery,
                            bms_limits_n_minus_one: n_minus_one,
                        },
                        on_lost: OnLost::BlockCharge,
                        own_counter: true,
                        strategy: StrategyChoice::Plugin(file, config),
                        current_source: 0,
                        cells,
                        ticks: banks.into_iter().map(|b| (b, around.clone())).collect(),
                    }
                })
            },
        )
}

/// A bank whose BMSs allow charging and whose cells are all at or below the window, none
/// above, gets a charge current: no lock-out of a discharged bank, whatever the strategy
/// (built in, configured for the chemistry) and the caps.
#[test]
fn a_discharged_bank_whose_bmss_allow_charge_gets_charge_current() {
    let plugins = Plugins::load();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 64,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let result = runner.run(&discharged(), |run| {
        let mut engine = plugins.engine(&run);
        for (batteries, around) in &run.ticks {
            let outcome = engine.tick(batteries, around);
            prop_assert!(
                outcome.limits.ccl_a > 0.0,
                "CCL {} ({}) for {:?}",
                outcome.limits.ccl_a,
                outcome.mode,
                run.strategy
            );
            prop_assert_eq!(outcome.limits.dcl_a, 0.0, "a low cell stops discharging");
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
