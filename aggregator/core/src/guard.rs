//! The host's own limits on every strategy (issue 14 §2–§4, §7): cell voltage and temperature
//! windows, the packs' own current limits, and chemistry mismatch. Applied after the envelope,
//! so no strategy, built-in or third party, can get around them.
//!
//! Each rule only ever lowers a limit. Cell voltage rules latch with a hysteresis so that a
//! cell at the bound does not flap; temperature rules derate linearly over the last
//! `temperature_derate` degrees before each edge, which is continuous and needs none.

use plugin_api::BatteryState;

use crate::envelope::Limits;
use crate::presence::Battery;

/// `safety.bms_limits`: how the packs' own `/Info/MaxChargeCurrent` and
/// `/Info/MaxDischargeCurrent` cap the bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BmsLimits {
    /// The bank current at which the first pack reaches its own limit, from each pack's
    /// measured share of the bank current (falls back to `MinTimesCount` at low current).
    Share,
    /// The smallest pack limit × packs online.
    MinTimesCount,
    /// The sum of the packs' limits.
    Sum,
    /// No cap from the packs.
    Ignore,
}

/// A temperature window, °C: the limit is 0 at or beyond either edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    /// Lowest temperature allowed.
    pub min_c: f64,
    /// Highest temperature allowed.
    pub max_c: f64,
}

/// The host's bounds beyond the envelope's (`safety` in `config.yaml`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuardBounds {
    /// A cell at or above this: CCL 0 and CVL pulled down.
    pub max_cell_voltage_v: f64,
    /// Released once the highest cell is below `max_cell_voltage_v` − this.
    pub max_cell_hysteresis_v: f64,
    /// A cell at or below this: DCL 0.
    pub min_cell_voltage_v: f64,
    /// Released once the lowest cell is above `min_cell_voltage_v` + this.
    pub min_cell_hysteresis_v: f64,
    /// Charging allowed inside this window.
    pub charge_temperature: Window,
    /// Discharging allowed inside this window.
    pub discharge_temperature: Window,
    /// Degrees before each edge over which the current falls linearly to 0.
    pub temperature_derate_c: f64,
    /// How the packs' own limits cap the bank.
    pub bms_limits: BmsLimits,
    /// Bank current (A) from which `Share` uses the measured shares.
    pub share_min_current_a: f64,
}

/// A cell this far outside the safety window is not this chemistry's: the config is for
/// another bank (an LTO config on an LFP bank).
pub const MISMATCH_MARGIN_V: f64 = 0.25;

/// Time constant of the smoothing of the packs' current shares, s.
const SHARE_SMOOTHING_S: f64 = 5.0;

/// Where the bank's temperature stands against one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Thermal {
    /// Inside, no derating.
    #[default]
    Normal,
    /// Derated near the low edge.
    DeratedLow,
    /// Derated near the high edge.
    DeratedHigh,
    /// At or below the low edge: 0.
    TooCold,
    /// At or above the high edge: 0.
    TooHot,
}

impl Thermal {
    fn alarm(self, high: bool) -> i64 {
        match (self, high) {
            (Thermal::TooCold, false) | (Thermal::TooHot, true) => 2,
            (Thermal::DeratedLow, false) | (Thermal::DeratedHigh, true) => 1,
            _ => 0,
        }
    }
}

/// Which host limits acted this tick (for the mode text, the alarms and feed-in).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Acts {
    /// A cell reached `safety.max_cell_voltage` (latched): CCL 0, CVL pulled down.
    pub high_cell: bool,
    /// A cell reached `safety.min_cell_voltage` (latched): DCL 0.
    pub low_cell: bool,
    /// Cells far outside the safety window: the config is for another chemistry; CCL 0.
    pub mismatch: bool,
    /// The charge window.
    pub charge_thermal: Thermal,
    /// The discharge window.
    pub discharge_thermal: Thermal,
    /// No pack gives any temperature.
    pub no_temperature: bool,
    /// The packs' own limits lowered CCL.
    pub bms_capped_charge: bool,
    /// The packs' own limits lowered DCL.
    pub bms_capped_discharge: bool,
}

