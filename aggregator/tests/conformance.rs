//! Our service against the Venus OS wire contract (docs/venus.md §1, §2, §5 and §7), read with a
//! plain zbus client on a private `dbus-daemon`, with the simulator as the rest of the system.

use crate::support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aggregator_sim::{Scenario, Simulator};
use futures_lite::StreamExt;
use support::bus::{call, client, items, num, until, wait_for_name, Daemon, OWN};
use support::config::TestConfig;
use support::world::{runtime, World};
use venus_bus::export::BusItemService;
use venus_bus::private::PrivateBus;
use zbus::zvariant::{OwnedValue, Value};
use zbus::{Connection, MatchRule, MessageStream};

const SCENARIO: &str = r#"
step: 200ms
jitter: true
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
settings:
  overvoltage_feed_in: 1
  preset: { "/Settings/Devices/other_device/ClassAndVrmInstance": "battery:100" }
segments:
  - duration: 1h
    cell_voltage: [3.30, 3.40]
    battery_current: 10
"#;

fn config() -> String {
    TestConfig::default()
        .safety(|s| s.max_cell_voltage(3.65))
        .section("publish", |p| p.set("device_instance", 100))
        .to_yaml()
}

async fn world() -> World {
    World::start(SCENARIO, &config()).await
}

fn value_of(msg: &zbus::Message) -> OwnedValue {
    assert_eq!(msg.body().signature().to_string(), "v");
    msg.body().deserialize::<OwnedValue>().expect("v")
}

fn is_invalid(value: &Value<'_>) -> bool {
    matches!(value, Value::Array(a) if a.is_empty() && a.element_signature().to_string() == "i")
}

