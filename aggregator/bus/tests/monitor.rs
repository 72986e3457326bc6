//! The monitor on a real `dbus-daemon` (docs/discovery.md §7): a service that does not answer
//! its `GetItems` is asked again while its process owns the name, and read once it answers;
//! one log line when it is left waiting, one when it is read or its process left.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use zbus::message::Type;
use zbus::zvariant;
use zbus::{Connection, MatchRule, MessageStream};

use aggregator_core::value::Value;
use venus_bus::export::BusItemService;
use venus_bus::monitor::{Class, Discovery, Monitor, ScanRetry};
use venus_bus::private::PrivateBus;
use venus_bus::variant::Field;
use venus_bus::{connect_to, release_name, request_name};

const SLOW: &str = "com.victronenergy.battery.ttyUSB3";
const OWN: &str = "com.victronenergy.battery.aggregate";

/// Short enough for a test, the same schedule as on a device otherwise: a fifth of a second
/// for the first answer, doubled up to 0.8 s for later ones, and pauses doubling from 50 ms to
/// 400 ms.
const RETRY: ScanRetry = ScanRetry {
    answer_within: Duration::from_millis(200),
    longest_answer_wait: Duration::from_millis(800),
    first_pause: Duration::from_millis(50),
    longest_pause: Duration::from_millis(400),
};

/// Attempts the slow service leaves unanswered: as many as the monitor once made in all.
const UNANSWERED: usize = 3;

/// A battery's items, its voltage `volts`, on a connection of its own, not served yet: until
/// [`BusItemService::serve`], a `GetItems` gets no answer, as from a driver stalled at boot.
async fn battery(bus: &PrivateBus, volts: f64) -> BusItemService {
    let conn = connect_to(bus.address()).await.expect("connect");
    let service = BusItemService::new(conn);
    let items = [
        ("/DeviceInstance", Value::Int(3)),
        ("/ProductName", Value::Text("SerialBattery(JK)".into())),
        ("/Dc/0/Voltage", Value::Float(volts)),
    ];
    for (path, value) in items {
        service.insert(path, value, String::new(), false);
    }
    service
}

/// The `GetItems` calls a connection receives, answered or not.
async fn get_items_calls(conn: &Connection) -> MessageStream {
    let rule = MatchRule::builder()
        .msg_type(Type::MethodCall)
        .member("GetItems")
        .expect("member")
        .build();
    MessageStream::for_match_rule(rule, conn, None)
        .await
        .expect("a stream of calls")
}

/// A battery at `volts` that owns [`SLOW`] and does not answer, and a monitor asking it as
/// [`RETRY`] says; returns once it was asked `unanswered` times.
async fn stalled_and_watched(
    bus: &PrivateBus,
    volts: f64,
    unanswered: usize,
    log: &Log,
) -> (BusItemService, Monitor) {
    let stalled = battery(bus, volts).await;
    let mut calls = get_items_calls(stalled.connection()).await;
    request_name(stalled.connection(), SLOW)
        .await
        .expect("the name");
    let watcher = connect_to(bus.address()).await.expect("connect");
    let monitor = Monitor::start_with(&watcher, bus.address(), OWN, RETRY)
        .await
        .expect("monitor");
    for k in 1..=unanswered {
        let call = tokio::time::timeout(Duration::from_secs(20), calls.next()).await;
        let asked = matches!(call, Ok(Some(Ok(_))));
        assert!(
            asked,
            "GetItems {k} of {unanswered} not asked\n{}",
            log.text()
        );
    }
    (stalled, monitor)
}

/// The voltage the monitor read for `name` from the process `owner`, once it has.
fn read_voltage(monitor: &Monitor, name: &str, owner: &str) -> Option<f64> {
    monitor.drain();
    monitor.read(|cache| {
        let (_, service) = cache
            .of_class(Class::Battery)
            .find(|(n, s)| *n == name && s.owner == owner)?;
        match service.get("/Dc/0/Voltage") {
            Some(Field::Number(v)) => Some(*v),
            _ => None,
        }
    })
}

