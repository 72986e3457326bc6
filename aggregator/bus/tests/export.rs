//! The exported `BusItem` service on a real `dbus-daemon`: a `SetValue` whose handler waits on
//! the bus does not hold the answers to other consumers' reads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use zbus::zvariant::{OwnedValue, Value as Wire};

use aggregator_core::value::Value;
use venus_bus::export::{BusItemService, SetDecision};
use venus_bus::private::PrivateBus;
use venus_bus::{connect_to, request_name};

const NAME: &str = "com.victronenergy.battery.aggregate";
const BUS_ITEM: &str = "com.victronenergy.BusItem";

#[tokio::test(flavor = "current_thread")]
async fn reads_are_answered_while_a_set_value_waits_on_its_handler() {
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let conn = connect_to(bus.address()).await.expect("connect");
    let service = BusItemService::new(conn.clone());
    service.insert(
        "/CustomName",
        Value::Text("Bank".into()),
        "Bank".into(),
        true,
    );
    service.insert("/Dc/0/Voltage", Value::Float(53.2), "53.2V".into(), false);
    // The handler answers only once the test lets it: a settings service slow to answer.
    let release = Arc::new(Notify::new());
    let held = release.clone();
    service.on_set(Arc::new(move |_path, _value| {
        let held = held.clone();
        Box::pin(async move {
            held.notified().await;
            SetDecision::Accept(Value::Text("Attic".into()), "Attic".into())
        })
    }));
    let _server = service.serve().await.expect("serve");
    request_name(&conn, NAME).await.expect("the name");

    let consumer = connect_to(bus.address()).await.expect("connect");
    let setter = consumer.clone();
    let set = tokio::spawn(async move {
        let reply = setter
            .call_method(
                Some(NAME),
                "/CustomName",
                Some(BUS_ITEM),
                "SetValue",
                &Wire::from("Attic"),
            )
            .await
            .expect("SetValue answered");
        reply.body().deserialize::<i32>().expect("a code")
    });
    // Let the SetValue reach the service first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let read = consumer.call_method(Some(NAME), "/Dc/0/Voltage", Some(BUS_ITEM), "GetValue", &());
    let reply = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("GetValue answered while the SetValue waits")
        .expect("GetValue");
    let volts: OwnedValue = reply.body().deserialize().expect("a value");
    assert_eq!(f64::try_from(volts).expect("a number"), 53.2);
    assert!(
        !set.is_finished(),
        "the SetValue still waits on its handler"
    );
    release.notify_one();
    assert_eq!(set.await.expect("the SetValue's task"), 0);
    assert_eq!(
        service.get("/CustomName"),
        Some(Value::Text("Attic".into()))
    );
}
