//! What the daemon costs on a simulated bank: CPU per tick, memory, the messages it sends per
//! tick and how soon it publishes, for banks of several sizes.
//!
//! ```text
//! cargo build --release --workspace && cargo bench -p aggregator --bench daemon
//! ```
//! The release build puts the plugins next to the daemon binary, which is where the daemon
//! loads them from. `BENCH_SECONDS` (default 60) is the measuring window per bank,
//! `BENCH_SIZES` the banks as batteries x cells (default `2x16,8x16,16x32`), `BENCH_SIGNALS`
//! how the simulated batteries signal their changes (default `properties,items`: each bank
//! once with one `PropertiesChanged` per changed value, as dbus-serialbattery does, and once
//! with one `ItemsChanged` per service and step), `BENCH_DAEMON` another build's daemon binary
//! to measure (its plugins beside it), `BENCH_RECORD` the flight recorder's `record.keep`
//! (default `30m`, the shipped one; `0s` measures the daemon without it), and
//! `BENCH_LEGACY_CONFIG=1` writes the configuration as builds from before the recorder and the
//! guard's cell and temperature windows read it (no `record:`, `safety:` with the charge
//! bounds only; they refuse the other keys), to measure such a build with `BENCH_DAEMON`.
//!
//! For each bank: a private bus; the daemon as a child process (current source `bms`, strategy
//! `lfp-balancing`), waiting for its batteries; a monitor connection that counts every message
//! the daemon sends and every `BusItem` signal on the bus; then the simulator, on a thread and
//! runtime of its own so that nothing here delays it, with batteries whose every value moves
//! every second.
//!
//! - CPU per tick: the daemon's CPU over the window divided by the ticks in it, from the
//!   process's CPU-time clock (`clock_getcpuclockid`: nanoseconds, all threads, also those
//!   that ended), else `/proc/<pid>/task/*/schedstat` (nanoseconds, live threads), else
//!   `/proc/<pid>/stat` (10 ms clock ticks, always printed as a cross-check).
//! - Bus CPU per tick: the `dbus-daemon`'s, which routes every signal to every matching
//!   connection, this bench's monitor included.
//! - Received signals: the `PropertiesChanged` and `ItemsChanged` of others, all of which the
//!   daemon's match rules take in.
//! - View lag: how far behind the bus the daemon's view was when it published, read off the
//!   published `/Dc/0/Current` (the sum of the batteries' currents, which jitter makes a new
//!   number at every step): the monitor keeps the sum of the currents the batteries signalled,
//!   as the bus routed them, and for each published current finds when the sum last had that
//!   value; the lag is the time from the first change after it to the publish (0 when it was
//!   still the newest). A daemon that keeps up shows a few ms at most.
//! - Queued: the messages the bus daemon holds for the daemon and has not yet written to its
//!   sockets, at the window's start and end (`start>end`), from the bus daemon's `Debug.Stats`
//!   interface where it has one. A daemon that keeps up shows about one tick's signals at
//!   most, and no growth; a queue that grows means the daemon takes in only a share of the
//!   signals, and its CPU per tick is that of the share: not comparable with the CPU of a
//!   daemon that takes in all of them.
//! - First publish: from the moment the last simulated battery's name appears on the bus to the
//!   moment ours does, both seen on one subscription.
//! - Recorder: what the flight recorder adds to each tick, measured apart in this process on
//!   the same shape of bank with every value moving (the recorder's worst case), 30 minutes of
//!   ticks: its CPU a tick (and the share of the daemon's tick measured above) and the memory
//!   it holds for them, within `record.max_memory_kib`.
//! - Floor: what the least a signal consumer does costs on this machine, measured first with
//!   bare system calls (one wake-up, taking in one small message that arrived on its own,
//!   sending one), added up per bank for the signals it received. Virtual machines make the
//!   first two costly; no daemon that wakes once per tick and reads these signals can go below.

// A developer's measurement, not a program of a device: it writes its configs and logs
// itself (clippy.toml keeps file writes to the state writer in the programs).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aggregator_sim::{Scenario, Simulator};
use futures_lite::StreamExt;
use tokio::sync::oneshot;
use venus_bus::client::list_names;
use venus_bus::connect_to;
use venus_bus::private::PrivateBus;
use zbus::message::Type;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, MatchRule, Message, MessageStream};

/// Our published name.
const OWN: &str = "com.victronenergy.battery.aggregate";

/// The daemon's tick, as configured below.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);

/// The plugins the configuration below loads.
const PLUGINS: [&str; 2] = ["libplugin_bms.so", "libplugin_lfp_balancing.so"];

/// The demo's configuration, whose LFP strategy section the bench uses as it is.
const DEMO_CONFIG: &str = include_str!("../scenarios/demo-config.yaml");

/// Warnings this setup causes by design: the state folder is new, and the daemon asks for its
/// device instance before the simulator's settings service is there.
const SETUP_WARNINGS: [&str; 2] = [
    "no saved state yet",
    "no device instance from com.victronenergy.settings",
];

/// Between the daemon's connection and the simulator's start: long enough for the daemon to
/// list the bus and settle into waiting for batteries.
const DAEMON_SETTLE: Duration = Duration::from_secs(1);

/// Between the first publish and the window: the scans of the services are answered and the
/// first tick after registration is done.
const PUBLISH_SETTLE: Duration = Duration::from_secs(2);

