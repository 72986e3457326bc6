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
//! In memory the ticks are not text: each tick is walked once, in a fixed order of keys (the
//! schema, made anew only when the bank's shape changes), and only the values that changed
//! since the tick before are written, in a compact binary form (a number a BMS sends, in
//! thousandths, as the change from its value before: a cell's millivolt or two in a byte).
//! Runs of [`FULL_EVERY`] ticks, each starting from nothing as a full line does, are dropped
//! oldest first once older than `record.keep` or beyond `record.max_memory_kib`. The JSON
//! lines are written and compressed only when a recording is saved, off the tick's thread.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aggregator_core::engine::{Event, Outcome, TickInputs};
use aggregator_core::presence::Battery;
use aggregator_core::reading::{
    alarm_paths, BadValue, BatteryReading, Slot, BATTERY_PATHS, MAX_CELLS_PER_PACK,
};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use plugin_api::{
    BatteryState, DcClass, DcClass_NE, DcSourceView, LocalDate, ShuntClass, ShuntClass_NE,
    ShuntView, SolarChargerView, VebusView,
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
/// The reason of a recording asked for (the `record` command, SIGUSR1).
pub const ASKED: &str = "asked";

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

/// A key of the flat map, as the walk through a tick names it: rendered as text only when
/// the recorder's schema changes, compared as it is at every tick.
#[derive(Clone, Copy, Debug, Eq)]
enum Key {
    /// `t`, `in/cells`, ...
    Plain(&'static str),
    /// `<prefix>/<field>`: `out/cvl`, `shadow/mode`.
    Pair(&'static str, &'static str),
    /// `<group>/<i><path>`: `vebus/0/current`, `bat/3/Dc/0/Voltage` (the path starts with `/`).
    Item(&'static str, usize, &'static str),
    /// `bat/<i>/Voltages/Cell<k>`, `k` from 1.
    Cell(usize, usize),
    /// `bat/<i>/bad/<k>`, `k` from 0.
    Bad(usize, usize),
}

/// The same static text: the same address (as the walk's keys are, tick after tick: there is
/// one copy of the walk, taking any [`Sink`] as `dyn`), else the same characters.
#[inline(always)]
fn same_text(a: &'static str, b: &'static str) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl PartialEq for Key {
    // Compared for every value of every tick: addresses first, inlined (a call cost more
    // than the comparison).
    #[inline(always)]
    fn eq(&self, other: &Self) -> bool {
        match (*self, *other) {
            (Key::Plain(a), Key::Plain(b)) => same_text(a, b),
            (Key::Pair(a, x), Key::Pair(b, y)) => same_text(a, b) && same_text(x, y),
            (Key::Item(a, i, x), Key::Item(b, j, y)) => {
                i == j && same_text(x, y) && same_text(a, b)
            }
            (Key::Cell(i, k), Key::Cell(j, l)) | (Key::Bad(i, k), Key::Bad(j, l)) => {
                i == j && k == l
            }
            _ => false,
        }
    }
}

// By the same texts and numbers as `eq` compares.
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match *self {
            Key::Plain(a) => (0u8, a).hash(state),
            Key::Pair(a, x) => (1u8, a, x).hash(state),
            Key::Item(a, i, x) => (2u8, a, i, x).hash(state),
            Key::Cell(i, k) => (3u8, i, k).hash(state),
            Key::Bad(i, k) => (4u8, i, k).hash(state),
        }
    }
}

impl Key {
    fn render(self) -> String {
        match self {
            Key::Plain(key) => key.to_string(),
            Key::Pair(prefix, field) => format!("{prefix}/{field}"),
            Key::Item(group, i, path) => format!("{group}/{i}{path}"),
            Key::Cell(i, k) => format!("bat/{i}{}", aggregator_core::reading::cell_path(k)),
            Key::Bad(i, k) => format!("bat/{i}/bad/{k}"),
        }
    }
}

/// What the walk through a tick hands each value to: a flat map, the recorder's schema, or
/// its encoder. The walk hands over every key it may have, absent values as `None`, so that
/// the keys depend on the bank's shape alone (how many devices, batteries, cells).
trait Sink {
    fn num(&mut self, key: Key, value: Option<f64>);
    fn int(&mut self, key: Key, value: Option<i64>);
    fn flag(&mut self, key: Key, value: Option<bool>);
    fn text(&mut self, key: Key, value: Option<&str>);
    /// A JSON array or object, as its text.
    fn json(&mut self, key: Key, value: Option<&str>);
}

/// A JSON array of texts, when there are any.
fn json_list<T: AsRef<str>>(items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| {
        let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
        serde_json::to_string(&items).unwrap_or_default()
    })
}

/// Why the shadow's limits are missing from a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowMissing {
    /// It got the tick's inputs but gave no answer within its budget.
    Late,
    /// It was still on an earlier tick: it did not get this one's inputs.
    Busy,
    /// Its thread has ended.
    Stopped,
}

impl ShadowMissing {
    /// The value of the key `shadow/skipped`.
    pub fn name(self) -> &'static str {
        match self {
            ShadowMissing::Late => "late",
            ShadowMissing::Busy => "busy",
            ShadowMissing::Stopped => "stopped",
        }
    }
}

/// One tick as the recorder takes it: the engine's inputs and what came out.
pub struct TickRecord<'a> {
    /// The daemon's monotonic seconds.
    pub now_s: f64,
    pub batteries: &'a [Battery],
    pub inputs: &'a TickInputs,
    /// Whether the engine counted itself as publishing (feed-in causes act only then).
    pub publishing: Option<bool>,
    /// The engine's state before the tick, when the recorder asks for it
    /// ([`Recorder::wants_state`]).
    pub state: Option<&'a aggregator_core::state::State>,
    /// The engine's memory besides its state before the tick, with the state.
    pub memory: Option<&'a aggregator_core::memory::Memory>,
    /// What the live strategy published.
    pub out: Option<&'a Outcome>,
    /// The shadow strategy's outcome, or why it has none; `None` without a shadow.
    pub shadow: Option<Result<&'a Outcome, ShadowMissing>>,
}

impl TickRecord<'_> {
    /// The tick's inputs alone.
    pub fn inputs<'a>(
        now_s: f64,
        batteries: &'a [Battery],
        inputs: &'a TickInputs,
    ) -> TickRecord<'a> {
        TickRecord {
            now_s,
            batteries,
            inputs,
            publishing: None,
            state: None,
            memory: None,
            out: None,
            shadow: None,
        }
    }

    /// What decides the tick's keys besides the walk's code, into `out`: how many sources of
    /// each kind and batteries there are, each battery's cells and values left out, and which
    /// outcomes the tick has. Two ticks of one shape have the same keys in the same order
    /// (debug builds check it at every tick: see `Encoder::slot`).
    fn shape(&self, out: &mut Vec<usize>) {
        let inputs = self.inputs;
        out.clear();
        out.extend([
            inputs.vebus.len(),
            inputs.solar_chargers.len(),
            inputs.smartshunts.len(),
            inputs.dc_sources.len(),
            self.batteries.len(),
            usize::from(self.out.is_some()) | usize::from(self.shadow.is_some()) << 1,
        ]);
        for b in self.batteries {
            out.extend([b.reading.cell_voltages_v.len(), b.reading.bad_values.len()]);
        }
    }

    /// Every key of the tick, in one fixed order, to `sink`. One copy of the walk for every
    /// sink (`dyn`), so that each key's texts have one address: the encoder compares them
    /// at every tick.
    fn walk(&self, sink: &mut dyn Sink) {
        let inputs = self.inputs;
        sink.num(Key::Plain("t"), Some(self.now_s));
        sink.num(Key::Plain("dt"), Some(inputs.dt_s));
        let d = inputs.date;
        let date = DateText::of(d.year, d.month, d.day);
        sink.text(Key::Plain("date"), Some(date.as_str()));
        sink.int(Key::Plain("in/cells"), Some(inputs.cells.into()));
        sink.int(Key::Plain("in/expected"), Some(inputs.expected.into()));
        sink.json(
            Key::Plain("in/left_out"),
            json_list(&inputs.left_out).as_deref(),
        );
        sink.num(Key::Plain("in/monitor_soc"), inputs.monitor_soc);
        sink.int(Key::Plain("in/low_soc"), inputs.low_soc);
        sink.int(Key::Plain("in/feed_in_setting"), inputs.feed_in_setting);
        sink.flag(Key::Plain("in/publishing"), self.publishing);
        let state = self
            .state
            .map(|s| serde_json::to_string(s).unwrap_or_default());
        sink.json(Key::Plain("state"), state.as_deref());
        let memory = self
            .memory
            .map(|m| serde_json::to_string(m).unwrap_or_default());
        sink.json(Key::Plain("memory"), memory.as_deref());
        let int32 = |v: Option<i32>| v.map(i64::from);
        for (i, v) in inputs.vebus.iter().enumerate() {
            sink.text(Key::Item("vebus", i, "/service"), Some(&v.service));
            sink.int(
                Key::Item("vebus", i, "/connected"),
                int32(v.connected.into_option()),
            );
            sink.num(Key::Item("vebus", i, "/current"), v.current_a.into_option());
        }
        for (i, v) in inputs.solar_chargers.iter().enumerate() {
            sink.text(Key::Item("solar", i, "/service"), Some(&v.service));
            sink.num(Key::Item("solar", i, "/current"), v.current_a.into_option());
        }
        for (i, v) in inputs.smartshunts.iter().enumerate() {
            // The host made the value: it knows its every variant.
            let class = match v.class.as_enum() {
                Ok(ShuntClass::Battery) => "battery",
                Ok(ShuntClass::DcLoad) | Err(_) => "dcload",
            };
            sink.text(Key::Item("shunt", i, "/service"), Some(&v.service));
            sink.text(Key::Item("shunt", i, "/class"), Some(class));
            sink.int(
                Key::Item("shunt", i, "/instance"),
                int32(v.device_instance.into_option()),
            );
            sink.text(Key::Item("shunt", i, "/name"), Some(&v.custom_name));
            sink.num(Key::Item("shunt", i, "/current"), v.current_a.into_option());
        }
        for (i, v) in inputs.dc_sources.iter().enumerate() {
            sink.text(Key::Item("dc", i, "/service"), Some(&v.service));
            sink.text(
                Key::Item("dc", i, "/class"),
                v.class.as_enum().ok().map(|c| c.service_class()),
            );
            sink.int(
                Key::Item("dc", i, "/instance"),
                int32(v.device_instance.into_option()),
            );
            sink.text(Key::Item("dc", i, "/name"), Some(&v.custom_name));
            sink.num(Key::Item("dc", i, "/current"), v.current_a.into_option());
        }
        for (i, b) in self.batteries.iter().enumerate() {
            sink.text(Key::Item("bat", i, "/name"), Some(&b.name));
            sink.text(Key::Item("bat", i, "/service"), Some(&b.service));
            sink.text(Key::Item("bat", i, "/state"), Some(state_name(b.state)));
            walk_reading(sink, i, &b.reading);
        }
        for (prefix, outcome) in [("out", self.out.map(Ok)), ("shadow", self.shadow)] {
            let Some(outcome) = outcome else {
                continue;
            };
            let o = outcome.ok();
            let limits = o.map(|o| o.limits);
            sink.num(Key::Pair(prefix, "cvl"), limits.map(|l| l.cvl_v));
            sink.num(Key::Pair(prefix, "ccl"), limits.map(|l| l.ccl_a));
            sink.num(Key::Pair(prefix, "dcl"), limits.map(|l| l.dcl_a));
            sink.num(Key::Pair(prefix, "soc"), o.and_then(|o| o.soc_pct));
            sink.int(
                Key::Pair(prefix, "feed_in"),
                o.and_then(|o| o.feed_in_write),
            );
            sink.text(Key::Pair(prefix, "mode"), o.map(|o| o.mode.as_str()));
            sink.int(Key::Pair(prefix, "online"), o.map(|o| o.online.into()));
            let lost = o.and_then(|o| json_list(&o.lost));
            sink.json(Key::Pair(prefix, "lost"), lost.as_deref());
            let events = o.and_then(|o| {
                let events: Vec<String> = o.events.iter().map(|e| format!("{e:?}")).collect();
                json_list(&events)
            });
            sink.json(Key::Pair(prefix, "events"), events.as_deref());
            if prefix == "shadow" {
                let missing = outcome.err().map(ShadowMissing::name);
                sink.text(Key::Pair(prefix, "skipped"), missing);
            }
        }
    }
}

