//! A simulated dbus-serialbattery battery: its state (the state of charge, integrated from the
//! current) and every path it publishes, derived from the scenario's segment at this moment
//! the way dbus-serialbattery derives them (docs/reading.md §1, docs/venus.md §5 and §9).

use crate::scenario::{BatterySpec, CellData, Override, Segment, ALARMS};
use aggregator_core::value::{TextFormat, Value};

/// One published path: its value and text.
pub(crate) type Item = (String, Value, String);

/// dbus-serialbattery's product id (docs/venus.md §10).
const SERIALBATTERY_PRODUCT_ID: i64 = 0xBA77;
/// Temperature of a battery at rest.
const TEMPERATURE_C: f64 = 22.0;
/// The SoC the time to go is counted down to while discharging.
const SOC_FLOOR_PCT: f64 = 10.0;

/// A tiny deterministic xorshift generator for jitter: the same scenario gives the same values.
#[derive(Clone, Debug)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator for stream `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        // Never zero: xorshift stays at zero forever.
        XorShift(seed.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [-1, 1].
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// What a battery does during the current step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Published normally.
    Present,
    /// Off the bus.
    Gone,
    /// On the bus, nothing changes.
    Frozen,
}

/// A simulated battery's state.
pub(crate) struct BatteryModel {
    spec: BatterySpec,
    soc_pct: f64,
    rng: XorShift,
    last_s: Option<f64>,
    voltage_v: f64,
}

impl BatteryModel {
    /// A battery at its initial state of charge; `index` seeds its jitter.
    pub(crate) fn new(spec: BatterySpec, index: usize) -> Self {
        BatteryModel {
            soc_pct: spec.soc_pct,
            rng: XorShift::new(index as u64),
            last_s: None,
            voltage_v: 0.0,
            spec,
        }
    }

    /// The pack voltage last computed.
    pub(crate) fn voltage_v(&self) -> f64 {
        self.voltage_v
    }

    /// Whether the battery is on the bus and changing during this segment.
    pub(crate) fn presence(over: Option<&Override>) -> Presence {
        match over {
            Some(o) if o.gone => Presence::Gone,
            Some(o) if o.frozen => Presence::Frozen,
            _ => Presence::Present,
        }
    }

    /// Notes the time without changing anything (a frozen battery), so that the frozen span
    /// is not integrated afterwards.
    pub(crate) fn hold(&mut self, elapsed_s: f64) {
        self.last_s = Some(elapsed_s);
    }

