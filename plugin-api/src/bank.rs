//! What a strategy sees each tick: the bank and every battery in it.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

use crate::LocalDate;

/// Where a battery stands in the host's eyes this tick.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatteryState {
    /// A complete, fresh reading from a connected BMS.
    Online,
    /// Not online for less than `batteries.hold_for`: the values are its last complete reading.
    Stale,
    /// Gone for longer than `batteries.hold_for`: its values are the last ones seen and are not
    /// part of the merged bank values.
    Lost,
}

/// One battery (one BMS service on D-Bus) as read this tick.
///
/// Voltages are in volts, currents in amperes (positive = charging), capacities in ampere-hours.
/// Values a BMS may leave invalid are [`ROption`]s.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct BatteryView {
    /// Display name: `/CustomName`, else `/Serial`, else `Battery<k>`, made unique in the bank.
    pub name: RString,
    /// D-Bus service name, e.g. `com.victronenergy.battery.ttyUSB0`.
    pub service: RString,
    /// Online, stale or lost.
    pub state: BatteryState,
    /// `/Dc/0/Voltage`.
    pub voltage_v: f64,
    /// `/Dc/0/Current`.
    pub current_a: f64,
    /// `/Dc/0/Power`.
    pub power_w: f64,
    /// `/Voltages/Sum`, or the sum of the cells when the BMS does not publish it.
    pub voltages_sum_v: f64,
    /// `/InstalledCapacity`.
    pub installed_capacity_ah: f64,
    /// `/Soc` in percent.
    pub soc_pct: ROption<f64>,
    /// `/System/MaxCellVoltage`; NaN for a pack that publishes no cell data.
    pub max_cell_voltage_v: f64,
    /// `/System/MinCellVoltage`; NaN for a pack that publishes no cell data.
    pub min_cell_voltage_v: f64,
    /// `/Voltages/Cell1` … `/Voltages/Cell<N>`, index 0 = cell 1.
    pub cell_voltages_v: RVec<ROption<f64>>,
    /// `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: u32,
    /// `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: u32,
    /// `/Io/AllowToCharge` (1 allowed, 0 not).
    pub allow_to_charge: ROption<i32>,
    /// `/Io/AllowToDischarge` (1 allowed, 0 not).
    pub allow_to_discharge: ROption<i32>,
    /// The BMS's own charge voltage limit, `/Info/MaxChargeVoltage`.
    pub max_charge_voltage_v: ROption<f64>,
    /// The BMS's own charge current limit, `/Info/MaxChargeCurrent`.
    pub max_charge_current_a: ROption<f64>,
    /// The BMS's own discharge current limit, `/Info/MaxDischargeCurrent`.
    pub max_discharge_current_a: ROption<f64>,
    /// `/Info/ChargeMode`, e.g. `Bulk`, `Float (Balancing)`.
    pub charge_mode: ROption<RString>,
}

impl BatteryView {
    /// True when the BMS forbids charging: a module blocks charge or `/Io/AllowToCharge` is 0.
    pub fn blocks_charge(&self) -> bool {
        self.modules_blocking_charge > 0 || self.allow_to_charge == ROption::RSome(0)
    }

    /// True when the BMS forbids discharging: a module blocks discharge or
    /// `/Io/AllowToDischarge` is 0.
    pub fn blocks_discharge(&self) -> bool {
        self.modules_blocking_discharge > 0 || self.allow_to_discharge == ROption::RSome(0)
    }

    /// Sum of how far each cell stands strictly above `limit_v` (0 when none does).
    pub fn cell_overvoltage_v(&self, limit_v: f64) -> f64 {
        self.cell_voltages_v
            .iter()
            .filter_map(|cell| cell.into_option())
            .filter(|&v| v > limit_v)
            .fold(0.0, |sum, v| sum + (v - limit_v))
    }
}

/// The bank: the merged values of the online and stale batteries, plus every battery.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct BankView {
    /// Every battery the host knows of, ordered by service name (lost ones included).
    pub batteries: RVec<BatteryView>,
    /// Cells in series per battery (N).
    pub cells_per_battery: u32,
    /// Batteries the bank should have (`batteries.expected`, or all seen since start).
    pub batteries_expected: u32,
    /// Batteries online this tick.
    pub batteries_online: u32,
    /// Mean battery voltage.
    pub voltage_v: f64,
    /// Bank current from the current-source plugin (positive = charging).
    pub current_a: f64,
    /// Bank power.
    pub power_w: f64,
    /// Sum of the installed capacities.
    pub installed_capacity_ah: f64,
    /// State of charge in percent (the counter's when it runs, else the BMSs' weighted mean).
    pub soc_pct: f64,
    /// Charge in the bank in Ah (the counter's, else derived from the BMS SoC).
    pub charge_ah: f64,
    /// Highest cell voltage of the bank.
    pub max_cell_voltage_v: f64,
    /// Id of that cell, `<battery name>_<cell id>`.
    pub max_cell_id: RString,
    /// Lowest cell voltage of the bank.
    pub min_cell_voltage_v: f64,
    /// Id of that cell, `<battery name>_<cell id>`.
    pub min_cell_id: RString,
    /// Sum of `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: u32,
    /// Sum of `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: u32,
    /// Today in local time.
    pub date: LocalDate,
    /// Seconds since the previous tick (monotonic clock).
    pub dt_s: f64,
}

impl BankView {
    /// The batteries whose values count this tick (online or stale).
    pub fn active_batteries(&self) -> impl Iterator<Item = &BatteryView> {
        self.batteries
            .iter()
            .filter(|b| b.state != BatteryState::Lost)
    }

    /// True when any active battery forbids charging.
    pub fn blocks_charge(&self) -> bool {
        self.modules_blocking_charge > 0 || self.active_batteries().any(BatteryView::blocks_charge)
    }

    /// True when any active battery forbids discharging.
    pub fn blocks_discharge(&self) -> bool {
        self.modules_blocking_discharge > 0
            || self.active_batteries().any(BatteryView::blocks_discharge)
    }

    /// Highest cell minus lowest cell.
    pub fn cell_diff_v(&self) -> f64 {
        self.max_cell_voltage_v - self.min_cell_voltage_v
    }

    /// The lowest and highest cell voltage, or an error when either is not finite (no pack
    /// publishes cell data): a strategy deciding on cells must not decide on NaN, whose every
    /// comparison is false and reads as "nothing to stop".
    pub fn cell_extremes(&self) -> Result<(f64, f64), String> {
        let (low, high) = (self.min_cell_voltage_v, self.max_cell_voltage_v);
        if low.is_finite() && high.is_finite() {
            Ok((low, high))
        } else {
            Err(format!(
                "no cell data: lowest cell {low} V, highest cell {high} V \
                 (/System/MinCellVoltage, /System/MaxCellVoltage)"
            ))
        }
    }
}
