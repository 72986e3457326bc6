//! The consumer side (VENUS-DBUS.md §3.3): a cache of the values of every service we read,
//! kept current by signals.
//!
//! Three match rules in all (`NameOwnerChanged` in the `com.victronenergy` namespace, every
//! `PropertiesChanged` and every `ItemsChanged` of the BusItem interface), then `ListNames` and
//! one `GetItems` per wanted service. Signals are routed by the sender's unique name; a signal
//! from a service not (yet) scanned, or for a path we do not read, is dropped. Services come
//! and go while running; our own service is never read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use tokio::sync::Notify;
use zbus::zvariant::Value as Wire;
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::bus::client;
use crate::bus::export::BUS_ITEM;
use crate::bus::variant::Field;

/// The kinds of service we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `com.victronenergy.battery.*`: batteries and battery-monitor SmartShunts.
    Battery,
    /// `com.victronenergy.vebus.*`: Multis and Quattros.
    Vebus,
    /// `com.victronenergy.solarcharger.*`.
    SolarCharger,
    /// `com.victronenergy.dcload.*`: DC-meter SmartShunts.
    Dcload,
    /// `com.victronenergy.settings`.
    Settings,
    /// `com.victronenergy.system`.
    System,
}

impl Class {
    /// The class of a bus name, if we read it.
    pub fn of(service: &str) -> Option<Class> {
        let rest = service.strip_prefix("com.victronenergy.")?;
        let class = rest.split('.').next()?;
        match class {
            "battery" => Some(Class::Battery),
            "vebus" => Some(Class::Vebus),
            "solarcharger" => Some(Class::SolarCharger),
            "dcload" => Some(Class::Dcload),
            "settings" if rest == "settings" => Some(Class::Settings),
            "system" if rest == "system" => Some(Class::System),
            _ => None,
        }
    }

    /// Whether a path of this class is kept in the cache.
    pub fn reads(self, path: &str) -> bool {
        const IDENTITY: [&str; 5] = [
            "/Connected",
            "/ProductName",
            "/CustomName",
            "/Serial",
            "/DeviceInstance",
        ];
        if IDENTITY.contains(&path) {
            return true;
        }
        match self {
            Class::Battery => {
                BATTERY_PATHS.contains(&path)
                    || path.starts_with("/Alarms/")
                    || path
                        .strip_prefix("/Voltages/Cell")
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }
            Class::Vebus | Class::SolarCharger | Class::Dcload => {
                matches!(path, "/Dc/0/Current" | "/Dc/0/Voltage")
            }
            Class::Settings => {
                path == FEED_IN_SETTING
                    || (path.starts_with("/Settings/Devices/")
                        && (path.ends_with("/ClassAndVrmInstance")
                            || path.ends_with("/CustomName")))
            }
            Class::System => path == "/SystemState/LowSoc",
        }
    }
}

/// The feed-in setting (SPEC §0).
pub const FEED_IN_SETTING: &str = "/Settings/CGwacs/OvervoltageFeedIn";

const BATTERY_PATHS: [&str; 33] = [
    "/Dc/0/Voltage",
    "/Dc/0/Current",
    "/Dc/0/Power",
    "/Dc/0/Temperature",
    "/InstalledCapacity",
    "/ConsumedAmphours",
    "/Capacity",
    "/Soc",
    "/TimeToGo",
    "/System/MaxCellTemperature",
    "/System/MinCellTemperature",
    "/System/MaxTemperatureCellId",
    "/System/MinTemperatureCellId",
    "/System/MaxVoltageCellId",
    "/System/MinVoltageCellId",
    "/System/MaxCellVoltage",
    "/System/MinCellVoltage",
    "/System/NrOfCellsPerBattery",
    "/System/NrOfModulesOnline",
    "/System/NrOfModulesOffline",
    "/System/NrOfModulesBlockingCharge",
    "/System/NrOfModulesBlockingDischarge",
    "/Io/AllowToCharge",
    "/Io/AllowToDischarge",
    "/Io/AllowToBalance",
    "/Voltages/Sum",
    "/Voltages/Diff",
    "/Info/MaxChargeCurrent",
    "/Info/MaxDischargeCurrent",
    "/Info/MaxChargeVoltage",
    "/Info/ChargeMode",
    "/Mgmt/Connection",
    "/ProductId",
];

/// One service's cached values.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its class.
    pub class: Class,
    /// The unique name owning it.
    pub owner: String,
    /// The values of the paths we read.
    pub values: HashMap<String, Field>,
    /// When a value last changed.
    pub changed_at: Instant,
    /// Whether the first `GetItems` has been answered.
    pub scanned: bool,
}