/// Waits (up to 20 s) until `check` holds.
async fn eventually<T>(what: &str, log: &Log, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 20 s\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the log says `text`.
async fn said(log: &Log, text: &str) {
    eventually(text, log, || log.text().contains(text).then_some(())).await;
}

/// The log has each text as often as said.
fn log_has(log: &Log, counts: &[(&str, usize)]) {
    let text = log.text();
    for (line, count) in counts {
        assert_eq!(text.matches(line).count(), *count, "`{line}` in\n{text}");
    }
}

#[test]
fn a_service_that_answers_only_after_its_first_scans_timed_out_is_read_once_it_answers() {
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let log = Log::default();
    log.run(async {
        let (slow, monitor) = stalled_and_watched(&bus, 53.1, UNANSWERED, &log).await;
        let owner = slow.connection().unique_name().expect("unique").to_string();
        let nothing = read_voltage(&monitor, SLOW, &owner);
        assert_eq!(nothing, None, "nothing read yet");
        // The driver answers from now on: the next attempt reads it.
        let _server = slow.serve().await.expect("serve");
        let volts = eventually("the slow service read", &log, || {
            read_voltage(&monitor, SLOW, &owner)
        })
        .await;
        assert_eq!(volts, 53.1);
        said(&log, "answered GetItems after").await;
        let found = monitor.take_events();
        let added = Discovery::Added(SLOW.to_string());
        assert!(found.contains(&added), "the daemon is told: {found:?}");
    });
    log_has(
        &log,
        &[
            ("WARN", 1),
            ("does not answer GetItems", 1),
            ("answered GetItems after", 1),
        ],
    );
}

/// Answers every `GetItems` that `conn` receives with a battery at `volts`, each `late` after
/// the call: a driver on a device too busy to answer within the first attempt's time.
async fn answer_late(conn: Connection, volts: f64, late: Duration) {
    let mut calls = get_items_calls(&conn).await;
    tokio::spawn(async move {
        while let Some(Ok(call)) = calls.next().await {
            let conn = conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(late).await;
                let item = |value: zvariant::Value<'static>, text: &str| {
                    HashMap::from([
                        ("Value".to_string(), value),
                        ("Text".to_string(), zvariant::Value::from(text.to_string())),
                    ])
                };
                let items = HashMap::from([
                    ("/DeviceInstance".to_string(), item(3i32.into(), "3")),
                    (
                        "/ProductName".to_string(),
                        item("SerialBattery(JK)".into(), "SerialBattery(JK)"),
                    ),
                    ("/Dc/0/Voltage".to_string(), item(volts.into(), "53.3V")),
                ]);
                let header = call.header();
                // The call may have been given up by then: the answer is sent all the same.
                let _ = conn.reply(&header, &items).await;
            });
        }
    });
}

#[test]
fn a_service_that_always_answers_later_than_the_first_wait_is_read() {
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let log = Log::default();
    log.run(async {
        let late = connect_to(bus.address()).await.expect("connect");
        // Later than the first attempt waits, within what a later one waits.
        answer_late(late.clone(), 53.3, RETRY.answer_within * 2).await;
        request_name(&late, SLOW).await.expect("the name");
        let owner = late.unique_name().expect("unique").to_string();
        let watcher = connect_to(bus.address()).await.expect("connect");
        let monitor = Monitor::start_with(&watcher, bus.address(), OWN, RETRY)
            .await
            .expect("monitor");
        let volts = eventually("the late service read", &log, || {
            read_voltage(&monitor, SLOW, &owner)
        })
        .await;
        assert_eq!(volts, 53.3);
        said(&log, "answered GetItems after").await;
    });
    log_has(
        &log,
        &[
            ("does not answer GetItems", 1),
            ("answered GetItems after", 1),
        ],
    );
}