#[test]
fn the_first_items_after_registration_are_complete() {
    runtime().block_on(async {
        let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
        let conn = client(bus.address()).await;
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus")
            .unwrap()
            .member("NameOwnerChanged")
            .unwrap()
            .arg(0, OWN)
            .unwrap()
            .build();
        let mut owners = MessageStream::for_match_rule(rule, &conn, None)
            .await
            .unwrap();
        let scenario = Scenario::parse(SCENARIO, "conformance.yaml").unwrap();
        let _sim = Simulator::start(bus.address(), scenario).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(bus.address(), dir.path(), &config());

        let signal = tokio::time::timeout(Duration::from_secs(20), owners.next())
            .await
            .unwrap_or_else(|_| panic!("never registered; log:\n{}", daemon.log_text()))
            .unwrap()
            .unwrap();
        let (_, old, new): (String, String, String) = signal.body().deserialize().unwrap();
        assert!(old.is_empty() && !new.is_empty());
        // Straight away, as a consumer does on NameOwnerChanged.
        let first = items(&conn, OWN).await;
        for path in [
            "/DeviceInstance",
            "/Connected",
            "/ProductName",
            "/ProductId",
            "/Mgmt/Connection",
            "/Mgmt/ProcessName",
            "/Mgmt/ProcessVersion",
            "/FirmwareVersion",
            "/Info/MaxChargeVoltage",
            "/Info/MaxChargeCurrent",
            "/Info/MaxDischargeCurrent",
            "/Dc/0/Voltage",
            "/Soc",
            // The stock battery page's state of health, from the packs' own.
            "/Soh",
        ] {
            let (value, _) = first.get(path).unwrap_or_else(|| panic!("{path} missing"));
            assert!(!is_invalid(value), "{path} invalid in the first GetItems");
        }
        assert_eq!(num(&first, "/System/NrOfBatteries"), Some(2.0));
        assert_eq!(num(&first, "/Connected"), Some(1.0));
        // 100 belongs to another device: the next free instance.
        assert_eq!(num(&first, "/DeviceInstance"), Some(101.0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !daemon.log_text().contains("registered") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(daemon
            .log_text()
            .contains("registered com.victronenergy.battery.aggregate"));
    });
}

#[test]
fn leaves_nodes_and_root_answer_as_velib_does() {
    runtime().block_on(async {
        let w = world().await;
        let c = &w.conn;
        let (ok, _) = until(c, Duration::from_secs(10), |i| {
            num(i, "/Dc/0/Voltage").is_some()
        })
        .await;
        assert!(ok);

        // Leaf: GetValue is a variant holding the value itself, GetText a plain string.
        let v = value_of(&call(c, OWN, "/Dc/0/Voltage", "GetValue").await.unwrap());
        assert!(matches!(&*v, Value::F64(x) if *x > 50.0), "{v:?}");
        let t = call(c, OWN, "/Dc/0/Voltage", "GetText").await.unwrap();
        assert_eq!(t.body().signature().to_string(), "s");
        let text: String = t.body().deserialize().unwrap();
        assert!(
            text.ends_with('V')
                && text[..text.len() - 1].split('.').nth(1).map(str::len) == Some(2),
            "{text}"
        );
        let v = value_of(&call(c, OWN, "/DeviceInstance", "GetValue").await.unwrap());
        assert!(matches!(&*v, Value::I32(101)), "{v:?}");
        let v = value_of(&call(c, OWN, "/ProductName", "GetValue").await.unwrap());
        assert!(matches!(&*v, Value::Str(s) if s.as_str() == "AggregateBatteries"));
        let t: String = call(c, OWN, "/ProductId", "GetText")
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
        assert_eq!(t, "0xBA44");

        // Invalid: an empty `ai` directly in the variant, text `---`.
        let v = value_of(&call(c, OWN, "/TimeToGo", "GetValue").await.unwrap());
        assert!(is_invalid(&v), "/TimeToGo while charging: {v:?}");
        let t: String = call(c, OWN, "/TimeToGo", "GetText")
            .await
            .unwrap()
            .body()
            .deserialize()
            .unwrap();
        assert_eq!(t, "---");

        // Node: relative keys, GetText a variant holding a{ss}.
        let v = value_of(&call(c, OWN, "/Dc", "GetValue").await.unwrap());
        let map: HashMap<String, OwnedValue> = HashMap::try_from(v).unwrap();
        let mut keys: Vec<_> = map.keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["0/Current", "0/Power", "0/Temperature", "0/Voltage"]);
        let t = call(c, OWN, "/Dc/0", "GetText").await.unwrap();
        assert_eq!(t.body().signature().to_string(), "v");
        let texts: HashMap<String, String> =
            HashMap::try_from(t.body().deserialize::<OwnedValue>().unwrap()).unwrap();
        assert!(texts["Voltage"].ends_with('V'));

        // Root: GetValue with relative keys, GetItems with absolute ones.
        let v = value_of(&call(c, OWN, "/", "GetValue").await.unwrap());
        let all: HashMap<String, OwnedValue> = HashMap::try_from(v).unwrap();
        assert!(all.contains_key("DeviceInstance") && all.contains_key("Info/MaxChargeVoltage"));
        assert!(all.keys().all(|k| !k.starts_with('/')));
        let reply = call(c, OWN, "/", "GetItems").await.unwrap();
        assert_eq!(reply.body().signature().to_string(), "a{sa{sv}}");
        let raw: HashMap<String, HashMap<String, OwnedValue>> = reply.body().deserialize().unwrap();
        assert_eq!(raw.len(), all.len());
        for (path, entry) in &raw {
            assert!(path.starts_with('/'), "{path}");
            assert!(
                entry.contains_key("Value") && entry.contains_key("Text"),
                "{path}"
            );
            assert!(
                !matches!(&*entry["Value"], Value::Value(_)),
                "{path}: a variant in a variant"
            );
            assert!(matches!(&*entry["Text"], Value::Str(_)), "{path}");
        }

        // Errors as libdbus gives them.
        let err = call(c, OWN, "/Dc", "GetItems").await.unwrap_err();
        assert!(
            err.to_string().contains("UnknownMethod"),
            "GetItems on a node: {err}"
        );
        let err = call(c, OWN, "/No/Such/Path", "GetValue").await.unwrap_err();
        assert!(err.to_string().contains("UnknownObject"), "{err}");
        let err = call(c, OWN, "/Dc", "SetValue").await.unwrap_err();
        assert!(err.to_string().contains("UnknownMethod"), "{err}");
        drop(w);
    });
}

#[test]
fn introspection_lists_the_children() {
    runtime().block_on(async {
        let w = world().await;
        let introspect = |path: &'static str| {
            let c = w.conn.clone();
            async move {
                let reply = c
                    .call_method(
                        Some(OWN),
                        path,
                        Some("org.freedesktop.DBus.Introspectable"),
                        "Introspect",
                        &(),
                    )
                    .await
                    .unwrap();
                reply.body().deserialize::<String>().unwrap()
            }
        };
        let root = introspect("/").await;
        for child in ["Dc", "Info", "System", "DeviceInstance", "Mgmt", "Alarms"] {
            assert!(
                root.contains(&format!("<node name=\"{child}\"/>")),
                "{child} in\n{root}"
            );
        }
        assert!(root.contains("com.victronenergy.BusItem") && root.contains("GetItems"));
        assert!(root.contains("ItemsChanged"));
        let leaf = introspect("/Dc/0/Voltage").await;
        assert!(leaf.contains("SetValue") && leaf.contains("PropertiesChanged"));
        assert!(!leaf.contains("<node name"));
        let node = introspect("/Dc").await;
        assert!(node.contains("<node name=\"0\"/>") && !node.contains("GetItems"));
    });
}