fn walk_reading(sink: &mut dyn Sink, i: usize, reading: &BatteryReading) {
    for p in &BATTERY_PATHS {
        let key = Key::Item("bat", i, p.path);
        match p.slot {
            Slot::Number(get, _) => sink.num(key, get(reading)),
            Slot::Integer(get, _) => sink.int(key, get(reading)),
            Slot::Text(get, _) => sink.text(key, get(reading)),
        }
    }
    for (k, path) in alarm_paths().iter().enumerate() {
        sink.int(Key::Item("bat", i, path), reading.alarms[k]);
    }
    let cells = reading.cell_voltages_v.len() as i64;
    sink.int(Key::Item("bat", i, "/cells"), Some(cells));
    for (k, v) in reading.cell_voltages_v.iter().enumerate() {
        sink.num(Key::Cell(i, k + 1), *v);
    }
    let mut bad = String::new();
    for (k, b) in reading.bad_values.iter().enumerate() {
        bad.clear();
        let _ = write!(bad, "{}={}", b.path, b.problem);
        sink.text(Key::Bad(i, k), Some(&bad));
    }
}

/// A date as `YYYY-MM-DD`, without allocating.
struct DateText([u8; 10]);

impl DateText {
    fn of(year: i32, month: u8, day: u8) -> Self {
        let mut text = *b"0000-00-00";
        let digits = |to: &mut [u8], mut n: u32| {
            for b in to.iter_mut().rev() {
                *b = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        digits(&mut text[0..4], year.clamp(0, 9999) as u32);
        digits(&mut text[5..7], u32::from(month));
        digits(&mut text[8..10], u32::from(day));
        Self(text)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("0000-00-00")
    }
}

/// A flat map of a tick: JSON values under their rendered keys, absent values left out.
impl Sink for Flat {
    fn num(&mut self, key: Key, value: Option<f64>) {
        // Non-finite numbers, which JSON cannot hold, are left out as absent.
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.insert(key.render(), v.into());
        }
    }

    fn int(&mut self, key: Key, value: Option<i64>) {
        if let Some(v) = value {
            self.insert(key.render(), v.into());
        }
    }

    fn flag(&mut self, key: Key, value: Option<bool>) {
        if let Some(v) = value {
            self.insert(key.render(), v.into());
        }
    }

    fn text(&mut self, key: Key, value: Option<&str>) {
        if let Some(v) = value {
            self.insert(key.render(), v.into());
        }
    }

    fn json(&mut self, key: Key, value: Option<&str>) {
        if let Some(v) = value.and_then(|v| serde_json::from_str::<Json>(v).ok()) {
            self.insert(key.render(), v);
        }
    }
}

/// The tick's inputs as the engine got them, as a flat map.
pub fn flatten_inputs(now_s: f64, batteries: &[Battery], inputs: &TickInputs) -> Flat {
    flatten(&TickRecord::inputs(now_s, batteries, inputs))
}

/// A whole tick as a flat map.
pub fn flatten(tick: &TickRecord) -> Flat {
    let mut flat = Flat::new();
    tick.walk(&mut flat);
    flat
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
            class: ShuntClass_NE::new(class),
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
            class: DcClass_NE::new(class),
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
            reading: unflatten_reading(f, i, tick)?,
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

fn unflatten_reading(f: &Flat, i: usize, tick: u64) -> Result<BatteryReading, Error> {
    let mut r = BatteryReading::default();
    for p in &BATTERY_PATHS {
        let key = format!("bat/{i}{}", p.path);
        match p.slot {
            Slot::Number(_, set) => *set(&mut r) = num(f, &key),
            Slot::Integer(_, set) => *set(&mut r) = int(f, &key),
            Slot::Text(_, set) => *set(&mut r) = text(f, &key),
        }
    }
    for (k, path) in alarm_paths().iter().enumerate() {
        r.alarms[k] = int(f, &format!("bat/{i}{path}"));
    }
    // No pack has more cells than the reading takes: a count beyond it is a damaged file, not
    // a reason to make a million cells.
    let key = format!("bat/{i}/cells");
    let count = int(f, &key).unwrap_or(0);
    let cells = usize::try_from(count)
        .ok()
        .filter(|&n| n as f64 <= MAX_CELLS_PER_PACK)
        .ok_or_else(|| {
            bad(format!(
                "tick {tick}: `{key}` is {count}, not a pack's count of cells (0 to \
                 {MAX_CELLS_PER_PACK})"
            ))
        })?;
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
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// The recording in memory: each tick as the values that changed since the tick before, in a
// compact binary form keyed by the schema (the list of keys); turned into the file's JSON
// lines and compressed only when saved, on a thread of its own.
//
// A tick is a list of operations, each a varint `skip << 4 | kind` (skip: how many slots
// of the schema are unchanged before this one) and the kind's bytes; kind 0 ends the tick.
// A run of ticks (a block) starts from all slots absent, so that it reads on its own.

/// Ends the tick.
const OP_END: u8 = 0;
/// The slot is absent now.
const OP_GONE: u8 = 1;
/// A number in thousandths, as a zigzag varint of the change from the slot's number before.
const OP_MILLI_DELTA: u8 = 2;
/// A number in thousandths, as a zigzag varint.
const OP_MILLI: u8 = 3;
/// A number as its 8 bytes (little-endian).
const OP_F64: u8 = 4;
/// An integer, as a zigzag varint.
const OP_INT: u8 = 5;
/// A text: its length as a varint, then its UTF-8 bytes.
const OP_TEXT: u8 = 6;
/// A JSON array or object: its text, as for [`OP_TEXT`].
const OP_JSON: u8 = 7;
const OP_FALSE: u8 = 8;
const OP_TRUE: u8 = 9;
/// The schema changes (a battery, device or cell came or went) from this tick on: a varint,
/// the index of the block's new schema. Only first in a tick.
const OP_SCHEMA: u8 = 10;

/// A slot's value: 16 bytes, as the encoder reads one for every value of every tick, from
/// memory gone cold since the last tick (its thousandths are worked out again where a change
/// needs them; a text, rarely changed, is behind a pointer).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::box_collection)] // A thin pointer: a `String` in place would make each slot 32 bytes.
enum Val {
    Absent,
    Num(f64),
    Int(i64),
    Flag(bool),
    Text(Box<String>),
    Json(Box<String>),
}

/// `value` in thousandths, when exactly that (what a BMS sends: 3.301 V, 10.37 A).
fn milli(value: f64) -> Option<i64> {
    let x = value * 1000.0;
    if x.is_nan() || x.abs() >= 9.0e15 {
        return None;
    }
    // `x.round()` (half away from zero) without the call it compiles to on ARMv7 and x86-64
    // (some fifty instructions, twice for every changed number of a tick): below 2^53 the
    // fraction `x - trunc(x)` is exact.
    let whole = x as i64;
    let fraction = x - whole as f64;
    let m = whole + i64::from(fraction >= 0.5) - i64::from(fraction <= -0.5);
    ((m as f64 / 1000.0).to_bits() == value.to_bits()).then_some(m)
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

/// Bytes of a block in memory that make no sense (what and where): a defect of the encoder,
/// reported in place of the ticks it spoils.
#[derive(Debug)]
struct Garbled(String);

impl std::fmt::Display for Garbled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Garbled {
    fn from(what: &str) -> Self {
        Self(what.to_string())
    }
}

impl From<String> for Garbled {
    fn from(what: String) -> Self {
        Self(what)
    }
}

/// A block's bytes, read forward.
struct Bytes<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn varint(&mut self) -> Result<u64, Garbled> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.bytes.get(self.at).ok_or("ends inside a value")?;
            self.at += 1;
            n |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err("a varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Garbled> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("ends inside a value")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn text(&mut self) -> Result<String, Garbled> {
        let n = self.varint()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a text not UTF-8".into())
    }
}

/// What a run needs to know of its ticks' keys: their shape, from which the keys follow
/// ([`Schema::keys`]), and how many there are. A schema is a few words, whatever the bank's
/// size: the keys are made again only when the shape changes and when a run is read back.
#[derive(Debug)]
struct Schema {
    /// The shape of the ticks ([`TickRecord::shape`]).
    shape: Vec<usize>,
    /// Their number of keys: the slots of a tick.
    len: usize,
}

/// Hands each key of a tick to a closure, its value left aside.
struct EachKey<F: FnMut(Key)>(F);

impl<F: FnMut(Key)> Sink for EachKey<F> {
    fn num(&mut self, key: Key, _: Option<f64>) {
        (self.0)(key);
    }
    fn int(&mut self, key: Key, _: Option<i64>) {
        (self.0)(key);
    }
    fn flag(&mut self, key: Key, _: Option<bool>) {
        (self.0)(key);
    }
    fn text(&mut self, key: Key, _: Option<&str>) {
        (self.0)(key);
    }
    fn json(&mut self, key: Key, _: Option<&str>) {
        (self.0)(key);
    }
}

/// A tick of a given shape with every value absent or empty: walked for the keys that every
/// tick of that shape has.
struct ShapedTick {
    batteries: Vec<Battery>,
    inputs: TickInputs,
    outcome: Outcome,
    /// Whether the tick has the live outcome, a shadow's.
    out: bool,
    shadow: bool,
}

impl ShapedTick {
    /// The tick of `shape`, as [`TickRecord::shape`] writes it; `None` for a shape it cannot
    /// have written.
    fn of(shape: &[usize]) -> Option<Self> {
        let [vebus, solar, shunts, dc, batteries, outcomes, per_battery @ ..] = shape else {
            return None;
        };
        if per_battery.len() != 2 * batteries {
            return None;
        }
        let inputs = TickInputs {
            cells: 0,
            expected: 0,
            left_out: Vec::new(),
            vebus: vec![
                VebusView {
                    service: "".into(),
                    connected: None.into(),
                    current_a: None.into(),
                };
                *vebus
            ],
            solar_chargers: vec![
                SolarChargerView {
                    service: "".into(),
                    current_a: None.into(),
                };
                *solar
            ],
            smartshunts: vec![
                ShuntView {
                    service: "".into(),
                    class: ShuntClass_NE::new(ShuntClass::Battery),
                    device_instance: None.into(),
                    custom_name: "".into(),
                    current_a: None.into(),
                };
                *shunts
            ],
            dc_sources: vec![
                DcSourceView {
                    service: "".into(),
                    class: DcClass_NE::new(DcClass::Dcdc),
                    device_instance: None.into(),
                    custom_name: "".into(),
                    current_a: None.into(),
                };
                *dc
            ],
            monitor_soc: None,
            low_soc: None,
            feed_in_setting: None,
            date: LocalDate::new(2000, 1, 1)?,
            dt_s: 0.0,
        };
        let batteries = (per_battery.chunks_exact(2))
            .map(|counts| Battery {
                name: String::new(),
                service: String::new(),
                state: BatteryState::Online,
                reading: BatteryReading {
                    cell_voltages_v: vec![None; counts[0]],
                    bad_values: vec![
                        BadValue {
                            path: String::new(),
                            problem: String::new(),
                        };
                        counts[1]
                    ],
                    ..BatteryReading::default()
                },
            })
            .collect();
        Some(Self {
            batteries,
            inputs,
            outcome: absent_outcome(),
            out: outcomes & 1 != 0,
            shadow: outcomes & 2 != 0,
        })
    }

    fn record(&self) -> TickRecord<'_> {
        TickRecord {
            out: self.out.then_some(&self.outcome),
            shadow: self.shadow.then_some(Ok(&self.outcome)),
            ..TickRecord::inputs(0.0, &self.batteries, &self.inputs)
        }
    }
}

/// An outcome with nothing in it: no values, limits of 0, no events.
fn absent_outcome() -> Outcome {
    Outcome {
        merged: Default::default(),
        online: 0,
        lost: Vec::new(),
        left_out: Vec::new(),
        missing: 0,
        current_a: None,
        power_w: None,
        soc_pct: None,
        capacity_ah: None,
        consumed_ah: None,
        time_to_go_s: None,
        limits: aggregator_core::envelope::Limits {
            cvl_v: 0.0,
            ccl_a: 0.0,
            dcl_a: 0.0,
        },
        mode: String::new(),
        feed_in_write: None,
        save_state: false,
        events: Vec::new(),
    }
}

impl Schema {
    fn of(tick: &TickRecord) -> Self {
        let mut len = 0;
        tick.walk(&mut EachKey(|_| len += 1));
        let mut shape = Vec::new();
        tick.shape(&mut shape);
        Self { shape, len }
    }

    /// Its ticks' keys to `each`, in the walk's order: those of a tick of its shape.
    fn each_key(&self, each: impl FnMut(Key)) {
        if let Some(tick) = ShapedTick::of(&self.shape) {
            tick.record().walk(&mut EachKey(each));
        }
    }

    fn keys(&self) -> Vec<Key> {
        let mut keys = Vec::with_capacity(self.len);
        self.each_key(|key| keys.push(key));
        keys
    }

    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.shape.capacity() * std::mem::size_of::<usize>()
    }
}

/// The values of `before` (in the slots of `old`) moved to the slots of `new`, by key: only
/// when the bank's shape changes. Neither list of keys is made: the old keys go into an
/// index as they are walked, and the new ones are looked up in it as they are. The index
/// holds a 64-bit hash of each old key and its slot, 16 bytes a key instead of a map of the
/// keys (at 16 packs of 32 cells, 16 KiB instead of 116: the shape changes as each pack is
/// found at start-up, and the heap kept the map's size for good); two old keys of one hash
/// take the map. A new key of an old key's hash that is not that key (about one chance in
/// 10^13 at 16 packs) would take its value: the encoder then writes the tick's value for it
/// unless equal, and a reader carries with this same function, so the recording stays true.
fn carry(old: &Schema, new: &Schema, before: &mut Vec<Val>) {
    let hash = |key: Key| {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        hasher.finish()
    };
    let mut index = Vec::with_capacity(old.len);
    old.each_key(|key| index.push((hash(key), index.len())));
    index.sort_unstable();
    if index.windows(2).any(|pair| pair[0].0 == pair[1].0) {
        return carry_by_key(old, new, before);
    }
    move_to(new, before, |key| {
        let h = hash(key);
        let at = index.binary_search_by_key(&h, |&(h, _)| h).ok()?;
        Some(index[at].1)
    });
}

/// [`carry`] through a map of the old keys.
fn carry_by_key(old: &Schema, new: &Schema, before: &mut Vec<Val>) {
    let mut index = std::collections::HashMap::with_capacity(old.len);
    old.each_key(|key| {
        index.insert(key, index.len());
    });
    move_to(new, before, |key| index.get(&key).copied());
}

/// The values of `before` moved to the slots of `new`: each key's from the old slot `slot_of`
/// gives it, absent where it gives none.
fn move_to(new: &Schema, before: &mut Vec<Val>, mut slot_of: impl FnMut(Key) -> Option<usize>) {
    let mut taken = std::mem::take(before);
    let mut moved = Vec::with_capacity(new.len);
    new.each_key(|key| {
        let val = slot_of(key).and_then(|k| taken.get_mut(k));
        moved.push(val.map_or(Val::Absent, |v| std::mem::replace(v, Val::Absent)));
    });
    *before = moved;
}

/// Writes the tick's changed values into a block: the tick's hot path (no allocation unless
/// a text changes, no formatting).
struct Encoder<'a> {
    /// The schema's keys, to check in debug builds (all tests) that a tick of the schema's
    /// shape has them; release builds take the shape's word for it.
    #[cfg(debug_assertions)]
    keys: &'a [Key],
    before: &'a mut [Val],
    out: &'a mut Vec<u8>,
    at: usize,
    skip: u64,
    /// The tick handed over more values than the schema has slots.
    overflow: bool,
}

