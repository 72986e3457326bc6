//! The Coulomb counter of docs/counter.md §1: the bank's charge in Ah, integrated from the current.
//!
//! Math only. The state module persists [`CoulombCounter::charge_ah`]; the tick decides when,
//! by asking [`CoulombCounter::wants_save`].

/// The counter and the last value written to disk.
#[derive(Clone, Debug, PartialEq)]
pub struct CoulombCounter {
    charge_ah: f64,
    saved_ah: f64,
    efficiency: f64,
    save_precision: f64,
}

/// What the counter publishes (docs/counter.md §5).
#[derive(Clone, Debug, PartialEq)]
pub struct CounterOutputs {
    /// `/Soc`: 100 · charge / capacity.
    pub soc_pct: f64,
    /// `/Capacity`: the charge.
    pub capacity_ah: f64,
    /// `/ConsumedAmphours`: charge − capacity (≤ 0).
    pub consumed_ah: f64,
    /// `/TimeToGo` in s while discharging and the system is not in low-SoC state.
    pub time_to_go_s: Option<f64>,
}

impl CoulombCounter {
    /// A counter at `charge_ah`, which is taken as already saved.
    pub fn new(charge_ah: f64, efficiency: f64, save_precision: f64) -> Self {
        Self {
            charge_ah,
            saved_ah: charge_ah,
            efficiency,
            save_precision,
        }
    }

    /// The charge in Ah.
    pub fn charge_ah(&self) -> f64 {
        self.charge_ah
    }

    /// Integrates `current_a` over `dt_s` seconds: charging counts × efficiency; the result
    /// is kept within [0, capacity].
    pub fn step(&mut self, current_a: f64, dt_s: f64, capacity_ah: f64) {
        if !(current_a.is_finite() && dt_s.is_finite() && dt_s >= 0.0) {
            return;
        }
        // Same operation order as the original so the numbers match to the last bit.
        if current_a > 0.0 {
            self.charge_ah += current_a * (dt_s / 3600.0) * self.efficiency;
        } else {
            self.charge_ah += current_a * (dt_s / 3600.0);
        }
        self.clamp(capacity_ah);
    }

    /// Keeps the state of charge when the bank's capacity changes (a battery lost or added):
    /// the charge, and what counts as saved, are multiplied by `factor`.
    pub fn rescale(&mut self, factor: f64) {
        if factor.is_finite() && factor > 0.0 {
            self.charge_ah *= factor;
            self.saved_ah *= factor;
        }
    }

    /// Keeps the charge within [0, capacity], e.g. after the capacity shrank.
    pub fn clamp(&mut self, capacity_ah: f64) {
        self.charge_ah = self.charge_ah.max(0.0).min(capacity_ah.max(0.0));
    }

    /// The bank is full: charge = capacity.
    pub fn reset_full(&mut self, capacity_ah: f64) {
        self.charge_ah = capacity_ah.max(0.0);
    }

    /// The bank is empty: charge = 0.
    pub fn reset_empty(&mut self) {
        self.charge_ah = 0.0;
    }

    /// True when the charge moved by at least `save_precision` × capacity since the last save.
    pub fn wants_save(&self, capacity_ah: f64) -> bool {
        (self.charge_ah - self.saved_ah).abs() >= self.save_precision * capacity_ah
    }

    /// Records that the current charge was written to disk.
    pub fn mark_saved(&mut self) {
        self.saved_ah = self.charge_ah;
    }

    /// The published values; `low_soc` is `/SystemState/LowSoc` of the system service.
    pub fn outputs(
        &self,
        capacity_ah: f64,
        current_a: f64,
        low_soc: Option<i64>,
    ) -> CounterOutputs {
        let time_to_go_s =
            (current_a < 0.0 && low_soc == Some(0)).then(|| -3600.0 * self.charge_ah / current_a);
        CounterOutputs {
            soc_pct: if capacity_ah > 0.0 {
                100.0 * self.charge_ah / capacity_ah
            } else {
                0.0
            },
            capacity_ah: self.charge_ah,
            consumed_ah: self.charge_ah - capacity_ah,
            time_to_go_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_at_fifty_amps_matches_the_reference() {
        let mut c = CoulombCounter::new(0.0, 0.985, 0.0025);
        c.step(50.0, 1.0, 560.0);
        assert_eq!(c.charge_ah(), 0.013680555555555555);
    }

    #[test]
    fn efficiency_only_while_charging() {
        let mut c = CoulombCounter::new(100.0, 0.5, 0.0025);
        c.step(-36.0, 100.0, 560.0);
        assert_eq!(c.charge_ah(), 99.0);
        c.step(36.0, 100.0, 560.0);
        assert_eq!(c.charge_ah(), 99.5);
    }

    #[test]
    fn clamped_to_capacity_and_zero() {
        let mut c = CoulombCounter::new(279.9, 1.0, 0.0025);
        c.step(3600.0, 1.0, 280.0);
        assert_eq!(c.charge_ah(), 280.0);
        c.step(-3600.0 * 300.0, 1.0, 280.0);
        assert_eq!(c.charge_ah(), 0.0);
        c.step(f64::NAN, 1.0, 280.0);
        assert_eq!(c.charge_ah(), 0.0);
    }

    #[test]
    fn saves_after_a_quarter_percent_of_capacity() {
        let mut c = CoulombCounter::new(280.0, 1.0, 0.0025);
        // 560 Ah bank: 1.4 Ah
        c.step(-1.39 * 3600.0, 1.0, 560.0);
        assert!(!c.wants_save(560.0));
        c.step(-0.02 * 3600.0, 1.0, 560.0);
        assert!(c.wants_save(560.0));
        c.mark_saved();
        assert!(!c.wants_save(560.0));
    }

    #[test]
    fn time_to_go_matches_the_reference_and_obeys_low_soc() {
        let c = CoulombCounter::new(280.0, 0.985, 0.0025);
        let out = c.outputs(560.0, -40.0, Some(0));
        assert_eq!(out.time_to_go_s, Some(25200.0));
        assert_eq!(out.soc_pct, 50.0);
        assert_eq!(out.consumed_ah, -280.0);
        assert_eq!(out.capacity_ah, 280.0);
        assert_eq!(c.outputs(560.0, -40.0, Some(1)).time_to_go_s, None);
        assert_eq!(c.outputs(560.0, -40.0, None).time_to_go_s, None);
        assert_eq!(c.outputs(560.0, 5.0, Some(0)).time_to_go_s, None);
    }

    #[test]
    fn resets() {
        let mut c = CoulombCounter::new(100.0, 0.985, 0.0025);
        c.reset_full(560.0);
        assert_eq!(c.charge_ah(), 560.0);
        c.reset_empty();
        assert_eq!(c.charge_ah(), 0.0);
    }
}