impl Acts {
    /// The host alarms by `/Alarms/<name>` (0 where the host sees nothing).
    pub fn alarms(&self) -> [(&'static str, i64); 6] {
        let flag = |b: bool| if b { 2 } else { 0 };
        [
            ("HighCellVoltage", flag(self.high_cell || self.mismatch)),
            ("LowCellVoltage", flag(self.low_cell)),
            ("HighChargeTemperature", self.charge_thermal.alarm(true)),
            ("LowChargeTemperature", self.charge_thermal.alarm(false)),
            ("HighTemperature", self.discharge_thermal.alarm(true)),
            ("LowTemperature", self.discharge_thermal.alarm(false)),
        ]
    }

    /// Words for `/Info/ChargeMode` naming each limit that acts; empty when none.
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if self.mismatch {
            parts.push(
                "cells outside the safety window (config for another chemistry?): charging stopped",
            );
        } else if self.high_cell {
            parts.push("cell at safety.max_cell_voltage: charging stopped");
        }
        if self.low_cell {
            parts.push("cell at safety.min_cell_voltage: discharging stopped");
        }
        parts.push(match self.charge_thermal {
            Thermal::TooCold => "too cold to charge",
            Thermal::TooHot => "too hot to charge",
            Thermal::DeratedLow | Thermal::DeratedHigh => "charge current derated for temperature",
            Thermal::Normal => "",
        });
        parts.push(match self.discharge_thermal {
            Thermal::TooCold => "too cold to discharge",
            Thermal::TooHot => "too hot to discharge",
            Thermal::DeratedLow | Thermal::DeratedHigh => {
                "discharge current derated for temperature"
            }
            Thermal::Normal => "",
        });
        parts.retain(|p| !p.is_empty());
        parts.join("; ")
    }
}

/// What the guard made of the limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Guarded {
    /// The limits after the host's rules.
    pub limits: Limits,
    /// Which rules acted.
    pub acts: Acts,
}

/// The guard's memory: the cell latches and the packs' smoothed current shares.
#[derive(Clone, Debug)]
pub struct Guard {
    bounds: GuardBounds,
    high_cell: bool,
    low_cell: bool,
    /// Smoothed share of the bank current per battery, in the order of the slice given.
    shares: Vec<f64>,
    /// Which batteries were online when the shares were measured.
    share_online: Vec<bool>,
}

/// The bank's cell and temperature extremes over the batteries online or held.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Extremes {
    /// Highest cell voltage.
    pub max_cell_v: Option<f64>,
    /// Lowest cell voltage.
    pub min_cell_v: Option<f64>,
    /// Lowest temperature (`/System/MinCellTemperature`, else `/Dc/0/Temperature`).
    pub min_temperature_c: Option<f64>,
    /// Highest temperature (`/System/MaxCellTemperature`, else `/Dc/0/Temperature`).
    pub max_temperature_c: Option<f64>,
}

impl Extremes {
    /// Of the batteries online or held.
    pub fn of(batteries: &[Battery]) -> Self {
        let mut e = Extremes::default();
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        for b in batteries.iter().filter(|b| b.state != BatteryState::Lost) {
            let r = &b.reading;
            e.max_cell_v = max(e.max_cell_v, finite(r.max_cell_voltage_v));
            e.min_cell_v = min(e.min_cell_v, finite(r.min_cell_voltage_v));
            let t_low = finite(r.min_cell_temperature_c).or(finite(r.temperature_c));
            let t_high = finite(r.max_cell_temperature_c).or(finite(r.temperature_c));
            e.min_temperature_c = min(e.min_temperature_c, t_low);
            e.max_temperature_c = max(e.max_temperature_c, t_high);
        }
        e
    }
}

impl Guard {
    /// A guard with no latch set.
    pub fn new(bounds: GuardBounds) -> Self {
        Self {
            bounds,
            high_cell: false,
            low_cell: false,
            shares: Vec::new(),
            share_online: Vec::new(),
        }
    }

    /// The bounds.
    pub fn bounds(&self) -> &GuardBounds {
        &self.bounds
    }

