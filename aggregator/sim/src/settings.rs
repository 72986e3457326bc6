//! A simulated `com.victronenergy.settings` that behaves like localsettings where a battery
//! service touches it (docs/venus.md §7): typed settings with `SetValue` coercion and limits,
//! `AddSetting` and `AddSettings` on group objects with localsettings' error codes, and the
//! `ClassAndVrmInstance` allocation that hands out the next free device instance.
//!
//! The settings live in one table here (type, value, default, limits); the published service
//! mirrors the values. `SetValue` arrives through [`BusItemService::on_set`], the
//! `com.victronenergy.Settings` methods through [`BusItemService::on_other`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use zbus::fdo;
use zbus::message::Message;
use zbus::zvariant::{OwnedValue, Value as Wire};

use crate::battery::Item;
use crate::scenario::{valid_object_path, SettingsSpec};
use aggregator_core::value::{TextFormat, Value};
use venus_bus::export::{path_and_member, BusItemService, SetDecision};
use venus_bus::variant::{to_wire, Field};

/// The well-known name.
pub(crate) const SETTINGS_NAME: &str = "com.victronenergy.settings";
/// The interface of `AddSetting`, `AddSettings`, `GetAttributes`.
const SETTINGS_INTERFACE: &str = "com.victronenergy.Settings";
/// Created at start from the scenario.
const OVERVOLTAGE_FEED_IN: &str = "/Settings/CGwacs/OvervoltageFeedIn";
/// The last element of a device instance allocation (docs/venus.md §7).
const CLASS_AND_VRM_INSTANCE: &str = "/ClassAndVrmInstance";

/// localsettings' `AddSetting` error codes (docs/venus.md §7).
mod code {
    pub const NOT_A_GROUP: i32 = -1;
    pub const UNDERSCORE: i32 = -2;
    pub const UNKNOWN_TYPE: i32 = -3;
    pub const INVALID_PATH: i32 = -4;
    pub const TYPE_DIFFERS: i32 = -5;
    pub const INVALID_DEFAULT: i32 = -6;
    pub const OUT_OF_RANGE: i32 = -7;
    pub const IS_GROUP: i32 = -8;
    pub const NOT_UNDER_SETTINGS: i32 = -9;
}

/// A setting's type: `'i'`, `'f'` or `'s'`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Float,
    Text,
}

impl Kind {
    fn from_code(code: &str) -> Option<Kind> {
        match code {
            "i" => Some(Kind::Int),
            "f" => Some(Kind::Float),
            "s" => Some(Kind::Text),
            _ => None,
        }
    }

    /// The type `AddSettings` infers from the D-Bus type of `default`.
    fn of_wire(value: &Wire<'_>) -> Option<Kind> {
        match value {
            Wire::U8(_)
            | Wire::I16(_)
            | Wire::U16(_)
            | Wire::I32(_)
            | Wire::U32(_)
            | Wire::I64(_)
            | Wire::U64(_) => Some(Kind::Int),
            Wire::F64(_) => Some(Kind::Float),
            Wire::Str(_) => Some(Kind::Text),
            Wire::Value(inner) => Kind::of_wire(inner),
            _ => None,
        }
    }

    fn of_value(value: &Value) -> Kind {
        match value {
            Value::Int(_) => Kind::Int,
            Value::Float(_) => Kind::Float,
            Value::Text(_) | Value::Invalid => Kind::Text,
        }
    }

    /// Python's `int()`, `float()` or `str()` of what was sent; `None` when it fails.
    fn convert(self, field: &Field) -> Option<Value> {
        match (self, field) {
            (Kind::Int, Field::Number(v)) if v.is_finite() => Some(Value::Int(v.trunc() as i64)),
            (Kind::Int, Field::Text(t)) => t.trim().parse().ok().map(Value::Int),
            (Kind::Float, Field::Number(v)) => Some(Value::Float(*v)),
            (Kind::Float, Field::Text(t)) => t.trim().parse().ok().map(Value::Float),
            (Kind::Text, Field::Text(t)) => Some(Value::Text(t.clone())),
            (Kind::Text, Field::Number(_)) => {
                Some(Value::Text(TextFormat::Plain.render(&field.to_value())))
            }
            _ => None,
        }
    }

    fn number(self, v: f64) -> Value {
        match self {
            Kind::Int => Value::Int(v as i64),
            _ => Value::Float(v),
        }
    }
}

