//! The other simulated Venus devices: the Multi (`vebus`), solar chargers, a SmartShunt and
//! `com.victronenergy.system`, each reduced to the paths a battery aggregator reads
//! (docs/reading.md §1) plus the mandatory ones (docs/venus.md §5).

use crate::battery::{round, Item};
use crate::scenario::{DcDeviceSpec, ShuntSpec};
use aggregator_core::value::{TextFormat, Value};

/// `/ProductId` of a SmartShunt 500A/50mV.
const SMARTSHUNT_500A_PRODUCT_ID: i64 = 0xA389;

/// The mandatory paths of a Victron device (docs/venus.md §5).
fn mandatory(
    process: &str,
    connection: &str,
    device_instance: i64,
    product_id: Value,
    product_name: &str,
    connected: i64,
) -> Vec<Item> {
    vec![
        text("/Mgmt/ProcessName", process),
        text("/Mgmt/ProcessVersion", "simulated"),
        text("/Mgmt/Connection", connection),
        int("/DeviceInstance", device_instance),
        item("/ProductId", product_id, TextFormat::Hex),
        text("/ProductName", product_name),
        item("/FirmwareVersion", Value::Invalid, TextFormat::Plain),
        item("/HardwareVersion", Value::Invalid, TextFormat::Plain),
        int("/Connected", connected),
    ]
}

/// The Multi: its DC current (positive = charging the batteries) and the bank voltage.
pub(crate) fn vebus(
    device_instance: i64,
    current_a: f64,
    voltage_v: f64,
    connected: i64,
) -> Vec<Item> {
    let mut items = mandatory(
        "mk2-dbus",
        "VE.Bus",
        device_instance,
        Value::Invalid,
        "MultiPlus-II 48/5000/70-50",
        connected,
    );
    items.extend(dc(current_a, voltage_v, false));
    items
}

/// Solar charger `index` (0-based): the current it delivers into the bank.
pub(crate) fn solar_charger(index: usize, current_a: f64, voltage_v: f64) -> Vec<Item> {
    let mut items = mandatory(
        "vedirect-interface",
        &format!("VE.Direct port ttyS{}", index + 4),
        279 + index as i64,
        Value::Invalid,
        "SmartSolar MPPT 150/35",
        1,
    );
    items.extend(dc(current_a, voltage_v, false));
    items
}

/// The SmartShunt in either class.
pub(crate) fn smartshunt(spec: &ShuntSpec, current_a: f64, voltage_v: f64) -> Vec<Item> {
    let mut items = mandatory(
        "vedirect-interface",
        "VE.Direct port ttyS7",
        spec.device_instance,
        Value::Int(SMARTSHUNT_500A_PRODUCT_ID),
        &spec.product_name,
        1,
    );
    items.push(text("/CustomName", &spec.custom_name));
    items.extend(dc(current_a, voltage_v, true));
    if let Some(soc) = spec.soc_pct {
        items.push(item("/Soc", Value::Float(soc), TextFormat::Fixed(1, "%")));
    }
    items
}

/// A DC device of another class (`spec.class`), `index` in the scenario's list.
pub(crate) fn dc_device(spec: &DcDeviceSpec, index: usize, voltage_v: f64) -> Vec<Item> {
    let mut items = mandatory(
        "vedirect-interface",
        &format!("VE.Direct port ttyS{}", 20 + index),
        spec.device_instance,
        Value::Invalid,
        &format!("Simulated {}", spec.class),
        1,
    );
    match spec.current_a {
        Some(current_a) => items.extend(dc(current_a, voltage_v, false)),
        None => items.push(dc_voltage(voltage_v)),
    }
    for (l, phase) in spec.ac_out.iter().enumerate() {
        let values = [
            ("P", phase.power_w, TextFormat::Fixed(0, "W")),
            ("V", phase.voltage_v, TextFormat::Fixed(0, "V")),
            ("I", phase.current_a, TextFormat::Fixed(1, "A")),
        ];
        for (name, value, format) in values {
            if let Some(value) = value {
                let path = format!("/Ac/Out/L{}/{name}", l + 1);
                items.push(item(&path, Value::Float(value), format));
            }
        }
    }
    items
}

/// `com.victronenergy.system`: what the aggregator reads from systemcalc.
pub(crate) fn system(low_soc: i64) -> Vec<Item> {
    vec![
        text("/Mgmt/ProcessName", "dbus-systemcalc-py"),
        text("/Mgmt/ProcessVersion", "simulated"),
        text("/Mgmt/Connection", "data from other dbus processes"),
        int("/DeviceInstance", 0),
        text("/ProductName", "Venus"),
        int("/Connected", 1),
        int("/SystemState/LowSoc", low_soc),
    ]
}

fn dc(current_a: f64, voltage_v: f64, with_power: bool) -> Vec<Item> {
    let current_a = round(current_a, 2);
    let voltage_v = round(voltage_v, 2);
    let mut items = vec![
        item(
            "/Dc/0/Current",
            Value::Float(current_a),
            TextFormat::Fixed(1, "A"),
        ),
        dc_voltage(voltage_v),
    ];
    if with_power {
        items.push(item(
            "/Dc/0/Power",
            Value::Float(round(current_a * voltage_v, 0)),
            TextFormat::Fixed(0, "W"),
        ));
    }
    items
}

fn dc_voltage(voltage_v: f64) -> Item {
    item(
        "/Dc/0/Voltage",
        Value::Float(round(voltage_v, 2)),
        TextFormat::Fixed(2, "V"),
    )
}

fn item(path: &str, value: Value, format: TextFormat) -> Item {
    let text = format.render(&value);
    (path.to_string(), value, text)
}

fn int(path: &str, value: i64) -> Item {
    item(path, Value::Int(value), TextFormat::Plain)
}

fn text(path: &str, value: &str) -> Item {
    item(path, Value::Text(value.to_string()), TextFormat::Plain)
}
