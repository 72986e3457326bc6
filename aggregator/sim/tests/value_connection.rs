//! The monitor's value connection reading the simulator's services on a real `dbus-daemon`: a
//! `GetItems` answer comes in order with the signals around it. (The value connection on its
//! own: the D-Bus layer's tests.)

use std::collections::HashMap;
use std::time::Duration;

use venus_bus::monitor::value_rules;
use venus_bus::private::PrivateBus;
use venus_bus::raw::RawConnection;
use venus_bus::variant::Field;
use venus_bus::wire::{method_call, Kind};

const BUS_ITEM: &str = "com.victronenergy.BusItem";

#[tokio::test(flavor = "current_thread")]
async fn a_get_items_answer_comes_in_order_with_the_signals() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let scenario = aggregator_sim::Scenario::parse(
        "step: 100ms\njitter: true\nbatteries:\n  - { service: ttyUSB0, custom_name: Bat1, cells: 4 }\n\
         segments:\n  - { duration: 1h, cell_voltage: 3.30, battery_current: 5 }\n",
        "scenario",
    )
    .unwrap();
    let sim = aggregator_sim::Simulator::start(bus.address(), scenario)
        .await
        .unwrap();
    let [properties, items] = value_rules();
    let mut raw = RawConnection::connect(bus.address(), &[&properties, &items])
        .await
        .expect("value connection");
    let client = venus_bus::connect_to(bus.address()).await.unwrap();
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
    let calls = raw.sender();
    let serial = calls.next_serial();
    let call = method_call(serial, &owner, "/", BUS_ITEM, "GetItems", &[]);
    calls.send(&call, Duration::from_secs(5)).await.unwrap();
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
