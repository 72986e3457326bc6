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

/// The batteries found so far, with names that stay the same for the life of the process.
#[derive(Clone, Debug)]
pub struct Roster {
    rules: Rules,
    own_service: String,
    names: BTreeMap<String, String>,
}

impl Roster {
    /// An empty roster; `own_service` is our published name, never a battery.
    pub fn new(rules: Rules, own_service: &str) -> Self {
        Self {
            rules,
            own_service: own_service.to_string(),
            names: BTreeMap::new(),
        }
    }

    /// Decides what `service` is; a battery gets its display name on the first call, kept
    /// from then on.
    pub fn classify(&mut self, service: &str, nameplate: &Nameplate) -> Role {
        if service == self.own_service {
            return Role::Ignored("our own service".into());
        }
        let Some(product) = &nameplate.product_name else {
            return Role::Unknown;
        };
        if is_battery_monitor(Some(product), nameplate.publishes_charge_voltage) {
            return Role::Monitor;
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
            return Role::Ignored(format!(
                "/ProductName `{product}` contains none of {:?}",
                self.rules.product_name
            ));
        }
        let matches =
            |selectors: &[Selector]| selectors.iter().any(|s| selects(s, service, nameplate));
        if !self.rules.include.is_empty() && !matches(&self.rules.include) {
            return Role::Ignored("not in batteries.include".into());
        }
        if matches(&self.rules.exclude) {
            return Role::Ignored("in batteries.exclude".into());
        }
        if let Some(name) = self.names.get(service) {
            return Role::Battery(name.clone());
        }
        let base = nameplate
            .custom_name
            .as_deref()
            .or(nameplate.serial.as_deref())
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("Battery{}", self.names.len() + 1));
        let mut name = base.clone();
        let mut k = 2;
        while self.names.values().any(|n| *n == name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(service.to_string(), name.clone());
        Role::Battery(name)
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
