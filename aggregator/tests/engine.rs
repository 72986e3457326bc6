//! The tick without the bus, with the real plugins loaded from disk: limits, feed-in, faults,
//! lost batteries, the counter and the current source fallback.

use crate::support;

use aggregator::plugins::{load, Plugin};
use aggregator_core::engine::OnLost;
use aggregator_core::engine::{Engine, Event, Settings, TickInputs};
use aggregator_core::envelope::Bounds;
use aggregator_core::guard::{BmsLimits, GuardBounds, Window};
use aggregator_core::presence::Battery;
use aggregator_core::reading::BatteryReading;
use plugin_api::{BatteryState, LocalDate, VebusView};
use support::plugins_dir_with;

const CELLS: u32 = 22;

fn plugin(file: &str) -> (tempfile::TempDir, Plugin) {
    let dir = plugins_dir_with(&[file]);
    let plugin = load(&dir.path().join(file)).expect("load plugin");
    (dir, plugin)
}

fn settings(on_lost: OnLost) -> Settings {
    Settings {
        bounds: Bounds {
            max_cell_voltage_v: 2.6,
            max_charge_current_a: 300.0,
            max_discharge_current_a: 300.0,
            plugin_failures: 3,
            max_charge_voltage_v: f64::INFINITY,
        },
        guard: GuardBounds {
            max_cell_voltage_v: 2.6,
            max_cell_hysteresis_v: 0.05,
            min_cell_voltage_v: 1.8,
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
            bms_limits: BmsLimits::Share,
            share_min_current_a: 5.0,
            recovery_charge_rate_c: 0.05,
            bms_limits_n_minus_one: false,
        },
        feed_in_hold_s: 0.0,
        on_lost,
        own_counter: true,
        efficiency: 0.985,
        save_precision: 0.0025,
    }
}

struct Rig {
    engine: Engine,
    _dirs: Vec<tempfile::TempDir>,
}

fn rig(strategy: (&str, &str), current: (&str, &str), on_lost: OnLost) -> Rig {
    let (d1, s) = plugin(strategy.0);
    let (d2, c) = plugin(current.0);
    let engine = Engine::new(
        settings(on_lost),
        &s.name,
        s.new_strategy(strategy.1).unwrap(),
        c.new_current_source(current.1).unwrap(),
    );
    Rig {
        engine,
        _dirs: vec![d1, d2],
    }
}

/// A 22-cell LTO battery with all cells at `cell` except cell 1 at `high`.
fn battery(name: &str, cell: f64, high: f64, current: f64, soc: f64) -> Battery {
    let mut cells = vec![Some(cell); CELLS as usize];
    cells[0] = Some(high);
    let sum = cell * f64::from(CELLS - 1) + high;
    Battery {
        name: name.into(),
        service: format!("com.victronenergy.battery.{name}"),
        state: BatteryState::Online,
        reading: BatteryReading {
            connected: Some(1),
            voltage_v: Some(sum),
            current_a: Some(current),
            power_w: Some(sum * current),
            temperature_c: Some(21.0),
            installed_capacity_ah: Some(280.0),
            capacity_ah: Some(2.8 * soc),
            consumed_ah: Some(2.8 * (100.0 - soc)),
            soc_pct: Some(soc),
            max_cell_voltage_v: Some(high.max(cell)),
            max_voltage_cell_id: Some(if high >= cell { "C1" } else { "C2" }.into()),
            min_cell_voltage_v: Some(high.min(cell)),
            min_voltage_cell_id: Some(if high >= cell { "C2" } else { "C1" }.into()),
            voltages_sum_v: Some(sum),
            cells_per_battery: Some(i64::from(CELLS)),
            modules_blocking_charge: Some(0),
            modules_blocking_discharge: Some(0),
            allow_to_charge: Some(1),
            allow_to_discharge: Some(1),
            cell_voltages_v: cells,
            ..Default::default()
        },
    }
}

fn around(feed_in: Option<i64>) -> TickInputs {
    TickInputs {
        cells: CELLS,
        expected: 2,
        left_out: Vec::new(),
        dc_sources: Vec::new(),
        monitor_soc: None,
        vebus: Vec::new(),
        solar_chargers: Vec::new(),
        smartshunts: Vec::new(),
        low_soc: Some(0),
        feed_in_setting: feed_in,
        date: LocalDate::new(2026, 1, 15).unwrap(),
        dt_s: 1.0,
    }
}

const LFP: (&str, &str) = (
    "libplugin_lfp_balancing.so",
    r#"{"balancing_every_days": 10}"#,
);
const BMS: (&str, &str) = ("libplugin_bms.so", "{}");

/// A fresh lfp-balancing run would balance at once; start from a recent balancing.
fn balanced_recently(rig: &mut Rig) {
    let mut state = rig.engine.state();
    let strategy = state.strategy.as_mut().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&strategy.state).unwrap();
    json["last_balancing"] = "2026-01-14".into();
    strategy.state = json.to_string();
    assert!(rig.engine.restore(&state).is_empty());
}

