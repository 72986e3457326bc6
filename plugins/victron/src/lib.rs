//! Current source `victron`: the bank current as the Victron devices around the bank measure it.
//!
//! ```text
//! I = Σ Multi/Quattro + Σ solar chargers ± (Σ battery-class shunts − Σ dcload-class shunts)
//!     + Σ other DC devices (Multi RS, inverters, chargers, Orion XS, alternators, DC sources,
//!       minus DC loads and DC systems)
//! P = bank voltage × I
//! ```
//!
//! Signs, as the Venus classes publish `/Dc/0/Current`: `vebus`, `multi`, `inverter`,
//! `charger` (output 0), `dcdc`, `alternator`, `dcsource` and `solarcharger` positive =
//! into the bank; `dcload` and `dcsystem` positive = drawn from it (the host flips those two
//! before the plugin sees them, see `DcClass`). A DC meter counted among `smartshunts` is not
//! counted again as a DC load.
//!
//! This is the original `CURRENT_FROM_VICTRON` block (docs/current.md §3)
//! with its failure modes made explicit: whenever a device the config relies on is missing or
//! has no valid current, [`CurrentSourceImpl::measure`] returns `None` and the host falls back to
//! the BMS sum, logging that once per episode instead of every second (docs/current.md §1).
//!
//! ```yaml
//! current_source:
//!   plugin: victron
//!   use_multi: true            # count every vebus device (Multi, Quattro)
//!   smartshunts: [279, House]  # none | all | battery | VRM instances and custom names
//!   invert_smartshunts: false  # flip the sign of the SmartShunt part
//!   solar_chargers: true       # count the solar chargers (false when a shunt per pack does)
//!   dc_sources: all            # all | none | a list of classes: [charger, dcdc, dcload, ...]
//! ```

use abi_stable::std_types::ROption;
use plugin_api::{
    parse_checked, Checker, CurrentInputs, CurrentSourceImpl, DcClass, DcSourceView, DeviceRef,
    Measurement, PluginConfig, ShuntClass, ShuntView, SolarChargerView, VebusView,
};
use serde::Deserialize;

/// The plugin's config section.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Count the DC current of every Multi/Quattro. While true, a bus without any vebus device
    /// gives no measurement: the inverter is part of the current path, so leaving it out would
    /// publish a wrong current rather than none.
    #[serde(default = "default_use_multi")]
    pub use_multi: bool,
    /// Which SmartShunts count (default: none).
    #[serde(default)]
    pub smartshunts: ShuntSelection,
    /// Flip the sign of the SmartShunt part, for shunts wired the other way round.
    #[serde(default)]
    pub invert_smartshunts: bool,
    /// Count the solar chargers. False where the batteries' shunts already measure them
    /// (they would be added twice).
    #[serde(default = "default_use_multi")]
    pub solar_chargers: bool,
    /// Which other DC device classes count (default: all).
    #[serde(default)]
    pub dc_sources: ClassSelection,
}

fn default_use_multi() -> bool {
    true
}

/// The `dc_sources` key: `all`, `none`, or a list of class names (`multi` is ruled by
/// `use_multi`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "ClassText", into = "ClassText")]
pub enum ClassSelection {
    /// Every class.
    #[default]
    All,
    /// No class.
    None,
    /// These classes.
    Listed(Vec<DcClass>),
}

#[derive(Deserialize, serde::Serialize)]
#[serde(
    untagged,
    expecting = "expected \"all\", \"none\" or a list of classes (inverter, charger, dcdc, \
                 alternator, dcsource, dcload, dcsystem)"
)]
enum ClassText {
    Word(String),
    List(Vec<String>),
}

impl TryFrom<ClassText> for ClassSelection {
    type Error = String;

