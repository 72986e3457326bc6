//! The flight recorder: what each tick used and published, kept in memory for the last
//! `record.keep`, saved to a file when something happens, and read back by `simulate --replay`.
//!
//! # The file
//!
//! A gzip file (several gzip members one after the other, as `zcat` and `gzip -d` read them) of
//! JSON lines:
//!
//! ```text
//! {"format":"dbus-aggregate-batteries recording","version":1,"reason":"...","config":"<yaml>", ...}
//! {"tick":0,"full":{"t":0.0,"dt":0.0,"date":"2026-06-15","in/cells":16,"bat/0/name":"A",...}}
//! {"tick":1,"set":{"t":1.0,"bat/0/Dc/0/Voltage":53.21},"gone":["bat/0/Soc"]}
//! ```
//!
//! Each tick is a flat map of keys to values; a `full` line holds all of it, a delta line only
//! what changed since the tick before (`set`) and what is no longer there (`gone`). A full line
//! starts every [`FULL_EVERY`] ticks, so a file cut anywhere is readable up to the cut. The
//! keys are listed in CONTRIBUTING.md.
//!
//! # Memory
//!
//! The lines of the last [`FULL_EVERY`] ticks are kept as text; older ones as compressed gzip
//! members of [`FULL_EVERY`] ticks each, dropped oldest first once older than `record.keep` or
//! beyond `record.max_memory_kib`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use aggregator_core::engine::{Event, Outcome, TickInputs};
use aggregator_core::presence::Battery;
use aggregator_core::reading::{alarm_paths, BadValue, BatteryReading, Slot, BATTERY_PATHS};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use plugin_api::{
    BatteryState, DcClass, DcSourceView, LocalDate, ShuntClass, ShuntView, SolarChargerView,
    VebusView,
};
use serde_json::{json, Value as Json};

use crate::config::SaveOn;
use crate::error::Error;

/// The `format` of the header line.
pub const FORMAT: &str = "dbus-aggregate-batteries recording";
/// The version this program writes and reads.
pub const VERSION: u64 = 1;
/// Ticks between two full lines.
pub const FULL_EVERY: u64 = 60;

/// One tick as a flat map: keys as in the module docs.
pub type Flat = BTreeMap<String, Json>;

/// What a tick published, as the recording holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishedValues {
    pub cvl_v: f64,
    pub ccl_a: f64,
    pub dcl_a: f64,
    pub soc_pct: Option<f64>,
    /// The value written to the feed-in setting this tick, if any.
    pub feed_in_write: Option<i64>,
    pub mode: String,
}

impl PublishedValues {
    pub fn of(outcome: &Outcome) -> Self {
        Self {
            cvl_v: outcome.limits.cvl_v,
            ccl_a: outcome.limits.ccl_a,
            dcl_a: outcome.limits.dcl_a,
            soc_pct: outcome.soc_pct,
            feed_in_write: outcome.feed_in_write,
            mode: outcome.mode.clone(),
        }
    }
}

fn put(flat: &mut Flat, key: String, value: impl Into<Json>) {
    let value = value.into();
    // None, and non-finite numbers (which JSON cannot hold), are left out: absent is None.
    if !value.is_null() {
        flat.insert(key, value);
    }
}

fn state_name(state: BatteryState) -> &'static str {
    match state {
        BatteryState::Online => "online",
        BatteryState::Stale => "stale",
        BatteryState::Lost => "lost",
    }
}

fn state_of(name: &str) -> Option<BatteryState> {
    match name {
        "online" => Some(BatteryState::Online),
        "stale" => Some(BatteryState::Stale),
        "lost" => Some(BatteryState::Lost),
        _ => None,
    }
}

