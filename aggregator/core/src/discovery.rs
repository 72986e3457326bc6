//! Which services are batteries, and their display names (docs/discovery.md §2 and §3). Pure: the
//! bus module hands over each service's name and nameplate paths; this decides.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which battery-class services belong to the bank (`batteries:` in `config.yaml`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// A battery's `/ProductName` must contain one of these.
    pub product_name: Vec<String>,
    /// Only these batteries (by `/CustomName`, `/Serial`, `/DeviceInstance` or service name).
    /// A service named here by its service name is a battery whatever its product name.
    pub include: Vec<Selector>,
    /// Never these batteries.
    pub exclude: Vec<Selector>,
}

/// A battery or device selected by name (string) or device instance (integer).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Selector {
    /// `/DeviceInstance`.
    Instance(i64),
    /// `/CustomName`, `/Serial` or the service name.
    Name(String),
}

/// `batteries.product_name`: one text or a list of them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(from = "OneOrMany")]
pub struct ProductNames(pub Vec<String>);

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "expected a product name (text) or a list of product names"
)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for ProductNames {
    fn from(value: OneOrMany) -> Self {
        match value {
            OneOrMany::One(name) => ProductNames(vec![name]),
            OneOrMany::Many(names) => ProductNames(names),
        }
    }
}

/// Product names of Victron's battery monitors, which publish in the battery class but are
/// no BMS: SmartShunt, BMV and Lynx Shunt.
const MONITOR_PRODUCTS: [&str; 3] = ["SmartShunt", "BMV", "Lynx Shunt"];

/// Whether a battery-class service is a battery monitor (a shunt), not a BMS: Victron counts
/// a battery as a BMS by its `/Info/MaxChargeVoltage`, which a monitor never publishes; the
/// product names catch a monitor whose driver publishes the path anyway.
pub fn is_battery_monitor(product_name: Option<&str>, publishes_charge_voltage: bool) -> bool {
    // Asked for every battery at every tick: a plain scan of a short name, where `str::contains`
    // builds a substring searcher (some 800 instructions a name, and its code) each time.
    let names = |p: &str| {
        let p = p.as_bytes();
        MONITOR_PRODUCTS.iter().any(|m| {
            p.windows(m.len())
                .any(|w| w.first() == m.as_bytes().first() && w == m.as_bytes())
        })
    };
    !publishes_charge_voltage || product_name.is_some_and(names)
}

/// The nameplate paths of a `com.victronenergy.battery.*` service.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Nameplate {
    /// `/ProductName`.
    pub product_name: Option<String>,
    /// `/CustomName`.
    pub custom_name: Option<String>,
    /// `/Serial`.
    pub serial: Option<String>,
    /// `/DeviceInstance`.
    pub device_instance: Option<i64>,
    /// Whether the service publishes `/Info/MaxChargeVoltage` at all (valid or not).
    pub publishes_charge_voltage: bool,
}

/// What a battery-class service is to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A battery of the bank, with its display name.
    Battery(String),
    /// A battery monitor (SmartShunt, BMV, Lynx Shunt): a current and SoC source, never a
    /// battery.
    Monitor,
    /// Not ours: with the reason, for one debug line.
    Ignored(String),
    /// Not decidable yet (no `/ProductName`): look again later.
    Unknown,
}

/// What tells one battery from another (docs/discovery.md §3): its `/Serial`, else its
/// `/CustomName`, each trimmed, an empty one as none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    /// `/CustomName`.
    pub custom_name: Option<String>,
    /// `/Serial`.
    pub serial: Option<String>,
}

impl Device {
    /// The device a nameplate shows.
    pub fn of(nameplate: &Nameplate) -> Device {
        let field = |f: &Option<String>| {
            f.as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        Device {
            custom_name: field(&nameplate.custom_name),
            serial: field(&nameplate.serial),
        }
    }

    /// Whether `other` is this device as far as the bus tells: the same serial where both
    /// publish one, else the same custom name. A pack renamed but with its serial is the same;
    /// two packs that publish neither cannot be told apart.
    pub fn same(&self, other: &Device) -> bool {
        match (&self.serial, &other.serial) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => self.custom_name == other.custom_name,
        }
    }

    /// Whether it can be recognised on another service: it publishes a serial or a custom
    /// name.
    pub fn identifiable(&self) -> bool {
        self.serial.is_some() || self.custom_name.is_some()
    }
}

/// A battery's display name and the device it was given to.
#[derive(Clone, Debug)]
struct Named {
    name: String,
    device: Device,
}

