//! The limits of a bank that is not whole: every pack held (the last limits stand), packs lost
//! (`on_lost`), fewer packs online than expected, and the causes that stop charge or discharge.

use super::*;

impl Engine {
    /// No battery online, some held with their last reading (drivers restarting, a serial
    /// link re-opening): a transient, which must not stop the house. The limits of the last
    /// tick with a battery online stand for the hold, lowered only by what protects something
    /// (a BMS blocking, a strategy fault, `plugin_failures` faults in a row, `on_lost`); the
    /// guard then applies its cell and temperature rules to the held readings as always.
    /// Before any tick with a battery online there is nothing good to keep: scaled to 0.
    pub(super) fn hold_last(
        &self,
        enforced: &Enforced,
        view: &BankView,
        bank: &BankSnapshot,
        expected: u32,
    ) -> Limits {
        let Some(last) = self.last_online else {
            let (scaled, blocks) = self.degrade(enforced.limits, bank, expected);
            return blocks.zero(scaled);
        };
        let mut limits = Limits {
            cvl_v: last.cvl_v.min(enforced.limits.cvl_v),
            ..last
        };
        if enforced.fault.is_some() || view.blocks_charge() {
            limits.ccl_a = 0.0;
        }
        if view.blocks_discharge() || self.failures_stop.holds() {
            limits.dcl_a = 0.0;
        }
        self.on_lost_blocks(bank).zero(limits)
    }

    /// What `batteries.on_lost` stops: nothing unless the bank is degraded.
    fn on_lost_blocks(&self, bank: &BankSnapshot) -> OnLostBlocks {
        let (charge, discharge) = match self.settings.on_lost {
            _ if !bank.degraded() => (false, false),
            OnLost::BlockCharge => (true, false),
            OnLost::BlockAll => (true, true),
            OnLost::Continue => (false, false),
        };
        OnLostBlocks { charge, discharge }
    }

    /// The mode text's words for a stop or a cap that the strategy's mode and the guard's own
    /// words do not name.
    pub(super) fn stop_causes(
        &self,
        view: &BankView,
        bank: &BankSnapshot,
        expected: u32,
        acts: &Acts,
    ) -> String {
        let mut parts = Vec::new();
        match (acts.bms_capped_charge, acts.bms_capped_discharge) {
            (true, true) => parts.push("charge and discharge capped by the packs' own limits"),
            (true, false) => parts.push("charge capped by the packs' own limits"),
            (false, true) => parts.push("discharge capped by the packs' own limits"),
            (false, false) => {}
        }
        if self.feed_in.near_lowered_ccl && self.feed_in.disabled_by_us {
            parts.push("feed-in off: charge current at the capped CCL");
        }
        let mut parts: Vec<String> = parts.into_iter().map(str::to_string).collect();
        if bank.online == 0 {
            parts.push(format!(
                "no battery online, {} held: last limits kept",
                bank.stale
            ));
        } else if bank.stale > 0 && expected > 0 {
            parts.push(format!(
                "{} of {} batteries held: limits scaled to {} online",
                bank.stale,
                bank.total(),
                bank.online
            ));
        }
        if view.blocks_charge() {
            parts.push("a BMS blocks charging".to_string());
        }
        if view.blocks_discharge() {
            parts.push("a BMS blocks discharging".to_string());
        }
        if self.failures_stop.holds() && self.strategy.is_ok() {
            parts.push(format!(
                "{} strategy faults in a row: discharging stopped (safety.plugin_failures)",
                self.envelope.faults_in_a_row()
            ));
        }
        parts.join("; ")
    }

    /// docs/battery-states.md §8: limits while batteries are lost; while one is held (stale), both
    /// limits are scaled to the batteries online, as old data must not get full current.
    ///
    /// What `on_lost` blocks comes back scaled, with the blocks: the caller applies them after
    /// the guard, which may still recharge a bank that cannot discharge at the recovery
    /// current (the way out, [`OnLostBlocks`]).
    pub(super) fn degrade(
        &self,
        limits: Limits,
        bank: &BankSnapshot,
        expected: u32,
    ) -> (Limits, OnLostBlocks) {
        let share = if expected > 0 {
            f64::from(bank.online.min(expected)) / f64::from(expected)
        } else {
            0.0
        };
        let scaled = Limits {
            ccl_a: limits.ccl_a * share,
            dcl_a: limits.dcl_a * share,
            ..limits
        };
        let blocks = self.on_lost_blocks(bank);
        if !bank.degraded() && bank.stale == 0 {
            return (limits, blocks);
        }
        (scaled, blocks)
    }

    /// Applies what `on_lost` blocks to the guarded limits, with one way out: a bank that
    /// cannot discharge for a cause of its own (a low cell, the strategy's own low-cell latch
    /// or empty cut-off, a BMS) is still recharged at the recovery current. With a pack lost
    /// (one asleep after its own undervoltage cut-off, say) such a bank would otherwise never
    /// charge or discharge again: the host's low-cell stop may end below the strategy's.
    pub(super) fn apply_on_lost(
        &self,
        guarded: &mut Guarded,
        blocks: OnLostBlocks,
        batteries: &[Battery],
    ) {
        if blocks.charge && guarded.acts.recovering_a.is_none() {
            let cannot_discharge = guarded.limits.dcl_a <= 0.0;
            if cannot_discharge && guarded.limits.ccl_a > 0.0 {
                let a = self
                    .guard
                    .recovery_current(batteries)
                    .min(guarded.limits.ccl_a);
                guarded.limits.ccl_a = a;
                guarded.acts.recovering_stuck_a = Some(a);
            } else {
                // Nothing else caps a charge that is stopped.
                guarded.limits.ccl_a = 0.0;
                guarded.acts.bms_capped_charge = false;
            }
        }
        if blocks.discharge {
            guarded.limits.dcl_a = 0.0;
            guarded.acts.bms_capped_discharge = false;
        }
    }
}

/// What `batteries.on_lost` stops while the bank is degraded.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct OnLostBlocks {
    pub charge: bool,
    pub discharge: bool,
}

impl OnLostBlocks {
    /// The limits with what is stopped at 0, with nothing online to scale to or to recharge.
    fn zero(self, limits: Limits) -> Limits {
        Limits {
            ccl_a: if self.charge { 0.0 } else { limits.ccl_a },
            dcl_a: if self.discharge { 0.0 } else { limits.dcl_a },
            ..limits
        }
    }
}
