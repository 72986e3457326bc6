//! What a current-source plugin sees and returns: the bank current from Victron devices.

use abi_stable::std_types::{ROption, RString, RVec};
use abi_stable::StableAbi;
use serde::Deserialize;

use crate::config::Checker;

/// A Multi or Quattro (`com.victronenergy.vebus.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct VebusView {
    /// D-Bus service name.
    pub service: RString,
    /// `/Connected`: 0 when the inverter is switched off.
    pub connected: ROption<i32>,
    /// `/Dc/0/Current`, positive = into the battery.
    pub current_a: ROption<f64>,
}

/// A solar charger (`com.victronenergy.solarcharger.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct SolarChargerView {
    /// D-Bus service name.
    pub service: RString,
    /// `/Dc/0/Current`, positive = into the battery.
    pub current_a: ROption<f64>,
}

/// How a SmartShunt is configured on its own device.
///
/// Crosses the ABI as [`ShuntClass_NE`], which a minor version may give a new variant: read
/// it with `as_enum()`, which fails for a class this plugin does not know.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
pub enum ShuntClass {
    /// Battery monitor (`com.victronenergy.battery.*`): positive current charges the battery.
    Battery,
    /// DC meter (`com.victronenergy.dcload.*`): positive current flows to loads.
    DcLoad,
}

/// The Venus service class of a DC device other than a Multi/Quattro or a solar charger.
///
/// Every class publishes `/Dc/0/Current`; the host turns each sign into one, so
/// [`DcSourceView::current_a`] is always positive = into the battery bank.
///
/// Crosses the ABI as [`DcClass_NE`]: the next Venus device class is a new variant of a minor
/// version, which a plugin built before sees as an error of `as_enum()`. Its current keeps the
/// sign convention above, so a plugin that sums every device can count it all the same.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[sabi(kind(WithNonExhaustive(size = [u8; 4], traits(Debug, Clone, PartialEq))))]
pub enum DcClass {
    /// `com.victronenergy.multi.*` (Multi RS): positive = charging the bank, as published.
    Multi,
    /// `com.victronenergy.inverter.*` (Inverter RS, Phoenix): negative while inverting, as
    /// published. An inverter that publishes no `/Dc/0/Current` (some VE.Direct Phoenix
    /// models) gets one the host estimates from its AC output and DC voltage.
    Inverter,
    /// `com.victronenergy.charger.*` (AC chargers): `/Dc/0/Current`, output 0 (a charger's
    /// outputs 1 and 2 feed other batteries), positive = into the bank, as published.
    Charger,
    /// `com.victronenergy.dcdc.*` (Orion XS): its output, positive = into the bank, as
    /// published.
    Dcdc,
    /// `com.victronenergy.alternator.*`, and the DC gensets of `com.victronenergy.dcgenset.*`
    /// (alternators on an engine): positive = into the bank, as published.
    Alternator,
    /// `com.victronenergy.dcsource.*` (a shunt on a DC source), and the fuel cells of
    /// `com.victronenergy.fuelcell.*`: positive = into the bank, as published.
    DcSource,
    /// `com.victronenergy.dcload.*` (a shunt on a DC load): published positive = drawn by the
    /// load, so the host negates it.
    DcLoad,
    /// `com.victronenergy.dcsystem.*` (a shunt on the DC system): published positive = drawn
    /// by the system, so the host negates it.
    DcSystem,
}

impl DcClass {
    /// Every class, in the order the host lists devices.
    pub const ALL: [DcClass; 8] = [
        DcClass::Multi,
        DcClass::Inverter,
        DcClass::Charger,
        DcClass::Dcdc,
        DcClass::Alternator,
        DcClass::DcSource,
        DcClass::DcLoad,
        DcClass::DcSystem,
    ];

    /// The class part of the service name: `multi` in `com.victronenergy.multi.ttyS2`; also
    /// the name a plugin's config uses for it.
    pub fn service_class(self) -> &'static str {
        match self {
            DcClass::Multi => "multi",
            DcClass::Inverter => "inverter",
            DcClass::Charger => "charger",
            DcClass::Dcdc => "dcdc",
            DcClass::Alternator => "alternator",
            DcClass::DcSource => "dcsource",
            DcClass::DcLoad => "dcload",
            DcClass::DcSystem => "dcsystem",
        }
    }

    /// The class of a service-name class part (`dcdc`), if it is one of these.
    pub fn from_service_class(class: &str) -> Option<DcClass> {
        DcClass::ALL
            .into_iter()
            .find(|c| c.service_class() == class)
    }
}

/// A DC device of a [`DcClass`] on the bus.
#[derive(Clone, Debug, PartialEq)]
pub struct DcSourceView {
    /// D-Bus service name.
    pub service: RString,
    /// Its class (see [`DcClass`] for one a newer host added).
    pub class: DcClass_NE,
    /// `/DeviceInstance` (the VRM instance).
    pub device_instance: ROption<i32>,
    /// `/CustomName`, empty when unset.
    pub custom_name: RString,
    /// Its DC current, A, **positive = into the battery bank** whatever the class publishes
    /// (see [`DcClass`]); `RNone` when invalid.
    pub current_a: ROption<f64>,
}

