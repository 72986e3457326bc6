//! The bank at a glance: `/System/Batteries` (one JSON entry per pack) and
//! `/System/BatteriesOnline` (`n/m`, as Victron's parallel-BMS service shows it).
//!
//! The figures change every tick on a live bank, but the texts are rebuilt only when a figure
//! at its published precision changed: comparing plain numbers costs nothing, formatting a
//! JSON text does.

use std::fmt::Write;

use plugin_api::BatteryState;

use crate::decimal::push_digits;
use crate::guard::BmsOnly;
use crate::presence::Battery;

/// One pack's figures at their published precision, as whole numbers of their last digit
/// (53.60 V is 5360): compared and written without formatting a float.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Figures {
    state: Option<BatteryState>,
    /// Hundredths of a volt.
    voltage: Option<i64>,
    /// Tenths of an ampere.
    current: Option<i64>,
    /// Tenths of a percent.
    soc: Option<i64>,
    /// Millivolts.
    min_cell: Option<i64>,
    /// Millivolts.
    max_cell: Option<i64>,
    blocks_charge: bool,
    blocks_discharge: bool,
    /// The host's bounds that rest on this pack's BMS alone.
    bms_only: BmsOnly,
}

/// The decimals each figure is published with.
const VOLTAGE_DIGITS: u32 = 2;
const CURRENT_DIGITS: u32 = 1;
const SOC_DIGITS: u32 = 1;
const CELL_DIGITS: u32 = 3;

/// `v` in whole units of its `digits`-th decimal; none when it is not a finite number.
fn scaled(v: Option<f64>, digits: u32) -> Option<i64> {
    let v = v.filter(|v| v.is_finite())? * 10f64.powi(digits as i32);
    // A value beyond i64 saturates: it was already no plausible figure.
    Some(v.round() as i64)
}

impl Figures {
    fn of(battery: &Battery) -> Self {
        let r = &battery.reading;
        Figures {
            state: Some(battery.state),
            voltage: scaled(r.voltage_v, VOLTAGE_DIGITS),
            current: scaled(r.current_a, CURRENT_DIGITS),
            soc: scaled(r.soc_pct, SOC_DIGITS),
            min_cell: scaled(r.min_cell_voltage_v, CELL_DIGITS),
            max_cell: scaled(r.max_cell_voltage_v, CELL_DIGITS),
            blocks_charge: r.modules_blocking_charge.unwrap_or(0) > 0
                || r.allow_to_charge == Some(0),
            blocks_discharge: r.modules_blocking_discharge.unwrap_or(0) > 0
                || r.allow_to_discharge == Some(0),
            bms_only: BmsOnly::of(r),
        }
    }

    /// A pack left out for its cell count: in the listing, with no figures.
    const LEFT_OUT: Figures = Figures {
        state: None,
        voltage: None,
        current: None,
        soc: None,
        min_cell: None,
        max_cell: None,
        blocks_charge: false,
        blocks_discharge: false,
        bms_only: BmsOnly {
            max_cell_voltage: false,
            min_cell_voltage: false,
            temperature: false,
        },
    };
}

#[derive(Clone, Debug, PartialEq)]
struct Pack {
    name: String,
    service: String,
    /// `{"name": …, "service": …`, made once per pack: names and services do not change.
    head: String,
    figures: Figures,
}

impl Pack {
    /// The pack of `name` and `service`, its head taken over from `before` when it is the
    /// same pack.
    fn new(name: &str, service: &str, figures: Figures, before: Option<Pack>) -> Pack {
        let head = match before {
            Some(p) if p.name == name && p.service == service => p.head,
            _ => {
                let mut head = String::from("{\"name\": ");
                quoted(&mut head, name);
                head.push_str(", \"service\": ");
                quoted(&mut head, service);
                head
            }
        };
        Pack {
            name: name.to_string(),
            service: service.to_string(),
            head,
            figures,
        }
    }
}

/// The listing and its texts, rebuilt on change only.
#[derive(Clone, Debug, Default)]
pub struct BankListing {
    packs: Vec<Pack>,
    json: String,
    online: (u32, u32),
    online_text: String,
}