impl Encoder<'_> {
    /// The slot of the tick's next value, when `same` says it changed.
    #[inline]
    fn slot(&mut self, key: Key, same: impl FnOnce(&Val) -> bool) -> Option<usize> {
        #[cfg(debug_assertions)]
        assert!(
            self.keys.get(self.at).is_some_and(|k| k.eq(&key)),
            "a tick of the schema's shape with another key at {}: {key:?}",
            self.at
        );
        #[cfg(not(debug_assertions))]
        let _ = key;
        if self.overflow {
            return None;
        }
        let at = self.at;
        let Some(before) = self.before.get(at) else {
            self.overflow = true;
            return None;
        };
        self.at += 1;
        if same(before) {
            self.skip += 1;
            return None;
        }
        Some(at)
    }

    fn op(&mut self, kind: u8) {
        put_varint(self.out, self.skip << 4 | u64::from(kind));
        self.skip = 0;
    }

    /// A text or JSON value (`kind`: [`OP_TEXT`] or [`OP_JSON`]): written when it changed.
    fn textual(&mut self, key: Key, value: Option<&str>, kind: u8) {
        let same = |before: &Val| match (before, value) {
            (Val::Text(b), Some(v)) if kind == OP_TEXT => b.as_str() == v,
            (Val::Json(b), Some(v)) if kind == OP_JSON => b.as_str() == v,
            (Val::Absent, None) => true,
            _ => false,
        };
        let Some(at) = self.slot(key, same) else {
            return;
        };
        match value {
            Some(v) => self.text_op(at, kind, v),
            None => self.gone(at),
        }
    }

    fn gone(&mut self, at: usize) {
        self.op(OP_GONE);
        self.before[at] = Val::Absent;
    }

    fn text_op(&mut self, at: usize, kind: u8, text: &str) {
        self.op(kind);
        put_varint(self.out, text.len() as u64);
        self.out.extend_from_slice(text.as_bytes());
        match &mut self.before[at] {
            Val::Text(s) | Val::Json(s) if kind == OP_TEXT => {
                s.clear();
                s.push_str(text);
                self.before[at] = Val::Text(std::mem::take(s));
            }
            slot => {
                let text = Box::new(text.to_string());
                *slot = if kind == OP_TEXT {
                    Val::Text(text)
                } else {
                    Val::Json(text)
                }
            }
        }
    }

    /// Whether every slot of the schema was handed over, in order.
    fn finish(self) -> bool {
        if self.overflow || self.at != self.before.len() {
            return false;
        }
        self.out.push(OP_END);
        true
    }
}