#[test]
fn normal_charge_gives_the_months_cvl_and_full_currents() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let bank = [
        battery("A", 2.3, 2.3, 20.0, 50.0),
        battery("B", 2.3, 2.3, 30.0, 60.0),
    ];
    let out = rig.engine.tick(&bank, &around(Some(1)));
    assert_eq!(out.limits.cvl_v, 53.900000000000006);
    assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (200.0, 200.0));
    assert_eq!(out.current_a, Some(50.0));
    assert_eq!(out.online, 2);
    assert!(out.events.contains(&Event::CounterStartedFromBms(55.0)));
    assert_eq!(out.feed_in_write, None);
}

#[test]
fn the_counter_starts_without_a_battery_left_out_for_its_cell_count() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let bank = [battery("A", 2.3, 2.3, 20.0, 50.0)];
    // Two expected: one merged, the other left out (another nominal voltage).
    let inputs = TickInputs {
        left_out: vec!["B".into()],
        ..around(Some(1))
    };
    let out = rig.engine.tick(&bank, &inputs);
    assert!(
        out.events.contains(&Event::CounterStartedFromBms(50.0)),
        "{:?}",
        out.events
    );
    // One of two expected and nothing left out: a bank still coming together, not started.
    let mut rig = self::rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let out = rig.engine.tick(&bank, &around(Some(1)));
    let started = out
        .events
        .iter()
        .any(|e| matches!(e, Event::CounterStartedFromBms(_)));
    assert!(!started, "{:?}", out.events);
}

#[test]
fn a_saved_charge_is_not_taken_back_while_the_counter_is_off() {
    let (_d1, s) = plugin(LFP.0);
    let (_d2, c) = plugin(BMS.0);
    let off = Settings {
        own_counter: false,
        ..settings(OnLost::BlockCharge)
    };
    let strategy = s.new_strategy(LFP.1).unwrap();
    let mut engine = Engine::new(off, &s.name, strategy, c.new_current_source(BMS.1).unwrap());
    // Saved while the counter ran: 100 of 560 Ah.
    let saved = aggregator_core::state::State {
        charge_ah: Some(100.0),
        capacity_ah: Some(560.0),
        ..Default::default()
    };
    assert!(engine.restore(&saved).is_empty());
    let bank = [
        battery("A", 2.3, 2.3, 20.0, 50.0),
        battery("B", 2.3, 2.3, 30.0, 60.0),
    ];
    let out = engine.tick(&bank, &around(Some(1)));
    // The batteries' SoC, not the saved 17.9 %, and no counter left to run.
    assert_eq!(out.soc_pct, Some(55.0));
    assert_eq!(engine.state().charge_ah, None);
}

/// docs/state.md §4: a saved charge the bank cannot hold is a missing one. With its capacity
/// it is dropped at the restore; without it, at the first whole bank, whose capacity is known
/// only then. Before, 1e308 Ah was clamped to a full bank (SoC 100 % on packs at 55 %).
#[test]
fn a_saved_charge_the_bank_cannot_hold_starts_the_counter_from_the_batteries() {
    let bank = [
        battery("A", 2.3, 2.3, 0.0, 50.0),
        battery("B", 2.3, 2.3, 0.0, 60.0),
    ];
    let saved = |charge_ah: f64, capacity_ah: Option<f64>| aggregator_core::state::State {
        charge_ah: Some(charge_ah),
        capacity_ah,
        ..Default::default()
    };
    for (charge, capacity) in [(1e308, Some(560.0)), (600.0, Some(560.0))] {
        let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
        let problems = rig.engine.restore(&saved(charge, capacity));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("charge_ah: "), "{problems:?}");
        let out = rig.engine.tick(&bank, &around(Some(1)));
        assert!(out.events.contains(&Event::CounterStartedFromBms(55.0)));
        assert!(near(out.soc_pct, 55.0), "{charge}: {:?}", out.soc_pct);
    }
    for charge in [1e308, 600.0] {
        let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
        assert!(rig.engine.restore(&saved(charge, None)).is_empty());
        // Half the bank: its capacity is not the bank's yet, nothing is judged.
        let out = rig.engine.tick(&bank[..1], &around(Some(1)));
        assert_eq!(
            rig.engine.state().charge_ah,
            Some(charge),
            "{:?}",
            out.events
        );
        let out = rig.engine.tick(&bank, &around(Some(1)));
        assert!(
            out.events.contains(&Event::SavedChargeDropped {
                charge_ah: charge,
                capacity_ah: 560.0
            }),
            "{:?}",
            out.events
        );
        assert!(out.events.contains(&Event::CounterStartedFromBms(55.0)));
        assert!(near(out.soc_pct, 55.0), "{charge}: {:?}", out.soc_pct);
        assert!(near(rig.engine.state().charge_ah, 308.0), "{charge}");
    }
    // What the bank holds is taken back, without its capacity too.
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    assert!(rig.engine.restore(&saved(280.0, None)).is_empty());
    let out = rig.engine.tick(&bank, &around(Some(1)));
    assert!(
        near(out.soc_pct, 50.0),
        "{:?} {:?}",
        out.soc_pct,
        out.events
    );
}

