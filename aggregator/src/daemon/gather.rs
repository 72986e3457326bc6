//! From the monitor's cache to the engine's inputs: a typed reading per battery service, and
//! the Multis, solar chargers and SmartShunts for the current source. Pure.

use std::borrow::Cow;

use plugin_api::{
    DcClass, DcClass_NE, DcSourceView, DeviceRef, ShuntClass, ShuntClass_NE, ShuntView,
    SolarChargerView, VebusView,
};

use crate::bus::monitor::{Cache, Class, Service, Values};
use crate::bus::variant::Field;
use aggregator_core::discovery::{is_battery_monitor, Nameplate};
use aggregator_core::reading::{
    alarm_paths, cell_path, cell_slot, BadValue, BatteryReading, Slot, ALARM_SLOTS, BATTERY_PATHS,
    CELLS_PER_BATTERY, MAX_CELLS,
};

/// A number, or `None` when the path is invalid or missing. A value of the wrong type, NaN or
/// ±infinity is `None` as well, and recorded in `bad`: a battery may be told from its bad values.
fn number(values: &Values, path: &str, bad: &mut Vec<BadValue>) -> Option<f64> {
    number_of(values.get(path), path, bad)
}

/// [`number`] of a value read already (by its slot), `path` naming it.
fn number_of(value: Option<&Field>, path: &str, bad: &mut Vec<BadValue>) -> Option<f64> {
    let problem = match value? {
        Field::Number(v) if v.is_finite() => return Some(*v),
        Field::Invalid => return None,
        Field::Number(v) => format!("not finite ({v})"),
        other => format!("{}, not a number", other.kind()),
    };
    bad.push(BadValue {
        path: path.to_string(),
        problem,
    });
    None
}

fn integer(values: &Values, path: &str, bad: &mut Vec<BadValue>) -> Option<i64> {
    integer_of(values.get(path), path, bad)
}

fn integer_of(value: Option<&Field>, path: &str, bad: &mut Vec<BadValue>) -> Option<i64> {
    number_of(value, path, bad).map(|v| v.round() as i64)
}

fn text(values: &Values, path: &str) -> Option<String> {
    text_in(values.get(path)).map(Cow::into_owned)
}

/// A text value, borrowed from the cache where it is one (a number reads as Python's `str`).
fn text_of<'a>(values: &'a Values, path: &str) -> Option<Cow<'a, str>> {
    text_in(values.get(path))
}

fn text_in(value: Option<&Field>) -> Option<Cow<'_, str>> {
    match value? {
        Field::Text(t) => Some(Cow::Borrowed(t)),
        Field::Number(v) => Some(Cow::Owned(aggregator_core::value::python_str(*v))),
        _ => None,
    }
}

/// The nameplate paths of a service.
pub fn nameplate(service: &Service) -> Nameplate {
    let mut ignored = Vec::new();
    Nameplate {
        product_name: text(&service.values, "/ProductName"),
        custom_name: text(&service.values, "/CustomName"),
        serial: text(&service.values, "/Serial"),
        device_instance: integer(&service.values, "/DeviceInstance", &mut ignored),
        publishes_charge_voltage: service.values.contains_key("/Info/MaxChargeVoltage"),
    }
}

/// A battery's reading, with the paths whose values are no usable number in
/// [`BatteryReading::bad_values`]. Cells are read up to the battery's own
/// `/System/NrOfCellsPerBattery` (or as many as it publishes). Every value is read by its
/// slot ([`aggregator_core::reading::battery_slot`]); the path only names a bad one.
pub fn battery_reading(service: &Service) -> BatteryReading {
    let v = &service.values;
    let mut bad = Vec::new();
    let w = &mut bad;
    let cells_per_battery = integer(v, CELLS_PER_BATTERY, w);
    let cell = |k: usize| cell_slot(k).and_then(|slot| v.slot(slot));
    // The cells published are counted only when the battery does not say how many it has.
    let cell_count = match cells_per_battery {
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(0).min(MAX_CELLS),
        _ => (1..=MAX_CELLS).take_while(|&k| cell(k).is_some()).count(),
    };
    let mut reading = BatteryReading {
        cells_per_battery,
        ..BatteryReading::default()
    };
    for (slot, p) in BATTERY_PATHS.iter().enumerate() {
        let value = v.slot(slot);
        match p.slot {
            // Read above: it decides how many cells to read.
            Slot::Integer(..) if p.path == CELLS_PER_BATTERY => {}
            Slot::Number(_, field) => *field(&mut reading) = number_of(value, p.path, w),
            Slot::Integer(_, field) => *field(&mut reading) = integer_of(value, p.path, w),
            Slot::Text(_, field) => *field(&mut reading) = text_in(value).map(Cow::into_owned),
        }
    }
    for (k, path) in alarm_paths().iter().enumerate() {
        reading.alarms[k] = integer_of(v.slot(ALARM_SLOTS + k), path, w);
    }
    reading.cell_voltages_v = (1..=cell_count)
        .map(|k| match cell(k) {
            // A bad value is named by its path, written out only then.
            Some(Field::Number(v)) if v.is_finite() => Some(*v),
            value => number_of(value, cell_path(k).as_ref(), w),
        })
        .collect();
    reading.bad_values = bad;
    reading
}