impl Sink for Encoder<'_> {
    fn num(&mut self, key: Key, value: Option<f64>) {
        let value = value.filter(|v| v.is_finite());
        let same = |before: &Val| match (before, value) {
            (Val::Num(b), Some(v)) => b.to_bits() == v.to_bits(),
            (Val::Absent, None) => true,
            _ => false,
        };
        let Some(at) = self.slot(key, same) else {
            return;
        };
        let Some(v) = value else {
            return self.gone(at);
        };
        let before = match self.before[at] {
            Val::Num(b) => milli(b),
            _ => None,
        };
        let now = milli(v);
        match (before, now) {
            (Some(b), Some(m)) => {
                self.op(OP_MILLI_DELTA);
                put_varint(self.out, zigzag(m.wrapping_sub(b)));
            }
            (None, Some(m)) => {
                self.op(OP_MILLI);
                put_varint(self.out, zigzag(m));
            }
            (_, None) => {
                self.op(OP_F64);
                self.out.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.before[at] = Val::Num(v);
    }

    fn int(&mut self, key: Key, value: Option<i64>) {
        let same = |before: &Val| match (before, value) {
            (Val::Int(b), Some(v)) => *b == v,
            (Val::Absent, None) => true,
            _ => false,
        };
        let Some(at) = self.slot(key, same) else {
            return;
        };
        let Some(v) = value else {
            return self.gone(at);
        };
        self.op(OP_INT);
        put_varint(self.out, zigzag(v));
        self.before[at] = Val::Int(v);
    }

    fn flag(&mut self, key: Key, value: Option<bool>) {
        let same = |before: &Val| match (before, value) {
            (Val::Flag(b), Some(v)) => *b == v,
            (Val::Absent, None) => true,
            _ => false,
        };
        let Some(at) = self.slot(key, same) else {
            return;
        };
        let Some(v) = value else {
            return self.gone(at);
        };
        self.op(if v { OP_TRUE } else { OP_FALSE });
        self.before[at] = Val::Flag(v);
    }

    fn text(&mut self, key: Key, value: Option<&str>) {
        self.textual(key, value, OP_TEXT);
    }

    fn json(&mut self, key: Key, value: Option<&str>) {
        self.textual(key, value, OP_JSON);
    }
}

/// A run of ticks: the first from all slots absent, each after it as its changes.
#[derive(Clone, Debug)]
struct Block {
    /// The schemas its ticks use; the first from its first tick, the others from an
    /// [`OP_SCHEMA`] on.
    schemas: Vec<Arc<Schema>>,
    first_tick: u64,
    ticks: u64,
    /// The daemon's seconds at its last tick.
    last_s: f64,
    bytes: Vec<u8>,
}

impl Block {
    fn new(schema: Arc<Schema>, first_tick: u64, capacity: usize) -> Self {
        Self {
            schemas: vec![schema],
            first_tick,
            ticks: 0,
            last_s: 0.0,
            bytes: Vec::with_capacity(capacity),
        }
    }

    fn memory(&self) -> usize {
        self.bytes.capacity() + std::mem::size_of::<Self>()
    }

    /// The block as the file's JSON lines: a full line for its first tick, delta lines after.
    /// An error names the tick and the byte of the block where its bytes make no sense.
    fn lines(&self, out: &mut String) -> Result<(), Garbled> {
        let mut reader = BlockReader::new(self);
        for n in 0..self.ticks {
            let tick = self.first_tick + n;
            reader.tick(tick)?;
            let (keys, vals) = (&reader.keys, &reader.vals);
            if n == 0 {
                let full = (0..vals.len()).filter(|&k| vals[k] != Val::Absent);
                line(out, tick, "full", keys, vals, full, &[]);
            } else {
                let set = reader.set.iter().copied();
                line(out, tick, "set", keys, vals, set, &reader.gone);
            }
        }
        Ok(())
    }
}

/// Reads a block's ticks one after the other: the values after each, what it set and what
/// went.
struct BlockReader<'a> {
    block: &'a Block,
    bytes: Bytes<'a>,
    schema: Arc<Schema>,
    /// The schema's keys.
    keys: Vec<Key>,
    vals: Vec<Val>,
    set: Vec<usize>,
    gone: Vec<String>,
}

impl<'a> BlockReader<'a> {
    fn new(block: &'a Block) -> Self {
        let schema = block.schemas[0].clone();
        Self {
            block,
            bytes: Bytes {
                bytes: &block.bytes,
                at: 0,
            },
            vals: vec![Val::Absent; schema.len],
            keys: schema.keys(),
            schema,
            set: Vec::new(),
            gone: Vec::new(),
        }
    }

    /// The next tick (`tick` its number, for errors).
    fn tick(&mut self, tick: u64) -> Result<(), Garbled> {
        let at = self.bytes.at;
        let bad = |e: Garbled| Garbled(format!("tick {tick} (byte {at} of its run): {e}"));
        let mut slot = 0usize;
        self.set.clear();
        self.gone.clear();
        loop {
            let op = self.bytes.varint().map_err(bad)?;
            let kind = (op & 0xf) as u8;
            if kind == OP_END {
                return Ok(());
            }
            if kind == OP_SCHEMA {
                let index = self.bytes.varint().map_err(bad)? as usize;
                let new =
                    (self.block.schemas.get(index)).ok_or_else(|| bad("no such schema".into()))?;
                let keys = new.keys();
                let kept: std::collections::HashSet<Key> = keys.iter().copied().collect();
                for (key, val) in self.keys.iter().zip(&self.vals) {
                    if *val != Val::Absent && !kept.contains(key) {
                        self.gone.push(key.render());
                    }
                }
                carry(&self.schema, new, &mut self.vals);
                self.schema = new.clone();
                self.keys = keys;
                continue;
            }
            slot += (op >> 4) as usize;
            let bytes = &mut self.bytes;
            let Some(val) = self.vals.get_mut(slot) else {
                return Err(bad(format!("slot {slot} beyond the schema's keys").into()));
            };
            *val = match kind {
                OP_GONE => Val::Absent,
                OP_MILLI_DELTA => {
                    let before = match val {
                        Val::Num(b) => milli(*b),
                        _ => None,
                    };
                    let before = before.ok_or_else(|| bad("a change of no number".into()))?;
                    let m = before.wrapping_add(unzigzag(bytes.varint().map_err(bad)?));
                    Val::Num(m as f64 / 1000.0)
                }
                OP_MILLI => {
                    let m = unzigzag(bytes.varint().map_err(bad)?);
                    Val::Num(m as f64 / 1000.0)
                }
                OP_F64 => {
                    let raw = bytes.take(8).map_err(bad)?;
                    let mut le = [0u8; 8];
                    le.copy_from_slice(raw);
                    let v = f64::from_le_bytes(le);
                    Val::Num(v)
                }
                OP_INT => Val::Int(unzigzag(bytes.varint().map_err(bad)?)),
                OP_TEXT => Val::Text(Box::new(bytes.text().map_err(bad)?)),
                OP_JSON => Val::Json(Box::new(bytes.text().map_err(bad)?)),
                OP_FALSE => Val::Flag(false),
                OP_TRUE => Val::Flag(true),
                other => return Err(bad(format!("operation {other}").into())),
            };
            if *val == Val::Absent {
                let key = self
                    .keys
                    .get(slot)
                    .ok_or_else(|| bad("a key beyond the schema".into()))?;
                self.gone.push(key.render());
            } else {
                self.set.push(slot);
            }
            slot += 1;
        }
    }
}

/// One JSON line: `{"tick":N,"<what>":{...}}`, with `"gone":[...]` when there is any.
fn line(
    out: &mut String,
    tick: u64,
    what: &str,
    keys: &[Key],
    vals: &[Val],
    slots: impl Iterator<Item = usize>,
    gone: &[String],
) {
    let _ = write!(out, "{{\"tick\":{tick},\"{what}\":{{");
    for (n, k) in slots.enumerate() {
        if n > 0 {
            out.push(',');
        }
        json_text(out, &keys[k].render());
        out.push(':');
        match &vals[k] {
            Val::Absent => out.push_str("null"),
            Val::Num(v) => {
                // Written as serde_json writes an f64, so that it reads back to the same bits.
                out.push_str(&Json::from(*v).to_string());
            }
            Val::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Val::Flag(v) => {
                let _ = write!(out, "{v}");
            }
            Val::Text(v) => json_text(out, v),
            Val::Json(v) => out.push_str(v),
        }
    }
    out.push('}');
    if !gone.is_empty() {
        out.push_str(",\"gone\":");
        out.push_str(&Json::from(gone.to_vec()).to_string());
    }
    out.push_str("}\n");
}

fn json_text(out: &mut String, text: &str) {
    out.push_str(&Json::from(text).to_string());
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(text.as_bytes());
    enc.finish().unwrap_or_default()
}

/// The recording in memory.
pub struct Recorder {
    keep_s: f64,
    max_bytes: usize,
    /// The config's text, for the header.
    config_text: String,
    /// The shadow's config text (the config with the shadow's strategy), for the header.
    shadow_config: Option<String>,
    /// Closed runs of [`FULL_EVERY`] ticks (fewer when a save cut one), oldest first: shared
    /// with a save being written.
    blocks: VecDeque<Arc<Block>>,
    block_bytes: usize,
    /// The open run.
    open: Block,
    /// The schema of the last tick.
    schema: Arc<Schema>,
    /// The last tick's values, by the schema's slots.
    before: Vec<Val>,
    next_tick: u64,
    /// The shape of the tick being pushed (kept for its allocation).
    shape: Vec<usize>,
    /// The bytes of the schemas the runs hold, each counted once ([`Recorder::schema_bytes`]).
    schema_bytes: usize,
}