/// The batteries found so far, with names that stay the same for the same device for the life
/// of the process.
#[derive(Clone, Debug)]
pub struct Roster {
    rules: Rules,
    own_service: String,
    /// The battery named on each service.
    named: BTreeMap<String, Named>,
    /// Batteries that left their service to another device: their names stay theirs, for when
    /// they are found again.
    away: Vec<Named>,
    /// Names forgotten ([`Roster::forget`]): `Battery<k>` counts them, so that no number is
    /// given twice.
    forgotten: usize,
}

impl Roster {
    /// An empty roster; `own_service` is our published name, never a battery.
    pub fn new(rules: Rules, own_service: &str) -> Self {
        Self {
            rules,
            own_service: own_service.to_string(),
            named: BTreeMap::new(),
            away: Vec::new(),
            forgotten: 0,
        }
    }

    /// Forgets the name given on `service`, whose battery was never part of the bank and has
    /// been gone for long (services under names that keep changing are not kept for the life
    /// of the process). Found again, it is named as a battery seen for the first time.
    pub fn forget(&mut self, service: &str) {
        if self.named.remove(service).is_some() {
            self.forgotten += 1;
        }
    }

    /// How many services a name is kept for.
    pub fn named_count(&self) -> usize {
        self.named.len()
    }

    /// Decides what `service` is; a battery gets its display name ([`Roster::name`]).
    pub fn classify(&mut self, service: &str, nameplate: &Nameplate) -> Role {
        match self.rule_out(service, nameplate) {
            Some(role) => role,
            None => Role::Battery(self.name(service, nameplate)),
        }
    }

    /// What `service` is when it is no battery of the bank by the rules of
    /// docs/discovery.md §2; `None` for a battery.
    pub fn rule_out(&self, service: &str, nameplate: &Nameplate) -> Option<Role> {
        if service == self.own_service {
            return Some(Role::Ignored("our own service".into()));
        }
        let Some(product) = &nameplate.product_name else {
            return Some(Role::Unknown);
        };
        if is_battery_monitor(Some(product), nameplate.publishes_charge_voltage) {
            return Some(Role::Monitor);
        }
        let included_by_service = self
            .rules
            .include
            .iter()
            .any(|s| matches!(s, Selector::Name(name) if name == service));
        if !included_by_service
            && !self
                .rules
                .product_name
                .iter()
                .any(|name| product.contains(name.as_str()))
        {
            return Some(Role::Ignored(format!(
                "/ProductName `{product}` contains none of {:?}",
                self.rules.product_name
            )));
        }
        let matches =
            |selectors: &[Selector]| selectors.iter().any(|s| selects(s, service, nameplate));
        if !self.rules.include.is_empty() && !matches(&self.rules.include) {
            return Some(Role::Ignored("not in batteries.include".into()));
        }
        if matches(&self.rules.exclude) {
            return Some(Role::Ignored("in batteries.exclude".into()));
        }
        None
    }

    /// The display name of the battery on `service` (docs/discovery.md §3): the one it had
    /// when it is the device named there before; else the device named there leaves it (its
    /// name kept for it), and this one gets the name it had when it left another service, or
    /// a new one.
    pub fn name(&mut self, service: &str, nameplate: &Nameplate) -> String {
        let device = Device::of(nameplate);
        if let Some(named) = self.named.get_mut(service) {
            if named.device.same(&device) {
                named.device = device;
                return named.name.clone();
            }
        }
        self.leave(service);
        let back = (device.identifiable())
            .then(|| {
                self.away
                    .iter()
                    .position(|n| n.device.identifiable() && n.device.same(&device))
            })
            .flatten();
        let name = match back {
            Some(k) => self.away.remove(k).name,
            None => self.new_name(&device),
        };
        let named = Named {
            name: name.clone(),
            device,
        };
        self.named.insert(service.to_string(), named);
        name
    }

    /// The battery named on `service` left it (another device has it now): its name is kept
    /// for it.
    pub fn leave(&mut self, service: &str) {
        if let Some(named) = self.named.remove(service) {
            self.away.push(named);
        }
    }

    /// The device last named on `service`.
    pub fn device_on(&self, service: &str) -> Option<&Device> {
        self.named.get(service).map(|n| &n.device)
    }