/// The Multis/Quattros, in name order.
pub fn vebus(cache: &Cache) -> Vec<VebusView> {
    let mut ignored = Vec::new();
    cache
        .of_class(Class::Vebus)
        .map(|(name, s)| VebusView {
            service: name.as_str().into(),
            connected: integer(&s.values, "/Connected", &mut ignored)
                .and_then(|c| i32::try_from(c).ok())
                .into(),
            current_a: number(&s.values, "/Dc/0/Current", &mut ignored).into(),
        })
        .collect()
}

/// The solar chargers, in name order.
pub fn solar_chargers(cache: &Cache) -> Vec<SolarChargerView> {
    let mut ignored = Vec::new();
    cache
        .of_class(Class::SolarCharger)
        .map(|(name, s)| SolarChargerView {
            service: name.as_str().into(),
            current_a: number(&s.values, "/Dc/0/Current", &mut ignored).into(),
        })
        .collect()
}

/// Whether a battery-class service is a battery monitor (SmartShunt, BMV, Lynx Shunt) by its
/// role: no BMS charge voltage (see [`is_battery_monitor`]).
pub fn is_monitor(service: &Service) -> bool {
    // The name borrowed, not copied: asked for every battery at every tick.
    is_battery_monitor(
        text_of(&service.values, "/ProductName").as_deref(),
        service.values.contains_key("/Info/MaxChargeVoltage"),
    )
}

/// The battery-class services that are battery monitors ([`is_monitor`]), in name order.
pub type Monitors<'a> = [(&'a String, &'a Service)];

/// The SmartShunts: the battery monitors first, then DC meters, each in name order.
pub fn smartshunts(cache: &Cache, monitors: &Monitors<'_>) -> Vec<ShuntView> {
    let mut ignored = Vec::new();
    let mut shunt = |name: &String, s: &Service, class| ShuntView {
        service: name.as_str().into(),
        class: ShuntClass_NE::new(class),
        device_instance: integer(&s.values, "/DeviceInstance", &mut ignored)
            .and_then(|d| i32::try_from(d).ok())
            .into(),
        custom_name: text(&s.values, "/CustomName").unwrap_or_default().into(),
        current_a: number(&s.values, "/Dc/0/Current", &mut ignored).into(),
    };
    let mut shunts: Vec<ShuntView> = (monitors.iter())
        .map(|(n, s)| shunt(n, s, ShuntClass::Battery))
        .collect();
    shunts.extend(
        cache
            .of_class(Class::Dcload)
            .filter(|(_, s)| is_monitor(s))
            .map(|(n, s)| shunt(n, s, ShuntClass::DcLoad)),
    );
    shunts
}

/// The other DC devices, in [`DcClass::ALL`] order, each class by name; the current is made
/// positive = into the bank (a load's and a DC system's published sign is the other way).
pub fn dc_sources(cache: &Cache) -> Vec<DcSourceView> {
    let mut ignored = Vec::new();
    let mut sources = Vec::new();
    for class in DcClass::ALL {
        let bus_class = match class {
            DcClass::DcLoad => Class::Dcload,
            other => Class::Dc(other),
        };
        for (name, s) in cache.of_class(bus_class) {
            let v = &s.values;
            let current_a = into_bank(class, v, &mut ignored);
            sources.push(DcSourceView {
                service: name.as_str().into(),
                class: DcClass_NE::new(class),
                device_instance: integer(v, "/DeviceInstance", &mut ignored)
                    .and_then(|d| i32::try_from(d).ok())
                    .into(),
                custom_name: text(v, "/CustomName").unwrap_or_default().into(),
                current_a: current_a.into(),
            });
        }
    }
    sources
}

