//! `run`: the daemon. Connects, reads the bus through the monitor, runs the tick of docs/tick.md §1
//! every `update_interval`, publishes the aggregate battery and carries out the requests.
//!
//! ```text
//! monitor cache -> gather (readings) -> presence (online/stale/lost) -> engine -> published
//!      -> one ItemsChanged; feed-in write; state save
//! ```
//! The service is registered after the first tick with every expected battery online, or after
//! `batteries.startup_wait` with the fail-safe values, and never unregistered while running.

pub(crate) mod fail_safe;
pub mod gather;
mod shadow;
pub mod tick;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_api::PluginKind;
use tokio::signal::unix::{signal, Signal, SignalKind};
use zbus::Connection;

use crate::bus::client::{self, Background, CALL_TIMEOUT, SETTINGS};
use crate::bus::export::{BusItemService, SetDecision};
use crate::bus::monitor::{Discovery, Monitor, FEED_IN_SETTING};
use crate::bus::variant::Field;
use crate::bus::{self, request_name, BusConnection};
use crate::clock::calendar::{self, DateGuard};
use crate::clock::ticker::Ticker;
use crate::config::check::{check_to_run, Failed, Ready};
use crate::config::Config;
use crate::error::Error;
use crate::record::{PublishedValues, Recorder};
use crate::state_file::StateStore;
use aggregator_core::engine::{self, Engine, Settings};
use aggregator_core::episode::Episode;
use aggregator_core::feedin::{Cause, FeedInEvent};
use aggregator_core::presence::Presence;
use aggregator_core::published::{DeviceInfo, Published, CUSTOM_NAME};
use aggregator_core::value::{TextFormat, Value};
use aggregator_core::Error as PluginError;
use tick::BankMembers;

/// How long the feed-in restore at a stop (SIGTERM, SIGINT, SIGHUP) may wait for the bus.
const STOP_WRITE_LIMIT: Duration = Duration::from_secs(1);

/// `run`: checks the configuration, then runs until SIGTERM, SIGINT or SIGHUP.
pub fn run_command(config_file: &Path, plugins_dir: Option<&Path>) -> Result<(), Error> {
    let checked = check_to_run(config_file, plugins_dir);
    for refused in &checked.refused {
        tracing::warn!("plugin refused: {refused}");
    }
    // Errors in the file: the service comes up with charge and discharge stopped and the
    // error as its mode (logged once, below, as the strategy that could not be started).
    let ready = match checked.ready {
        Some(ready) => ready,
        None => fail_safe::ready(config_file, &checked.errors),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Error::Runtime("start the runtime", err))?;
    // On the heap: the daemon's future, moved through `block_on`'s frames, took about 30 KiB
    // of the main thread's stack, resident for the process's life.
    runtime.block_on(Box::pin(run(ready, config_file)))
}

/// The unique id under `/Settings/Devices` for our service name. It is an element of the
/// settings' object paths, which take letters, digits and `_` only: a `-` of the name's suffix
/// (valid in a bus name) becomes `_`.
pub fn settings_uid(service_name: &str) -> String {
    match service_name.strip_prefix("com.victronenergy.battery.") {
        Some("aggregate") | None => "aggregatebatteries".to_string(),
        Some(suffix) => {
            let suffix: String = suffix
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("aggregatebatteries_{suffix}")
        }
    }
}

