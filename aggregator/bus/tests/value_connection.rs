//! The monitor's value connection on a real `dbus-daemon`: handshake, match rules, signals read
//! in the order they were sent, messages longer than a read (a `GetItems` answer in order
//! with the signals: the simulator's tests), abstract socket addresses, and a bus that goes away; against a fake bus on a plain
//! socket, an authentication the bus refuses and a bus that never answers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use zbus::zvariant::Value as Wire;

use venus_bus::monitor::value_rules;
use venus_bus::private::PrivateBus;
use venus_bus::raw::RawConnection;
use venus_bus::variant::Field;
use venus_bus::wire::Kind;

const BUS_ITEM: &str = "com.victronenergy.BusItem";

async fn connect(bus: &PrivateBus) -> RawConnection {
    let [a, b] = value_rules();
    RawConnection::connect(bus.address(), &[&a, &b])
        .await
        .expect("value connection")
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
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let mut raw = connect(&bus).await;
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
async fn a_bus_that_goes_away_is_an_error() {
    let mut bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let mut raw = connect(&bus).await;
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

#[tokio::test(flavor = "current_thread")]
async fn an_address_without_a_unix_socket_is_refused_by_name() {
    let err = RawConnection::connect("tcp:host=localhost,port=1", &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tcp:host=localhost"), "{err}");
}

#[tokio::test(flavor = "current_thread")]
async fn messages_longer_than_a_read_arrive_whole_and_in_order() {
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let mut raw = connect(&bus).await;
    let sender = emitter(&bus).await;
    // Each far over the 64 KiB read chunk; the buffer grows for them and shrinks after.
    let long: Vec<String> = (0..3)
        .map(|k| {
            char::from(b'a' + k)
                .to_string()
                .repeat(200_000 + usize::from(k) * 70_000)
        })
        .collect();
    for (k, text) in long.iter().enumerate() {
        properties_changed(&sender, &format!("/Long/{k}"), Wire::from(text.as_str())).await;
        properties_changed(&sender, &format!("/Short/{k}"), Wire::from(k as f64)).await;
    }
    let seen = drain_until(&mut raw, 6);
    assert_eq!(seen.len(), 6);
    for (k, text) in long.iter().enumerate() {
        assert_eq!(
            seen[2 * k].2.as_deref(),
            Some(format!("/Long/{k}").as_str())
        );
        assert_eq!(seen[2 * k].3, Some(Field::Text(text.clone())), "/Long/{k}");
        assert_eq!(seen[2 * k + 1].3, Some(Field::Number(k as f64)));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn an_abstract_socket_address_is_connected() {
    let name = format!("aggregator-value-connection-{}", std::process::id());
    let bus = PrivateBus::start_listening(&format!("unix:abstract={name}"), crate::write_file)
        .expect("dbus-daemon");
    assert!(
        bus.address().starts_with(&format!("unix:abstract={name}")),
        "{}",
        bus.address()
    );
    let mut raw = connect(&bus).await;
    let sender = emitter(&bus).await;
    properties_changed(&sender, "/Soc", Wire::from(55i32)).await;
    let seen = drain_until(&mut raw, 1);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].3, Some(Field::Number(55.0)));
}

/// A fake bus on a Unix socket: accepts one connection, reads the `AUTH` line and answers
/// `answer` (or nothing when `None`), then holds the connection open until the test ends.
fn fake_bus(
    answer: Option<&'static str>,
) -> (tempfile::TempDir, String, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bus");
    let listener = UnixListener::bind(&path).unwrap();
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        if let Some(answer) = answer {
            stream.write_all(answer.as_bytes()).unwrap();
        }
        // Until the client gives up and closes.
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
        String::from_utf8_lossy(&line).into_owned()
    });
    (dir, format!("unix:path={}", path.display()), thread)
}

#[tokio::test(flavor = "current_thread")]
async fn an_authentication_the_bus_refuses_is_an_error_that_says_so() {
    let (_dir, address, bus) = fake_bus(Some("REJECTED EXTERNAL DBUS_COOKIE_SHA1\r\n"));
    let err = RawConnection::connect(&address, &[]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert!(
        err.to_string()
            .contains("refused authentication: REJECTED EXTERNAL"),
        "{err}"
    );
    let auth = bus.join().unwrap();
    assert!(auth.starts_with("\0AUTH EXTERNAL "), "{auth:?}");
    assert!(auth.ends_with("\r\n"), "{auth:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_bus_that_never_answers_holds_up_the_connection_not_the_runtime() {
    let (_dir, address, _bus) = fake_bus(None);
    let started = Instant::now();
    let connecting = RawConnection::connect(&address, &[]);
    tokio::pin!(connecting);
    // A timer on this single-threaded runtime keeps its pace while the handshake waits.
    let mut beats = 0;
    let mut beat = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            result = &mut connecting => break result,
            _ = beat.tick() => beats += 1,
        }
    };
    let waited = started.elapsed();
    let err = result.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        err.to_string()
            .contains("did not answer the authentication"),
        "{err}"
    );
    assert!(waited >= Duration::from_secs(4), "gave up after {waited:?}");
    let expected = waited.as_millis() / 100;
    assert!(
        beats as u128 + 5 >= expected,
        "{beats} beats in {waited:?}: the runtime was blocked"
    );
}
