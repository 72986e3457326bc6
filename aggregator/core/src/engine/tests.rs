use super::*;
use crate::reading::BatteryReading;

fn settings() -> Settings {
    Settings {
        bounds: Bounds {
            max_cell_voltage_v: 3.6,
            max_charge_current_a: 300.0,
            max_discharge_current_a: 300.0,
            plugin_failures: 3,
            max_charge_voltage_v: f64::INFINITY,
        },
        guard: crate::guard::tests::BOUNDS,
        feed_in_hold_s: 60.0,
        on_lost: OnLost::BlockCharge,
        own_counter: true,
        efficiency: 0.985,
        save_precision: 0.0025,
    }
}

fn battery() -> Battery {
    Battery {
        name: "Bat1".into(),
        service: "com.victronenergy.battery.ttyUSB0".into(),
        state: BatteryState::Online,
        reading: BatteryReading {
            voltage_v: Some(53.6),
            current_a: Some(5.0),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.35),
            min_cell_voltage_v: Some(3.35),
            temperature_c: Some(20.0),
            soc_pct: Some(60.0),
            ..Default::default()
        },
    }
}

fn inputs() -> TickInputs {
    TickInputs {
        cells: 16,
        expected: 1,
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
    }
}

#[test]
fn a_pack_without_cells_or_temperatures_is_named_once_and_the_mode_says_so() {
    let mut engine = Engine::with_failures(
        settings(),
        "lfp-balancing",
        Err(Error::Plugin("not built".into())),
        Err(Error::Plugin("not built".into())),
    );
    let mut can = battery();
    can.reading.max_cell_voltage_v = None;
    can.reading.min_cell_voltage_v = None;
    can.reading.temperature_c = None;
    let mut events = Vec::new();
    for _ in 0..3 {
        let out = engine.tick(std::slice::from_ref(&can), &inputs());
        assert!(
            out.mode.contains("no pack reports a temperature"),
            "{}",
            out.mode
        );
        events.extend(out.events);
    }
    let named: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::BmsOnly(..)))
        .collect();
    assert_eq!(
        named,
        [&Event::BmsOnly(
            "Bat1".into(),
            vec!["max_cell_voltage", "min_cell_voltage", "temperature"]
        )]
    );
}

#[test]
fn plugins_that_never_started_give_the_fail_safe_and_keep_the_saved_state() {
    let mut engine = Engine::with_failures(
        settings(),
        "lfp-balancing",
        Err(Error::Plugin("balancing_voltage: must be above 0".into())),
        Err(Error::Plugin("use_multi: expected a boolean".into())),
    );
    let saved = StrategyState {
        plugin: "lfp-balancing".into(),
        state: "{\"last_balanced\": \"2026-01-01\"}".into(),
    };
    let state = State {
        strategy: Some(saved.clone()),
        ..Default::default()
    };
    assert!(engine.restore(&state).is_empty());

    let mut events = Vec::new();
    for _ in 0..5 {
        let out = engine.tick(&[battery()], &inputs());
        assert_eq!(
            out.limits,
            Limits {
                cvl_v: 53.6,
                ccl_a: 0.0,
                dcl_a: 0.0
            }
        );
        assert_eq!(
            out.mode,
            "Fault: strategy lfp-balancing not started (balancing_voltage: must be above \
             0): charge and discharge stopped"
        );
        // The batteries' own current stands in for the source.
        assert_eq!(out.current_a, Some(5.0));
        events.extend(out.events);
    }
    // Logged by the daemon when it failed: no fault line per tick, one fallback line.
    assert!(!events.iter().any(|e| matches!(e, Event::StrategyFault(_))));
    let fallbacks = events
        .iter()
        .filter(|e| **e == Event::CurrentFallbackStarted)
        .count();
    assert_eq!(fallbacks, 1, "{events:?}");
    assert_eq!(engine.state().strategy, Some(saved));
}