impl BankListing {
    /// Takes this tick's batteries, the names of those left out and the expected batteries
    /// never found; returns whether `/System/Batteries` and whether `/System/BatteriesOnline`
    /// changed.
    pub fn update(
        &mut self,
        batteries: &[Battery],
        left_out: &[String],
        missing: u32,
    ) -> (bool, bool) {
        let same = self.packs.len() == batteries.len() + left_out.len()
            && self.packs.iter().zip(batteries).all(|(p, b)| {
                p.name == b.name && p.service == b.service && p.figures == Figures::of(b)
            })
            && self.packs[batteries.len()..]
                .iter()
                .zip(left_out)
                .all(|(p, name)| p.name == *name);
        let listing_changed = !same || self.json.is_empty();
        if listing_changed {
            let mut before = std::mem::take(&mut self.packs).into_iter();
            let packs = (batteries.iter())
                .map(|b| (b.name.as_str(), b.service.as_str(), Figures::of(b)))
                .chain(left_out.iter().map(|n| (n.as_str(), "", Figures::LEFT_OUT)));
            for (name, service, figures) in packs {
                let pack = Pack::new(name, service, figures, before.next());
                self.packs.push(pack);
            }
            json(&self.packs, &mut self.json);
        }
        let online = batteries
            .iter()
            .filter(|b| b.state == BatteryState::Online)
            .count() as u32;
        let total = (batteries.len() + left_out.len()) as u32 + missing;
        let online_changed = (online, total) != self.online || self.online_text.is_empty();
        if online_changed {
            self.online = (online, total);
            self.online_text = format!("{online}/{total}");
        }
        (listing_changed, online_changed)
    }

    /// `/System/Batteries`.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// `/System/BatteriesOnline`.
    pub fn online_text(&self) -> &str {
        &self.online_text
    }
}

/// `[{"name": …, "service": …, "state": "online", "voltage": 53.6, …}, …]` into `out`;
/// invalid values are `null`.
fn json(packs: &[Pack], out: &mut String) {
    out.clear();
    out.push('[');
    for (k, pack) in packs.iter().enumerate() {
        let f = &pack.figures;
        let state = match f.state {
            Some(BatteryState::Online) => "online",
            Some(BatteryState::Stale) => "stale",
            Some(BatteryState::Lost) => "lost",
            None => "left out",
        };
        if k > 0 {
            out.push_str(", ");
        }
        // Pieces pushed rather than formatted: the listing is rebuilt at most ticks.
        out.push_str(&pack.head);
        out.push_str(", \"state\": \"");
        out.push_str(state);
        out.push('"');
        for (key, value, digits) in [
            ("voltage", f.voltage, VOLTAGE_DIGITS),
            ("current", f.current, CURRENT_DIGITS),
            ("soc", f.soc, SOC_DIGITS),
            ("min_cell_voltage", f.min_cell, CELL_DIGITS),
            ("max_cell_voltage", f.max_cell, CELL_DIGITS),
        ] {
            out.push_str(", \"");
            out.push_str(key);
            out.push_str("\": ");
            match value {
                Some(v) => decimal(out, v, digits),
                None => out.push_str("null"),
            }
        }
        out.push_str(", \"blocking_charge\": ");
        out.push_str(if f.blocks_charge { "true" } else { "false" });
        out.push_str(", \"blocking_discharge\": ");
        out.push_str(if f.blocks_discharge { "true" } else { "false" });
        out.push_str(", \"bms_only\": [");
        // The host's bounds that cannot see this pack (no data of its own): its BMS alone
        // holds them.
        for (k, name) in f.bms_only.names().enumerate() {
            out.push_str(if k > 0 { ", \"" } else { "\"" });
            out.push_str(name);
            out.push('"');
        }
        out.push_str("]}");
    }
    out.push(']');
}

/// `scaled` units of the `digits`-th decimal as the shortest JSON number: 5360 with 2 digits
/// is `53.6`, -20 with 1 digit is `-2`.
fn decimal(out: &mut String, scaled: i64, digits: u32) {
    let unit = 10u64.pow(digits);
    let (whole, mut fraction) = (scaled.unsigned_abs() / unit, scaled.unsigned_abs() % unit);
    if scaled < 0 {
        out.push('-');
    }
    push_digits(out, whole, 1);
    if fraction > 0 {
        let mut width = digits as usize;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        out.push('.');
        push_digits(out, fraction, width);
    }
}

