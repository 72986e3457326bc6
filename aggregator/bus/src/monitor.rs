//! The consumer side (docs/venus.md §6): a cache of the values of every service we read,
//! kept current by signals.
//!
//! Three match rules in all: `NameOwnerChanged` in the `com.victronenergy` namespace on the
//! main (zbus) connection, which wakes us when a service comes or goes; every
//! `PropertiesChanged` and every `ItemsChanged` of the BusItem interface on the value
//! connection ([`raw`](crate::raw)), which is read at each tick up to a barrier (so the
//! cache holds everything the bus delivered before the tick) and while a scan waits. `ListNames`, then per wanted service `GetNameOwner` (zbus) and
//! `GetItems` (on the value connection, so that its answer and the signals stay in the order the
//! service sent them). Signals are routed by the sender's unique name; a signal from a service
//! not (yet) scanned, or for a path we do not read, is dropped after its header. Services come
//! and go while running; our own service is never read. A service that does not answer its
//! `GetItems` is asked again, less and less often ([`ScanRetry`]), for as long as the same
//! process owns its name (docs/discovery.md §7).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use tokio::sync::Notify;
use zbus::{Connection, MatchRule, Message, MessageStream};

use aggregator_core::path_hash::{PathHasher, PathMap};
use aggregator_core::reading::{battery_slot, is_battery_path};
use plugin_api::DcClass;

use crate::client::{self, CALL_TIMEOUT};
use crate::export::BUS_ITEM;
use crate::path_key::PathKey;
use crate::raw::{CallSender, RawConnection};
use crate::variant::Field;
use crate::wire::{self, Kind};