    fn try_from(text: ClassText) -> Result<Self, String> {
        let class = |name: &str| {
            DcClass::from_service_class(name)
                .filter(|c| *c != DcClass::Multi)
                .ok_or_else(|| {
                    format!(
                        "unknown DC class `{name}`: expected inverter, charger, dcdc, \
                         alternator, dcsource, dcload or dcsystem"
                    )
                })
        };
        match text {
            ClassText::Word(w) if w == "all" => Ok(ClassSelection::All),
            ClassText::Word(w) if w == "none" => Ok(ClassSelection::None),
            ClassText::Word(w) => Err(format!("expected all, none or a list, found `{w}`")),
            ClassText::List(names) => names
                .iter()
                .map(|n| class(n))
                .collect::<Result<_, _>>()
                .map(ClassSelection::Listed),
        }
    }
}

/// The `smartshunts` key: `none`, `all`, `battery`, or a list of shunts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(from = "SelectionText", into = "SelectionText")]
pub enum ShuntSelection {
    /// No shunt counts.
    #[default]
    None,
    /// Every SmartShunt on the bus counts.
    All,
    /// Every battery monitor counts, no DC meter: the one shunt of the original's `DC_LOADS`
    /// (3.x read battery-class SmartShunts only), which a DC meter added later must not join.
    Battery,
    /// The shunts matching any entry count; an entry that matches none means a device the
    /// config relies on is missing. An empty list selects nothing, like `none`.
    /// One entry may match several shunts (two shunts with the same custom name), as in the
    /// original.
    Listed(Vec<DeviceRef>),
}

/// How `smartshunts` is written. Untagged so that `none`, `all` and a list share one key; the
/// `expecting` text replaces serde's "did not match any variant" with what would be valid.
#[derive(Deserialize, serde::Serialize)]
#[serde(
    untagged,
    expecting = "expected \"none\", \"all\", \"battery\" or a list of SmartShunts, each a VRM \
                 device instance (integer) or a custom name (string)"
)]
enum SelectionText {
    Keyword(Keyword),
    List(Vec<DeviceRef>),
}

#[derive(Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Keyword {
    None,
    All,
    Battery,
}

/// Written back as read (for the config as the plugin reads it).
impl From<ClassSelection> for ClassText {
    fn from(selection: ClassSelection) -> Self {
        match selection {
            ClassSelection::All => ClassText::Word("all".into()),
            ClassSelection::None => ClassText::Word("none".into()),
            ClassSelection::Listed(classes) => ClassText::List(
                classes
                    .iter()
                    .map(|c| c.service_class().to_string())
                    .collect(),
            ),
        }
    }
}

impl From<ShuntSelection> for SelectionText {
    fn from(selection: ShuntSelection) -> Self {
        match selection {
            ShuntSelection::None => SelectionText::Keyword(Keyword::None),
            ShuntSelection::All => SelectionText::Keyword(Keyword::All),
            ShuntSelection::Battery => SelectionText::Keyword(Keyword::Battery),
            ShuntSelection::Listed(entries) => SelectionText::List(entries),
        }
    }
}

impl From<SelectionText> for ShuntSelection {
    fn from(text: SelectionText) -> Self {
        match text {
            SelectionText::Keyword(Keyword::None) => ShuntSelection::None,
            SelectionText::Keyword(Keyword::All) => ShuntSelection::All,
            SelectionText::Keyword(Keyword::Battery) => ShuntSelection::Battery,
            SelectionText::List(entries) => ShuntSelection::Listed(entries),
        }
    }
}

impl PluginConfig for Config {
    /// Values serde accepts but that can never match a shunt.
    fn check(&self) -> Result<(), String> {
        let mut checker = Checker::new();
        if let ShuntSelection::Listed(entries) = &self.smartshunts {
            for (i, entry) in entries.iter().enumerate() {
                entry.check(&mut checker, &format!("smartshunts[{i}]"));
            }
        }
        checker.finish()
    }
}

/// The `victron` current source.
#[derive(Debug, Clone)]
pub struct VictronCurrent {
    config: Config,
}

impl VictronCurrent {
    /// Σ Multi currents; `None` when a needed Multi is missing or invalid. A Multi RS (a DC
    /// device of class `multi`) counts as a Multi.
    fn multi_a(&self, vebus: &[VebusView], dc: &[DcSourceView]) -> Option<f64> {
        if !self.config.use_multi {
            return Some(0.0);
        }
        let rs = dc.iter().filter(|d| d.class == DcClass::Multi);
        if vebus.is_empty() && rs.clone().next().is_none() {
            return None;
        }
        let rs_a: f64 = rs.map(|d| valid(d.current_a)).sum::<Option<f64>>()?;
        Some(rs_a + self.vebus_a(vebus)?)
    }