    /// Applies the host's rules to `limits` (the envelope's), for the bank `batteries` at
    /// `voltage_v`, `dt_s` after the last tick.
    pub fn apply(
        &mut self,
        limits: Limits,
        batteries: &[Battery],
        voltage_v: f64,
        dt_s: f64,
    ) -> Guarded {
        let b = self.bounds;
        let e = Extremes::of(batteries);
        let mut out = limits;
        let mut acts = Acts::default();

        if let Some(max_cell) = e.max_cell_v {
            if max_cell >= b.max_cell_voltage_v {
                self.high_cell = true;
            } else if max_cell < b.max_cell_voltage_v - b.max_cell_hysteresis_v {
                self.high_cell = false;
            }
            if self.high_cell {
                // As the dynamic CVL does: the bank voltage less the overshoot, so the
                // chargers push no further.
                let overshoot = (max_cell - b.max_cell_voltage_v).max(0.0);
                if voltage_v.is_finite() && voltage_v > overshoot {
                    out.cvl_v = out.cvl_v.min(voltage_v - overshoot);
                }
                out.ccl_a = 0.0;
            }
        }
        if let Some(min_cell) = e.min_cell_v {
            if min_cell <= b.min_cell_voltage_v {
                self.low_cell = true;
            } else if min_cell > b.min_cell_voltage_v + b.min_cell_hysteresis_v {
                self.low_cell = false;
            }
            if self.low_cell {
                out.dcl_a = 0.0;
            }
        }
        acts.high_cell = self.high_cell;
        acts.low_cell = self.low_cell;
        acts.mismatch = e
            .max_cell_v
            .is_some_and(|v| v >= b.max_cell_voltage_v + MISMATCH_MARGIN_V)
            || e.min_cell_v
                .is_some_and(|v| v <= b.min_cell_voltage_v - MISMATCH_MARGIN_V);
        if acts.mismatch {
            out.ccl_a = 0.0;
        }

        // Each edge acts on what is known: a pack giving only its lowest temperature still
        // stops charging in the cold.
        let (low, high) = (e.min_temperature_c, e.max_temperature_c);
        acts.no_temperature = low.is_none() && high.is_none();
        let d = b.temperature_derate_c;
        let (fc, tc) = thermal(b.charge_temperature, low, high, d);
        let (fd, td) = thermal(b.discharge_temperature, low, high, d);
        out.ccl_a *= fc;
        out.dcl_a *= fd;
        acts.charge_thermal = tc;
        acts.discharge_thermal = td;

        let (charge_cap, discharge_cap) = self.bms_caps(batteries, dt_s);
        if let Some(cap) = charge_cap.filter(|&c| c < out.ccl_a) {
            out.ccl_a = cap.max(0.0);
            acts.bms_capped_charge = true;
        }
        if let Some(cap) = discharge_cap.filter(|&c| c < out.dcl_a) {
            out.dcl_a = cap.max(0.0);
            acts.bms_capped_discharge = true;
        }
        Guarded { limits: out, acts }
    }

    /// The caps from the packs' own limits, (charge, discharge); `None`: no cap. A held
    /// pack's last reading stands in for it, as in the merge: its limits cap and its current
    /// counts, so a value that goes missing never gives the bank more.
    fn bms_caps(&mut self, batteries: &[Battery], dt_s: f64) -> (Option<f64>, Option<f64>) {
        let online = || batteries.iter().filter(|b| b.state != BatteryState::Lost);
        let bank_current: f64 = online().filter_map(|b| b.reading.current_a).sum();
        self.update_shares(batteries, bank_current, dt_s);
        if self.bounds.bms_limits == BmsLimits::Ignore {
            return (None, None);
        }
        let charge = self.cap(batteries, |b| b.reading.max_charge_current_a, bank_current);
        let discharge = self.cap(
            batteries,
            |b| b.reading.max_discharge_current_a,
            -bank_current,
        );
        (charge, discharge)
    }