/// The kinds of service we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// `com.victronenergy.battery.*`: batteries and battery-monitor SmartShunts.
    Battery,
    /// `com.victronenergy.vebus.*`: Multis and Quattros.
    Vebus,
    /// `com.victronenergy.solarcharger.*`.
    SolarCharger,
    /// `com.victronenergy.dcload.*`: DC-meter SmartShunts and other DC load meters.
    Dcload,
    /// The other DC devices that put current into the bank or take it out: Multi RS,
    /// inverters, chargers, Orion XS, alternators, DC sources and DC systems.
    Dc(DcClass),
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
            // Read with their kin, as systemcalc adds them up: a fuel cell is a DC source
            // (positive = into the bank), a DC genset an alternator on an engine.
            "fuelcell" => Some(Class::Dc(DcClass::DcSource)),
            "dcgenset" => Some(Class::Dc(DcClass::Alternator)),
            other => DcClass::from_service_class(other).map(Class::Dc),
        }
    }

    /// Whether a path of this class is kept in the cache (asked for every signal, so a
    /// `match`, which the compiler turns into a switch on the length, not a list search).
    pub fn reads(self, path: &str) -> bool {
        if matches!(
            path,
            "/Connected" | "/ProductName" | "/CustomName" | "/Serial" | "/DeviceInstance"
        ) {
            return true;
        }
        match self {
            Class::Battery => is_battery_path(path),
            // Output 0 only of a charger with several: the others feed other batteries.
            Class::Vebus | Class::SolarCharger | Class::Dcload | Class::Dc(_)
                if matches!(path, "/Dc/0/Current" | "/Dc/0/Voltage") =>
            {
                true
            }
            // An inverter without `/Dc/0/Current` is counted by its AC output
            // (docs/current.md §5).
            Class::Dc(DcClass::Inverter) => matches!(
                path,
                "/Ac/Out/L1/P"
                    | "/Ac/Out/L1/V"
                    | "/Ac/Out/L1/I"
                    | "/Ac/Out/L2/P"
                    | "/Ac/Out/L2/V"
                    | "/Ac/Out/L2/I"
                    | "/Ac/Out/L3/P"
                    | "/Ac/Out/L3/V"
                    | "/Ac/Out/L3/I"
            ),
            Class::Vebus | Class::SolarCharger | Class::Dcload | Class::Dc(_) => false,
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

/// The feed-in setting (docs/feedin.md §1).
pub const FEED_IN_SETTING: &str = "/Settings/CGwacs/OvervoltageFeedIn";

/// A service's values. A path a battery publishes and a tick reads has a slot
/// ([`battery_slot`]): a tick reads a battery's values by index, where a map had it hash each
/// path and compare it with its key, in memory gone cold since the tick before. Every other
/// path is kept by path (held in the key when short: see [`PathKey`]). Which of the two holds a
/// path depends on the path alone, whatever the class of the service.
#[derive(Clone, Debug, Default)]
pub struct Values {
    slots: Vec<Option<Field>>,
    by_path: HashMap<PathKey, Field, BuildHasherDefault<PathHasher>>,
}

impl Values {
    /// The value of a path, if the service has it.
    pub fn get(&self, path: &str) -> Option<&Field> {
        match battery_slot(path) {
            Some(slot) => self.slot(slot),
            None => self.by_path.get(path),
        }
    }

    /// The value of a slot (see [`battery_slot`]), if the service has its path.
    #[inline]
    pub fn slot(&self, slot: usize) -> Option<&Field> {
        self.slots.get(slot)?.as_ref()
    }

    /// Whether the service has the path.
    pub fn contains_key(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Sets a path's value; whether it was not that value before (a new path counts).
    pub fn insert(&mut self, path: &str, value: Field) -> bool {
        match battery_slot(path) {
            Some(slot) => {
                if self.slots.len() <= slot {
                    self.slots.resize(slot + 1, None);
                }
                let place = &mut self.slots[slot];
                let changed = place.as_ref() != Some(&value);
                if changed {
                    *place = Some(value);
                }
                changed
            }
            None => match self.by_path.get_mut(path) {
                Some(place) if *place == value => false,
                Some(place) => {
                    *place = value;
                    true
                }
                None => {
                    self.by_path.insert(PathKey::new(path), value);
                    true
                }
            },
        }
    }
}

impl<P: AsRef<str>> FromIterator<(P, Field)> for Values {
    fn from_iter<I: IntoIterator<Item = (P, Field)>>(items: I) -> Self {
        let mut values = Values::default();
        for (path, value) in items {
            values.insert(path.as_ref(), value);
        }
        values
    }
}

/// One service's cached values.
#[derive(Clone, Debug)]
pub struct Service {
    /// Its class.
    pub class: Class,
    /// The unique name owning it.
    pub owner: String,
    /// The values of the paths we read.
    pub values: Values,
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

    /// The values of a scan: all of them at once, and the service now scanned.
    fn fill(&mut self, values: Values, now: Instant) {
        self.values = values;
        self.scanned = true;
        self.changed_at = now;
    }

    fn set(&mut self, path: &str, value: Field, now: Instant) {
        if self.values.insert(path, value) {
            self.changed_at = now;
        }
    }
}

/// A `GetItems` sent on the value connection.
#[derive(Debug)]
struct Pending {
    name: String,
    owner: String,
    answer: Option<Answer>,
}

#[derive(Clone, Debug)]
enum Answer {
    Scanned,
    /// The service left (or changed owner) before its answer came.
    Gone,
    /// An error answer (its name), or an answer we cannot read.
    Failed(String),
}

const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";

/// The cache: services by well-known name (so ordered by it).
#[derive(Debug, Default)]
pub struct Cache {
    /// Scanned and scanning services.
    pub services: BTreeMap<String, Service>,
    by_owner: PathMap<String>,
    pending: HashMap<u32, Pending>,
}

impl Cache {
    /// The services of one class, scanned, in name order.
    pub fn of_class(&self, class: Class) -> impl Iterator<Item = (&String, &Service)> {
        self.services
            .iter()
            .filter(move |(_, s)| s.class == class && s.scanned)
    }

    /// One message of the value connection: a value signal, or the answer of a scan.
    fn receive(&mut self, msg: &wire::Message<'_>, now: Instant, added: &mut Vec<String>) {
        match msg.kind {
            Kind::Signal => self.signal(msg, now),
            Kind::Return | Kind::Error => self.answer(msg, now, added),
            _ => {}
        }
    }

    fn signal(&mut self, msg: &wire::Message<'_>, now: Instant) {
        if msg.interface != Some(BUS_ITEM) {
            return;
        }
        let Some(service) = msg
            .sender
            .and_then(|sender| self.by_owner.get(sender))
            .and_then(|name| self.services.get_mut(name))
        else {
            return;
        };
        let class = service.class;
        match (msg.member, msg.signature) {
            (Some("PropertiesChanged"), "a{sv}") => {
                let Some(path) = msg.path.filter(|p| class.reads(p)) else {
                    return;
                };
                if let Ok(Some(value)) = msg.body.dict_value("Value") {
                    service.set(path, value, now);
                }
            }
            (Some("ItemsChanged"), "a{sa{sv}}") => {
                // A malformed tail leaves the entries before it applied.
                let _ = msg
                    .body
                    .items(|p| class.reads(p), |p, value| service.set(p, value, now));
            }
            _ => {}
        }
    }

    fn answer(&mut self, msg: &wire::Message<'_>, now: Instant, added: &mut Vec<String>) {
        let Some(pending) = msg.reply_serial.and_then(|s| self.pending.get_mut(&s)) else {
            return;
        };
        if msg.kind == Kind::Error {
            let name = msg.error_name.unwrap_or("an error without a name");
            pending.answer = Some(Answer::Failed(name.to_string()));
            return;
        }
        let Some(service) = owned_by(&mut self.services, &pending.name, &pending.owner) else {
            pending.answer = Some(Answer::Gone);
            return;
        };
        if msg.signature != "a{sa{sv}}" {
            pending.answer = Some(Answer::Failed(format!(
                "GetItems answered `{}`, not a{{sa{{sv}}}}",
                msg.signature
            )));
            return;
        }
        let class = service.class;
        let mut values = Values::default();
        let read = msg.body.items(
            |p| class.reads(p),
            |p, value| {
                values.insert(p, value);
            },
        );
        pending.answer = Some(match read {
            Ok(()) => {
                service.fill(values, now);
                added.push(pending.name.clone());
                Answer::Scanned
            }
            Err(err) => Answer::Failed(err.to_string()),
        });
    }

    /// Values from the fallback scan (zbus `GetItems`/`GetValue`).
    fn scanned(&mut self, name: &str, owner: &str, values: HashMap<String, Field>) -> bool {
        let Some(service) = owned_by(&mut self.services, name, owner) else {
            return false;
        };
        let class = service.class;
        let values = (values.into_iter())
            .filter(|(p, _)| class.reads(p))
            .collect();
        service.fill(values, Instant::now());
        true
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

    /// Forgets `name` while `owner` owns it: a scan of an old owner that failed must not take
    /// away the entry of the owner that took the name since.
    fn forget_owned(&mut self, name: &str, owner: &str) {
        if owned_by(&mut self.services, name, owner).is_some() {
            self.forget(name);
        }
    }
}

/// The service `name` while `owner` still owns it: a scan's values belong to the owner it
/// asked, not to one that took the name since.
fn owned_by<'a>(
    services: &'a mut BTreeMap<String, Service>,
    name: &str,
    owner: &str,
) -> Option<&'a mut Service> {
    services.get_mut(name).filter(|s| s.owner == owner)
}

/// Something that changed in the set of services, for the daemon's log and its early tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Discovery {
    /// A service was scanned (new, or with a new owner).
    Added(String),
    /// A service left the bus.
    Removed(String),
}

/// How a service that does not answer its `GetItems` is asked again (docs/discovery.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanRetry {
    /// The wait for the first attempt's answer, doubled at each attempt after a failed one.
    pub answer_within: Duration,
    /// The longest wait for one answer.
    pub longest_answer_wait: Duration,
    /// The pause after the first attempt that failed, doubled after each failed one after it.
    pub first_pause: Duration,
    /// The longest pause between two attempts.
    pub longest_pause: Duration,
}

