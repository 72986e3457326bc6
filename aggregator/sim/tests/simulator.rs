//! The simulator's wire contract, checked on a real `dbus-daemon` with a plain zbus client (no
//! code of the consumer side), so that it can be trusted as the other side of every
//! integration test: paths and types as dbus-serialbattery publishes them, values that follow
//! the scenario, signals from the owner of the name, `gone` and `frozen`, and localsettings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_lite::StreamExt;
use tokio::time::{sleep, timeout_at, Instant};
use zbus::message::{Message, Type};
use zbus::zvariant::{DynamicType, OwnedValue, Value as Wire};
use zbus::{Connection, MatchRule, MessageStream};

use aggregator_sim::{Scenario, Simulator};
use venus_bus::private::PrivateBus;

const BUS_ITEM: &str = "com.victronenergy.BusItem";
const SETTINGS: &str = "com.victronenergy.settings";
const BAT1: &str = "com.victronenergy.battery.ttyUSB0";
const BAT2: &str = "com.victronenergy.battery.ttyUSB1";

type Items = HashMap<String, HashMap<String, OwnedValue>>;

fn scenario(file: &str) -> Scenario {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/tests")
        .join(file);
    Scenario::load(&path).unwrap_or_else(|err| panic!("{err}"))
}

async fn client(bus: &PrivateBus) -> Connection {
    zbus::connection::Builder::address(bus.address())
        .expect("address")
        .build()
        .await
        .expect("client connection")
}

async fn call<B>(
    conn: &Connection,
    dest: &str,
    path: &str,
    iface: &str,
    member: &str,
    body: &B,
) -> Message
where
    B: serde::Serialize + DynamicType,
{
    conn.call_method(Some(dest), path, Some(iface), member, body)
        .await
        .unwrap_or_else(|err| panic!("{member} on {dest} {path}: {err}"))
}

async fn get_items(conn: &Connection, service: &str) -> Items {
    call(conn, service, "/", BUS_ITEM, "GetItems", &())
        .await
        .body()
        .deserialize()
        .expect("a{sa{sv}}")
}

async fn get_value(conn: &Connection, service: &str, path: &str) -> OwnedValue {
    call(conn, service, path, BUS_ITEM, "GetValue", &())
        .await
        .body()
        .deserialize()
        .expect("v")
}

async fn set_value(conn: &Connection, service: &str, path: &str, value: Wire<'_>) -> i32 {
    call(conn, service, path, BUS_ITEM, "SetValue", &value)
        .await
        .body()
        .deserialize()
        .expect("i")
}

async fn name_owner(conn: &Connection, name: &str) -> Option<String> {
    conn.call_method(
        Some("org.freedesktop.DBus"),
        "/org/freedesktop/DBus",
        Some("org.freedesktop.DBus"),
        "GetNameOwner",
        &(name,),
    )
    .await
    .ok()
    .and_then(|reply| reply.body().deserialize::<String>().ok())
}

fn signature(value: &Wire<'_>) -> String {
    value.value_signature().to_string()
}

fn number(value: &Wire<'_>) -> f64 {
    match value {
        Wire::F64(v) => *v,
        Wire::I32(v) => f64::from(*v),
        other => panic!("not a number: {other:?}"),
    }
}

fn value<'a>(items: &'a Items, path: &str) -> &'a OwnedValue {
    items
        .get(path)
        .and_then(|item| item.get("Value"))
        .unwrap_or_else(|| panic!("{path} missing"))
}

fn text(items: &Items, path: &str) -> String {
    match items
        .get(path)
        .and_then(|item| item.get("Text"))
        .map(|t| &**t)
    {
        Some(Wire::Str(s)) => s.as_str().to_string(),
        other => panic!("{path}: no text: {other:?}"),
    }
}

async fn signals(conn: &Connection, member: &str) -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .interface(BUS_ITEM)
        .expect("interface")
        .member(member)
        .expect("member")
        .build();
    MessageStream::for_match_rule(rule, conn, Some(4096))
        .await
        .expect("match rule")
}

/// Every message the stream yields within `window`.
async fn collect(stream: &mut MessageStream, window: Duration) -> Vec<Message> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = timeout_at(deadline, stream.next()).await {
        out.push(msg);
    }
    out
}