    /// Moves the battery to `elapsed_s` (seconds since the start) within `segment` at
    /// `fraction`, and returns every path it publishes.
    pub(crate) fn advance(
        &mut self,
        elapsed_s: f64,
        segment: Option<(&Segment, f64)>,
        over: Option<&Override>,
        jitter: bool,
    ) -> Vec<Item> {
        let dt_s = self.last_s.map_or(0.0, |last| (elapsed_s - last).max(0.0));
        self.last_s = Some(elapsed_s);
        let fraction = segment.map_or(0.0, |(_, f)| f);
        let at = |ramp: Option<crate::scenario::Ramp>, default: f64| {
            ramp.map_or(default, |r| r.at(fraction))
        };
        let noise = |rng: &mut XorShift, size: f64| if jitter { rng.unit() * size } else { 0.0 };

        let cells = self.spec.cells;
        let base_v = segment.map_or(3.30, |(s, f)| s.cell_voltage.at(f))
            + at(over.and_then(|o| o.cell_offset), 0.0);
        let spread_v = segment.map_or(0.0, |(s, f)| s.cell_spread.at(f));
        // Evenly from -spread/2 (cell 1) to +spread/2 (the last cell): the mean stays put.
        let spread_at = |k: usize| match cells {
            1 => 0.0,
            _ => spread_v * ((k - 1) as f64 / (cells - 1) as f64 - 0.5),
        };
        let cell_v: Vec<f64> = (1..=cells)
            .map(|k| {
                let v = over
                    .and_then(|o| o.cells.get(&k))
                    .map_or(base_v + spread_at(k), |r| r.at(fraction));
                round(v + noise(&mut self.rng, 0.0014), 3)
            })
            .collect();
        let segment_current = segment.map_or(0.0, |(s, f)| s.battery_current.at(f));
        let current_a = round(
            at(over.and_then(|o| o.current), segment_current) + noise(&mut self.rng, 0.01),
            2,
        );
        let temperature_c = round(TEMPERATURE_C + noise(&mut self.rng, 0.2), 1);
        let cell_temps_c = [
            round(temperature_c + 0.5 + noise(&mut self.rng, 0.1), 1),
            round(temperature_c - 0.5 + noise(&mut self.rng, 0.1), 1),
        ];

        // Positive current charges; Ah over hours against the installed capacity.
        let capacity_ah = self.spec.capacity_ah;
        self.soc_pct =
            (self.soc_pct + current_a * dt_s / 3600.0 / capacity_ah * 100.0).clamp(0.0, 100.0);
        let soc_pct = round(self.soc_pct, 2);
        let remaining_ah = round(soc_pct * capacity_ah / 100.0, 2);
        let consumed_ah = -round((capacity_ah - remaining_ah).abs(), 2);

        let voltage_v = round(cell_v.iter().sum::<f64>(), 2);
        self.voltage_v = voltage_v;
        let power_w = round(voltage_v * current_a, 2);
        let (max_k, max_v) = extreme(&cell_v, |a, b| a > b);
        let (min_k, min_v) = extreme(&cell_v, |a, b| a < b);
        let time_to_go = if current_a.abs() < 0.1 {
            Value::Invalid
        } else if current_a > 0.0 {
            Value::Int(
                ((100.0 - soc_pct) / 100.0 * capacity_ah / current_a * 3600.0).round() as i64,
            )
        } else {
            let usable_pct = (soc_pct - SOC_FLOOR_PCT).max(0.0);
            Value::Int((usable_pct / 100.0 * capacity_ah / -current_a * 3600.0).round() as i64)
        };

        let blocking_charge = over.is_some_and(|o| o.blocking_charge);
        let blocking_discharge = over.is_some_and(|o| o.blocking_discharge);
        let limits = over.and_then(|o| o.limits.as_ref());
        let cvl = at(
            limits.and_then(|l| l.cvl),
            round(self.spec.cvl_per_cell_v * cells as f64, 2),
        );
        let ccl = at(limits.and_then(|l| l.ccl), 100.0);
        let dcl = at(limits.and_then(|l| l.dcl), 100.0);
        let charge_mode = limits
            .and_then(|l| l.charge_mode.clone())
            .unwrap_or_else(|| "Bulk".to_string());

        let spec = &self.spec;
        let mut items = Items::default();
        items.text(
            "/Mgmt/ProcessName",
            "/opt/victronenergy/dbus-serialbattery/dbus-serialbattery.py",
        );
        items.text("/Mgmt/ProcessVersion", "simulated");
        items.text("/Mgmt/Connection", &format!("Serial /dev/{}", spec.service));
        items.int("/DeviceInstance", spec.device_instance);
        items.push(
            "/ProductId",
            Value::Int(SERIALBATTERY_PRODUCT_ID),
            TextFormat::Hex,
        );
        items.text("/ProductName", &spec.product_name);
        items.text("/FirmwareVersion", "simulated");
        items.text(
            "/HardwareVersion",
            &format!(
                "{cells}S {}Ah",
                aggregator_core::value::python_str(capacity_ah)
            ),
        );
        items.int("/Connected", 1);
        items.text(
            "/CustomName",
            spec.custom_name.as_deref().unwrap_or(&spec.product_name),
        );
        items.push(
            "/Serial",
            Value::text(spec.serial.as_deref()),
            TextFormat::Plain,
        );

        items.float("/Dc/0/Voltage", voltage_v, TextFormat::Fixed(2, "V"));
        items.float("/Dc/0/Current", current_a, TextFormat::Fixed(2, "A"));
        items.float("/Dc/0/Power", power_w, TextFormat::Fixed(0, "W"));
        items.float(
            "/Dc/0/Temperature",
            temperature_c,
            TextFormat::Fixed(1, "°C"),
        );
        items.float(
            "/InstalledCapacity",
            capacity_ah,
            TextFormat::Fixed(0, "Ah"),
        );
        items.float("/ConsumedAmphours", consumed_ah, TextFormat::Fixed(0, "Ah"));
        items.float("/Capacity", remaining_ah, TextFormat::Fixed(2, "Ah"));
        items.float("/Soc", soc_pct, TextFormat::Fixed(0, "%"));
        // As dbus-serialbattery publishes it; a new pack's.
        items.float("/Soh", 100.0, TextFormat::Fixed(0, "%"));
        items.push("/TimeToGo", time_to_go, TextFormat::Plain);

        items.float(
            "/System/MaxCellTemperature",
            cell_temps_c[0],
            TextFormat::Fixed(1, "°C"),
        );
        items.float(
            "/System/MinCellTemperature",
            cell_temps_c[1],
            TextFormat::Fixed(1, "°C"),
        );
        items.text("/System/MaxTemperatureCellId", "T1");
        items.text("/System/MinTemperatureCellId", "T2");
        items.text("/System/MaxVoltageCellId", &format!("C{max_k}"));
        items.text("/System/MinVoltageCellId", &format!("C{min_k}"));
        items.float("/System/MaxCellVoltage", max_v, TextFormat::Fixed(3, "V"));
        items.float("/System/MinCellVoltage", min_v, TextFormat::Fixed(3, "V"));
        items.int("/System/NrOfCellsPerBattery", cells as i64);
        items.int("/System/NrOfModulesOnline", 1);
        items.int("/System/NrOfModulesOffline", 0);
        items.int(
            "/System/NrOfModulesBlockingCharge",
            i64::from(blocking_charge),
        );
        items.int(
            "/System/NrOfModulesBlockingDischarge",
            i64::from(blocking_discharge),
        );

        for alarm in ALARMS {
            let level = over.and_then(|o| o.alarms.get(alarm)).copied().unwrap_or(0);
            items.int(&format!("/Alarms/{alarm}"), level);
        }
        items.int("/Io/AllowToCharge", i64::from(!blocking_charge));
        items.int("/Io/AllowToDischarge", i64::from(!blocking_discharge));
        items.int("/Io/AllowToBalance", 1);

        for (k, v) in cell_v.iter().enumerate() {
            items.float(
                &format!("/Voltages/Cell{}", k + 1),
                *v,
                TextFormat::Fixed(3, "V"),
            );
        }
        items.float("/Voltages/Sum", voltage_v, TextFormat::Fixed(2, "V"));
        items.float(
            "/Voltages/Diff",
            round(max_v - min_v, 3),
            TextFormat::Fixed(3, "V"),
        );
        items.float(
            "/Info/MaxChargeVoltage",
            round(cvl, 2),
            TextFormat::Fixed(2, "V"),
        );
        items.float(
            "/Info/MaxChargeCurrent",
            round(ccl, 2),
            TextFormat::Fixed(1, "A"),
        );
        items.float(
            "/Info/MaxDischargeCurrent",
            round(dcl, 2),
            TextFormat::Fixed(1, "A"),
        );
        items.text("/Info/ChargeMode", &charge_mode);

        let mut items = items.0;
        // A CAN pack publishes fewer paths: leave out what its kind lacks.
        let without_cells = |path: &str| {
            path.starts_with("/Voltages/")
                || matches!(
                    path,
                    "/System/NrOfCellsPerBattery"
                        | "/Capacity"
                        | "/ConsumedAmphours"
                        | "/System/MaxVoltageCellId"
                        | "/System/MinVoltageCellId"
                )
        };
        match spec.cell_data {
            CellData::All => {}
            CellData::MinMax => items.retain(|(p, _, _)| !without_cells(p)),
            CellData::None => items.retain(|(p, _, _)| {
                !without_cells(p)
                    && !matches!(
                        p.as_str(),
                        "/System/MaxCellVoltage" | "/System/MinCellVoltage"
                    )
            }),
        }
        if let Some(over) = over {
            for (path, value) in &over.values {
                let text = TextFormat::Plain.render(value);
                match items.iter_mut().find(|(p, _, _)| p == path) {
                    Some(item) => *item = (path.clone(), value.clone(), text),
                    None => items.push((path.clone(), value.clone(), text)),
                }
            }
        }
        items
    }
}

