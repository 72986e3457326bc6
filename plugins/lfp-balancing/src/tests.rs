//! Behaviour of the whole tick: parity with docs/strategies.md §2.6, balancing over simulated days,
//! feed-in requests, the discharge latch and the counter resets.

use plugin_api::abi_stable::std_types::ROption;
use plugin_api::{BankView, FeedInRequest, SocReset, StrategyImpl};

use crate::state::{FeedIn, Phase};
use crate::testkit::{bank, bank_of, battery, cells, date, logged, run_days, strategy, tick};

/// A January day with no balancing due (the last one ended today).
const DAY: &str = "2026-01-10";

/// CVL_NORMAL of January with 22 cells: 22 × 2.45 as the original computed it.
const CVL_JANUARY: f64 = 53.900000000000006;
const CVL_BALANCING: f64 = 55.0;

#[test]
fn ccl_matches_the_reference_table() {
    for (max_cell, expected) in [
        (1.8, 40.0),
        (1.9, 40.0),
        (1.92, 104.0),
        (1.95, 200.0),
        (2.0, 200.0),
        (2.4, 200.0),
        (2.45, 109.99999999999959),
        (2.5, 19.99999999999997),
        (2.52, 11.999999999999966),
        (2.55, 0.0),
        (2.6, 0.0),
    ] {
        // The lowest cell stays clear of the discharge latch so only the CCL is under test.
        let out = tick(
            &mut strategy("{}", Some(DAY)),
            &bank(DAY, 52.0, 2.2, max_cell),
        );
        assert_eq!(out.ccl_a, expected, "max cell {max_cell}");
    }
}

#[test]
fn dcl_matches_the_reference_table_with_the_latch_clear() {
    for (min_cell, expected) in [
        (1.8, 0.0),
        (1.9, 0.0),
        (1.95, 5.0),
        (2.0, 10.0),
        (2.05, 104.99999999999959),
        (2.1, 200.0),
        (2.2, 200.0),
    ] {
        let out = tick(
            &mut strategy("{}", Some(DAY)),
            &bank(DAY, 50.0, min_cell, 2.3),
        );
        assert_eq!(out.dcl_a, expected, "min cell {min_cell}");
    }
}

#[test]
fn charge_and_discharge_blocks_zero_the_limits() {
    let mut s = strategy("{}", Some(DAY));
    let mut blocked = bank(DAY, 52.0, 2.3, 2.4);
    blocked.batteries[1].allow_to_charge = plugin_api::abi_stable::std_types::ROption::RSome(0);
    blocked.batteries[0].modules_blocking_discharge = 1;
    let out = tick(&mut s, &blocked);
    assert_eq!((out.ccl_a, out.dcl_a), (0.0, 0.0));
    assert_eq!(
        out.mode.as_str(),
        "Normal; charge blocked; discharge blocked"
    );
}

