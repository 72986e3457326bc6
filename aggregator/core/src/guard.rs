//! The host's own limits on every strategy (docs/guard.md §5 to §11): cell voltage and temperature
//! windows, the packs' own current limits, and chemistry mismatch. Applied after the envelope,
//! so no strategy, built-in or third party, can get around them.
//!
//! Each rule only ever lowers a limit. Cell voltage rules latch with a hysteresis so that a
//! cell at the bound does not flap; temperature rules derate linearly over the last
//! `temperature_derate` degrees before each edge, which is continuous and needs none.

use plugin_api::BatteryState;
use serde::{Deserialize, Serialize};

use crate::envelope::Limits;
use crate::presence::Battery;
use crate::reading::BatteryReading;

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
    /// Charge current while the low-cell stop holds, as a fraction of the bank's installed
    /// capacity per hour (C): a discharged bank can always be recharged, gently.
    pub recovery_charge_rate_c: f64,
    /// Cap the bank so that if any one pack opens its relay, the others stay within their
    /// own limits at the current flowing then.
    pub bms_limits_n_minus_one: bool,
}

/// A cell this far above the safety window, or a pack's own CVL per cell this far outside
/// it, is not this chemistry's: the config is for another bank (an LTO config on an LFP bank,
/// or the reverse). Low cells alone tell nothing: a deeply discharged bank of the right
/// chemistry has them too.
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
    /// The low-cell stop holds and the BMSs allow charging: CCL lowered to this recovery
    /// current (A), the current actually allowed (it may be lower still).
    pub recovering_a: Option<f64>,
    /// A battery lost stops charging (`batteries.on_lost`) while the bank cannot discharge for
    /// a cause of its own other than the low-cell stop (the strategy's own low-cell latch or
    /// empty cut-off, a BMS): CCL lowered to the recovery current (A), the bank's way out.
    pub recovering_stuck_a: Option<f64>,
    /// Evidence of another chemistry: CCL 0.
    pub mismatch: bool,
    /// Part of `mismatch`: cells above the window by the margin.
    pub mismatch_high_cells: bool,
    /// Part of `mismatch`: a pack's own CVL per cell outside the window by the margin.
    pub mismatch_bms_cvl: bool,
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
    /// `bms_limits_n_minus_one` lowered CCL or DCL.
    pub n_minus_one_capped: bool,
}

impl Acts {
    /// The host alarms by `/Alarms/<name>` (0 where the host sees nothing).
    pub fn alarms(&self) -> [(&'static str, i64); 6] {
        let flag = |b: bool| if b { 2 } else { 0 };
        [
            // A low cell never raises the high-cell alarm, whatever else is wrong.
            (
                "HighCellVoltage",
                flag(self.high_cell || self.mismatch_high_cells),
            ),
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
        let recovery;
        if self.mismatch_high_cells {
            parts.push(
                "cells above the safety window (config for another chemistry?): charging stopped",
            );
        } else if self.mismatch_bms_cvl {
            parts.push(
                "a BMS asks a charge voltage per cell outside the safety window (config for \
                 another chemistry?): charging stopped",
            );
        } else if self.high_cell {
            parts.push("cell at safety.max_cell_voltage: charging stopped");
        }
        if let Some(a) = self.recovering_a {
            recovery = format!(
                "recovering a discharged bank: charging at {a:.1} A until the lowest cell is \
                 above safety.min_cell_voltage + safety.min_cell_hysteresis; discharging stopped"
            );
            parts.push(&recovery);
        } else if self.low_cell {
            parts.push("cell at safety.min_cell_voltage: discharging stopped");
        }
        let stuck;
        if let Some(a) = self.recovering_stuck_a {
            stuck = format!(
                "recovering a bank that cannot discharge: charging at {a:.1} A while a battery \
                 is lost"
            );
            parts.push(&stuck);
        }
        if self.no_temperature {
            parts.push("no pack reports a temperature: temperature limits rest on the BMSs");
        }
        if self.n_minus_one_capped {
            parts.push("limits capped for one pack opening its relay");
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
    /// Share of the bank current per battery (a rise at once, a fall smoothed), in the order
    /// of the slice given.
    shares: Vec<f64>,
    /// Which batteries were online when the shares were measured.
    share_online: Vec<bool>,
    /// The direction of the bank current the shares were measured in (+1 charge, −1
    /// discharge, 0 none yet).
    share_direction: f64,
}

/// The packs' measured current shares, as [`Guard::shares`] gives them and
/// [`Guard::resume_shares`] takes them back: the part of the guard's memory that is not a
/// latch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shares {
    /// Each battery's share of the bank current, in the order of the tick's batteries
    /// (`None`: not measured).
    #[serde(default)]
    pub per_battery: Vec<Option<f64>>,
    /// Which of them were online or held (not lost) when the shares were measured.
    #[serde(default)]
    pub online: Vec<bool>,
    /// The direction of the bank current they were measured in: 1 charge, −1 discharge, 0
    /// none yet.
    #[serde(default)]
    pub direction: f64,
}

/// The host's bounds that cannot see a pack for want of its data (CAN packs often publish
/// no cells and no temperature): for that pack they rest on its BMS alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BmsOnly {
    /// No highest cell: `safety.max_cell_voltage` cannot stop charging for this pack.
    pub max_cell_voltage: bool,
    /// No lowest cell: `safety.min_cell_voltage` cannot stop discharging for this pack.
    pub min_cell_voltage: bool,
    /// No temperature at all: the temperature windows cannot act for this pack.
    pub temperature: bool,
}

impl BmsOnly {
    /// Of one pack's reading.
    pub fn of(r: &BatteryReading) -> Self {
        let none = |v: Option<f64>| !v.is_some_and(f64::is_finite);
        BmsOnly {
            max_cell_voltage: none(r.max_cell_voltage_v),
            min_cell_voltage: none(r.min_cell_voltage_v),
            temperature: none(r.temperature_c)
                && none(r.min_cell_temperature_c)
                && none(r.max_cell_temperature_c),
        }
    }

    /// The names of the bounds, as `/System/Batteries` and the log give them.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        [
            (self.max_cell_voltage, "max_cell_voltage"),
            (self.min_cell_voltage, "min_cell_voltage"),
            (self.temperature, "temperature"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }

    /// True when every bound sees the pack.
    pub fn is_empty(self) -> bool {
        self == BmsOnly::default()
    }
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
            // A pack with one edge only still counts at the other: its one temperature is the
            // best known there (a pack publishing only its highest, -10 °C, is too cold).
            let t_low = finite(r.min_cell_temperature_c)
                .or(finite(r.temperature_c))
                .or(finite(r.max_cell_temperature_c));
            let t_high = finite(r.max_cell_temperature_c)
                .or(finite(r.temperature_c))
                .or(finite(r.min_cell_temperature_c));
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
            share_direction: 0.0,
        }
    }