fn near(value: Option<f64>, expected: f64) -> bool {
    value.is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[test]
fn a_high_cell_lowers_cvl_disables_feed_in_and_restores_the_users_value() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let high = [
        battery("A", 2.4, 2.58, 20.0, 90.0),
        battery("B", 2.4, 2.4, 20.0, 90.0),
    ];
    let out = rig.engine.tick(&high, &around(Some(1)));
    // The lowest of the batteries' sums less their overvoltage: B's 22 × 2.4 (A's is 52.95).
    let reduced = (2.4_f64 * 21.0 + 2.58 - (2.58 - 2.55)).min(2.4 * 22.0);
    assert!(
        (out.limits.cvl_v - reduced).abs() < 1e-9,
        "{}",
        out.limits.cvl_v
    );
    assert_eq!(out.feed_in_write, Some(0));
    assert!(
        out.save_state,
        "the saved feed-in value must reach the disk"
    );
    let out = rig.engine.tick(&high, &around(Some(0)));
    assert_eq!(out.feed_in_write, None, "written on the transition only");

    // A restart in the middle of the episode keeps the user's value.
    let saved = rig.engine.state();
    let mut rig = self::rig(LFP, BMS, OnLost::BlockCharge);
    assert!(rig.engine.restore(&saved).is_empty());
    let calm = [
        battery("A", 2.4, 2.4, 5.0, 90.0),
        battery("B", 2.4, 2.4, 5.0, 90.0),
    ];
    let out = rig.engine.tick(&calm, &around(Some(0)));
    assert_eq!(out.feed_in_write, Some(1), "the user's 1 comes back");
    assert_eq!(out.limits.cvl_v, 53.900000000000006);
}

#[test]
fn a_bms_blocking_charge_gives_ccl_zero() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let mut blocked = battery("B", 2.3, 2.3, 0.0, 50.0);
    blocked.reading.modules_blocking_charge = Some(1);
    let out = rig.engine.tick(
        &[battery("A", 2.3, 2.3, 0.0, 50.0), blocked],
        &around(Some(0)),
    );
    assert_eq!(out.limits.ccl_a, 0.0);
    assert_eq!(out.limits.dcl_a, 200.0);
}

#[test]
fn a_lost_battery_blocks_charge_and_scales_discharge() {
    for (policy, ccl, dcl) in [
        (OnLost::BlockCharge, 0.0, 100.0),
        (OnLost::BlockAll, 0.0, 0.0),
        (OnLost::Continue, 100.0, 100.0),
    ] {
        let mut rig = rig(LFP, BMS, policy);
        balanced_recently(&mut rig);
        let mut gone = battery("B", 2.3, 2.3, 0.0, 50.0);
        gone.state = BatteryState::Lost;
        let out = rig.engine.tick(
            &[battery("A", 2.3, 2.3, 10.0, 50.0), gone],
            &around(Some(0)),
        );
        assert_eq!(
            (out.limits.ccl_a, out.limits.dcl_a),
            (ccl, dcl),
            "{policy:?}"
        );
        assert_eq!(out.lost, vec!["B".to_string()]);
        assert_eq!(out.merged.count, 1, "a lost battery is not merged");
        assert_eq!(out.current_a, Some(10.0));
    }
}

#[test]
fn an_expected_battery_never_found_degrades_the_bank_as_a_lost_one() {
    for (policy, ccl, dcl) in [
        (OnLost::BlockCharge, 0.0, 100.0),
        (OnLost::BlockAll, 0.0, 0.0),
        (OnLost::Continue, 100.0, 100.0),
    ] {
        let mut rig = rig(LFP, BMS, policy);
        balanced_recently(&mut rig);
        // Two expected, one ever seen.
        let out = rig
            .engine
            .tick(&[battery("A", 2.3, 2.3, 10.0, 50.0)], &around(Some(0)));
        assert_eq!(
            (out.limits.ccl_a, out.limits.dcl_a),
            (ccl, dcl),
            "{policy:?}"
        );
        assert_eq!(out.missing, 1);
        assert!(out.lost.is_empty());
        assert!(
            out.mode.ends_with("1 of 2 batteries not found"),
            "{}",
            out.mode
        );
    }
    // Both there: not degraded.
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let both = [
        battery("A", 2.3, 2.3, 10.0, 50.0),
        battery("B", 2.3, 2.3, 10.0, 50.0),
    ];
    let out = rig.engine.tick(&both, &around(Some(0)));
    assert_eq!(out.missing, 0);
    assert!(out.limits.ccl_a > 0.0);
}

#[test]
fn no_battery_at_all_stops_both_directions() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    let out = rig.engine.tick(&[], &around(None));
    assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (0.0, 0.0));
    // Not a plugin fault: nothing was asked of the strategy.
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, Event::StrategyFault(_))),
        "{:?}",
        out.events
    );
    assert!(out.mode.starts_with("No battery online"), "{}", out.mode);
}