async fn connect_with_retry() -> BusConnection {
    let mut delay = Duration::from_millis(250);
    let mut failing = Episode::default();
    loop {
        match bus::connect().await {
            Ok(link) => {
                if failing.end() {
                    tracing::info!("connected to D-Bus");
                }
                return link;
            }
            Err(err) => {
                if failing.start() {
                    tracing::error!("cannot connect to D-Bus ({err}); retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// What `com.victronenergy.settings` holds for us (docs/venus.md §7), after `AddSettings`
/// created what was missing: the device instance (`None` when its value makes no sense) and
/// the custom name.
async fn ask_settings(
    conn: &Connection,
    uid: &str,
    preferred: u32,
) -> zbus::Result<(Option<i64>, Option<String>)> {
    let instance_path = format!("{uid}/ClassAndVrmInstance");
    let name_path = format!("{uid}/CustomName");
    let request = [
        (
            instance_path.as_str(),
            Value::Text(format!("battery:{preferred}")),
        ),
        (name_path.as_str(), Value::Text(String::new())),
    ];
    let added = client::add_settings(conn, "/Settings/Devices", &request).await?;
    let mut instance = None;
    let mut name = None;
    for a in added {
        match (a.error, a.value) {
            (0, Some(Field::Text(text))) if a.path == instance_path => {
                match text.split_once(':').and_then(|(_, n)| n.parse().ok()) {
                    Some(n) => instance = Some(n),
                    None => tracing::warn!(
                        "settings gave `{text}` for {instance_path}; using instance {preferred}"
                    ),
                }
            }
            (0, Some(Field::Text(text))) if a.path == name_path => name = Some(text),
            (error, _) => tracing::warn!(
                "settings refused /Settings/Devices/{} (error {error})",
                a.path
            ),
        }
    }
    Ok((instance, name))
}

/// One line for a plugin whose constructor failed: the plugin, each error with its key and
/// line in the config file.
fn failed_line(failed: &Failed) -> String {
    failed
        .errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `AddSettings` gave: the device instance and the custom name.
type SettingsAnswer = zbus::Result<(Option<i64>, Option<String>)>;

/// The daemon's state between events, by concern.
struct Daemon {
    config: Config,
    /// The connection to the bus and what lives on it.
    link: Link,
    /// A new connection being set up after the last one closed: no tick until it is.
    reconnecting: Option<Reconnect>,
    /// What the daemon asks of and writes to `com.victronenergy.settings`.
    settings: SettingsClient,
    /// What the log has been told, so that it is told once.
    log: LogState,
    /// The bank and the aggregate battery made of it.
    bank: Bank,
    /// The flight recorder, unless `record.keep` is 0 s.
    recorder: Option<Recorder>,
    /// The engine of `shadow:` on its thread: fed the live inputs, publishes nothing, writes
    /// nothing.
    shadow: Option<shadow::Shadow>,
    /// The shadow's limits at the last tick, or why it gave none, for the summary line.
    last_shadow: Option<Result<aggregator_core::envelope::Limits, crate::record::ShadowMissing>>,
    /// What the tick before published and how many batteries it had lost: what a happening
    /// is judged against.
    recorded_before: Option<(PublishedValues, usize)>,
    /// Which happenings save a recording.
    happenings: crate::record::Happenings,
}

/// The connection to the bus: the monitor reading it, our objects on it, our name.
struct Link {
    conn: Connection,
    monitor: Monitor,
    exported: BusItemService,
    /// When this connection was set up (registration waits from here).
    attached: Instant,
    /// Our name is ours on this connection.
    registered: bool,
    /// The name request under way.
    name_call: Option<Background<Result<(), bus::Error>>>,
    /// Paths whose value changed after the name was asked for and before its answer was taken
    /// in: the bus may have granted the name before they changed, and a consumer that read
    /// every value when the name appeared learns of them only from a signal.
    unsignalled: Vec<String>,
    /// Name requests refused in a row (logged when the first is and when one succeeds).
    name_refused: u32,
}

impl Link {
    fn new((conn, monitor, exported): Attached) -> Link {
        Link {
            conn,
            monitor,
            exported,
            attached: Instant::now(),
            registered: false,
            name_call: None,
            unsignalled: Vec::new(),
            name_refused: 0,
        }
    }
}

/// A connection set up: the connection, the monitor on it and our objects served on it.
type Attached = (Connection, Monitor, BusItemService);

/// The set-up of a new connection, which waits for the bus as long as it takes.
type Reconnect = Pin<Box<dyn Future<Output = Attached> + Send>>;

/// The daemon as a client of `com.victronenergy.settings`.
struct SettingsClient {
    /// Our unique id under `/Settings/Devices`.
    uid: String,
    /// The path of our custom name in the settings service.
    name_path: String,
    /// The published `/DeviceInstance`.
    device_instance: i64,
    /// True until `AddSettings` succeeded (there was no settings service at start).
    pending: bool,
    /// No new `AddSettings` before this, after one failed (set: the failure was logged).
    retry_at: Option<Instant>,
    /// `AddSettings` under way, after the settings service appeared.
    call: Option<Background<SettingsAnswer>>,
    /// The feed-in write under way: the value, and its answer to come at a later tick.
    feed_in_call: Option<(i64, Background<zbus::Result<i32>>)>,
    /// Feed-in writes failing (logged once per feed-in episode).
    feed_in_failing: Episode,
}

/// What the log has been told.
#[derive(Default)]
struct LogState {
    /// When the last summary line was written.
    last_summary: Option<Instant>,
    /// Episodes of an old view of the bus.
    view: tick::ViewAge,
}

/// The bank between ticks: the engine and what feeds it, what it publishes, its state file.
struct Bank {
    engine: Engine,
    presence: Presence,
    members: BankMembers,
    published: Published,
    store: StateStore,
    /// The strategy needs the batteries' own limits to be valid.
    pass_through: bool,
    /// Today's date as the strategies get it: never one the clock cannot have right.
    dates: DateGuard,
    /// The daemon's start: the tick's seconds count from here.
    started: Instant,
    /// When the last tick ran (`None` after a reconnection: the gap is not integrated).
    last_tick: Option<Instant>,
    /// The state file cannot be written (a full or read-only /data): said once, tried again
    /// at [`STATE_RETRY`] at most, not at every tick.
    state_failing: Episode,
    /// A save the tick wanted and did not make: when to try it again.
    state_due: Option<Instant>,
    /// A feed-in episode whose 0 goes out while the state file does not hold it: tried at
    /// every tick until a save lands (docs/state.md §2).
    feed_in_unsaved: Option<UnsavedEpisode>,
}

/// A feed-in episode not yet in the state file.
struct UnsavedEpisode {
    /// The user's value, which an unclean stop would lose.
    user: i64,
    /// The error line was written.
    said: bool,
}

/// 9999-12-31 in days since 1970-01-01: a saved date beyond it is damage.
const LAST_DAY: i64 = 2_932_896;

/// How long after a failed write of the state file the tick tries again.
const STATE_RETRY: Duration = Duration::from_secs(60);

/// Everything that wakes the daemon.
enum Event {
    /// The update interval has passed.
    Tick,
    /// A service came or went while our name is not registered: a tick at once, so that
    /// the name is asked for as soon as the bank is complete.
    BusNews,
    /// The connection to the bus is gone.
    LinkClosed,
    /// A new connection is set up.
    Reconnected(Attached),
    /// SIGUSR1 (`dbus-aggregate-batteries record` sends it): save the recording.
    RecordAsked,
    /// SIGTERM, SIGINT or SIGHUP, by name: the stop (docs/commands.md §4).
    Stop(&'static str),
}

/// The signals the daemon answers.
struct Signals {
    term: Signal,
    int: Signal,
    /// `svc -h`, or the terminal of a daemon started by hand closing: a stop like SIGTERM's,
    /// never the default action's silent end (no state saved, feed-in left off).
    hup: Signal,
    /// `None` when it could not be installed: recordings are then saved on events only.
    usr1: Option<Signal>,
}

impl Signals {
    /// An error when SIGTERM, SIGINT or SIGHUP cannot be caught.
    fn install() -> Result<Signals, Error> {
        let install =
            |kind| signal(kind).map_err(|err| Error::Runtime("install signal handlers", err));
        let (term, int, hup) = (
            install(SignalKind::terminate())?,
            install(SignalKind::interrupt())?,
            install(SignalKind::hangup())?,
        );
        let usr1 = match signal(SignalKind::user_defined1()) {
            Ok(usr1) => Some(usr1),
            Err(err) => {
                tracing::warn!("no SIGUSR1 handler ({err}): recordings are saved on events only");
                None
            }
        };
        Ok(Signals {
            term,
            int,
            hup,
            usr1,
        })
    }
}

/// The next signal of a handler that may be missing; never, without it (nor once its
/// stream has ended).
async fn received(signal: &mut Option<Signal>) {
    if let Some(signal) = signal {
        if signal.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

async fn run(ready: Ready, config_file: &Path) -> Result<(), Error> {
    let Ready {
        config,
        scan,
        strategy,
        current_source,
        state_unknown,
    } = ready;
    let started = Instant::now();
    tracing::info!(
        "dbus-aggregate-batteries {} starting; config {}",
        env!("CARGO_PKG_VERSION"),
        config_file.display()
    );
    for plugin in &scan.plugins {
        tracing::info!(
            "plugin {} {} ({:?}, plugin ABI {}) from {}",
            plugin.name,
            plugin.version,
            plugin.kind,
            plugin.abi_version,
            plugin.path.display()
        );
    }
    tracing::info!(
        "strategy {}, current source {}",
        config.strategy.plugin,
        config.current_source.plugin
    );
    let strategy = strategy.map_err(|failed| {
        tracing::error!(
            "strategy plugin {} could not be started: {}; publishing the fail-safe limits \
             (CCL 0, DCL 0) until the configuration is fixed and the service restarted",
            failed.plugin,
            failed_line(&failed)
        );
        PluginError::Plugin(failed.text)
    });
    let current_source = current_source.map_err(|failed| {
        // Not loaded because of the config's errors, which the strategy's line names.
        if failed.text == fail_safe::NOT_LOADED {
            return PluginError::Plugin(failed.text);
        }
        tracing::error!(
            "current source plugin {} could not be started: {}; using the batteries' own \
             current until the configuration is fixed and the service restarted",
            failed.plugin,
            failed_line(&failed)
        );
        PluginError::Plugin(failed.text)
    });

    let settings = Settings::from(&config);
    let mut engine =
        Engine::with_failures(settings, &config.strategy.plugin, strategy, current_source);
    // Nothing is published until the name is ours: no cause of the host's touches feed-in.
    engine.set_publishing(false);
    let mut store = match state_unknown {
        Some(why) => StateStore::unused(why),
        None => StateStore::new(&config.paths.state_dir),
    };
    let mut last_plausible_day = None;
    let loaded = store.load_parts().map(|(state, problems)| {
        for problem in problems {
            tracing::warn!("{}: {problem}", store.path().display());
        }
        state
    });
    match &loaded {
        Ok(state) => {
            for problem in engine.restore(state) {
                tracing::warn!("{}: {problem}", store.path().display());
            }
            // A damaged day (beyond the year 9999) is no date: none was kept.
            last_plausible_day = state.last_plausible_day.filter(|day| {
                let plausible = (0..=LAST_DAY).contains(day);
                if !plausible {
                    tracing::warn!(
                        "{}: last_plausible_day {day} is no date; none kept",
                        store.path().display()
                    );
                }
                plausible
            });
            tracing::info!("state restored from {}", store.path().display());
        }
        Err(problem) => tracing::warn!("{problem}; starting from the batteries' SoC"),
    }

    let own = config.publish.service_name.clone();
    let uid = settings_uid(&own);
    let link = connect_with_retry().await;
    let preferred = config.publish.device_instance;
    // Borrowed, not cloned: a clone held here for the life of `run` would keep the first
    // connection (and its socket) open after a reconnection replaced it.
    let (device_instance, custom_name, settings_pending) =
        match ask_settings(&link.conn, &uid, preferred).await {
            Ok((instance, name)) => (
                instance.unwrap_or(i64::from(preferred)),
                name.unwrap_or_default(),
                false,
            ),
            Err(err) => {
                let err = bus::peer_error(SETTINGS, &err);
                tracing::warn!(
                    "no device instance from {SETTINGS} ({err}); using the preferred instance \
                     {preferred} until it appears"
                );
                (i64::from(preferred), String::new(), true)
            }
        };
    tracing::info!("device instance {device_instance}");
    let device = DeviceInfo {
        device_instance,
        custom_name,
        process_name: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "dbus-aggregate-batteries".into()),
    };
    let published = Published::new(&device);
    let attached = attach_patiently(link, own, uid.clone(), published.clone()).await;

    // The strategy says whether the batteries' own limits must be valid (docs/reading.md §5).
    let pass_through = scan
        .find(&config.strategy.plugin, PluginKind::Strategy)
        .is_some_and(|plugin| plugin.needs_battery_limits);
    // The file as written, for the recordings' header: a replay runs what ran here.
    let config_text = crate::config::read_config_text(config_file).unwrap_or_default();
    let mut shadow =
        crate::plugins::as_shadow(|| shadow_engine(&config_text, config_file, &config));
    if let (Some((engine, _)), Ok(state)) = (&mut shadow, &loaded) {
        // The shadow starts where the live engine starts; what it cannot take is its own
        // affair, never the live one's.
        for problem in crate::plugins::as_shadow(|| engine.restore(state)) {
            tracing::debug!("shadow: {problem}");
        }
    }
    // A recording's save cut short (a power cut) leaves its temporary file in their folder:
    // no save is under way yet.
    // Only a folder it records into: the fail-safe may keep no recordings, as its state
    // folder is not known (docs/tick.md §6).
    if !config.record.keep.is_zero() {
        crate::state_file::remove_leftovers(&config.record.folder(&config.paths));
    }
    let recorder = (!config.record.keep.is_zero()).then(|| {
        let max_bytes = config.record.max_bytes();
        let recorder = Recorder::new(config.record.keep.as_secs_f64(), max_bytes, config_text);
        match &shadow {
            Some((_, text)) => recorder.with_shadow_config(text.clone()),
            None => recorder,
        }
    });
    let shadow = shadow.and_then(|(engine, _)| {
        shadow::Shadow::start(engine, config.update_interval)
            .map_err(|err| tracing::error!("no shadow strategy: no thread for it ({err})"))
            .ok()
    });
    let happenings = crate::record::Happenings::new(config.record.keep);
    let mut daemon = Daemon {
        link: Link::new(attached),
        reconnecting: None,
        settings: SettingsClient {
            name_path: format!("/Settings/Devices/{uid}/CustomName"),
            uid,
            device_instance,
            pending: settings_pending,
            retry_at: None,
            call: None,
            feed_in_call: None,
            feed_in_failing: Episode::default(),
        },
        log: LogState::default(),
        bank: Bank {
            engine,
            presence: tick::presence_of(&config),
            members: BankMembers::of(&config),
            published,
            store,
            pass_through,
            dates: DateGuard::new(calendar::build_date(), last_plausible_day),
            started,
            last_tick: None,
            state_failing: Episode::default(),
            state_due: None,
            feed_in_unsaved: None,
        },
        config,
        recorder,
        shadow,
        last_shadow: None,
        recorded_before: None,
        happenings,
    };
    daemon.main_loop().await
}

/// The engine of `shadow:` in the config's text, with the shadow's own config text; `None`
/// without `shadow:`, or when it cannot run (logged: the live strategy runs on regardless).
fn shadow_engine(text: &str, file: &Path, config: &Config) -> Option<(Engine, String)> {
    // The parsed config says already whether there is one: the file's text is parsed again
    // (into a tree of every key, tens of KB at start) only for a shadow to run.
    config.shadow.as_ref()?;
    let plugins_dir = Some(config.paths.plugins_dir.as_path());
    // Refused whole, as check-config refuses it: a shadow on another current source than
    // the one configured would record limits nobody asked for.
    let ready = match crate::config::check::shadow_ready(file, text, plugins_dir) {
        Ok(ready) => ready?,
        Err(errors) => {
            for error in &errors {
                tracing::error!("{error}");
            }
            tracing::error!("no shadow strategy: its config has errors");
            return None;
        }
    };
    let config = ready.config;
    tracing::info!(
        "shadow strategy {}, current source {}: recorded beside the live limits, never published",
        config.strategy.plugin,
        config.current_source.plugin
    );
    let engine = Engine::new(
        Settings::from(&config),
        &config.strategy.plugin,
        ready.strategy,
        ready.current_source,
    );
    Some((engine, ready.text))
}

/// [`attach`] until it works, on a new connection after each failure: a bus too busy to answer
/// is waited for, never a reason to exit.
async fn attach_patiently(
    mut link: BusConnection,
    own: String,
    uid: String,
    published: Published,
) -> Attached {
    let mut delay = Duration::from_millis(250);
    loop {
        match attach(&link, &own, &uid, &published).await {
            Ok((monitor, exported)) => return (link.conn, monitor, exported),
            Err(err) => {
                tracing::warn!("the bus refused us ({err}); retrying");
                let _ = link.conn.close().await;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
                link = connect_with_retry().await;
            }
        }
    }
}

/// Starts reading the bus and serving our objects (the name is requested later, by the tick).
async fn attach(
    link: &BusConnection,
    own: &str,
    uid: &str,
    published: &Published,
) -> zbus::Result<(Monitor, BusItemService)> {
    let conn = &link.conn;
    let monitor = Monitor::start(conn, &bus::address(), own).await?;
    let exported = BusItemService::with_writer(link.clone());
    for (path, item) in published.items() {
        exported.insert(path, item.value.clone(), item.text(), path == CUSTOM_NAME);
    }
    exported.on_set(custom_name_handler(conn.clone(), uid.to_string()));
    exported.serve().await?;
    Ok((monitor, exported))
}

fn custom_name_handler(conn: Connection, uid: String) -> crate::bus::export::SetHandler {
    Arc::new(move |_path, field| {
        let conn = conn.clone();
        let setting = format!("/Settings/Devices/{uid}/CustomName");
        Box::pin(async move {
            let Field::Text(name) = field else {
                return SetDecision::WrongType;
            };
            let value = Value::Text(name.clone());
            match client::set_value(&conn, SETTINGS, &setting, &value).await {
                Ok(0) => SetDecision::Accept(value, name),
                Ok(code) => {
                    tracing::warn!("settings refused the custom name (code {code})");
                    SetDecision::Reject
                }
                Err(err) => {
                    let err = bus::peer_error(SETTINGS, &err);
                    tracing::warn!("custom name not stored in {SETTINGS}: {err}");
                    SetDecision::Reject
                }
            }
        })
    })
}

impl Daemon {
    /// Waits for the next event and handles it, until SIGTERM, SIGINT or SIGHUP.
    async fn main_loop(&mut self) -> Result<(), Error> {
        let mut signals = Signals::install()?;
        let mut ticker = Ticker::new(self.config.update_interval);
        loop {
            match self.next_event(&mut ticker, &mut signals).await {
                Event::Stop(signal) => {
                    log_stop(signal);
                    break;
                }
                event => self.handle_event(event).await,
            }
        }
        // A feed-in write still under way (a 0 started by the last tick) lands before the
        // user's value, not after it.
        if let Some((_, call)) = &mut self.settings.feed_in_call {
            let _ = call.settle(STOP_WRITE_LIMIT).await;
        }
        self.settings.feed_in_call = None;
        self.release_feed_in().await;
        self.save_state();
        Ok(())
    }

    /// Waits for whatever comes first; does nothing else. While a new connection is set up
    /// there is no tick and nothing of the old connection to wait for.
    async fn next_event(&mut self, ticker: &mut Ticker, signals: &mut Signals) -> Event {
        let attached = self.reconnecting.is_none();
        let early_tick = attached && !self.link.registered;
        let (monitor, conn) = (self.link.monitor.clone(), self.link.conn.clone());
        let reconnect = async {
            match &mut self.reconnecting {
                Some(reconnect) => reconnect.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick(), if attached => Event::Tick,
            _ = monitor.news(), if early_tick => Event::BusNews,
            _ = conn.closed(), if attached => Event::LinkClosed,
            attached = reconnect => Event::Reconnected(attached),
            _ = signals.term.recv() => Event::Stop("SIGTERM"),
            _ = signals.int.recv() => Event::Stop("SIGINT"),
            _ = signals.hup.recv() => Event::Stop("SIGHUP"),
            _ = received(&mut signals.usr1) => Event::RecordAsked,
        }
    }

    /// One event to the step that handles it.
    async fn handle_event(&mut self, event: Event) {
        match event {
            Event::Tick | Event::BusNews => self.tick_and_check_link().await,
            Event::LinkClosed => self.link_closed(),
            Event::Reconnected(attached) => self.reconnected(attached),
            Event::RecordAsked => self.save_recording(crate::record::ASKED),
            // The loop ends there.
            Event::Stop(_) => {}
        }
    }

    /// A tick; a value connection that failed meanwhile closes the link, which
    /// [`Event::LinkClosed`] then sets up anew.
    async fn tick_and_check_link(&mut self) {
        self.tick().await;
        if self.link.monitor.broken() {
            // Closing waits for the connection's writer, which a bus that takes no data holds:
            // bounded, so that the loop (and SIGTERM) never waits on it.
            let close = self.link.conn.clone().close();
            let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
        }
    }

    /// At a stop: the user's feed-in value goes back, whatever holds the episode
    /// (nobody holds the limits once we are gone). Kept in the state if the write fails.
    async fn release_feed_in(&mut self) {
        let Some(value) = self.bank.engine.release_feed_in() else {
            return;
        };
        let v = Value::Int(value);
        // A stopped bus must not hold the stop: a supervisor waits only so long.
        let write = client::set_value(&self.link.conn, SETTINGS, FEED_IN_SETTING, &v);
        let until = tokio::time::Instant::now() + STOP_WRITE_LIMIT;
        match tokio::time::timeout_at(until, write).await {
            Ok(Ok(0)) => {
                tracing::info!("stopping: {FEED_IN_SETTING} restored to {value}");
                // Read back, so that the state file keeps the value only while the setting
                // does not show it (the next start must not write it over a later change).
                let read = client::get_value(&self.link.conn, SETTINGS, FEED_IN_SETTING);
                if let Ok(Ok(field)) = tokio::time::timeout_at(until, read).await {
                    if let Some(now) = field.integer() {
                        self.bank.engine.feed_in_read_back(now);
                    }
                }
            }
            Ok(Ok(code)) => tracing::warn!(
                "stopping: {SETTINGS} refused {FEED_IN_SETTING} = {value} ({code}); restored at \
                 the next start"
            ),
            Ok(Err(err)) => tracing::warn!(
                "stopping: cannot restore {FEED_IN_SETTING} ({}); restored at the next start",
                bus::peer_error(SETTINGS, &err)
            ),
            Err(_) => tracing::warn!(
                "stopping: the bus did not take {FEED_IN_SETTING} = {value} within \
                 {STOP_WRITE_LIMIT:?}; restored at the next start"
            ),
        }
    }

    /// The connection is gone: the state is saved unless the file holds it already (a bus
    /// that drops us again and again must not rewrite an unchanged file each time,
    /// docs/state.md §2) and a new connection set up with backoff (in the background: signals
    /// are still answered meanwhile).
    fn link_closed(&mut self) {
        tracing::error!("the D-Bus connection is gone; reconnecting");
        if self.write_state(true) {
            self.bank.state_due = None;
        }
        let own = self.config.publish.service_name.clone();
        let (uid, published) = (self.settings.uid.clone(), self.bank.published.clone());
        self.reconnecting = Some(Box::pin(async move {
            let link = connect_with_retry().await;
            attach_patiently(link, own, uid, published).await
        }));
    }

    /// The monitor, our objects and (at the next complete tick) our name again on the new
    /// connection. The engine, and with it the counter, carries on.
    fn reconnected(&mut self, attached: Attached) {
        self.reconnecting = None;
        self.link = Link::new(attached);
        self.bank.engine.set_publishing(false);
        // Calls made on the old connection end on their own; their answers are not wanted.
        self.settings.feed_in_call = None;
        self.settings.call = None;
        // The gap is not integrated: no current was measured meanwhile.
        self.bank.last_tick = None;
        tracing::info!("reconnected to D-Bus");
    }

    /// Writes the state file now (at the stop, at the tick's wish); a failure is logged
    /// once until a write succeeds again. Returns whether it was written.
    fn save_state(&mut self) -> bool {
        self.write_state(false)
    }

    /// [`Daemon::save_state`]; with `changed_only`, not when the file already holds the
    /// state. Returns whether the file holds it now.
    fn write_state(&mut self, changed_only: bool) -> bool {
        let mut state = self.bank.engine.state();
        state.last_plausible_day = self.bank.dates.last_plausible_day();
        let written = if changed_only {
            self.bank.store.save_if_changed(&state).map(|_| ())
        } else {
            self.bank.store.save(&state)
        };
        let saved = match written {
            Ok(()) => {
                self.bank.engine.state_saved();
                if self.bank.state_failing.end() {
                    tracing::info!(
                        "the state file {} is written again",
                        self.bank.store.path().display()
                    );
                }
                true
            }
            Err(err) => {
                if self.bank.state_failing.start() {
                    tracing::error!(
                        "cannot write the state file {}: {err}; tried again every {} s \
                         until it can be",
                        self.bank.store.path().display(),
                        STATE_RETRY.as_secs()
                    );
                }
                false
            }
        };
        self.feed_in_saved(saved, state.feed_in.saved_value.is_some());
        saved
    }

    /// What a save means for a feed-in episode not yet in the state file: one error line when
    /// its first save fails (its 0 goes out all the same, docs/state.md §2), one line when a
    /// save lands. Once no user's value is kept (restored and read back before any save
    /// landed), nothing is at stake any more.
    fn feed_in_saved(&mut self, saved: bool, keeps_user_value: bool) {
        let path = self.bank.store.path();
        let Some(unsaved) = &mut self.bank.feed_in_unsaved else {
            return;
        };
        let user = unsaved.user;
        if saved {
            if unsaved.said {
                tracing::info!(
                    "the feed-in episode is in the state file {} now: the user's value {user} \
                     of {FEED_IN_SETTING} survives an unclean stop",
                    path.display()
                );
            }
            self.bank.feed_in_unsaved = None;
        } else if !keeps_user_value {
            self.bank.feed_in_unsaved = None;
        } else if !unsaved.said {
            unsaved.said = true;
            tracing::error!(
                "DC-coupled feed-in is turned off ({FEED_IN_SETTING} = 0) without the feed-in \
                 episode in the state file {}: the user's value {user} is lost if the daemon \
                 stops uncleanly (power cut, kill -9) before the file can be written; tried \
                 again at every tick",
                path.display()
            );
        }
    }

    /// The tick's save: when it wants one, or one it wanted failed and is due again. While
    /// the file cannot be written, at most one attempt every [`STATE_RETRY`]: nothing is lost
    /// meanwhile (the next write holds everything), and the log and the flash are spared;
    /// except while a feed-in episode is not in the file, whose user's value an unclean stop
    /// would lose: then at every tick (docs/state.md §2). `feed_in_started` is the user's value
    /// of an episode this tick starts.
    fn save_state_at_tick(&mut self, wanted: bool, feed_in_started: Option<i64>, now: Instant) {
        if let Some(user) = feed_in_started {
            self.bank.feed_in_unsaved = Some(UnsavedEpisode { user, said: false });
        }
        let urgent = self.bank.feed_in_unsaved.is_some();
        let due = self.bank.state_due;
        if !(wanted || urgent || due.is_some()) || (!urgent && due.is_some_and(|at| now < at)) {
            return;
        }
        self.bank.state_due = (!self.save_state()).then(|| now + STATE_RETRY);
    }

    /// The shadow strategy's plugin name.
    fn shadow_name(&self) -> &str {
        (self.config.shadow.as_ref()).map_or("", |s| s.strategy.plugin.as_str())
    }

    /// Saves the recording, when there is one; one log line either way.
    fn save_recording(&mut self, reason: &str) {
        let Some(recorder) = &self.recorder else {
            tracing::info!("recording asked for ({reason}), but record.keep is 0 s: none kept");
            return;
        };
        let dir = self.config.record.folder(&self.config.paths);
        let max_files = self.config.record.max_files;
        let snapshot = recorder.snapshot(reason);
        let reason = reason.to_string();
        // Making the file's text and compressing it takes a while on a big bank: off the
        // tick's thread (the runtime waits for it when the daemon stops).
        tokio::task::spawn_blocking(move || match snapshot.save(&dir, max_files) {
            Ok(path) => tracing::info!(
                "recording of the last {} ticks saved ({reason}): {}",
                snapshot.ticks(),
                path.display()
            ),
            Err(err) => tracing::error!("cannot write a recording into {}: {err}", dir.display()),
        });
    }

    fn log_discovery(&mut self) {
        // Who belongs to the bank follows each service's owner, read at the tick
        // (docs/discovery.md §2): these are for the debug log.
        for event in self.link.monitor.take_events() {
            match event {
                Discovery::Added(name) => tracing::debug!("found {name}"),
                Discovery::Removed(name) => tracing::debug!("{name} left the bus"),
            }
        }
    }

    /// Our custom name as the settings service holds it, once it changed there: written by
    /// `SetValue` on our `/CustomName`, or by another program (the GUI, VRM). Kept in the
    /// published values, so that a new connection serves it too.
    async fn follow_custom_name(&mut self) {
        let known = match self.bank.published.get(CUSTOM_NAME).map(|item| &item.value) {
            Some(Value::Text(name)) => name.as_str(),
            _ => "",
        };
        let path = &self.settings.name_path;
        let Some(name) = self.link.monitor.read(|cache| {
            gather::single_text_unless(cache, bus::monitor::Class::Settings, path, known)
        }) else {
            return;
        };
        tracing::info!("custom name `{name}` from {SETTINGS}");
        self.publish_own(&[(CUSTOM_NAME, Value::Text(name))]).await;
    }

    /// The settings service was missing at start: once it is on the bus, our settings are
    /// added. The instance we registered with stays (a device does not change its instance
    /// under DVCC's and VRM's feet); the custom name stored there is adopted.
    /// `AddSettings` runs in the background: started at one tick, its answer taken at a
    /// later one.
    async fn settings_appeared(&mut self, now: Instant) {
        // Whether the name is ours decides whether the instance may still change: while its
        // request is under way, the answer waits for the bus's.
        self.name_answered();
        if self.link.name_call.is_some() {
            return;
        }
        let answer = match self.settings.call.as_mut().map(Background::answer) {
            Some(None) => return,
            Some(Some(answer)) => {
                self.settings.call = None;
                answer
            }
            None => {
                if self.settings.retry_at.is_none_or(|at| now >= at) {
                    let (conn, uid) = (self.link.conn.clone(), self.settings.uid.clone());
                    let preferred = self.config.publish.device_instance;
                    self.settings.call = Some(Background::start(async move {
                        ask_settings(&conn, &uid, preferred).await
                    }));
                }
                return;
            }
        };
        let failed =
            |err: String| format!("{SETTINGS} is there but AddSettings failed ({err}); retrying");
        let (instance, name) = match answer {
            Some(Ok(answer)) => answer,
            Some(Err(err)) => {
                if self.settings.retry_at.is_none() {
                    tracing::warn!("{}", failed(bus::peer_error(SETTINGS, &err)));
                }
                self.settings.retry_at = Some(now + Duration::from_secs(10));
                return;
            }
            None => {
                if self.settings.retry_at.is_none() {
                    tracing::warn!("{}", failed("the call ended without an answer".into()));
                }
                self.settings.retry_at = Some(now + Duration::from_secs(10));
                return;
            }
        };
        self.settings.pending = false;
        let mut changes = Vec::new();
        match instance {
            Some(n) if n == self.settings.device_instance => {
                tracing::info!("{SETTINGS} appeared: device instance {n} stored there")
            }
            Some(n) if self.link.registered => tracing::warn!(
                "{SETTINGS} appeared and gives device instance {n}; keeping {} until the \
                 service restarts, as it is registered with it",
                self.settings.device_instance
            ),
            Some(n) => {
                tracing::info!("{SETTINGS} appeared: device instance {n}");
                self.settings.device_instance = n;
                changes.push(("/DeviceInstance", Value::Int(n)));
            }
            None => {}
        }
        if let Some(name) = name {
            let current = self.bank.published.get(CUSTOM_NAME).map(|item| &item.value);
            if current != Some(&Value::Text(name.clone())) {
                tracing::info!("custom name `{name}` from {SETTINGS}");
                changes.push((CUSTOM_NAME, Value::Text(name)));
            }
        }
        self.publish_own(&changes).await;
    }

    /// Our own paths the settings service gave new values (the device instance, the custom
    /// name): into the published values, onto the bus, signalled.
    async fn publish_own(&mut self, changes: &[(&str, Value)]) {
        for (path, value) in changes {
            self.bank
                .published
                .set(path, value.clone(), TextFormat::Plain);
        }
        let changed = self.export(changes.iter().map(|(path, _)| path.to_string()));
        self.signal(changed).await;
    }

    /// Signals the paths that changed in one `ItemsChanged` once the name is ours. Before
    /// that, nobody can have read the old values, but for the paths changed while the name
    /// was asked for: those wait for the answer and go with the first signal after it.
    async fn signal(&mut self, mut changed: Vec<String>) {
        if !self.link.registered {
            if self.link.name_call.is_some() {
                self.link.unsignalled.append(&mut changed);
            }
            self.name_answered();
            if !self.link.registered {
                return;
            }
            changed = std::mem::take(&mut self.link.unsignalled);
            changed.sort_unstable();
            changed.dedup();
        }
        if let Err(err) = self.link.exported.items_changed(&changed).await {
            tracing::warn!("ItemsChanged not sent: {err}");
        }
    }

    /// Hands the published items at `paths` to the objects on the bus; returns the paths whose
    /// value or text changed there (for `ItemsChanged`).
    fn export(&self, paths: impl IntoIterator<Item = String>) -> Vec<String> {
        let items = paths
            .into_iter()
            .filter_map(|path| {
                let item = self.bank.published.get(&path)?;
                Some((path, item.value.clone(), item.text()))
            })
            .collect();
        self.link.exported.store(items)
    }

    /// Asks for our name in the background (`complete`: the whole bank is online); the
    /// outcome is logged as soon as the bus answers, and taken in by a later tick.
    fn request_our_name(&mut self, complete: bool) {
        let (conn, name) = (
            self.link.conn.clone(),
            self.config.publish.service_name.clone(),
        );
        let attached = self.link.attached;
        let call = Background::start(async move {
            let result = match tokio::time::timeout(CALL_TIMEOUT, request_name(&conn, &name)).await
            {
                Ok(result) => result,
                Err(_) => Err(bus::Error::Bus(zbus::Error::Failure(format!(
                    "RequestName: no answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )))),
            };
            let ms = attached.elapsed().as_millis();
            match &result {
                Ok(()) if complete => tracing::info!("registered {name} after {ms} ms"),
                Ok(()) => tracing::warn!(
                    "registered {name} after {ms} ms with safe values: not every battery is \
                     online yet"
                ),
                // Logged once an episode, by `name_answered`.
                Err(_) => {}
            }
            result
        });
        self.link.name_call = Some(call);
    }

    /// The name request's answer, once it came: registered, or asked again at a later tick.
    fn name_answered(&mut self) {
        let Some(call) = &mut self.link.name_call else {
            return;
        };
        let Some(answer) = call.answer() else {
            return;
        };
        self.link.name_call = None;
        let name = &self.config.publish.service_name;
        if let Some(Ok(())) = answer {
            self.link.registered = true;
            self.bank.engine.set_publishing(true);
            if self.link.name_refused > 0 {
                tracing::info!(
                    "{name} is ours after {} refused requests",
                    self.link.name_refused
                );
            }
            return;
        }
        // Not ours: nobody read those values from us. Asked again at the next tick; another
        // program holding the name (an old aggregator left running) is one log line, not one a
        // second.
        self.link.unsignalled.clear();
        if self.link.name_refused == 0 {
            match answer {
                Some(Err(err)) => {
                    tracing::error!("cannot register {name}: {err}; asking again every tick")
                }
                _ => tracing::error!(
                    "cannot register {name}: the request ended without an answer; asking again \
                     every tick"
                ),
            }
        }
        self.link.name_refused = self.link.name_refused.saturating_add(1);
    }

    fn summary(&mut self, now: Instant, outcome: &aggregator_core::engine::Outcome) {
        let every = self.config.logging.summary_every;
        if every.is_zero() {
            return;
        }
        if self
            .log
            .last_summary
            .is_some_and(|last| now.duration_since(last) < every)
        {
            return;
        }
        self.log.last_summary = Some(now);
        let m = &outcome.merged;
        let cell = |e: &Option<aggregator_core::bank::Extreme>| {
            e.as_ref()
                .map_or("---".to_string(), |e| format!("{} {:.3}V", e.id, e.value))
        };
        let num = |v: Option<f64>, d: usize| v.map_or("---".into(), |v| format!("{v:.d$}"));
        tracing::info!(
            "CVL {:.2}V CCL {:.1}A DCL {:.1}A | {}V {}A SoC {}% | {} online | mode {} | min cell {} max cell {}",
            outcome.limits.cvl_v,
            outcome.limits.ccl_a,
            outcome.limits.dcl_a,
            num(m.voltage_v, 2),
            num(outcome.current_a, 1),
            num(outcome.soc_pct, 1),
            outcome.online,
            outcome.mode,
            cell(&m.min_cell_voltage),
            cell(&m.max_cell_voltage),
        );
        if let Some(Err(missing)) = &self.last_shadow {
            tracing::info!(
                "live CVL {:.2}V CCL {:.1}A DCL {:.1}A | shadow {} {}: no limits this tick",
                outcome.limits.cvl_v,
                outcome.limits.ccl_a,
                outcome.limits.dcl_a,
                self.shadow_name(),
                missing.name(),
            );
        }
        if let Some(Ok(shadow)) = &self.last_shadow {
            tracing::info!(
                "live CVL {:.2}V CCL {:.1}A DCL {:.1}A | shadow {} CVL {:.2}V CCL {:.1}A DCL {:.1}A",
                outcome.limits.cvl_v,
                outcome.limits.ccl_a,
                outcome.limits.dcl_a,
                self.shadow_name(),
                shadow.cvl_v,
                shadow.ccl_a,
                shadow.dcl_a,
            );
        }
    }
}

/// The stop's line. SIGHUP asks a daemon to read its config again: it stops as at SIGTERM, and
/// the supervisor starts it again, which reads the config anew (docs/commands.md §4).
fn log_stop(signal: &str) {
    if signal == "SIGHUP" {
        tracing::info!(
            "SIGHUP: stopping (the supervisor starts the daemon again, which reads its config anew)"
        );
    } else {
        tracing::info!("{signal}: stopping");
    }
}

/// One line for an engine event; `state_file` is the state file, for what it read.
fn log_event(event: &engine::Event, state_file: &Path) {
    use engine::Event;
    match event {
        Event::CurrentFallbackStarted => {
            tracing::warn!("current source has no value: using the batteries' own current")
        }
        Event::CurrentFallbackEnded(n) => {
            tracing::info!("current source back after {n} ticks on the batteries' current")
        }
        Event::StrategyFault(msg) => {
            tracing::error!("strategy fault: {msg}; charging stopped (CCL 0)")
        }
        Event::StrategyRecovered(n) => {
            tracing::info!("strategy good again after {n} faults in a row")
        }
        Event::DischargeStoppedByFaults(n) => tracing::error!(
            "strategy faulted {n} times in a row (safety.plugin_failures): discharging stopped \
             (DCL 0) until its first good result"
        ),
        Event::Clamped(what) => tracing::warn!(
            "strategy limits clamped to the safety bounds: {}",
            what.join(", ")
        ),
        Event::ModeChanged(mode) => tracing::info!("mode: {mode}"),
        Event::ChargeVoltageIgnored {
            bound_v,
            cells,
            min_cell_v,
        } => tracing::error!(
            "safety.max_charge_voltage ({bound_v} V) is a bank voltage, and this bank's {cells} \
             cells × safety.min_cell_voltage {min_cell_v} V = {:.1} V at least: ignored, the CVL \
             stays under {cells} × safety.max_cell_voltage; fix the value (a cell voltage belongs \
             in safety.max_cell_voltage)",
            f64::from(*cells) * min_cell_v
        ),
        Event::CounterStartedFromBms(soc) => {
            tracing::info!("SoC counter started from the batteries' SoC {soc:.1} %")
        }
        Event::SavedChargeDropped {
            charge_ah,
            capacity_ah,
        } => tracing::warn!(
            "{}: charge_ah: {charge_ah:?} is more than the whole bank's capacity \
             {capacity_ah:?} Ah; not restored, the counter starts from the batteries' SoC",
            state_file.display()
        ),
        Event::FeedIn(event) => log_feed_in(event),
        Event::NoTemperature => tracing::warn!(
            "no battery gives a temperature (/System/MinCellTemperature, \
             /System/MaxCellTemperature or /Dc/0/Temperature): the safety temperature limits \
             cannot act"
        ),
        Event::NoPackLimit(name) => tracing::warn!(
            "battery {name} publishes no /Info/MaxChargeCurrent or /Info/MaxDischargeCurrent: \
             its own limits cap nothing (safety.bms_limits)"
        ),
        Event::BmsOnly(name, bounds) => tracing::warn!(
            "battery {name} publishes no data for these safety bounds: {}; for this battery \
             they rest on its BMS alone (bms_only in /System/Batteries)",
            bounds.join(", ")
        ),
    }
}

fn log_feed_in(event: &FeedInEvent) {
    match event {
        FeedInEvent::Disabled(cause, user) => {
            let why = match cause {
                Cause::ChargeStopped => "the published CCL is 0",
                Cause::ChargeLowered => "the CCL is lowered below the strategy's",
                Cause::StrategyRequest => "the strategy asked for it",
            };
            tracing::warn!(
                "DC-coupled feed-in disabled ({why}; DVCC ignores the CCL for solar chargers \
                 while it is on); the user's value {user} comes back when the cause has cleared"
            )
        }
        FeedInEvent::Overridden => {
            tracing::warn!("{FEED_IN_SETTING} was turned on during a feed-in stop: disabled again")
        }
        FeedInEvent::Restoring(user) => {
            tracing::info!("feed-in cause cleared: restoring {FEED_IN_SETTING} to {user}")
        }
        FeedInEvent::SettingUnknown => tracing::warn!(
            "feed-in should be disabled but {FEED_IN_SETTING} cannot be read: nothing is \
             written until its value is known"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_uid_is_an_object_path_element_for_every_valid_service_name() {
        for (name, uid) in [
            ("com.victronenergy.battery.aggregate", "aggregatebatteries"),
            (
                "com.victronenergy.battery.bank_2",
                "aggregatebatteries_bank_2",
            ),
            (
                "com.victronenergy.battery.bank-a",
                "aggregatebatteries_bank_a",
            ),
        ] {
            assert!(crate::config::valid_name_element(
                name.rsplit('.').next().unwrap()
            ));
            assert_eq!(settings_uid(name), uid);
            let path = format!("/Settings/Devices/{uid}/ClassAndVrmInstance");
            assert!(
                zbus::zvariant::ObjectPath::try_from(path.as_str()).is_ok(),
                "{path}"
            );
        }
    }
}
