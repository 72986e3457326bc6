//! `ItemsChanged` written by hand on a zbus connection's socket (`bus::socket::MessageWriter`)
//! while zbus sends its own messages on it: on a real `dbus-daemon`, every message arrives
//! whole, once, from the connection's unique name, even when the bus stops taking data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aggregator_core::value::Value;
use rustix::process::{kill_process, Pid, Signal};
use venus_bus::private::PrivateBus;
use venus_bus::raw::RawConnection;
use venus_bus::variant::Field;
use venus_bus::wire::{items_body, signal_message, Kind};
use zbus::zvariant::Value as Wire;

const BUS_ITEM: &str = "com.victronenergy.BusItem";
/// Messages per side; with [`TEXT_LEN`] they are far more than a socket buffer holds.
const EACH: usize = 60;
const TEXT_LEN: usize = 48 * 1024;

fn text(k: usize) -> String {
    char::from(b'a' + (k % 26) as u8)
        .to_string()
        .repeat(TEXT_LEN)
}

#[test]
fn hand_written_and_zbus_messages_share_the_socket_whole() {
    let bus = PrivateBus::start(crate::write_file).expect("private bus");
    let rule = format!("type='signal',interface='{BUS_ITEM}',member='ItemsChanged',path='/'");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut listener = runtime
        .block_on(RawConnection::connect(bus.address(), &[&rule]))
        .expect("listener");
    let sender = runtime.block_on(async {
        let link = venus_bus::connect_with_writer(bus.address()).await.unwrap();
        let writer = link.writer.clone().expect("a Unix socket has a writer");
        let mut tasks = Vec::new();
        for k in 0..EACH {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let value = Value::Text(text(k));
                let path = format!("/Ours/{k}");
                let body = items_body([(path.as_str(), &value, "t")]);
                let msg = signal_message(
                    u32::MAX - k as u32,
                    "/",
                    BUS_ITEM,
                    "ItemsChanged",
                    "a{sa{sv}}",
                    &body,
                );
                writer.send(&msg).await.unwrap();
            }));
            let conn = link.conn.clone();
            tasks.push(tokio::spawn(async move {
                let path = format!("/Zbus/{k}");
                let mut item: BTreeMap<&str, Wire<'_>> = BTreeMap::new();
                item.insert("Value", Wire::from(text(k)));
                item.insert("Text", Wire::from("t"));
                let mut body: BTreeMap<&str, BTreeMap<&str, Wire<'_>>> = BTreeMap::new();
                body.insert(&path, item);
                conn.emit_signal(None::<&str>, "/", BUS_ITEM, "ItemsChanged", &body)
                    .await
                    .unwrap();
            }));
        }
        // The bus stops reading: the socket fills and both sides wait for room, half-way
        // through a message, until it goes on.
        send(bus.pid(), Signal::STOP);
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(bus.pid(), Signal::CONT);
        for task in tasks {
            task.await.unwrap();
        }
        // A message the bus had begun to take when it stopped is finished by a task of its
        // own: the runtime runs only inside this block.
        writer.flush().await;
        link.conn.unique_name().unwrap().to_string()
    });

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 * EACH && Instant::now() < deadline {
        listener
            .drain(|msg| {
                if msg.kind != Kind::Signal {
                    return;
                }
                assert_eq!(msg.sender, Some(sender.as_str()));
                let _ = msg.body.items(
                    |_| true,
                    |path, value| {
                        let k: usize = path.rsplit('/').next().unwrap().parse().unwrap();
                        assert_eq!(value, Field::Text(text(k)), "{path}");
                        *seen.entry(path.to_string()).or_default() += 1;
                    },
                );
            })
            .expect("the listener reads");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen.len(),
        2 * EACH,
        "{:?}",
        seen.keys().collect::<Vec<_>>()
    );
    assert!(seen.values().all(|&n| n == 1), "a message came twice");
}

#[test]
fn a_call_given_up_half_way_through_its_message_leaves_the_connection_whole() {
    let bus = PrivateBus::start(crate::write_file).expect("private bus");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let link = venus_bus::connect_with_writer(bus.address()).await.unwrap();
        let conn = link.conn;
        // Far more than a socket buffer holds: while the bus does not read, the call's message
        // is written in part, and its time limit ends half-way through it.
        let big = "x".repeat(4 << 20);
        send(bus.pid(), Signal::STOP);
        let given_up = tokio::time::timeout(
            Duration::from_millis(300),
            conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &big.as_str(),
            ),
        )
        .await;
        assert!(
            given_up.is_err(),
            "the call must still be running at its limit"
        );
        send(bus.pid(), Signal::CONT);
        // The rest of the message given up goes out before the next one: the bus reads both
        // whole and answers the next call.
        let names = tokio::time::timeout(
            Duration::from_secs(10),
            conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "ListNames",
                &(),
            ),
        )
        .await
        .expect("the bus answers the next call")
        .expect("the bus answers without an error");
        let names: Vec<String> = names.body().deserialize().unwrap();
        let own = conn.unique_name().unwrap().to_string();
        assert!(names.contains(&own), "{own} still on the bus: {names:?}");
    });
}

/// Sends `signal` to the private bus's `dbus-daemon`, a child of this test.
fn send(pid: u32, signal: Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .expect("a process id");
    kill_process(pid, signal).expect("signal the bus");
}