#[test]
fn one_items_changed_per_tick_from_the_owner_with_only_changed_paths() {
    runtime().block_on(async {
        let w = world().await;
        let owner = wait_for_name(&w.conn, OWN, Duration::from_secs(1))
            .await
            .unwrap();
        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("com.victronenergy.BusItem")
            .unwrap()
            .member("ItemsChanged")
            .unwrap()
            .path("/")
            .unwrap()
            .build();
        let mut stream = MessageStream::for_match_rule(rule, &w.conn, None)
            .await
            .unwrap();
        let started = Instant::now();
        let mut signals = Vec::new();
        while started.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_millis(500), stream.next()).await
            {
                // Every ItemsChanged on the bus: keep ours.
                if msg.header().sender().is_some_and(|s| s.as_str() == owner) {
                    signals.push(msg);
                }
            }
        }
        // The values jitter every step: a signal every tick (200 ms), never more.
        assert!(
            (5..=12).contains(&signals.len()),
            "{} ItemsChanged in 2 s",
            signals.len()
        );
        // Each signal holds changes only: a path never repeats its previous value, and what
        // never changes is never sent.
        let mut model: HashMap<String, (OwnedValue, String)> = HashMap::new();
        for msg in &signals {
            assert_eq!(msg.body().signature().to_string(), "a{sa{sv}}");
            let changes: HashMap<String, HashMap<String, OwnedValue>> =
                msg.body().deserialize().unwrap();
            assert!(!changes.is_empty());
            for constant in [
                "/DeviceInstance",
                "/ProductName",
                "/Connected",
                "/CustomName",
            ] {
                assert!(!changes.contains_key(constant), "{constant} did not change");
            }
            for (path, entry) in changes {
                assert!(path.starts_with('/'), "{path}");
                let value = entry.get("Value").expect("Value").try_clone().unwrap();
                let text = entry.get("Text").expect("Text").try_clone().unwrap();
                let text = String::try_from(text).unwrap();
                if let Some(before) = model.get(&path) {
                    assert!(
                        before.0 != value || before.1 != text,
                        "{path} is in ItemsChanged but did not change"
                    );
                }
                model.insert(path, (value, text));
            }
        }
    });
}

async fn set_value(c: &Connection, path: &str, value: Value<'_>) -> i32 {
    c.call_method(
        Some(OWN),
        path,
        Some("com.victronenergy.BusItem"),
        "SetValue",
        &value,
    )
    .await
    .unwrap()
    .body()
    .deserialize()
    .unwrap()
}

#[test]
fn only_the_custom_name_is_writeable_and_it_survives_a_restart() {
    runtime().block_on(async {
        let mut w = world().await;
        let c = w.conn.clone();
        assert_eq!(set_value(&c, "/Dc/0/Voltage", Value::F64(1.0)).await, 1);
        assert_eq!(
            set_value(&c, "/Info/MaxChargeVoltage", Value::F64(60.0)).await,
            1
        );
        assert_eq!(set_value(&c, "/CustomName", Value::I32(5)).await, 1);

        let rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .member("PropertiesChanged")
            .unwrap()
            .path("/CustomName")
            .unwrap()
            .build();
        let mut changes = MessageStream::for_match_rule(rule, &c, None).await.unwrap();
        assert_eq!(
            set_value(&c, "/CustomName", Value::from("Garage bank")).await,
            0
        );
        let signal = tokio::time::timeout(Duration::from_secs(2), changes.next())
            .await
            .expect("PropertiesChanged for /CustomName")
            .unwrap()
            .unwrap();
        let body: HashMap<String, OwnedValue> = signal.body().deserialize().unwrap();
        assert!(matches!(&*body["Value"], Value::Str(s) if s.as_str() == "Garage bank"));
        // The same value again: accepted, nothing emitted.
        assert_eq!(
            set_value(&c, "/CustomName", Value::from("Garage bank")).await,
            0
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(500), changes.next())
                .await
                .is_err(),
            "no signal for an unchanged value"
        );
        // Kept in the settings, next to the device instance.
        let stored = c
            .call_method(
                Some("com.victronenergy.settings"),
                "/Settings/Devices/aggregatebatteries/CustomName",
                Some("com.victronenergy.BusItem"),
                "GetValue",
                &(),
            )
            .await
            .unwrap();
        let stored: OwnedValue = stored.body().deserialize().unwrap();
        assert!(matches!(&*stored, Value::Str(s) if s.as_str() == "Garage bank"));

        // Restart: same instance, same name.
        assert_eq!(
            w.daemon.terminate().await,
            Some(0),
            "{}",
            w.daemon.log_text()
        );
        let config = w.dir.path().join("config.yaml");
        w.daemon = Daemon::start_with(w.bus.address(), w.dir.path(), &config);
        assert!(wait_for_name(&c, OWN, Duration::from_secs(20))
            .await
            .is_some());
        let again = items(&c, OWN).await;
        assert_eq!(num(&again, "/DeviceInstance"), Some(101.0));
        assert_eq!(again["/CustomName"].1, "Garage bank");
        if let Some(sim) = w.sim.take() {
            sim.stop().await;
        }
    });
}