    /// Σ Multi/Quattro currents; `None` when one is connected without a valid current.
    fn vebus_a(&self, vebus: &[VebusView]) -> Option<f64> {
        vebus
            .iter()
            .map(|multi| match multi.connected {
                // A switched-off inverter carries no DC current, and its /Dc/0/Current is then
                // often stale or invalid (docs/current.md §3).
                ROption::RSome(0) => Some(0.0),
                _ => valid(multi.current_a),
            })
            .sum()
    }

    /// True when the config counts `shunt`.
    fn selects(&self, shunt: &ShuntView) -> bool {
        match &self.config.smartshunts {
            ShuntSelection::None => false,
            ShuntSelection::All => true,
            ShuntSelection::Battery => matches!(shunt.class.as_enum(), Ok(ShuntClass::Battery)),
            ShuntSelection::Listed(entries) => entries.iter().any(|e| e.matches(shunt)),
        }
    }

    /// The signed SmartShunt part; `None` when a selected shunt is missing or invalid.
    fn shunts_a(&self, shunts: &[ShuntView]) -> Option<f64> {
        if let ShuntSelection::Listed(entries) = &self.config.smartshunts {
            if !entries.iter().all(|e| shunts.iter().any(|s| e.matches(s))) {
                return None;
            }
        }
        let sum_a: f64 = shunts
            .iter()
            .filter(|shunt| self.selects(shunt))
            .map(|shunt| {
                // A DC meter counts current towards the loads, i.e. out of the battery. A class
                // of a newer daemon has a sign this build cannot know: no measurement.
                let sign = match shunt.class.as_enum() {
                    Ok(ShuntClass::Battery) => 1.0,
                    Ok(ShuntClass::DcLoad) => -1.0,
                    Err(_) => return None,
                };
                valid(shunt.current_a).map(|a| sign * a)
            })
            .sum::<Option<f64>>()?;
        Some(if self.config.invert_smartshunts {
            -sum_a
        } else {
            sum_a
        })
    }

    /// Whether a DC device other than a Multi RS counts: its class selected, and not a DC
    /// meter already counted among the shunts.
    fn counts_dc(&self, device: &DcSourceView, shunts: &[ShuntView]) -> bool {
        let selected = match &self.config.dc_sources {
            ClassSelection::All => true,
            ClassSelection::None => false,
            // A class of a newer daemon is in no list this build reads; its current keeps the
            // sign convention, so `all` counts it.
            ClassSelection::Listed(classes) => device
                .class
                .as_enum()
                .is_ok_and(|class| classes.contains(class)),
        };
        selected
            && device.class != DcClass::Multi
            && !shunts
                .iter()
                .any(|s| s.service == device.service && self.selects(s))
    }

    /// Σ of the DC devices that count (positive = into the bank); `None` when one is invalid.
    fn dc_a(&self, inputs: &CurrentInputs) -> Option<f64> {
        inputs
            .dc_sources
            .iter()
            .filter(|d| self.counts_dc(d, &inputs.smartshunts))
            .map(|d| valid(d.current_a))
            .sum()
    }

    /// False when no device at all is counted: without a Multi, a solar charger or a selected
    /// shunt the sum is a constant 0 A, which the original published for good (docs/current.md §3);
    /// no measurement lets the host fall back to the BMS and say why.
    fn counts_a_device(&self, inputs: &CurrentInputs) -> bool {
        self.config.use_multi
            || (self.config.solar_chargers && !inputs.solar_chargers.is_empty())
            || inputs.smartshunts.iter().any(|shunt| self.selects(shunt))
            || inputs
                .dc_sources
                .iter()
                .any(|d| self.counts_dc(d, &inputs.smartshunts))
    }
}

