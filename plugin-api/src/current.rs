//! What a current-source plugin sees and returns: the bank current from Victron devices.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;

/// A Multi or Quattro (`com.victronenergy.vebus.*`).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct VebusView {
    /// D-Bus service name.
    pub service: RString,
    /// `/Connected`: 0 when the inverter is switched off.
    pub connected: ROption<i32>,
    /// `/Dc/0/Current`, positive = into the battery.
    pub current_a: ROption<f64>,
}

/// A solar charger (`com.victronenergy.solarcharger.*`).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct SolarChargerView {
    /// D-Bus service name.
    pub service: RString,
    /// `/Dc/0/Current`, positive = into the battery.
    pub current_a: ROption<f64>,
}

/// How a SmartShunt is configured on its own device.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShuntClass {
    /// Battery monitor (`com.victronenergy.battery.*`): positive current charges the battery.
    Battery,
    /// DC meter (`com.victronenergy.dcload.*`): positive current flows to loads.
    DcLoad,
}

/// A SmartShunt.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct ShuntView {
    /// D-Bus service name.
    pub service: RString,
    /// Battery monitor or DC meter.
    pub class: ShuntClass,
    /// `/DeviceInstance` (the VRM instance).
    pub device_instance: ROption<i32>,
    /// `/CustomName`, empty when unset.
    pub custom_name: RString,
    /// `/Dc/0/Current`.
    pub current_a: ROption<f64>,
}

/// Inputs of a current source, one tick.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq)]
pub struct CurrentInputs {
    /// Sum of the online batteries' `/Dc/0/Current`.
    pub bms_current_a: f64,
    /// Sum of the online batteries' `/Dc/0/Power`.
    pub bms_power_w: f64,
    /// Mean voltage of the bank.
    pub bank_voltage_v: f64,
    /// Every Multi/Quattro on the bus.
    pub vebus: RVec<VebusView>,
    /// Every solar charger on the bus.
    pub solar_chargers: RVec<SolarChargerView>,
    /// Every SmartShunt on the bus, battery monitors first, each group by service name.
    pub smartshunts: RVec<ShuntView>,
}

/// A bank current and power.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Bank current, A, positive = charging.
    pub current_a: f64,
    /// Bank power, W.
    pub power_w: f64,
}