fn sender(msg: &Message) -> String {
    msg.header()
        .sender()
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// The paths dbus-serialbattery publishes (docs/reading.md §1) and their D-Bus types.
fn battery_paths(cells: usize) -> Vec<(String, &'static str)> {
    let mut paths: Vec<(String, &str)> = [
        ("/Mgmt/ProcessName", "s"),
        ("/Mgmt/ProcessVersion", "s"),
        ("/Mgmt/Connection", "s"),
        ("/DeviceInstance", "i"),
        ("/ProductId", "i"),
        ("/ProductName", "s"),
        ("/FirmwareVersion", "s"),
        ("/HardwareVersion", "s"),
        ("/Connected", "i"),
        ("/CustomName", "s"),
        ("/Serial", "s"),
        ("/Dc/0/Voltage", "d"),
        ("/Dc/0/Current", "d"),
        ("/Dc/0/Power", "d"),
        ("/Dc/0/Temperature", "d"),
        ("/InstalledCapacity", "d"),
        ("/ConsumedAmphours", "d"),
        ("/Capacity", "d"),
        ("/Soc", "d"),
        ("/TimeToGo", "i"),
        ("/System/MaxCellTemperature", "d"),
        ("/System/MinCellTemperature", "d"),
        ("/System/MaxTemperatureCellId", "s"),
        ("/System/MinTemperatureCellId", "s"),
        ("/System/MaxVoltageCellId", "s"),
        ("/System/MinVoltageCellId", "s"),
        ("/System/MaxCellVoltage", "d"),
        ("/System/MinCellVoltage", "d"),
        ("/System/NrOfCellsPerBattery", "i"),
        ("/System/NrOfModulesOnline", "i"),
        ("/System/NrOfModulesOffline", "i"),
        ("/System/NrOfModulesBlockingCharge", "i"),
        ("/System/NrOfModulesBlockingDischarge", "i"),
        ("/Io/AllowToCharge", "i"),
        ("/Io/AllowToDischarge", "i"),
        ("/Io/AllowToBalance", "i"),
        ("/Voltages/Sum", "d"),
        ("/Voltages/Diff", "d"),
        ("/Info/MaxChargeVoltage", "d"),
        ("/Info/MaxChargeCurrent", "d"),
        ("/Info/MaxDischargeCurrent", "d"),
        ("/Info/ChargeMode", "s"),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), t))
    .collect();
    for alarm in aggregator_sim::scenario::ALARMS {
        paths.push((format!("/Alarms/{alarm}"), "i"));
    }
    for k in 1..=cells {
        paths.push((format!("/Voltages/Cell{k}"), "d"));
    }
    paths
}