/// The tick's inputs as the engine got them, as a flat map.
pub fn flatten_inputs(now_s: f64, batteries: &[Battery], inputs: &TickInputs) -> Flat {
    let mut f = Flat::new();
    put(&mut f, "t".into(), now_s);
    put(&mut f, "dt".into(), inputs.dt_s);
    let d = inputs.date;
    let date = format!("{:04}-{:02}-{:02}", d.year, d.month, d.day);
    put(&mut f, "date".into(), date);
    put(&mut f, "in/cells".into(), inputs.cells);
    put(&mut f, "in/expected".into(), inputs.expected);
    if !inputs.left_out.is_empty() {
        put(&mut f, "in/left_out".into(), inputs.left_out.clone());
    }
    put(&mut f, "in/monitor_soc".into(), inputs.monitor_soc);
    put(&mut f, "in/low_soc".into(), inputs.low_soc);
    put(&mut f, "in/feed_in_setting".into(), inputs.feed_in_setting);
    for (i, v) in inputs.vebus.iter().enumerate() {
        put(&mut f, format!("vebus/{i}/service"), v.service.as_str());
        put(
            &mut f,
            format!("vebus/{i}/connected"),
            v.connected.into_option(),
        );
        put(
            &mut f,
            format!("vebus/{i}/current"),
            v.current_a.into_option(),
        );
    }
    for (i, v) in inputs.solar_chargers.iter().enumerate() {
        put(&mut f, format!("solar/{i}/service"), v.service.as_str());
        put(
            &mut f,
            format!("solar/{i}/current"),
            v.current_a.into_option(),
        );
    }
    for (i, v) in inputs.smartshunts.iter().enumerate() {
        let class = match v.class {
            ShuntClass::Battery => "battery",
            ShuntClass::DcLoad => "dcload",
        };
        put(&mut f, format!("shunt/{i}/service"), v.service.as_str());
        put(&mut f, format!("shunt/{i}/class"), class);
        put(
            &mut f,
            format!("shunt/{i}/instance"),
            v.device_instance.into_option(),
        );
        put(&mut f, format!("shunt/{i}/name"), v.custom_name.as_str());
        put(
            &mut f,
            format!("shunt/{i}/current"),
            v.current_a.into_option(),
        );
    }
    for (i, v) in inputs.dc_sources.iter().enumerate() {
        put(&mut f, format!("dc/{i}/service"), v.service.as_str());
        put(&mut f, format!("dc/{i}/class"), v.class.service_class());
        put(
            &mut f,
            format!("dc/{i}/instance"),
            v.device_instance.into_option(),
        );
        put(&mut f, format!("dc/{i}/name"), v.custom_name.as_str());
        put(&mut f, format!("dc/{i}/current"), v.current_a.into_option());
    }
    for (i, b) in batteries.iter().enumerate() {
        put(&mut f, format!("bat/{i}/name"), b.name.as_str());
        put(&mut f, format!("bat/{i}/service"), b.service.as_str());
        put(&mut f, format!("bat/{i}/state"), state_name(b.state));
        flatten_reading(&mut f, i, &b.reading);
    }
    f
}

fn flatten_reading(f: &mut Flat, i: usize, reading: &BatteryReading) {
    let prefix = format!("bat/{i}");
    // The keys by concatenation: cheaper than formatting, a thousand of them a tick at 16×32.
    let key_of = |path: &str| {
        let mut key = String::with_capacity(prefix.len() + path.len());
        key.push_str(&prefix);
        key.push_str(path);
        key
    };
    let mut texts = None;
    for p in &BATTERY_PATHS {
        let key = key_of(p.path);
        match p.slot {
            Slot::Number(get, _) => put(f, key, get(reading)),
            Slot::Integer(get, _) => put(f, key, get(reading)),
            Slot::Text(get) => {
                // The table gives texts by `&mut` only: one copy per battery, when needed.
                let copy = texts.get_or_insert_with(|| reading.clone());
                put(f, key, get(copy).clone());
            }
        }
    }
    for (k, path) in alarm_paths().iter().enumerate() {
        put(f, key_of(path), reading.alarms[k]);
    }
    put(f, key_of("/cells"), reading.cell_voltages_v.len());
    for (k, v) in reading.cell_voltages_v.iter().enumerate() {
        put(f, key_of(&aggregator_core::reading::cell_path(k + 1)), *v);
    }
    for (k, bad) in reading.bad_values.iter().enumerate() {
        let value = format!("{}={}", bad.path, bad.problem);
        put(f, format!("bat/{i}/bad/{k}"), value);
    }
}

/// The published values of `outcome` under `prefix` (`out` for the live strategy, `shadow`
/// for the shadow).
pub fn flatten_outcome(f: &mut Flat, prefix: &str, outcome: &Outcome) {
    let p = PublishedValues::of(outcome);
    put(f, format!("{prefix}/cvl"), p.cvl_v);
    put(f, format!("{prefix}/ccl"), p.ccl_a);
    put(f, format!("{prefix}/dcl"), p.dcl_a);
    put(f, format!("{prefix}/soc"), p.soc_pct);
    put(f, format!("{prefix}/feed_in"), p.feed_in_write);
    put(f, format!("{prefix}/mode"), p.mode);
    put(f, format!("{prefix}/online"), outcome.online);
    if !outcome.lost.is_empty() {
        put(f, format!("{prefix}/lost"), outcome.lost.clone());
    }
    if !outcome.events.is_empty() {
        let events: Vec<String> = outcome.events.iter().map(|e| format!("{e:?}")).collect();
        put(f, format!("{prefix}/events"), events);
    }
}

