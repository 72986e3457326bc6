//! The bank at a glance: `/System/Batteries` (one JSON entry per pack) and
//! `/System/BatteriesOnline` (`n/m`, as Victron's parallel-BMS service shows it).
//!
//! The figures change every tick on a live bank, but the texts are rebuilt only when a figure
//! at its published precision changed: comparing plain numbers costs nothing, formatting a
//! JSON text does.

use std::fmt::Write;

use plugin_api::BatteryState;

use crate::guard::BmsOnly;
use crate::presence::Battery;

/// One pack's figures at their published precision.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Figures {
    state: Option<BatteryState>,
    voltage_v: Option<f64>,
    current_a: Option<f64>,
    soc_pct: Option<f64>,
    min_cell_v: Option<f64>,
    max_cell_v: Option<f64>,
    blocks_charge: bool,
    blocks_discharge: bool,
    /// The host's bounds that rest on this pack's BMS alone.
    bms_only: BmsOnly,
}

impl Figures {
    fn of(battery: &Battery) -> Self {
        let r = &battery.reading;
        let round = |v: Option<f64>, scale: f64| v.map(|v| (v * scale).round() / scale);
        Figures {
            state: Some(battery.state),
            voltage_v: round(r.voltage_v, 100.0),
            current_a: round(r.current_a, 10.0),
            soc_pct: round(r.soc_pct, 10.0),
            min_cell_v: round(r.min_cell_voltage_v, 1000.0),
            max_cell_v: round(r.max_cell_voltage_v, 1000.0),
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
        voltage_v: None,
        current_a: None,
        soc_pct: None,
        min_cell_v: None,
        max_cell_v: None,
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
    figures: Figures,
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
            self.packs.clear();
            self.packs.extend(batteries.iter().map(|b| Pack {
                name: b.name.clone(),
                service: b.service.clone(),
                figures: Figures::of(b),
            }));
            self.packs.extend(left_out.iter().map(|name| Pack {
                name: name.clone(),
                service: String::new(),
                figures: Figures::LEFT_OUT,
            }));
            self.json = json(&self.packs);
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

/// `[{"name": …, "service": …, "state": "online", "voltage": 53.6, …}, …]`; invalid values
/// are `null`.
fn json(packs: &[Pack]) -> String {
    let mut out = String::from("[");
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
        out.push_str("{\"name\": ");
        quoted(&mut out, &pack.name);
        out.push_str(", \"service\": ");
        quoted(&mut out, &pack.service);
        let _ = write!(out, ", \"state\": \"{state}\"");
        for (key, value) in [
            ("voltage", f.voltage_v),
            ("current", f.current_a),
            ("soc", f.soc_pct),
            ("min_cell_voltage", f.min_cell_v),
            ("max_cell_voltage", f.max_cell_v),
        ] {
            match value.filter(|v| v.is_finite()) {
                Some(v) => {
                    let _ = write!(out, ", \"{key}\": {v}");
                }
                None => {
                    let _ = write!(out, ", \"{key}\": null");
                }
            }
        }
        let _ = write!(
            out,
            ", \"blocking_charge\": {}, \"blocking_discharge\": {}, \"bms_only\": [",
            f.blocks_charge, f.blocks_discharge
        );
        // The host's bounds that cannot see this pack (no data of its own): its BMS alone
        // holds them.
        for (k, name) in f.bms_only.names().enumerate() {
            let sep = if k > 0 { ", " } else { "" };
            let _ = write!(out, "{sep}\"{name}\"");
        }
        out.push_str("]}");
    }
    out.push(']');
    out
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
}