/// A DC device's current into the bank, from its `/Dc/0/Current`: output 0 only of a
/// charger with several (the others feed other batteries, as systemcalc takes it too); a
/// load's and a DC system's sign turned round; an inverter's from its AC output when it
/// publishes no DC current ([`inverter_from_ac`]).
fn into_bank(class: DcClass, values: &Values, ignored: &mut Vec<BadValue>) -> Option<f64> {
    let current_a = number(values, "/Dc/0/Current", ignored);
    match class {
        DcClass::DcLoad | DcClass::DcSystem => current_a.map(|a| -a),
        DcClass::Inverter => current_a.or_else(|| inverter_from_ac(values, ignored)),
        _ => current_a,
    }
}

/// The AC output paths of an inverter's phases: power, voltage, current.
const AC_OUT: [[&str; 3]; 3] = [
    ["/Ac/Out/L1/P", "/Ac/Out/L1/V", "/Ac/Out/L1/I"],
    ["/Ac/Out/L2/P", "/Ac/Out/L2/V", "/Ac/Out/L2/I"],
    ["/Ac/Out/L3/P", "/Ac/Out/L3/V", "/Ac/Out/L3/I"],
];

/// The DC current of an inverter that publishes no `/Dc/0/Current` (some VE.Direct Phoenix
/// models), estimated from what it delivers, as dbus-systemcalc-py's
/// `delegates/invertercharger.py` does (docs/current.md §5): each phase's `/Ac/Out/Lx/P`, else
/// its `/Ac/Out/Lx/V` × `/Ac/Out/Lx/I`, over the inverter's own `/Dc/0/Voltage`, drawn from
/// the bank. `None` without a DC voltage above 0 or without any phase's output.
fn inverter_from_ac(values: &Values, ignored: &mut Vec<BadValue>) -> Option<f64> {
    let voltage_v = number(values, "/Dc/0/Voltage", ignored).filter(|v| *v > 0.0)?;
    let mut power_w = None;
    for [p, v, i] in AC_OUT {
        let phase_w = number(values, p, ignored).or_else(|| {
            let volts = number(values, v, ignored)?;
            Some(volts * number(values, i, ignored)?)
        });
        if let Some(w) = phase_w {
            *power_w.get_or_insert(0.0) += w;
        }
    }
    power_w.map(|w| -w / voltage_v)
}

/// `/Soc` of the battery monitor (SmartShunt, BMV, Lynx Shunt) that `device` names, if it is
/// on the bus with a valid one.
pub fn monitor_soc(monitors: &Monitors<'_>, device: &DeviceRef) -> Option<f64> {
    let mut ignored = Vec::new();
    (monitors.iter())
        .find(|(_, s)| {
            let instance = integer(&s.values, "/DeviceInstance", &mut ignored)
                .and_then(|d| i32::try_from(d).ok());
            let name = text(&s.values, "/CustomName").unwrap_or_default();
            device.names(instance.into(), &name)
        })
        .and_then(|(_, s)| number(&s.values, "/Soc", &mut ignored))
}

/// A text path of the one service of a class (settings, system), when it is not `known`
/// (read each tick: nothing is copied while it stays the same).
pub fn single_text_unless(cache: &Cache, class: Class, path: &str, known: &str) -> Option<String> {
    cache
        .of_class(class)
        .find_map(|(_, s)| text_of(&s.values, path))
        .filter(|text| text != known)
        .map(Cow::into_owned)
}

