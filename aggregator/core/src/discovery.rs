//! Which services are batteries, and their display names (SPEC §2). Pure: the bus module hands
//! over each service's name and nameplate paths; this decides.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which battery-class services belong to the bank (`batteries:` in `config.yaml`).
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    /// A battery's `/ProductName` must contain this.
    pub product_name: String,
    /// Only these batteries (by `/CustomName`, `/Serial`, `/DeviceInstance` or service name).
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
}

/// What a battery-class service is to us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A battery of the bank, with its display name.
    Battery(String),
    /// A SmartShunt in battery-monitor mode (a current source, never a battery).
    SmartShunt,
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
        if product.contains("SmartShunt") {
            return Role::SmartShunt;
        }
        if !product.contains(self.rules.product_name.as_str()) {
            return Role::Ignored(format!(
                "/ProductName `{product}` does not contain `{}`",
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
                product_name: "SerialBattery".into(),
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
            ..Default::default()
        };
        assert_eq!(
            r.classify("com.victronenergy.battery.ttyS5", &shunt),
            Role::SmartShunt
        );
        let lynx = Nameplate {
            product_name: Some("Lynx Smart BMS".into()),
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