#[test]
fn a_panicking_strategy_is_contained_by_the_envelope() {
    let fault = (
        "libplugin_fault_test.so",
        r#"{"fault":"panic","after_ticks":1}"#,
    );
    let mut rig = rig(fault, BMS, OnLost::BlockCharge);
    let bank = [
        battery("A", 2.3, 2.3, 0.0, 50.0),
        battery("B", 2.3, 2.3, 0.0, 50.0),
    ];
    let first = rig.engine.tick(&bank, &around(None));
    assert_eq!(
        (first.limits.cvl_v, first.limits.ccl_a, first.limits.dcl_a),
        (55.0, 50.0, 60.0)
    );
    let mut fault_events = 0;
    let mut stop_events = Vec::new();
    for tick in 1..=4 {
        let out = rig.engine.tick(&bank, &around(None));
        fault_events += out
            .events
            .iter()
            .filter(|e| matches!(e, Event::StrategyFault(_)))
            .count();
        stop_events.extend(
            out.events
                .iter()
                .filter(|e| matches!(e, Event::DischargeStoppedByFaults(_)))
                .cloned(),
        );
        // The stop names its cause for as long as it lasts.
        assert_eq!(
            out.mode
                .contains("discharging stopped (safety.plugin_failures)"),
            tick >= 3,
            "tick {tick}: {}",
            out.mode
        );
        assert_eq!(out.limits.cvl_v, 55.0, "last good CVL");
        assert_eq!(out.limits.ccl_a, 0.0);
        assert_eq!(
            out.limits.dcl_a,
            if tick < 3 { 60.0 } else { 0.0 },
            "tick {tick}"
        );
        assert!(out.mode.starts_with("Fault"));
    }
    assert_eq!(fault_events, 1, "logged once per episode");
    assert_eq!(stop_events, vec![Event::DischargeStoppedByFaults(3)]);
}

#[test]
fn a_fault_on_the_first_tick_stops_charging_and_discharging_only_after_the_failures() {
    let fault = ("libplugin_fault_test.so", r#"{"fault":"error"}"#);
    let mut rig = rig(fault, BMS, OnLost::BlockCharge);
    let mut a = battery("A", 2.3, 2.3, 0.0, 50.0);
    a.reading.max_discharge_current_a = Some(80.0);
    let mut b = battery("B", 2.3, 2.3, 0.0, 50.0);
    b.reading.max_discharge_current_a = Some(80.0);
    let bank = [a, b];
    for tick in 1..=4 {
        let out = rig.engine.tick(&bank, &around(None));
        // No good result yet: the CVL follows the bank, DCL is what the packs allow (two
        // packs of 80 A under the 300 A bound) until `plugin_failures` (3) faults in a row.
        assert_eq!(out.limits.cvl_v, 2.3 * 22.0, "tick {tick}");
        assert_eq!(out.limits.ccl_a, 0.0, "tick {tick}");
        assert_eq!(
            out.limits.dcl_a,
            if tick < 3 { 160.0 } else { 0.0 },
            "tick {tick}: {}",
            out.mode
        );
    }
}

#[test]
fn more_packs_held_than_expected_are_counted_against_all_the_packs() {
    // Packs that came and went under new names are held for `hold_for` like any other: the
    // mode text counts them against every pack of the bank, never more held than there are.
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let mut bank: Vec<Battery> = ["A", "B", "C", "D", "E"]
        .into_iter()
        .map(|name| battery(name, 2.3, 2.3, -10.0, 50.0))
        .collect();
    rig.engine.tick(&bank, &around(Some(0)));
    for b in &mut bank[2..] {
        b.state = BatteryState::Stale;
    }
    let out = rig.engine.tick(&bank, &around(Some(0)));
    assert!(
        out.mode
            .contains("3 of 5 batteries held: limits scaled to 2 online"),
        "{}",
        out.mode
    );
    // Fewer known than expected: the expected ones count.
    let mut inputs = around(Some(0));
    inputs.expected = 6;
    let out = rig.engine.tick(&bank, &inputs);
    assert!(out.mode.contains("3 of 6 batteries held"), "{}", out.mode);
}

#[test]
fn drivers_restarting_together_keep_the_last_limits() {
    for policy in [OnLost::BlockCharge, OnLost::BlockAll, OnLost::Continue] {
        let mut rig = rig(LFP, BMS, policy);
        balanced_recently(&mut rig);
        let mut bank = [
            battery("A", 2.3, 2.3, -10.0, 50.0),
            battery("B", 2.3, 2.3, -10.0, 50.0),
        ];
        let before = rig.engine.tick(&bank, &around(Some(0))).limits;
        assert_eq!((before.ccl_a, before.dcl_a), (200.0, 200.0));
        // One held: scaled to the one online, as before.
        bank[1].state = BatteryState::Stale;
        let out = rig.engine.tick(&bank, &around(Some(0)));
        assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (100.0, 100.0));
        assert!(out.mode.contains("1 of 2 batteries held"), "{}", out.mode);
        // Both held (both drivers restarting): the last limits stand, for every policy, as
        // nothing is lost.
        bank[0].state = BatteryState::Stale;
        for _ in 0..50 {
            let out = rig.engine.tick(&bank, &around(Some(0)));
            assert_eq!(
                (out.limits.ccl_a, out.limits.dcl_a),
                (100.0, 100.0),
                "{policy:?}"
            );
            assert!(
                out.mode
                    .contains("no battery online, 2 held: last limits kept"),
                "{}",
                out.mode
            );
        }
        // A held reading that protects something still acts: a low cell stops discharging.
        bank[0].reading.min_cell_voltage_v = Some(1.7);
        let out = rig.engine.tick(&bank, &around(Some(0)));
        assert_eq!(out.limits.dcl_a, 0.0, "{policy:?}");
        assert!(out.mode.contains("safety.min_cell_voltage"), "{}", out.mode);
    }
}

