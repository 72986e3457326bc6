//! Shared by the integration tests: where the built plugins are, and private copies of them.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub mod config;
pub mod simulated;

/// Library file names of the plugins the workspace builds.
pub const PLUGIN_FILES: [&str; 7] = [
    "libplugin_bms.so",
    "libplugin_fault_test.so",
    "libplugin_lfp_balancing.so",
    "libplugin_lto_cv.so",
    "libplugin_serialbattery.so",
    "libplugin_smartshunt.so",
    "libplugin_victron.so",
];

/// The folder cargo put this test binary's sibling artifacts in (`target/debug`).
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf()
}

/// The daemon's package folder (`aggregator/`: its scenarios and fixtures), from the tests of
/// any crate of ours that share these helpers (the simulator's and the importer's are inside
/// it).
pub fn daemon_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    if here.join("scenarios").is_dir() {
        here.to_path_buf()
    } else {
        here.parent().expect("aggregator/<crate>").to_path_buf()
    }
}

/// A file cargo built beside the test binaries (`target/<profile>`), one of `what` (plugins,
/// programs); panics with the command to run when it is missing.
fn built(name: &str, what: &str) -> PathBuf {
    let path = build_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the {what} first with `cargo build --workspace` (the README's \
         test command does)",
        path.display()
    );
    path
}

/// A program of ours (`dbus-aggregate-batteries`, `-sim`, `-import`): cargo sets
/// `CARGO_BIN_EXE_*` only for the tested package's own programs, and the daemon hands commands
/// over to its siblings.
pub fn program(name: &str) -> PathBuf {
    built(name, "programs")
}

/// The daemon's program.
pub fn daemon_program() -> PathBuf {
    program("dbus-aggregate-batteries")
}

/// The path of a built plugin.
pub fn built_plugin(file: &str) -> PathBuf {
    built(file, "plugins")
}

/// A private plugins folder (mode 0755) holding copies of the given built plugins.
pub fn plugins_dir_with(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    set_mode(dir.path(), 0o755);
    for file in files {
        let target = dir.path().join(file);
        fs::copy(built_plugin(file), &target).expect("copy plugin");
        set_mode(&target, 0o755);
    }
    dir
}

/// Sets a file's or folder's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Two 16-cell LFP batteries of 280 Ah at 60 %, 20 A out of each, their values moving a little
/// every step.
pub const TWO_BATTERIES: &str = r#"
step: 100ms
jitter: true
batteries:
  - { service: ttyUSB0, custom_name: Bat1, device_instance: 1, cells: 16, capacity_ah: 280, soc: 60 }
  - { service: ttyUSB1, custom_name: Bat2, device_instance: 2, cells: 16, capacity_ah: 280, soc: 60 }
segments:
  - { duration: 1h, cell_voltage: 3.30, battery_current: -20 }
"#;

pub mod bus {
    //! The daemon as a child process on a private bus, and a plain zbus client to read it.

    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use zbus::zvariant::OwnedValue;
    use zbus::Connection;

    /// Our service name.
    pub const OWN: &str = "com.victronenergy.battery.aggregate";