#[test]
fn cvl_is_the_months_voltage_times_the_cells() {
    let out = tick(&mut strategy("{}", Some(DAY)), &bank(DAY, 52.0, 2.3, 2.4));
    assert_eq!(out.cvl_v, CVL_JANUARY);
    assert_eq!(out.mode.as_str(), "Normal");

    let months = [
        2.31, 2.32, 2.33, 2.34, 2.35, 2.36, 2.37, 2.38, 2.39, 2.40, 2.41, 2.42,
    ];
    let config = format!(r#"{{"charge_voltages": {months:?}}}"#);
    for (index, per_cell) in months.iter().enumerate() {
        let day = format!("2027-{:02}-15", index + 1);
        let out = tick(
            &mut strategy(&config, Some(&day)),
            &bank(&day, 50.0, 2.2, 2.3),
        );
        assert_eq!(out.cvl_v, 22.0 * per_cell, "{day}");
    }
}

#[test]
fn fresh_state_balances_at_once() {
    let mut s = strategy("{}", None);
    let out = tick(&mut s, &bank(DAY, 52.0, 2.3, 2.4));
    assert_eq!(out.cvl_v, CVL_BALANCING);
    assert_eq!(out.mode.as_str(), "Balancing");
    assert!(out.state_changed);
    assert!(!tick(&mut s, &bank(DAY, 52.0, 2.3, 2.4)).state_changed);
}

/// The bank of a balancing test: low until `rise`, at the balancing voltage with the cells
/// together from then until `fall`, at January's normal CVL from `fall` on.
fn balancing_day(day: plugin_api::LocalDate, rise: &str, fall: &str) -> BankView {
    let text = day.to_string();
    if day < date(rise) {
        bank(&text, 53.0, 2.38, 2.42)
    } else if day < date(fall) {
        bank(&text, CVL_BALANCING, 2.49, 2.50)
    } else {
        bank(&text, CVL_JANUARY, 2.44, 2.46)
    }
}

fn first_day_in(log: &[(plugin_api::LocalDate, plugin_api::StrategyOutput)], mode: &str) -> String {
    log.iter()
        .find(|(_, out)| out.mode.as_str() == mode)
        .unwrap()
        .0
        .to_string()
}

#[test]
fn balancing_runs_every_ten_calendar_days_across_the_year_end() {
    let mut s = strategy("{}", Some("2025-12-27"));
    let log = run_days(&mut s, "2025-12-27", "2026-01-25", |day| {
        balancing_day(day, "2026-01-07", "2026-01-11")
    });
    let modes: Vec<(String, &str, f64)> = log
        .iter()
        .map(|(d, out)| (d.to_string(), out.mode.as_str(), out.cvl_v))
        .collect();

    assert_eq!(first_day_in(&log, "Balancing"), "2026-01-06", "{modes:#?}");
    for (day, mode, cvl) in &modes[..10] {
        assert_eq!((*mode, *cvl), ("Normal", CVL_JANUARY), "{day}");
    }
    assert_eq!((modes[10].1, modes[10].2), ("Balancing", CVL_BALANCING));
    // Goal reached on 7 January; held for four days while the bank stays up.
    for (day, mode, cvl) in &modes[11..15] {
        assert_eq!((*mode, *cvl), ("Balanced, holding", CVL_BALANCING), "{day}");
    }
    // The bank falls to the normal CVL on 11 January: back to normal that day, recorded.
    let (day, end) = &log[15];
    assert_eq!(day.to_string(), "2026-01-11");
    assert_eq!((end.mode.as_str(), end.cvl_v), ("Normal", CVL_JANUARY));
    assert!(end.state_changed);
    assert_eq!(s.state.last_balancing, Some(date("2026-01-11")));
    // The next run is due ten days after that, and lasts until its goal is reached.
    assert_eq!(log.last().unwrap().1.mode.as_str(), "Balancing");
    assert_eq!(first_day_in(&log[16..], "Balancing"), "2026-01-21");
}

#[test]
fn balancing_counts_the_leap_day() {
    let mut s = strategy("{}", Some("2028-02-20"));
    let log = run_days(&mut s, "2028-02-20", "2028-03-03", |day| {
        balancing_day(day, "2029-01-01", "2029-01-01")
    });
    assert_eq!(first_day_in(&log, "Balancing"), "2028-03-01");
    // On the leap day itself February's voltage still holds and nothing is due.
    let feb_29 = &log[9];
    assert_eq!(feb_29.0, date("2028-02-29"));
    assert_eq!(feb_29.1.cvl_v, 22.0 * 2.45);
    assert_eq!(log[10].1.cvl_v, CVL_BALANCING);
}

#[test]
fn a_balancing_dated_after_today_is_forgotten_and_one_is_due() {
    // Last balanced "in June 2030" by a clock set ahead; the host now hands on DAY (January
    // 2026), which it takes as right: that balancing is forgotten, so one is due at once.
    let mut s = strategy("{}", Some("2030-06-01"));
    let out = tick(&mut s, &bank(DAY, 52.0, 2.3, 2.4));
    assert_eq!((out.mode.as_str(), out.cvl_v), ("Balancing", CVL_BALANCING));
    assert_eq!(s.state.last_balancing, None);
    // The forgotten date reaches the state file.
    assert!(out.state_changed);
    assert!(s.save_state().unwrap().contains(r#""last_balancing":null"#));
    let out = tick(&mut s, &bank(DAY, 52.0, 2.3, 2.4));
    assert!(!out.state_changed);
    let lines = logged();
    let forgotten: Vec<_> = lines.iter().filter(|l| l.contains("2030-06-01")).collect();
    assert_eq!(forgotten.len(), 1, "logged once: {lines:#?}");
    assert!(forgotten[0].contains(DAY), "{}", forgotten[0]);
    // The run ends as any run does, and January's voltage follows, not June's.
    tick(&mut s, &bank(DAY, CVL_BALANCING, 2.49, 2.50));
    let out = tick(&mut s, &bank(DAY, CVL_JANUARY, 2.44, 2.46));
    assert_eq!((out.mode.as_str(), out.cvl_v), ("Normal", CVL_JANUARY));
    assert_eq!(s.state.last_balancing, Some(date(DAY)));

    // Where March's voltage reaches the balancing voltage (normal charging balances), the CVL
    // on that very tick is March's, the date's month, not June's.
    let months = [
        2.45, 2.45, 2.50, 2.45, 2.45, 2.40, 2.45, 2.45, 2.45, 2.45, 2.45, 2.45,
    ];
    let config = format!(r#"{{"charge_voltages": {months:?}}}"#);
    let mut s = strategy(&config, Some("2030-06-01"));
    let out = tick(&mut s, &bank("2026-03-01", 52.0, 2.3, 2.4));
    assert_eq!((out.mode.as_str(), out.cvl_v), ("Normal", 22.0 * 2.50));
    assert!(out.state_changed);
    assert_eq!(s.state.last_balancing, None);
}

#[test]
fn a_run_under_way_ends_when_the_date_goes_before_the_last_balancing() {
    // Holding the balancing voltage, last balanced "in 2030": the bank falls to January's
    // voltage, so the run ends and is recorded today, the clock notwithstanding.
    let mut s = strategy("{}", Some("2030-06-01"));
    s.state.phase = Phase::GoalReached;
    let out = tick(&mut s, &bank(DAY, CVL_BALANCING, 2.49, 2.50));
    assert_eq!(
        (out.mode.as_str(), out.cvl_v),
        ("Balanced, holding", CVL_BALANCING)
    );
    let out = tick(&mut s, &bank(DAY, CVL_JANUARY, 2.44, 2.46));
    assert_eq!((out.mode.as_str(), out.cvl_v), ("Normal", CVL_JANUARY));
    assert_eq!(s.state.last_balancing, Some(date(DAY)));
}

#[test]
fn when_normal_charging_reaches_the_balancing_voltage_it_only_records_the_date() {
    let config =
        r#"{"charge_voltages": [2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5]}"#;
    let mut s = strategy(config, Some("2026-01-01"));
    let out = tick(&mut s, &bank(DAY, 54.0, 2.3, 2.4));
    assert_eq!(
        (out.cvl_v, out.mode.as_str(), out.state_changed),
        (55.0, "Normal", false)
    );

    // At the voltage but the cells apart: not balanced.
    assert!(!tick(&mut s, &bank(DAY, 55.0, 2.48, 2.51)).state_changed);
    let out = tick(&mut s, &bank(DAY, 55.0, 2.49, 2.5));
    assert!(out.state_changed);
    assert_eq!(s.state.last_balancing, Some(date(DAY)));
    assert_eq!(s.state.phase, Phase::Normal);
    assert!(!tick(&mut s, &bank(DAY, 55.0, 2.49, 2.5)).state_changed);
}

#[test]
fn dynamic_cvl_counts_the_high_cell_of_a_pack_that_publishes_only_its_extremes() {
    // A CAN pack: its lowest and highest cell, no cell by cell. Its high cell's excess still
    // comes off its sum: without it the CVL stayed at the pack's present voltage, holding the
    // cell above the bound.
    let mut can = plugin_api::testing::BatteryBuilder::new("CAN")
        .cell_extremes(2.50, 2.58)
        .build();
    can.voltages_sum_v = ROption::RSome(55.10);
    assert_eq!(can.cell_overvoltage_v(2.55), 2.58 - 2.55);
    let out = tick(
        &mut strategy(r#"{"balancing_voltage": 2.52}"#, None),
        &bank_of(DAY, vec![can]),
    );
    assert_eq!(out.cvl_v, 55.10 - (2.58 - 2.55));
    assert_eq!(out.mode.as_str(), "Balancing; dynamic CVL");
}

#[test]
fn dynamic_cvl_follows_the_reference_example() {
    let mut a_cells = cells(2.5, 2.5, 2.58);
    a_cells[2] = 2.56;
    let mut a = battery("A", &a_cells);
    a.voltages_sum_v = ROption::RSome(55.10);
    let mut b = battery("B", &cells(2.49, 2.49, 2.57));
    b.voltages_sum_v = ROption::RSome(55.0);
    // A lost battery's values are history: it must not pull the CVL down.
    let mut lost = battery("C", &cells(2.4, 2.4, 2.7));
    lost.state = plugin_api::BatteryState_NE::new(plugin_api::BatteryState::Lost);

    // Same fold as `cell_overvoltage_v`: 0 + (2.58 − 2.55) + (2.56 − 2.55).
    let reduced_a: f64 = 55.10 - (0.0 + (2.58 - 2.55) + (2.56 - 2.55));
    assert!((reduced_a - 55.06).abs() < 1e-12);
    let reduced_b: f64 = 55.0 - (0.0 + (2.57 - 2.55));
    assert!((reduced_b - 54.98).abs() < 1e-12);

    // Balancing (fresh state) at 22 × 2.52 = 55.44 V, above both reduced values.
    let balancing = r#"{"balancing_voltage": 2.52}"#;
    let only_a = bank_of(DAY, vec![a.clone()]);
    let out = tick(&mut strategy(balancing, None), &only_a);
    assert_eq!(out.cvl_v, reduced_a);
    assert_eq!(out.mode.as_str(), "Balancing; dynamic CVL");

    let both = bank_of(DAY, vec![a, b, lost]);
    assert_eq!(tick(&mut strategy(balancing, None), &both).cvl_v, reduced_b);
    // Balancing at 55.0 V: still the lowest battery's value.
    assert_eq!(tick(&mut strategy("{}", None), &both).cvl_v, reduced_b);
    // Normal phase: January's 53.900000000000006 is the lower one.
    assert_eq!(
        tick(&mut strategy("{}", Some(DAY)), &both).cvl_v,
        CVL_JANUARY
    );
}

fn feed_in_sequence(
    s: &mut crate::LfpBalancing,
    banks: &[BankView],
) -> Vec<(FeedInRequest, String)> {
    banks
        .iter()
        .map(|b| tick(s, b))
        .map(|out| (out.feed_in, out.mode.to_string()))
        .collect()
}

#[test]
fn feed_in_is_disabled_once_and_restored_once_the_cells_are_together() {
    use FeedInRequest::{Disable, Keep, Restore};
    let mut s = strategy("{}", Some(DAY));
    let normal = bank(DAY, 53.0, 2.40, 2.45);
    let over = bank(DAY, 53.5, 2.40, 2.56);
    let apart = bank(DAY, 53.0, 2.40, 2.50);
    let together = bank(DAY, 53.0, 2.49, 2.50);
    let seq = feed_in_sequence(
        &mut s,
        &[
            normal.clone(),
            over.clone(),
            over,
            apart.clone(),
            apart,
            together.clone(),
            together,
        ],
    );
    let requests: Vec<FeedInRequest> = seq.iter().map(|(r, _)| *r).collect();
    assert_eq!(requests, [Keep, Disable, Keep, Keep, Keep, Restore, Keep]);
    assert_eq!(seq[1].1, "Normal; dynamic CVL");
    assert_eq!(seq[3].1, "Normal");
}

#[test]
fn feed_in_follows_a_charge_block() {
    use FeedInRequest::{Disable, Keep, Restore};
    let mut s = strategy("{}", Some(DAY));
    let mut blocked = bank(DAY, 53.0, 2.40, 2.50);
    blocked.modules_blocking_charge = 1;
    // The cells are apart, but no dynamic CVL was involved: restore as soon as it unblocks.
    let free = bank(DAY, 53.0, 2.40, 2.50);
    let seq = feed_in_sequence(&mut s, &[blocked.clone(), blocked, free.clone(), free]);
    let requests: Vec<FeedInRequest> = seq.iter().map(|(r, _)| *r).collect();
    assert_eq!(requests, [Disable, Keep, Restore, Keep]);
    assert_eq!(seq[0].1, "Normal; charge blocked");
}

#[test]
fn a_block_that_turns_into_dynamic_cvl_waits_for_the_cells() {
    use FeedInRequest::{Disable, Keep, Restore};
    let mut s = strategy("{}", Some(DAY));
    let mut blocked = bank(DAY, 53.0, 2.40, 2.50);
    blocked.modules_blocking_charge = 1;
    let mut blocked_over = bank(DAY, 53.0, 2.40, 2.56);
    blocked_over.modules_blocking_charge = 1;
    let apart = bank(DAY, 53.0, 2.40, 2.50);
    let together = bank(DAY, 53.0, 2.49, 2.50);
    let seq = feed_in_sequence(&mut s, &[blocked, blocked_over, apart, together]);
    let requests: Vec<FeedInRequest> = seq.iter().map(|(r, _)| *r).collect();
    assert_eq!(requests, [Disable, Keep, Keep, Restore]);
}

#[test]
fn a_restart_mid_episode_still_restores_feed_in() {
    let mut before = strategy("{}", Some(DAY));
    let over = bank(DAY, 53.5, 2.40, 2.56);
    let out = tick(&mut before, &over);
    assert_eq!(out.feed_in, FeedInRequest::Disable);
    assert!(out.state_changed);
    let saved = before.save_state().unwrap();

    let mut after = crate::new("{}").unwrap();
    after.restore_state(&saved).unwrap();
    assert_eq!(after.state.feed_in, FeedIn::DisabledUntilBalanced);
    assert_eq!(tick(&mut after, &over).feed_in, FeedInRequest::Keep);
    let out = tick(&mut after, &bank(DAY, 53.0, 2.49, 2.50));
    assert_eq!(out.feed_in, FeedInRequest::Restore);
}

#[test]
fn garbage_state_is_refused_and_the_state_kept() {
    let mut s = strategy("{}", Some(DAY));
    assert!(s.restore_state("{\"last_balancing\": 359}").is_err());
    assert_eq!(s.state.last_balancing, Some(date(DAY)));
}

#[test]
fn discharge_latch_has_hysteresis() {
    let mut s = strategy("{}", Some(DAY));
    let dcl_at = |s: &mut crate::LfpBalancing, min_cell: f64| {
        let out = tick(s, &bank(DAY, 50.0, min_cell, 2.3));
        (out.dcl_a, out.mode.to_string())
    };
    assert_eq!(dcl_at(&mut s, 2.1).0, 200.0);
    assert_eq!(
        dcl_at(&mut s, 1.9),
        (0.0, "Normal; low cell latch".to_string())
    );
    assert!(s.state.discharge_latched);
    assert_eq!(dcl_at(&mut s, 1.95).0, 0.0);
    assert_eq!(dcl_at(&mut s, 2.0).0, 0.0);
    let (dcl, mode) = dcl_at(&mut s, 2.0000001);
    assert_eq!(
        dcl,
        200.0 * plugin_api::interpolate(&[1.9, 2.0, 2.1], &[0.0, 0.05, 1.0], 2.0000001)
    );
    assert!(dcl > 10.0);
    assert_eq!(mode, "Normal");

    let mut blocked = bank(DAY, 50.0, 2.2, 2.3);
    blocked.modules_blocking_discharge = 1;
    assert_eq!(tick(&mut s, &blocked).dcl_a, 0.0);
}

#[test]
fn counter_resets_full_at_the_balancing_voltage_and_empty_at_the_lowest_cell() {
    let reset = |config: &str, voltage_v: f64, min_cell: f64| {
        tick(
            &mut strategy(config, Some(DAY)),
            &bank(DAY, voltage_v, min_cell, 2.5),
        )
        .soc_reset
    };
    let exact = r#"{"target_tolerance": 0}"#;
    assert_eq!(reset(exact, 54.99, 2.3), SocReset::None);
    assert_eq!(reset(exact, 55.0, 2.3), SocReset::Full);
    // A charger a few mV per cell low still reaches it: 22 × (2.5 − 0.005) = 54.89 V.
    assert_eq!(reset("{}", 54.9, 2.3), SocReset::Full);
    assert_eq!(reset("{}", 54.88, 2.3), SocReset::None);
    assert_eq!(reset("{}", 50.0, 1.9), SocReset::Empty);
    assert_eq!(reset("{}", 55.0, 1.9), SocReset::Empty);
    assert_eq!(reset(r#"{"zero_soc": false}"#, 50.0, 1.9), SocReset::None);
    assert_eq!(reset(r#"{"zero_soc": false}"#, 55.0, 1.9), SocReset::Full);
}

#[test]
fn a_bank_date_without_a_month_is_an_error_not_a_panic() {
    let mut b = bank(DAY, 50.0, 2.2, 2.3);
    b.date.month = 13;
    assert!(strategy("{}", Some(DAY)).compute(&b).is_err());
}

#[test]
fn the_dynamic_cvl_stops_only_below_the_hysteresis() {
    let mut s = strategy("{}", Some(DAY));
    // max_cell_voltage 2.55, hysteresis 0.02: on at 2.55, still on at 2.54, off at 2.52.
    let mode = |s: &mut crate::LfpBalancing, high: f64| {
        tick(s, &bank(DAY, 54.0, 2.4, high)).mode.to_string()
    };
    assert!(mode(&mut s, 2.55).contains("dynamic CVL"));
    assert!(mode(&mut s, 2.54).contains("dynamic CVL"));
    assert!(!mode(&mut s, 2.52).contains("dynamic CVL"));
    assert!(
        !mode(&mut s, 2.54).contains("dynamic CVL"),
        "started only at 2.55"
    );
}

#[test]
fn no_cell_data_is_an_error() {
    for (low, high) in [(f64::NAN, 3.3), (3.3, f64::NAN)] {
        let err = strategy("{}", Some(DAY))
            .compute(&bank(DAY, 52.0, low, high))
            .unwrap_err();
        assert!(err.contains("no cell data"), "{err}");
    }
}

#[test]
fn no_cell_count_is_an_error_and_changes_nothing() {
    // With N = 0 every target would be 0 V: a fresh state would record today as balanced,
    // the low cell would latch and reset to empty, the high cell start the dynamic CVL.
    for (low, high) in [(2.40, 2.41), (1.9, 2.56)] {
        let mut s = strategy("{}", None);
        let before = s.clone();
        let mut b = bank(DAY, 52.0, low, high);
        b.cells_per_battery = 0;
        let err = s.compute(&b).unwrap_err();
        assert!(err.starts_with("cells_per_battery is 0"), "{err}");
        assert_eq!(s, before, "cells {low} to {high}");
    }
}
