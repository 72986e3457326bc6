//! A typed reading of one battery service, as the monitor cache holds it.
//!
//! Every value a BMS may leave invalid is an `Option`; `None` is the Venus invalid value (an
//! empty array on the wire) or a path the service does not publish. Whether a reading is good
//! enough to merge is decided here, in one place.

/// The alarm paths merged by maximum, below `/Alarms/`.
pub const ALARMS: [&str; 14] = [
    "LowVoltage",
    "HighVoltage",
    "LowCellVoltage",
    "HighCellVoltage",
    "LowSoc",
    "HighChargeCurrent",
    "HighDischargeCurrent",
    "CellImbalance",
    "InternalFailure",
    "HighChargeTemperature",
    "LowChargeTemperature",
    "HighTemperature",
    "LowTemperature",
    "BmsCable",
];

/// Index of `/Alarms/BmsCable` in [`ALARMS`].
pub const ALARM_BMS_CABLE: usize = 13;

/// One battery's values at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatteryReading {
    /// `/Connected`.
    pub connected: Option<i64>,
    /// `/Dc/0/Voltage`.
    pub voltage_v: Option<f64>,
    /// `/Dc/0/Current`, positive = charging.
    pub current_a: Option<f64>,
    /// `/Dc/0/Power`.
    pub power_w: Option<f64>,
    /// `/Dc/0/Temperature`.
    pub temperature_c: Option<f64>,
    /// `/InstalledCapacity`.
    pub installed_capacity_ah: Option<f64>,
    /// `/ConsumedAmphours`.
    pub consumed_ah: Option<f64>,
    /// `/Capacity` (remaining Ah).
    pub capacity_ah: Option<f64>,
    /// `/Soc`.
    pub soc_pct: Option<f64>,
    /// `/TimeToGo`.
    pub time_to_go_s: Option<f64>,
    /// `/System/MaxCellTemperature`.
    pub max_cell_temperature_c: Option<f64>,
    /// `/System/MinCellTemperature`.
    pub min_cell_temperature_c: Option<f64>,
    /// `/System/MaxTemperatureCellId`.
    pub max_temperature_cell_id: Option<String>,
    /// `/System/MinTemperatureCellId`.
    pub min_temperature_cell_id: Option<String>,
    /// `/System/MaxCellVoltage`.
    pub max_cell_voltage_v: Option<f64>,
    /// `/System/MinCellVoltage`.
    pub min_cell_voltage_v: Option<f64>,
    /// `/System/MaxVoltageCellId`.
    pub max_voltage_cell_id: Option<String>,
    /// `/System/MinVoltageCellId`.
    pub min_voltage_cell_id: Option<String>,
    /// `/Voltages/Sum`.
    pub voltages_sum_v: Option<f64>,
    /// `/System/NrOfCellsPerBattery`.
    pub cells_per_battery: Option<i64>,
    /// `/System/NrOfModulesOnline`.
    pub modules_online: Option<i64>,
    /// `/System/NrOfModulesOffline`.
    pub modules_offline: Option<i64>,
    /// `/System/NrOfModulesBlockingCharge`.
    pub modules_blocking_charge: Option<i64>,
    /// `/System/NrOfModulesBlockingDischarge`.
    pub modules_blocking_discharge: Option<i64>,
    /// `/Alarms/<name>` in the order of [`ALARMS`].
    pub alarms: [Option<i64>; ALARMS.len()],
    /// `/Io/AllowToCharge`.
    pub allow_to_charge: Option<i64>,
    /// `/Io/AllowToDischarge`.
    pub allow_to_discharge: Option<i64>,
    /// `/Io/AllowToBalance`.
    pub allow_to_balance: Option<i64>,
    /// `/Info/MaxChargeVoltage`.
    pub max_charge_voltage_v: Option<f64>,
    /// `/Info/MaxChargeCurrent`.
    pub max_charge_current_a: Option<f64>,
    /// `/Info/MaxDischargeCurrent`.
    pub max_discharge_current_a: Option<f64>,
    /// `/Info/ChargeMode`.
    pub charge_mode: Option<String>,
    /// `/Voltages/Cell1` … in order.
    pub cell_voltages_v: Vec<Option<f64>>,
}

/// Why a reading cannot be merged: the D-Bus path at fault and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// The path, e.g. `/Dc/0/Voltage`.
    pub path: &'static str,
    /// What is wrong, e.g. `invalid` or `not finite`.
    pub problem: &'static str,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {}", self.path, self.problem)
    }
}