impl Default for ScanRetry {
    /// [`CALL_TIMEOUT`] for the first answer, then 10 s, 20 s and 25 s for each later one: a
    /// service that answers the bus's usual callers, whose calls wait 25 s (libdbus's default
    /// time-out, which dbus-python and so velib use), is read by us too. Pauses of 2 s, 4 s, …
    /// up to a minute between attempts.
    fn default() -> Self {
        ScanRetry {
            answer_within: CALL_TIMEOUT,
            longest_answer_wait: Duration::from_secs(25),
            first_pause: Duration::from_secs(2),
            longest_pause: Duration::from_secs(60),
        }
    }
}

impl ScanRetry {
    /// How long the attempt after `failed` failed ones waits for its answer.
    pub fn answer_wait(&self, failed: u32) -> Duration {
        let longest = self.longest_answer_wait.max(self.answer_within);
        2u32.checked_pow(failed)
            .and_then(|factor| self.answer_within.checked_mul(factor))
            .map_or(longest, |wait| wait.min(longest))
    }
}

/// The scan numbers of the names on the bus.
#[derive(Default)]
struct Scans {
    by_name: HashMap<String, u64>,
    /// The last number given.
    given: u64,
}

struct Inner {
    conn: Connection,
    own: String,
    retry: ScanRetry,
    /// The scan each name on the bus is scanned by, by the number it got (a scan of another
    /// number stops): the name's owner changed, or it left the bus, which removes its entry
    /// (names that keep changing, a driver with a counter in its name, are not kept for the
    /// life of the process).
    scans: Mutex<Scans>,
    /// The connection's `NameOwnerChanged` ended (the connection closed): nothing is followed
    /// any more, and scans still waiting stop.
    ended: AtomicBool,
    /// Locked before `cache` wherever both are held; never across a wait (reads do not wait).
    raw: Mutex<RawConnection>,
    calls: CallSender,
    broken: AtomicBool,
    cache: Mutex<Cache>,
    events: Mutex<Vec<Discovery>>,
    news: Notify,
}