    /// The bounds.
    pub fn bounds(&self) -> &GuardBounds {
        &self.bounds
    }

    /// The charge current of a bank on its way out of a stop: `safety.recovery_charge_rate` ×
    /// the installed capacity of the packs online or held, and no more than their smallest own
    /// CCL × their number.
    pub fn recovery_current(&self, batteries: &[Battery]) -> f64 {
        recovery_current(batteries, self.bounds.recovery_charge_rate_c)
    }

    /// The cell latches (high cell, low cell), to be saved across a restart.
    pub fn latches(&self) -> (bool, bool) {
        (self.high_cell, self.low_cell)
    }

    /// Sets the cell latches saved by an earlier run.
    pub fn set_latches(&mut self, high_cell: bool, low_cell: bool) {
        self.high_cell = high_cell;
        self.low_cell = low_cell;
    }

    /// The packs' measured shares: memory that carries from tick to tick, never saved.
    pub fn shares(&self) -> Shares {
        Shares {
            per_battery: (self.shares.iter())
                .map(|s| Some(*s).filter(|s| s.is_finite()))
                .collect(),
            online: self.share_online.clone(),
            direction: self.share_direction,
        }
    }

    /// Takes back shares [`Guard::shares`] gave, as a replay starting mid-run does. Shares
    /// that do not fit together (one list longer than the other, a direction other than 1, −1
    /// or 0) are measured anew, as after a change of the batteries online; a share that is not
    /// one (negative) counts as not measured.
    pub fn resume_shares(&mut self, shares: &Shares) {
        self.shares.clear();
        self.share_online.clear();
        self.share_direction = 0.0;
        let fits = shares.per_battery.len() == shares.online.len()
            && [1.0, -1.0, 0.0].contains(&shares.direction);
        if !fits {
            return;
        }
        self.shares.extend(
            (shares.per_battery.iter())
                .map(|s| s.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(f64::NAN)),
        );
        self.share_online.extend_from_slice(&shares.online);
        self.share_direction = shares.direction;
    }

