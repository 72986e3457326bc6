//! The views a strategy sees: the bank and each battery as the plugin interface lends them.

use super::*;

impl Engine {
    pub(super) fn bank_view(
        &self,
        batteries: &[Battery],
        bank: &BankSnapshot,
        inputs: &TickInputs,
        current_a: Option<f64>,
        power_w: Option<f64>,
    ) -> BankView {
        let merged = &bank.merged;
        let online = bank.online;
        let capacity = merged.installed_capacity_ah;
        let (soc_pct, charge_ah) = match (&self.counter, merged.soc_pct) {
            (Some(counter), _) if capacity > 0.0 && self.counter_capacity.is_some() => (
                Some(100.0 * counter.charge_ah() / capacity),
                Some(counter.charge_ah()),
            ),
            (_, Some(soc)) => (Some(soc), Some(soc / 100.0 * capacity)),
            _ => (None, None),
        };
        let extreme = |e: &Option<crate::bank::Extreme>| {
            let (value, id) = e
                .as_ref()
                .map(|e| (e.value, RString::from(e.id.as_str())))
                .unzip();
            (ROption::from(value), ROption::from(id))
        };
        let (max_cell, max_id) = extreme(&merged.max_cell_voltage);
        let (min_cell, min_id) = extreme(&merged.min_cell_voltage);
        BankView {
            batteries: batteries.iter().map(battery_view).collect(),
            cells_per_battery: inputs.cells,
            batteries_expected: inputs.expected,
            batteries_online: online,
            voltage_v: merged.voltage_v.unwrap_or(f64::NAN),
            current_a: current_a.unwrap_or(f64::NAN),
            power_w: power_w.unwrap_or(f64::NAN),
            installed_capacity_ah: capacity,
            soc_pct: soc_pct.into(),
            charge_ah: charge_ah.into(),
            max_cell_voltage_v: max_cell,
            max_cell_id: max_id,
            min_cell_voltage_v: min_cell,
            min_cell_id: min_id,
            modules_blocking_charge: count(merged.modules_blocking_charge),
            modules_blocking_discharge: count(merged.modules_blocking_discharge),
            date: inputs.date,
            dt_s: inputs.dt_s,
        }
    }
}

pub(super) fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

pub(super) fn battery_view(battery: &Battery) -> BatteryView {
    let r = &battery.reading;
    let nan = f64::NAN;
    BatteryView {
        name: battery.name.as_str().into(),
        service: battery.service.as_str().into(),
        state: BatteryState_NE::new(battery.state),
        voltage_v: r.voltage_v.unwrap_or(nan),
        current_a: r.current_a.unwrap_or(nan),
        power_w: r.power_or_product().unwrap_or(nan),
        voltages_sum_v: r.voltages_sum_or_cells().into(),
        installed_capacity_ah: r.installed_capacity_ah.into(),
        soc_pct: r.soc_pct.into(),
        max_cell_voltage_v: r.max_cell_voltage_v.into(),
        min_cell_voltage_v: r.min_cell_voltage_v.into(),
        cell_voltages_v: r
            .cell_voltages_v
            .iter()
            .map(|&c| ROption::from(c))
            .collect::<RVec<_>>(),
        modules_blocking_charge: count(r.modules_blocking_charge.unwrap_or(0)),
        modules_blocking_discharge: count(r.modules_blocking_discharge.unwrap_or(0)),
        allow_to_charge: r.allow_to_charge.and_then(|v| i32::try_from(v).ok()).into(),
        allow_to_discharge: r
            .allow_to_discharge
            .and_then(|v| i32::try_from(v).ok())
            .into(),
        max_charge_voltage_v: r.max_charge_voltage_v.into(),
        max_charge_current_a: r.max_charge_current_a.into(),
        max_discharge_current_a: r.max_discharge_current_a.into(),
        charge_mode: r.charge_mode.as_deref().map(Into::into).into(),
    }
}