/// A recorded tick read back: the engine's inputs and what was published.
pub struct Tick {
    /// The tick's number in the recording.
    pub tick: u64,
    /// The daemon's monotonic seconds.
    pub t_s: f64,
    pub batteries: Vec<Battery>,
    pub inputs: TickInputs,
    /// What the live strategy published.
    pub published: Option<PublishedValues>,
    /// What the shadow strategy computed, when one ran.
    pub shadow: Option<PublishedValues>,
}

fn num(f: &Flat, key: &str) -> Option<f64> {
    f.get(key).and_then(Json::as_f64)
}

fn int(f: &Flat, key: &str) -> Option<i64> {
    f.get(key).and_then(Json::as_i64)
}

fn text(f: &Flat, key: &str) -> Option<String> {
    f.get(key).and_then(Json::as_str).map(str::to_string)
}

fn published(f: &Flat, prefix: &str) -> Option<PublishedValues> {
    Some(PublishedValues {
        cvl_v: num(f, &format!("{prefix}/cvl"))?,
        ccl_a: num(f, &format!("{prefix}/ccl"))?,
        dcl_a: num(f, &format!("{prefix}/dcl"))?,
        soc_pct: num(f, &format!("{prefix}/soc")),
        feed_in_write: int(f, &format!("{prefix}/feed_in")),
        mode: text(f, &format!("{prefix}/mode")).unwrap_or_default(),
    })
}

fn parse_date(date: &str) -> Option<LocalDate> {
    let mut parts = date.split('-');
    let y = parts.next()?.parse().ok()?;
    let m = parts.next()?.parse().ok()?;
    let d = parts.next()?.parse().ok()?;
    LocalDate::new(y, m, d)
}

/// A flat tick back into the engine's inputs; an error names the tick and the key.
pub fn unflatten(tick: u64, f: &Flat) -> Result<Tick, Error> {
    let need =
        |key: &str| num(f, key).ok_or_else(|| bad(format!("tick {tick}: no number `{key}`")));
    let date = text(f, "date").unwrap_or_default();
    let date = parse_date(&date).ok_or_else(|| {
        bad(format!(
            "tick {tick}: `date` {date:?} is not a date (YYYY-MM-DD)"
        ))
    })?;
    let mut inputs = TickInputs {
        cells: need("in/cells")? as u32,
        expected: need("in/expected")? as u32,
        left_out: f
            .get("in/left_out")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        vebus: Vec::new(),
        solar_chargers: Vec::new(),
        smartshunts: Vec::new(),
        dc_sources: Vec::new(),
        monitor_soc: num(f, "in/monitor_soc"),
        low_soc: int(f, "in/low_soc"),
        feed_in_setting: int(f, "in/feed_in_setting"),
        date,
        dt_s: need("dt")?,
    };
    let opt_i32 = |key: String| int(f, &key).map(|v| v as i32).into();
    let each = |prefix: &str| {
        (0..)
            .map_while(|i| text(f, &format!("{prefix}/{i}/service")).map(|s| (i, s)))
            .collect::<Vec<_>>()
    };
    for (i, service) in each("vebus") {
        inputs.vebus.push(VebusView {
            service: service.into(),
            connected: opt_i32(format!("vebus/{i}/connected")),
            current_a: num(f, &format!("vebus/{i}/current")).into(),
        });
    }
    for (i, service) in each("solar") {
        inputs.solar_chargers.push(SolarChargerView {
            service: service.into(),
            current_a: num(f, &format!("solar/{i}/current")).into(),
        });
    }
    for (i, service) in each("shunt") {
        let class = match text(f, &format!("shunt/{i}/class")).as_deref() {
            Some("dcload") => ShuntClass::DcLoad,
            _ => ShuntClass::Battery,
        };
        inputs.smartshunts.push(ShuntView {
            service: service.into(),
            class,
            device_instance: opt_i32(format!("shunt/{i}/instance")),
            custom_name: text(f, &format!("shunt/{i}/name"))
                .unwrap_or_default()
                .into(),
            current_a: num(f, &format!("shunt/{i}/current")).into(),
        });
    }
    for (i, service) in each("dc") {
        let class = text(f, &format!("dc/{i}/class"))
            .and_then(|c| DcClass::from_service_class(&c))
            .ok_or_else(|| bad(format!("tick {tick}: `dc/{i}/class` is no DC device class")))?;
        inputs.dc_sources.push(DcSourceView {
            service: service.into(),
            class,
            device_instance: opt_i32(format!("dc/{i}/instance")),
            custom_name: text(f, &format!("dc/{i}/name")).unwrap_or_default().into(),
            current_a: num(f, &format!("dc/{i}/current")).into(),
        });
    }
    let mut batteries = Vec::new();
    for i in 0.. {
        let Some(name) = text(f, &format!("bat/{i}/name")) else {
            break;
        };
        let state = text(f, &format!("bat/{i}/state"))
            .and_then(|s| state_of(&s))
            .ok_or_else(|| {
                bad(format!(
                    "tick {tick}: `bat/{i}/state` is not online/stale/lost"
                ))
            })?;
        batteries.push(Battery {
            name,
            service: text(f, &format!("bat/{i}/service")).unwrap_or_default(),
            state,
            reading: unflatten_reading(f, i),
        });
    }
    Ok(Tick {
        tick,
        t_s: need("t")?,
        batteries,
        inputs,
        published: published(f, "out"),
        shadow: published(f, "shadow"),
    })
}