#[test]
fn without_a_settings_service_the_name_cannot_be_stored_and_set_value_says_2() {
    runtime().block_on(async {
        let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
        let scenario = SCENARIO.replace(
            "settings:\n  overvoltage_feed_in: 1\n  preset: { \"/Settings/Devices/other_device/ClassAndVrmInstance\": \"battery:100\" }",
            "settings: { absent: true }",
        );
        let scenario = Scenario::parse(&scenario, "no-settings.yaml").unwrap();
        let _sim = Simulator::start(bus.address(), scenario).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(bus.address(), dir.path(), &config());
        let c = client(bus.address()).await;
        assert!(
            wait_for_name(&c, OWN, Duration::from_secs(20)).await.is_some(),
            "{}",
            daemon.log_text()
        );
        // The preferred instance, since nothing can allocate one.
        assert_eq!(support::bus::number(&c, "/DeviceInstance").await, Some(100.0));
        assert_eq!(set_value(&c, "/CustomName", Value::from("X")).await, 2);
    });
}

/// A 16-cell battery whose values only the test changes, on its own connection.
async fn still_battery(address: &str) -> BusItemService {
    use aggregator_core::value::Value as V;
    let link = venus_bus::connect_with_writer(address)
        .await
        .expect("connect");
    let battery = BusItemService::with_writer(link);
    let items: [(&str, V); 18] = [
        ("/ProductName", V::Text("SerialBattery(Jkbms)".into())),
        ("/CustomName", V::Text("Still".into())),
        ("/DeviceInstance", V::Int(9)),
        ("/Connected", V::Int(1)),
        ("/System/NrOfCellsPerBattery", V::Int(16)),
        ("/Dc/0/Voltage", V::Float(53.0)),
        ("/Dc/0/Current", V::Float(-2.0)),
        ("/Dc/0/Power", V::Float(-106.0)),
        ("/Dc/0/Temperature", V::Float(25.0)),
        ("/Soc", V::Float(60.0)),
        ("/InstalledCapacity", V::Float(280.0)),
        ("/Capacity", V::Float(168.0)),
        ("/System/MinCellVoltage", V::Float(3.30)),
        ("/System/MaxCellVoltage", V::Float(3.32)),
        ("/Info/MaxChargeVoltage", V::Float(55.2)),
        ("/Info/MaxChargeCurrent", V::Float(100.0)),
        ("/Info/MaxDischargeCurrent", V::Float(120.0)),
        ("/Io/AllowToCharge", V::Int(1)),
    ];
    for (path, value) in items {
        battery.insert(path, value.clone(), format!("{value:?}"), false);
    }
    battery.serve().await.expect("serve");
    battery
        .connection()
        .request_name("com.victronenergy.battery.ttyUSB9")
        .await
        .expect("battery name");
    battery
}

