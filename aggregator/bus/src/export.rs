//! A service in the `com.victronenergy.BusItem` style (docs/venus.md §1 and §5): one object per
//! path, tree nodes above them, the root with `GetItems` and `ItemsChanged`.
//!
//! Method calls are answered by hand from one table rather than by one registered object per
//! path: the table is the single source of truth, a path that is not in it is
//! `UnknownObject` exactly as libdbus answers, and a thousand paths cost a thousand table
//! entries, not a thousand objects. The daemon and the simulator both publish through this.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_lite::StreamExt;
use zbus::fdo;
use zbus::message::{Header, Message, Type};
use zbus::zvariant::{Endian, OwnedValue, Value as Wire};
use zbus::{Connection, MatchRule, MessageStream};

use crate::socket::MessageWriter;
use crate::variant::{dbus_string, text_to_wire, to_wire, Field};
use crate::{wire, BusConnection};
use aggregator_core::path_hash::PathMap;
use aggregator_core::value::Value;

/// The interface of every item, node and root.
pub const BUS_ITEM: &str = "com.victronenergy.BusItem";

/// Longest wait for a bus that takes no data before an `ItemsChanged` is left for the next
/// one, so that a stalled bus does not hold up the tick.
const PUBLISH_WAIT: Duration = Duration::from_millis(500);

/// What a change handler decides about a `SetValue` from outside.
pub enum SetDecision {
    /// Store this value (and text) and signal it: `SetValue` returns 0.
    Accept(Value, String),
    /// The handler refuses: `SetValue` returns 2.
    Reject,
    /// The value has the wrong type for the path: `SetValue` returns 1.
    WrongType,
    /// Another answer (localsettings says -1 for a value it cannot take).
    Code(i32),
}

/// Decides about `SetValue(path, value)` on a writeable path; may talk to the bus.
pub type SetHandler =
    Arc<dyn Fn(String, Field) -> Pin<Box<dyn Future<Output = SetDecision> + Send>> + Send + Sync>;

/// Answers method calls of other interfaces (the simulated settings' `AddSettings`); returns
/// `false` when the call is not its business.
pub type ExtraHandler = Arc<
    dyn Fn(BusItemService, Message) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync,
>;

#[derive(Clone, Debug)]
struct Entry {
    value: Value,
    text: String,
    writeable: bool,
}

#[derive(Default)]
struct Table {
    /// By path: a tick stores and sends some fifty by name; the rare calls on a node walk them
    /// all.
    items: PathMap<Entry>,
    nodes: BTreeSet<String>,
}

impl Table {
    fn rebuild_nodes(&mut self) {
        self.nodes.clear();
        self.nodes.insert("/".to_string());
        for path in self.items.keys() {
            let mut end = 0;
            while let Some(pos) = path[end + 1..].find('/') {
                end += pos + 1;
                self.nodes.insert(path[..end].to_string());
            }
        }
    }

    /// Items below `node` (all for `/`), keyed relative to it without the leading slash.
    fn below<'a>(&'a self, node: &str) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        let prefix = if node == "/" {
            "/".to_string()
        } else {
            format!("{node}/")
        };
        let len = prefix.len();
        self.items
            .iter()
            .filter(move |(path, _)| path.starts_with(&prefix))
            .map(move |(path, entry)| (&path[len..], entry))
    }

    /// The direct children of a node, for introspection.
    fn children(&self, node: &str) -> BTreeSet<String> {
        self.below(node)
            .map(|(rel, _)| rel.split('/').next().unwrap_or(rel).to_string())
            .collect()
    }
}

struct Shared {
    conn: Connection,
    /// Sends `ItemsChanged` encoded by hand when the connection has a writer.
    writer: Option<(MessageWriter, AtomicU32)>,
    table: Mutex<Table>,
    /// Paths of an `ItemsChanged` the bus did not take, sent with the next one.
    unsent: Mutex<Vec<String>>,
    /// Whether the last `ItemsChanged` was left unsent (logged once per stall).
    stalled: AtomicBool,
    on_set: Mutex<Option<SetHandler>>,
    extra: Mutex<Option<ExtraHandler>>,
}

/// A service in the BusItem style, answered from its one table of paths; cheap to clone.
#[derive(Clone)]
pub struct BusItemService {
    shared: Arc<Shared>,
}

impl BusItemService {
    /// An empty table on `conn`; nothing is answered until [`BusItemService::serve`].
    pub fn new(conn: Connection) -> Self {
        Self::with_writer(BusConnection { conn, writer: None })
    }

