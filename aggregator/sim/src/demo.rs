//! `demo`: a private `dbus-daemon`, a simulated Venus OS system with a two-battery bank running
//! a charge-and-discharge cycle, and the daemon itself, with a live table in the terminal.
//!
//! The daemon runs as a child process exactly as on a device (only the bus differs); the table
//! is read from the bus like any Venus consumer would. Ctrl-C stops the daemon (which saves its
//! state), the simulator and the bus, and removes the temporary folder.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use zbus::Connection;

use crate::{Error, Scenario, Simulator, DEMO_SCENARIO};
use aggregator::child;
use aggregator::cli::{program_dir, sibling, DAEMON_PROGRAM};
use aggregator::state_file::{log_file, write_atomically};
use venus_bus::client;
use venus_bus::private::PrivateBus;
use venus_bus::variant::Field;

/// The text of the configuration the demo's daemon runs: `user_config` or the demo's own, with
/// the state in `state_dir` and the plugins from `plugins_dir`. Relative folders are taken from
/// where the command runs (the demo's daemon runs in a temporary folder): `--plugins-dir`
/// against the current folder, the user's `paths.plugins_dir` against its config's folder; with
/// neither, the plugins beside this program.
fn demo_config(
    user_config: Option<&Path>,
    plugins_dir: Option<&Path>,
    state_dir: &Path,
) -> Result<String, Error> {
    // `--plugins-dir`, else the config's own `paths.plugins_dir`, else beside this program.
    let plugins = |own: Option<PathBuf>| -> Result<PathBuf, Error> {
        let Some(dir) = plugins_dir.map(Path::to_path_buf).or(own) else {
            return Ok(program_dir()?);
        };
        std::path::absolute(&dir)
            .map_err(|e| Error::Usage(format!("plugins folder {}: {e}", dir.display())))
    };
    let Some(file) = user_config else {
        let plugins = plugins(None)?;
        return Ok(DEMO_CONFIG
            .replace("@STATE@", &state_dir.display().to_string())
            .replace("@PLUGINS@", &plugins.display().to_string()));
    };
    let text = aggregator::config::read_config_text(file)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    let mut yaml: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: {e}", file.display())))?;
    let root = yaml
        .as_mapping_mut()
        .ok_or_else(|| Error::Usage(format!("{}: not a YAML map", file.display())))?;
    let paths = root
        .entry("paths".into())
        .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    let paths = paths
        .as_mapping_mut()
        .ok_or_else(|| Error::Usage(format!("{}: `paths` is not a map", file.display())))?;
    let own = paths
        .get("plugins_dir")
        .and_then(serde_yaml::Value::as_str)
        .map(|dir| file.parent().unwrap_or(Path::new(".")).join(dir));
    let plugins = plugins(own)?;
    paths.insert("state_dir".into(), state_dir.display().to_string().into());
    paths.insert("plugins_dir".into(), plugins.display().to_string().into());
    serde_yaml::to_string(&yaml).map_err(|e| Error::Usage(format!("{}: {e}", file.display())))
}

/// The daemon's configuration in the demo.
pub const DEMO_CONFIG: &str = include_str!("../../scenarios/demo-config.yaml");

const OWN: &str = "com.victronenergy.battery.aggregate";

/// `demo`: runs until Ctrl-C (or for `duration`). With `config`, the daemon runs that
/// configuration (its state folder moved into the demo's temporary folder) instead of the
/// demo's own.
pub fn demo_command(
    config: Option<&Path>,
    plugins_dir: Option<&Path>,
    duration: Option<Duration>,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Io("start the runtime", err))?;
    runtime.block_on(demo(config, plugins_dir, duration))
}

async fn demo(
    user_config: Option<&Path>,
    plugins_dir: Option<&Path>,
    duration: Option<Duration>,
) -> Result<(), Error> {
    let work = tempfile::Builder::new()
        .prefix("dbus-aggregate-batteries-demo-")
        .tempdir()
        .map_err(|e| Error::Io("create a temporary folder", e))?;
    let config = work.path().join("config.yaml");
    let text = demo_config(user_config, plugins_dir, &work.path().join("state"))?;
    let cannot_write = |path: &Path, source| Error::File {
        path: path.to_path_buf(),
        doing: "cannot write",
        source,
    };
    write_atomically(&config, text.as_bytes()).map_err(|e| cannot_write(&config, e))?;

    let mut bus =
        PrivateBus::start(write_atomically).map_err(|e| Error::Io("start a private bus", e))?;
    let scenario = Scenario::parse(DEMO_SCENARIO, "demo scenario")?;
    let sim = Simulator::start(bus.address(), scenario).await?;

    let log_path = work.path().join("daemon.log");
    let log = log_file(&log_path).map_err(|e| cannot_write(&log_path, e))?;
    let program = sibling(DAEMON_PROGRAM)?;
    let mut daemon = tokio::process::Command::new(&program)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().map_err(|e| cannot_write(&log_path, e))?,
        ))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Program {
            program: program.clone(),
            source,
        })?;

    let conn = venus_bus::connect_to(bus.address())
        .await
        .map_err(|e| Error::Service {
            name: "demo".into(),
            doing: Some(format!("cannot connect to {}", bus.address())),
            source: Box::new(e.into()),
        })?;
    let install = |kind| signal(kind).map_err(|e| Error::Io("install signal handlers", e));
    let (mut term, mut int) = (
        install(SignalKind::terminate())?,
        install(SignalKind::interrupt())?,
    );
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
            status = daemon.wait() => {
                break Err(Error::Stopped {
                    status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    log: tail(&log_path, 20),
                });
            }
        }
        let table = table(&conn, bus.address(), &log_path).await;
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(out, "\x1b[H\x1b[2J");
        }
        let _ = writeln!(out, "{table}");
        let _ = out.flush();
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break Ok(());
        }
    };

    // Stop in order: the daemon (it saves its state on SIGTERM), the simulator, the bus.
    if let Some(pid) = daemon.id() {
        let _ = child::send(pid, child::Signal::TERM);
    }
    match tokio::time::timeout(Duration::from_secs(5), daemon.wait()).await {
        Ok(_) => {}
        Err(_) => {
            let _ = daemon.kill().await;
        }
    }
    sim.stop().await;
    bus.stop();
    println!(
        "demo stopped; the daemon's log was:\n{}",
        tail(&log_path, 8)
    );
    outcome
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn values(conn: &Connection, service: &str) -> Option<HashMap<String, Field>> {
    client::get_items(conn, service).await.ok()
}