#[test]
fn the_wait_for_an_answer_doubles_up_to_its_longest() {
    let device = ScanRetry::default();
    let waits: Vec<u64> = (0..6)
        .map(|failed| device.answer_wait(failed).as_secs())
        .collect();
    assert_eq!(waits, [5, 10, 20, 25, 25, 25]);
    assert_eq!(device.answer_wait(u32::MAX), Duration::from_secs(25));
    let odd = ScanRetry {
        longest_answer_wait: Duration::from_secs(1),
        ..device
    };
    assert_eq!(
        odd.answer_wait(3),
        Duration::from_secs(5),
        "never below the first wait"
    );
}

#[test]
fn a_service_that_never_answers_is_waited_for_while_its_process_owns_the_name() {
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let log = Log::default();
    log.run(async {
        let (stalled, monitor) = stalled_and_watched(&bus, 1.0, 2, &log).await;
        // Its process gives the name up; another one, which answers, takes it.
        release_name(stalled.connection(), SLOW)
            .await
            .expect("released");
        let next = battery(&bus, 52.4).await;
        let _server = next.serve().await.expect("serve");
        let next_owner = next.connection().unique_name().expect("unique").to_string();
        request_name(next.connection(), SLOW)
            .await
            .expect("the name");
        let volts = eventually("the new process read", &log, || {
            read_voltage(&monitor, SLOW, &next_owner)
        })
        .await;
        assert_eq!(volts, 52.4);
        said(&log, "no longer waited for").await;
        // Still read: the old process's attempts left the new one's entry alone.
        tokio::time::sleep(RETRY.longest_pause * 2).await;
        assert_eq!(read_voltage(&monitor, SLOW, &next_owner), Some(52.4));
    });
    log_has(
        &log,
        &[
            ("does not answer GetItems", 1),
            ("no longer waited for", 1),
            ("answered GetItems after", 0),
        ],
    );
}

/// What the monitor logs while a test runs on this thread.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Log {
    /// Runs `test` on a current-thread runtime, logging into this.
    fn run(&self, test: impl std::future::Future<Output = ()>) {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        tracing::subscriber::with_default(subscriber, || runtime.block_on(test));
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = Log;

    fn make_writer(&'a self) -> Log {
        self.clone()
    }
}

#[test]
fn names_that_left_the_bus_are_not_kept() {
    // Services under names that keep changing (an adapter numbered anew at every restart):
    // nothing is kept for a name once it left the bus, and the one that stays is still read.
    let bus = PrivateBus::start(crate::write_file).expect("dbus-daemon");
    let log = Log::default();
    log.run(async {
        let watcher = connect_to(bus.address()).await.expect("connect");
        let monitor = Monitor::start_with(&watcher, bus.address(), OWN, RETRY)
            .await
            .expect("monitor");
        let stays = battery(&bus, 52.0).await;
        let _served = stays.serve().await.expect("serve");
        request_name(stays.connection(), SLOW)
            .await
            .expect("the name");
        let owner = stays
            .connection()
            .unique_name()
            .expect("unique")
            .to_string();
        for k in 0..20 {
            let name = format!("com.victronenergy.battery.ble_{k}");
            let passing = battery(&bus, 53.0).await;
            let _served = passing.serve().await.expect("serve");
            request_name(passing.connection(), &name)
                .await
                .expect("the name");
            let its = passing
                .connection()
                .unique_name()
                .expect("unique")
                .to_string();
            eventually("read", &log, || read_voltage(&monitor, &name, &its)).await;
            release_name(passing.connection(), &name)
                .await
                .expect("released");
        }
        eventually("only the names on the bus kept", &log, || {
            (monitor.scans_kept() == 1).then_some(())
        })
        .await;
        assert_eq!(read_voltage(&monitor, SLOW, &owner), Some(52.0));
    });
}