    /// One direction's cap: `directed_a` is the bank current in that direction (> 0).
    fn cap(
        &self,
        batteries: &[Battery],
        limit: impl Fn(&Battery) -> Option<f64>,
        directed_a: f64,
    ) -> Option<f64> {
        let mut min = f64::INFINITY;
        let mut largest = 0.0_f64;
        let mut with_limit = 0u32;
        let mut online = 0u32;
        for b in batteries.iter().filter(|b| b.state != BatteryState::Lost) {
            online += 1;
            if let Some(l) = limit(b).filter(|l| l.is_finite() && *l >= 0.0) {
                with_limit += 1;
                min = min.min(l);
                largest = largest.max(l);
            }
        }
        if with_limit == 0 {
            return None;
        }
        // A pack without a limit of its own counts as the largest one published: it caps
        // nothing itself, and the bank is never allowed more than the packs can take.
        let sum: f64 = batteries
            .iter()
            .filter(|b| b.state != BatteryState::Lost)
            .map(|b| {
                limit(b)
                    .filter(|l| l.is_finite() && *l >= 0.0)
                    .unwrap_or(largest)
            })
            .sum();
        let min_times_count = min * f64::from(online);
        match self.bounds.bms_limits {
            BmsLimits::Ignore => None,
            BmsLimits::Sum => Some(sum),
            BmsLimits::MinTimesCount => Some(min_times_count),
            BmsLimits::Share if directed_a >= self.bounds.share_min_current_a => {
                let mut cap = sum;
                for (b, share) in batteries.iter().zip(&self.shares) {
                    if b.state == BatteryState::Lost || *share <= 0.0 {
                        continue;
                    }
                    if let Some(l) = limit(b).filter(|l| l.is_finite() && *l >= 0.0) {
                        cap = cap.min(l / share);
                    }
                }
                Some(cap)
            }
            BmsLimits::Share => Some(min_times_count),
        }
    }

    /// Each pack's share of the bank current, smoothed over a few seconds; only measured while
    /// the bank current is large enough to tell shares apart.
    fn update_shares(&mut self, batteries: &[Battery], bank_current: f64, dt_s: f64) {
        // Shares measured with another set of packs online say nothing of this one: start
        // again from this tick's (no allocation unless the bank's size changed).
        let same = self.share_online.len() == batteries.len()
            && batteries
                .iter()
                .zip(&self.share_online)
                .all(|(b, &was)| (b.state != BatteryState::Lost) == was);
        if !same {
            self.shares.clear();
            self.shares.resize(batteries.len(), f64::NAN);
            self.share_online.clear();
            self.share_online
                .extend(batteries.iter().map(|b| b.state != BatteryState::Lost));
        }
        if bank_current.abs() < self.bounds.share_min_current_a {
            return;
        }
        let alpha = if dt_s > 0.0 {
            dt_s / (SHARE_SMOOTHING_S + dt_s)
        } else {
            1.0
        };
        for (b, share) in batteries.iter().zip(self.shares.iter_mut()) {
            let now = match (b.state, b.reading.current_a) {
                (BatteryState::Online | BatteryState::Stale, Some(i)) => {
                    (i / bank_current).max(0.0)
                }
                _ => 0.0,
            };
            *share = if share.is_finite() {
                *share + alpha * (now - *share)
            } else {
                now
            };
        }
    }
}