/// Longest wait for the first publish (the daemon publishes safe values after its
/// `startup_wait` of 30 s at the latest).
const PUBLISH_WITHIN: Duration = Duration::from_secs(45);

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("daemon bench: {problem}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), String> {
    let options = Options::from_env()?;
    // Another build's daemon (its plugins beside it), to compare two builds on one machine.
    let chosen = std::env::var_os("BENCH_DAEMON").map(PathBuf::from);
    let exe = chosen
        .as_deref()
        .unwrap_or(Path::new(env!("CARGO_BIN_EXE_dbus-aggregate-batteries")));
    let plugins_dir = exe
        .parent()
        .ok_or_else(|| format!("{} has no folder", exe.display()))?;
    let missing: Vec<&str> = PLUGINS
        .into_iter()
        .filter(|file| !plugins_dir.join(file).exists())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} missing in {}: build the plugins first with\n  \
             cargo build --release --workspace && cargo bench -p aggregator --bench daemon",
            missing.join(", "),
            plugins_dir.display()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start a runtime: {err}"))?;

    println!(
        "daemon bench: {} s per bank, banks {}",
        options.window.as_secs(),
        options
            .banks
            .iter()
            .map(Bank::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let floor = Floor::measure();
    println!("{}", floor.line());
    let mut results = Vec::new();
    let mut failed = false;
    for bank in &options.banks {
        let run = runtime.block_on(measure(*bank, options.window, exe, plugins_dir))?;
        println!("{}", run.figures.line());
        println!("{}", RecorderCost::measure(*bank).line(&run.figures));
        if run.expected_warnings > 0 {
            println!(
                "{bank}: {} warnings of this setup in the daemon's log (fresh state folder, no \
                 settings service before the simulator)",
                run.expected_warnings
            );
        }
        if !run.problems.is_empty() {
            println!("{bank}: the daemon's log has warnings or errors:");
            for line in &run.problems {
                println!("    {line}");
            }
        }
        if let Some(exit) = &run.exit_problem {
            println!("{bank}: {exit}");
            failed = true;
        }
        results.push(run.figures);
    }
    print_table(&results, &floor);
    if failed {
        return Err("the daemon did not stop cleanly on SIGTERM (see above)".into());
    }
    Ok(())
}

// ---- the recorder ----------------------------------------------------------------------------

/// What the flight recorder costs on a bank's shape: 30 minutes of one-second ticks whose
/// every value moves, pushed into a recorder as the daemon's tick does.
struct RecorderCost {
    bank: Bank,
    /// CPU a tick: this thread's CPU over the ticks with the pushes, less the same ticks
    /// without them (making the simulated values).
    per_tick: Option<Duration>,
    /// Memory held after the 30 minutes, bytes, and the most at any tick.
    held: usize,
    most: usize,
    ticks: u64,
}

impl RecorderCost {
    const TICKS: u64 = 1800;

    fn measure(bank: Bank) -> Self {
        let with = Self::run(bank, true);
        let without = Self::run(bank, false);
        let per_tick = match (with.per_tick, without.per_tick) {
            (Some(with), Some(without)) => Some(with.saturating_sub(without) / Self::TICKS as u32),
            _ => None,
        };
        RecorderCost { per_tick, ..with }
    }

    /// The ticks, pushed into a recorder or not; `per_tick` is the CPU of them all here.
    fn run(bank: Bank, push: bool) -> Self {
        use aggregator::record::{Recorder, TickRecord};
        use aggregator_core::engine::TickInputs;
        use aggregator_core::presence::Battery;
        use aggregator_core::reading::BatteryReading;
        use plugin_api::{BatteryState, LocalDate};

        let bound = aggregator::config::Record::default().max_memory_kib as usize * 1024;
        let mut recorder = Recorder::new(1800.0, bound, String::new());
        let mut seed = 11u64;
        let mut noise = move |spread: f64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64 * spread).round()
        };
        let inputs = TickInputs {
            cells: bank.cells as u32,
            expected: bank.batteries as u32,
            left_out: Vec::new(),
            vebus: Vec::new(),
            solar_chargers: Vec::new(),
            smartshunts: Vec::new(),
            dc_sources: Vec::new(),
            monitor_soc: None,
            low_soc: Some(10),
            feed_in_setting: Some(1),
            date: LocalDate::from_days_since_epoch(20_619),
            dt_s: 1.0,
        };
        let mut batteries: Vec<Battery> = (0..bank.batteries)
            .map(|i| Battery {
                name: format!("Bat{}", i + 1),
                service: format!("com.victronenergy.battery.ttyUSB{i}"),
                state: BatteryState::Online,
                reading: BatteryReading {
                    installed_capacity_ah: Some(280.0),
                    charge_mode: Some("Bulk".into()),
                    cells_per_battery: Some(bank.cells as i64),
                    cell_voltages_v: vec![None; bank.cells],
                    ..BatteryReading::default()
                },
            })
            .collect();
        let mut most = 0;
        let started = thread_cpu();
        for t in 0..Self::TICKS {
            // A BMS's values: millivolts, centiamperes, tenths of a degree, all moving.
            for b in &mut batteries {
                let r = &mut b.reading;
                for cell in &mut r.cell_voltages_v {
                    *cell = Some((3300.0 + noise(20.0)) / 1000.0);
                }
                r.voltage_v = Some((52_800.0 + noise(100.0)) / 1000.0);
                r.current_a = Some((1000.0 + noise(500.0)) / 100.0);
                r.power_w = Some((5280.0 + noise(300.0)) / 10.0);
                r.temperature_c = Some((250.0 + noise(10.0)) / 10.0);
                r.soc_pct = Some((50_000.0 + noise(100.0)) / 1000.0);
                r.max_cell_voltage_v = Some((3320.0 + noise(5.0)) / 1000.0);
                r.min_cell_voltage_v = Some((3300.0 + noise(5.0)) / 1000.0);
            }
            if push {
                recorder.push(&TickRecord::inputs(
                    t as f64 + 0.000_123,
                    &batteries,
                    &inputs,
                ));
                most = most.max(recorder.bytes());
            } else {
                std::hint::black_box(&batteries);
            }
        }
        let per_tick = match (started, thread_cpu()) {
            (Some(started), Some(ended)) => Some(ended.saturating_sub(started)),
            _ => None,
        };
        RecorderCost {
            bank,
            per_tick,
            held: recorder.bytes(),
            most,
            ticks: recorder.kept_ticks(),
        }
    }

    /// One line, with the share of the daemon's tick in `figures` (which ran with the recorder
    /// as `BENCH_RECORD` says).
    fn line(&self, figures: &Figures) -> String {
        let cpu = match (self.per_tick.map(ms), figures.cpu_ms_per_tick()) {
            (Some(per_tick_ms), Some(tick_ms)) => {
                let share = per_tick_ms / tick_ms * 100.0;
                // The recorder is on by default: it must stay under a tenth of the tick.
                let over = if share >= 10.0 {
                    ", ABOVE a tenth of the tick"
                } else {
                    ""
                };
                format!(
                    "{per_tick_ms:.3} ms/tick CPU ({share:.1} % of the daemon's tick above{over})"
                )
            }
            (Some(per_tick_ms), None) => format!("{per_tick_ms:.3} ms/tick CPU"),
            _ => "CPU not measured (no thread CPU clock)".into(),
        };
        format!(
            "{}: recorder {cpu}, memory {} B/tick, {:.2} MiB for {} ticks (at most {:.2} MiB), \
             every value moving",
            self.bank,
            self.held / self.ticks.max(1) as usize,
            self.held as f64 / (1 << 20) as f64,
            self.ticks,
            self.most as f64 / (1 << 20) as f64,
        )
    }
}

