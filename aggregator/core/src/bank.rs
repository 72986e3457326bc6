//! The merge of docs/bank.md §2: many battery readings in, one bank out. Pure: no I/O, no clock.

use plugin_api::merge::{count_sum, extreme as extreme_of, mean_all, mean_present, sum_all, Pick};

use crate::reading::{BatteryReading, ALARMS};

/// One battery taking part in the merge: its display name and its reading.
#[derive(Clone, Copy, Debug)]
pub struct Member<'a> {
    /// Display name, unique in the bank (`Bat1`).
    pub name: &'a str,
    /// Its (complete) reading.
    pub reading: &'a BatteryReading,
}

/// An extreme value with the id of where it was found (`Bat1_C7`).
#[derive(Clone, Debug, PartialEq)]
pub struct Extreme {
    /// The value.
    pub value: f64,
    /// `<battery name>_<cell id>`.
    pub id: String,
}

/// The merged values of the batteries taking part (online and stale ones).
///
/// `None` is published as invalid.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Merged {
    /// Number of batteries merged.
    pub count: usize,
    /// Mean `/Dc/0/Voltage`.
    pub voltage_v: Option<f64>,
    /// Sum of `/Dc/0/Current`.
    pub current_a: Option<f64>,
    /// Sum of `/Dc/0/Power` (voltage × current where a BMS omits it).
    pub power_w: Option<f64>,
    /// Mean `/Dc/0/Temperature` of the batteries that have one.
    pub temperature_c: Option<f64>,
    /// Mean `/Voltages/Sum`.
    pub voltages_sum_v: Option<f64>,
    /// `/Soc` weighted by installed capacity, over the batteries that have one.
    pub soc_pct: Option<f64>,
    /// `/Soh` weighted by installed capacity, over the batteries that have one.
    pub soh_pct: Option<f64>,
    /// `/TimeToGo` weighted by installed capacity; invalid if any battery's is.
    pub time_to_go_s: Option<f64>,
    /// Sum of `/Capacity` (installed × SoC for a battery without it); invalid if any
    /// battery has neither.
    pub capacity_ah: Option<f64>,
    /// Sum of `/InstalledCapacity`.
    pub installed_capacity_ah: f64,
    /// Sum of `/ConsumedAmphours` (installed − remaining for a battery without it), as a
    /// value ≤ 0.
    pub consumed_ah: Option<f64>,
    /// Highest cell voltage and its id.
    pub max_cell_voltage: Option<Extreme>,
    /// Lowest cell voltage and its id.
    pub min_cell_voltage: Option<Extreme>,
    /// Highest cell temperature and its id.
    pub max_cell_temperature: Option<Extreme>,
    /// Lowest cell temperature and its id.
    pub min_cell_temperature: Option<Extreme>,
    /// Max cell − min cell, rounded to 3 decimals.
    pub voltages_diff_v: Option<f64>,
    /// Sum of `/System/NrOfModulesOnline`.
    pub modules_online: i64,
    /// Sum of `/System/NrOfModulesOffline`.
    pub modules_offline: i64,
    /// Sum of `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: i64,
    /// Sum of `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: i64,
    /// Maximum of each alarm of [`ALARMS`]; `None` where no battery has it.
    pub alarms: [Option<i64>; ALARMS.len()],
    /// Minimum of `/Io/AllowToCharge`.
    pub allow_to_charge: Option<i64>,
    /// Minimum of `/Io/AllowToDischarge`.
    pub allow_to_discharge: Option<i64>,
    /// Minimum of `/Io/AllowToBalance`.
    pub allow_to_balance: Option<i64>,
}