impl Recorder {
    /// A recorder keeping `keep_s` seconds within about `max_bytes`; `config_text` goes into
    /// the header of each file.
    pub fn new(keep_s: f64, max_bytes: usize, config_text: String) -> Self {
        let schema = Arc::new(Schema {
            shape: Vec::new(),
            len: 0,
        });
        Self {
            keep_s,
            max_bytes,
            config_text,
            shadow_config: None,
            blocks: VecDeque::new(),
            block_bytes: 0,
            open: Block::new(schema.clone(), 0, 0),
            schema,
            before: Vec::new(),
            next_tick: 0,
            shape: Vec::new(),
            schema_bytes: 0,
        }
    }

    /// With the shadow's config text in the header (`shadow_config`).
    pub fn with_shadow_config(mut self, text: String) -> Self {
        self.shadow_config = Some(text);
        self
    }

    /// Adds one tick.
    pub fn push(&mut self, tick: &TickRecord) {
        if self.open.ticks >= FULL_EVERY {
            self.close();
        }
        let start = self.open.bytes.len();
        if !self.encode(tick) {
            // Another shape of bank: the schema anew, the values carried over by key.
            self.open.bytes.truncate(start);
            let schema = self
                .known_schema()
                .unwrap_or_else(|| Arc::new(Schema::of(tick)));
            // A tick of another shape is refused before its walk: it changed no value. One of
            // the schema's shape with more or fewer values, which the shape rules out, may have
            // changed some: they are read back from the run.
            let walked = self.shape == self.schema.shape;
            if walked && self.open.ticks > 0 && !self.values_before() {
                // Never expected (the encoder wrote the run): the run closes without this
                // tick, which starts the next.
                self.close();
            }
            if self.open.ticks == 0 {
                self.before = vec![Val::Absent; schema.len];
                self.open.schemas = vec![schema.clone()];
            } else {
                carry(&self.schema, &schema, &mut self.before);
                self.open.bytes.push(OP_SCHEMA);
                put_varint(&mut self.open.bytes, self.open.schemas.len() as u64);
                self.open.schemas.push(schema.clone());
            }
            self.schema = schema;
            self.schema_bytes = self.schema_bytes();
            // The tick's keys are the schema's now.
            let _ = self.encode(tick);
        }
        self.open.ticks += 1;
        self.open.last_s = tick.now_s;
        self.next_tick += 1;
        self.forget(tick.now_s);
    }

    /// The schema of a tick of the shape just encoded (`self.shape`), when the open run or the
    /// last closed one has it: a bank whose shape flaps (a value found implausible every other
    /// tick, a pack leaving and coming back) keeps one schema per shape, not one per change.
    fn known_schema(&self) -> Option<Arc<Schema>> {
        let last = self
            .blocks
            .back()
            .map(|b| &b.schemas[..])
            .unwrap_or_default();
        (self.open.schemas.iter().chain(last))
            .find(|s| s.shape == self.shape)
            .cloned()
    }

    /// The tick's changes into the open run; false (and the run to be cut back) when its keys
    /// are not the schema's.
    fn encode(&mut self, tick: &TickRecord) -> bool {
        tick.shape(&mut self.shape);
        if self.shape != self.schema.shape {
            // Other keys: nothing written, no value changed.
            return false;
        }
        #[cfg(debug_assertions)]
        let keys = self.schema.keys();
        let mut encoder = Encoder {
            #[cfg(debug_assertions)]
            keys: &keys,
            before: &mut self.before,
            out: &mut self.open.bytes,
            at: 0,
            skip: 0,
            overflow: false,
        };
        tick.walk(&mut encoder);
        encoder.finish()
    }

    /// The values and schema after the open run's last tick, read back from its bytes.
    fn values_before(&mut self) -> bool {
        let mut reader = BlockReader::new(&self.open);
        for n in 0..self.open.ticks {
            if reader.tick(n).is_err() {
                return false;
            }
        }
        let (schema, vals) = (reader.schema, reader.vals);
        self.schema = schema;
        self.before = vals;
        true
    }

    /// Closes the open run; the next starts from all slots absent.
    fn close(&mut self) {
        let capacity = self.open.bytes.len() + self.open.bytes.len() / 8;
        let next = Block::new(self.schema.clone(), self.next_tick, capacity);
        let mut closed = std::mem::replace(&mut self.open, next);
        closed.bytes.shrink_to_fit();
        self.block_bytes += closed.memory();
        self.blocks.push_back(Arc::new(closed));
        self.before.iter_mut().for_each(|v| *v = Val::Absent);
    }

    /// Drops the oldest runs: those older than `keep`, or beyond the memory bound.
    fn forget(&mut self, now_s: f64) {
        // The texts of the last tick's values are left out here (counted by `bytes`): a few
        // bytes, and walking all values at each tick is what this avoids.
        let fixed =
            self.open.bytes.capacity() + self.before.capacity() * std::mem::size_of::<Val>();
        while let Some(first) = self.blocks.front() {
            let old = now_s - first.last_s > self.keep_s;
            let over = self.block_bytes + fixed + self.schema_bytes > self.max_bytes;
            if !(old || over) {
                break;
            }
            self.block_bytes -= first.memory();
            self.blocks.pop_front();
            self.schema_bytes = self.schema_bytes();
        }
    }

    /// The bytes of the schemas held by the runs, each counted once however many runs share
    /// it (a bank of one shape has one schema for all of them).
    fn schema_bytes(&self) -> usize {
        let mut held: Vec<&Arc<Schema>> = (self.blocks.iter().map(|b| &**b))
            .chain([&self.open])
            .flat_map(|b| &b.schemas)
            .chain([&self.schema])
            .collect();
        held.sort_by_key(|s| Arc::as_ptr(s));
        held.dedup_by(|a, b| Arc::ptr_eq(a, b));
        held.iter().map(|s| s.bytes()).sum()
    }

    /// Bytes held now: the runs, the open one, the last tick's values and the schemas.
    pub fn bytes(&self) -> usize {
        let before: usize = (self.before.iter())
            .map(|v| match v {
                Val::Text(s) | Val::Json(s) => s.capacity(),
                _ => 0,
            })
            .sum();
        self.block_bytes
            + self.open.bytes.capacity()
            + self.before.capacity() * std::mem::size_of::<Val>()
            + before
            + self.schema_bytes
    }

    /// Ticks recorded since start.
    pub fn ticks(&self) -> u64 {
        self.next_tick
    }

    /// Whether the next tick starts a run: the engine's saved state and its memory besides
    /// go into it (keys `state` and `memory`), so that a replay of a recording whose start was
    /// dropped starts where the device was.
    pub fn wants_state(&self) -> bool {
        self.open.ticks == 0 || self.open.ticks >= FULL_EVERY
    }

    /// Ticks held now.
    pub fn kept_ticks(&self) -> u64 {
        self.blocks.iter().map(|b| b.ticks).sum::<u64>() + self.open.ticks
    }

    /// What a save needs, taken without copying the closed runs: the file is made from it
    /// off the tick ([`Snapshot::save`]).
    pub fn snapshot(&self, reason: &str) -> Snapshot {
        let header = json!({
            "format": FORMAT,
            "version": VERSION,
            "program": env!("CARGO_PKG_VERSION"),
            "reason": reason,
            "full_every": FULL_EVERY,
            "config": self.config_text,
            "shadow_config": self.shadow_config,
        });
        let mut blocks: Vec<Arc<Block>> = self.blocks.iter().cloned().collect();
        if self.open.ticks > 0 {
            blocks.push(Arc::new(self.open.clone()));
        }
        Snapshot {
            reason: reason.to_string(),
            header,
            blocks,
        }
    }

    /// The file's bytes: the header, the runs kept and the open run.
    pub fn file_bytes(&self, reason: &str) -> Vec<u8> {
        self.snapshot(reason).file_bytes()
    }
}

/// A recording to be saved: the header and the runs at the moment it was asked for.
pub struct Snapshot {
    reason: String,
    header: Json,
    blocks: Vec<Arc<Block>>,
}

impl Snapshot {
    /// Ticks in it.
    pub fn ticks(&self) -> u64 {
        self.blocks.iter().map(|b| b.ticks).sum()
    }

    /// The file's bytes: one gzip member for the header, one for each run.
    pub fn file_bytes(&self) -> Vec<u8> {
        let mut bytes = gzip(&format!("{}\n", self.header));
        let mut text = String::new();
        for block in &self.blocks {
            text.clear();
            if let Err(problem) = block.lines(&mut text) {
                // Never expected: the encoder wrote it. What precedes is kept.
                tracing::error!("recording: {problem}; the recording ends there");
                bytes.extend_from_slice(&gzip(&text));
                break;
            }
            bytes.extend_from_slice(&gzip(&text));
        }
        bytes
    }