fn unflatten_reading(f: &Flat, i: usize) -> BatteryReading {
    let mut r = BatteryReading::default();
    for p in &BATTERY_PATHS {
        let key = format!("bat/{i}{}", p.path);
        match p.slot {
            Slot::Number(_, set) => *set(&mut r) = num(f, &key),
            Slot::Integer(_, set) => *set(&mut r) = int(f, &key),
            Slot::Text(set) => *set(&mut r) = text(f, &key),
        }
    }
    for (k, path) in alarm_paths().iter().enumerate() {
        r.alarms[k] = int(f, &format!("bat/{i}{path}"));
    }
    let cells = int(f, &format!("bat/{i}/cells")).unwrap_or(0).max(0) as usize;
    r.cell_voltages_v = (1..=cells)
        .map(|k| num(f, &format!("bat/{i}/Voltages/Cell{k}")))
        .collect();
    for k in 0.. {
        let Some(bad) = text(f, &format!("bat/{i}/bad/{k}")) else {
            break;
        };
        let (path, problem) = bad.split_once('=').unwrap_or((&bad, ""));
        r.bad_values.push(BadValue {
            path: path.to_string(),
            problem: problem.to_string(),
        });
    }
    r
}

/// The delta line of `now` against `before`: one walk through both maps in key order, the
/// line written as it goes (the tick's hot path: no map is built for it).
fn delta_line(tick: u64, before: &Flat, now: &Flat) -> String {
    use std::cmp::Ordering;
    let mut line = String::with_capacity(256);
    let _ = write!(line, "{{\"tick\":{tick},\"set\":{{");
    let mut gone = Vec::new();
    let mut first = true;
    let mut set = |line: &mut String, k: &String, v: &Json| {
        if !std::mem::take(&mut first) {
            line.push(',');
        }
        // Writing JSON into a String cannot fail.
        let _ = serde_json::to_writer(string_writer(line), k);
        line.push(':');
        let _ = serde_json::to_writer(string_writer(line), v);
    };
    let (mut a, mut b) = (before.iter().peekable(), now.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((ka, _)), None) => {
                gone.push(*ka);
                a.next();
            }
            (None, Some((kb, vb))) => {
                set(&mut line, kb, vb);
                b.next();
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                Ordering::Less => {
                    gone.push(*ka);
                    a.next();
                }
                Ordering::Greater => {
                    set(&mut line, kb, vb);
                    b.next();
                }
                Ordering::Equal => {
                    if va != vb {
                        set(&mut line, kb, vb);
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    line.push('}');
    if !gone.is_empty() {
        line.push_str(",\"gone\":");
        let _ = serde_json::to_writer(string_writer(&mut line), &gone);
    }
    line.push('}');
    line
}

/// A `String` as an `io::Write` for serde_json, which writes valid UTF-8 only.
fn string_writer(line: &mut String) -> StringWriter<'_> {
    StringWriter(line)
}

struct StringWriter<'a>(&'a mut String);

impl std::io::Write for StringWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = std::str::from_utf8(buf)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.0.push_str(text);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn full_line(tick: u64, now: &Flat) -> String {
    json!({ "tick": tick, "full": now }).to_string()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

/// A closed run of [`FULL_EVERY`] ticks, compressed.
struct Chunk {
    /// The daemon's seconds at its last tick.
    last_s: f64,
    gz: Vec<u8>,
}

/// The recording in memory.
pub struct Recorder {
    keep_s: f64,
    max_bytes: usize,
    /// The config's text, for the header.
    config_text: String,
    /// The shadow's config text (the config with the shadow's strategy), for the header.
    shadow_config: Option<String>,
    chunks: VecDeque<Chunk>,
    chunk_bytes: usize,
    /// The open run: its lines, a full one first.
    open: String,
    open_ticks: u64,
    previous: Flat,
    next_tick: u64,
}

impl Recorder {
    /// A recorder keeping `keep_s` seconds within about `max_bytes`; `config_text` goes into
    /// the header of each file.
    pub fn new(keep_s: f64, max_bytes: usize, config_text: String) -> Self {
        Self {
            keep_s,
            max_bytes,
            config_text,
            shadow_config: None,
            chunks: VecDeque::new(),
            chunk_bytes: 0,
            open: String::new(),
            open_ticks: 0,
            previous: Flat::new(),
            next_tick: 0,
        }
    }

    /// With the shadow's config text in the header (`shadow_config`).
    pub fn with_shadow_config(mut self, text: String) -> Self {
        self.shadow_config = Some(text);
        self
    }

    /// Adds one tick (its `t` is the daemon's seconds).
    pub fn push(&mut self, tick: Flat) {
        let now_s = num(&tick, "t").unwrap_or(0.0);
        let n = self.next_tick;
        self.next_tick += 1;
        let line = if self.open_ticks == 0 {
            full_line(n, &tick)
        } else {
            delta_line(n, &self.previous, &tick)
        };
        self.open.push_str(&line);
        self.open.push('\n');
        self.open_ticks += 1;
        self.previous = tick;
        if self.open_ticks >= FULL_EVERY {
            let gz = gzip(&self.open);
            self.chunk_bytes += gz.len();
            self.chunks.push_back(Chunk { last_s: now_s, gz });
            self.open.clear();
            self.open_ticks = 0;
        }
        self.forget(now_s);
    }

    /// Drops the oldest runs: those older than `keep`, or beyond the memory bound.
    fn forget(&mut self, now_s: f64) {
        while let Some(first) = self.chunks.front() {
            let old = now_s - first.last_s > self.keep_s;
            let over = self.chunk_bytes + self.open.capacity() > self.max_bytes;
            if !(old || over) {
                break;
            }
            self.chunk_bytes -= first.gz.len();
            self.chunks.pop_front();
        }
    }

    /// Bytes held now (compressed runs, the open run's text, the last tick's map not counted).
    pub fn bytes(&self) -> usize {
        self.chunk_bytes + self.open.capacity() + self.chunks.len() * std::mem::size_of::<Chunk>()
    }

    /// Ticks recorded since start.
    pub fn ticks(&self) -> u64 {
        self.next_tick
    }

    /// Whether the next tick starts a full line: the engine's saved state goes into it (key
    /// `state`), so that a replay of a recording whose start was dropped starts where the
    /// device was.
    pub fn wants_state(&self) -> bool {
        self.open_ticks == 0
    }

    /// Ticks held now.
    pub fn kept_ticks(&self) -> u64 {
        self.chunks.len() as u64 * FULL_EVERY + self.open_ticks
    }

    /// The file's bytes: the header, the runs kept and the open run.
    pub fn file_bytes(&self, reason: &str) -> Vec<u8> {
        let header = json!({
            "format": FORMAT,
            "version": VERSION,
            "program": env!("CARGO_PKG_VERSION"),
            "reason": reason,
            "full_every": FULL_EVERY,
            "config": self.config_text,
            "shadow_config": self.shadow_config,
        });
        let mut bytes = gzip(&format!("{header}\n"));
        for chunk in &self.chunks {
            bytes.extend_from_slice(&chunk.gz);
        }
        if !self.open.is_empty() {
            bytes.extend_from_slice(&gzip(&self.open));
        }
        bytes
    }

    /// Saves the recording into `dir` as `recording-<time>-<reason>.jsonl.gz`, keeping at
    /// most `max_files` recordings there (the oldest removed).
    pub fn save(&self, dir: &Path, reason: &str, max_files: u32) -> std::io::Result<PathBuf> {
        let slug: String = reason
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let path = dir.join(format!("recording-{}-{slug}.jsonl.gz", wall_clock_stamp()));
        crate::state_file::write_recording(&path, &self.file_bytes(reason), max_files)?;
        Ok(path)
    }
}

/// Milliseconds since the epoch, for file names (sortable; the recording itself holds only
/// the daemon's monotonic seconds).
fn wall_clock_stamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}{:03}", now.as_secs(), now.subsec_millis())
}