impl CurrentSourceImpl for VictronCurrent {
    fn measure(&mut self, inputs: &CurrentInputs) -> Option<Measurement> {
        if !self.counts_a_device(inputs) {
            return None;
        }
        let multi_a = self.multi_a(&inputs.vebus, &inputs.dc_sources)?;
        let solar_a = if self.config.solar_chargers {
            solar_a(&inputs.solar_chargers)?
        } else {
            0.0
        };
        let shunts_a = self.shunts_a(&inputs.smartshunts)?;
        let current_a = multi_a + solar_a + shunts_a + self.dc_a(inputs)?;
        let power_w = inputs.bank_voltage_v * current_a;
        (current_a.is_finite() && power_w.is_finite()).then_some(Measurement { current_a, power_w })
    }
}

/// Σ solar charger currents; `None` when one of them is invalid, since leaving a charger out
/// would understate the charge current.
fn solar_a(chargers: &[SolarChargerView]) -> Option<f64> {
    chargers.iter().map(|c| valid(c.current_a)).sum()
}

/// A D-Bus value that is present and finite.
fn valid(value: ROption<f64>) -> Option<f64> {
    value.into_option().filter(|v| v.is_finite())
}

/// Builds the plugin from its config section (JSON text); the error names the bad key.
pub fn new(config: &str) -> Result<VictronCurrent, String> {
    let config = parse_checked(config)?;
    Ok(VictronCurrent { config })
}