/// Builds a list of items.
#[derive(Default)]
struct Items(Vec<Item>);

impl Items {
    fn push(&mut self, path: &str, value: Value, format: TextFormat) {
        let text = format.render(&value);
        self.0.push((path.to_string(), value, text));
    }

    fn float(&mut self, path: &str, value: f64, format: TextFormat) {
        self.push(path, Value::Float(value), format);
    }

    fn int(&mut self, path: &str, value: i64) {
        self.push(path, Value::Int(value), TextFormat::Plain);
    }

    fn text(&mut self, path: &str, value: &str) {
        self.push(path, Value::Text(value.to_string()), TextFormat::Plain);
    }
}

/// The 1-based index and value of the first cell that beats all others by `better`.
fn extreme(cells: &[f64], better: impl Fn(f64, f64) -> bool) -> (usize, f64) {
    let mut best = (1, cells.first().copied().unwrap_or(0.0));
    for (index, v) in cells.iter().enumerate().skip(1) {
        if better(*v, best.1) {
            best = (index + 1, *v);
        }
    }
    best
}

/// Rounds to `decimals` places, as Python's `round` does for the values we publish.
pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Scenario;
    use std::collections::HashMap;

    fn scenario() -> Scenario {
        Scenario::parse(
            "batteries:\n  - service: ttyUSB0\n    custom_name: Bat1\n    cells: 4\n    \
             capacity_ah: 100\n    soc: 50\nsegments:\n  - duration: 10s\n    \
             cell_voltage: [3.30, 3.40]\n    battery_current: 36\n    batteries:\n      \
             Bat1:\n        cells: {3: 3.5}\n        blocking_charge: true\n        \
             values: {/Soc: high}\n",
            "s.yaml",
        )
        .expect("parses")
    }

    fn by_path(items: &[Item]) -> HashMap<&str, &Value> {
        items.iter().map(|(p, v, _)| (p.as_str(), v)).collect()
    }

    #[test]
    fn derived_values_follow_the_cells_and_the_current() {
        let scenario = scenario();
        let segment = &scenario.segments()[0];
        let over = segment.overrides[0].as_ref();
        let mut model = BatteryModel::new(scenario.batteries()[0].clone(), 0);
        model.advance(0.0, Some((segment, 0.0)), over, false);
        // 10 s at 36 A into 100 Ah: 0.1 Ah = 0.1 %.
        let items = model.advance(10.0, Some((segment, 1.0)), over, false);
        let v = by_path(&items);
        assert_eq!(v["/Voltages/Cell1"], &Value::Float(3.4));
        assert_eq!(v["/Voltages/Cell3"], &Value::Float(3.5));
        assert_eq!(v["/Dc/0/Voltage"], &Value::Float(13.7));
        assert_eq!(v["/Voltages/Sum"], &Value::Float(13.7));
        assert_eq!(v["/Voltages/Diff"], &Value::Float(0.1));
        assert_eq!(v["/System/MaxVoltageCellId"], &Value::Text("C3".into()));
        assert_eq!(v["/System/MinVoltageCellId"], &Value::Text("C1".into()));
        assert_eq!(v["/Dc/0/Power"], &Value::Float(493.2));
        assert_eq!(v["/Capacity"], &Value::Float(50.1));
        assert_eq!(v["/ConsumedAmphours"], &Value::Float(-49.9));
        assert_eq!(v["/Soc"], &Value::Text("high".into()));
        assert_eq!(v["/Io/AllowToCharge"], &Value::Int(0));
        assert_eq!(v["/System/NrOfModulesBlockingCharge"], &Value::Int(1));
        assert_eq!(v["/Info/MaxChargeVoltage"], &Value::Float(13.8));
        assert_eq!(v["/ProductId"], &Value::Int(0xBA77));
        assert_eq!(v["/Serial"], &Value::Invalid);
        let text: HashMap<&str, &str> = items
            .iter()
            .map(|(p, _, t)| (p.as_str(), t.as_str()))
            .collect();
        assert_eq!(text["/ProductId"], "0xBA77");
        assert_eq!(text["/Dc/0/Voltage"], "13.70V");
    }

    #[test]
    fn a_cell_spread_keeps_the_mean_and_spans_the_cells() {
        let scenario = Scenario::parse(
            "batteries:\n  - service: ttyUSB0\n    cells: 5\nsegments:\n  - duration: 10s\n    \
             cell_voltage: 3.40\n    cell_spread: [0.0, 0.04]\n",
            "s.yaml",
        )
        .expect("parses");
        let segment = &scenario.segments()[0];
        let mut model = BatteryModel::new(scenario.batteries()[0].clone(), 0);
        let items = model.advance(0.0, Some((segment, 1.0)), None, false);
        let v = by_path(&items);
        let cells: Vec<&Value> = (1..=5)
            .map(|k| v[format!("/Voltages/Cell{k}").as_str()])
            .collect();
        let expected = [3.38, 3.39, 3.4, 3.41, 3.42].map(Value::Float);
        assert_eq!(cells, expected.iter().collect::<Vec<_>>());
        assert_eq!(v["/Voltages/Diff"], &Value::Float(0.04));
        assert_eq!(v["/Dc/0/Voltage"], &Value::Float(17.0));
    }

    #[test]
    fn jitter_is_small_and_repeatable() {
        let scenario = scenario();
        let segment = &scenario.segments()[0];
        let run = || {
            let mut model = BatteryModel::new(scenario.batteries()[0].clone(), 3);
            (0..5)
                .map(|step| model.advance(f64::from(step), Some((segment, 0.0)), None, true))
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        for items in &a {
            let Value::Float(cell) = by_path(items)["/Voltages/Cell1"].clone() else {
                panic!("not a float")
            };
            assert!((cell - 3.30).abs() <= 0.0021, "{cell}");
        }
        assert_ne!(a[1], a[2]);
    }
}