/// A SmartShunt.
#[derive(Clone, Debug, PartialEq)]
pub struct ShuntView {
    /// D-Bus service name.
    pub service: RString,
    /// Battery monitor or DC meter (see [`ShuntClass`]).
    pub class: ShuntClass_NE,
    /// `/DeviceInstance` (the VRM instance).
    pub device_instance: ROption<i32>,
    /// `/CustomName`, empty when unset.
    pub custom_name: RString,
    /// `/Dc/0/Current`.
    pub current_a: ROption<f64>,
}

/// A SmartShunt (or another device) named in a plugin's config section: by VRM instance or by
/// custom name.
///
/// Deserializes from an integer (`279`) or a string (`House`); anything else fails with
/// "expected a VRM device instance (integer) or a custom name (string)". serde accepts values
/// that can never match a device, so call [`DeviceRef::check`] from the config's check.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(
    untagged,
    expecting = "expected a VRM device instance (integer) or a custom name (string)"
)]
pub enum DeviceRef {
    /// Its VRM device instance (`/DeviceInstance`).
    Instance(i32),
    /// Its `/CustomName`.
    Name(String),
}

impl DeviceRef {
    /// True when the device of this VRM instance and custom name is the one this entry names.
    pub fn names(&self, device_instance: ROption<i32>, custom_name: &str) -> bool {
        match self {
            DeviceRef::Instance(instance) => device_instance == ROption::RSome(*instance),
            DeviceRef::Name(name) => custom_name == name,
        }
    }

    /// True when `shunt` is the one this entry names. A name may match several shunts (two
    /// shunts with the same custom name); an instance matches only a shunt that has one.
    pub fn matches(&self, shunt: &ShuntView) -> bool {
        self.names(shunt.device_instance, &shunt.custom_name)
    }

    /// Records an error under `key` for a value that can never match: a negative instance or
    /// an empty name.
    pub fn check(&self, checker: &mut Checker, key: &str) {
        match self {
            DeviceRef::Instance(instance) => checker.require(*instance >= 0, key, || {
                format!("a VRM device instance is 0 or more, found {instance}")
            }),
            // An empty /CustomName means "unset", so "" would match every unnamed shunt.
            DeviceRef::Name(name) => checker.require(!name.is_empty(), key, || {
                "a custom name must not be empty".to_string()
            }),
        }
    }
}

/// Inputs of a current source, one tick.
///
/// A value a device may leave invalid is an [`ROption`], `RNone` when invalid (never NaN);
/// the batteries' sums and the bank voltage are always there (a current source runs only
/// while a battery is online or stale).
#[derive(Clone, Debug, PartialEq)]
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
    /// Every other DC device on the bus (Multi RS, inverters, chargers, Orion XS,
    /// alternators, DC sources, loads and systems), in [`DcClass::ALL`] order, each class by
    /// service name. A SmartShunt in DC-meter mode is both here (as `DcLoad`) and in
    /// `smartshunts`: a plugin counts it once.
    pub dc_sources: RVec<DcSourceView>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_config;

    fn shunt(instance: Option<i32>, name: &str) -> ShuntView {
        ShuntView {
            service: "com.victronenergy.battery.ttyS0".into(),
            class: ShuntClass_NE::new(ShuntClass::Battery),
            device_instance: instance.into(),
            custom_name: name.into(),
            current_a: ROption::RNone,
        }
    }

    #[test]
    fn device_ref_reads_an_instance_or_a_name() {
        assert_eq!(
            parse_config::<DeviceRef>("279"),
            Ok(DeviceRef::Instance(279))
        );
        assert_eq!(
            parse_config::<DeviceRef>(r#""House""#),
            Ok(DeviceRef::Name("House".into()))
        );
        let err = parse_config::<DeviceRef>("1.5").unwrap_err();
        assert_eq!(
            err,
            "expected a VRM device instance (integer) or a custom name (string)"
        );
    }

    #[test]
    fn device_ref_matches_by_instance_or_name() {
        assert!(DeviceRef::Instance(279).matches(&shunt(Some(279), "House")));
        assert!(!DeviceRef::Instance(279).matches(&shunt(None, "House")));
        assert!(DeviceRef::Name("House".into()).matches(&shunt(None, "House")));
        assert!(!DeviceRef::Name("House".into()).matches(&shunt(Some(279), "Bank")));
    }

    #[test]
    fn device_ref_check_refuses_what_never_matches() {
        let check = |device: DeviceRef| {
            let mut checker = Checker::new();
            device.check(&mut checker, "shunt");
            checker.finish()
        };
        assert_eq!(check(DeviceRef::Instance(0)), Ok(()));
        assert_eq!(check(DeviceRef::Name("House".into())), Ok(()));
        assert_eq!(
            check(DeviceRef::Instance(-1)),
            Err("shunt: a VRM device instance is 0 or more, found -1".into())
        );
        assert_eq!(
            check(DeviceRef::Name(String::new())),
            Err("shunt: a custom name must not be empty".into())
        );
    }
}