    /// Saves the recording into `dir` as `recording-<time>-<reason>.jsonl.gz`, keeping at
    /// most `max_files` recordings of its kind there (the oldest removed; asked for or saved
    /// for a happening: `state_file::write_recording`). Slow on a long recording of a
    /// big bank (the text is made and compressed here): not for the tick's thread.
    pub fn save(&self, dir: &Path, max_files: u32) -> std::io::Result<PathBuf> {
        // One save at a time, so that two never remove each other's oldest files.
        static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let slug: String = (self.reason.chars())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let bytes = self.file_bytes();
        let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
        let path = dir.join(format!("recording-{}-{slug}.jsonl.gz", wall_clock_stamp()));
        crate::state_file::write_recording(&path, &bytes, max_files)?;
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

/// The longest line of a recording read, decompressed: a header carries the config's text
/// (1 MiB at most, docs/commands.md §1) and the shadow's, a full line of a 16×32 bank some
/// 50 kB.
pub const LINE_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// The most decompressed text of a recording read: a recording of the shipped 8 MiB bound
/// decompresses to some 100 MB.
pub const RECORDING_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// Reads one line of at most [`LINE_MAX_BYTES`] into `line`: its length, or what is wrong.
/// A gzip bomb of one endless line must not take the memory it unpacks to.
fn read_bounded_line(reader: &mut impl BufRead, line: &mut String) -> Result<usize, LineError> {
    let n = (reader.take(LINE_MAX_BYTES + 1).read_line(line)).map_err(LineError::Io)?;
    if n as u64 > LINE_MAX_BYTES {
        return Err(LineError::TooLong);
    }
    Ok(n)
}

/// Why [`read_bounded_line`] gave no line.
enum LineError {
    Io(std::io::Error),
    TooLong,
}

/// [`LineError::TooLong`]'s text.
fn too_long() -> String {
    format!(
        "longer than {} MiB decompressed, more than a recording writes; read no further",
        LINE_MAX_BYTES >> 20
    )
}

/// Reads a recording from its gzip bytes: at most [`RECORDING_MAX_BYTES`] decompressed, each
/// line at most [`LINE_MAX_BYTES`].
pub fn read_from(input: impl Read) -> Result<Recording, Error> {
    read_within(input, RECORDING_MAX_BYTES)
}

/// [`read_from`] with `max_bytes` of decompressed text at most.
fn read_within(input: impl Read, max_bytes: u64) -> Result<Recording, Error> {
    let mut reader = BufReader::new(MultiGzDecoder::new(input));
    let mut line = String::new();
    let mut byte = 0u64;
    let header = match read_bounded_line(&mut reader, &mut line) {
        Ok(0) => return Err(bad("empty: no header line".into())),
        Ok(n) => {
            byte += n as u64;
            serde_json::from_str::<Json>(&line)
                .map_err(|e| bad(format!("line 1: not a recording header ({e})")))?
        }
        Err(LineError::Io(e)) => {
            return Err(bad(format!("line 1: not a gzip file of JSON lines ({e})")))
        }
        Err(LineError::TooLong) => return Err(bad(format!("line 1: {}", too_long()))),
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
        if byte > max_bytes {
            cut = Some(format!(
                "{at}: more than {max_bytes} bytes decompressed, more than a recording holds; \
                 read no further"
            ));
            break;
        }
        match read_bounded_line(&mut reader, &mut line) {
            Ok(0) => break,
            Ok(n) => byte += n as u64,
            Err(LineError::Io(e)) => {
                cut = Some(format!("{at}: the file is cut or damaged ({e})"));
                break;
            }
            Err(LineError::TooLong) => {
                cut = Some(format!("{at}: {}", too_long()));
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

/// Least seconds between two recordings saved for happenings.
pub const HAPPENING_GAP_S: f64 = 60.0;

/// When a happening saves a recording: once per episode of its cause, at most one file each
/// [`HAPPENING_GAP_S`]. A cause that comes back within `record.keep` (a minute at least) of
/// its last happening is the same episode: a BMS that switches charging off and on at the top
/// of the charge, or a value that hovers at a safety bound, saves one file, not one a minute
/// for as long as it goes on (each file is the whole recording: the flash wears). A new
/// episode within the gap after a save waits for the gap to pass, and is saved then (the file
/// also shows what followed it), never dropped.
#[derive(Debug)]
pub struct Happenings {
    /// Seconds a cause stays away before its next happening is a new episode.
    quiet_s: f64,
    /// Each cause's last happening, in the daemon's monotonic seconds.
    last_seen: Vec<(&'static str, f64)>,
    /// When a happening last saved a recording.
    last_save_s: Option<f64>,
    /// Causes of new episodes not saved yet, in the order they came.
    pending: Vec<&'static str>,
}

impl Happenings {
    /// For a recorder that keeps `keep`.
    pub fn new(keep: std::time::Duration) -> Self {
        Self {
            quiet_s: keep.as_secs_f64().max(HAPPENING_GAP_S),
            last_seen: Vec::new(),
            last_save_s: None,
            pending: Vec::new(),
        }
    }

    /// What happened at `now_s` (the daemon's monotonic seconds; the tick's causes, the most
    /// often none): the reason to save a recording for, when one is to be saved now.
    pub fn judge(&mut self, now_s: f64, causes: &[&'static str]) -> Option<String> {
        for &cause in causes {
            if self.new_episode(now_s, cause) && !self.pending.contains(&cause) {
                self.pending.push(cause);
            }
        }
        let in_gap = (self.last_save_s).is_some_and(|s| now_s - s < HAPPENING_GAP_S);
        if self.pending.is_empty() || in_gap {
            return None;
        }
        self.last_save_s = Some(now_s);
        let reason = self.pending.join(" and ");
        self.pending.clear();
        Some(reason)
    }

    /// Whether `cause` happening at `now_s` starts an episode of it.
    fn new_episode(&mut self, now_s: f64, cause: &'static str) -> bool {
        match self.last_seen.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, last_s)) => now_s - std::mem::replace(last_s, now_s) >= self.quiet_s,
            None => {
                self.last_seen.push((cause, now_s));
                true
            }
        }
    }
}

/// What happened this tick that saves a recording (the most often nothing: no allocation
/// then): from the tick's outcome, what was published the tick before and how many batteries
/// were lost then.
pub fn happenings(
    save_on: &SaveOn,
    outcome: &Outcome,
    before: Option<&PublishedValues>,
    lost_before: usize,
) -> Vec<&'static str> {
    let any = |f: fn(&Event) -> bool| outcome.events.iter().any(f);
    let mut causes = Vec::new();
    if save_on.battery_lost && outcome.lost.len() > lost_before {
        causes.push("battery lost");
    }
    if save_on.strategy_fault && any(|e| matches!(e, Event::StrategyFault(_))) {
        causes.push("strategy fault");
    }
    if save_on.feed_in && any(|e| matches!(e, Event::FeedIn(_))) {
        causes.push("feed-in");
    }
    if save_on.bound {
        let stops = |now: f64, was: f64| now <= 0.0 && was > 0.0;
        let stopped = before.is_some_and(|b| {
            stops(outcome.limits.ccl_a, b.ccl_a) || stops(outcome.limits.dcl_a, b.dcl_a)
        });
        if stopped || any(|e| matches!(e, Event::Clamped(_))) {
            causes.push("bound");
        }
    }
    causes
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
                class: DcClass_NE::new(DcClass::Dcdc),
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

    fn batteries_at(t: f64) -> [Battery; 2] {
        [battery(0, 53.0 + t * 0.01), battery(1, 53.1)]
    }

    fn tick_at(t: f64) -> Flat {
        flatten_inputs(t, &batteries_at(t), &inputs(1.0))
    }

    fn push_at(r: &mut Recorder, t: f64) {
        let (bats, ins) = (batteries_at(t), inputs(1.0));
        r.push(&TickRecord::inputs(t, &bats, &ins));
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
    fn a_damaged_count_of_cells_is_refused_naming_the_tick_and_key() {
        let bats = [battery(0, 53.0), battery(1, 53.1)];
        let good = flatten_inputs(5.0, &bats, &inputs(1.0));
        assert_eq!(good.get("bat/1/cells"), Some(&json!(16)));
        for count in [json!(1_000_000_000_000_i64), json!(401), json!(-1)] {
            let mut f = good.clone();
            f.insert("bat/1/cells".into(), count.clone());
            let Err(err) = unflatten(7, &f) else {
                panic!("{count}: a damaged count was taken");
            };
            let err = err.to_string();
            assert!(
                err.contains("tick 7: `bat/1/cells` is") && err.contains("not a pack's count"),
                "{count}: {err}"
            );
        }
        let mut f = good.clone();
        f.insert("bat/1/cells".into(), json!(400));
        let back = unflatten(7, &f).expect("400 cells is a pack");
        assert_eq!(back.batteries[1].reading.cell_voltages_v.len(), 400);
    }

    #[test]
    fn a_saved_recording_reads_back_every_tick_kept() {
        let mut r = Recorder::new(3600.0, 1 << 20, "strategy: {plugin: x}\n".into());
        for t in 0..150 {
            push_at(&mut r, t as f64);
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
            push_at(&mut r, t as f64);
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
            push_at(&mut small, t as f64);
            most = most.max(small.bytes());
        }
        assert!(most <= bound + 4096, "{most} bytes held, bound {bound}");
        assert!(!small.blocks.is_empty(), "the latest runs are kept");
    }

    /// A bank of `packs` × `cells` whose every value moves every tick (a BMS's 1 mV and
    /// 0.01 A noise), the worst case for the deltas.
    fn noisy_bank(packs: usize, cells: usize, seed: &mut u64) -> Vec<Battery> {
        let mut noise = || {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (*seed >> 33) as f64 / (1u64 << 31) as f64
        };
        (0..packs)
            .map(|i| {
                let mut b = battery(i, 0.0);
                b.reading.cell_voltages_v = (0..cells)
                    .map(|_| Some((3300.0 + (noise() * 20.0).round()) / 1000.0))
                    .collect();
                b.reading.voltage_v = Some((52_800.0 + (noise() * 100.0).round()) / 1000.0);
                b.reading.current_a = Some((1000.0 + (noise() * 500.0).round()) / 100.0);
                b.reading.soc_pct = Some(50.0 + (noise() * 1000.0).round() / 1000.0);
                b
            })
            .collect()
    }

    /// The shipped bound (`record.max_memory_kib`: 8192) holds the shipped 30 minutes of a
    /// 16 × 32 bank whose every value moves every tick; run longer than that, the oldest
    /// minutes go and the memory stays put.
    #[test]
    fn a_16_by_32_bank_keeps_30_minutes_within_the_memory_bound() {
        let bound = crate::config::Record::default().max_bytes();
        let mut r = Recorder::new(1800.0, bound, String::new());
        let mut seed = 7;
        let mut most = 0;
        let (mut making, mut pushing) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        let ins = inputs(1.0);
        let mut last = Flat::new();
        for t in 0..2400 {
            let started = std::time::Instant::now();
            let bats = noisy_bank(16, 32, &mut seed);
            let made = std::time::Instant::now();
            let tick = TickRecord::inputs(t as f64 + 0.123_456, &bats, &ins);
            r.push(&tick);
            making += made - started;
            pushing += made.elapsed();
            most = most.max(r.bytes());
            if t == 2399 {
                last = flatten(&tick);
            }
        }
        eprintln!(
            "per tick: making {:?}, pushing {:?}",
            making / 2400,
            pushing / 2400
        );
        let kept = r.kept_ticks();
        eprintln!(
            "16x32, every value moving: at most {most} bytes held, {} bytes per tick, {kept} \
             ticks kept",
            r.block_bytes / r.blocks.len().max(1) / FULL_EVERY as usize
        );
        assert!(most <= bound, "{most} bytes held, bound {bound}");
        assert!(
            (1800..=1800 + 2 * FULL_EVERY).contains(&kept),
            "{kept} ticks kept: record.keep is 30 min"
        );
        let started = std::time::Instant::now();
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        eprintln!("the file made and read back in {:?}", started.elapsed());
        assert_eq!(rec.ticks.len() as u64, kept);
        assert_eq!(
            rec.ticks.last().map(|(_, f)| f),
            Some(&last),
            "the last tick exactly"
        );
    }

    /// Batteries and cells that come and go, bad values, texts and numbers a BMS would not
    /// send (not in thousandths, negative zero, NaN) read back exactly as the ticks were.
    #[test]
    fn a_bank_that_changes_shape_reads_back_exactly() {
        let mut r = Recorder::new(3600.0, 1 << 20, String::new());
        let mut seed = 3;
        let mut expected = Vec::new();
        let out = outcome_with(42.5, &["P1"], vec![Event::StrategyFault("boom".into())]);
        for t in 0..150u64 {
            let packs = match t {
                0..=9 => 1,
                10..=69 => 2,
                _ => 3,
            };
            let mut bats = noisy_bank(packs, if t % 50 < 25 { 16 } else { 8 }, &mut seed);
            if t % 7 == 0 {
                bats[0].reading.bad_values.push(BadValue {
                    path: "/Dc/0/Current".into(),
                    problem: "NaN \"quoted\" é".into(),
                });
                bats[0].reading.voltage_v = Some(-0.0);
                bats[0].reading.current_a = Some(0.1 + 0.2);
                bats[0].reading.temperature_c = Some(f64::NAN);
            }
            if t % 11 == 0 {
                bats[0].reading.charge_mode = None;
                bats[0].state = BatteryState::Stale;
            }
            let ins = inputs(1.0);
            let shadow = match t % 3 {
                0 => Ok(&out),
                1 => Err(ShadowMissing::Late),
                _ => Err(ShadowMissing::Busy),
            };
            let tick = TickRecord {
                publishing: Some(t % 2 == 0),
                out: Some(&out),
                shadow: Some(shadow),
                // Not in thousandths (the daemon's seconds are not), yet exact in decimal.
                ..TickRecord::inputs(t as f64 + 1.0 / 1024.0, &bats, &ins)
            };
            r.push(&tick);
            expected.push(flatten(&tick));
        }
        for block in r.blocks.iter().map(|b| &**b).chain([&r.open]) {
            block.lines(&mut String::new()).expect("the runs decode");
        }
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        assert!(rec.cut.is_none(), "{:?}", rec.cut);
        assert_eq!(rec.ticks.len(), 150);
        for (t, (n, flat)) in rec.ticks.iter().enumerate() {
            assert_eq!(*n, t as u64);
            assert_eq!(flat, &expected[t], "tick {t}");
        }
        let late = &rec.ticks[1].1;
        assert_eq!(late.get("shadow/skipped"), Some(&Json::from("late")));
        assert!(!late.contains_key("shadow/ccl"));
        assert_eq!(rec.ticks[0].1.get("shadow/ccl"), Some(&Json::from(42.5)));
        let back = unflatten(0, &rec.ticks[0].1).expect("tick");
        assert_eq!(back.shadow.map(|s| s.ccl_a), Some(42.5));
        assert_eq!(
            back.batteries[0].reading.voltage_v.map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
    }

    #[test]
    fn thousandths_are_those_of_rounding_half_away_from_zero() {
        let reference = |value: f64| {
            let m = (value * 1000.0).round();
            if m.abs() >= 9.0e15 {
                return None;
            }
            let m = m as i64;
            ((m as f64 / 1000.0).to_bits() == value.to_bits()).then_some(m)
        };
        let mut values = vec![
            0.0, -0.0, 3.301, -10.37, 0.0005, -0.0005, 0.0015, 9e12, 9.1e12,
        ];
        values.extend([f64::NAN, f64::INFINITY, f64::MIN_POSITIVE, 1e300, -1e-300]);
        let mut bits = 0x5851_f42d_4c95_7f2d_u64;
        for _ in 0..200_000 {
            bits ^= bits << 13;
            bits ^= bits >> 7;
            bits ^= bits << 17;
            values.push(f64::from_bits(bits));
            // Thousandths and halves of them, of every size a bank sends and beyond.
            let m = (bits >> 20) as i64 - (1 << 43);
            values.push(m as f64 / 1000.0);
            values.push((m as f64 + 0.5) / 1000.0);
            values.push((bits % 100_000) as f64 / 1000.0);
        }
        for v in values {
            assert_eq!(milli(v), reference(v), "{v:e}");
        }
        assert_eq!(milli(3.301), Some(3301));
        assert_eq!(milli(-10.37), Some(-10370));
        assert_eq!(milli(0.1 + 0.2), None);
    }

    /// A 16 × 32 bank found one pack a tick has a schema for each of its 16 shapes, held for
    /// as long as their runs (30 minutes): each is its shape alone, a few words, where a list
    /// of its keys would take hundreds of kilobytes for the 16, most of the recorder's memory.
    #[test]
    fn a_bank_found_pack_by_pack_holds_its_schemas_in_a_few_words() {
        let mut r = Recorder::new(3600.0, 64 << 20, String::new());
        let mut seed = 11;
        let mut expected = Vec::new();
        for t in 0..20u64 {
            let bats = noisy_bank((t as usize + 1).min(16), 32, &mut seed);
            let ins = inputs(1.0);
            let tick = TickRecord::inputs(t as f64, &bats, &ins);
            r.push(&tick);
            expected.push(flatten(&tick));
        }
        assert_eq!(r.open.schemas.len(), 16);
        let keys: usize = r.open.schemas.iter().map(|s| s.len).sum();
        assert!(keys > 16 * 16 * 32, "{keys} keys");
        assert!(r.schema_bytes < 16 * 512, "{} bytes", r.schema_bytes);
        // The values of the last tick and the 20 ticks' changes: no more.
        let values = r.before.len() * std::mem::size_of::<Val>();
        assert!(r.bytes() < values + 96 * 1024, "{} bytes", r.bytes());
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        for (t, (_, flat)) in rec.ticks.iter().enumerate() {
            assert_eq!(flat, &expected[t], "tick {t}");
        }
    }

    #[test]
    fn a_bank_whose_shape_flaps_keeps_one_schema_per_shape() {
        let mut r = Recorder::new(3600.0, 64 << 20, String::new());
        let mut seed = 9;
        let mut expected = Vec::new();
        for t in 0..300u64 {
            let mut bats = noisy_bank(2, 16, &mut seed);
            // A value found implausible every other tick, and a pack gone every 7th.
            if t % 2 == 0 {
                bats[1].reading.bad_values.push(BadValue {
                    path: "/Soc".into(),
                    problem: "NaN".into(),
                });
            }
            if t % 7 == 0 {
                bats.pop();
            }
            let ins = inputs(1.0);
            let tick = TickRecord::inputs(t as f64, &bats, &ins);
            r.push(&tick);
            expected.push(flatten(&tick));
        }
        let mut schemas: Vec<&Arc<Schema>> = (r.blocks.iter().map(|b| &**b))
            .chain([&r.open])
            .flat_map(|b| &b.schemas)
            .collect();
        schemas.sort_by_key(|s| Arc::as_ptr(s));
        schemas.dedup_by(|a, b| Arc::ptr_eq(a, b));
        // Three shapes (with and without the bad value, one pack) in 300 ticks.
        assert!(schemas.len() <= 3, "{} schemas", schemas.len());
        // Each counted once in the memory held.
        let schema_bytes: usize = schemas.iter().map(|s| s.bytes()).sum();
        assert_eq!(r.schema_bytes, schema_bytes);
        assert!(r.bytes() > r.block_bytes + schema_bytes);
        let rec = read_from(&r.file_bytes("test")[..]).expect("readable");
        assert_eq!(rec.ticks.len(), 300);
        for (t, (_, flat)) in rec.ticks.iter().enumerate() {
            assert_eq!(flat, &expected[t], "tick {t}");
        }
    }

    #[test]
    fn a_slot_is_read_in_16_bytes() {
        // What the encoder reads cold for each value of a tick of the schema's shape.
        assert_eq!(std::mem::size_of::<Val>(), 16);
    }

    #[test]
    fn ticks_have_one_shape_exactly_when_they_have_one_list_of_keys() {
        // Each variant changes one thing a tick's keys may depend on; its values too.
        let out = outcome_with(42.5, &["P1"], Vec::new());
        let mut seed = 5;
        let mut variants: Vec<(Vec<usize>, Vec<Key>)> = Vec::new();
        let mut schemas = Vec::new();
        for variant in 0..10 {
            let packs = if variant == 1 { 3 } else { 2 };
            let cells = if variant == 2 { 8 } else { 16 };
            let mut bats = noisy_bank(packs, cells, &mut seed);
            if variant == 3 {
                bats[1].reading.bad_values.push(BadValue {
                    path: "/Soc".into(),
                    problem: "NaN".into(),
                });
            }
            let mut ins = inputs(1.0);
            match variant {
                4 => ins.vebus.clear(),
                5 => ins.solar_chargers.push(SolarChargerView {
                    service: "com.victronenergy.solarcharger.ttyS6".into(),
                    current_a: Some(4.0).into(),
                }),
                6 => ins.dc_sources.clear(),
                // Values alone: the shape and keys of variant 0.
                9 => ins.low_soc = None,
                _ => {}
            }
            let tick = TickRecord {
                out: (variant != 7).then_some(&out),
                shadow: (variant == 8).then_some(Err(ShadowMissing::Busy)),
                ..TickRecord::inputs(variant as f64, &bats, &ins)
            };
            let mut shape = Vec::new();
            tick.shape(&mut shape);
            let mut keys = Vec::new();
            tick.walk(&mut EachKey(|key| keys.push(key)));
            // A schema keeps the shape alone and makes the keys from it: the same.
            let schema = Schema::of(&tick);
            assert_eq!(schema.keys(), keys, "variant {variant}");
            assert_eq!(schema.len, keys.len());
            variants.push((shape, keys));
            schemas.push(schema);
        }
        for (a, (shape_a, keys_a)) in variants.iter().enumerate() {
            for (b, (shape_b, keys_b)) in variants.iter().enumerate() {
                let (same_shape, same_keys) = (shape_a == shape_b, keys_a == keys_b);
                assert_eq!(same_shape, same_keys, "variants {a} and {b}");
                assert_eq!(same_shape, a == b || [a, b] == [0, 9] || [a, b] == [9, 0]);
            }
        }
        // A value carried to a new shape lands on the key of the same text, as the files of
        // every version have it.
        for (a, old) in schemas.iter().enumerate() {
            for (b, new) in schemas.iter().enumerate() {
                let old_keys: Vec<String> = old.keys().into_iter().map(Key::render).collect();
                let mut vals: Vec<Val> = (0..old.len as i64).map(Val::Int).collect();
                carry(old, new, &mut vals);
                let by_text: Vec<Val> = (new.keys().into_iter())
                    .map(
                        |key| match old_keys.iter().position(|k| *k == key.render()) {
                            Some(k) => Val::Int(k as i64),
                            None => Val::Absent,
                        },
                    )
                    .collect();
                assert_eq!(vals, by_text, "from variant {a} to {b}");
                // The map the hashed index falls back to, when two keys share a hash.
                let mut by_map: Vec<Val> = (0..old.len as i64).map(Val::Int).collect();
                carry_by_key(old, new, &mut by_map);
                assert_eq!(by_map, by_text, "from variant {a} to {b}, through the map");
            }
        }
    }

    #[test]
    fn a_cut_file_reads_up_to_the_cut_with_its_position() {
        let mut r = Recorder::new(3600.0, 1 << 20, String::new());
        for t in 0..200 {
            push_at(&mut r, t as f64);
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

    /// A gzip member of `line` repeated to `bytes` bytes, without a line end.
    fn gzip_of_one_line(bytes: u64) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        let block = [b' '; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            enc.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        enc.finish().unwrap()
    }

    /// A small file that unpacks to one endless line (a gzip bomb) is refused at the bound,
    /// not read whole: 1.8 MB took 413 MB to say "not a recording header".
    #[test]
    fn a_line_beyond_the_bound_is_not_read_whole() {
        let bomb = gzip_of_one_line(LINE_MAX_BYTES + 2);
        let Err(err) = read_from(&bomb[..]) else {
            panic!("read");
        };
        assert_eq!(
            err.to_string(),
            "line 1: longer than 8 MiB decompressed, more than a recording writes; \
             read no further"
        );
        // After good ticks: those are kept, the cut is named.
        let mut r = Recorder::new(3600.0, 1 << 20, String::new());
        for t in 0..5 {
            push_at(&mut r, t as f64);
        }
        let mut bytes = r.file_bytes("test");
        bytes.extend(gzip_of_one_line(LINE_MAX_BYTES + 2));
        let rec = read_from(&bytes[..]).expect("header readable");
        let why = rec.cut.expect("cut reported");
        assert!(
            why.ends_with(
                ": longer than 8 MiB decompressed, more than a recording writes; read no further"
            ),
            "{why}"
        );
        assert_eq!(rec.ticks.len(), 5);
    }

    /// The whole text is bounded too: many lines within the bound each must not add up to
    /// any size. The ticks before the bound are kept, the cut named.
    #[test]
    fn a_recording_beyond_the_bound_is_read_up_to_it() {
        let mut r = Recorder::new(3600.0, 1 << 20, String::new());
        for t in 0..200 {
            push_at(&mut r, t as f64);
        }
        let bytes = r.file_bytes("test");
        let whole = read_from(&bytes[..]).expect("readable");
        assert_eq!((whole.ticks.len(), whole.cut), (200, None));
        let mut text = Vec::new();
        MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut text)
            .unwrap();
        let half = text.len() as u64 / 2;
        let rec = read_within(&bytes[..], half).expect("header readable");
        let why = rec.cut.expect("cut reported");
        assert!(
            why.ends_with(&format!(
                ": more than {half} bytes decompressed, more than a recording holds; read no \
                 further"
            )),
            "{why}"
        );
        assert!(!rec.ticks.is_empty() && rec.ticks.len() < 200);
        for (n, flat) in &rec.ticks {
            assert_eq!(flat, &tick_at(*n as f64));
        }
    }

    fn outcome_with(ccl_a: f64, lost: &[&str], events: Vec<Event>) -> Outcome {
        Outcome {
            online: 1,
            lost: lost.iter().map(|s| s.to_string()).collect(),
            limits: aggregator_core::envelope::Limits {
                cvl_v: 55.0,
                ccl_a,
                dcl_a: 100.0,
            },
            events,
            ..absent_outcome()
        }
    }

    #[test]
    fn happenings_are_what_save_on_names() {
        use aggregator_core::feedin::FeedInEvent;
        let outcome = outcome_with;
        let all = SaveOn::default();
        let before = PublishedValues {
            ccl_a: 50.0,
            dcl_a: 100.0,
            ..PublishedValues::default()
        };
        let quiet = outcome(50.0, &[], Vec::new());
        assert!(happenings(&all, &quiet, Some(&before), 0).is_empty());
        let lost = outcome(50.0, &["B"], Vec::new());
        assert_eq!(happenings(&all, &lost, Some(&before), 0), ["battery lost"]);
        assert!(
            happenings(&all, &lost, Some(&before), 1).is_empty(),
            "still lost"
        );
        let stop = outcome(0.0, &[], Vec::new());
        assert_eq!(happenings(&all, &stop, Some(&before), 0), ["bound"]);
        let fault = outcome(0.0, &[], vec![Event::StrategyFault("x".into())]);
        assert_eq!(happenings(&all, &fault, None, 0), ["strategy fault"]);
        let feed_in = outcome(50.0, &[], vec![Event::FeedIn(FeedInEvent::Restoring(1))]);
        assert_eq!(happenings(&all, &feed_in, None, 0), ["feed-in"]);
        let both = outcome(0.0, &[], vec![Event::FeedIn(FeedInEvent::Restoring(1))]);
        assert_eq!(
            happenings(&all, &both, Some(&before), 0),
            ["feed-in", "bound"],
            "every cause of the tick"
        );
        let none = SaveOn {
            battery_lost: false,
            bound: false,
            strategy_fault: false,
            feed_in: false,
        };
        for o in [&lost, &stop, &fault, &feed_in] {
            assert!(happenings(&none, o, Some(&before), 0).is_empty());
        }
    }

    #[test]
    fn a_cause_that_keeps_coming_back_saves_once_per_episode() {
        let mut h = Happenings::new(std::time::Duration::from_secs(30 * 60));
        let said = |reason: &str| Some(reason.to_string());
        assert_eq!(h.judge(0.0, &["bound"]), said("bound"));
        // A value hovering at a bound, every 2 minutes for two hours: one episode.
        let again: Vec<String> = (1..=60)
            .filter_map(|k| h.judge(f64::from(k) * 120.0, &["bound"]))
            .collect();
        assert!(again.is_empty(), "{again:?}");
        // Away for record.keep: a new episode.
        assert_eq!(h.judge(7200.0 + 1799.0, &[]), None);
        assert_eq!(h.judge(7200.0 + 1800.0, &["bound"]), said("bound"));
        // Another cause is an episode of its own.
        assert_eq!(
            h.judge(9000.0 + 120.0, &["battery lost"]),
            said("battery lost")
        );
        // A record.keep below a minute: the quiet time is a minute, from the last happening.
        let mut h = Happenings::new(std::time::Duration::from_secs(10));
        assert_eq!(h.judge(0.0, &["feed-in"]), said("feed-in"));
        assert_eq!(h.judge(30.0, &["feed-in"]), None);
        assert_eq!(h.judge(89.0, &["feed-in"]), None, "29 s after the last");
        assert_eq!(h.judge(149.0, &["feed-in"]), said("feed-in"));
    }

    #[test]
    fn another_cause_within_the_gap_is_saved_once_the_gap_has_passed() {
        let mut h = Happenings::new(std::time::Duration::from_secs(30 * 60));
        let said = |reason: &str| Some(reason.to_string());
        assert_eq!(h.judge(100.0, &["feed-in"]), said("feed-in"));
        assert_eq!(h.judge(110.0, &["bound"]), None, "within the gap: waits");
        assert_eq!(h.judge(120.0, &["bound", "feed-in"]), None);
        assert_eq!(h.judge(159.0, &[]), None);
        assert_eq!(
            h.judge(160.0, &[]),
            said("bound"),
            "the gap has passed: saved, once"
        );
        assert_eq!(h.judge(161.0, &[]), None);
        // Two new causes waiting are saved in one file.
        assert_eq!(h.judge(170.0, &["battery lost"]), None);
        assert_eq!(h.judge(180.0, &["strategy fault"]), None);
        assert_eq!(h.judge(220.0, &[]), said("battery lost and strategy fault"));
        // Two causes at one tick, outside the gap: one file for both.
        let mut h = Happenings::new(std::time::Duration::from_secs(30 * 60));
        assert_eq!(
            h.judge(0.0, &["feed-in", "bound"]),
            said("feed-in and bound")
        );
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