    /// An empty table on the bus connection, whose writer (if any) sends `ItemsChanged`
    /// without zbus's message builder.
    pub fn with_writer(bus: BusConnection) -> Self {
        let mut table = Table::default();
        table.rebuild_nodes();
        Self {
            shared: Arc::new(Shared {
                conn: bus.conn,
                // zbus numbers messages up from 1, process-wide; ours count down from the top,
                // so the two ranges do not meet in the life of a device (2^31 ticks).
                writer: bus.writer.map(|w| (w, AtomicU32::new(u32::MAX))),
                table: Mutex::new(table),
                unsent: Mutex::new(Vec::new()),
                stalled: AtomicBool::new(false),
                on_set: Mutex::new(None),
                extra: Mutex::new(None),
            }),
        }
    }

    /// The connection the service speaks through.
    pub fn connection(&self) -> &Connection {
        &self.shared.conn
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-written (every update is
        // a single insert), so a poisoned lock is still good.
        self.shared
            .table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the handler of `SetValue` on writeable paths.
    pub fn on_set(&self, handler: SetHandler) {
        *self.shared.on_set.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Sets the handler of calls to other interfaces.
    pub fn on_other(&self, handler: ExtraHandler) {
        *self.shared.extra.lock().unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Adds or replaces a path (no signal).
    pub fn insert(&self, path: &str, value: Value, text: String, writeable: bool) {
        let mut table = self.table();
        let new = !table.items.contains_key(path);
        table.items.insert(
            path.to_string(),
            Entry {
                value,
                text,
                writeable,
            },
        );
        if new {
            table.rebuild_nodes();
        }
    }

    /// Removes a path (no signal, as velib).
    pub fn remove(&self, path: &str) {
        let mut table = self.table();
        if table.items.remove(path).is_some() {
            table.rebuild_nodes();
        }
    }

    /// The value of a path.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.table().items.get(path).map(|e| e.value.clone())
    }

    /// Stores new values (without signalling); returns those that changed by Python
    /// equality or text, for [`BusItemService::items_changed`].
    pub fn store(&self, changes: Vec<(String, Value, String)>) -> Vec<String> {
        let mut table = self.table();
        let mut changed = Vec::new();
        let mut new_paths = false;
        for (path, value, text) in changes {
            match table.items.get_mut(&path) {
                Some(entry) if entry.value.same_as(&value) && entry.text == text => {}
                Some(entry) => {
                    entry.value = value;
                    entry.text = text;
                    changed.push(path);
                }
                None => {
                    table.items.insert(
                        path.clone(),
                        Entry {
                            value,
                            text,
                            writeable: false,
                        },
                    );
                    new_paths = true;
                    changed.push(path);
                }
            }
        }
        if new_paths {
            table.rebuild_nodes();
        }
        changed
    }

    /// Emits one `ItemsChanged` on `/` holding these paths (nothing when empty). When the bus
    /// takes no data for [`PUBLISH_WAIT`], the paths are kept and go with the next call.
    pub async fn items_changed(&self, paths: &[String]) -> zbus::Result<()> {
        let held =
            std::mem::take(&mut *self.shared.unsent.lock().unwrap_or_else(|p| p.into_inner()));
        let merged;
        let paths = if held.is_empty() {
            paths
        } else {
            let fresh: Vec<String> = paths
                .iter()
                .filter(|p| !held.contains(p))
                .cloned()
                .collect();
            merged = [held, fresh].concat();
            merged.as_slice()
        };
        if paths.is_empty() {
            return Ok(());
        }
        // Encoded by hand: the general serializer costs more than the rest of a tick.
        let body = {
            let table = self.table();
            wire::items_body(paths.iter().filter_map(|p| {
                table
                    .items
                    .get(p)
                    .map(|e| (p.as_str(), &e.value, e.text.as_str()))
            }))
        };
        if let Some((writer, serial)) = &self.shared.writer {
            let serial = serial.fetch_sub(1, Ordering::Relaxed).max(1);
            let msg =
                wire::signal_message(serial, "/", BUS_ITEM, "ItemsChanged", "a{sa{sv}}", &body);
            return match writer.send_within(&msg, PUBLISH_WAIT).await {
                Ok(()) => {
                    if self.shared.stalled.swap(false, Ordering::Relaxed) {
                        tracing::info!("the bus takes data again; held changes sent");
                    }
                    Ok(())
                }
                Err(err) if err.kind() == std::io::ErrorKind::TimedOut => {
                    if !self.shared.stalled.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "the bus takes no data; changes held for the next ItemsChanged"
                        );
                    }
                    *self.shared.unsent.lock().unwrap_or_else(|p| p.into_inner()) = paths.to_vec();
                    Ok(())
                }
                Err(err) => Err(zbus::Error::InputOutput(Arc::new(err))),
            };
        }
        let mut builder = Message::signal("/", BUS_ITEM, "ItemsChanged")?.endian(Endian::Little);
        if let Some(sender) = self.shared.conn.unique_name() {
            builder = builder.sender(sender)?;
        }
        // SAFETY: `items_body` writes a well-formed little-endian `a{sa{sv}}` (its tests read
        // it back through zbus), and the header says little-endian.
        let msg = unsafe { builder.build_raw_body(&body, "a{sa{sv}}", Vec::new()) }?;
        self.shared.conn.send(&msg).await
    }

    /// Emits `PropertiesChanged` on the item's own path.
    pub async fn properties_changed(&self, path: &str) -> zbus::Result<()> {
        let body = {
            let table = self.table();
            match table.items.get(path) {
                Some(entry) => value_and_text(entry),
                None => return Ok(()),
            }
        };
        self.shared
            .conn
            .emit_signal(None::<&str>, path, BUS_ITEM, "PropertiesChanged", &body)
            .await
    }

    /// Starts answering method calls (do this before requesting the name). The stream is
    /// subscribed before this returns, so no call is missed. A `SetValue` is answered on a
    /// task of its own: its handler may wait on the bus (the settings service, up to its time
    /// limit), and the reads of other consumers are not held meanwhile.
    pub async fn serve(&self) -> zbus::Result<tokio::task::JoinHandle<()>> {
        let rule = MatchRule::builder().msg_type(Type::MethodCall).build();
        let mut stream =
            MessageStream::for_match_rule(rule, &self.shared.conn, Some(super::STREAM_QUEUE))
                .await?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Ok(msg) = msg else { continue };
                let may_wait = msg.header().member().is_some_and(|m| m == "SetValue");
                match may_wait {
                    true => {
                        let me = me.clone();
                        tokio::spawn(async move { me.answer(msg).await });
                    }
                    false => me.answer(msg).await,
                }
            }
        }))
    }

    async fn answer(&self, msg: Message) {
        if let Err(err) = self.dispatch(msg).await {
            tracing::debug!("answering a method call failed: {err}");
        }
    }

    async fn dispatch(&self, msg: Message) -> zbus::Result<()> {
        let hdr = msg.header();
        let (path, member) = path_and_member(&msg);
        let interface = hdr.interface().map(|i| i.as_str().to_string());
        let conn = &self.shared.conn;
        match (interface.as_deref(), member.as_str()) {
            (Some("org.freedesktop.DBus.Introspectable"), "Introspect") => {
                let xml = self.introspect(&path);
                return match xml {
                    Some(xml) => conn.reply(&hdr, &xml).await,
                    None => unknown_object(conn, &hdr, &path).await,
                };
            }
            (Some("org.freedesktop.DBus.Peer"), "Ping") => return conn.reply(&hdr, &()).await,
            (Some(BUS_ITEM) | None, _) => {}
            _ => {
                let extra = self
                    .shared
                    .extra
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                if let Some(extra) = extra {
                    if extra(self.clone(), msg.clone()).await {
                        return Ok(());
                    }
                }
                return unknown_method(conn, &hdr, &member).await;
            }
        }

        enum Kind {
            Leaf,
            Node,
            Missing,
        }
        let kind = {
            let table = self.table();
            if table.items.contains_key(&path) {
                Kind::Leaf
            } else if table.nodes.contains(&path) {
                Kind::Node
            } else {
                Kind::Missing
            }
        };
        match (kind, member.as_str()) {
            (Kind::Missing, _) => unknown_object(conn, &hdr, &path).await,
            (Kind::Leaf, "GetValue") => {
                let value = self.get(&path).unwrap_or(Value::Invalid);
                conn.reply(&hdr, &to_wire(&value)).await
            }
            (Kind::Leaf, "GetText") => {
                let text = self
                    .table()
                    .items
                    .get(&path)
                    .map(|e| dbus_string(&e.text).into_owned());
                conn.reply(&hdr, &text.unwrap_or_default()).await
            }
            (Kind::Leaf, "GetDescription") => conn.reply(&hdr, &"").await,
            (Kind::Leaf, "SetValue") => {
                let code = match msg.body().deserialize::<OwnedValue>() {
                    Ok(value) => self.set_value(&path, Field::from_owned(&value)).await,
                    Err(_) => 1,
                };
                conn.reply(&hdr, &code).await
            }
            (Kind::Node, "GetValue") => {
                let map: HashMap<String, Wire<'static>> = self
                    .table()
                    .below(&path)
                    .map(|(rel, e)| (rel.to_string(), to_wire(&e.value)))
                    .collect();
                conn.reply(&hdr, &Wire::from(map)).await
            }
            (Kind::Node, "GetText") => {
                let map: HashMap<String, String> = self
                    .table()
                    .below(&path)
                    .map(|(rel, e)| (rel.to_string(), dbus_string(&e.text).into_owned()))
                    .collect();
                conn.reply(&hdr, &Wire::from(map)).await
            }
            (Kind::Node, "GetItems") if path == "/" => {
                let map: HashMap<String, HashMap<&'static str, Wire<'static>>> = self
                    .table()
                    .items
                    .iter()
                    .map(|(p, e)| (p.clone(), value_and_text(e)))
                    .collect();
                conn.reply(&hdr, &map).await
            }
            _ => unknown_method(conn, &hdr, &member).await,
        }
    }

    async fn set_value(&self, path: &str, field: Field) -> i32 {
        let (writeable, same) = {
            let table = self.table();
            match table.items.get(path) {
                Some(e) => (e.writeable, e.value.same_as(&field.to_value())),
                None => (false, false),
            }
        };
        if !writeable {
            return 1;
        }
        if same {
            return 0;
        }
        let handler = self
            .shared
            .on_set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(handler) = handler else { return 2 };
        match handler(path.to_string(), field).await {
            SetDecision::Accept(value, text) => {
                let changed = self.store(vec![(path.to_string(), value, text)]);
                if !changed.is_empty() {
                    if let Err(err) = self.properties_changed(path).await {
                        tracing::debug!("PropertiesChanged for {path} not sent: {err}");
                    }
                }
                0
            }
            SetDecision::Reject => 2,
            SetDecision::WrongType => 1,
            SetDecision::Code(code) => code,
        }
    }

    fn introspect(&self, path: &str) -> Option<String> {
        let table = self.table();
        let leaf = table.items.contains_key(path);
        if !leaf && !table.nodes.contains(path) {
            return None;
        }
        let mut xml = String::from(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n\
             \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n\
             <interface name=\"org.freedesktop.DBus.Introspectable\">\n\
             <method name=\"Introspect\"><arg direction=\"out\" type=\"s\"/></method>\n\
             </interface>\n",
        );
        xml.push_str(&format!("<interface name=\"{BUS_ITEM}\">\n"));
        if leaf {
            xml.push_str(
                "<method name=\"GetValue\"><arg direction=\"out\" type=\"v\"/></method>\n\
                 <method name=\"GetText\"><arg direction=\"out\" type=\"s\"/></method>\n\
                 <method name=\"SetValue\"><arg direction=\"in\" type=\"v\"/>\
                 <arg direction=\"out\" type=\"i\"/></method>\n\
                 <method name=\"GetDescription\"><arg direction=\"in\" type=\"s\"/>\
                 <arg direction=\"in\" type=\"i\"/><arg direction=\"out\" type=\"s\"/></method>\n\
                 <signal name=\"PropertiesChanged\"><arg type=\"a{sv}\"/></signal>\n",
            );
        } else {
            xml.push_str(
                "<method name=\"GetValue\"><arg direction=\"out\" type=\"v\"/></method>\n\
                 <method name=\"GetText\"><arg direction=\"out\" type=\"v\"/></method>\n",
            );
            if path == "/" {
                xml.push_str(
                    "<method name=\"GetItems\"><arg direction=\"out\" type=\"a{sa{sv}}\"/></method>\n\
                     <signal name=\"ItemsChanged\"><arg type=\"a{sa{sv}}\"/></signal>\n",
                );
            }
        }
        xml.push_str("</interface>\n");
        if !leaf {
            for child in table.children(path) {
                xml.push_str(&format!("<node name=\"{child}\"/>\n"));
            }
        }
        xml.push_str("</node>\n");
        Some(xml)
    }
}

fn value_and_text(entry: &Entry) -> HashMap<&'static str, Wire<'static>> {
    HashMap::from([
        ("Value", to_wire(&entry.value)),
        ("Text", text_to_wire(&entry.text)),
    ])
}

async fn unknown_object(conn: &Connection, hdr: &Header<'_>, path: &str) -> zbus::Result<()> {
    conn.reply_dbus_error(
        hdr,
        fdo::Error::UnknownObject(format!("No object at path {path}")),
    )
    .await
}

async fn unknown_method(conn: &Connection, hdr: &Header<'_>, member: &str) -> zbus::Result<()> {
    conn.reply_dbus_error(
        hdr,
        fdo::Error::UnknownMethod(format!("No method {member} here")),
    )
    .await
}

/// The object path and member of a method call (empty when missing), owned so that the call
/// can be answered after awaiting.
pub fn path_and_member(msg: &Message) -> (String, String) {
    let hdr = msg.header();
    let path = hdr.path().map(|p| p.as_str().to_string());
    let member = hdr.member().map(|m| m.as_str().to_string());
    (path.unwrap_or_default(), member.unwrap_or_default())
}