    /// Whether the daemon's log writer thread (`log output`) sleeps, as it does with nothing to
    /// write; also when there is none (the process ended).
    fn log_writer_asleep(pid: u32) -> bool {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"));
        for task in tasks.into_iter().flatten().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != "log output" {
                continue;
            }
            // `pid (comm) S ...`: the state follows the name's closing parenthesis.
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            return stat
                .rsplit_once(") ")
                .is_none_or(|(_, rest)| rest.starts_with('S'));
        }
        true
    }

    /// The daemon, killed when dropped.
    pub struct Daemon {
        child: Child,
        /// Its stdout and stderr (none for [`Daemon::start_piped`]'s).
        pub log: PathBuf,
    }

    /// The `strategy:` section the end-to-end tests share (`@LFP@` in a test config): the
    /// LFP strategy of `config.yaml`'s example, balancing at 3.45 V every month.
    pub const LFP_STRATEGY: &str = "strategy:
  plugin: lfp-balancing
  config:
    balancing_voltage: 3.45
    balancing_every_days: 10
    charge_voltages: [3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45, 3.45]
    max_cell_voltage: 3.50
    min_cell_voltage: 2.90
    min_cell_hysteresis: 0.1
    cell_diff_max: 0.025
    max_charge_current: 150
    max_discharge_current: 200
    zero_soc: true";

    /// A test config's text with `@DIR@` replaced by `dir`, `@PLUGINS@` by the built plugins'
    /// folder and `@LFP@` by [`LFP_STRATEGY`].
    pub fn config_text(dir: &Path, config_yaml: &str) -> String {
        config_yaml
            .replace("@LFP@", LFP_STRATEGY)
            .replace("@DIR@", &dir.display().to_string())
            .replace("@PLUGINS@", &super::build_dir().display().to_string())
    }

    impl Daemon {
        /// Writes `config_yaml` to `dir/config.yaml` (with `@DIR@` replaced by `dir`,
        /// `@PLUGINS@` by the built plugins' folder and `@LFP@` by [`LFP_STRATEGY`]) and starts
        /// `run` on the bus at `address`.
        pub fn start(address: &str, dir: &Path, config_yaml: &str) -> Daemon {
            Self::start_program(&super::daemon_program(), address, dir, config_yaml)
        }

        /// [`Daemon::start`] with the daemon's program at `program` (a copy of it).
        pub fn start_program(
            program: &Path,
            address: &str,
            dir: &Path,
            config_yaml: &str,
        ) -> Daemon {
            let config = dir.join("config.yaml");
            std::fs::write(&config, config_text(dir, config_yaml)).expect("write config");
            Self::spawn(program, address, dir, &config)
        }

        /// Starts `run` with an existing config file.
        pub fn start_with(address: &str, dir: &Path, config: &Path) -> Daemon {
            Self::spawn(&super::daemon_program(), address, dir, config)
        }

        /// [`Daemon::start`] with stdout and stderr into `pipe`, as daemontools' `run` hands
        /// them to multilog (`exec 2>&1`): the test holds the pipe's other end.
        pub fn start_piped(
            address: &str,
            dir: &Path,
            config_yaml: &str,
            pipe: std::io::PipeWriter,
        ) -> Daemon {
            let config = dir.join("config.yaml");
            std::fs::write(&config, config_text(dir, config_yaml)).expect("write config");
            let out = Stdio::from(pipe.try_clone().expect("dup"));
            let log = dir.join("no log file: stdout is a pipe");
            Self::spawn_into(
                &super::daemon_program(),
                address,
                &config,
                (out, pipe.into()),
                log,
            )
        }

        fn spawn(program: &Path, address: &str, dir: &Path, config: &Path) -> Daemon {
            let log = dir.join(format!("daemon-{}.log", std::process::id()));
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log file");
            let outputs = (Stdio::from(out.try_clone().expect("dup")), Stdio::from(out));
            Self::spawn_into(program, address, config, outputs, log)
        }

        fn spawn_into(
            program: &Path,
            address: &str,
            config: &Path,
            (stdout, stderr): (Stdio, Stdio),
            log: PathBuf,
        ) -> Daemon {
            let child = Command::new(program)
                .arg("--config")
                .arg(config)
                .arg("run")
                .env("DBUS_SESSION_BUS_ADDRESS", address)
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("start the daemon");
            Daemon { child, log }
        }

        /// The log so far, every line the daemon logged before the call included: its lines
        /// are written by a thread of their own (docs/tick.md §8), so what the bus shows can
        /// be a moment ahead of the log file; that thread is waited for (1 s at most) until it
        /// sleeps, with nothing left to write.
        pub fn log_text(&self) -> String {
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut asleep = 0;
            // Twice in a row: not caught between two lines.
            while asleep < 2 && Instant::now() < deadline {
                if log_writer_asleep(self.child.id()) {
                    asleep += 1;
                } else {
                    asleep = 0;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// Whether the process still runs.
        pub fn running(&mut self) -> bool {
            matches!(self.child.try_wait(), Ok(None))
        }

        /// The process id.
        pub fn pid(&self) -> u32 {
            self.child.id()
        }

        /// Kills it with SIGKILL (no chance to clean up) and reaps it.
        pub fn kill_hard(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }

        /// Sends SIGTERM and waits (up to 10 s) for the exit code. The runtime runs meanwhile:
        /// the simulated services, the settings among them, answer what the daemon asks as it
        /// stops (its feed-in restore).
        pub async fn terminate(&mut self) -> Option<i32> {
            self.stop(aggregator::child::Signal::TERM).await
        }

        /// Sends `signal` and waits (up to 10 s) for the exit code, as [`Daemon::terminate`].
        pub async fn stop(&mut self, signal: aggregator::child::Signal) -> Option<i32> {
            let _ = aggregator::child::send(self.child.id(), signal);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return status.code();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A client connection to the private bus.
    pub async fn client(address: &str) -> Connection {
        venus_bus::connect_to(address).await.expect("connect")
    }

    /// Calls a BusItem method and returns the reply message.
    pub async fn call(
        conn: &Connection,
        service: &str,
        path: &str,
        member: &str,
    ) -> zbus::Result<zbus::Message> {
        conn.call_method(
            Some(service),
            path,
            Some("com.victronenergy.BusItem"),
            member,
            &(),
        )
        .await
    }

    /// The owner of a name, once it exists (waits up to `within`).
    pub async fn wait_for_name(conn: &Connection, name: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let reply = conn
                .call_method(
                    Some("org.freedesktop.DBus"),
                    "/org/freedesktop/DBus",
                    Some("org.freedesktop.DBus"),
                    "GetNameOwner",
                    &(name,),
                )
                .await;
            if let Ok(reply) = reply {
                if let Ok(owner) = reply.body().deserialize::<String>() {
                    return Some(owner);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// `GetItems` of a service: path → (value, text).
    pub async fn items(conn: &Connection, service: &str) -> HashMap<String, (OwnedValue, String)> {
        let reply = call(conn, service, "/", "GetItems")
            .await
            .expect("GetItems");
        let items: HashMap<String, HashMap<String, OwnedValue>> =
            reply.body().deserialize().expect("a{sa{sv}}");
        items
            .into_iter()
            .map(|(path, mut entry)| {
                let value = entry.remove("Value").expect("Value");
                let text = entry
                    .remove("Text")
                    .and_then(|t| String::try_from(t).ok())
                    .unwrap_or_default();
                (path, (value, text))
            })
            .collect()
    }

    /// A number at a path of our service (None when invalid or missing).
    pub async fn number(conn: &Connection, path: &str) -> Option<f64> {
        let reply = call(conn, OWN, path, "GetValue").await.ok()?;
        let value: OwnedValue = reply.body().deserialize().ok()?;
        venus_bus::variant::Field::from_owned(&value).number()
    }

    /// Polls `check` on `GetItems` of our service until it holds (up to `within`); returns the
    /// last items either way, and whether it held.
    pub async fn until<F>(
        conn: &Connection,
        within: Duration,
        mut check: F,
    ) -> (bool, HashMap<String, (OwnedValue, String)>)
    where
        F: FnMut(&HashMap<String, (OwnedValue, String)>) -> bool,
    {
        let deadline = Instant::now() + within;
        loop {
            let items = items(conn, OWN).await;
            if check(&items) {
                return (true, items);
            }
            if Instant::now() >= deadline {
                return (false, items);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The number in an item map.
    pub fn num(items: &HashMap<String, (OwnedValue, String)>, path: &str) -> Option<f64> {
        items
            .get(path)
            .and_then(|(v, _)| venus_bus::variant::Field::from_owned(v).number())
    }

    /// The text value (not the `Text` of the item) in an item map.
    pub fn text(items: &HashMap<String, (OwnedValue, String)>, path: &str) -> Option<String> {
        match items
            .get(path)
            .map(|(v, _)| venus_bus::variant::Field::from_owned(v))
        {
            Some(venus_bus::variant::Field::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// How [`until_keeping`] ended, with the items seen last.
    #[derive(Debug)]
    pub enum Watch {
        /// `check` held while `keep` had held at every poll before.
        Reached(HashMap<String, (OwnedValue, String)>),
        /// `keep` failed first: what the service showed then.
        Broken(HashMap<String, (OwnedValue, String)>),
        /// Neither within the time.
        TimedOut(HashMap<String, (OwnedValue, String)>),
    }

    impl Watch {
        /// The items once `check` held; panics naming `what` and the items otherwise.
        pub fn reached(self, what: &str) -> HashMap<String, (OwnedValue, String)> {
            match self {
                Watch::Reached(items) => items,
                Watch::Broken(items) => panic!("{what}: the invariant broke first: {items:?}"),
                Watch::TimedOut(items) => panic!("{what}: timed out: {items:?}"),
            }
        }
    }

    /// Like [`until`], and every poll before `check` holds must satisfy `keep`: what the
    /// service shows *during* a fault, not only where it ends up.
    pub async fn until_keeping<K, F>(
        conn: &Connection,
        within: Duration,
        mut keep: K,
        mut check: F,
    ) -> Watch
    where
        K: FnMut(&HashMap<String, (OwnedValue, String)>) -> bool,
        F: FnMut(&HashMap<String, (OwnedValue, String)>) -> bool,
    {
        let deadline = Instant::now() + within;
        loop {
            let items = items(conn, OWN).await;
            if check(&items) {
                return Watch::Reached(items);
            }
            if !keep(&items) {
                return Watch::Broken(items);
            }
            if Instant::now() >= deadline {
                return Watch::TimedOut(items);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

pub mod offline;

pub mod world {
    //! A private bus with the simulator and the daemon on it.

    use std::path::Path;
    use std::time::Duration;

    use aggregator_sim::{Scenario, Simulator};
    use venus_bus::private::PrivateBus;
    use zbus::Connection;

    use super::bus::{client, wait_for_name, Daemon, OWN};

    /// Everything a scenario test needs; stops it all when dropped.
    pub struct World {
        /// The simulator (stopped on drop).
        pub sim: Option<Simulator>,
        /// The daemon.
        pub daemon: Daemon,
        /// A client connection.
        pub conn: Connection,
        /// The folder with config, state and log.
        pub dir: tempfile::TempDir,
        /// The bus (last to go).
        pub bus: PrivateBus,
    }

    /// A current-thread runtime for one test.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    impl World {
        /// Starts the bus, the simulator with `scenario` and the daemon with `config` (see
        /// [`Daemon::start`] for its placeholders); returns once our service is registered.
        pub async fn start(scenario: &str, config: &str) -> World {
            Self::start_prepared(scenario, config, |_| {}).await
        }

        /// [`World::start`], with `prepare` called on the test's folder before the daemon
        /// starts (to put a state file in place, say).
        pub async fn start_prepared(
            scenario: &str,
            config: &str,
            prepare: impl FnOnce(&Path),
        ) -> World {
            Self::start_program(&super::daemon_program(), scenario, config, prepare).await
        }

        /// [`World::start_prepared`] with the daemon's program at `program` (a copy of it).
        pub async fn start_program(
            program: &Path,
            scenario: &str,
            config: &str,
            prepare: impl FnOnce(&Path),
        ) -> World {
            Self::start_daemon(scenario, prepare, |address, dir| {
                Daemon::start_program(program, address, dir, config)
            })
            .await
        }

        /// [`World::start`] with the daemon's stdout and stderr into a pipe, as under
        /// daemontools; the pipe's reading end, which nobody reads unless the test does.
        pub async fn start_piped(scenario: &str, config: &str) -> (World, std::io::PipeReader) {
            let (reader, writer) = std::io::pipe().expect("a pipe");
            let world = Self::start_daemon(
                scenario,
                |_| {},
                |address, dir| Daemon::start_piped(address, dir, config, writer),
            )
            .await;
            (world, reader)
        }

        /// The bus, the simulator with `scenario`, and the daemon that `start` starts on the
        /// bus's address in the test's folder; returns once our service is registered.
        async fn start_daemon(
            scenario: &str,
            prepare: impl FnOnce(&Path),
            start: impl FnOnce(&str, &Path) -> Daemon,
        ) -> World {
            let bus =
                PrivateBus::start(aggregator::state_file::write_atomically).expect("dbus-daemon");
            let scenario = Scenario::parse(scenario, "test scenario").expect("scenario");
            let sim = Simulator::start(bus.address(), scenario)
                .await
                .expect("simulator");
            let dir = tempfile::tempdir().expect("temp dir");
            prepare(dir.path());
            let daemon = start(bus.address(), dir.path());
            let conn = client(bus.address()).await;
            assert!(
                wait_for_name(&conn, OWN, Duration::from_secs(20))
                    .await
                    .is_some(),
                "the daemon did not register; log:\n{}",
                daemon.log_text()
            );
            World {
                sim: Some(sim),
                daemon,
                conn,
                dir,
                bus,
            }
        }

        /// A value of the settings service.
        pub async fn setting(&self, path: &str) -> Option<f64> {
            venus_bus::client::get_value(&self.conn, "com.victronenergy.settings", path)
                .await
                .ok()?
                .number()
        }
    }
}

pub mod lag {
    //! How far the daemon's view of the bus is behind, read off a ramping current: the
    //! batteries' currents all ramp at the same rate, so the published `/Dc/0/Current` (their
    //! sum) against the sum they last signalled says how old the daemon's view was when it
    //! published. Both are seen on one connection, in the order the bus routed them, so a slow
    //! test process does not count as lag.

    use std::collections::HashMap;
    use std::time::Duration;

    use futures_lite::StreamExt;
    use zbus::zvariant::OwnedValue;
    use zbus::{Connection, MessageStream};

    use super::bus::OWN;

    const BUS_ITEM: &str = "com.victronenergy.BusItem";

    /// One publish of the current: its lag behind the batteries.
    #[derive(Clone, Copy, Debug)]
    pub struct Sample {
        pub lag_s: f64,
    }

    /// Watches the batteries' currents and our published current.
    pub struct LagProbe {
        stream: MessageStream,
        own: String,
        /// The batteries' ramp, A/s each.
        rate_a_per_s: f64,
        currents: HashMap<String, f64>,
    }

    impl LagProbe {
        /// Subscribes on a connection of its own; `rate_a_per_s` is the ramp of each battery.
        pub async fn start(address: &str, rate_a_per_s: f64) -> LagProbe {
            let conn: Connection = venus_bus::connect_to(address).await.expect("connect");
            let own = super::bus::wait_for_name(&conn, OWN, Duration::from_secs(20))
                .await
                .expect("our service");
            let dbus = zbus::fdo::DBusProxy::new(&conn).await.expect("bus proxy");
            for rule in [
                format!(
                    "type='signal',interface='{BUS_ITEM}',member='PropertiesChanged',\
                     path='/Dc/0/Current'"
                ),
                format!(
                    "type='signal',interface='{BUS_ITEM}',member='ItemsChanged',sender='{own}'"
                ),
            ] {
                let rule = zbus::MatchRule::try_from(rule.as_str()).expect("match rule");
                dbus.add_match_rule(rule).await.expect("AddMatch");
            }
            LagProbe {
                stream: MessageStream::from(conn),
                own,
                rate_a_per_s,
                currents: HashMap::new(),
            }
        }

        /// The publishes of a current seen within `window`.
        pub async fn watch(&mut self, window: Duration) -> Vec<Sample> {
            let deadline = tokio::time::Instant::now() + window;
            let mut samples = Vec::new();
            while let Ok(Some(Ok(msg))) =
                tokio::time::timeout_at(deadline, self.stream.next()).await
            {
                let header = msg.header();
                let Some(sender) = header.sender().map(|s| s.to_string()) else {
                    continue;
                };
                let member = header.member().map(|m| m.to_string()).unwrap_or_default();
                if sender == self.own && member == "ItemsChanged" {
                    let Ok(mut items) = msg
                        .body()
                        .deserialize::<HashMap<String, HashMap<String, OwnedValue>>>()
                    else {
                        continue;
                    };
                    let Some(published) = items
                        .remove("/Dc/0/Current")
                        .and_then(|mut item| item.remove("Value"))
                        .and_then(|v| venus_bus::variant::Field::from_owned(&v).number())
                    else {
                        continue;
                    };
                    let signalled: f64 = self.currents.values().sum();
                    let rate = self.rate_a_per_s * self.currents.len().max(1) as f64;
                    samples.push(Sample {
                        lag_s: (signalled - published) / rate,
                    });
                } else if member == "PropertiesChanged" {
                    let Ok(mut body) = msg.body().deserialize::<HashMap<String, OwnedValue>>()
                    else {
                        continue;
                    };
                    if let Some(v) = body
                        .remove("Value")
                        .and_then(|v| venus_bus::variant::Field::from_owned(&v).number())
                    {
                        self.currents.insert(sender, v);
                    }
                }
            }
            samples
        }
    }

    /// The resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    }
}