/// The running monitor; cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// The match rules of the value connection: every value signal of every `BusItem` service
/// (`PropertiesChanged` of one path, `ItemsChanged` of many at the root).
pub fn value_rules() -> [String; 2] {
    [
        format!("type='signal',interface='{BUS_ITEM}',member='PropertiesChanged'"),
        format!("type='signal',interface='{BUS_ITEM}',member='ItemsChanged',path='/'"),
    ]
}

impl Monitor {
    /// Subscribes, lists the bus and starts scanning; `own` is our published name, never read.
    /// The value connection goes to the bus at `address`, which must be `conn`'s.
    pub async fn start(conn: &Connection, address: &str, own: &str) -> zbus::Result<Monitor> {
        Self::start_with(conn, address, own, ScanRetry::default()).await
    }

    /// [`Monitor::start`], asking services that do not answer again as `retry` says.
    pub async fn start_with(
        conn: &Connection,
        address: &str,
        own: &str,
        retry: ScanRetry,
    ) -> zbus::Result<Monitor> {
        let name_owner = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .arg0ns("com.victronenergy")?
            .build();
        let [properties, items] = value_rules();
        // Before ListNames: every value a scan misses comes as a signal.
        let raw = RawConnection::connect(address, &[&properties, &items])
            .await
            .map_err(|err| zbus::Error::Failure(format!("value connection to D-Bus: {err}")))?;
        let mut owners =
            MessageStream::for_match_rule(name_owner, conn, Some(super::STREAM_QUEUE)).await?;

        let monitor = Monitor {
            inner: Arc::new(Inner {
                conn: conn.clone(),
                own: own.to_string(),
                retry,
                scans: Mutex::new(Scans::default()),
                ended: AtomicBool::new(false),
                calls: raw.sender(),
                raw: Mutex::new(raw),
                broken: AtomicBool::new(false),
                cache: Mutex::new(Cache::default()),
                events: Mutex::new(Vec::new()),
                news: Notify::new(),
            }),
        };
        let me = monitor.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = owners.next().await {
                me.on_name_owner(&msg);
            }
            me.inner.ended.store(true, Ordering::Relaxed);
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

    fn raw(&self) -> MutexGuard<'_, RawConnection> {
        self.inner
            .raw
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes in everything the value connection received so far.
    pub fn drain(&self) {
        let mut added = Vec::new();
        let result = {
            let mut raw = self.raw();
            let mut cache = self.cache();
            let now = Instant::now();
            raw.drain(|msg| cache.receive(msg, now, &mut added))
        };
        for name in added {
            self.event(Discovery::Added(name));
        }
        if let Err(err) = result {
            if !self.inner.broken.swap(true, Ordering::Relaxed) {
                tracing::error!("the value connection to D-Bus failed: {err}");
            }
        }
    }

    /// Whether the value connection failed (the daemon then connects anew).
    pub fn broken(&self) -> bool {
        self.inner.broken.load(Ordering::Relaxed)
    }

    /// Brings the cache up to everything the bus delivered before now, and returns the age
    /// of the view: the time since the view was last known to hold everything.
    ///
    /// First the socket is read. When messages came since the last call and took so little
    /// of the socket that it cannot have filled, the bus daemon was routing to us and had
    /// nothing queued for us: the view is current, with no round-trip to wait for (the
    /// common case, at one wake-up per tick), unless a barrier of an earlier call is still
    /// unanswered. Else a barrier is sent on the value connection and the socket read until
    /// its answer is in, waiting for the socket when it is momentarily empty, for `limit` at
    /// most (a barrier not answered by then keeps the next calls waiting for one until it
    /// is). A bus daemon that stopped sends nothing: the next call waits for a barrier.
    pub async fn catch_up(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.drain();
        let quiet = {
            let mut raw = self.raw();
            let quiet = raw.take_quiet() && raw.barriers().all_answered() && !self.broken();
            if quiet {
                raw.barriers_mut().current_at(started);
            }
            quiet
        };
        if !quiet {
            self.wait_for_barrier(limit).await;
            // What the wait read is behind us: the next call counts from here.
            self.raw().take_quiet();
        }
        self.raw().barriers().age(Instant::now())
    }

    /// Sends a barrier and reads until its answer is in, for `limit` at most.
    async fn wait_for_barrier(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let (serial, call) = self.raw().barrier();
        if let Err(err) = self.inner.calls.send(&call, limit).await {
            tracing::debug!("barrier not sent on the value connection: {err}");
        }
        // Registered at the first wait, and kept until the answer is in.
        let mut waiter = None;
        loop {
            self.drain();
            if self.raw().barriers().is_answered(serial) || self.broken() {
                return;
            }
            let waiter = match &mut waiter {
                Some(waiter) => waiter,
                None => match self.raw().waiter() {
                    Ok(registered) => waiter.insert(registered),
                    Err(err) => {
                        tracing::debug!("cannot wait for the value connection: {err}");
                        return;
                    }
                },
            };
            match tokio::time::timeout_at(deadline, waiter.readable()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::debug!("cannot wait for the value connection: {err}");
                    return;
                }
                Err(_late) => {
                    // What came meanwhile is still taken in.
                    self.drain();
                    return;
                }
            }
        }
    }