impl BatteryReading {
    /// Checks that the reading can be merged (SPEC §3): voltage, current, installed capacity
    /// (above 0) and min/max cell voltage valid and finite, the three BMS limits too when the
    /// strategy passes them through, and the BMS connected.
    pub fn check(&self, needs_bms_limits: bool) -> Result<(), Unusable> {
        let mut required = vec![
            ("/Dc/0/Voltage", self.voltage_v),
            ("/Dc/0/Current", self.current_a),
            ("/InstalledCapacity", self.installed_capacity_ah),
            ("/System/MaxCellVoltage", self.max_cell_voltage_v),
            ("/System/MinCellVoltage", self.min_cell_voltage_v),
        ];
        if needs_bms_limits {
            required.extend([
                ("/Info/MaxChargeVoltage", self.max_charge_voltage_v),
                ("/Info/MaxChargeCurrent", self.max_charge_current_a),
                ("/Info/MaxDischargeCurrent", self.max_discharge_current_a),
            ]);
        }
        for (path, value) in required {
            match value {
                None => {
                    return Err(Unusable {
                        path,
                        problem: "invalid",
                    })
                }
                Some(v) if !v.is_finite() => {
                    return Err(Unusable {
                        path,
                        problem: "not finite",
                    })
                }
                Some(_) => {}
            }
        }
        if self.installed_capacity_ah.is_some_and(|c| c <= 0.0) {
            return Err(Unusable {
                path: "/InstalledCapacity",
                problem: "not above 0 Ah",
            });
        }
        if self.connected == Some(0) {
            return Err(Unusable {
                path: "/Connected",
                problem: "0 (BMS not connected)",
            });
        }
        if self.alarms[ALARM_BMS_CABLE].is_some_and(|a| a >= 2) {
            return Err(Unusable {
                path: "/Alarms/BmsCable",
                problem: "2 (BMS cable alarm)",
            });
        }
        Ok(())
    }

    /// `/Voltages/Sum`, else the sum of the cells, else the battery voltage.
    pub fn voltages_sum_or_cells(&self) -> Option<f64> {
        let cells = || -> Option<f64> {
            if self.cell_voltages_v.is_empty() {
                return None;
            }
            self.cell_voltages_v
                .iter()
                .try_fold(0.0, |sum, cell| cell.map(|v| sum + v))
        };
        self.voltages_sum_v
            .filter(|v| v.is_finite())
            .or_else(cells)
            .or(self.voltage_v)
    }

    /// `/Dc/0/Power`, else voltage × current.
    pub fn power_or_product(&self) -> Option<f64> {
        self.power_w
            .filter(|p| p.is_finite())
            .or_else(|| Some(self.voltage_v? * self.current_a?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn complete() -> BatteryReading {
        BatteryReading {
            voltage_v: Some(53.0),
            current_a: Some(10.0),
            installed_capacity_ah: Some(280.0),
            max_cell_voltage_v: Some(3.35),
            min_cell_voltage_v: Some(3.30),
            ..Default::default()
        }
    }

    #[test]
    fn complete_reading_passes() {
        assert_eq!(complete().check(false), Ok(()));
    }

    #[test]
    fn names_the_path_at_fault() {
        let mut r = complete();
        r.voltage_v = Some(f64::NAN);
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/Dc/0/Voltage is not finite"
        );
        let mut r = complete();
        r.installed_capacity_ah = Some(0.0);
        assert_eq!(r.check(false).unwrap_err().path, "/InstalledCapacity");
        let mut r = complete();
        r.min_cell_voltage_v = None;
        assert_eq!(
            r.check(false).unwrap_err().to_string(),
            "/System/MinCellVoltage is invalid"
        );
        assert_eq!(
            complete().check(true).unwrap_err().path,
            "/Info/MaxChargeVoltage"
        );
        let mut r = complete();
        r.connected = Some(0);
        assert_eq!(r.check(false).unwrap_err().path, "/Connected");
        let mut r = complete();
        r.alarms[ALARM_BMS_CABLE] = Some(2);
        assert_eq!(r.check(false).unwrap_err().path, "/Alarms/BmsCable");
    }

    #[test]
    fn sum_falls_back_to_cells_then_voltage() {
        let mut r = complete();
        assert_eq!(r.voltages_sum_or_cells(), Some(53.0));
        r.cell_voltages_v = vec![Some(3.25), Some(3.5)];
        assert_eq!(r.voltages_sum_or_cells(), Some(6.75));
        r.voltages_sum_v = Some(6.7);
        assert_eq!(r.voltages_sum_or_cells(), Some(6.7));
        assert_eq!(r.power_or_product(), Some(530.0));
    }
}