/// An integer path of the one service of a class (settings, system).
pub fn single_integer(cache: &Cache, class: Class, path: &str) -> Option<i64> {
    let mut ignored = Vec::new();
    cache
        .of_class(class)
        .find_map(|(_, s)| integer(&s.values, path, &mut ignored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn service(values: &[(&str, Field)]) -> Service {
        Service {
            class: Class::Battery,
            owner: ":1.1".into(),
            values: values.iter().map(|(p, v)| (*p, v.clone())).collect(),
            changed_at: Instant::now(),
            scanned: true,
        }
    }

    #[test]
    fn cells_follow_the_batterys_own_count_and_bad_values_are_named() {
        let s = service(&[
            ("/System/NrOfCellsPerBattery", Field::Number(3.0)),
            ("/Voltages/Cell1", Field::Number(3.3)),
            ("/Voltages/Cell2", Field::Invalid),
            ("/Voltages/Cell3", Field::Number(3.31)),
            ("/Voltages/Cell4", Field::Number(3.32)),
            ("/Dc/0/Voltage", Field::Text("52".into())),
            ("/Alarms/BmsCable", Field::Number(2.0)),
            ("/Soc", Field::Number(f64::NAN)),
            ("/Io/AllowToCharge", Field::Number(f64::NEG_INFINITY)),
            ("/Connected", Field::Other("a non-empty array")),
        ]);
        let reading = battery_reading(&s);
        assert_eq!(reading.cell_voltages_v, vec![Some(3.3), None, Some(3.31)]);
        assert_eq!((reading.voltage_v, reading.soc_pct), (None, None));
        assert_eq!(
            reading.alarms[aggregator_core::reading::ALARM_BMS_CABLE],
            Some(2)
        );
        let bad: Vec<(&str, &str)> = reading
            .bad_values
            .iter()
            .map(|b| (b.path.as_str(), b.problem.as_str()))
            .collect();
        assert_eq!(
            bad,
            vec![
                ("/Connected", "a non-empty array, not a number"),
                ("/Dc/0/Voltage", "a text, not a number"),
                ("/Soc", "not finite (NaN)"),
                ("/Io/AllowToCharge", "not finite (-inf)"),
            ]
        );
    }

    #[test]
    fn a_chargers_output_0_alone_feeds_the_bank_and_loads_turn_round() {
        let charger = service(&[
            ("/Dc/0/Current", Field::Number(30.0)),
            ("/Dc/1/Current", Field::Number(5.0)),
            ("/Dc/2/Current", Field::Number(2.0)),
        ]);
        let mut bad = Vec::new();
        let current = |class| into_bank(class, &charger.values, &mut Vec::new());
        assert_eq!(
            into_bank(DcClass::Charger, &charger.values, &mut bad),
            Some(30.0)
        );
        assert_eq!(current(DcClass::DcLoad), Some(-30.0));
        assert_eq!(current(DcClass::DcSystem), Some(-30.0));
        assert_eq!(current(DcClass::Alternator), Some(30.0));
        // Output 0 missing: no current, whatever the other outputs say.
        let only_others = service(&[("/Dc/1/Current", Field::Number(5.0))]);
        assert_eq!(
            into_bank(DcClass::Charger, &only_others.values, &mut bad),
            None
        );
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn an_inverter_without_a_dc_current_counts_its_ac_output_over_its_dc_voltage() {
        let current = |values: &[(&str, Field)]| {
            let mut bad = Vec::new();
            let a = into_bank(DcClass::Inverter, &service(values).values, &mut bad);
            assert!(bad.is_empty(), "{bad:?}");
            a
        };
        let n = Field::Number;
        // Its own DC current comes first.
        assert_eq!(
            current(&[
                ("/Dc/0/Current", n(-3.0)),
                ("/Dc/0/Voltage", n(50.0)),
                ("/Ac/Out/L1/P", n(500.0)),
            ]),
            Some(-3.0)
        );
        // L1 by its power, L2 by volts × amps, L3 not there: (500 + 230 × 1) / 50 drawn.
        let ac = [
            ("/Dc/0/Current", Field::Invalid),
            ("/Dc/0/Voltage", n(50.0)),
            ("/Ac/Out/L1/P", n(500.0)),
            ("/Ac/Out/L1/V", n(1000.0)),
            ("/Ac/Out/L2/P", Field::Invalid),
            ("/Ac/Out/L2/V", n(230.0)),
            ("/Ac/Out/L2/I", n(1.0)),
            ("/Ac/Out/L3/V", n(230.0)),
        ];
        assert_eq!(current(&ac), Some(-14.6));
        // No DC voltage, or no phase's output: no current (the BMS fallback).
        assert_eq!(current(&ac[2..]), None);
        assert_eq!(current(&[("/Dc/0/Voltage", n(0.0))]), None);
        assert_eq!(
            current(&[("/Dc/0/Voltage", n(50.0)), ("/Ac/Out/L1/V", n(230.0))]),
            None
        );
        // Another class is not estimated.
        let mut bad = Vec::new();
        let multi = service(&ac[1..]);
        assert_eq!(into_bank(DcClass::Multi, &multi.values, &mut bad), None);
    }

    #[test]
    fn without_a_count_every_published_cell_is_read() {
        let s = service(&[
            ("/Voltages/Cell1", Field::Number(2.3)),
            ("/Voltages/Cell2", Field::Number(2.4)),
        ]);
        assert_eq!(battery_reading(&s).cell_voltages_v.len(), 2);
    }
}