    /// The cache, as the last read left it.
    pub fn read<R>(&self, f: impl FnOnce(&Cache) -> R) -> R {
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
        if new.is_empty() {
            // Gone: a scan still waiting for it stops.
            self.lock_scans().by_name.remove(&name);
        } else {
            self.scan(name);
        }
    }

    fn lock_scans(&self) -> std::sync::MutexGuard<'_, Scans> {
        self.inner.scans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new number for scanning `name`: a scan with another one stops. Numbers are never
    /// given twice, so a scan of a name that left and came back never takes itself for the
    /// new one's.
    fn next_scan(&self, name: &str) -> u64 {
        let mut scans = self.lock_scans();
        scans.given += 1;
        let number = scans.given;
        scans.by_name.insert(name.to_string(), number);
        number
    }

    /// Whether the scan of `name` numbered `number` is still wanted.
    fn scan_wanted(&self, name: &str, number: u64) -> bool {
        self.lock_scans().by_name.get(name) == Some(&number) && self.following()
    }

    /// How many names the monitor keeps a scan number for: those on the bus it reads.
    #[doc(hidden)]
    pub fn scans_kept(&self) -> usize {
        self.lock_scans().by_name.len()
    }

    /// Whether the monitor still follows the bus (its connections are up).
    fn following(&self) -> bool {
        !self.inner.ended.load(Ordering::Relaxed) && !self.broken()
    }