#[test]
fn a_one_pack_bank_on_a_driver_restart_keeps_its_limits_and_a_lost_pack_blocks() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let mut bank = [battery("A", 2.3, 2.3, -10.0, 50.0)];
    let mut inputs = around(Some(0));
    inputs.expected = 1;
    let before = rig.engine.tick(&bank, &inputs).limits;
    bank[0].state = BatteryState::Stale;
    let held = rig.engine.tick(&bank, &inputs).limits;
    assert_eq!(held, before);
    // Beyond the hold it is lost: nothing to discharge from, with the cause in the mode.
    bank[0].state = BatteryState::Lost;
    let out = rig.engine.tick(&bank, &inputs);
    assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (0.0, 0.0));
    assert!(out.mode.starts_with("No battery online"), "{}", out.mode);
}

#[test]
fn nan_and_out_of_range_limits_are_faults_too() {
    for config in [
        r#"{"fault":"nan"}"#,
        r#"{"fault":"out_of_range"}"#,
        r#"{"fault":"error"}"#,
    ] {
        let mut rig = rig(
            ("libplugin_fault_test.so", config),
            BMS,
            OnLost::BlockCharge,
        );
        let bank = [battery("A", 2.3, 2.3, 0.0, 50.0)];
        let out = rig.engine.tick(&bank, &around(None));
        assert_eq!(out.limits.ccl_a, 0.0, "{config}");
        assert!(
            out.events
                .iter()
                .any(|e| matches!(e, Event::StrategyFault(_))),
            "{config}"
        );
    }
}

#[test]
fn the_current_source_falls_back_to_the_bms_once_per_episode() {
    let victron = ("libplugin_victron.so", r#"{"use_multi": true}"#);
    let mut rig = rig(LFP, victron, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let bank = [
        battery("A", 2.3, 2.3, 7.0, 50.0),
        battery("B", 2.3, 2.3, 8.0, 50.0),
    ];
    let mut starts = 0;
    for _ in 0..3 {
        let out = rig.engine.tick(&bank, &around(None));
        assert_eq!(out.current_a, Some(15.0), "BMS sum while no Multi is there");
        starts += out
            .events
            .iter()
            .filter(|e| **e == Event::CurrentFallbackStarted)
            .count();
    }
    assert_eq!(starts, 1);
    let mut with_multi = around(None);
    with_multi.vebus = vec![VebusView {
        service: "com.victronenergy.vebus.ttyS4".into(),
        connected: Some(1).into(),
        current_a: Some(-12.5).into(),
    }];
    let out = rig.engine.tick(&bank, &with_multi);
    assert_eq!(out.current_a, Some(-12.5));
    assert!(out.events.contains(&Event::CurrentFallbackEnded(3)));
}

#[test]
fn the_counter_integrates_and_resets_full_at_the_balancing_voltage() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let bank = [
        battery("A", 2.3, 2.3, 50.0, 50.0),
        battery("B", 2.3, 2.3, 0.0, 50.0),
    ];
    rig.engine.tick(&bank, &around(None));
    let out = rig.engine.tick(&bank, &around(None));
    let charge = out.capacity_ah.unwrap();
    let expected = 280.0 + 50.0 * (1.0 / 3600.0) * 0.985 * 2.0;
    assert!((charge - expected).abs() < 1e-9, "{charge} vs {expected}");
    assert_eq!(out.consumed_ah, Some(charge - 560.0));
    let full = [
        battery("A", 2.5, 2.5, 1.0, 90.0),
        battery("B", 2.5, 2.5, 1.0, 90.0),
    ];
    let out = rig.engine.tick(&full, &around(None));
    assert_eq!(out.soc_pct, Some(100.0));
}

/// No flapping (docs/guard.md §5 and §6, docs/feedin.md §5): cells hovering at each host threshold
/// with ±10 mV of noise for a simulated hour (one tick a second) switch the limits and feed-in a
/// bounded number of times.
#[test]
fn cells_at_a_threshold_with_noise_for_an_hour_do_not_flap() {
    const SERIALBATTERY: (&str, &str) = ("libplugin_serialbattery.so", "{}");
    // A small deterministic noise source (no clock, same run every time).
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 2001) as f64 / 1000.0 * 0.010 - 0.010
    };
    // The safety bounds of `settings`: max cell 2.6 (hysteresis 0.05), min cell 1.8 (0.2).
    for (name, centre, high) in [("max cell", 2.6, true), ("min cell", 1.8, false)] {
        let mut rig = rig(SERIALBATTERY, BMS, OnLost::BlockCharge);
        let mut feed_in = 1;
        let (mut stops, mut writes) = (0, 0);
        let mut stopped = false;
        for _ in 0..3600 {
            // Cell 1 of battery A at the threshold, the others at 2.3 V; the packs' own
            // limits allow 100 A each way, so only the host stops anything.
            let mut bank = [
                battery("A", 2.3, centre + noise(), 5.0, 50.0),
                battery("B", 2.3, 2.3, 5.0, 50.0),
            ];
            for b in &mut bank {
                b.reading.max_charge_current_a = Some(100.0);
                b.reading.max_discharge_current_a = Some(100.0);
                b.reading.max_charge_voltage_v = Some(2.5 * f64::from(CELLS));
            }
            let out = rig.engine.tick(&bank, &around(Some(feed_in)));
            let limit = if high {
                out.limits.ccl_a
            } else {
                out.limits.dcl_a
            };
            if (limit == 0.0) != stopped {
                stopped = limit == 0.0;
                stops += 1;
            }
            if let Some(value) = out.feed_in_write {
                feed_in = value;
                writes += 1;
            }
        }
        // Latched once and held: the noise never crosses the hysteresis.
        assert_eq!(stops, 1, "{name}: the limit switched {stops} times");
        assert!(stopped, "{name}: still stopped after the hour");
        if high {
            assert_eq!(
                (writes, feed_in),
                (1, 0),
                "{name}: feed-in written {writes} times"
            );
        }
    }
}