/// The factor (0–1) of a window for the bank's lowest and highest temperature, and its state.
fn thermal(window: Window, low: Option<f64>, high: Option<f64>, derate: f64) -> (f64, Thermal) {
    if low.is_some_and(|t| t <= window.min_c) {
        return (0.0, Thermal::TooCold);
    }
    if high.is_some_and(|t| t >= window.max_c) {
        return (0.0, Thermal::TooHot);
    }
    if derate <= 0.0 {
        return (1.0, Thermal::Normal);
    }
    let f_low = low.map_or(1.0, |t| ((t - window.min_c) / derate).min(1.0));
    let f_high = high.map_or(1.0, |t| ((window.max_c - t) / derate).min(1.0));
    let state = if f_low < 1.0 && f_low <= f_high {
        Thermal::DeratedLow
    } else if f_high < 1.0 {
        Thermal::DeratedHigh
    } else {
        Thermal::Normal
    };
    (f_low.min(f_high), state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::reading::BatteryReading;

    pub(crate) const BOUNDS: GuardBounds = GuardBounds {
        max_cell_voltage_v: 3.60,
        max_cell_hysteresis_v: 0.05,
        min_cell_voltage_v: 2.90,
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
    };

    fn pack(name: &str, current: f64, ccl: Option<f64>, cell: f64, t: f64) -> Battery {
        Battery {
            name: name.into(),
            service: format!("s.{name}"),
            state: BatteryState::Online,
            reading: BatteryReading {
                voltage_v: Some(53.0),
                current_a: Some(current),
                max_cell_voltage_v: Some(cell),
                min_cell_voltage_v: Some(cell),
                temperature_c: Some(t),
                max_charge_current_a: ccl,
                max_discharge_current_a: ccl,
                ..Default::default()
            },
        }
    }

    const WIDE: Limits = Limits {
        cvl_v: 56.0,
        ccl_a: 200.0,
        dcl_a: 200.0,
    };

    #[test]
    fn unequal_shares_cap_the_bank_where_the_first_pack_reaches_its_limit() {
        let mut g = Guard::new(BOUNDS);
        let bank = [
            pack("A", 35.0, Some(50.0), 3.3, 20.0),
            pack("B", 15.0, Some(50.0), 3.3, 20.0),
        ];
        let out = g.apply(WIDE, &bank, 53.0, 1.0);
        assert!((out.limits.ccl_a - 50.0 / 0.7).abs() < 1e-9, "{out:?}");
        let mut g = Guard::new(BOUNDS);
        let equal = [
            pack("A", 25.0, Some(50.0), 3.3, 20.0),
            pack("B", 25.0, Some(50.0), 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &equal, 53.0, 1.0).limits.ccl_a, 100.0);
    }

    #[test]
    fn low_current_uses_min_times_count_and_no_limit_does_not_cap() {
        let mut g = Guard::new(BOUNDS);
        let bank = [
            pack("A", 1.0, Some(10.0), 3.3, 20.0),
            pack("B", 1.0, Some(50.0), 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &bank, 53.0, 1.0).limits.ccl_a, 20.0);
        let bank = [
            pack("A", 1.0, None, 3.3, 20.0),
            pack("B", 1.0, None, 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &bank, 53.0, 1.0).limits.ccl_a, 200.0);
    }

    #[test]
    fn a_high_cell_latches_until_below_the_hysteresis() {
        let mut g = Guard::new(BOUNDS);
        let at = |v| [pack("A", 0.0, None, v, 20.0)];
        let out = g.apply(WIDE, &at(3.62), 55.0, 1.0);
        assert_eq!(out.limits.ccl_a, 0.0);
        assert!((out.limits.cvl_v - (55.0 - 0.02)).abs() < 1e-9, "{out:?}");
        assert!(out.acts.high_cell);
        assert_eq!(g.apply(WIDE, &at(3.56), 57.0, 1.0).limits.ccl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.54), 56.6, 1.0).limits.ccl_a, 200.0);
    }

    #[test]
    fn a_low_cell_latches_until_above_the_hysteresis() {
        let mut g = Guard::new(BOUNDS);
        let at = |v| [pack("A", 0.0, None, v, 20.0)];
        assert_eq!(g.apply(WIDE, &at(2.90), 46.0, 1.0).limits.dcl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.05), 48.0, 1.0).limits.dcl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.11), 49.0, 1.0).limits.dcl_a, 200.0);
    }

    #[test]
    fn temperature_windows_stop_and_derate() {
        let mut g = Guard::new(BOUNDS);
        let at = |t| [pack("A", 0.0, None, 3.3, t)];
        let cold = g.apply(WIDE, &at(-5.0), 53.0, 1.0);
        assert_eq!((cold.limits.ccl_a, cold.limits.dcl_a), (0.0, 200.0));
        assert_eq!(cold.acts.charge_thermal, Thermal::TooCold);
        let cool = g.apply(WIDE, &at(2.5), 53.0, 1.0);
        assert_eq!(cool.limits.ccl_a, 100.0);
        assert_eq!(cool.acts.charge_thermal, Thermal::DeratedLow);
        let hot = g.apply(WIDE, &at(56.0), 53.0, 1.0);
        assert_eq!((hot.limits.ccl_a, hot.limits.dcl_a), (0.0, 0.0));
        let none = [Battery {
            reading: BatteryReading {
                temperature_c: None,
                ..at(20.0)[0].reading.clone()
            },
            ..at(20.0)[0].clone()
        }];
        assert!(g.apply(WIDE, &none, 53.0, 1.0).acts.no_temperature);
    }

    #[test]
    fn cells_far_outside_the_window_are_a_mismatch() {
        let lto = GuardBounds {
            max_cell_voltage_v: 2.6,
            min_cell_voltage_v: 1.8,
            ..BOUNDS
        };
        let mut g = Guard::new(lto);
        let out = g.apply(WIDE, &[pack("A", 0.0, None, 3.3, 20.0)], 53.0, 1.0);
        assert!(out.acts.mismatch);
        assert_eq!(out.limits.ccl_a, 0.0);
        assert!(out.acts.describe().contains("another chemistry"));
    }
}