impl Service {
    /// A value, if the service has the path.
    pub fn get(&self, path: &str) -> Option<&Field> {
        self.values.get(path)
    }
}

/// The cache: services by well-known name (so ordered by it).
#[derive(Debug, Default)]
pub struct Cache {
    /// Scanned and scanning services.
    pub services: BTreeMap<String, Service>,
    by_owner: HashMap<String, String>,
}

impl Cache {
    /// The services of one class, scanned, in name order.
    pub fn of_class(&self, class: Class) -> impl Iterator<Item = (&String, &Service)> {
        self.services
            .iter()
            .filter(move |(_, s)| s.class == class && s.scanned)
    }

    fn apply(&mut self, owner: &str, path: &str, value: Field) {
        let Some(name) = self.by_owner.get(owner) else {
            return;
        };
        let Some(service) = self.services.get_mut(name) else {
            return;
        };
        if !service.class.reads(path) {
            return;
        }
        match service.values.get_mut(path) {
            Some(slot) if *slot == value => {}
            Some(slot) => {
                *slot = value;
                service.changed_at = Instant::now();
            }
            None => {
                service.values.insert(path.to_string(), value);
                service.changed_at = Instant::now();
            }
        }
    }

    fn forget(&mut self, name: &str) -> bool {
        match self.services.remove(name) {
            Some(service) => {
                self.by_owner.remove(&service.owner);
                true
            }
            None => false,
        }
    }
}

/// Something that changed in the set of services, for the daemon's log and its early tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// A service was scanned (new, or with a new owner).
    Added(String),
    /// A service left the bus.
    Removed(String),
}

struct Inner {
    conn: Connection,
    own: String,
    cache: Mutex<Cache>,
    events: Mutex<Vec<Discovery>>,
    news: Notify,
}

/// The running monitor; cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