/// A recording read back.
pub struct Recording {
    /// The header line.
    pub header: Json,
    /// The config text recorded.
    pub config: String,
    /// The shadow's config text, when a shadow ran.
    pub shadow_config: Option<String>,
    /// The ticks, each as a whole flat map, with its number.
    pub ticks: Vec<(u64, Flat)>,
    /// Why the file ends early: the position (line, and byte of the decompressed text) and
    /// what is wrong; the ticks before it are usable.
    pub cut: Option<String>,
}

/// Reads a recording; an error (naming the file and position) when not even its header is
/// usable.
pub fn read(path: &Path) -> Result<Recording, Error> {
    let in_file = |message: String| Error::Recording {
        file: Some(path.to_path_buf()),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| in_file(e.to_string()))?;
    read_from(file).map_err(|e| match e {
        Error::Recording {
            file: None,
            message,
        } => in_file(message),
        other => other,
    })
}

/// A recording's error at a position (the file is added by [`read`]).
fn bad(message: String) -> Error {
    Error::Recording {
        file: None,
        message,
    }
}

/// Reads a recording from its gzip bytes.
pub fn read_from(input: impl Read) -> Result<Recording, Error> {
    let mut reader = BufReader::new(MultiGzDecoder::new(input));
    let mut line = String::new();
    let mut byte = 0u64;
    let header = match reader.read_line(&mut line) {
        Ok(0) => return Err(bad("empty: no header line".into())),
        Ok(n) => {
            byte += n as u64;
            serde_json::from_str::<Json>(&line)
                .map_err(|e| bad(format!("line 1: not a recording header ({e})")))?
        }
        Err(e) => return Err(bad(format!("line 1: not a gzip file of JSON lines ({e})"))),
    };
    if header["format"] != FORMAT {
        return Err(bad(format!("line 1: `format` is not {FORMAT:?}")));
    }
    match header["version"].as_u64() {
        Some(VERSION) => {}
        other => {
            return Err(bad(format!(
                "line 1: format version {} (this program reads version {VERSION})",
                other.map_or("missing".to_string(), |v| v.to_string())
            )))
        }
    }
    let config = header["config"].as_str().unwrap_or_default().to_string();
    let shadow_config = header["shadow_config"].as_str().map(str::to_string);
    let mut ticks = Vec::new();
    let mut current: Option<Flat> = None;
    let mut cut = None;
    let mut number = 1u64;
    loop {
        line.clear();
        number += 1;
        let at = format!("line {number} (byte {byte} of the decompressed text)");
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(n) => byte += n as u64,
            Err(e) => {
                cut = Some(format!("{at}: the file is cut or damaged ({e})"));
                break;
            }
        }
        if !line.ends_with('\n') {
            cut = Some(format!("{at}: the file ends inside a line"));
            break;
        }
        let parsed: Json = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                cut = Some(format!("{at}: not JSON ({e})"));
                break;
            }
        };
        let Some(tick) = parsed["tick"].as_u64() else {
            cut = Some(format!("{at}: no `tick`"));
            break;
        };
        if let Some(full) = parsed["full"].as_object() {
            current = Some(full.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        } else if let (Some(set), Some(flat)) = (parsed["set"].as_object(), current.as_mut()) {
            for (k, v) in set {
                flat.insert(k.clone(), v.clone());
            }
            for gone in parsed["gone"].as_array().into_iter().flatten() {
                if let Some(k) = gone.as_str() {
                    flat.remove(k);
                }
            }
        } else {
            cut = Some(format!("{at}: neither a full line nor a delta after one"));
            break;
        }
        if let Some(flat) = &current {
            ticks.push((tick, flat.clone()));
        }
    }
    Ok(Recording {
        header,
        config,
        shadow_config,
        ticks,
        cut,
    })
}