#[derive(Clone, Debug)]
struct Setting {
    kind: Kind,
    value: Value,
    default: Value,
    /// `(min, max)`; `None` when both are 0 or the setting is a text.
    range: Option<(f64, f64)>,
    silent: bool,
}

impl Setting {
    fn in_range(&self, value: &Value) -> bool {
        let number = match value {
            Value::Int(v) => *v as f64,
            Value::Float(v) => *v,
            _ => return true,
        };
        self.range
            .is_none_or(|(min, max)| number >= min && number <= max)
    }
}

/// The settings table, shared by the `SetValue` and the `Settings` handlers.
#[derive(Default)]
pub(crate) struct SettingsStore {
    settings: Mutex<BTreeMap<String, Setting>>,
}

impl SettingsStore {
    /// The table at start: `OvervoltageFeedIn` and the scenario's presets. Returns the items
    /// to publish (all writeable).
    pub(crate) fn new(spec: &SettingsSpec) -> (Arc<SettingsStore>, Vec<Item>) {
        let store = SettingsStore::default();
        {
            let mut settings = store.lock();
            settings.insert(
                OVERVOLTAGE_FEED_IN.to_string(),
                Setting {
                    kind: Kind::Int,
                    value: Value::Int(spec.overvoltage_feed_in),
                    default: Value::Int(spec.overvoltage_feed_in),
                    range: Some((0.0, 1.0)),
                    silent: false,
                },
            );
            for (path, value) in &spec.preset {
                settings.insert(
                    path.clone(),
                    Setting {
                        kind: Kind::of_value(value),
                        value: value.clone(),
                        default: value.clone(),
                        range: None,
                        silent: false,
                    },
                );
            }
        }
        let items = store
            .lock()
            .iter()
            .map(|(path, s)| (path.clone(), s.value.clone(), text(&s.value)))
            .collect();
        (Arc::new(store), items)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Setting>> {
        // Every update is a single insert, so a poisoned table is still whole.
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Installs the handlers on the published service (before it is served).
    pub(crate) fn install(self: &Arc<Self>, exported: &BusItemService) {
        let store = self.clone();
        exported.on_set(Arc::new(move |path, field| {
            let decision = store.set_value(&path, &field);
            Box::pin(async move { decision })
        }));
        let store = self.clone();
        exported.on_other(Arc::new(move |exported, msg| {
            let store = store.clone();
            Box::pin(async move { store.answer(&exported, &msg).await })
        }));
    }

    /// `SetValue` on a setting: coerced to its type and checked against its limits, like
    /// localsettings (-1 when it cannot be taken). A taken `ClassAndVrmInstance` is moved to the next free instance.
    fn set_value(&self, path: &str, field: &Field) -> SetDecision {
        let mut settings = self.lock();
        let Some(setting) = settings.get(path) else {
            return SetDecision::Code(-1);
        };
        let Some(value) = setting.kind.convert(field) else {
            return SetDecision::Code(-1);
        };
        if !setting.in_range(&value) {
            return SetDecision::Code(-1);
        }
        let value = allocate(&settings, path, value);
        let text = text(&value);
        if let Some(setting) = settings.get_mut(path) {
            setting.value = value.clone();
        }
        SetDecision::Accept(value, text)
    }

    /// Creates a setting (or updates an existing one's attributes, keeping its value).
    /// Returns the value and whether the published table must change, or an error code.
    fn add(
        &self,
        path: &str,
        kind: Option<Kind>,
        default: &Field,
        min: &Field,
        max: &Field,
        silent: bool,
    ) -> Result<(Value, bool), i32> {
        if !path.starts_with("/Settings/") {
            return Err(code::NOT_UNDER_SETTINGS);
        }
        if !valid_object_path(path) {
            return Err(code::INVALID_PATH);
        }
        if path.contains("/_") {
            return Err(code::UNDERSCORE);
        }
        let kind = kind.ok_or(code::UNKNOWN_TYPE)?;
        let default = kind.convert(default).ok_or(code::INVALID_DEFAULT)?;
        let range = match kind {
            Kind::Text => None,
            _ => {
                let limit = |f: &Field| match f {
                    // An empty text is how velib passes "no limit" for text settings.
                    Field::Text(t) if t.is_empty() => Some(0.0),
                    Field::Invalid => Some(0.0),
                    _ => match kind.convert(f) {
                        Some(Value::Int(v)) => Some(v as f64),
                        Some(Value::Float(v)) => Some(v),
                        _ => None,
                    },
                };
                match (limit(min), limit(max)) {
                    (Some(min), Some(max)) if min == 0.0 && max == 0.0 => None,
                    (Some(min), Some(max)) => Some((min, max)),
                    _ => return Err(code::INVALID_PATH),
                }
            }
        };
        let mut settings = self.lock();
        if let Some(existing) = settings.get_mut(path) {
            if existing.kind != kind {
                return Err(code::TYPE_DIFFERS);
            }
            let probe = Setting {
                range,
                ..existing.clone()
            };
            if !probe.in_range(&default) {
                return Err(code::OUT_OF_RANGE);
            }
            existing.default = default;
            existing.range = range;
            existing.silent = silent;
            return Ok((existing.value.clone(), false));
        }
        let group = format!("{path}/");
        if settings.keys().any(|k| k.starts_with(&group)) {
            return Err(code::IS_GROUP);
        }
        let setting = Setting {
            kind,
            value: default.clone(),
            default,
            range,
            silent,
        };
        if !setting.in_range(&setting.value) {
            return Err(code::OUT_OF_RANGE);
        }
        let value = allocate(&settings, path, setting.value.clone());
        settings.insert(
            path.to_string(),
            Setting {
                value: value.clone(),
                ..setting
            },
        );
        Ok((value, true))
    }

    /// Adds a setting and publishes it when it is new.
    async fn add_and_publish(
        &self,
        exported: &BusItemService,
        path: &str,
        kind: Option<Kind>,
        fields: [&Field; 3],
        silent: bool,
    ) -> Result<Value, i32> {
        let (value, new) = self.add(path, kind, fields[0], fields[1], fields[2], silent)?;
        if new {
            exported.insert(path, value.clone(), text(&value), true);
            if let Err(err) = exported.properties_changed(path).await {
                tracing::debug!("PropertiesChanged for {path} not sent: {err}");
            }
        }
        Ok(value)
    }

    /// Answers a `com.victronenergy.Settings` call; `false` when it is not one.
    async fn answer(&self, exported: &BusItemService, msg: &Message) -> bool {
        let hdr = msg.header();
        if hdr.interface().map(|i| i.as_str()) != Some(SETTINGS_INTERFACE) {
            return false;
        }
        let (object, member) = path_and_member(msg);
        let conn = exported.connection();
        let is_setting = self.lock().contains_key(&object);
        let sent = match member.as_str() {
            "AddSetting" | "AddSilentSetting" => {
                type Args = (String, String, OwnedValue, String, OwnedValue, OwnedValue);
                match msg.body().deserialize::<Args>() {
                    Ok((group, name, default, kind, min, max)) => {
                        let code = if is_setting {
                            code::NOT_A_GROUP
                        } else {
                            let path = join(&join(&object, &group), &name);
                            let fields = [
                                &Field::from_owned(&default),
                                &Field::from_owned(&min),
                                &Field::from_owned(&max),
                            ];
                            let silent = member == "AddSilentSetting";
                            match self
                                .add_and_publish(
                                    exported,
                                    &path,
                                    Kind::from_code(&kind),
                                    fields,
                                    silent,
                                )
                                .await
                            {
                                Ok(_) => 0,
                                Err(code) => code,
                            }
                        };
                        conn.reply(&hdr, &code).await
                    }
                    Err(err) => invalid_args(exported, msg, err).await,
                }
            }
            "AddSettings" if !is_setting => {
                match msg.body().deserialize::<Vec<HashMap<String, OwnedValue>>>() {
                    Ok(list) => {
                        let mut results = Vec::with_capacity(list.len());
                        for entry in &list {
                            results.push(self.add_one(exported, &object, entry).await);
                        }
                        conn.reply(&hdr, &results).await
                    }
                    Err(err) => invalid_args(exported, msg, err).await,
                }
            }
            "RemoveSettings" if !is_setting => match msg.body().deserialize::<Vec<String>>() {
                Ok(paths) => {
                    let codes: Vec<i32> = paths
                        .iter()
                        .map(|rel| {
                            let path = join(&object, rel);
                            match self.lock().remove(&path) {
                                Some(_) => {
                                    exported.remove(&path);
                                    0
                                }
                                None => -1,
                            }
                        })
                        .collect();
                    conn.reply(&hdr, &codes).await
                }
                Err(err) => invalid_args(exported, msg, err).await,
            },
            "GetAttributes" if is_setting => {
                let attributes = self.lock().get(&object).map(|s| {
                    let (min, max) = s.range.unwrap_or((0.0, 0.0));
                    (
                        to_wire(&s.default),
                        to_wire(&s.kind.number(min)),
                        to_wire(&s.kind.number(max)),
                        i32::from(s.silent),
                    )
                });
                match attributes {
                    Some(attributes) => conn.reply(&hdr, &attributes).await,
                    None => return false,
                }
            }
            "GetSilent" if is_setting => {
                let silent = self.lock().get(&object).is_some_and(|s| s.silent);
                conn.reply(&hdr, &i32::from(silent)).await
            }
            _ => return false,
        };
        if let Err(err) = sent {
            tracing::debug!("reply to {member} on {object} not sent: {err}");
        }
        true
    }

    /// One entry of `AddSettings`: `path` relative to the object, `default` whose D-Bus type
    /// picks the setting's type, optional `min`, `max`, `silent`.
    async fn add_one(
        &self,
        exported: &BusItemService,
        object: &str,
        entry: &HashMap<String, OwnedValue>,
    ) -> HashMap<String, Wire<'static>> {
        let field = |key: &str| entry.get(key).map(Field::from_owned);
        let rel = field("path")
            .and_then(|f| f.text().map(str::to_string))
            .unwrap_or_default();
        let mut out = HashMap::from([("path".to_string(), Wire::from(rel.clone()))]);
        let result = match entry.get("default") {
            _ if rel.is_empty() => Err(code::INVALID_PATH),
            None => Err(code::INVALID_DEFAULT),
            Some(default) => {
                let kind = Kind::of_wire(default);
                let zero = Field::Number(0.0);
                let min = field("min").unwrap_or(zero.clone());
                let max = field("max").unwrap_or(zero);
                let silent = field("silent").and_then(|f| f.number()).unwrap_or(0.0) != 0.0;
                let path = join(object, &rel);
                self.add_and_publish(
                    exported,
                    &path,
                    kind,
                    [&Field::from_owned(default), &min, &max],
                    silent,
                )
                .await
            }
        };
        match result {
            Ok(value) => {
                out.insert("error".into(), Wire::I32(0));
                out.insert("value".into(), to_wire(&value));
            }
            Err(code) => {
                out.insert("error".into(), Wire::I32(code));
            }
        }
        out
    }
}

/// A setting's text: Python's `str(value)`.
fn text(value: &Value) -> String {
    TextFormat::Plain.render(value)
}

/// `rel` below the object `object` (`rel` may start with a slash).
fn join(object: &str, rel: &str) -> String {
    let base = object.trim_end_matches('/');
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        object.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// A `class:instance` value moved to the next instance no other `ClassAndVrmInstance` of the
/// same class holds (docs/venus.md §7); other settings and values unchanged.
fn allocate(settings: &BTreeMap<String, Setting>, path: &str, value: Value) -> Value {
    if !path.ends_with(CLASS_AND_VRM_INSTANCE) {
        return value;
    }
    let Some((class, wanted)) = class_and_instance(&value) else {
        return value;
    };
    let taken: Vec<i64> = settings
        .iter()
        .filter(|(other, _)| other.as_str() != path && other.ends_with(CLASS_AND_VRM_INSTANCE))
        .filter_map(|(_, s)| class_and_instance(&s.value))
        .filter(|(c, _)| *c == class)
        .map(|(_, instance)| instance)
        .collect();
    let mut instance = wanted;
    while taken.contains(&instance) {
        instance += 1;
    }
    Value::Text(format!("{class}:{instance}"))
}

fn class_and_instance(value: &Value) -> Option<(String, i64)> {
    let Value::Text(text) = value else {
        return None;
    };
    let (class, instance) = text.split_once(':')?;
    Some((class.to_string(), instance.trim().parse().ok()?))
}

async fn invalid_args(
    exported: &BusItemService,
    msg: &Message,
    err: zbus::Error,
) -> zbus::Result<()> {
    exported
        .connection()
        .reply_dbus_error(
            &msg.header(),
            fdo::Error::InvalidArgs(format!("wrong arguments: {err}")),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<SettingsStore> {
        SettingsStore::new(&SettingsSpec {
            overvoltage_feed_in: 1,
            preset: BTreeMap::from([(
                "/Settings/Devices/other/ClassAndVrmInstance".to_string(),
                Value::Text("battery:3".into()),
            )]),
        })
        .0
    }

    fn text_field(t: &str) -> Field {
        Field::Text(t.to_string())
    }

    #[test]
    fn class_and_vrm_instance_takes_the_next_free_instance() {
        let store = store();
        let add = |uid: &str, default: &str| {
            store.add(
                &format!("/Settings/Devices/{uid}/ClassAndVrmInstance"),
                Some(Kind::Text),
                &text_field(default),
                &Field::Number(0.0),
                &Field::Number(0.0),
                false,
            )
        };
        assert_eq!(
            add("a", "battery:1"),
            Ok((Value::Text("battery:1".into()), true))
        );
        assert_eq!(
            add("b", "battery:1"),
            Ok((Value::Text("battery:2".into()), true))
        );
        assert_eq!(
            add("c", "battery:2"),
            Ok((Value::Text("battery:4".into()), true))
        );
        assert_eq!(
            add("d", "dcload:1"),
            Ok((Value::Text("dcload:1".into()), true))
        );
        // Existing: the stored value stays.
        assert_eq!(
            add("a", "battery:7"),
            Ok((Value::Text("battery:1".into()), false))
        );
    }

    #[test]
    fn add_setting_errors_are_localsettings_codes() {
        let store = store();
        let zero = Field::Number(0.0);
        let add = |path: &str, kind: Option<Kind>, default: Field| {
            store
                .add(path, kind, &default, &zero, &zero, false)
                .map(|_| ())
        };
        assert_eq!(
            add("/Foo/Bar", Some(Kind::Int), Field::Number(1.0)),
            Err(-9)
        );
        assert_eq!(
            add("/Settings/_x", Some(Kind::Int), Field::Number(1.0)),
            Err(-2)
        );
        assert_eq!(
            add("/Settings/a b", Some(Kind::Int), Field::Number(1.0)),
            Err(-4)
        );
        assert_eq!(add("/Settings/X", None, Field::Number(1.0)), Err(-3));
        assert_eq!(
            add("/Settings/X", Some(Kind::Int), text_field("abc")),
            Err(-6)
        );
        assert_eq!(
            add(
                "/Settings/CGwacs/OvervoltageFeedIn",
                Some(Kind::Text),
                text_field("x")
            ),
            Err(-5)
        );
        assert_eq!(
            add("/Settings/CGwacs", Some(Kind::Int), Field::Number(1.0)),
            Err(-8)
        );
        let out_of_range = store.add(
            "/Settings/Y",
            Some(Kind::Float),
            &Field::Number(99.0),
            &zero,
            &Field::Number(80.0),
            false,
        );
        assert_eq!(out_of_range, Err(-7));
        assert_eq!(
            add("/Settings/Z", Some(Kind::Float), Field::Number(55.0)),
            Ok(())
        );
    }

    #[test]
    fn set_value_coerces_and_checks_limits() {
        let store = store();
        let set = |path: &str, field: Field| match store.set_value(path, &field) {
            SetDecision::Accept(value, text) => Some((value, text)),
            _ => None,
        };
        assert_eq!(
            set(OVERVOLTAGE_FEED_IN, Field::Number(0.0)),
            Some((Value::Int(0), "0".to_string()))
        );
        assert_eq!(set(OVERVOLTAGE_FEED_IN, Field::Number(5.0)), None);
        assert_eq!(set(OVERVOLTAGE_FEED_IN, text_field("abc")), None);
        assert_eq!(set(OVERVOLTAGE_FEED_IN, Field::Invalid), None);
        assert_eq!(
            set(
                "/Settings/Devices/other/ClassAndVrmInstance",
                text_field("battery:9")
            ),
            Some((Value::Text("battery:9".into()), "battery:9".to_string()))
        );
        assert_eq!(join("/", "/Settings/X"), "/Settings/X");
        assert_eq!(
            join("/Settings/Devices", "a/ClassAndVrmInstance"),
            "/Settings/Devices/a/ClassAndVrmInstance"
        );
    }
}