impl Monitor {
    /// Subscribes, lists the bus and starts scanning; `own` is our published name, never read.
    pub async fn start(conn: &Connection, own: &str) -> zbus::Result<Monitor> {
        let name_owner = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg0ns("com.victronenergy")?
            .build();
        let properties = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(BUS_ITEM)?
            .member("PropertiesChanged")?
            .build();
        let items = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(BUS_ITEM)?
            .member("ItemsChanged")?
            .path("/")?
            .build();
        let queue = Some(4096);
        let mut owners = MessageStream::for_match_rule(name_owner, conn, queue).await?;
        let mut props = MessageStream::for_match_rule(properties, conn, queue).await?;
        let mut batch = MessageStream::for_match_rule(items, conn, queue).await?;

        let monitor = Monitor {
            inner: Arc::new(Inner {
                conn: conn.clone(),
                own: own.to_string(),
                cache: Mutex::new(Cache::default()),
                events: Mutex::new(Vec::new()),
                news: Notify::new(),
            }),
        };
        let me = monitor.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    Some(Ok(msg)) = owners.next() => { me.on_name_owner(&msg); continue; }
                    Some(Ok(msg)) = props.next() => msg,
                    Some(Ok(msg)) = batch.next() => msg,
                    else => break,
                };
                me.on_values(&msg);
            }
        });
        for name in client::list_names(conn).await? {
            if monitor.wanted(&name) {
                monitor.scan(name);
            }
        }
        Ok(monitor)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads the cache.
    pub fn with<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
        f(&self.cache())
    }

    /// The discovery changes since the last call.
    pub fn take_events(&self) -> Vec<Discovery> {
        std::mem::take(&mut *self.inner.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until a service was added or removed.
    pub async fn news(&self) {
        self.inner.news.notified().await;
    }

    fn wanted(&self, name: &str) -> bool {
        name != self.inner.own && Class::of(name).is_some()
    }

    fn event(&self, event: Discovery) {
        self.inner
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        self.inner.news.notify_one();
    }

    fn on_name_owner(&self, msg: &Message) {
        let Ok((name, _old, new)) = msg.body().deserialize::<(String, String, String)>() else {
            return;
        };
        if !self.wanted(&name) {
            return;
        }
        if self.cache().forget(&name) {
            self.event(Discovery::Removed(name.clone()));
        }
        if !new.is_empty() {
            self.scan(name);
        }
    }

    fn on_values(&self, msg: &Message) {
        let header = msg.header();
        let Some(sender) = header.sender() else {
            return;
        };
        let sender = sender.as_str();
        // Which service sent it, and whether we read that path, before decoding anything:
        // our own ItemsChanged and paths we do not read cost a lookup only.
        let class = {
            let cache = self.cache();
            match cache
                .by_owner
                .get(sender)
                .and_then(|n| cache.services.get(n))
            {
                Some(service) => service.class,
                None => return,
            }
        };
        let body = msg.body();
        match header.member().map(|m| m.as_str()) {
            Some("PropertiesChanged") => {
                let Some(path) = header.path().map(|p| p.as_str()) else {
                    return;
                };
                if !class.reads(path) {
                    return;
                }
                let Ok(changes) = body.deserialize::<HashMap<&str, Wire<'_>>>() else {
                    return;
                };
                if let Some(value) = changes.get("Value") {
                    let field = Field::from_wire(value);
                    self.cache().apply(sender, path, field);
                }
            }
            Some("ItemsChanged") => {
                let Ok(items) = body.deserialize::<HashMap<&str, HashMap<&str, Wire<'_>>>>() else {
                    return;
                };
                let fields: Vec<(&str, Field)> = items
                    .iter()
                    .filter(|(path, _)| class.reads(path))
                    .filter_map(|(path, entry)| {
                        Some((*path, Field::from_wire(entry.get("Value")?)))
                    })
                    .collect();
                let mut cache = self.cache();
                for (path, field) in fields {
                    cache.apply(sender, path, field);
                }
            }
            _ => {}
        }
    }

    /// Scans a service on a task of its own (a slow service cannot hold up the others).
    fn scan(&self, name: String) {
        let me = self.clone();
        tokio::spawn(async move {
            for attempt in 0..3 {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                match me.scan_once(&name).await {
                    Ok(true) => return,
                    Ok(false) => return,
                    Err(err) => tracing::debug!("scanning {name} failed: {err}"),
                }
            }
            tracing::warn!("{name} does not answer GetItems; it is left out until it re-registers");
        });
    }

    /// Returns Ok(false) when the service left meanwhile.
    async fn scan_once(&self, name: &str) -> zbus::Result<bool> {
        let Some(class) = Class::of(name) else {
            return Ok(false);
        };
        let Some(owner) = client::name_owner(&self.inner.conn, name).await else {
            return Ok(false);
        };
        {
            let mut cache = self.cache();
            cache.by_owner.insert(owner.clone(), name.to_string());
            cache.services.insert(
                name.to_string(),
                Service {
                    class,
                    owner: owner.clone(),
                    values: HashMap::new(),
                    changed_at: Instant::now(),
                    scanned: false,
                },
            );
        }
        let items = match client::get_items(&self.inner.conn, name).await {
            Ok(items) => items,
            Err(err) => {
                self.cache().forget(name);
                return Err(err);
            }
        };
        {
            let mut cache = self.cache();
            let Some(service) = cache.services.get_mut(name) else {
                return Ok(false);
            };
            if service.owner != owner {
                return Ok(false);
            }
            service.values = items
                .into_iter()
                .filter(|(path, _)| class.reads(path))
                .collect();
            service.scanned = true;
            service.changed_at = Instant::now();
        }
        self.event(Discovery::Added(name.to_string()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_the_first_three_name_parts() {
        assert_eq!(
            Class::of("com.victronenergy.battery.ttyUSB0"),
            Some(Class::Battery)
        );
        assert_eq!(
            Class::of("com.victronenergy.vebus.ttyS3"),
            Some(Class::Vebus)
        );
        assert_eq!(
            Class::of("com.victronenergy.settings"),
            Some(Class::Settings)
        );
        assert_eq!(Class::of("com.victronenergy.system"), Some(Class::System));
        assert_eq!(Class::of("com.victronenergy.systemcalc"), None);
        assert_eq!(Class::of("com.victronenergy.grid.cgwacs"), None);
        assert_eq!(Class::of("org.freedesktop.DBus"), None);
    }

    #[test]
    fn only_the_paths_we_use_are_cached() {
        assert!(Class::Battery.reads("/Voltages/Cell32"));
        assert!(Class::Battery.reads("/Voltages/Cell100"));
        assert!(!Class::Battery.reads("/Voltages/Cell"));
        assert!(!Class::Battery.reads("/Balances/Cell3"));
        assert!(Class::Battery.reads("/Alarms/BmsCable"));
        assert!(Class::Vebus.reads("/Dc/0/Current"));
        assert!(!Class::Vebus.reads("/Ac/Out/L1/P"));
        assert!(Class::Settings.reads(FEED_IN_SETTING));
        assert!(Class::Settings.reads("/Settings/Devices/aggregatebatteries/CustomName"));
        assert!(!Class::Settings.reads("/Settings/SystemSetup/BatteryService"));
        assert!(Class::System.reads("/SystemState/LowSoc"));
    }
}