#[test]
fn a_mode_that_holds_is_said_once() {
    let mut engine = Engine::with_failures(
        settings(),
        "lfp-balancing",
        Err(Error::Plugin("no".into())),
        Err(Error::Plugin("no".into())),
    );
    let mut hot = battery();
    hot.reading.temperature_c = Some(50.0);
    let mut changes = Vec::new();
    for _ in 0..5 {
        let out = engine.tick(std::slice::from_ref(&hot), &inputs());
        assert!(out.mode.contains("too hot to charge"), "{}", out.mode);
        changes.extend(
            out.events
                .into_iter()
                .filter(|e| matches!(e, Event::ModeChanged(_))),
        );
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
}

/// A strategy asking for 3.5 V a cell of a 16-cell bank.
struct Charging;

impl plugin_api::StrategyImpl for Charging {
    fn compute(&mut self, _bank: &BankView) -> Result<StrategyOutput, String> {
        Ok(StrategyOutput::limits(56.0, 100.0, 100.0, "Bulk"))
    }
}

fn charging(settings: Settings) -> Engine {
    Engine::with_failures(
        settings,
        "test",
        Ok(plugin_api::strategy_box(Charging)),
        Err(Error::Plugin("none".into())),
    )
}

#[test]
fn a_charge_voltage_bound_below_the_banks_cells_is_ignored_and_said_once() {
    // 3.6 (a cell voltage) for a bank of 16 cells whose lowest bank voltage is 16 × 2.9 V.
    let mut s = settings();
    s.bounds.max_charge_voltage_v = 3.6;
    let mut engine = charging(s);
    let mut events = Vec::new();
    for _ in 0..3 {
        let out = engine.tick(&[battery()], &inputs());
        // The strategy's CVL, under 16 × safety.max_cell_voltage: charging goes on.
        assert_eq!(out.limits.cvl_v, 56.0);
        assert!(out.limits.ccl_a > 0.0, "{:?}", out.limits);
        assert!(
            out.mode
                .contains("safety.max_charge_voltage ignored (not a bank voltage)"),
            "{}",
            out.mode
        );
        events.extend(out.events);
    }
    let said: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::ChargeVoltageIgnored { .. }))
        .collect();
    assert_eq!(
        said,
        [&Event::ChargeVoltageIgnored {
            bound_v: 3.6,
            cells: 16,
            min_cell_v: 2.9
        }]
    );

    // A bank voltage is obeyed, and an unknown cell count leaves the bound in place.
    for (bound, cells, cvl) in [(55.0, 16, 55.0), (3.6, 0, 3.6)] {
        let mut s = settings();
        s.bounds.max_charge_voltage_v = bound;
        let out = charging(s).tick(&[battery()], &TickInputs { cells, ..inputs() });
        assert_eq!(out.limits.cvl_v, cvl, "{bound} V, {cells} cells");
        assert!(!out.mode.contains("ignored"), "{}", out.mode);
    }
}