    /// Applies the host's rules to `limits` (the envelope's), for the bank `batteries` at
    /// `voltage_v`, `dt_s` after the last tick; `cells` is the configured cell count per pack
    /// (0: unknown), used where a pack publishes none.
    pub fn apply(
        &mut self,
        limits: Limits,
        batteries: &[Battery],
        voltage_v: f64,
        dt_s: f64,
        cells: u32,
    ) -> Guarded {
        let b = self.bounds;
        let e = Extremes::of(batteries);
        let mut out = limits;
        let mut acts = Acts::default();

        // Without any cell data the latches can be neither judged nor left: they wait, acting
        // on nothing, and are not shown as acting.
        if let Some(max_cell) = e.max_cell_v {
            if max_cell >= b.max_cell_voltage_v {
                self.high_cell = true;
            } else if max_cell < b.max_cell_voltage_v - b.max_cell_hysteresis_v {
                self.high_cell = false;
            }
            acts.high_cell = self.high_cell;
            if self.high_cell {
                // Packs in parallel sit at slightly different voltages: the chargers must push
                // no pack further, so the lowest of each pack's voltage less its own cells'
                // overshoot.
                if let Some(cvl) = high_cell_cvl(batteries, b.max_cell_voltage_v, voltage_v) {
                    out.cvl_v = out.cvl_v.min(cvl);
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
            acts.low_cell = self.low_cell;
            if self.low_cell {
                out.dcl_a = 0.0;
            }
        }
        acts.mismatch_high_cells = e
            .max_cell_v
            .is_some_and(|v| v >= b.max_cell_voltage_v + MISMATCH_MARGIN_V);
        acts.mismatch_bms_cvl = bms_cvl_outside(batteries, &b, cells);
        acts.mismatch = acts.mismatch_high_cells || acts.mismatch_bms_cvl;
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
        if b.bms_limits_n_minus_one {
            let (charge, discharge) = self.n_minus_one_caps(batteries);
            if let Some(cap) = charge.filter(|&c| c < out.ccl_a) {
                out.ccl_a = cap.max(0.0);
                acts.n_minus_one_capped = true;
            }
            if let Some(cap) = discharge.filter(|&c| c < out.dcl_a) {
                out.dcl_a = cap.max(0.0);
                acts.n_minus_one_capped = true;
            }
        }
        // Last, so that it only ever lowers what every other rule allowed: a strategy's own
        // lower recovery current stands, and the packs' own CCL caps it even with
        // `bms_limits: ignore`.
        if acts.low_cell && out.ccl_a > 0.0 {
            let recovery = recovery_current(batteries, b.recovery_charge_rate_c);
            out.ccl_a = out.ccl_a.min(recovery);
            acts.recovering_a = Some(out.ccl_a);
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
                let even = 1.0 / f64::from(online);
                for (k, b) in batteries.iter().enumerate() {
                    // A held pack's current is its last one, not what it carries now: its
                    // share counts as at least an even one, so an old small current never
                    // lifts its limit (and a share of 0 never drops it).
                    let share = match b.state {
                        BatteryState::Stale => self.share(k).max(even),
                        _ => self.share(k),
                    };
                    if b.state == BatteryState::Lost || share <= 0.0 {
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

    /// The share the cap counts for battery `k` (0 when not measured).
    fn share(&self, k: usize) -> f64 {
        self.shares
            .get(k)
            .copied()
            .filter(|s| s.is_finite())
            .unwrap_or(0.0)
    }

    /// The caps of `bms_limits_n_minus_one`, (charge, discharge): the bank current at which,
    /// with any one pack online opening its relay, the first of the others reaches its own
    /// limit. With measured shares (current at least `share_min_current`), the others share
    /// the current in proportion to theirs; otherwise evenly. `None`: no cap (fewer than two
    /// packs online, or no pack limit).
    fn n_minus_one_caps(&self, batteries: &[Battery]) -> (Option<f64>, Option<f64>) {
        let charge = self.n_minus_one_cap(batteries, |b| b.reading.max_charge_current_a, 1.0);
        let discharge =
            self.n_minus_one_cap(batteries, |b| b.reading.max_discharge_current_a, -1.0);
        (charge, discharge)
    }

    fn n_minus_one_cap(
        &self,
        batteries: &[Battery],
        limit: impl Fn(&Battery) -> Option<f64>,
        direction: f64,
    ) -> Option<f64> {
        // Held packs count with their last reading, as in the other caps.
        let online = |k: &usize| batteries[*k].state != BatteryState::Lost;
        let count = (0..batteries.len()).filter(online).count();
        if count < 2 {
            return None;
        }
        let limit_of = |k: usize| limit(&batteries[k]).filter(|l| l.is_finite() && *l >= 0.0);
        let measured = self.share_direction == direction
            && (0..batteries.len())
                .filter(online)
                .any(|k| self.share(k) > 0.0);
        let total_share: f64 = (0..batteries.len())
            .filter(online)
            .map(|k| self.share(k))
            .sum();
        let mut cap = f64::INFINITY;
        for gone in (0..batteries.len()).filter(online) {
            let rest_share = total_share - self.share(gone);
            for k in (0..batteries.len()).filter(online).filter(|&k| k != gone) {
                let Some(l) = limit_of(k) else { continue };
                // The part of the bank current pack `k` takes once `gone` is open.
                let part = if measured && rest_share > 0.0 {
                    self.share(k) / rest_share
                } else {
                    1.0 / (count - 1) as f64
                };
                if part > 0.0 {
                    cap = cap.min(l / part);
                }
            }
        }
        cap.is_finite().then_some(cap)
    }

    /// Each pack's share of the bank current, a fall smoothed over a few seconds; only measured
    /// while the bank current is large enough to tell shares apart, and measured again from scratch
    /// when the bank current changes direction (charge and discharge split differently).
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
        if bank_current.is_nan() || bank_current.abs() < self.bounds.share_min_current_a {
            return;
        }
        let direction = bank_current.signum();
        if direction != self.share_direction {
            self.shares.iter_mut().for_each(|s| *s = f64::NAN);
            self.share_direction = direction;
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
            // A rising share takes effect at once (a pack taking more reaches its limit
            // sooner); only a falling one is smoothed, so the cap does not jump up and down.
            *share = if share.is_finite() && now < *share {
                *share + alpha * (now - *share)
            } else {
                now
            };
        }
    }
}

/// The CVL of the high-cell stop: the lowest over the packs online or held of the pack's
/// voltage less its cells' excess over `bound_v`; the bank's `voltage_v` when no pack gives
/// a voltage. `None` when nothing is known.
fn high_cell_cvl(batteries: &[Battery], bound_v: f64, voltage_v: f64) -> Option<f64> {
    let lowest = batteries
        .iter()
        .filter(|b| b.state != BatteryState::Lost)
        .filter_map(|b| {
            let r = &b.reading;
            let v = r.voltage_v.filter(|v| v.is_finite() && *v > 0.0)?;
            let excess = r
                .max_cell_voltage_v
                .filter(|c| c.is_finite())
                .map_or(0.0, |c| (c - bound_v).max(0.0));
            Some(v - excess)
        })
        .fold(f64::INFINITY, f64::min);
    if lowest.is_finite() && lowest > 0.0 {
        return Some(lowest);
    }
    (voltage_v.is_finite() && voltage_v > 0.0).then_some(voltage_v)
}

/// Whether a pack online or held asks a charge voltage per cell outside the safety window by
/// [`MISMATCH_MARGIN_V`]: its BMS is set up for another chemistry than the config (an LTO
/// BMS asks about 2.5 V per cell, an LFP one about 3.45 V). A CVL of 0 or less says nothing.
fn bms_cvl_outside(batteries: &[Battery], bounds: &GuardBounds, cells: u32) -> bool {
    batteries
        .iter()
        .filter(|b| b.state != BatteryState::Lost)
        .any(|b| {
            let r = &b.reading;
            let n = r
                .cells_per_battery
                .filter(|n| *n > 0)
                .map(|n| n as f64)
                .or_else(|| (cells > 0).then_some(f64::from(cells)));
            match (
                r.max_charge_voltage_v.filter(|v| v.is_finite() && *v > 0.0),
                n,
            ) {
                (Some(cvl), Some(n)) => {
                    let per_cell = cvl / n;
                    per_cell < bounds.min_cell_voltage_v - MISMATCH_MARGIN_V
                        || per_cell > bounds.max_cell_voltage_v + MISMATCH_MARGIN_V
                }
                _ => false,
            }
        })
}

/// The charge current of a discharged bank: `rate_c` × the installed capacity of the packs
/// online or held, and no more than the smallest own CCL of those packs × their number (a
/// pack without one caps nothing; a held pack counts with its last reading, as in every cap).
fn recovery_current(batteries: &[Battery], rate_c: f64) -> f64 {
    let active = || batteries.iter().filter(|b| b.state != BatteryState::Lost);
    let capacity_ah: f64 = active()
        .filter_map(|b| b.reading.installed_capacity_ah)
        .filter(|c| c.is_finite() && *c > 0.0)
        .sum();
    let by_rate = (rate_c * capacity_ah).max(0.0);
    let smallest = active()
        .filter_map(|b| b.reading.max_charge_current_a)
        .filter(|l| l.is_finite() && *l >= 0.0)
        .fold(f64::INFINITY, f64::min);
    if smallest.is_finite() {
        by_rate.min(smallest * active().count() as f64)
    } else {
        by_rate
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
        recovery_charge_rate_c: 0.05,
        bms_limits_n_minus_one: false,
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
                installed_capacity_ah: Some(100.0),
                max_charge_current_a: ccl,
                max_discharge_current_a: ccl,
                ..Default::default()
            },
        }
    }

    fn with_voltage(mut b: Battery, v: f64) -> Battery {
        b.reading.voltage_v = Some(v);
        b
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
        let out = g.apply(WIDE, &bank, 53.0, 1.0, 0);
        assert!((out.limits.ccl_a - 50.0 / 0.7).abs() < 1e-9, "{out:?}");
        let mut g = Guard::new(BOUNDS);
        let equal = [
            pack("A", 25.0, Some(50.0), 3.3, 20.0),
            pack("B", 25.0, Some(50.0), 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &equal, 53.0, 1.0, 0).limits.ccl_a, 100.0);
    }

    #[test]
    fn a_held_packs_old_current_never_lifts_its_own_limit() {
        // A at -195 A allowing 100 A; B held (its driver restarting) with its last -5 A and
        // 20 A of its own. Its share counts as at least half: 20 / 0.5 = 40 A, not 20 / 0.025.
        let mut g = Guard::new(BOUNDS);
        let mut held = pack("B", -5.0, Some(20.0), 3.3, 20.0);
        held.state = BatteryState::Stale;
        let bank = [pack("A", -195.0, Some(100.0), 3.3, 20.0), held];
        let out = g.apply(WIDE, &bank, 53.0, 1.0, 0);
        assert!((out.limits.dcl_a - 40.0).abs() < 1e-9, "{out:?}");
        // Charging now, its last current still a discharge: a share of 0 does not drop it.
        let mut g = Guard::new(BOUNDS);
        let mut held = pack("B", -5.0, Some(20.0), 3.3, 20.0);
        held.state = BatteryState::Stale;
        let bank = [pack("A", 100.0, Some(100.0), 3.3, 20.0), held];
        let out = g.apply(WIDE, &bank, 53.0, 1.0, 0);
        assert!((out.limits.ccl_a - 40.0).abs() < 1e-9, "{out:?}");
        // A held pack measured above an even share keeps its measured one.
        let mut g = Guard::new(BOUNDS);
        let mut held = pack("B", -150.0, Some(100.0), 3.3, 20.0);
        held.state = BatteryState::Stale;
        let bank = [pack("A", -50.0, Some(100.0), 3.3, 20.0), held];
        let out = g.apply(WIDE, &bank, 53.0, 1.0, 0);
        assert!((out.limits.dcl_a - 100.0 / 0.75).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn a_pack_with_one_temperature_edge_counts_at_both() {
        // B publishes only its highest cell temperature, -10 °C: every cell is that cold or
        // colder, too cold to charge.
        let mut g = Guard::new(BOUNDS);
        let mut b = pack("B", 0.0, None, 3.3, 5.0);
        b.reading.temperature_c = None;
        b.reading.max_cell_temperature_c = Some(-10.0);
        let a = pack("A", 0.0, None, 3.3, 5.0);
        let out = g.apply(WIDE, &[a.clone(), b], 53.0, 1.0, 0);
        assert_eq!(out.limits.ccl_a, 0.0, "{out:?}");
        // And one publishing only its lowest, 60 °C, too hot to discharge.
        let mut g = Guard::new(BOUNDS);
        let mut b = pack("B", 0.0, None, 3.3, 5.0);
        b.reading.temperature_c = None;
        b.reading.min_cell_temperature_c = Some(60.0);
        let out = g.apply(WIDE, &[a, b], 53.0, 1.0, 0);
        assert_eq!(out.limits.dcl_a, 0.0, "{out:?}");
    }

    #[test]
    fn low_current_uses_min_times_count_and_no_limit_does_not_cap() {
        let mut g = Guard::new(BOUNDS);
        let bank = [
            pack("A", 1.0, Some(10.0), 3.3, 20.0),
            pack("B", 1.0, Some(50.0), 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &bank, 53.0, 1.0, 0).limits.ccl_a, 20.0);
        let bank = [
            pack("A", 1.0, None, 3.3, 20.0),
            pack("B", 1.0, None, 3.3, 20.0),
        ];
        assert_eq!(g.apply(WIDE, &bank, 53.0, 1.0, 0).limits.ccl_a, 200.0);
    }

    #[test]
    fn a_high_cell_latches_until_below_the_hysteresis() {
        let mut g = Guard::new(BOUNDS);
        let at = |v| [with_voltage(pack("A", 0.0, None, v, 20.0), 55.0)];
        let out = g.apply(WIDE, &at(3.62), 55.0, 1.0, 0);
        assert_eq!(out.limits.ccl_a, 0.0);
        assert!((out.limits.cvl_v - (55.0 - 0.02)).abs() < 1e-9, "{out:?}");
        assert!(out.acts.high_cell);
        assert_eq!(g.apply(WIDE, &at(3.56), 57.0, 1.0, 0).limits.ccl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.54), 56.6, 1.0, 0).limits.ccl_a, 200.0);
    }

    #[test]
    fn latches_without_any_cell_data_act_on_nothing_and_are_not_shown() {
        // Saved by an earlier run; the packs online now publish no cells (CAN packs).
        let mut g = Guard::new(BOUNDS);
        g.set_latches(true, true);
        let mut no_cells = pack("A", 0.0, Some(50.0), 3.3, 20.0);
        no_cells.reading.max_cell_voltage_v = None;
        no_cells.reading.min_cell_voltage_v = None;
        let out = g.apply(WIDE, &[no_cells], 53.0, 1.0, 16);
        assert!(!out.acts.high_cell && !out.acts.low_cell, "{out:?}");
        assert_eq!(out.acts.recovering_a, None);
        assert_eq!(out.acts.alarms()[1], ("LowCellVoltage", 0));
        assert_eq!(out.limits.cvl_v, WIDE.cvl_v);
        // They wait: cells back, judged again.
        assert_eq!(g.latches(), (true, true));
    }

    #[test]
    fn a_low_cell_latches_until_above_the_hysteresis() {
        let mut g = Guard::new(BOUNDS);
        let at = |v| [pack("A", 0.0, None, v, 20.0)];
        assert_eq!(g.apply(WIDE, &at(2.90), 46.0, 1.0, 0).limits.dcl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.05), 48.0, 1.0, 0).limits.dcl_a, 0.0);
        assert_eq!(g.apply(WIDE, &at(3.11), 49.0, 1.0, 0).limits.dcl_a, 200.0);
    }

    #[test]
    fn temperature_windows_stop_and_derate() {
        let mut g = Guard::new(BOUNDS);
        let at = |t| [pack("A", 0.0, None, 3.3, t)];
        let cold = g.apply(WIDE, &at(-5.0), 53.0, 1.0, 0);
        assert_eq!((cold.limits.ccl_a, cold.limits.dcl_a), (0.0, 200.0));
        assert_eq!(cold.acts.charge_thermal, Thermal::TooCold);
        let cool = g.apply(WIDE, &at(2.5), 53.0, 1.0, 0);
        assert_eq!(cool.limits.ccl_a, 100.0);
        assert_eq!(cool.acts.charge_thermal, Thermal::DeratedLow);
        let hot = g.apply(WIDE, &at(56.0), 53.0, 1.0, 0);
        assert_eq!((hot.limits.ccl_a, hot.limits.dcl_a), (0.0, 0.0));
        let none = [Battery {
            reading: BatteryReading {
                temperature_c: None,
                ..at(20.0)[0].reading.clone()
            },
            ..at(20.0)[0].clone()
        }];
        assert!(g.apply(WIDE, &none, 53.0, 1.0, 0).acts.no_temperature);
    }

    #[test]
    fn cells_far_outside_the_window_are_a_mismatch() {
        let lto = GuardBounds {
            max_cell_voltage_v: 2.6,
            min_cell_voltage_v: 1.8,
            ..BOUNDS
        };
        let mut g = Guard::new(lto);
        let out = g.apply(WIDE, &[pack("A", 0.0, None, 3.3, 20.0)], 53.0, 1.0, 0);
        assert!(out.acts.mismatch);
        assert_eq!(out.limits.ccl_a, 0.0);
        assert!(out.acts.describe().contains("another chemistry"));
    }

    /// LFP bounds on a bank of 16-cell packs whose BMSs ask `cvl_per_cell` each.
    fn asking(mut b: Battery, cvl_per_cell: f64) -> Battery {
        b.reading.cells_per_battery = Some(16);
        b.reading.max_charge_voltage_v = Some(16.0 * cvl_per_cell);
        b
    }

    #[test]
    fn a_deeply_discharged_bank_is_recharged_at_the_recovery_current() {
        let mut g = Guard::new(BOUNDS);
        let at = |v| {
            [
                asking(pack("A", 0.0, None, v, 20.0), 3.45),
                asking(pack("B", 0.0, None, v, 20.0), 3.45),
            ]
        };
        // 2.5 V at rest after days of self-drain: 0.4 V below the window.
        let out = g.apply(WIDE, &at(2.5), 40.0, 1.0, 16);
        // 0.05 C of 2 × 100 Ah.
        assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (10.0, 0.0));
        assert!(!out.acts.mismatch, "{out:?}");
        assert_eq!(out.acts.recovering_a, Some(10.0));
        let alarms = out.acts.alarms();
        assert_eq!(alarms[0], ("HighCellVoltage", 0));
        assert_eq!(alarms[1], ("LowCellVoltage", 2));
        assert!(out.acts.describe().contains("recovering a discharged bank"));
        // Still inside the hysteresis: still recovering.
        assert_eq!(g.apply(WIDE, &at(3.05), 48.0, 1.0, 16).limits.ccl_a, 10.0);
        let out = g.apply(WIDE, &at(3.11), 49.0, 1.0, 16);
        assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (200.0, 200.0));
        assert_eq!(out.acts.recovering_a, None);
    }

    #[test]
    fn recovery_only_lowers_and_the_packs_own_ccl_caps_it() {
        let mut g = Guard::new(BOUNDS);
        let low = [pack("A", 0.0, None, 2.6, 20.0)];
        let strategy_low = Limits { ccl_a: 2.0, ..WIDE };
        // A strategy's own lower recovery current stands.
        assert_eq!(g.apply(strategy_low, &low, 41.0, 1.0, 16).limits.ccl_a, 2.0);
        let mut g = Guard::new(GuardBounds {
            bms_limits: BmsLimits::Ignore,
            ..BOUNDS
        });
        let low = [pack("A", 0.0, Some(3.0), 2.6, 20.0)];
        assert_eq!(g.apply(WIDE, &low, 41.0, 1.0, 16).limits.ccl_a, 3.0);
    }

    #[test]
    fn a_bms_asking_another_chemistrys_voltage_is_a_mismatch_low_cells_alone_are_not() {
        // An LTO bank (cells 2.3 V, its BMS asking 2.5 V per cell) under an LFP config.
        let mut g = Guard::new(BOUNDS);
        let lto = [asking(pack("A", 0.0, None, 2.3, 20.0), 2.5)];
        let out = g.apply(WIDE, &lto, 36.8, 1.0, 16);
        assert!(out.acts.mismatch_bms_cvl && out.acts.mismatch, "{out:?}");
        assert_eq!((out.limits.ccl_a, out.limits.dcl_a), (0.0, 0.0));
        assert_eq!(out.acts.alarms()[0], ("HighCellVoltage", 0));
        assert!(out.acts.describe().contains("another chemistry"));
        // An LFP bank (its BMS asking 3.45 V per cell) under an LTO config, cells in range.
        let lto_bounds = GuardBounds {
            max_cell_voltage_v: 2.7,
            min_cell_voltage_v: 1.8,
            ..BOUNDS
        };
        let mut g = Guard::new(lto_bounds);
        let lfp = [asking(pack("A", 0.0, None, 2.5, 20.0), 3.45)];
        assert_eq!(g.apply(WIDE, &lfp, 40.0, 1.0, 16).limits.ccl_a, 0.0);
        // A BMS publishing CVL 0 says nothing of its chemistry; the pack's count is unknown
        // and so is the config's: nothing to compare either.
        let mut g = Guard::new(BOUNDS);
        let zero = [asking(pack("A", 0.0, None, 2.6, 20.0), 0.0)];
        assert!(!g.apply(WIDE, &zero, 41.0, 1.0, 16).acts.mismatch);
        let mut unknown = asking(pack("A", 0.0, None, 2.6, 20.0), 2.5);
        unknown.reading.cells_per_battery = None;
        assert!(
            !g.apply(WIDE, &[unknown.clone()], 41.0, 1.0, 0)
                .acts
                .mismatch
        );
        // The config's count stands in for the pack's.
        assert!(g.apply(WIDE, &[unknown], 41.0, 1.0, 16).acts.mismatch);
    }

    #[test]
    fn the_high_cell_stop_cvl_is_the_lowest_pack_voltage_less_its_own_excess() {
        let mut g = Guard::new(BOUNDS);
        let bank = [
            with_voltage(pack("A", 0.0, None, 3.62, 20.0), 57.30),
            with_voltage(pack("B", 0.0, None, 3.58, 20.0), 57.70),
        ];
        // The bank's mean is 57.50 V: less the highest excess, 57.48 V, above pack A.
        let high = Limits {
            cvl_v: 58.4,
            ..WIDE
        };
        let out = g.apply(high, &bank, 57.50, 1.0, 16);
        assert!((out.limits.cvl_v - 57.28).abs() < 1e-9, "{out:?}");
        assert_eq!(out.limits.ccl_a, 0.0);
    }

    #[test]
    fn a_rising_share_caps_at_once_and_shares_restart_on_a_change_of_direction() {
        let mut g = Guard::new(BOUNDS);
        // A is limited to 10 A; B to far more.
        let tick = |g: &mut Guard, a: f64, b: f64| {
            let bank = [
                pack("A", a, Some(10.0), 3.3, 20.0),
                pack("B", b, Some(1000.0), 3.3, 20.0),
            ];
            g.apply(WIDE, &bank, 53.0, 1.0, 16).limits.ccl_a
        };
        // A takes −2 A of a 100 A bank, then 30 % of it.
        tick(&mut g, -2.0, 102.0);
        let next = tick(&mut g, 30.0, 70.0);
        assert!((next - 10.0 / 0.3).abs() < 1e-9, "{next}");
        // Falling back, the cap follows the smoothed share, so it rises slowly.
        let after = tick(&mut g, 10.0, 90.0);
        assert!(after > next && after < 100.0, "{after}");
        // Discharging: A's charge share says nothing of its discharge share.
        let mut g = Guard::new(BOUNDS);
        let dcl = |g: &mut Guard, a: f64, b: f64| {
            let bank = [
                pack("A", a, Some(10.0), 3.3, 20.0),
                pack("B", b, Some(1000.0), 3.3, 20.0),
            ];
            g.apply(WIDE, &bank, 53.0, 1.0, 16).limits.dcl_a
        };
        dcl(&mut g, 90.0, 10.0);
        dcl(&mut g, 90.0, 10.0);
        assert_eq!(dcl(&mut g, -5.0, -95.0), 200.0);
        assert!((g.shares[0] - 0.05).abs() < 1e-9, "{:?}", g.shares);
    }

    #[test]
    fn shares_taken_back_cap_as_the_guard_that_measured_them_and_misfits_are_measured_anew() {
        let bank = |a: f64, b: f64| {
            [
                pack("A", a, Some(10.0), 3.3, 20.0),
                pack("B", b, Some(1000.0), 3.3, 20.0),
            ]
        };
        let mut g = Guard::new(BOUNDS);
        g.apply(WIDE, &bank(-2.0, 102.0), 53.0, 1.0, 16);
        g.apply(WIDE, &bank(30.0, 70.0), 53.0, 1.0, 16);
        let shares = g.shares();
        assert_eq!(shares.per_battery.len(), 2);
        let mut resumed = Guard::new(BOUNDS);
        resumed.resume_shares(&shares);
        assert_eq!(resumed.shares(), shares);
        // A falling share, smoothed from where it was: the same cap.
        let ccl = |g: &mut Guard| g.apply(WIDE, &bank(10.0, 90.0), 53.0, 1.0, 16).limits.ccl_a;
        assert_eq!(ccl(&mut resumed), ccl(&mut g));
        // One list longer than the other, or no direction: nothing taken back.
        for misfit in [
            Shares {
                online: vec![true],
                ..shares.clone()
            },
            Shares {
                direction: 0.5,
                ..shares.clone()
            },
        ] {
            let mut g = Guard::new(BOUNDS);
            g.resume_shares(&misfit);
            assert_eq!(g.shares(), Shares::default(), "{misfit:?}");
        }
    }

    #[test]
    fn n_minus_one_keeps_the_others_within_their_limits_when_one_pack_opens() {
        let bounds = GuardBounds {
            bms_limits_n_minus_one: true,
            ..BOUNDS
        };
        let bank = |i: f64| {
            [
                pack("A", i, Some(50.0), 3.3, 20.0),
                pack("B", i, Some(50.0), 3.3, 20.0),
                pack("C", i, Some(50.0), 3.3, 20.0),
            ]
        };
        // Equal shares: one pack open, the two others take half each.
        let out = Guard::new(bounds).apply(WIDE, &bank(40.0), 53.0, 1.0, 16);
        assert!((out.limits.ccl_a - 100.0).abs() < 1e-9, "{out:?}");
        assert!(out.acts.n_minus_one_capped);
        // Off by default: the share cap alone allows 150 A.
        let out = Guard::new(BOUNDS).apply(WIDE, &bank(40.0), 53.0, 1.0, 16);
        assert!((out.limits.ccl_a - 150.0).abs() < 1e-9, "{out:?}");
        // Unequal shares: with C (30 %) open, B (50 %) takes 5/7 of the bank current.
        let unequal = [
            pack("A", 20.0, Some(50.0), 3.3, 20.0),
            pack("B", 50.0, Some(50.0), 3.3, 20.0),
            pack("C", 30.0, Some(50.0), 3.3, 20.0),
        ];
        let out = Guard::new(bounds).apply(WIDE, &unequal, 53.0, 1.0, 16);
        assert!((out.limits.ccl_a - 70.0).abs() < 1e-9, "{out:?}");
        // A single pack: nothing left to protect.
        let one = [pack("A", 20.0, Some(50.0), 3.3, 20.0)];
        assert!(
            !Guard::new(bounds)
                .apply(WIDE, &one, 53.0, 1.0, 16)
                .acts
                .n_minus_one_capped
        );
    }

    #[test]
    fn no_temperature_is_said_in_the_mode_text() {
        let acts = Acts {
            no_temperature: true,
            ..Acts::default()
        };
        assert!(acts.describe().contains("no pack reports a temperature"));
    }

    #[test]
    fn a_pack_without_cells_or_temperatures_leaves_those_bounds_to_its_bms() {
        let mut can = pack("A", 0.0, None, 3.3, 20.0);
        assert!(BmsOnly::of(&can.reading).is_empty());
        can.reading.max_cell_voltage_v = None;
        can.reading.min_cell_voltage_v = Some(f64::NAN);
        can.reading.temperature_c = None;
        let only = BmsOnly::of(&can.reading);
        assert_eq!(
            only.names().collect::<Vec<_>>(),
            ["max_cell_voltage", "min_cell_voltage", "temperature"]
        );
        can.reading.min_cell_temperature_c = Some(10.0);
        assert!(!BmsOnly::of(&can.reading).temperature);
    }
}