plugin_api::export_plugin! {
    kind: current_source,
    name: "victron",
    description: "Bank current = Multis + solar chargers ± SmartShunts + other DC devices",
    config: Config,
    new: new,
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing::CurrentInputsBuilder;

    const V: f64 = 50.0;

    /// A bus without devices; the batteries' own sums are a value no test expects.
    fn empty_bus() -> CurrentInputsBuilder {
        CurrentInputsBuilder::new()
            .bms(999.0, 999.0)
            .bank_voltage(V)
    }

    /// The current `config` measures on a bus.
    fn measured_current(bus: &CurrentInputs, config: &str) -> Option<f64> {
        new(config).unwrap().measure(bus).map(|m| m.current_a)
    }

    fn multi_and_two_mppts() -> CurrentInputsBuilder {
        empty_bus()
            .multi(Some(1), Some(-20.0))
            .solar_charger(Some(15.0))
            .solar_charger(Some(7.5))
    }

    const LIST: &str = r#"{"smartshunts": [279, "House"]}"#;

    /// Battery shunt 279 "Bank" +10 A, DC meter 280 "House" 4 A.
    fn with_shunts(bus: CurrentInputsBuilder) -> CurrentInputsBuilder {
        bus.shunt(ShuntClass::Battery, 279, "Bank", 10.0).shunt(
            ShuntClass::DcLoad,
            280,
            "House",
            4.0,
        )
    }

    #[test]
    fn every_dc_class_counts_with_its_sign_and_can_be_left_out() {
        // Host-side signs: positive = into the bank (a load of 6 A arrives as -6 A).
        let bus = empty_bus()
            .dc_source(DcClass::Multi, Some(-10.0))
            .dc_source(DcClass::Inverter, Some(-3.0))
            .dc_source(DcClass::Charger, Some(20.0))
            .dc_source(DcClass::Dcdc, Some(12.0))
            .dc_source(DcClass::Alternator, Some(30.0))
            .dc_source(DcClass::DcSource, Some(5.0))
            .dc_source(DcClass::DcLoad, Some(-6.0))
            .dc_source(DcClass::DcSystem, Some(-8.0))
            .solar_charger(Some(7.0))
            .build();
        assert_eq!(measured_current(&bus, ""), Some(47.0));
        let only = r#"{"dc_sources": ["charger", "dcload"], "solar_chargers": false}"#;
        assert_eq!(measured_current(&bus, only), Some(-10.0 + 20.0 - 6.0));
        let none = r#"{"dc_sources": "none", "use_multi": false}"#;
        assert_eq!(measured_current(&bus, none), Some(7.0));
        let err = new(r#"{"dc_sources": ["toaster"]}"#).unwrap_err();
        assert!(err.contains("unknown DC class `toaster`"), "{err}");
    }

    #[test]
    fn a_selected_dc_meter_is_counted_once() {
        let mut bus = empty_bus()
            .multi(Some(1), Some(0.0))
            .shunt(ShuntClass::DcLoad, 280, "House", 4.0)
            .dc_source(DcClass::DcLoad, Some(-4.0))
            .build();
        bus.dc_sources[0].service = bus.smartshunts[0].service.clone();
        assert_eq!(
            measured_current(&bus, r#"{"smartshunts": "all"}"#),
            Some(-4.0)
        );
        assert_eq!(
            measured_current(&bus, ""),
            Some(-4.0),
            "counted as a DC load"
        );
    }

    #[test]
    fn multi_plus_two_mppts() {
        assert_eq!(
            measured_current(&multi_and_two_mppts().build(), ""),
            Some(2.5)
        );
    }

    #[test]
    fn power_is_bank_voltage_times_current() {
        let mut source = new("").unwrap();
        let m = source
            .measure(&multi_and_two_mppts().bank_voltage(52.0).build())
            .unwrap();
        assert_eq!(m.power_w, 52.0 * 2.5);
    }

    #[test]
    fn disconnected_multi_counts_zero_even_with_an_invalid_current() {
        let bus = empty_bus().multi(Some(0), None).solar_charger(Some(15.0));
        assert_eq!(measured_current(&bus.build(), ""), Some(15.0));
        let bus = empty_bus()
            .multi(Some(0), Some(-80.0))
            .solar_charger(Some(15.0));
        assert_eq!(measured_current(&bus.build(), ""), Some(15.0));
    }

    #[test]
    fn connected_multi_with_an_invalid_current_gives_none() {
        for current in [None, Some(f64::NAN), Some(f64::INFINITY)] {
            let bus = empty_bus()
                .multi(Some(1), current)
                .solar_charger(Some(15.0));
            assert_eq!(measured_current(&bus.build(), ""), None, "{current:?}");
        }
    }

    #[test]
    fn multis_are_summed() {
        let bus = empty_bus()
            .multi(Some(1), Some(-20.0))
            .multi(Some(1), Some(-5.0));
        assert_eq!(measured_current(&bus.build(), ""), Some(-25.0));
    }

    #[test]
    fn no_multi_with_use_multi_gives_none() {
        let bus = empty_bus().solar_charger(Some(15.0));
        assert_eq!(measured_current(&bus.build(), ""), None);
    }

    #[test]
    fn use_multi_false_ignores_the_vebus() {
        let config = r#"{"use_multi": false}"#;
        assert_eq!(
            measured_current(&multi_and_two_mppts().build(), config),
            Some(22.5)
        );
        let bus = empty_bus().multi(Some(1), None).solar_charger(Some(15.0));
        assert_eq!(measured_current(&bus.build(), config), Some(15.0));
    }

    #[test]
    fn nothing_to_count_gives_none_not_zero() {
        let bus = with_shunts(empty_bus().multi(Some(1), Some(-20.0)));
        assert_eq!(
            measured_current(&bus.build(), r#"{"use_multi": false}"#),
            None
        );
        let config = r#"{"use_multi": false, "smartshunts": "all"}"#;
        assert_eq!(measured_current(&empty_bus().build(), config), None);
        // One battery monitor per battery and nothing else is a valid topology.
        assert_eq!(
            measured_current(&with_shunts(empty_bus()).build(), config),
            Some(6.0)
        );
    }

    #[test]
    fn invalid_solar_charger_gives_none() {
        let bus = multi_and_two_mppts().solar_charger(None);
        assert_eq!(measured_current(&bus.build(), ""), None);
    }

    #[test]
    fn battery_shunt_added_dcload_shunt_subtracted() {
        let bus = with_shunts(multi_and_two_mppts());
        assert_eq!(
            measured_current(&bus.build(), r#"{"smartshunts": "all"}"#),
            Some(2.5 + 10.0 - 4.0)
        );
    }

    #[test]
    fn battery_selects_the_battery_monitors_and_leaves_dc_meters_to_dc_sources() {
        let bus = with_shunts(multi_and_two_mppts());
        // The battery monitor's 10 A, not the DC meter's 4 A.
        assert_eq!(
            measured_current(&bus.build(), r#"{"smartshunts": "battery"}"#),
            Some(2.5 + 10.0)
        );
        let config = r#"{"smartshunts": "battery", "invert_smartshunts": true}"#;
        assert_eq!(measured_current(&bus.build(), config), Some(2.5 - 10.0));
    }

    #[test]
    fn invert_flips_the_whole_shunt_part() {
        let bus = with_shunts(multi_and_two_mppts());
        let config = r#"{"smartshunts": "all", "invert_smartshunts": true}"#;
        assert_eq!(
            measured_current(&bus.build(), config),
            Some(2.5 - 10.0 + 4.0)
        );
    }

    #[test]
    fn shunts_are_ignored_by_default() {
        assert_eq!(
            measured_current(&with_shunts(multi_and_two_mppts()).build(), ""),
            Some(2.5)
        );
    }

    #[test]
    fn list_selects_by_instance_and_by_name() {
        let bus =
            with_shunts(multi_and_two_mppts()).shunt(ShuntClass::Battery, 281, "Spare", 100.0);
        assert_eq!(measured_current(&bus.build(), LIST), Some(2.5 + 10.0 - 4.0));
        assert_eq!(
            measured_current(&bus.build(), r#"{"smartshunts": [281]}"#),
            Some(102.5)
        );
        assert_eq!(
            measured_current(&bus.build(), r#"{"smartshunts": ["Bank"]}"#),
            Some(12.5)
        );
    }

    #[test]
    fn unmatched_list_entry_gives_none() {
        let bus = multi_and_two_mppts().shunt(ShuntClass::Battery, 279, "Bank", 10.0);
        assert_eq!(measured_current(&bus.build(), LIST), None);
    }

    #[test]
    fn selected_shunt_with_invalid_current_gives_none() {
        let mut bus = with_shunts(multi_and_two_mppts()).build();
        bus.smartshunts[1].current_a = ROption::RNone;
        assert_eq!(measured_current(&bus, LIST), None);
        // Not selected, so its value does not matter.
        assert_eq!(
            measured_current(&bus, r#"{"smartshunts": [279]}"#),
            Some(12.5)
        );
    }

    #[test]
    fn non_finite_voltage_gives_none() {
        assert_eq!(
            measured_current(&multi_and_two_mppts().bank_voltage(f64::NAN).build(), ""),
            None
        );
    }

    #[test]
    fn config_defaults() {
        let source = new("").unwrap();
        assert!(source.config.use_multi);
        assert_eq!(source.config.smartshunts, ShuntSelection::None);
        assert!(!source.config.invert_smartshunts);
    }

    #[test]
    fn config_parses_every_smartshunts_form() {
        let parse = |json: &str| new(json).unwrap().config.smartshunts;
        assert_eq!(parse(r#"{"smartshunts": "none"}"#), ShuntSelection::None);
        assert_eq!(parse(r#"{"smartshunts": "all"}"#), ShuntSelection::All);
        assert_eq!(
            parse(r#"{"smartshunts": "battery"}"#),
            ShuntSelection::Battery
        );
        assert_eq!(
            parse(LIST),
            ShuntSelection::Listed(vec![
                DeviceRef::Instance(279),
                DeviceRef::Name("House".into())
            ])
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let cases = [
            (r#"{"use_multis": true}"#, "use_multis"),
            (r#"{"use_multi": "yes"}"#, "use_multi"),
            (r#"{"smartshunts": "some"}"#, "smartshunts"),
            (r#"{"smartshunts": true}"#, "smartshunts"),
            (r#"{"smartshunts": [279, 1.5]}"#, "smartshunts"),
            (r#"{"smartshunts": [279, -1]}"#, "smartshunts[1]"),
            (r#"{"smartshunts": [""]}"#, "smartshunts[0]"),
        ];
        for (json, key) in cases {
            let err = new(json).unwrap_err();
            assert!(err.starts_with(&format!("{key}: ")), "{json} -> {err}");
        }
        let err = new(r#"{"smartshunts": "some"}"#).unwrap_err();
        assert!(
            err.contains(r#""none", "all", "battery" or a list"#),
            "{err}"
        );
    }
}