/// What makes the daemon save a recording this tick, if anything: from the tick's outcome,
/// what was published the tick before and how many batteries were lost then.
pub fn happening(
    save_on: &SaveOn,
    outcome: &Outcome,
    before: Option<&PublishedValues>,
    lost_before: usize,
) -> Option<&'static str> {
    let any = |f: fn(&Event) -> bool| outcome.events.iter().any(f);
    if save_on.battery_lost && outcome.lost.len() > lost_before {
        return Some("battery lost");
    }
    if save_on.strategy_fault && any(|e| matches!(e, Event::StrategyFault(_))) {
        return Some("strategy fault");
    }
    if save_on.feed_in && any(|e| matches!(e, Event::FeedIn(_))) {
        return Some("feed-in");
    }
    if save_on.bound {
        let stops = |now: f64, was: f64| now <= 0.0 && was > 0.0;
        let stopped = before.is_some_and(|b| {
            stops(outcome.limits.ccl_a, b.ccl_a) || stops(outcome.limits.dcl_a, b.dcl_a)
        });
        if stopped || any(|e| matches!(e, Event::Clamped(_))) {
            return Some("bound");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battery(i: usize, v: f64) -> Battery {
        Battery {
            name: format!("P{i}"),
            service: format!("com.victronenergy.battery.ttyUSB{i}"),
            state: BatteryState::Online,
            reading: BatteryReading {
                voltage_v: Some(v),
                current_a: Some(1.5),
                installed_capacity_ah: Some(280.0),
                charge_mode: Some("Bulk".into()),
                cells_per_battery: Some(16),
                cell_voltages_v: (0..16).map(|k| Some(3.3 + k as f64 * 0.001)).collect(),
                ..BatteryReading::default()
            },
        }
    }

    fn inputs(dt_s: f64) -> TickInputs {
        TickInputs {
            cells: 16,
            expected: 2,
            left_out: Vec::new(),
            vebus: vec![VebusView {
                service: "com.victronenergy.vebus.ttyS4".into(),
                connected: Some(1).into(),
                current_a: Some(-3.5).into(),
            }],
            solar_chargers: Vec::new(),
            smartshunts: Vec::new(),
            dc_sources: vec![DcSourceView {
                service: "com.victronenergy.dcdc.ttyS5".into(),
                class: DcClass::Dcdc,
                device_instance: Some(7).into(),
                custom_name: "Orion".into(),
                current_a: None.into(),
            }],
            monitor_soc: None,
            low_soc: Some(10),
            feed_in_setting: Some(1),
            date: LocalDate::new(2026, 6, 15).expect("date"),
            dt_s,
        }
    }

    fn tick_at(t: f64) -> Flat {
        let bats = [battery(0, 53.0 + t * 0.01), battery(1, 53.1)];
        flatten_inputs(t, &bats, &inputs(1.0))
    }

    #[test]
    fn a_tick_round_trips_through_the_flat_map() {
        let bats = [battery(0, 53.0), battery(1, 53.1)];
        let f = flatten_inputs(5.0, &bats, &inputs(1.0));
        let back = unflatten(3, &f).expect("tick");
        assert_eq!(back.batteries, bats);
        assert_eq!(back.inputs.vebus, inputs(1.0).vebus);
        assert_eq!(back.inputs.dc_sources, inputs(1.0).dc_sources);
        assert_eq!(back.inputs.date, inputs(1.0).date);
        assert_eq!(back.inputs.low_soc, Some(10));
        assert_eq!(back.t_s, 5.0);
        assert!(back.published.is_none());
    }

    #[test]
    fn a_saved_recording_reads_back_every_tick_kept() {
        let mut r = Recorder::new(3600.0, 1 << 20, "strategy: {plugin: x}\n".into());
        for t in 0..150 {
            r.push(tick_at(t as f64));
        }
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        assert!(rec.cut.is_none());
        assert_eq!(rec.config, "strategy: {plugin: x}\n");
        assert_eq!(rec.ticks.len(), 150);
        for (t, (n, flat)) in rec.ticks.iter().enumerate() {
            assert_eq!(*n, t as u64);
            assert_eq!(flat, &tick_at(t as f64), "tick {t}");
        }
    }

    #[test]
    fn keep_drops_the_oldest_runs_and_memory_stays_bounded() {
        let mut r = Recorder::new(120.0, 1 << 20, String::new());
        for t in 0..1000 {
            r.push(tick_at(t as f64));
        }
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        let first = rec.ticks.first().expect("ticks").0;
        assert!(
            (1000 - 120 - 2 * FULL_EVERY..=1000 - 120).contains(&first),
            "{first}"
        );
        assert_eq!(rec.ticks.last().expect("ticks").0, 999);
        let bound = 20_000;
        let mut small = Recorder::new(1e9, bound, String::new());
        let mut most = 0;
        for t in 0..5000 {
            small.push(tick_at(t as f64));
            most = most.max(small.bytes());
        }
        assert!(most <= bound + 4096, "{most} bytes held, bound {bound}");
        assert!(!small.chunks.is_empty(), "the latest runs are kept");
    }

    /// A bank of `packs` × `cells` whose every value moves every tick (a BMS's 1 mV and
    /// 0.01 A noise), the worst case for the deltas.
    fn noisy_tick(t: u64, packs: usize, cells: usize, seed: &mut u64) -> Flat {
        let mut noise = || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) as f64 / (1u64 << 31) as f64
        };
        let bats: Vec<Battery> = (0..packs)
            .map(|i| {
                let mut b = battery(i, 0.0);
                b.reading.cell_voltages_v = (0..cells)
                    .map(|_| Some((3300.0 + (noise() * 20.0).round()) / 1000.0))
                    .collect();
                b.reading.voltage_v = Some((52_800.0 + (noise() * 100.0).round()) / 1000.0);
                b.reading.current_a = Some((1000.0 + (noise() * 500.0).round()) / 100.0);
                b.reading.soc_pct = Some(50.0 + t as f64 / 3600.0);
                b
            })
            .collect();
        flatten_inputs(t as f64, &bats, &inputs(1.0))
    }

    /// The shipped bound (`record.max_memory_kib`: 8192) holds the shipped 30 minutes of a
    /// 16 × 32 bank whose every value moves every tick; run longer than that, the oldest
    /// minutes go and the memory stays put.
    #[test]
    fn a_16_by_32_bank_keeps_30_minutes_within_the_memory_bound() {
        let bound = crate::config::Record::default().max_memory_kib as usize * 1024;
        let mut r = Recorder::new(1800.0, bound, String::new());
        let mut seed = 7;
        let mut most = 0;
        let (mut making, mut pushing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for t in 0..2400 {
            let started = std::time::Instant::now();
            let tick = noisy_tick(t, 16, 32, &mut seed);
            let made = std::time::Instant::now();
            r.push(tick);
            making += made - started;
            pushing += made.elapsed();
            most = most.max(r.bytes());
        }
        eprintln!(
            "per tick: making {:?}, pushing {:?}",
            making / 2400,
            pushing / 2400
        );
        let kept = r.kept_ticks();
        eprintln!(
            "16x32, every value moving: at most {most} bytes held, {} compressed bytes per \
             tick, {kept} ticks kept",
            r.chunk_bytes / r.chunks.len().max(1) / FULL_EVERY as usize
        );
        assert!(most <= bound, "{most} bytes held, bound {bound}");
        assert!(
            (1800..=1800 + 2 * FULL_EVERY).contains(&kept),
            "{kept} ticks kept: record.keep is 30 min"
        );
    }

    #[test]
    fn a_cut_file_reads_up_to_the_cut_with_its_position() {
        let mut r = Recorder::new(3600.0, 1 << 20, String::new());
        for t in 0..200 {
            r.push(tick_at(t as f64));
        }
        let bytes = r.file_bytes("test");
        let cut = &bytes[..bytes.len() * 2 / 3];
        let rec = read_from(cut).expect("header readable");
        let why = rec.cut.expect("cut reported");
        assert!(why.starts_with("line "), "{why}");
        assert!(why.contains("byte "), "{why}");
        assert!(!rec.ticks.is_empty() && rec.ticks.len() < 200);
        for (n, flat) in &rec.ticks {
            assert_eq!(flat, &tick_at(*n as f64));
        }
    }

    #[test]
    fn happenings_are_what_save_on_names() {
        use aggregator_core::feedin::FeedInEvent;
        let outcome = |ccl_a: f64, lost: &[&str], events: Vec<Event>| Outcome {
            merged: Default::default(),
            online: 1,
            lost: lost.iter().map(|s| s.to_string()).collect(),
            left_out: Vec::new(),
            missing: 0,
            current_a: None,
            power_w: None,
            soc_pct: None,
            capacity_ah: None,
            consumed_ah: None,
            time_to_go_s: None,
            limits: aggregator_core::envelope::Limits {
                cvl_v: 55.0,
                ccl_a,
                dcl_a: 100.0,
            },
            mode: String::new(),
            feed_in_write: None,
            save_state: false,
            events,
        };
        let all = SaveOn::default();
        let before = PublishedValues {
            ccl_a: 50.0,
            dcl_a: 100.0,
            ..PublishedValues::default()
        };
        let quiet = outcome(50.0, &[], Vec::new());
        assert_eq!(happening(&all, &quiet, Some(&before), 0), None);
        let lost = outcome(50.0, &["B"], Vec::new());
        assert_eq!(
            happening(&all, &lost, Some(&before), 0),
            Some("battery lost")
        );
        assert_eq!(happening(&all, &lost, Some(&before), 1), None, "still lost");
        let stop = outcome(0.0, &[], Vec::new());
        assert_eq!(happening(&all, &stop, Some(&before), 0), Some("bound"));
        let fault = outcome(0.0, &[], vec![Event::StrategyFault("x".into())]);
        assert_eq!(happening(&all, &fault, None, 0), Some("strategy fault"));
        let feed_in = outcome(50.0, &[], vec![Event::FeedIn(FeedInEvent::Restoring(1))]);
        assert_eq!(happening(&all, &feed_in, None, 0), Some("feed-in"));
        let none = SaveOn {
            battery_lost: false,
            bound: false,
            strategy_fault: false,
            feed_in: false,
        };
        for o in [&lost, &stop, &fault, &feed_in] {
            assert_eq!(happening(&none, o, Some(&before), 0), None);
        }
    }

    #[test]
    fn another_version_or_no_recording_is_refused() {
        let other = gzip("{\"format\":\"dbus-aggregate-batteries recording\",\"version\":2}\n");
        let err = read_from(&other[..]).err().expect("refused").to_string();
        assert_eq!(
            err,
            "line 1: format version 2 (this program reads version 1)"
        );
        let err = read_from(&b"plain text\n"[..])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.starts_with("line 1:"), "{err}");
    }
}