#[tokio::test(flavor = "current_thread")]
async fn every_service_publishes_its_paths_with_venus_types() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let sim = Simulator::start(bus.address(), scenario("contract.yaml"))
        .await
        .expect("simulator starts");

    let bat1 = get_items(&conn, BAT1).await;
    for (path, kind) in battery_paths(16) {
        assert_eq!(signature(value(&bat1, &path)), kind, "{path}");
        assert!(bat1[&path].contains_key("Text"), "{path} has no Text");
    }
    assert!(bat1.keys().all(|k| k.starts_with('/')), "keys are absolute");
    assert_eq!(text(&bat1, "/ProductId"), "0xBA77");
    assert_eq!(number(value(&bat1, "/ProductId")), f64::from(0xBA77));
    assert_eq!(
        &**value(&bat1, "/Mgmt/Connection"),
        &Wire::from("Serial /dev/ttyUSB0")
    );
    assert_eq!(
        &**value(&bat1, "/ProductName"),
        &Wire::from("SerialBattery(Simulated)")
    );
    assert_eq!(&**value(&bat1, "/CustomName"), &Wire::from("Bat1"));
    assert_eq!(&**value(&bat1, "/Serial"), &Wire::from("JK-0001"));
    assert!(number(value(&bat1, "/ConsumedAmphours")) <= 0.0);

    // Raw overrides: invalid is an empty `ai`, a text where a number belongs, NaN.
    let bat2 = get_items(&conn, BAT2).await;
    let cvl = value(&bat2, "/Info/MaxChargeVoltage");
    assert_eq!(signature(cvl), "ai");
    assert!(matches!(&**cvl, Wire::Array(a) if a.is_empty()));
    assert_eq!(text(&bat2, "/Info/MaxChargeVoltage"), "---");
    assert_eq!(&**value(&bat2, "/Soc"), &Wire::from("high"));
    assert!(number(value(&bat2, "/Dc/0/Temperature")).is_nan());
    assert_eq!(number(value(&bat2, "/Voltages/Cell5")), 3.65);
    assert_eq!(
        &**value(&bat2, "/System/MaxVoltageCellId"),
        &Wire::from("C5")
    );
    assert_eq!(
        signature(value(&bat2, "/Serial")),
        "ai",
        "no serial: invalid"
    );

    // GetValue on a leaf and on a node, GetText on a leaf.
    assert_eq!(
        signature(&*get_value(&conn, BAT1, "/Dc/0/Voltage").await),
        "d"
    );
    let dc = get_value(&conn, BAT1, "/Dc").await;
    assert_eq!(signature(&dc), "a{sv}");
    let dc: HashMap<String, OwnedValue> = dc.try_into().expect("a{sv}");
    let mut keys: Vec<&str> = dc.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["0/Current", "0/Power", "0/Temperature", "0/Voltage"]);
    let leaf_text: String = call(&conn, BAT1, "/Dc/0/Voltage", BUS_ITEM, "GetText", &())
        .await
        .body()
        .deserialize()
        .expect("s");
    assert!(leaf_text.ends_with('V'), "{leaf_text}");

    // The Multi, the solar chargers, the SmartShunt and systemcalc.
    let multi = get_items(&conn, "com.victronenergy.vebus.ttyS3").await;
    assert_eq!(number(value(&multi, "/Dc/0/Current")), 15.0);
    assert_eq!(signature(value(&multi, "/Dc/0/Voltage")), "d");
    assert_eq!(number(value(&multi, "/Connected")), 1.0);
    assert_eq!(number(value(&multi, "/DeviceInstance")), 276.0);
    assert_eq!(
        &**value(&multi, "/ProductName"),
        &Wire::from("MultiPlus-II 48/5000/70-50")
    );
    for service in ["ttyS4", "ttyS5"] {
        let solar = get_items(&conn, &format!("com.victronenergy.solarcharger.{service}")).await;
        assert_eq!(number(value(&solar, "/Dc/0/Current")), 5.0, "{service}");
        assert_eq!(
            &**value(&solar, "/ProductName"),
            &Wire::from("SmartSolar MPPT 150/35")
        );
        assert_eq!(signature(value(&solar, "/DeviceInstance")), "i");
    }
    let shunt = get_items(&conn, "com.victronenergy.dcload.ttyS7").await;
    assert_eq!(
        &**value(&shunt, "/ProductName"),
        &Wire::from("SmartShunt 500A/50mV")
    );
    assert_eq!(&**value(&shunt, "/CustomName"), &Wire::from("Loads"));
    assert_eq!(number(value(&shunt, "/Dc/0/Current")), -2.0);
    assert_eq!(number(value(&shunt, "/DeviceInstance")), 40.0);
    assert_eq!(number(value(&shunt, "/Connected")), 1.0);
    let system = get_items(&conn, "com.victronenergy.system").await;
    assert_eq!(&**value(&system, "/SystemState/LowSoc"), &Wire::I32(1));

    let names = Scenario::bus_names(&scenario("contract.yaml"));
    sim.stop().await;
    for name in names {
        assert_eq!(name_owner(&conn, &name).await, None, "{name} still owned");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn values_follow_the_scenario_and_signal_from_the_owner() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let mut changes = signals(&conn, "PropertiesChanged").await;
    let sim = Simulator::start(bus.address(), scenario("contract.yaml"))
        .await
        .expect("simulator starts");
    let owner = name_owner(&conn, BAT1).await.expect("Bat1 owned");

    let first = get_items(&conn, BAT1).await;
    let received = collect(&mut changes, Duration::from_millis(800)).await;
    let second = get_items(&conn, BAT1).await;

    // The ramp: 3.30 → 3.60 V over 30 s, 10 mV a second.
    let cell = |items: &Items| number(value(items, "/Voltages/Cell1"));
    assert!(
        cell(&second) > cell(&first),
        "{} then {}",
        cell(&first),
        cell(&second)
    );
    for items in [&first, &second] {
        let sum: f64 = (1..=16)
            .map(|k| number(value(items, &format!("/Voltages/Cell{k}"))))
            .sum();
        let voltage = number(value(items, "/Dc/0/Voltage"));
        assert!(
            (voltage - (sum * 100.0).round() / 100.0).abs() < 1e-9,
            "{voltage} vs {sum}"
        );
        assert_eq!(number(value(items, "/Voltages/Sum")), voltage);
        let current = number(value(items, "/Dc/0/Current"));
        assert_eq!(current, 10.0);
        let power = number(value(items, "/Dc/0/Power"));
        assert!((power - voltage * current).abs() < 0.01, "{power}");
    }
    let from_bat1: Vec<&Message> = received.iter().filter(|m| sender(m) == owner).collect();
    assert!(
        !from_bat1.is_empty(),
        "no PropertiesChanged from Bat1's owner {owner}"
    );
    let cell1 = from_bat1
        .iter()
        .find(|m| m.header().path().map(|p| p.as_str()) == Some("/Voltages/Cell1"))
        .expect("a PropertiesChanged on /Voltages/Cell1");
    let body: HashMap<String, OwnedValue> = cell1.body().deserialize().expect("a{sv}");
    assert_eq!(signature(&body["Value"]), "d");
    assert_eq!(signature(&body["Text"]), "s");
    assert!(
        from_bat1
            .iter()
            .all(|m| m.header().path().map(|p| p.as_str()) != Some("/DeviceInstance")),
        "an unchanged path was signalled"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn items_mode_sends_one_items_changed_per_step() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let mut items_changed = signals(&conn, "ItemsChanged").await;
    let mut properties_changed = signals(&conn, "PropertiesChanged").await;
    let sim = Simulator::start(bus.address(), scenario("items.yaml"))
        .await
        .expect("simulator starts");
    let owner = name_owner(&conn, BAT1).await.expect("Bat1 owned");

    // Steps of 200 ms: five in a second, give or take a slow machine.
    let received = collect(&mut items_changed, Duration::from_millis(1000)).await;
    let ours: Vec<&Message> = received.iter().filter(|m| sender(m) == owner).collect();
    assert!(
        (3..=7).contains(&ours.len()),
        "{} ItemsChanged in 1 s",
        ours.len()
    );
    for msg in &ours {
        assert_eq!(msg.header().path().map(|p| p.as_str()), Some("/"));
        let body: Items = msg.body().deserialize().expect("a{sa{sv}}");
        assert!(body.contains_key("/Voltages/Cell1"), "{:?}", body.keys());
        assert!(!body.contains_key("/DeviceInstance"), "unchanged path sent");
        assert_eq!(signature(&body["/Voltages/Cell1"]["Value"]), "d");
    }
    // 20 A into 1 Ah: the state of charge rises from 50 % by about half a percent a second.
    let soc = number(value(&get_items(&conn, BAT1).await, "/Soc"));
    assert!(soc > 50.2 && soc < 52.0, "{soc}");
    let properties = collect(&mut properties_changed, Duration::from_millis(50)).await;
    assert!(
        properties.iter().all(|m| sender(m) != owner),
        "PropertiesChanged in items mode"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn gone_leaves_the_bus_and_frozen_holds_every_value() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")
        .expect("sender")
        .member("NameOwnerChanged")
        .expect("member")
        .arg(0, BAT1)
        .expect("arg0")
        .build();
    let mut owners = MessageStream::for_match_rule(rule, &conn, None)
        .await
        .expect("match rule");
    let start = Instant::now();
    let sim = Simulator::start(bus.address(), scenario("gone-frozen.yaml"))
        .await
        .expect("simulator starts");
    let first_owner = name_owner(&conn, BAT1).await.expect("Bat1 owned");

    // Segment 2 (1.0 s to 2.5 s): Bat1 gone, Bat2 frozen while jitter moves everything else.
    tokio::time::sleep_until(start + Duration::from_millis(1300)).await;
    assert_eq!(name_owner(&conn, BAT1).await, None, "Bat1 still on the bus");
    let frozen_a = get_items(&conn, BAT2).await;
    tokio::time::sleep_until(start + Duration::from_millis(2200)).await;
    let frozen_b = get_items(&conn, BAT2).await;
    assert_eq!(frozen_a, frozen_b, "a frozen battery changed");

    // Segment 3: both back; Bat1 with a new connection, Bat2 moving again.
    tokio::time::sleep_until(start + Duration::from_millis(2900)).await;
    let second_owner = name_owner(&conn, BAT1).await.expect("Bat1 back");
    assert_ne!(first_owner, second_owner);
    let moving = get_items(&conn, BAT2).await;
    sleep(Duration::from_millis(300)).await;
    assert_ne!(moving, get_items(&conn, BAT2).await, "Bat2 still frozen");
    let bat1 = get_items(&conn, BAT1).await;
    assert_eq!(number(value(&bat1, "/DeviceInstance")), 1.0);

    let changes = collect(&mut owners, Duration::from_millis(50)).await;
    let changes: Vec<(String, String, String)> = changes
        .iter()
        .map(|m| m.body().deserialize().expect("sss"))
        .collect();
    assert!(
        changes.contains(&(BAT1.to_string(), first_owner.clone(), String::new())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&(BAT1.to_string(), String::new(), second_owner.clone())),
        "{changes:?}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn settings_behave_like_localsettings() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let mut changes = signals(&conn, "PropertiesChanged").await;
    let sim = Simulator::start(bus.address(), scenario("contract.yaml"))
        .await
        .expect("simulator starts");
    let owner = name_owner(&conn, SETTINGS).await.expect("settings owned");

    let add_settings = |object: &'static str, entries: Vec<(&'static str, &'static str)>| {
        let conn = conn.clone();
        async move {
            let list: Vec<HashMap<&str, Wire<'_>>> = entries
                .into_iter()
                .map(|(path, default)| {
                    HashMap::from([("path", Wire::from(path)), ("default", Wire::from(default))])
                })
                .collect();
            let reply = call(
                &conn,
                SETTINGS,
                object,
                "com.victronenergy.Settings",
                "AddSettings",
                &list,
            )
            .await;
            let out: Vec<HashMap<String, OwnedValue>> = reply.body().deserialize().expect("aa{sv}");
            out.iter()
                .map(|entry| {
                    let error = match &*entry["error"] {
                        Wire::I32(code) => *code,
                        other => panic!("error is {other:?}"),
                    };
                    let value = entry.get("value").map(|v| match &**v {
                        Wire::Str(s) => s.as_str().to_string(),
                        other => panic!("value is {other:?}"),
                    });
                    (error, value)
                })
                .collect::<Vec<_>>()
        }
    };

    // Instance allocation: battery:1, then the next free one; battery:3 is preset.
    let devices = vec![
        ("aggbat_1/ClassAndVrmInstance", "battery:1"),
        ("serbat_x/ClassAndVrmInstance", "battery:1"),
        ("serbat_y/ClassAndVrmInstance", "battery:2"),
    ];
    let expected = vec![
        (0, Some("battery:1".to_string())),
        (0, Some("battery:2".to_string())),
        (0, Some("battery:4".to_string())),
    ];
    assert_eq!(add_settings("/Settings/Devices", devices).await, expected);
    // Idempotent: the stored values stay whatever the default.
    let again = vec![
        ("aggbat_1/ClassAndVrmInstance", "battery:7"),
        ("serbat_x/ClassAndVrmInstance", "battery:1"),
        ("serbat_y/ClassAndVrmInstance", "battery:2"),
    ];
    assert_eq!(add_settings("/Settings/Devices", again).await, expected);
    assert_eq!(
        add_settings("/", vec![("/Foo/Bar", "x")]).await,
        vec![(-9, None)]
    );
    let devices = get_value(&conn, SETTINGS, "/Settings/Devices").await;
    let devices: HashMap<String, OwnedValue> = devices.try_into().expect("a{sv}");
    assert_eq!(
        &*devices["aggbat_1/ClassAndVrmInstance"],
        &Wire::from("battery:1")
    );
    assert_eq!(&*devices["serbat_JK0009/CustomName"], &Wire::from("Old"));

    // SetValue: stored and signalled; refused when it cannot be converted or is out of range.
    let feed_in = "/Settings/CGwacs/OvervoltageFeedIn";
    assert_eq!(&*get_value(&conn, SETTINGS, feed_in).await, &Wire::I32(1));
    assert_eq!(set_value(&conn, SETTINGS, feed_in, Wire::I32(0)).await, 0);
    assert_eq!(&*get_value(&conn, SETTINGS, feed_in).await, &Wire::I32(0));
    assert_eq!(set_value(&conn, SETTINGS, feed_in, Wire::I32(0)).await, 0);
    assert_eq!(
        set_value(&conn, SETTINGS, feed_in, Wire::from("abc")).await,
        -1
    );
    assert_eq!(set_value(&conn, SETTINGS, feed_in, Wire::I32(7)).await, -1);
    assert_eq!(&*get_value(&conn, SETTINGS, feed_in).await, &Wire::I32(0));
    let received = collect(&mut changes, Duration::from_millis(300)).await;
    let feed_in_changes: Vec<&Message> = received
        .iter()
        .filter(|m| sender(m) == owner && m.header().path().map(|p| p.as_str()) == Some(feed_in))
        .collect();
    assert_eq!(feed_in_changes.len(), 1, "one change, one signal");
    let body: HashMap<String, OwnedValue> = feed_in_changes[0].body().deserialize().expect("a{sv}");
    assert_eq!(&*body["Value"], &Wire::I32(0));

    // AddSetting on a group object.
    let add_setting = |kind: &'static str, default: Wire<'static>| {
        let conn = conn.clone();
        async move {
            let args = (
                "SystemSetup",
                "BatteryService",
                default,
                kind,
                Wire::from(""),
                Wire::from(""),
            );
            call(
                &conn,
                SETTINGS,
                "/Settings",
                "com.victronenergy.Settings",
                "AddSetting",
                &args,
            )
            .await
            .body()
            .deserialize::<i32>()
            .expect("i")
        }
    };
    assert_eq!(add_setting("s", Wire::from("default")).await, 0);
    let battery_service = "/Settings/SystemSetup/BatteryService";
    assert_eq!(
        &*get_value(&conn, SETTINGS, battery_service).await,
        &Wire::from("default")
    );
    assert_eq!(add_setting("i", Wire::I32(3)).await, -5, "type differs");
    assert_eq!(
        set_value(&conn, SETTINGS, battery_service, Wire::from("nobattery")).await,
        0
    );
    assert_eq!(add_setting("s", Wire::from("default")).await, 0);
    assert_eq!(
        &*get_value(&conn, SETTINGS, battery_service).await,
        &Wire::from("nobattery"),
        "an existing setting keeps its value"
    );
    let text: String = call(&conn, SETTINGS, feed_in, BUS_ITEM, "GetText", &())
        .await
        .body()
        .deserialize()
        .expect("s");
    assert_eq!(text, "0");
    sim.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn the_demo_runs_and_a_taken_name_is_an_error() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let conn = client(&bus).await;
    let demo = Scenario::demo().expect("demo.yaml");
    let sim = Simulator::start(bus.address(), demo.clone())
        .await
        .expect("the demo starts");
    for name in demo.bus_names() {
        assert!(name_owner(&conn, &name).await.is_some(), "{name} not owned");
    }
    for (service, custom_name) in [(BAT1, "Bat1"), (BAT2, "Bat2")] {
        let items = get_items(&conn, service).await;
        assert_eq!(&**value(&items, "/CustomName"), &Wire::from(custom_name));
        assert_eq!(number(value(&items, "/System/NrOfCellsPerBattery")), 16.0);
        assert_eq!(number(value(&items, "/InstalledCapacity")), 280.0);
        assert_eq!(number(value(&items, "/Info/MaxChargeVoltage")), 55.2);
        assert!(items.contains_key("/Voltages/Cell16"));
    }

    // A second simulator finds every name taken, says which, and leaves nothing behind.
    let err = match Simulator::start(bus.address(), demo.clone()).await {
        Ok(_) => panic!("a second simulator started"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("already owned"), "{err}");
    let owner = name_owner(&conn, BAT1).await.expect("Bat1 still owned");
    assert!(!get_items(&conn, BAT1).await.is_empty(), "{owner} answers");
    sim.stop().await;
}

#[test]
fn publish_refuses_the_system_bus_and_a_missing_file() {
    let demo = Scenario::demo().expect("demo.yaml");
    let system = "unix:path=/var/run/dbus/system_bus_socket";
    let code = |result: Result<(), aggregator_sim::Error>| result.map_err(|e| e.exit_code());
    assert_eq!(code(aggregator_sim::publish(demo, Some(system))), Err(2));
    let missing = Path::new("/nonexistent/scenario.yaml");
    assert_eq!(
        code(aggregator_sim::publish_command(
            Some(missing),
            Some("unix:path=/tmp/x")
        )),
        Err(2)
    );
}