// ---- options ---------------------------------------------------------------------------------

/// A bank: batteries in parallel, cells in series per battery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Bank {
    batteries: usize,
    cells: usize,
    /// One `ItemsChanged` per service and step, else one `PropertiesChanged` per value.
    items: bool,
}

impl std::fmt::Display for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let style = if self.items { "IC" } else { "PC" };
        write!(f, "{}x{} {style}", self.batteries, self.cells)
    }
}

struct Options {
    window: Duration,
    banks: Vec<Bank>,
}

impl Options {
    fn from_env() -> Result<Options, String> {
        let seconds = match std::env::var("BENCH_SECONDS") {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    format!("BENCH_SECONDS is `{text}`; it must be a whole number of seconds > 0")
                })?,
            Err(_) => 60,
        };
        let sizes = std::env::var("BENCH_SIZES").unwrap_or_else(|_| "2x16,8x16,16x32".into());
        let styles = std::env::var("BENCH_SIGNALS").unwrap_or_else(|_| "properties,items".into());
        let styles = styles
            .split(',')
            .map(|style| match style.trim() {
                "properties" => Ok(false),
                "items" => Ok(true),
                other => Err(format!(
                    "BENCH_SIGNALS has `{other}`; it is `properties`, `items` or both, separated \
                     by a comma"
                )),
            })
            .collect::<Result<Vec<bool>, _>>()?;
        let sizes: Vec<Bank> = sizes
            .split(',')
            .map(|size| {
                let (batteries, cells) = size.trim().split_once('x').unwrap_or(("", ""));
                match (batteries.parse(), cells.parse()) {
                    (Ok(batteries), Ok(cells)) if batteries > 0 && cells > 0 => Ok(Bank {
                        batteries,
                        cells,
                        items: false,
                    }),
                    _ => Err(format!(
                        "BENCH_SIZES has `{size}`; each bank is batteries x cells, e.g. \
                         `2x16,8x16,16x32`"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let banks = sizes
            .iter()
            .flat_map(|bank| styles.iter().map(|&items| Bank { items, ..*bank }))
            .collect();
        Ok(Options {
            window: Duration::from_secs(seconds),
            banks,
        })
    }
}

// ---- one bank --------------------------------------------------------------------------------

/// What one bank's run gives.
struct Run {
    figures: Figures,
    /// Warning and error lines of the daemon's log, but for those of [`SETUP_WARNINGS`].
    problems: Vec<String>,
    /// Lines of the log with one of [`SETUP_WARNINGS`].
    expected_warnings: usize,
    /// How the daemon did not stop cleanly, if it did not.
    exit_problem: Option<String>,
}

async fn measure(bank: Bank, window: Duration, exe: &Path, plugins: &Path) -> Result<Run, String> {
    let bus = PrivateBus::start(aggregator::state_file::write_atomically)
        .map_err(|err| format!("{bank}: private bus: {err}"))?;
    let dir = tempfile::tempdir().map_err(|err| format!("{bank}: temp dir: {err}"))?;
    let config = dir.path().join("config.yaml");
    fs::write(&config, config_yaml(bank, dir.path(), plugins)?)
        .map_err(|err| format!("{}: {err}", config.display()))?;
    let client = connect_to(bus.address())
        .await
        .map_err(|err| format!("{bank}: cannot connect to the private bus: {err}"))?;

    let mut daemon = Daemon::start(exe, &config, bus.address(), &dir.path().join("daemon.log"))?;
    let unique = daemon.unique_name(&client).await?;
    tokio::time::sleep(DAEMON_SETTLE).await;
    daemon.alive("waiting for batteries")?;

    let monitor = Monitor::start(bus.address(), &unique).await?;
    let mut appearances = name_appearances(&client).await?;
    let scenario = Scenario::parse(&scenario_yaml(bank), "bench scenario")
        .map_err(|err| format!("{bank}: {err}"))?;
    let batteries: BTreeSet<String> = scenario.batteries().iter().map(|b| b.bus_name()).collect();
    let sim = SimThread::start(bus.address(), scenario).await?;
    let first_publish = daemon.first_publish(&mut appearances, batteries).await?;

    tokio::time::sleep(PUBLISH_SETTLE).await;
    let queued_at_start = daemon.queued(&client).await;
    let start = Sample::take(&daemon, &bus, &monitor);
    tokio::time::sleep(window).await;
    daemon.alive("measuring")?;
    let end = Sample::take(&daemon, &bus, &monitor);
    let queued = queued_at_start.zip(daemon.queued(&client).await);
    let memory = Memory::read(daemon.pid);
    let (lag, unmatched) = monitor
        .counters
        .lag
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .between(start.at, end.at);

    let exit = daemon.terminate();
    sim.stop().await;
    drop(monitor);
    drop(bus);

    let exit_problem = match exit {
        Some(0) => None,
        Some(code) => Some(format!("the daemon exited with {code} on SIGTERM")),
        None => Some("the daemon did not exit within 10 s of SIGTERM".into()),
    };
    let problems = daemon.problems();
    let unexpected: Vec<String> = problems
        .iter()
        .filter(|line| !SETUP_WARNINGS.iter().any(|w| line.contains(w)))
        .cloned()
        .collect();
    let elapsed = end.at.duration_since(start.at);
    let daemon_cpu = end.daemon.since(&start.daemon);
    let sent = end.tally.minus(&start.tally);

    Ok(Run {
        figures: Figures {
            bank,
            elapsed,
            ticks: elapsed.as_secs_f64() / UPDATE_INTERVAL.as_secs_f64(),
            cpu: daemon_cpu.best(),
            cpu_stat: daemon_cpu.stat,
            bus_cpu: end.bus.since(&start.bus).best(),
            memory,
            sent,
            first_publish,
            lag,
            unmatched,
            queued,
        },
        expected_warnings: problems.len() - unexpected.len(),
        problems: unexpected,
        exit_problem,
    })
}

/// The process id of the connection with unique name `name`.
async fn connection_pid(client: &Connection, name: &str) -> Option<u32> {
    let reply = client
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "GetConnectionUnixProcessID",
            &(name,),
        )
        .await
        .ok()?;
    reply.body().deserialize::<u32>().ok()
}

/// The daemon's configuration for `bank`; the strategy is the demo's.
fn config_yaml(bank: Bank, dir: &Path, plugins: &Path) -> Result<String, String> {
    let demo: serde_yaml::Value =
        serde_yaml::from_str(DEMO_CONFIG).map_err(|err| format!("demo-config.yaml: {err}"))?;
    let strategy = demo
        .get("strategy")
        .ok_or("demo-config.yaml has no `strategy`")?;
    let mut section = serde_yaml::Mapping::new();
    section.insert("strategy".into(), strategy.clone());
    let strategy = serde_yaml::to_string(&section).map_err(|err| err.to_string())?;
    let quoted = |path: &Path| format!("'{}'", path.display().to_string().replace('\'', "''"));
    let legacy = std::env::var_os("BENCH_LEGACY_CONFIG").is_some();
    let windows = if legacy {
        ""
    } else {
        "  min_cell_voltage: 2.80
  min_charge_temperature: 0
  max_charge_temperature: 45
  min_discharge_temperature: -20
  max_discharge_temperature: 55
"
    };
    let record = match std::env::var("BENCH_RECORD") {
        _ if legacy => String::new(),
        Ok(keep) => format!("record:\n  keep: {keep}\n"),
        Err(_) => "record:\n  keep: 30m\n".to_string(),
    };
    Ok(format!(
        "update_interval: {interval}s
batteries:
  expected: {batteries}
  cells: {cells}
  startup_wait: 30s
current_source:
  plugin: bms
{strategy}safety:
  max_cell_voltage: 3.65
{windows}  max_charge_current: 300
  max_discharge_current: 300
publish:
  cell_voltages: false
paths:
  state_dir: {state}
  plugins_dir: {plugins}
logging:
  level: warn
  summary_every: 0s
{record}",
        interval = UPDATE_INTERVAL.as_secs(),
        batteries = bank.batteries,
        cells = bank.cells,
        state = quoted(&dir.join("state")),
        plugins = quoted(plugins),
    ))
}

/// The simulated bank: every value moves every second, signalled as `bank` says, and an hour of slow charging (far longer than any window).
fn scenario_yaml(bank: Bank) -> String {
    let signals = if bank.items { "items" } else { "properties" };
    let mut text = format!("step: 1s\nsignals: {signals}\njitter: true\nbatteries:\n");
    for index in 1..=bank.batteries {
        let _ = write!(
            text,
            "  - service: ttyUSB{service}
    custom_name: Bat{index}
    serial: BENCH-{index:04}
    device_instance: {index}
    product_name: SerialBattery(Jkbms)
    cells: {cells}
    capacity_ah: 280
    soc: 50
",
            service = index - 1,
            cells = bank.cells,
        );
    }
    text.push_str(
        "segments:
  - duration: 1h
    cell_voltage: [3.30, 3.36]
    battery_current: 20
",
    );
    text
}

// ---- the daemon ------------------------------------------------------------------------------

/// The daemon as a child process; killed when dropped.
struct Daemon {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Daemon {
    fn start(exe: &Path, config: &Path, address: &str, log: &Path) -> Result<Daemon, String> {
        let out = fs::File::create(log).map_err(|err| format!("{}: {err}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|err| format!("{}: {err}", log.display()))?;
        let child = Command::new(exe)
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("DBUS_SESSION_BUS_ADDRESS", address)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|err| format!("cannot start {}: {err}", exe.display()))?;
        Ok(Daemon {
            pid: child.id(),
            child,
            log: log.to_path_buf(),
        })
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An error with the log when the daemon is no longer running.
    fn alive(&mut self, doing: &str) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the daemon died while {doing} ({status}); its log:\n{}",
                self.log_text()
            )),
            Err(err) => Err(format!("cannot check the daemon: {err}")),
        }
    }

    /// The daemon's unique bus name, found by its process id once it has connected.
    async fn unique_name(&mut self, client: &Connection) -> Result<String, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut others = BTreeSet::new();
        if let Some(own) = client.unique_name() {
            others.insert(own.to_string());
        }
        while Instant::now() < deadline {
            self.alive("connecting")?;
            let names = list_names(client)
                .await
                .map_err(|err| format!("ListNames: {err}"))?;
            for name in names.into_iter().filter(|n| n.starts_with(':')) {
                if others.contains(&name) {
                    continue;
                }
                if connection_pid(client, &name).await == Some(self.pid) {
                    return Ok(name);
                }
                others.insert(name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "the daemon did not connect to the bus within 15 s; its log:\n{}",
            self.log_text()
        ))
    }

    /// The messages the bus daemon holds for this daemon and has not yet written to its
    /// sockets, over all its connections; `None` from a bus daemon built without its
    /// `Debug.Stats` interface.
    ///
    /// A daemon that reads the bus in time shows at most about one tick's signals, with no
    /// growth over the window. One that falls behind shows a queue that grows: its CPU per
    /// tick is then that of the share of the signals it took in, and cannot be set against
    /// the CPU of a daemon that took in all of them.
    async fn queued(&self, client: &Connection) -> Option<u64> {
        let names = list_names(client).await.ok()?;
        let mut queued = None;
        for name in names.iter().filter(|n| n.starts_with(':')) {
            if connection_pid(client, name).await != Some(self.pid) {
                continue;
            }
            let stats = client
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus.Debug.Stats"),
                    "GetConnectionStats",
                    &(name.as_str(),),
                )
                .await
                .ok()?;
            let stats: HashMap<String, OwnedValue> = stats.body().deserialize().ok()?;
            let messages = stats.get("OutgoingMessages")?.downcast_ref::<u32>().ok()?;
            *queued.get_or_insert(0) += u64::from(messages);
        }
        queued
    }

    /// From the moment the last battery's name appeared on the bus to the moment ours did;
    /// both seen on one subscription, so in the bus's order.
    async fn first_publish(
        &mut self,
        appearances: &mut MessageStream,
        mut batteries: BTreeSet<String>,
    ) -> Result<Duration, String> {
        let deadline = Instant::now() + PUBLISH_WITHIN;
        let mut all_batteries = None;
        while Instant::now() < deadline {
            self.alive("starting up")?;
            // Short waits, so that a dead daemon is noticed; the time is taken on arrival.
            let Ok(Some(Ok(msg))) =
                tokio::time::timeout(Duration::from_millis(200), appearances.next()).await
            else {
                continue;
            };
            let arrived = Instant::now();
            let Ok((name, _, new)) = msg.body().deserialize::<(String, String, String)>() else {
                continue;
            };
            if new.is_empty() {
                continue;
            }
            if batteries.remove(&name) && batteries.is_empty() {
                all_batteries = Some(arrived);
            }
            if name == OWN {
                let since = all_batteries.ok_or_else(|| {
                    format!(
                        "{OWN} appeared before every battery was on the bus; the daemon's \
                         log:\n{}",
                        self.log_text()
                    )
                })?;
                return Ok(arrived.duration_since(since));
            }
        }
        Err(format!(
            "{OWN} did not appear within {} s; the daemon's log:\n{}",
            PUBLISH_WITHIN.as_secs(),
            self.log_text()
        ))
    }

    /// SIGTERM, then the exit code (None: still running after 10 s).
    fn terminate(&mut self) -> Option<i32> {
        aggregator::child::terminate(&mut self.child, Duration::from_secs(10))
    }

    /// The warning and error lines of the log.
    fn problems(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|line| {
                let line = line.trim_start();
                line.starts_with("WARN") || line.starts_with("ERROR")
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sysconf` name of the clock tick rate on Linux.
const SC_CLK_TCK: i32 = 2;

#[repr(C)]
struct Timespec {
    tv_sec: std::os::raw::c_long,
    tv_nsec: std::os::raw::c_long,
}

extern "C" {
    fn sysconf(name: i32) -> std::os::raw::c_long;
    fn clock_getcpuclockid(pid: i32, clock: *mut i32) -> i32;
    fn clock_gettime(clock: i32, now: *mut Timespec) -> i32;
}

/// Clock ticks per second of `/proc/<pid>/stat` (100 on Linux).
fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { sysconf(SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// A subscription to `NameOwnerChanged` of every Venus name, made before the simulator
/// starts.
async fn name_appearances(client: &Connection) -> Result<MessageStream, String> {
    let rule = MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")
        .and_then(|b| b.interface("org.freedesktop.DBus"))
        .and_then(|b| b.member("NameOwnerChanged"))
        .and_then(|b| b.arg0ns("com.victronenergy"))
        .map_err(|err| format!("match rule: {err}"))?
        .build();
    MessageStream::for_match_rule(rule, client, Some(1024))
        .await
        .map_err(|err| format!("cannot subscribe to NameOwnerChanged: {err}"))
}

// ---- the simulator ---------------------------------------------------------------------------

/// The simulator on a thread with a runtime of its own.
struct SimThread {
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl SimThread {
    /// Starts it; returns once its services are registered.
    async fn start(address: &str, scenario: Scenario) -> Result<SimThread, String> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let address = address.to_string();
        std::thread::Builder::new()
            .name("simulator".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(format!("simulator runtime: {err}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let sim = match Simulator::start(&address, scenario).await {
                        Ok(sim) => sim,
                        Err(err) => {
                            let _ = ready_tx.send(Err(format!("simulator: {err}")));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                    sim.stop().await;
                });
                let _ = done_tx.send(());
            })
            .map_err(|err| format!("cannot start the simulator thread: {err}"))?;
        ready_rx
            .await
            .map_err(|_| "the simulator thread ended before its services were registered")??;
        Ok(SimThread {
            stop: Some(stop_tx),
            done: Some(done_rx),
        })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
    }
}

impl Drop for SimThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---- counting messages -----------------------------------------------------------------------

/// Message counts, running.
#[derive(Default)]
struct Counters {
    items_changed: AtomicU64,
    items_paths: AtomicU64,
    other_signals: AtomicU64,
    calls: AtomicU64,
    returns: AtomicU64,
    errors: AtomicU64,
    sent_bytes: AtomicU64,
    received_signals: AtomicU64,
    calls_in: AtomicU64,
    lag: std::sync::Mutex<LagTracker>,
}

/// The view's lag, read off the published current (see the module's comment).
#[derive(Default)]
struct LagTracker {
    /// The last `/Dc/0/Current` each battery (by unique name) signalled.
    currents: HashMap<String, f64>,
    /// When their sum changed, and to what; the last two minutes.
    sums: std::collections::VecDeque<(Instant, f64)>,
    /// The lag at each publish of a current, by the publish's time.
    lags: Vec<(Instant, Duration)>,
    /// Published currents that matched no sum of the last two minutes.
    unmatched: Vec<Instant>,
}

impl LagTracker {
    const KEPT: Duration = Duration::from_secs(120);

    fn battery_current(&mut self, sender: &str, value: f64, at: Instant) {
        self.currents.insert(sender.to_string(), value);
        let sum = self.currents.values().sum();
        self.sums.push_back((at, sum));
        while self
            .sums
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > Self::KEPT)
        {
            self.sums.pop_front();
        }
    }

    fn published(&mut self, current: f64, at: Instant) {
        let close = |sum: f64| (sum - current).abs() <= 1e-6 * current.abs().max(1.0);
        let Some(k) = self.sums.iter().rposition(|(_, sum)| close(*sum)) else {
            self.unmatched.push(at);
            return;
        };
        let lag = self.sums.get(k + 1).map_or(Duration::ZERO, |(next, _)| {
            at.saturating_duration_since(*next)
        });
        self.lags.push((at, lag));
    }

    /// Mean and largest lag of the publishes between `from` and `to`, and how many matched
    /// nothing.
    fn between(&self, from: Instant, to: Instant) -> (Option<(Duration, Duration)>, usize) {
        let lags: Vec<Duration> = self
            .lags
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, lag)| *lag)
            .collect();
        let unmatched = self
            .unmatched
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count();
        let stats = (!lags.is_empty()).then(|| {
            let mean = lags.iter().sum::<Duration>() / lags.len() as u32;
            (mean, lags.iter().copied().max().unwrap_or_default())
        });
        (stats, unmatched)
    }
}

/// The `Value` of `/Dc/0/Current` in a BusItem signal: a `PropertiesChanged` at that path, or
/// an entry of an `ItemsChanged`.
fn signalled_current(msg: &Message, member: &str, path: Option<&str>) -> Option<f64> {
    let value = match member {
        "PropertiesChanged" if path == Some("/Dc/0/Current") => {
            let mut body: HashMap<String, OwnedValue> = msg.body().deserialize().ok()?;
            body.remove("Value")?
        }
        "ItemsChanged" => {
            let mut items: HashMap<String, HashMap<String, OwnedValue>> =
                msg.body().deserialize().ok()?;
            items.remove("/Dc/0/Current")?.remove("Value")?
        }
        _ => return None,
    };
    venus_bus::variant::Field::from_owned(&value).number()
}
/// Message counts at one moment, or between two.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Sent by the daemon.
    items_changed: u64,
    /// Paths in those `ItemsChanged`.
    items_paths: u64,
    other_signals: u64,
    calls: u64,
    returns: u64,
    errors: u64,
    sent_bytes: u64,
    /// `PropertiesChanged` and `ItemsChanged` of others: what the daemon's match rules take in.
    received_signals: u64,
    /// Method calls to the daemon.
    calls_in: u64,
}

impl Tally {
    fn sent(&self) -> u64 {
        self.items_changed + self.other_signals + self.calls + self.returns + self.errors
    }

    fn minus(&self, earlier: &Tally) -> Tally {
        Tally {
            items_changed: self.items_changed - earlier.items_changed,
            items_paths: self.items_paths - earlier.items_paths,
            other_signals: self.other_signals - earlier.other_signals,
            calls: self.calls - earlier.calls,
            returns: self.returns - earlier.returns,
            errors: self.errors - earlier.errors,
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            received_signals: self.received_signals - earlier.received_signals,
            calls_in: self.calls_in - earlier.calls_in,
        }
    }
}

impl Counters {
    fn tally(&self) -> Tally {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Tally {
            items_changed: get(&self.items_changed),
            items_paths: get(&self.items_paths),
            other_signals: get(&self.other_signals),
            calls: get(&self.calls),
            returns: get(&self.returns),
            errors: get(&self.errors),
            sent_bytes: get(&self.sent_bytes),
            received_signals: get(&self.received_signals),
            calls_in: get(&self.calls_in),
        }
    }

    fn count(&self, msg: &Message, daemon: &str) {
        let arrived = Instant::now();
        let one = |counter: &AtomicU64| counter.fetch_add(1, Ordering::Relaxed);
        let header = msg.header();
        if msg.message_type() == Type::Signal && header.interface().is_some_and(|i| i == BUS_ITEM) {
            let member = header.member().map(|m| m.to_string()).unwrap_or_default();
            let path = header.path().map(|p| p.to_string());
            if let (Some(current), Some(sender)) = (
                signalled_current(msg, &member, path.as_deref()),
                header.sender(),
            ) {
                let mut lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
                if sender.as_str() == daemon {
                    lag.published(current, arrived);
                } else {
                    lag.battery_current(sender.as_str(), current, arrived);
                }
            }
        }
        let kind = msg.message_type();
        if header.sender().is_some_and(|s| s.as_str() == daemon) {
            self.sent_bytes
                .fetch_add(msg.data().len() as u64, Ordering::Relaxed);
            match kind {
                Type::Signal if header.member().is_some_and(|m| m == "ItemsChanged") => {
                    let paths = msg
                        .body()
                        .deserialize::<HashMap<String, HashMap<String, OwnedValue>>>()
                        .map_or(0, |items| items.len());
                    self.items_paths.fetch_add(paths as u64, Ordering::Relaxed);
                    one(&self.items_changed)
                }
                Type::Signal => one(&self.other_signals),
                Type::MethodCall => one(&self.calls),
                Type::MethodReturn => one(&self.returns),
                Type::Error => one(&self.errors),
            };
        } else if kind == Type::Signal {
            if header.interface().is_some_and(|i| i == BUS_ITEM)
                && header
                    .member()
                    .is_some_and(|m| m == "PropertiesChanged" || m == "ItemsChanged")
            {
                one(&self.received_signals);
            }
        } else if kind == Type::MethodCall
            && header.destination().is_some_and(|d| d.as_str() == daemon)
        {
            one(&self.calls_in);
        }
    }
}

const BUS_ITEM: &str = "com.victronenergy.BusItem";

/// A monitor connection (`BecomeMonitor`) counting what the daemon sends and receives; stops
/// when dropped.
struct Monitor {
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    async fn start(address: &str, daemon: &str) -> Result<Monitor, String> {
        let conn = zbus::connection::Builder::address(address)
            .map(|b| b.max_queued(1 << 16))
            .map_err(|err| format!("monitor address: {err}"))?
            .build()
            .await
            .map_err(|err| format!("monitor connection: {err}"))?;
        let rules = vec![
            format!("sender='{daemon}'"),
            format!("destination='{daemon}'"),
            format!("type='signal',interface='{BUS_ITEM}'"),
        ];
        conn.call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Monitoring"),
            "BecomeMonitor",
            &(rules, 0u32),
        )
        .await
        .map_err(|err| format!("BecomeMonitor: {err}"))?;
        let counters = Arc::new(Counters::default());
        let mine = Arc::clone(&counters);
        let daemon = daemon.to_string();
        let mut stream = MessageStream::from(conn);
        let task = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                mine.count(&msg, &daemon);
            }
        });
        Ok(Monitor { counters, task })
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- /proc -----------------------------------------------------------------------------------

/// CPU used by a process so far.
struct Cpu {
    /// The process's CPU-time clock (all threads, also those that ended).
    clock: Option<Duration>,
    /// utime + stime of `/proc/<pid>/stat` (all threads, also those that ended).
    stat: Option<Duration>,
    /// Nanoseconds on CPU of each live thread, from `/proc/<pid>/task/<tid>/schedstat`.
    threads: Option<BTreeMap<u32, u64>>,
}

/// CPU used between two readings.
struct CpuUsed {
    clock: Option<Duration>,
    /// From schedstat, when every thread of the first reading is still there.
    schedstat: Option<Duration>,
    stat: Option<Duration>,
}

impl CpuUsed {
    /// The finest source that is usable.
    fn best(&self) -> Option<(Duration, &'static str)> {
        match (self.clock, self.schedstat, self.stat) {
            (Some(ns), _, _) => Some((ns, "cpu clock")),
            (None, Some(ns), _) => Some((ns, "schedstat")),
            (None, None, Some(ticks)) => Some((ticks, "/proc/stat")),
            (None, None, None) => None,
        }
    }
}

impl Cpu {
    fn read(pid: u32) -> Cpu {
        Cpu {
            clock: process_cpu_clock(pid),
            stat: stat_cpu(pid),
            threads: thread_cpu_ns(pid),
        }
    }

    fn since(&self, earlier: &Cpu) -> CpuUsed {
        let between = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        // A thread that ended took its schedstat with it: then only /proc/stat is complete.
        let schedstat = match (&earlier.threads, &self.threads) {
            (Some(a), Some(b)) if a.keys().all(|tid| b.contains_key(tid)) => {
                let ns: u64 = b
                    .iter()
                    .map(|(tid, ns)| ns.saturating_sub(a.get(tid).copied().unwrap_or(0)))
                    .sum();
                Some(Duration::from_nanos(ns))
            }
            _ => None,
        };
        CpuUsed {
            clock: between(earlier.clock, self.clock),
            schedstat,
            stat: between(earlier.stat, self.stat),
        }
    }
}

fn process_cpu_clock(pid: u32) -> Option<Duration> {
    let mut clock = 0;
    let mut now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the out-parameter they are given.
    let ok = unsafe {
        clock_getcpuclockid(i32::try_from(pid).ok()?, &mut clock) == 0
            && clock_gettime(clock, &mut now) == 0
    };
    if !ok {
        return None;
    }
    clock_reading(now.tv_sec, now.tv_nsec)
}

/// A CPU clock's seconds and nanoseconds as a duration.
fn clock_reading(seconds: impl TryInto<u64>, nanoseconds: impl TryInto<u32>) -> Option<Duration> {
    Some(Duration::new(
        seconds.try_into().ok()?,
        nanoseconds.try_into().ok()?,
    ))
}

fn stat_cpu(pid: u32) -> Option<Duration> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not. utime and
    // stime are fields 14 and 15, counting the state (field 3) as the first after the name.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / clock_ticks_per_s(),
    ))
}

fn thread_cpu_ns(pid: u32) -> Option<BTreeMap<u32, u64>> {
    let mut threads = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let entry = entry.ok()?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let text = fs::read_to_string(entry.path().join("schedstat")).ok()?;
        let ns = text.split_whitespace().next()?.parse().ok()?;
        threads.insert(tid, ns);
    }
    // Kernels without scheduler statistics show zeros.
    (threads.values().any(|ns| *ns > 0)).then_some(threads)
}

/// Resident memory, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    peak_kib: u64,
    now_kib: u64,
}

impl Memory {
    fn read(pid: u32) -> Memory {
        let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            peak_kib: field("VmHWM:"),
            now_kib: field("VmRSS:"),
        }
    }
}

/// Everything read at one edge of the window, read back to back.
struct Sample {
    at: Instant,
    daemon: Cpu,
    bus: Cpu,
    tally: Tally,
}

impl Sample {
    fn take(daemon: &Daemon, bus: &PrivateBus, monitor: &Monitor) -> Sample {
        Sample {
            at: Instant::now(),
            daemon: Cpu::read(daemon.pid),
            bus: Cpu::read(bus.pid()),
            tally: monitor.counters.tally(),
        }
    }
}

// ---- reporting -------------------------------------------------------------------------------

/// One bank's figures.
struct Figures {
    bank: Bank,
    elapsed: Duration,
    ticks: f64,
    /// The daemon's CPU in the window and where it was read.
    cpu: Option<(Duration, &'static str)>,
    /// The same from `/proc/<pid>/stat`, as a cross-check.
    cpu_stat: Option<Duration>,
    /// The bus daemon's CPU in the window (it routes every signal to every match).
    bus_cpu: Option<(Duration, &'static str)>,
    memory: Memory,
    sent: Tally,
    first_publish: Duration,
    /// Mean and largest lag of the view at the publishes of the window.
    lag: Option<(Duration, Duration)>,
    /// Published currents in the window that matched no sum (see [`LagTracker`]).
    unmatched: usize,
    /// Messages the bus daemon held for the daemon at the window's start and end
    /// ([`Daemon::queued`]).
    queued: Option<(u64, u64)>,
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Figures {
    fn per_tick(&self, value: f64) -> f64 {
        value / self.ticks.max(1e-9)
    }

    fn cpu_ms_per_tick(&self) -> Option<f64> {
        self.cpu.map(|(cpu, _)| self.per_tick(ms(cpu)))
    }

    fn line(&self) -> String {
        let ticks = self.ticks.round();
        let cpu = match self.cpu {
            Some((cpu, source)) => {
                let mut text = format!(
                    "CPU {:.3} ms/tick ({:.2} ms in {ticks} ticks, {source}",
                    self.per_tick(ms(cpu)),
                    ms(cpu),
                );
                if let (Some(stat), false) = (self.cpu_stat, source == "/proc/stat") {
                    let _ = write!(text, "; /proc/stat {:.2} ms", ms(stat));
                }
                text + ")"
            }
            None => "CPU unknown (no /proc readings)".to_string(),
        };
        let sent = &self.sent;
        let paths = sent.items_paths as f64 / (sent.items_changed.max(1)) as f64;
        format!(
            "{}: {cpu}, peak RSS {:.1} MiB (now {:.1} MiB), sent {:.2} msg/tick ({} ItemsChanged \
             of {paths:.1} paths, {:.0} B/tick; {} other signals, {} calls, {} returns, {} \
             errors), {} calls to it, received ~{:.0} signals/s, first publish {:.0} ms, view \
             lag {}, {}",
            self.bank,
            mib(self.memory.peak_kib),
            mib(self.memory.now_kib),
            self.per_tick(sent.sent() as f64),
            sent.items_changed,
            self.per_tick(sent.sent_bytes as f64),
            sent.other_signals,
            sent.calls,
            sent.returns,
            sent.errors,
            sent.calls_in,
            sent.received_signals as f64 / self.elapsed.as_secs_f64().max(1e-9),
            ms(self.first_publish),
            self.lag_text(),
            self.queued_text(),
        )
    }

    fn queued_text(&self) -> String {
        match self.queued {
            Some((start, end)) => format!(
                "queued for it in the bus daemon {start} messages at the start, {end} at the end"
            ),
            None => "queued for it unknown (the bus daemon has no Debug.Stats)".into(),
        }
    }

    fn lag_text(&self) -> String {
        let mut text = match self.lag {
            Some((mean, max)) => format!("mean {:.0} ms, max {:.0} ms", ms(mean), ms(max)),
            None => "unknown (no published current matched)".into(),
        };
        if self.unmatched > 0 {
            let _ = write!(text, " ({} publishes matched no sum)", self.unmatched);
        }
        text
    }
}

fn print_table(results: &[Figures], floor: &Floor) {
    let dash = || "-".to_string();
    let opt = |v: Option<f64>, digits: usize| v.map_or_else(dash, |v| format!("{v:.digits$}"));
    println!();
    println!(
        "PC: one PropertiesChanged per changed value; IC: one ItemsChanged per service and step"
    );
    println!(
        "{:<10} {:>6} {:>12} {:>14} {:>13} {:>12} {:>9} {:>8} {:>9} {:>8} {:>11} {:>10} {:>12} {:>11} {:>11}",
        "bank",
        "ticks",
        "CPU ms/tick",
        "floor ms/tick",
        "stat ms/tick",
        "bus ms/tick",
        "peak MiB",
        "RSS MiB",
        "msg/tick",
        "B/tick",
        "recv sig/s",
        "publish ms",
        "lag mean ms",
        "lag max ms",
        "queued"
    );
    for f in results {
        println!(
            "{:<10} {:>6.0} {:>12} {:>14} {:>13} {:>12} {:>9.1} {:>8.1} {:>9.2} {:>8.0} {:>11.0} {:>10.0} {:>12} {:>11} {:>11}",
            f.bank.to_string(),
            f.ticks,
            opt(f.cpu_ms_per_tick(), 3),
            opt(floor.per_tick_ms(f.per_tick(f.sent.received_signals as f64)), 3),
            opt(f.cpu_stat.map(|c| f.per_tick(ms(c))), 3),
            opt(f.bus_cpu.map(|(c, _)| f.per_tick(ms(c))), 3),
            mib(f.memory.peak_kib),
            mib(f.memory.now_kib),
            f.per_tick(f.sent.sent() as f64),
            f.per_tick(f.sent.sent_bytes as f64),
            f.sent.received_signals as f64 / f.elapsed.as_secs_f64().max(1e-9),
            ms(f.first_publish),
            opt(f.lag.map(|(mean, _)| ms(mean)), 0),
            opt(f.lag.map(|(_, max)| ms(max)), 0),
            f.queued
                .map_or_else(dash, |(start, end)| format!("{start}>{end}")),
        );
    }
}

// ---- the machine's floor --------------------------------------------------------------------

/// What the least a signal consumer can do costs on this machine: wake once per tick, take in
/// the tick's signals (one message each, as the bus writes them), send one message. Measured
/// with bare system calls on threads of this bench, so that the daemon's figures can be read
/// against the machine (virtual machines make wake-ups and socket messages costly).
struct Floor {
    /// CPU of one wake-up from a sleep.
    wake: Option<Duration>,
    /// CPU of taking in one small message that arrived on its own.
    receive: Option<Duration>,
    /// CPU of sending one small message.
    send: Option<Duration>,
}

/// The size of a typical `PropertiesChanged` of a battery value.
const SIGNAL_BYTES: usize = 200;

impl Floor {
    fn measure() -> Floor {
        Floor {
            wake: thread_cpu_of(|| {
                let rounds = 40;
                let before = thread_cpu();
                for _ in 0..rounds {
                    std::thread::sleep(Duration::from_millis(25));
                }
                thread_cpu().zip(before).map(|(a, b)| (a - b) / rounds)
            }),
            receive: Self::receive(),
            send: Self::send(),
        }
    }

    /// Reads batches of 40 messages, each written on its own, as the bus delivers signals.
    fn receive() -> Option<Duration> {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let (mut ours, mut theirs) = UnixStream::pair().ok()?;
        let batch = 40u32;
        let rounds = 25u32;
        let message = [7u8; SIGNAL_BYTES];
        let mut buf = vec![0u8; 64 * 1024];
        let mut spent = Duration::ZERO;
        for _ in 0..rounds {
            for _ in 0..batch {
                theirs.write_all(&message).ok()?;
            }
            // Let the caches cool a little, as between two ticks.
            std::thread::sleep(Duration::from_millis(5));
            let before = thread_cpu()?;
            let mut left = batch as usize * SIGNAL_BYTES;
            while left > 0 {
                left -= ours.read(&mut buf).ok()?.min(left);
            }
            spent += thread_cpu()? - before;
        }
        Some(spent / (batch * rounds))
    }

    fn send() -> Option<Duration> {
        use std::io::{Read, Write};
        use std::os::unix::net::UnixStream;
        let (mut ours, mut theirs) = UnixStream::pair().ok()?;
        let rounds = 200u32;
        let message = [7u8; 1000];
        let mut spent = Duration::ZERO;
        let mut sink = vec![0u8; 4096];
        for _ in 0..rounds {
            let before = thread_cpu()?;
            ours.write_all(&message).ok()?;
            spent += thread_cpu()? - before;
            theirs.read_exact(&mut sink[..message.len()]).ok()?;
        }
        Some(spent / rounds)
    }

    /// The floor for a tick that takes in `signals` messages.
    fn per_tick_ms(&self, signals: f64) -> Option<f64> {
        let (wake, receive, send) = (self.wake?, self.receive?, self.send?);
        Some(ms(wake) + signals * ms(receive) + ms(send))
    }

    fn line(&self) -> String {
        let us = |d: Option<Duration>| {
            d.map_or_else(
                || "-".into(),
                |d| format!("{:.1} µs", d.as_secs_f64() * 1e6),
            )
        };
        format!(
            "this machine's floor: one wake-up {}, taking in one signal {}, sending one {} \
             (bare system calls; the `floor` column adds them up for each bank's signals)",
            us(self.wake),
            us(self.receive),
            us(self.send)
        )
    }
}

/// Runs `f` on a fresh thread (its CPU clock starts at zero there).
fn thread_cpu_of(f: impl FnOnce() -> Option<Duration> + Send + 'static) -> Option<Duration> {
    std::thread::spawn(f).join().ok().flatten()
}

/// This thread's CPU time.
fn thread_cpu() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    clock_reading(t.tv_sec, t.tv_nsec)
}