fn num(values: &HashMap<String, Field>, path: &str) -> Option<f64> {
    values.get(path).and_then(Field::number)
}

fn fmt(v: Option<f64>, decimals: usize, unit: &str) -> String {
    v.map_or("---".into(), |v| format!("{v:.decimals$} {unit}"))
}

async fn table(conn: &Connection, address: &str, log: &Path) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "dbus-aggregate-batteries demo on a private bus ({address})\nCtrl-C stops everything.\n"
    );
    let _ = writeln!(
        t,
        "{:<8} {:<8} {:>10} {:>10} {:>8}  {:<16} {:<16}",
        "battery", "state", "voltage", "current", "SoC", "min cell", "max cell"
    );
    let names = client::list_names(conn).await.unwrap_or_default();
    let mut batteries: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("com.victronenergy.battery.") && n.as_str() != OWN)
        .collect();
    batteries.sort();
    for service in batteries {
        let Some(v) = values(conn, service).await else {
            continue;
        };
        let name = v
            .get("/CustomName")
            .and_then(|f| f.text().map(str::to_string))
            .unwrap_or_else(|| service.rsplit('.').next().unwrap_or("").to_string());
        let state = if num(&v, "/Connected") == Some(1.0) {
            "online"
        } else {
            "off"
        };
        let cell = |id: &str, value: &str| {
            let id = v.get(id).and_then(|f| f.text().map(str::to_string));
            format!("{} {}", id.unwrap_or_default(), fmt(num(&v, value), 3, "V"))
        };
        let _ = writeln!(
            t,
            "{:<8} {:<8} {:>10} {:>10} {:>8}  {:<16} {:<16}",
            name,
            state,
            fmt(num(&v, "/Dc/0/Voltage"), 2, "V"),
            fmt(num(&v, "/Dc/0/Current"), 1, "A"),
            fmt(num(&v, "/Soc"), 1, "%"),
            cell("/System/MinVoltageCellId", "/System/MinCellVoltage"),
            cell("/System/MaxVoltageCellId", "/System/MaxCellVoltage"),
        );
    }
    let _ = writeln!(t);
    match values(conn, OWN).await {
        Some(v) => {
            let text = |p: &str| {
                v.get(p)
                    .and_then(|f| f.text().map(str::to_string))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                t,
                "{:<8} {:<8} {:>10} {:>10} {:>8}  {:<16} {:<16}",
                "bank",
                format!("{} on", num(&v, "/System/NrOfBatteries").unwrap_or(0.0)),
                fmt(num(&v, "/Dc/0/Voltage"), 2, "V"),
                fmt(num(&v, "/Dc/0/Current"), 1, "A"),
                fmt(num(&v, "/Soc"), 1, "%"),
                format!(
                    "{} {}",
                    text("/System/MinVoltageCellId"),
                    fmt(num(&v, "/System/MinCellVoltage"), 3, "V")
                ),
                format!(
                    "{} {}",
                    text("/System/MaxVoltageCellId"),
                    fmt(num(&v, "/System/MaxCellVoltage"), 3, "V")
                ),
            );
            let _ = writeln!(
                t,
                "\nCVL {}   CCL {}   DCL {}   mode: {}",
                fmt(num(&v, "/Info/MaxChargeVoltage"), 2, "V"),
                fmt(num(&v, "/Info/MaxChargeCurrent"), 1, "A"),
                fmt(num(&v, "/Info/MaxDischargeCurrent"), 1, "A"),
                text("/Info/ChargeMode"),
            );
        }
        None => {
            let _ = writeln!(t, "bank     (the daemon has not registered yet)");
        }
    }
    let feed_in = client::get_value(conn, client::SETTINGS, venus_bus::monitor::FEED_IN_SETTING)
        .await
        .ok()
        .and_then(|f| f.integer());
    let _ = writeln!(
        t,
        "feed-in of excess solar (OvervoltageFeedIn): {}",
        feed_in.map_or("---".into(), |f| f.to_string())
    );
    let _ = writeln!(t, "\nthe daemon's last log lines:\n{}", tail(log, 6));
    t
}