    /// Its custom name, else its serial, else `Battery<k>`; `_2`, `_3`, … when taken.
    fn new_name(&self, device: &Device) -> String {
        let base = (device.custom_name.as_ref())
            .or(device.serial.as_ref())
            .cloned()
            .unwrap_or_else(|| {
                let given = self.named.len() + self.away.len() + self.forgotten;
                format!("Battery{}", given + 1)
            });
        let taken = |name: &str| {
            (self.named.values())
                .chain(&self.away)
                .any(|n| n.name == name)
        };
        let mut name = base.clone();
        let mut k = 2;
        while taken(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }
}

fn selects(selector: &Selector, service: &str, nameplate: &Nameplate) -> bool {
    match selector {
        Selector::Instance(n) => nameplate.device_instance == Some(*n),
        Selector::Name(name) => {
            name == service
                || nameplate.custom_name.as_deref() == Some(name.as_str())
                || nameplate.serial.as_deref() == Some(name.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Default for Rules {
        fn default() -> Self {
            Self {
                product_name: vec!["SerialBattery".into()],
                include: Vec::new(),
                exclude: Vec::new(),
            }
        }
    }

    const OWN: &str = "com.victronenergy.battery.aggregate";

    fn serialbattery(custom: Option<&str>, serial: Option<&str>, instance: i64) -> Nameplate {
        Nameplate {
            product_name: Some("SerialBattery(Jkbms)".into()),
            custom_name: custom.map(Into::into),
            serial: serial.map(Into::into),
            device_instance: Some(instance),
            publishes_charge_voltage: true,
        }
    }

    fn service(k: u32) -> String {
        format!("com.victronenergy.battery.ttyUSB{k}")
    }

    #[test]
    fn names_come_from_custom_name_then_serial_then_a_number() {
        let mut r = Roster::new(Rules::default(), OWN);
        assert_eq!(
            r.classify(&service(0), &serialbattery(Some("Left"), Some("S1"), 1)),
            Role::Battery("Left".into())
        );
        assert_eq!(
            r.classify(&service(1), &serialbattery(None, Some("S2"), 2)),
            Role::Battery("S2".into())
        );
        assert_eq!(
            r.classify(&service(2), &serialbattery(Some(" "), None, 3)),
            Role::Battery("Battery3".into())
        );
    }

    #[test]
    fn duplicates_get_suffixes_and_names_stay() {
        let mut r = Roster::new(Rules::default(), OWN);
        let same = serialbattery(None, Some("JK02"), 1);
        assert_eq!(r.classify(&service(0), &same), Role::Battery("JK02".into()));
        assert_eq!(
            r.classify(&service(1), &same),
            Role::Battery("JK02_2".into())
        );
        assert_eq!(
            r.classify(&service(2), &same),
            Role::Battery("JK02_3".into())
        );
        let renamed = serialbattery(Some("Other"), Some("JK02"), 1);
        assert_eq!(
            r.classify(&service(1), &renamed),
            Role::Battery("JK02_2".into()),
            "stable for the process"
        );
    }

    #[test]
    fn another_device_on_a_service_gets_its_own_name_and_the_first_keeps_its_name() {
        let mut r = Roster::new(Rules::default(), OWN);
        let left = serialbattery(Some("Left"), Some("S1"), 1);
        let right = serialbattery(Some("Right"), Some("S2"), 2);
        assert_eq!(r.classify(&service(0), &left), Role::Battery("Left".into()));
        // A driver restart of the same pack, renamed meanwhile: the same serial, the same name.
        let renamed = serialbattery(Some("Renamed"), Some("S1"), 1);
        assert_eq!(r.name(&service(0), &renamed), "Left");
        // The adapters enumerated the other way round: each pack keeps its own name.
        assert_eq!(r.name(&service(0), &right), "Right");
        assert_eq!(r.name(&service(1), &left), "Left");
        assert_eq!(r.device_on(&service(1)), Some(&Device::of(&left)));
        // A third pack calling itself Left is another device: the name is the first one's.
        let other_left = serialbattery(Some("Left"), Some("S3"), 3);
        assert_eq!(r.name(&service(2), &other_left), "Left_2");
        // A pack that left its service keeps its name, found again on another, and no other
        // pack takes the name meanwhile.
        r.leave(&service(2));
        r.leave(&service(0));
        assert_eq!(r.device_on(&service(2)), None);
        assert_eq!(
            r.name(&service(3), &serialbattery(Some("Right"), Some("S4"), 4)),
            "Right_2"
        );
        assert_eq!(r.name(&service(4), &other_left), "Left_2");
        assert_eq!(r.name(&service(5), &right), "Right");
    }

    #[test]
    fn devices_are_told_apart_by_serial_then_custom_name() {
        let device = |custom: Option<&str>, serial: Option<&str>| {
            Device::of(&serialbattery(custom, serial, 1))
        };
        assert!(device(Some("A"), Some("S1")).same(&device(Some("B"), Some("S1"))));
        assert!(!device(Some("A"), Some("S1")).same(&device(Some("A"), Some("S2"))));
        assert!(device(Some("A"), None).same(&device(Some(" A "), Some("S2"))));
        assert!(!device(Some("A"), None).same(&device(Some("B"), None)));
        assert!(device(None, Some(" ")).same(&device(Some(""), None)));
        assert!(!device(None, Some(" ")).identifiable());
        assert!(device(None, Some("S1")).identifiable());
        // Anonymous packs get a number each, and a restart of one keeps it.
        let mut r = Roster::new(Rules::default(), OWN);
        let anonymous = serialbattery(None, None, 1);
        assert_eq!(r.name(&service(0), &anonymous), "Battery1");
        assert_eq!(r.name(&service(1), &anonymous), "Battery2");
        assert_eq!(r.name(&service(0), &anonymous), "Battery1");
    }

    #[test]
    fn shunts_foreign_products_and_ourselves_are_not_batteries() {
        let mut r = Roster::new(Rules::default(), OWN);
        let shunt = Nameplate {
            product_name: Some("SmartShunt 500A/50mV".into()),
            publishes_charge_voltage: true,
            ..Default::default()
        };
        assert_eq!(
            r.classify("com.victronenergy.battery.ttyS5", &shunt),
            Role::Monitor
        );
        // By role: no charge voltage, whatever the product is called.
        let bmv = Nameplate {
            product_name: Some("Battery monitor".into()),
            ..Default::default()
        };
        assert_eq!(
            r.classify("com.victronenergy.battery.ttyS6", &bmv),
            Role::Monitor
        );
        let lynx = Nameplate {
            product_name: Some("Lynx Smart BMS".into()),
            publishes_charge_voltage: true,
            ..Default::default()
        };
        assert!(matches!(
            r.classify("com.victronenergy.battery.lynx", &lynx),
            Role::Ignored(_)
        ));
        assert!(matches!(
            r.classify(OWN, &serialbattery(None, None, 0)),
            Role::Ignored(_)
        ));
    }

    #[test]
    fn a_monitor_is_named_anywhere_in_its_product_name() {
        for name in ["SmartShunt", "BMV-712 Smart", "Lynx Shunt VE.Can", "x BMV"] {
            assert!(is_battery_monitor(Some(name), true), "{name}");
        }
        for name in [
            "",
            "BM",
            "SerialBattery(Jkbms)",
            "Lynx Smart BMS",
            "smartshunt",
        ] {
            assert!(!is_battery_monitor(Some(name), true), "{name}");
        }
        assert!(!is_battery_monitor(None, true));
        assert!(is_battery_monitor(None, false));
    }

    #[test]
    fn product_names_are_a_list_and_a_service_can_be_included_by_name() {
        let can = Nameplate {
            product_name: Some("Pylontech battery".into()),
            publishes_charge_voltage: true,
            ..Default::default()
        };
        let socketcan = "com.victronenergy.battery.socketcan_can1";
        let mut r = Roster::new(
            Rules {
                product_name: vec!["SerialBattery".into(), "Pylontech".into()],
                ..Rules::default()
            },
            OWN,
        );
        assert!(matches!(r.classify(socketcan, &can), Role::Battery(_)));
        let mut r = Roster::new(
            Rules {
                include: vec![Selector::Name(socketcan.into())],
                ..Rules::default()
            },
            OWN,
        );
        assert!(matches!(r.classify(socketcan, &can), Role::Battery(_)));
        assert!(matches!(
            r.classify("com.victronenergy.battery.socketcan_can0", &can),
            Role::Ignored(_)
        ));
        assert_eq!(
            r.classify(&service(9), &Nameplate::default()),
            Role::Unknown
        );
    }

    #[test]
    fn include_and_exclude_match_name_serial_instance_or_service() {
        let rules = Rules {
            include: vec![
                Selector::Name("Left".into()),
                Selector::Instance(7),
                Selector::Name(service(3)),
            ],
            exclude: vec![Selector::Name("S9".into())],
            ..Rules::default()
        };
        let mut r = Roster::new(rules, OWN);
        assert!(matches!(
            r.classify(&service(0), &serialbattery(Some("Left"), None, 1)),
            Role::Battery(_)
        ));
        assert!(matches!(
            r.classify(&service(1), &serialbattery(None, Some("S2"), 7)),
            Role::Battery(_)
        ));
        assert!(matches!(
            r.classify(&service(3), &serialbattery(None, None, 3)),
            Role::Battery(_)
        ));
        assert_eq!(
            r.classify(&service(2), &serialbattery(None, Some("S3"), 2)),
            Role::Ignored("not in batteries.include".into())
        );
        assert_eq!(
            r.classify(&service(4), &serialbattery(Some("Left"), Some("S9"), 4)),
            Role::Ignored("in batteries.exclude".into())
        );
    }
}