/// A JSON string: quotes, backslashes and control characters escaped.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::BatteryReading;

    fn battery(name: &str, state: BatteryState, voltage: f64) -> Battery {
        Battery {
            name: name.into(),
            service: format!("com.victronenergy.battery.{name}"),
            state,
            reading: BatteryReading {
                voltage_v: Some(voltage),
                current_a: Some(-2.04),
                soc_pct: Some(61.27),
                min_cell_voltage_v: Some(3.301),
                allow_to_charge: Some(0),
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_listing_names_every_pack_and_is_rebuilt_only_on_change() {
        let mut listing = BankListing::default();
        let bank = [
            battery("A\"1", BatteryState::Online, 53.604),
            battery("B", BatteryState::Stale, 53.5),
        ];
        assert_eq!(listing.update(&bank, &["C".into()], 1), (true, true));
        let value: serde_json::Value = serde_json::from_str(listing.json()).unwrap();
        assert_eq!(value[0]["name"], "A\"1");
        assert_eq!(value[0]["state"], "online");
        assert_eq!(value[0]["voltage"], 53.6);
        assert_eq!(value[0]["current"], -2.0);
        assert_eq!(value[0]["soc"], 61.3);
        assert_eq!(value[0]["min_cell_voltage"], 3.301);
        assert_eq!(value[0]["max_cell_voltage"], serde_json::Value::Null);
        assert_eq!(value[0]["blocking_charge"], true);
        // No highest cell and no temperature: those bounds rest on the pack's BMS alone.
        assert_eq!(
            value[0]["bms_only"],
            serde_json::json!(["max_cell_voltage", "temperature"])
        );
        assert_eq!(value[2]["bms_only"], serde_json::json!([]));
        assert_eq!(value[1]["state"], "stale");
        assert_eq!(value[2]["state"], "left out");
        assert_eq!(listing.online_text(), "1/4");
        // A change below the published precision rebuilds nothing.
        let mut next = bank.clone();
        next[0].reading.voltage_v = Some(53.6012);
        assert_eq!(listing.update(&next, &["C".into()], 1), (false, false));
        next[1].state = BatteryState::Online;
        assert_eq!(listing.update(&next, &["C".into()], 1), (true, true));
        assert_eq!(listing.online_text(), "2/4");
    }

    #[test]
    fn figures_are_written_as_the_shortest_number_of_their_precision() {
        let text = |scaled: i64, digits: u32| {
            let mut out = String::new();
            decimal(&mut out, scaled, digits);
            out
        };
        assert_eq!(text(5360, VOLTAGE_DIGITS), "53.6");
        assert_eq!(text(5304, VOLTAGE_DIGITS), "53.04");
        assert_eq!(text(-20, CURRENT_DIGITS), "-2");
        assert_eq!(text(-5, CURRENT_DIGITS), "-0.5");
        assert_eq!(text(0, CURRENT_DIGITS), "0");
        assert_eq!(text(3050, CELL_DIGITS), "3.05");
        assert_eq!(text(i64::MIN, CELL_DIGITS), "-9223372036854775.808");
        // Every figure reads back as the float rounded to its precision.
        for v in [-12.34, 0.05, 3.3049, 53.605, 99.95, -0.04] {
            let mut out = String::new();
            decimal(
                &mut out,
                scaled(Some(v), VOLTAGE_DIGITS).unwrap(),
                VOLTAGE_DIGITS,
            );
            let back: f64 = out.parse().unwrap();
            assert_eq!(
                back,
                (v * 100.0_f64).round() / 100.0,
                "{v} written as {out}"
            );
        }
        assert_eq!(scaled(Some(f64::NAN), 1), None);
    }

    #[test]
    fn a_pack_keeps_its_head_until_its_name_or_service_changes() {
        let mut listing = BankListing::default();
        let mut bank = vec![battery("A", BatteryState::Online, 53.6)];
        listing.update(&bank, &[], 0);
        bank[0].reading.voltage_v = Some(52.0);
        assert_eq!(listing.update(&bank, &[], 0), (true, false));
        let value: serde_json::Value = serde_json::from_str(listing.json()).unwrap();
        assert_eq!(
            (value[0]["name"].as_str(), value[0]["voltage"].as_f64()),
            (Some("A"), Some(52.0))
        );
        bank[0].name = "B".into();
        listing.update(&bank, &[], 0);
        let value: serde_json::Value = serde_json::from_str(listing.json()).unwrap();
        assert_eq!(value[0]["name"], "B");
        assert_eq!(value[0]["service"], "com.victronenergy.battery.A");
    }
}
