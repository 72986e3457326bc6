//! A bus that stops (`dbus-daemon` stopped with SIGSTOP): only the bus work waits. Stopped in
//! the middle of a scan, the daemon's tick goes on (its summary line, written to the log, not
//! the bus, keeps coming) and SIGTERM still stops it at once; an `ItemsChanged` the stopped bus
//! does not take is held for the next one instead of holding up the caller.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aggregator::child::{self, Signal};
use aggregator_core::value::Value;
use support::bus::{client, num, until, Daemon};
use support::config::{yaml, TestConfig};
use support::world::{runtime, World};
use support::TWO_BATTERIES;
use venus_bus::export::BusItemService;
use venus_bus::private::PrivateBus;
use venus_bus::raw::RawConnection;
use venus_bus::wire::Kind;

fn config() -> String {
    TestConfig::default()
        .update_interval("100ms")
        .strategy(yaml(
            "{ plugin: serialbattery, config: { max_cell_voltage_soc_full: 3.55, min_cell_voltage_soc_empty: 2.9 } }",
        ))
        .safety(|s| s.max_cell_voltage(3.65))
        .section("logging", |l| l.set("summary_every", "100ms"))
        .to_yaml()
}

/// The summary lines so far: one per tick.
fn ticks(daemon: &Daemon) -> usize {
    daemon.log_text().matches("CVL ").count()
}

#[test]
fn a_bus_stopped_during_a_scan_stops_neither_the_tick_nor_sigterm() {
    runtime().block_on(async {
        let mut world = World::start(TWO_BATTERIES, &config()).await;
        let (daemon, bus, conn) = (&mut world.daemon, &world.bus, &world.conn);
        let (ok, items) = until(conn, Duration::from_secs(10), |i| {
            num(i, "/System/NrOfBatteries") == Some(2.0)
        })
        .await;
        assert!(ok, "{items:?}");

        // A new battery-class service: the daemon scans it, and the bus stops before the
        // service could answer.
        let late = client(bus.address()).await;
        late.request_name("com.victronenergy.battery.late")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        child::send(bus.pid(), Signal::STOP).unwrap();
        let stopped = Instant::now();
        let before = ticks(daemon);
        tokio::time::sleep(Duration::from_secs(6)).await;
        let during = ticks(daemon) - before;
        let log = daemon.log_text();
        // 60 ticks of 100 ms; a runtime held up for a few seconds would miss most of them.
        assert!(
            during >= 30,
            "{during} ticks in the 6 s the bus was stopped:\n{log}"
        );

        let asked = Instant::now();
        let code = daemon.terminate().await;
        let took = asked.elapsed();
        assert_eq!(code, Some(0), "{}", daemon.log_text());
        assert!(
            took < Duration::from_secs(3),
            "SIGTERM took {took:?} with the bus stopped {:?}",
            stopped.elapsed()
        );
        assert!(daemon.log_text().contains("SIGTERM: stopping"));
        child::send(bus.pid(), Signal::CONT).unwrap();
    });
}

/// One `ItemsChanged` of this many bytes of text: a few fill the socket to a stopped bus.
const BIG: usize = 64 * 1024;

#[test]
fn an_items_changed_the_stopped_bus_does_not_take_is_held_for_the_next() {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
    let rule = "type='signal',interface='com.victronenergy.BusItem',member='ItemsChanged',path='/'";
    let mut listener = runtime()
        .block_on(RawConnection::connect(bus.address(), &[rule]))
        .expect("listener");
    runtime().block_on(async {
        let connection = venus_bus::connect_with_writer(bus.address()).await.unwrap();
        let service = BusItemService::with_writer(connection);
        let publish = |path: String, k: usize| {
            let text = char::from(b'a' + (k % 26) as u8).to_string().repeat(BIG);
            service.store(vec![(path.clone(), Value::Text(text), "t".into())]);
            let service = service.clone();
            async move {
                let started = Instant::now();
                tokio::time::timeout(Duration::from_secs(3), service.items_changed(&[path]))
                    .await
                    .expect("ItemsChanged held up its caller")
                    .unwrap();
                started.elapsed()
            }
        };
        child::send(bus.pid(), Signal::STOP).unwrap();
        // Until one is held: the socket is full.
        let mut sent = 0;
        loop {
            let took = publish(format!("/Big/{sent}"), sent).await;
            sent += 1;
            if took >= Duration::from_millis(400) {
                break;
            }
            assert!(
                sent < 100,
                "100 messages of 64 KiB and the socket never filled"
            );
        }
        // Another while the bus still takes nothing: held with the first.
        let took = publish(format!("/Big/{sent}"), sent).await;
        sent += 1;
        assert!(took >= Duration::from_millis(400), "{took:?}");
        child::send(bus.pid(), Signal::CONT).unwrap();
        let took = publish(format!("/Big/{sent}"), sent).await;
        sent += 1;
        assert!(took < Duration::from_secs(2), "{took:?}");

        // Read on this runtime: a message the bus had begun to take is finished by one of its
        // tasks.
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < sent && Instant::now() < deadline {
            listener
                .drain(|msg| {
                    if msg.kind != Kind::Signal {
                        return;
                    }
                    let _ = msg.body.items(
                        |_| true,
                        |path, _| {
                            let k: usize = path.rsplit('/').next().unwrap().parse().unwrap();
                            *seen.entry(k).or_default() += 1;
                        },
                    );
                })
                .expect("the listener reads");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Every path once at least: the held ones went with the message after them.
        assert_eq!(
            seen.keys().copied().collect::<Vec<_>>(),
            (0..sent).collect::<Vec<_>>(),
            "{seen:?}"
        );
    });
}