#[test]
fn restored_values_are_checked_and_feed_in_comes_back() {
    // An episode of ours in the file, with a user's value the setting refuses and a hold's
    // time that never ends, a charge that is no charge.
    let mut s = settings();
    s.feed_in_hold_s = 3.0;
    let mut engine = charging(s);
    let state = State {
        charge_ah: Some(f64::NAN),
        capacity_ah: Some(-5.0),
        feed_in: crate::feedin::FeedIn {
            disabled_by_us: true,
            saved_value: Some(7),
            clear_for_s: -1e6,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut problems = engine.restore(&state);
    problems.sort();
    assert_eq!(problems.len(), 4, "{problems:?}");
    for (problem, start) in problems.iter().zip([
        "capacity_ah: -5 is not a capacity",
        "charge_ah: NaN is not a charge",
        "feed_in.clear_for_s: -1000000 is not a time",
        "feed_in.saved_value: 7 is not a value the feed-in setting takes (0 or 1)",
    ]) {
        assert!(problem.starts_with(start), "{problem}");
    }
    // The setting at our 0: after the hold, 1 is written back, never 7.
    let off = TickInputs {
        feed_in_setting: Some(0),
        ..inputs()
    };
    let writes: Vec<Option<i64>> = (0..5)
        .map(|_| engine.tick(&[battery()], &off).feed_in_write)
        .collect();
    assert_eq!(writes, [None, None, Some(1), Some(1), Some(1)]);
    // The counter started afresh from the batteries' SoC.
    assert!(engine.state().charge_ah.is_some_and(f64::is_finite));
}

/// A strategy asking 100 A both ways that faults on its compute calls 56 to 63; its state is
/// its count of calls.
struct FaultsAWhile {
    calls: u64,
}

impl plugin_api::StrategyImpl for FaultsAWhile {
    fn compute(&mut self, _bank: &BankView) -> Result<StrategyOutput, String> {
        self.calls += 1;
        if (56..=63).contains(&self.calls) {
            return Err("deliberate".into());
        }
        Ok(StrategyOutput::limits(56.0, 100.0, 100.0, "Bulk"))
    }

    fn save_state(&self) -> Result<String, String> {
        Ok(self.calls.to_string())
    }

    fn restore_state(&mut self, state: &str) -> Result<(), String> {
        self.calls = state.parse().map_err(|_| format!("{state:?}"))?;
        Ok(())
    }
}

fn faults_a_while() -> Engine {
    let mut s = settings();
    s.feed_in_hold_s = 12.0;
    Engine::with_failures(
        s,
        "test",
        Ok(plugin_api::strategy_box(FaultsAWhile { calls: 0 })),
        Err(Error::Plugin("none".into())),
    )
}

/// Tick `k` of a bank whose packs' shares move, then are held, then charge again while the
/// strategy faults a while, which stops charging and so feed-in until the hold has passed.
fn memory_script(k: usize) -> Vec<Battery> {
    let (one, two) = match k {
        0..20 => (35.0, 15.0),
        _ => (25.0, 25.0),
    };
    let state = match k {
        40..50 => BatteryState::Stale,
        _ => BatteryState::Online,
    };
    [("Bat1", one), ("Bat2", two)]
        .into_iter()
        .map(|(name, current)| {
            let mut b = battery();
            b.name = name.into();
            b.state = state;
            b.reading.current_a = Some(current);
            b.reading.max_charge_current_a = Some(50.0);
            b.reading.max_discharge_current_a = Some(100.0);
            b
        })
        .collect()
}

#[test]
fn an_engine_given_the_state_and_memory_of_any_tick_goes_on_as_the_one_that_ran() {
    // The run: the state and memory before each tick, its inputs and what it published.
    let mut engine = faults_a_while();
    let mut setting = Some(1);
    let mut ticks = Vec::new();
    for k in 0..120 {
        let inputs = TickInputs {
            expected: 2,
            feed_in_setting: setting,
            dt_s: 0.5,
            ..inputs()
        };
        let before = (engine.state(), engine.memory());
        let out = engine.tick(&memory_script(k), &inputs);
        setting = out.feed_in_write.or(setting);
        ticks.push((before, inputs, out));
    }
    let feed_in_writes = ticks.iter().filter(|t| t.2.feed_in_write.is_some()).count();
    assert_eq!(feed_in_writes, 2, "feed-in off, then back after its hold");

    // An engine started at tick `from` with what was recorded there: the same values to the
    // end, or (without the memory) the first tick that differs.
    let first_difference = |from: usize, with_memory: bool| {
        let ((state, memory), _, _) = &ticks[from];
        let mut replay = faults_a_while();
        assert!(replay.restore(state).is_empty());
        if with_memory {
            let text = serde_json::to_string(memory).unwrap();
            replay.restore_memory(&serde_json::from_str(&text).unwrap());
        }
        (from..ticks.len()).find(|&k| {
            let (_, inputs, recorded) = &ticks[k];
            let out = replay.tick(&memory_script(k), inputs);
            let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
            !(near(out.limits.cvl_v, recorded.limits.cvl_v)
                && near(out.limits.ccl_a, recorded.limits.ccl_a)
                && near(out.limits.dcl_a, recorded.limits.dcl_a)
                && out
                    .soc_pct
                    .zip(recorded.soc_pct)
                    .is_some_and(|(a, b)| near(a, b))
                && out.feed_in_write == recorded.feed_in_write)
        })
    };
    for from in 0..ticks.len() {
        assert_eq!(first_difference(from, true), None, "started at tick {from}");
    }
    // Each part of the memory counts somewhere: a fresh start inside a falling share, a hold,
    // a run of faults and a feed-in hold publishes otherwise.
    for (from, what) in [
        (25, "a falling share"),
        (45, "every pack held"),
        (60, "strategy faults"),
        (75, "the feed-in hold"),
    ] {
        assert!(
            first_difference(from, false).is_some(),
            "a fresh start inside {what} (tick {from}) publishes the same"
        );
    }
}