    /// Scans a service on a task of its own (a slow service cannot hold up the others, nor a
    /// tick), asking again while it does not answer, less and less often, for as long as the
    /// same process owns the name (docs/discovery.md §7). One line when it is first left
    /// waiting, one when it is read at last or no longer waited for.
    fn scan(&self, name: String) {
        let number = self.next_scan(&name);
        // Held weakly between attempts: a monitor dropped (the daemon reconnected) is not
        // kept for its scans.
        let monitor = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut pause = Duration::ZERO;
            let (mut attempts, mut failed) = (0u32, 0u32);
            let started = Instant::now();
            // Whether it was read; `None`: the monitor stopped following the bus.
            let read = loop {
                let Some(me) = Monitor::upgrade(&monitor) else {
                    break None;
                };
                if !me.scan_wanted(&name, number) {
                    break me.following().then_some(false);
                }
                attempts += 1;
                let within = me.inner.retry.answer_wait(failed);
                let error = match me.scan_once(&name, attempts == 1, within).await {
                    Ok(read) => break Some(read),
                    Err(error) => error,
                };
                failed += 1;
                let retry = me.inner.retry;
                pause = (pause * 2).max(retry.first_pause).min(retry.longest_pause);
                if failed == 1 {
                    tracing::warn!(
                        "{name} does not answer GetItems ({error}); asked again after {} s, then \
                         less and less often (at most every {} s, waiting up to {} s for an \
                         answer) while it is on the bus",
                        pause.as_secs_f64(),
                        retry.longest_pause.as_secs_f64(),
                        retry.answer_wait(u32::MAX).as_secs_f64()
                    );
                } else {
                    tracing::debug!(
                        "{name} does not answer GetItems ({error}), attempt {attempts}"
                    );
                }
                drop(me);
                tokio::time::sleep(pause).await;
            };
            if failed == 0 {
                return;
            }
            let waited = started.elapsed().as_secs_f64();
            match read {
                Some(true) => tracing::info!(
                    "{name} answered GetItems after {waited:.0} s and {attempts} attempts: read"
                ),
                Some(false) => tracing::info!(
                    "{name} is no longer waited for: the process that did not answer left the bus"
                ),
                None => {}
            }
        });
    }

    fn upgrade(inner: &Weak<Inner>) -> Option<Monitor> {
        inner.upgrade().map(|inner| Monitor { inner })
    }

    /// One attempt, waiting `within` for the answer: `Ok(true)` once read, `Ok(false)` when
    /// nobody owns the name any more; `first`: the first attempt, whose answer is looked for
    /// often (a bank found quickly at start), where a later one's is left mostly to the tick's
    /// reading.
    async fn scan_once(&self, name: &str, first: bool, within: Duration) -> zbus::Result<bool> {
        let Some(class) = Class::of(name) else {
            return Ok(false);
        };
        let Some(owner) = client::name_owner(&self.inner.conn, name).await? else {
            return Ok(false);
        };
        let serial = self.inner.calls.next_serial();
        {
            let mut cache = self.cache();
            cache.by_owner.insert(owner.clone(), name.to_string());
            cache.services.insert(
                name.to_string(),
                Service {
                    class,
                    owner: owner.clone(),
                    values: Values::default(),
                    changed_at: Instant::now(),
                    scanned: false,
                },
            );
            // Expected before it is sent: the tick may read the answer first.
            cache.pending.insert(
                serial,
                Pending {
                    name: name.to_string(),
                    owner: owner.clone(),
                    answer: None,
                },
            );
        }
        let call = wire::method_call(serial, &owner, "/", BUS_ITEM, "GetItems", &[]);
        let sent = self.inner.calls.send(&call, within).await;
        if let Err(err) = sent {
            let mut cache = self.cache();
            cache.pending.remove(&serial);
            cache.forget_owned(name, &owner);
            return Err(zbus::Error::Failure(format!("GetItems not sent: {err}")));
        }
        let longest_look = match first {
            true => Duration::from_millis(50),
            false => Duration::from_secs(1),
        };
        let answer = self.wait_for_answer(serial, within, longest_look).await;
        match answer {
            Answer::Scanned => Ok(true),
            Answer::Gone => Ok(false),
            // A service older than GetItems: its values the slow way.
            Answer::Failed(why) if why == UNKNOWN_METHOD => {
                let items = match client::get_items(&self.inner.conn, name).await {
                    Ok(items) => items,
                    Err(err) => {
                        self.cache().forget_owned(name, &owner);
                        return Err(err);
                    }
                };
                if !self.cache().scanned(name, &owner, items) {
                    return Ok(false);
                }
                self.event(Discovery::Added(name.to_string()));
                Ok(true)
            }
            Answer::Failed(why) => {
                self.cache().forget_owned(name, &owner);
                // Mostly the error's name the service answered: one escaped line.
                Err(zbus::Error::Failure(format!(
                    "GetItems: {}",
                    super::escaped(&why)
                )))
            }
        }
    }

    /// Reads the value connection until the answer to `serial` is in (the first look soon,
    /// then less often, up to every `longest_look`), or `within` has passed.
    async fn wait_for_answer(
        &self,
        serial: u32,
        within: Duration,
        longest_look: Duration,
    ) -> Answer {
        let deadline = Instant::now() + within;
        let mut pause = Duration::from_millis(1);
        loop {
            let late = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(late)).await;
            pause = (pause * 2).min(longest_look);
            self.drain();
            let mut cache = self.cache();
            let answer = cache.pending.get(&serial).and_then(|p| p.answer.clone());
            let late = Instant::now() >= deadline;
            if answer.is_some() || late || self.broken() {
                cache.pending.remove(&serial);
                return answer.unwrap_or_else(|| {
                    Answer::Failed(format!("no answer within {:.1} s", within.as_secs_f64()))
                });
            }
        }
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
        assert_eq!(
            Class::of("com.victronenergy.dcdc.ttyS9"),
            Some(Class::Dc(DcClass::Dcdc))
        );
        assert_eq!(
            Class::of("com.victronenergy.dcsystem.ttyS9"),
            Some(Class::Dc(DcClass::DcSystem))
        );
        assert_eq!(
            Class::of("com.victronenergy.fuelcell.ttyUSB2"),
            Some(Class::Dc(DcClass::DcSource))
        );
        assert_eq!(
            Class::of("com.victronenergy.dcgenset.socketcan_can0_di0"),
            Some(Class::Dc(DcClass::Alternator))
        );
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
        assert!(Class::Dc(DcClass::Inverter).reads("/Ac/Out/L3/I"));
        assert!(Class::Dc(DcClass::Inverter).reads("/Dc/0/Current"));
        assert!(!Class::Dc(DcClass::Multi).reads("/Ac/Out/L1/P"));
        assert!(Class::Settings.reads(FEED_IN_SETTING));
        assert!(Class::Settings.reads("/Settings/Devices/aggregatebatteries/CustomName"));
        assert!(!Class::Settings.reads("/Settings/SystemSetup/BatteryService"));
        assert!(Class::System.reads("/SystemState/LowSoc"));
    }

    #[test]
    fn a_value_reads_back_by_its_path_whether_it_has_a_slot_or_not() {
        let one = Field::Number(1.0);
        // A table path, a cell, an identity path, a cell not written out and a settings path.
        let paths = [
            "/Dc/0/Voltage",
            "/Voltages/Cell16",
            "/ProductName",
            "/Voltages/Cell016",
            FEED_IN_SETTING,
        ];
        let mut values = Values::default();
        for path in paths {
            assert!(!values.contains_key(path), "{path}");
            assert!(values.insert(path, one.clone()), "{path} is new");
            assert!(!values.insert(path, one.clone()), "{path} is the same");
            assert_eq!(values.get(path), Some(&one), "{path}");
        }
        assert!(values.insert("/Voltages/Cell16", Field::Invalid));
        assert_eq!(values.get("/Voltages/Cell16"), Some(&Field::Invalid));
        // The cell not written out keeps its own value: no tick reads it as cell 16.
        assert_eq!(values.get("/Voltages/Cell016"), Some(&one));
        // What has a slot reads the same by slot.
        let cell_16 = aggregator_core::reading::cell_slot(16).unwrap();
        assert_eq!(values.slot(cell_16), Some(&Field::Invalid));
        assert_eq!(values.slot(1), values.get("/Dc/0/Voltage"));
        assert_eq!(values.slot(cell_16 + 1), None);
        assert_eq!(values.slot(usize::MAX), None);
        // Collected from a scan, the same.
        let scanned: Values = paths.iter().map(|p| (*p, one.clone())).collect();
        for path in paths {
            assert_eq!(scanned.get(path), Some(&one), "{path}");
        }
        assert_eq!(scanned.get("/Dc/0/Current"), None);
    }
}