/// Four packs whose own 40 A limits cap lfp-balancing's 200 A at 160 A, `each_a` into each.
fn capped_bank(each_a: f64) -> Vec<Battery> {
    ["A", "B", "C", "D"]
        .iter()
        .map(|name| {
            let mut b = battery(name, 2.3, 2.3, each_a, 50.0);
            b.reading.max_charge_current_a = Some(40.0);
            b
        })
        .collect()
}

#[test]
fn a_cap_below_the_strategys_ccl_turns_feed_in_off_only_when_the_current_comes_near_it() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    let mut inputs = around(Some(1));
    inputs.expected = 4;
    // All day below the cap: feed-in is left alone, and the mode names the cap.
    for _ in 0..30 {
        let out = rig.engine.tick(&capped_bank(10.0), &inputs);
        assert_eq!(out.limits.ccl_a, 160.0);
        assert_eq!(out.feed_in_write, None, "{}", out.mode);
        assert!(
            out.mode.contains("charge capped by the packs' own limits"),
            "{}",
            out.mode
        );
    }
    // The charge current comes within the margin of the cap: off, saved first.
    let out = rig.engine.tick(&capped_bank(39.0), &inputs);
    assert_eq!(out.feed_in_write, Some(0), "{}", out.mode);
    assert!(out.save_state);
    assert!(out.mode.contains("feed-in off"), "{}", out.mode);
    inputs.feed_in_setting = Some(0);
    // Falling a little (inside twice the margin) keeps it off: no flapping at the edge.
    let out = rig.engine.tick(&capped_bank(37.0), &inputs);
    assert_eq!(out.feed_in_write, None);
    assert!(rig.engine.state().feed_in.disabled_by_us);
    // Clearly below: the cause ends, and (with no hold in this rig) the user's 1 comes back.
    let out = rig.engine.tick(&capped_bank(10.0), &inputs);
    assert_eq!(out.feed_in_write, Some(1), "{}", out.mode);
}

#[test]
fn feed_in_is_left_alone_until_the_limits_are_published() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    rig.engine.set_publishing(false);
    // Before registration: no battery yet, then too cold to charge (the host's cause, not
    // the strategy's); nothing DVCC sees.
    let out = rig.engine.tick(&[], &around(Some(1)));
    assert_eq!((out.limits.ccl_a, out.feed_in_write), (0.0, None));
    let mut high = [
        battery("A", 2.3, 2.3, 5.0, 90.0),
        battery("B", 2.3, 2.3, 5.0, 90.0),
    ];
    for b in &mut high {
        b.reading.temperature_c = Some(-5.0);
    }
    let out = rig.engine.tick(&high, &around(Some(1)));
    assert_eq!((out.limits.ccl_a, out.feed_in_write), (0.0, None));
    assert!(
        !out.save_state,
        "nothing to save: the setting was not touched"
    );
    // Published: the CCL of 0 is seen, feed-in goes off at once.
    rig.engine.set_publishing(true);
    let out = rig.engine.tick(&high, &around(Some(1)));
    assert_eq!(out.feed_in_write, Some(0));
}

