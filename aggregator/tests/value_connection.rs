//! The monitor's value connection on a real `dbus-daemon`: handshake, match rules, signals read
//! in the order they were sent, a `GetItems` answer in order with them, and a bus that goes away.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use zbus::zvariant::Value as Wire;

use aggregator::bus::private::PrivateBus;
use aggregator::bus::raw::RawConnection;
use aggregator::bus::variant::Field;
use aggregator::bus::wire::Kind;

const BUS_ITEM: &str = "com.victronenergy.BusItem";

fn rules() -> [String; 2] {
    [
        format!("type='signal',interface='{BUS_ITEM}',member='PropertiesChanged'"),
        format!("type='signal',interface='{BUS_ITEM}',member='ItemsChanged',path='/'"),
    ]
}

fn connect(bus: &PrivateBus) -> RawConnection {
    let [a, b] = rules();
    RawConnection::connect(bus.address(), &[&a, &b]).expect("value connection")
}

async fn emitter(bus: &PrivateBus) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address())
        .unwrap()
        .build()
        .await
        .unwrap()
}

async fn properties_changed(conn: &zbus::Connection, path: &str, value: Wire<'_>) {
    let mut body: HashMap<&str, Wire<'_>> = HashMap::new();
    body.insert("Value", value);
    body.insert("Text", Wire::from("t"));
    conn.emit_signal(None::<&str>, path, BUS_ITEM, "PropertiesChanged", &body)
        .await
        .unwrap();
}

/// What a drain hands over: (kind, sender, path, Value).
type Seen = Vec<(Kind, Option<String>, Option<String>, Option<Field>)>;

fn drain_until(conn: &mut RawConnection, count: usize) -> Seen {
    let mut seen = Seen::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < count && Instant::now() < deadline {
        conn.drain(|msg| {
            seen.push((
                msg.kind,
                msg.sender.map(str::to_string),
                msg.path.map(str::to_string),
                msg.body.dict_value("Value").ok().flatten(),
            ))
        })
        .expect("drain");
        std::thread::sleep(Duration::from_millis(5));
    }
    seen
}

#[tokio::test(flavor = "current_thread")]
async fn signals_wait_in_the_socket_and_are_read_in_order() {
    let bus = PrivateBus::start().expect("dbus-daemon");
    let mut raw = connect(&bus);
    assert!(raw.unique_name().starts_with(':'), "{}", raw.unique_name());
    let sender = emitter(&bus).await;
    let unique = sender.unique_name().unwrap().to_string();

    for k in 0..200 {
        properties_changed(
            &sender,
            &format!("/Voltages/Cell{k}"),
            Wire::from(f64::from(k)),
        )
        .await;
    }
    // Not matched by our rules: another member, and another interface.
    sender
        .emit_signal(None::<&str>, "/Soc", BUS_ITEM, "Other", &())
        .await
        .unwrap();
    sender
        .emit_signal(
            None::<&str>,
            "/Soc",
            "org.example.Other",
            "PropertiesChanged",
            &(),
        )
        .await
        .unwrap();
    properties_changed(&sender, "/Soc", Wire::from(Vec::<i32>::new())).await;

    let seen = drain_until(&mut raw, 201);
    assert_eq!(seen.len(), 201, "{seen:?}");
    for (k, (kind, from, path, value)) in seen.iter().take(200).enumerate() {
        assert_eq!(*kind, Kind::Signal);
        assert_eq!(from.as_deref(), Some(unique.as_str()));
        assert_eq!(path.as_deref(), Some(format!("/Voltages/Cell{k}").as_str()));
        assert_eq!(*value, Some(Field::Number(k as f64)));
    }
    assert_eq!(seen[200].2.as_deref(), Some("/Soc"));
    assert_eq!(seen[200].3, Some(Field::Invalid));
    // Nothing more came.
    let mut more = 0;
    raw.drain(|_| more += 1).unwrap();
    assert_eq!(more, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_get_items_answer_comes_in_order_with_the_signals() {
    let bus = PrivateBus::start().expect("dbus-daemon");
    let scenario = aggregator::sim::Scenario::parse(
        "step: 100ms\njitter: true\nbatteries:\n  - { service: ttyUSB0, custom_name: Bat1, cells: 4 }\n\
         segments:\n  - { duration: 1h, cell_voltage: 3.30, battery_current: 5 }\n",
        "scenario",
    )
    .unwrap();
    let sim = aggregator::sim::Simulator::start(bus.address(), scenario)
        .await
        .unwrap();
    let mut raw = connect(&bus);
    let client = emitter(&bus).await;
    let owner: String = client
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetNameOwner",
            &("com.victronenergy.battery.ttyUSB0",),
        )
        .await
        .unwrap()
        .body()
        .deserialize()
        .unwrap();
    // Let signals flow before and after the call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let serial = raw.send(&owner, "/", BUS_ITEM, "GetItems", &[]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut answer = None;
    let mut signals = (0, 0);
    raw.drain(|msg| match msg.kind {
        Kind::Return if msg.reply_serial == Some(serial) => {
            assert_eq!(msg.signature, "a{sa{sv}}");
            let mut items = HashMap::new();
            msg.body
                .items(
                    |_| true,
                    |p, v| {
                        items.insert(p.to_string(), v);
                    },
                )
                .unwrap();
            answer = Some(items);
        }
        Kind::Signal if answer.is_none() => signals.0 += 1,
        Kind::Signal => signals.1 += 1,
        _ => {}
    })
    .unwrap();
    let items = answer.expect("the GetItems answer");
    assert_eq!(items["/Voltages/Cell4"], Field::Number(3.30));
    assert!(
        matches!(items["/Soc"], Field::Number(_)),
        "{:?}",
        items["/Soc"]
    );
    assert!(items.len() > 40, "{}", items.len());
    assert!(
        signals.0 > 0 && signals.1 > 0,
        "signals before and after: {signals:?}"
    );
    drop(sim);
}

#[tokio::test(flavor = "current_thread")]
async fn a_bus_that_goes_away_is_an_error() {
    let mut bus = PrivateBus::start().expect("dbus-daemon");
    let mut raw = connect(&bus);
    bus.stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match raw.drain(|_| {}) {
            Err(_) => break,
            Ok(()) if Instant::now() > deadline => panic!("no error after the bus stopped"),
            Ok(()) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[test]
fn an_address_without_a_unix_socket_is_refused_by_name() {
    let err = RawConnection::connect("tcp:host=localhost,port=1", &[]).unwrap_err();
    assert!(err.to_string().contains("tcp:host=localhost"), "{err}");
}