/// Merges the batteries, in the order given (ordered by service name by the caller, so that
/// ties go to the first battery).
pub fn merge(members: &[Member<'_>]) -> Merged {
    let count = members.len();
    if count == 0 {
        return Merged::default();
    }
    let readings = || members.iter().map(|m| m.reading);
    let installed: f64 = readings().filter_map(|r| r.installed_capacity_ah).sum();

    let max_cell_voltage = extreme(members, Pick::Max, |r| {
        r.max_cell_voltage_v
            .zip(Some(r.max_voltage_cell_id.as_deref()))
    });
    let min_cell_voltage = extreme(members, Pick::Min, |r| {
        r.min_cell_voltage_v
            .zip(Some(r.min_voltage_cell_id.as_deref()))
    });
    let voltages_diff_v = match (&max_cell_voltage, &min_cell_voltage) {
        (Some(max), Some(min)) => Some(round3(max.value - min.value)),
        _ => None,
    };

    let mut alarms = [None; ALARMS.len()];
    for (k, alarm) in alarms.iter_mut().enumerate() {
        *alarm = readings().filter_map(|r| r.alarms[k]).max();
    }

    Merged {
        count,
        voltage_v: mean_all(readings().map(|r| r.voltage_v)),
        current_a: sum_all(readings().map(|r| r.current_a)),
        power_w: sum_all(readings().map(BatteryReading::power_or_product)),
        temperature_c: mean_present(readings().map(|r| r.temperature_c)),
        voltages_sum_v: mean_all(readings().map(BatteryReading::voltages_sum_or_cells)),
        soc_pct: weighted(members, |r| r.soc_pct, false),
        time_to_go_s: weighted(members, |r| r.time_to_go_s, true),
        soh_pct: weighted(members, |r| r.soh_pct, false),
        capacity_ah: sum_all(readings().map(BatteryReading::capacity_or_from_soc)),
        installed_capacity_ah: installed,
        consumed_ah: sum_all(readings().map(|r| r.consumed_or_from_capacity().map(|c| -c.abs()))),
        max_cell_voltage,
        min_cell_voltage,
        max_cell_temperature: extreme(members, Pick::Max, |r| {
            r.max_cell_temperature_c
                .zip(Some(r.max_temperature_cell_id.as_deref()))
        }),
        min_cell_temperature: extreme(members, Pick::Min, |r| {
            r.min_cell_temperature_c
                .zip(Some(r.min_temperature_cell_id.as_deref()))
        }),
        voltages_diff_v,
        modules_online: count_sum(readings().map(|r| r.modules_online)),
        modules_offline: count_sum(readings().map(|r| r.modules_offline)),
        modules_blocking_charge: count_sum(readings().map(|r| r.modules_blocking_charge)),
        modules_blocking_discharge: count_sum(readings().map(|r| r.modules_blocking_discharge)),
        alarms,
        allow_to_charge: readings().filter_map(|r| r.allow_to_charge).min(),
        allow_to_discharge: readings().filter_map(|r| r.allow_to_discharge).min(),
        allow_to_balance: readings().filter_map(|r| r.allow_to_balance).min(),
    }
}

/// The extreme value over the batteries that have one; the first battery wins a tie. A
/// battery without a cell id gets `?` so the id still says which battery it is.
fn extreme<'a>(
    members: &[Member<'a>],
    pick: Pick,
    value: impl Fn(&'a BatteryReading) -> Option<(f64, Option<&'a str>)>,
) -> Option<Extreme> {
    let found = members.iter().map(|member| {
        let (v, id) = value(member.reading).unzip();
        ((member.name, id.flatten()), v)
    });
    extreme_of(found, pick).map(|((name, id), value)| {
        let id = id.unwrap_or("?");
        // `Bat1_C3`, made at every tick: without `format!` (see `decimal`).
        let mut text = String::with_capacity(name.len() + 1 + id.len());
        text.push_str(name);
        text.push('_');
        text.push_str(id);
        Extreme { value, id: text }
    })
}

/// Σ value·capacity / Σ capacity over the members (see [`plugin_api::merge::weighted`]).
fn weighted(
    members: &[Member<'_>],
    value: impl Fn(&BatteryReading) -> Option<f64>,
    all_or_nothing: bool,
) -> Option<f64> {
    plugin_api::merge::weighted(
        members
            .iter()
            .map(|m| (value(m.reading), m.reading.installed_capacity_ah)),
        all_or_nothing,
    )
}

/// Rounds to 3 decimals as Python's `round(x, 3)` does (correctly rounded decimal).
pub fn round3(x: f64) -> f64 {
    crate::decimal::round_to(x, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery(
        v: f64,
        i: f64,
        cap: f64,
        soc: f64,
        cells: (f64, &str, f64, &str),
    ) -> BatteryReading {
        BatteryReading {
            voltage_v: Some(v),
            current_a: Some(i),
            power_w: Some(v * i),
            temperature_c: Some(20.0),
            installed_capacity_ah: Some(cap),
            capacity_ah: Some(cap * soc / 100.0),
            consumed_ah: Some(cap * (100.0 - soc) / 100.0),
            soc_pct: Some(soc),
            time_to_go_s: Some(3600.0),
            max_cell_voltage_v: Some(cells.0),
            max_voltage_cell_id: Some(cells.1.to_string()),
            min_cell_voltage_v: Some(cells.2),
            min_voltage_cell_id: Some(cells.3.to_string()),
            voltages_sum_v: Some(v),
            modules_online: Some(1),
            modules_offline: Some(0),
            modules_blocking_charge: Some(0),
            modules_blocking_discharge: Some(0),
            allow_to_charge: Some(1),
            allow_to_discharge: Some(1),
            allow_to_balance: Some(0),
            ..Default::default()
        }
    }

    fn members<'a>(names: &'a [String], readings: &'a [BatteryReading]) -> Vec<Member<'a>> {
        names
            .iter()
            .zip(readings)
            .map(|(name, reading)| Member { name, reading })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|k| format!("Bat{k}")).collect()
    }

    #[test]
    fn one_battery_is_itself() {
        let readings = [battery(53.0, -12.5, 280.0, 80.0, (3.4, "C3", 3.3, "C9"))];
        let m = merge(&members(&names(1), &readings));
        assert_eq!(m.count, 1);
        assert_eq!(m.voltage_v, Some(53.0));
        assert_eq!(m.current_a, Some(-12.5));
        assert_eq!(m.soc_pct, Some(80.0));
        assert_eq!(m.installed_capacity_ah, 280.0);
        assert_eq!(m.consumed_ah, Some(-56.0));
        assert_eq!(
            m.max_cell_voltage,
            Some(Extreme {
                value: 3.4,
                id: "Bat1_C3".into()
            })
        );
        assert_eq!(
            m.min_cell_voltage,
            Some(Extreme {
                value: 3.3,
                id: "Bat1_C9".into()
            })
        );
        assert_eq!(m.voltages_diff_v, Some(0.1));
    }

    #[test]
    fn two_batteries_of_different_capacity() {
        let readings = [
            battery(53.0, 10.0, 100.0, 50.0, (3.40, "C1", 3.30, "C2")),
            battery(53.2, 20.0, 300.0, 90.0, (3.45, "C5", 3.28, "C6")),
        ];
        let m = merge(&members(&names(2), &readings));
        assert_eq!(m.voltage_v, Some((53.0 + 53.2) / 2.0));
        assert_eq!(m.current_a, Some(30.0));
        assert_eq!(m.power_w, Some(530.0 + 53.2 * 20.0));
        // weighted by installed capacity: (50·100 + 90·300) / 400 = 80
        assert_eq!(m.soc_pct, Some(80.0));
        assert_eq!(m.time_to_go_s, Some(3600.0));
        assert_eq!(m.installed_capacity_ah, 400.0);
        assert_eq!(m.capacity_ah, Some(50.0 + 270.0));
        assert_eq!(m.max_cell_voltage.unwrap().id, "Bat2_C5");
        assert_eq!(m.min_cell_voltage.unwrap().id, "Bat2_C6");
        assert_eq!(m.voltages_diff_v, Some(0.17));
        assert_eq!(m.modules_online, 2);
    }

    #[test]
    fn sixteen_batteries() {
        let readings: Vec<_> = (0..16)
            .map(|k| {
                let k = f64::from(k);
                battery(
                    52.0 + k * 0.1,
                    k,
                    100.0 + 10.0 * k,
                    40.0 + k,
                    (3.4 + k * 0.001, "C1", 3.2 - k * 0.001, "C2"),
                )
            })
            .collect();
        let m = merge(&members(&names(16), &readings));
        assert_eq!(m.count, 16);
        assert_eq!(m.current_a, Some((0..16).map(f64::from).sum()));
        let cap: f64 = (0..16).map(|k| 100.0 + 10.0 * f64::from(k)).sum();
        assert_eq!(m.installed_capacity_ah, cap);
        let soc = (0..16)
            .map(|k| (40.0 + f64::from(k)) * (100.0 + 10.0 * f64::from(k)))
            .sum::<f64>()
            / cap;
        assert_eq!(m.soc_pct, Some(soc));
        assert_eq!(m.max_cell_voltage.unwrap().id, "Bat16_C1");
        assert_eq!(m.min_cell_voltage.unwrap().id, "Bat16_C2");
    }

    #[test]
    fn ties_go_to_the_first_battery() {
        let readings = [
            battery(53.0, 0.0, 100.0, 50.0, (3.4, "C1", 3.3, "C2")),
            battery(53.0, 0.0, 100.0, 50.0, (3.4, "C7", 3.3, "C8")),
        ];
        let m = merge(&members(&names(2), &readings));
        assert_eq!(m.max_cell_voltage.unwrap().id, "Bat1_C1");
        assert_eq!(m.min_cell_voltage.unwrap().id, "Bat1_C2");
    }

    #[test]
    fn state_of_health_is_weighted_by_capacity_over_the_packs_that_publish_one() {
        let mut big = battery(53.0, 0.0, 300.0, 50.0, (3.4, "C1", 3.3, "C2"));
        big.soh_pct = Some(90.0);
        let mut small = battery(53.0, 0.0, 100.0, 50.0, (3.4, "C1", 3.3, "C2"));
        small.soh_pct = Some(100.0);
        let silent = battery(53.0, 0.0, 200.0, 50.0, (3.4, "C1", 3.3, "C2"));
        let readings = [big, small, silent];
        let m = merge(&members(&names(3), &readings));
        assert_eq!(m.soh_pct, Some((90.0 * 300.0 + 100.0 * 100.0) / 400.0));
        let m = merge(&members(&names(1), &readings[2..]));
        assert_eq!(m.soh_pct, None, "no pack publishes one: invalid");
    }

    #[test]
    fn invalid_values_are_left_out_or_invalidate() {
        let mut second = battery(53.0, 5.0, 100.0, 50.0, (3.4, "C1", 3.3, "C2"));
        second.time_to_go_s = None;
        second.soc_pct = None;
        second.temperature_c = None;
        second.alarms[0] = Some(2);
        second.allow_to_charge = Some(0);
        let mut first = battery(53.0, 5.0, 300.0, 70.0, (3.4, "C1", 3.3, "C2"));
        first.alarms[0] = Some(1);
        let readings = [first, second];
        let m = merge(&members(&names(2), &readings));
        assert_eq!(
            m.time_to_go_s, None,
            "one invalid TimeToGo invalidates the bank's"
        );
        assert_eq!(m.soc_pct, Some(70.0), "SoC from the battery that has one");
        assert_eq!(m.temperature_c, Some(20.0));
        assert_eq!(m.alarms[0], Some(2), "alarms: maximum");
        assert_eq!(m.alarms[1], None, "alarm no battery has: invalid");
        assert_eq!(m.allow_to_charge, Some(0), "AllowTo*: minimum");
    }

    #[test]
    fn huge_values_neither_overflow_nor_reach_infinity() {
        let mut huge = battery(1e308, 0.0, 100.0, 50.0, (3.4, "C1", 3.3, "C2"));
        huge.modules_blocking_charge = Some(i64::MAX);
        let readings = [huge.clone(), huge];
        let m = merge(&members(&names(2), &readings));
        assert_eq!(m.modules_blocking_charge, i64::MAX);
        assert_eq!(m.voltage_v, None);
    }

    #[test]
    fn no_battery_merges_to_nothing() {
        assert_eq!(merge(&[]), Merged::default());
    }

    #[test]
    fn rounds_like_python() {
        assert_eq!(round3(3.4500000001 - 3.3), 0.15);
        assert_eq!(round3(0.0125), 0.013); // 0.0125 is 0.01250000000000000069… in binary
        assert_eq!(round3(-0.0004), -0.0);
    }
}