#[test]
fn a_consumer_that_reads_all_when_the_name_appears_misses_no_change_after() {
    // A consumer (systemcalc, gui-v2) reads every item when our name appears, then follows
    // `ItemsChanged` only. A value that changes at the tick after the name was granted (the
    // tick at which the daemon learns of it) must reach it by a signal.
    runtime().block_on(async {
        let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
        let conn = client(bus.address()).await;
        let signals = |member: &'static str| {
            let rule = MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .member(member)
                .unwrap();
            if member == "NameOwnerChanged" {
                rule.arg(0, OWN).unwrap().build()
            } else {
                rule.sender(OWN).unwrap().path("/").unwrap().build()
            }
        };
        let mut owners = MessageStream::for_match_rule(signals("NameOwnerChanged"), &conn, None)
            .await
            .unwrap();
        let mut changes = MessageStream::for_match_rule(signals("ItemsChanged"), &conn, None)
            .await
            .unwrap();
        let battery = still_battery(bus.address()).await;
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::default()
            .update_interval("1s")
            .batteries(|b| b.expected(1))
            .to_yaml();
        let daemon = Daemon::start(bus.address(), dir.path(), &config);

        tokio::time::timeout(Duration::from_secs(20), owners.next())
            .await
            .unwrap_or_else(|_| panic!("never registered; log:\n{}", daemon.log_text()));
        let mut model: HashMap<String, OwnedValue> = items(&conn, OWN)
            .await
            .into_iter()
            .map(|(path, (value, _))| (path, value))
            .collect();
        assert_eq!(num_of(&model, "/Dc/0/Temperature"), Some(25.0));
        // Straight after: the daemon's next tick takes it in.
        battery.store(vec![(
            "/Dc/0/Temperature".into(),
            aggregator_core::value::Value::Float(31.0),
            "31.0C".into(),
        )]);
        battery
            .items_changed(&["/Dc/0/Temperature".to_string()])
            .await
            .unwrap();

        let deadline = Instant::now() + Duration::from_millis(3500);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline.into(), changes.next()).await
        {
            let body: HashMap<String, HashMap<String, OwnedValue>> =
                msg.body().deserialize().unwrap();
            for (path, mut entry) in body {
                if let Some(value) = entry.remove("Value") {
                    model.insert(path, value);
                }
            }
        }
        let now: HashMap<String, OwnedValue> = items(&conn, OWN)
            .await
            .into_iter()
            .map(|(path, (value, _))| (path, value))
            .collect();
        assert_eq!(num_of(&now, "/Dc/0/Temperature"), Some(31.0));
        for (path, value) in &now {
            assert_eq!(
                model.get(path),
                Some(value),
                "{path}: {}",
                daemon.log_text()
            );
        }
    });
}

fn num_of(items: &HashMap<String, OwnedValue>, path: &str) -> Option<f64> {
    match &**items.get(path)? {
        Value::F64(x) => Some(*x),
        Value::I32(x) => Some(f64::from(*x)),
        _ => None,
    }
}

#[test]
fn a_name_held_by_another_program_is_one_error_line_not_one_a_tick() {
    runtime().block_on(async {
        let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
        // An old aggregator left running holds the name.
        let old = client(bus.address()).await;
        old.request_name(OWN).await.expect("the name");
        let scenario = Scenario::parse(SCENARIO, "conformance.yaml").unwrap();
        let _sim = Simulator::start(bus.address(), scenario).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let daemon = Daemon::start(bus.address(), dir.path(), &config());
        let refused = "cannot register com.victronenergy.battery.aggregate";
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.log_text().contains(refused) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Ten ticks of 200 ms more, each asking again.
        tokio::time::sleep(Duration::from_secs(2)).await;
        old.release_name(OWN).await.expect("released");
        let conn = client(bus.address()).await;
        assert!(wait_for_name(&conn, OWN, Duration::from_secs(10))
            .await
            .is_some());
        let ours = "com.victronenergy.battery.aggregate is ours after";
        let deadline = Instant::now() + Duration::from_secs(5);
        while !daemon.log_text().contains(ours) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = daemon.log_text();
        assert_eq!(log.matches(refused).count(), 1, "{log}");
        let refusals: u32 = log
            .split(ours)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no line saying it is ours: {log}"));
        assert!(refusals >= 5, "{log}");
    });
}

#[test]
fn a_custom_name_changed_in_the_settings_by_another_program_is_followed() {
    // The GUI or VRM writes the setting directly: our /CustomName follows, signalled.
    runtime().block_on(async {
        let w = world().await;
        let c = w.conn.clone();
        assert!(wait_for_name(&c, OWN, Duration::from_secs(20))
            .await
            .is_some());
        let answer = c
            .call_method(
                Some("com.victronenergy.settings"),
                "/Settings/Devices/aggregatebatteries/CustomName",
                Some("com.victronenergy.BusItem"),
                "SetValue",
                &Value::from("Shed"),
            )
            .await
            .unwrap();
        assert_eq!(answer.body().deserialize::<i32>().unwrap(), 0);
        let (ok, items) = until(&c, Duration::from_secs(5), |i| {
            i.get("/CustomName").is_some_and(|(_, text)| text == "Shed")
        })
        .await;
        assert!(
            ok,
            "{:?}\n{}",
            items.get("/CustomName"),
            w.daemon.log_text()
        );
        assert!(w.daemon.log_text().contains("custom name `Shed`"));
    });
}