#[test]
fn a_strategy_state_that_does_not_restore_does_not_keep_feed_in_off() {
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    let mut state = rig.engine.state();
    state.strategy.as_mut().unwrap().state = "not json".into();
    state.feed_in.disabled_by_us = true;
    state.feed_in.saved_value = Some(1);
    state.feed_in.strategy_off = true;
    let problems = rig.engine.restore(&state);
    assert_eq!(problems.len(), 1, "{problems:?}");
    let bank = [
        battery("A", 2.3, 2.3, 5.0, 50.0),
        battery("B", 2.3, 2.3, 5.0, 50.0),
    ];
    let out = rig.engine.tick(&bank, &around(Some(0)));
    assert_eq!(out.feed_in_write, Some(1), "{}", out.mode);
    assert!(!rig.engine.state().feed_in.strategy_off);
}

#[test]
fn the_cell_latches_survive_a_restart_inside_their_hysteresis() {
    // A strategy asking for the same limits whatever the cells: only the guard acts.
    let fixed = (
        "libplugin_fault_test.so",
        r#"{"cvl": 55.0, "ccl": 100.0, "dcl": 100.0}"#,
    );
    let mut rig = rig(fixed, BMS, OnLost::BlockCharge);
    // A high cell at the bound (2.6 V) and a low one at its bound (1.8 V): both latch, and
    // the latching is saved.
    let at_bounds = [
        battery("A", 2.3, 2.6, 0.0, 50.0),
        battery("B", 2.3, 1.8, 0.0, 50.0),
    ];
    let out = rig.engine.tick(&at_bounds, &around(Some(0)));
    assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (0.0, 0.0));
    assert!(out.save_state, "a latch that changed is saved");
    let saved = rig.engine.state();
    assert!(saved.latches.high_cell && saved.latches.low_cell);

    // Restarted inside both bands (2.57 V > 2.6 − 0.05, 1.9 V < 1.8 + 0.2): both still hold.
    let inside = [
        battery("A", 2.3, 2.57, 0.0, 50.0),
        battery("B", 2.3, 1.9, 0.0, 50.0),
    ];
    let text = serde_json::to_string(&saved).unwrap();
    let mut after = self::rig(fixed, BMS, OnLost::BlockCharge);
    assert!(after
        .engine
        .restore(&serde_json::from_str(&text).unwrap())
        .is_empty());
    let out = after.engine.tick(&inside, &around(Some(0)));
    assert_eq!(
        (out.limits.ccl_a, out.limits.dcl_a),
        (0.0, 0.0),
        "{}",
        out.mode
    );
    // A fresh start there would have let go of both.
    let mut fresh = self::rig(fixed, BMS, OnLost::BlockCharge);
    let out = fresh.engine.tick(&inside, &around(Some(0)));
    assert!(
        out.limits.ccl_a > 0.0 && out.limits.dcl_a > 0.0,
        "{}",
        out.mode
    );
}

const PASS_THROUGH: (&str, &str) = ("libplugin_serialbattery.so", "{}");

/// `battery` with its own BMS limits: CVL 55.0 V, CCL `ccl_a`, DCL `dcl_a`.
fn with_limits(mut battery: Battery, ccl_a: f64, dcl_a: f64) -> Battery {
    battery.reading.max_charge_voltage_v = Some(55.0);
    battery.reading.max_charge_current_a = Some(ccl_a);
    battery.reading.max_discharge_current_a = Some(dcl_a);
    battery
}

#[test]
fn pass_through_limits_are_scaled_to_the_batteries_online_once() {
    // Two packs of 100 A / 120 A: the bank 200 / 240. With one held (a driver restarting),
    // what the one online can take: 100 / 120, not half of it again.
    for (policy, state, ccl, dcl) in [
        (OnLost::BlockCharge, BatteryState::Online, 200.0, 240.0),
        (OnLost::BlockCharge, BatteryState::Stale, 100.0, 120.0),
        (OnLost::BlockCharge, BatteryState::Lost, 0.0, 120.0),
        (OnLost::Continue, BatteryState::Lost, 100.0, 120.0),
    ] {
        let mut rig = rig(PASS_THROUGH, BMS, policy);
        let a = with_limits(battery("A", 2.3, 2.3, 0.0, 50.0), 100.0, 120.0);
        let mut b = with_limits(battery("B", 2.3, 2.3, 0.0, 50.0), 100.0, 120.0);
        b.state = state;
        let out = rig.engine.tick(&[a, b], &around(Some(0)));
        assert_eq!(
            (out.limits.ccl_a, out.limits.dcl_a),
            (ccl, dcl),
            "{policy:?}, B {state:?}: {}",
            out.mode
        );
    }
}

#[test]
fn a_strategys_feed_in_request_waits_for_the_limits_to_be_published() {
    // Another program still holds the name (the old aggregator during a switch): the strategy's
    // dynamic CVL asks for feed-in off, and the user's setting is left alone until our limits
    // are what DVCC sees.
    let mut rig = rig(LFP, BMS, OnLost::BlockCharge);
    balanced_recently(&mut rig);
    rig.engine.set_publishing(false);
    let high = [
        battery("A", 2.4, 2.58, 20.0, 90.0),
        battery("B", 2.4, 2.4, 20.0, 90.0),
    ];
    for _ in 0..3 {
        let out = rig.engine.tick(&high, &around(Some(1)));
        assert_eq!(out.feed_in_write, None, "{}", out.mode);
    }
    rig.engine.set_publishing(true);
    assert_eq!(
        rig.engine.tick(&high, &around(Some(1))).feed_in_write,
        Some(0)
    );
}

#[test]
fn a_bank_the_strategy_keeps_from_discharging_with_a_pack_lost_is_still_recharged() {
    // The strategy's own low-cell latch ends above the host's window (2.3 V against 2.0 V):
    // between the two, with B lost, the lost pack stopped charging and the strategy
    // discharging, and the cells, at rest, never rose again. The way out stays open: the
    // recovery current until the strategy lets the bank discharge.
    let strategy = (
        LFP.0,
        r#"{"balancing_every_days": 10, "min_cell_voltage": 1.9, "min_cell_hysteresis": 0.4}"#,
    );
    for policy in [OnLost::BlockCharge, OnLost::BlockAll] {
        let mut rig = rig(strategy, BMS, policy);
        balanced_recently(&mut rig);
        let mut gone = battery("B", 2.0, 2.0, 0.0, 5.0);
        gone.state = BatteryState::Lost;
        // Below both windows: the host's own recovery charge.
        let low = [battery("A", 2.0, 1.7, 3.0, 5.0), gone.clone()];
        let out = rig.engine.tick(&low, &around(Some(0)));
        assert_eq!(out.limits.ccl_a, 0.05 * 280.0, "{policy:?}: {}", out.mode);
        // Above the host's window, under the strategy's: still the recovery current.
        let between = [battery("A", 2.1, 2.1, 3.0, 8.0), gone.clone()];
        let out = rig.engine.tick(&between, &around(Some(0)));
        assert_eq!(
            (out.limits.ccl_a, out.limits.dcl_a),
            (0.05 * 280.0, 0.0),
            "{policy:?}: {}",
            out.mode
        );
        assert!(
            out.mode
                .contains("recovering a bank that cannot discharge: charging at 14.0 A"),
            "{}",
            out.mode
        );
        // Under block_all the mode does not say that charging is stopped while it is not.
        assert!(
            !out.mode.contains("charge and discharge stopped"),
            "{}",
            out.mode
        );
        assert_eq!(
            out.mode.contains("charging only to recover"),
            policy == OnLost::BlockAll,
            "{policy:?}: {}",
            out.mode
        );
        // The strategy lets go: the lost pack blocks charging again (and, under block_all,
        // discharging).
        let recovered = [battery("A", 2.4, 2.4, 3.0, 20.0), gone];
        let out = rig.engine.tick(&recovered, &around(Some(0)));
        assert_eq!(out.limits.ccl_a, 0.0, "{policy:?}: {}", out.mode);
        assert_eq!(
            out.limits.dcl_a > 0.0,
            policy == OnLost::BlockCharge,
            "{policy:?}: {}",
            out.mode
        );
    }
}

#[test]
fn a_discharged_bank_with_a_pack_lost_is_still_recharged_at_the_recovery_current() {
    // A's lowest cell at 1.7 V, under the 1.8 V window (the low-cell stop); B lost (asleep
    // after its own undervoltage cut-off). Charging is blocked for the lost pack, but for the
    // gentle recharge: 0.05 C of A's 280 Ah.
    for policy in [OnLost::BlockCharge, OnLost::BlockAll] {
        let mut rig = rig(LFP, BMS, policy);
        balanced_recently(&mut rig);
        let mut gone = battery("B", 2.0, 2.0, 0.0, 5.0);
        gone.state = BatteryState::Lost;
        let low = [battery("A", 2.0, 1.7, 3.0, 5.0), gone.clone()];
        let out = rig.engine.tick(&low, &around(Some(0)));
        assert_eq!(
            (out.limits.ccl_a, out.limits.dcl_a),
            (0.05 * 280.0, 0.0),
            "{policy:?}: {}",
            out.mode
        );
        assert!(out.mode.contains("recovering"), "{}", out.mode);
        // Above the window and its hysteresis: the lost pack blocks charging again.
        let recovered = [battery("A", 2.1, 2.1, 3.0, 10.0), gone];
        let out = rig.engine.tick(&recovered, &around(Some(0)));
        assert_eq!(out.limits.ccl_a, 0.0, "{policy:?}: {}", out.mode);
    }
}
