//! The one module that writes files: the persisted state of the daemon, and the flight
//! recorder's recordings.
//!
//! Everything that must survive a restart lives in one JSON file (`state.json` in
//! `paths.state_dir`): the Coulomb counter, the strategy's opaque state and the feed-in memory.
//! It is written atomically: a temporary file in the same folder, fsync, rename, fsync of the
//! folder. A kill at any moment leaves either the old or the new file, never a torn one.
//! A missing file is a first start; of a damaged one every part that can be read is taken back
//! ([`parts`]), and one that cannot be read at all is kept beside as `state.json.unreadable`
//! before a safe start replaces it, never a crash.
//!
//! The other programs of the workspace write through it too (`simulate`'s and `replay`'s
//! output, the demo's and the private bus's configuration files, the importer's config and
//! state): `clippy.toml` bans every file-writing call elsewhere, which this module alone allows.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aggregator_core::state::{State, StrategyState};

mod parts;

/// Name of the state file inside the state folder.
pub const STATE_FILE: &str = "state.json";

/// Name of the copy of a state file that could not be read at all, beside it.
pub const UNREADABLE_COPY: &str = "state.json.unreadable";

/// The largest state file read (docs/state.md §4): a real one is a few kB.
pub const STATE_MAX_BYTES: u64 = 1024 * 1024;

/// The most the keys of a newer version that this one keeps may take, as JSON text
/// (docs/state.md §1): every save writes them again.
pub const UNKNOWN_MAX_BYTES: usize = 64 * 1024;

/// Reads the regular file `path` whole, if it holds at most `max_bytes`: a config, the state
/// file. Opened without blocking (a FIFO in its place would hold the start for ever) and judged
/// by the open file's own metadata, so that what is judged is what is read. The error names
/// what is wrong (the file's type, or its size and the bound), without the path: the caller
/// names the file. Here because opening with options is the state writer's alone
/// (`clippy.toml`); this opens for reading only.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a file"
        };
        return Err(ReadError::NotAFile(what));
    }
    if meta.len() > max_bytes {
        return Err(ReadError::TooLarge {
            bytes: meta.len(),
            max_bytes,
        });
    }
    // The file may grow while it is read: never more than the bound plus one byte.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge {
            bytes: bytes.len() as u64,
            max_bytes,
        });
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    let bytes = read_bounded(path, max_bytes)?;
    String::from_utf8(bytes).map_err(|err| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stream did not contain valid UTF-8 ({})", err.utf8_error()),
        ))
    })
}

/// Why [`read_bounded`] read nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// Not a regular file: what it is.
    NotAFile(&'static str),
    /// Larger than the bound.
    TooLarge {
        /// Its size (or what was read of it, when it grew).
        bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
}

impl ReadError {
    /// Whether there is no file at all.
    pub fn is_missing(&self) -> bool {
        matches!(self, ReadError::Io(err) if err.kind() == std::io::ErrorKind::NotFound)
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(err) => write!(f, "{err}"),
            ReadError::NotAFile(what) => write!(f, "not a regular file ({what})"),
            ReadError::TooLarge { bytes, max_bytes } => write!(
                f,
                "too large: {bytes} bytes, more than the {max_bytes} bytes ({}) read at most",
                size_text(*max_bytes)
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// A bound as people write it: `1 MiB`, `64 KiB`.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Why the saved state could not be used (the daemon then starts from a safe state).
#[derive(Debug)]
pub enum LoadProblem {
    /// No file yet: a first start.
    Missing(PathBuf),
    /// The file exists but is empty, truncated or not ours.
    Unreadable(PathBuf, String),
    /// No state file is used: why ([`StateStore::unused`]).
    NotUsed(String),
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadProblem::Missing(path) => write!(f, "{}: no saved state yet", path.display()),
            LoadProblem::Unreadable(path, why) => {
                write!(f, "{}: saved state is unreadable ({why})", path.display())
            }
            LoadProblem::NotUsed(why) => write!(f, "no state file is read or written: {why}"),
        }
    }
}

/// Reads and writes the state file of one folder.
#[derive(Clone, Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// The keys of the file last loaded that this version does not know (a newer version
    /// wrote them), written back unchanged by every save (docs/state.md §1).
    unknown: Vec<parts::Unknown>,
    /// Why no file is read or written, for a store that uses none.
    unused: Option<String>,
}

impl StateStore {
    /// The store in `dir` (created on the first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            unknown: Vec::new(),
            unused: None,
        }
    }

    /// A store that reads and writes no file, for `why` (the state folder is not known:
    /// docs/tick.md §6). Loading says why; saving does nothing.
    pub fn unused(why: impl Into<String>) -> Self {
        Self {
            dir: PathBuf::new(),
            unknown: Vec::new(),
            unused: Some(why.into()),
        }
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// Loads the state, or says why there is none to use; see [`StateStore::load_parts`].
    pub fn load(&mut self) -> Result<State, LoadProblem> {
        self.load_parts().map(|(state, _)| state)
    }

    /// Loads every part of the state that can be read, with a line for each key left aside
    /// and each part not taken back (docs/state.md §4), or says why there is none to use. A
    /// file that cannot be read at all is kept as [`UNREADABLE_COPY`] (once: not again while
    /// the copy holds the same bytes). Temporary files left by a write that was cut short (a
    /// kill -9, a power cut) are removed first: the state file itself is always whole, and
    /// nothing else writes in the folder. The keys this version does not know are kept and
    /// written back by the next [`StateStore::save`].
    pub fn load_parts(&mut self) -> Result<(State, Vec<String>), LoadProblem> {
        if let Some(why) = &self.unused {
            return Err(LoadProblem::NotUsed(why.clone()));
        }
        self.remove_leftovers();
        self.unknown.clear();
        let path = self.path();
        let bytes = match read_bounded(&path, STATE_MAX_BYTES) {
            Ok(bytes) => bytes,
            Err(err) if err.is_missing() => return Err(LoadProblem::Missing(path)),
            // Not copied: a file that large would wear the flash with a copy as large, and
            // moved aside it is kept all the same (docs/state.md §4).
            Err(err @ ReadError::TooLarge { .. }) => {
                let copy = self.dir.join(UNREADABLE_COPY);
                let why = match fs::rename(&path, &copy) {
                    Ok(()) => format!("{err}; moved to {}", copy.display()),
                    Err(moving) => format!("{err}; not moved to {} ({moving})", copy.display()),
                };
                return Err(LoadProblem::Unreadable(path, why));
            }
            Err(err) => return Err(LoadProblem::Unreadable(path, err.to_string())),
        };
        let shape = State {
            charge_ah: Some(0.0),
            capacity_ah: Some(0.0),
            strategy: Some(StrategyState {
                plugin: String::new(),
                state: String::new(),
            }),
            last_plausible_day: Some(0),
            ..State::default()
        };
        let read = std::str::from_utf8(&bytes)
            .map_err(|err| err.to_string())
            .and_then(|text| parts::read(text, &shape, UNKNOWN_MAX_BYTES));
        let read = read.map(|read| {
            self.unknown = read.unknown;
            (read.value, read.problems)
        });
        read.map_err(|why| {
            let copy = self.dir.join(UNREADABLE_COPY);
            let kept = match read_bounded(&copy, STATE_MAX_BYTES) {
                Ok(old) if old == bytes => Ok(()),
                _ => write_atomically(&copy, &bytes),
            };
            let why = match kept {
                Ok(()) => format!("{why}; kept as {}", copy.display()),
                Err(err) => format!("{why}; no copy kept ({}: {err})", copy.display()),
            };
            LoadProblem::Unreadable(path, why)
        })
    }

    fn remove_leftovers(&self) {
        remove_leftovers(&self.dir);
    }

    /// Writes the state atomically, with the keys of the file loaded that this version does
    /// not know where they were; the file is readable by all, writable by its owner only.
    pub fn save(&self, state: &State) -> std::io::Result<()> {
        self.write(state, false).map(|_| ())
    }

    /// [`StateStore::save`], unless the file already holds these very bytes: for a save that
    /// no change asked for (the bus connection lost), which then costs a read, not a write to
    /// flash (docs/state.md §2). Whether it wrote.
    pub fn save_if_changed(&self, state: &State) -> std::io::Result<bool> {
        self.write(state, true)
    }

    /// Both saves: nothing for a store that uses no file; with `changed_only`, nothing when
    /// the file holds the text already. Whether it wrote.
    fn write(&self, state: &State, changed_only: bool) -> std::io::Result<bool> {
        if self.unused.is_some() {
            return Ok(false);
        }
        let text = self.text(state)?;
        if changed_only && fs::read(self.path()).is_ok_and(|on_disk| on_disk == text.as_bytes()) {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir)?;
        write_atomically(&self.path(), text.as_bytes())?;
        Ok(true)
    }

    /// The file's text for `state`.
    fn text(&self, state: &State) -> std::io::Result<String> {
        // Without such keys, straight from the state: its keys in the order of `State`.
        let text = if self.unknown.is_empty() {
            serde_json::to_string_pretty(state)
        } else {
            serde_json::to_value(state).and_then(|mut file| {
                parts::put_back(&mut file, &self.unknown);
                serde_json::to_string_pretty(&file)
            })
        };
        text.map_err(std::io::Error::other)
    }
}

/// Removes the temporary files that writes cut short (a kill -9, a power cut) left in `dir`:
/// the state folder, the recordings' folder. Only while no write into it is under way (at
/// start).
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            if let Err(err) = fs::remove_file(entry.path()) {
                tracing::warn!("cannot remove {}: {err}", entry.path().display());
            }
        }
    }
}

/// The temporary file of a write: `.state-<random>.tmp` beside the file it becomes.
const TEMP_PREFIX: &str = ".state-";
const TEMP_SUFFIX: &str = ".tmp";

/// Write to a temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = folder_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(path).map_err(|err| err.error)?;
    fs::File::open(dir)?.sync_all()
}

/// The folder `path` is in: `.` for a bare file name (whose parent is the empty path, which
/// cannot be opened to sync it).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates the folder `path` and its parents (an output folder of `simulate` or `replay`).
pub fn create_folder(path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(path)
}

/// Creates (or empties) the file `path` for a child program's output, which it appends to as
/// it runs (the demo's daemon log).
pub fn log_file(path: &Path) -> std::io::Result<fs::File> {
    fs::File::create(path)
}

/// Writes a recording atomically into its folder (made if missing), then removes the oldest
/// other recordings of its kind there beyond `max_files` (by the time in their names, as a
/// number), so that a fault that repeats cannot fill the flash. The kinds are counted apart:
/// those asked for (`-asked` in the name: the `record` command, SIGUSR1) and those saved for
/// happenings, so that a happening never removes a recording someone asked for. The one just
/// written always stays: the others may carry the times of a clock that was set ahead, or of
/// one at 1970 at boot.
pub fn write_recording(path: &Path, bytes: &[u8], max_files: u32) -> std::io::Result<()> {
    let dir = folder_of(path);
    // Made if missing; something else in its place is named as such, not as the EEXIST the
    // making gives.
    if fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()) {
        return Err(std::io::Error::other(
            "not a folder: a file of that name is in the way",
        ));
    }
    fs::create_dir_all(dir)?;
    write_atomically(path, bytes)?;
    let written = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let asked = written.as_deref().is_some_and(is_asked);
    let mut others: Vec<(u128, String)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("recording-") && n.ends_with(".jsonl.gz"))
        .filter(|n| Some(n) != written.as_ref() && is_asked(n) == asked)
        .map(|n| (recording_stamp(&n), n))
        .collect();
    others.sort();
    let keep = (max_files.max(1) as usize).saturating_sub(1);
    let extra = others.len().saturating_sub(keep);
    for (_, name) in &others[..extra] {
        fs::remove_file(dir.join(name))?;
    }
    Ok(())
}

/// Whether a recording's name says it was asked for.
fn is_asked(name: &str) -> bool {
    (name.strip_suffix(".jsonl.gz"))
        .and_then(|n| n.strip_suffix(crate::record::ASKED))
        .is_some_and(|n| n.ends_with('-'))
}

/// The time in a recording's name (`recording-<ms>-…`), 0 where it has none.
fn recording_stamp(name: &str) -> u128 {
    let digits = name.trim_start_matches("recording-");
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().unwrap_or(0)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aggregator_core::feedin::FeedIn;

    #[test]
    fn a_new_recording_stays_whatever_the_times_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| dir.path().join(format!("recording-{name}.jsonl.gz"));
        // Three from a clock set ahead (year 2286), one from a boot at 1970 (few digits).
        for name in [
            "9999999999999-ahead",
            "9999999999998-ahead",
            "9999999999997-ahead",
        ] {
            fs::write(file(name), b"old").unwrap();
        }
        fs::write(file("5000-boot"), b"old").unwrap();
        let new = file("1765000000000-fault");
        write_recording(&new, b"new", 3).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "recording-1765000000000-fault.jsonl.gz",
                "recording-9999999999998-ahead.jsonl.gz",
                "recording-9999999999999-ahead.jsonl.gz",
            ]
        );
        // And by the numbers, not the text: 5000 is older than 1765000000000.
        assert!(recording_stamp("recording-5000-boot.jsonl.gz") < 1_765_000_000_000);
    }
    use aggregator_core::state::{Latches, StrategyState};

    fn sample() -> State {
        State {
            charge_ah: Some(306.005),
            capacity_ah: Some(560.0),
            strategy: Some(StrategyState {
                plugin: "lfp-balancing".into(),
                state: r#"{"last_balancing":"2026-11-01"}"#.into(),
            }),
            feed_in: FeedIn {
                disabled_by_us: true,
                saved_value: Some(1),
                strategy_off: false,
                clear_for_s: 20.0,
                near_lowered_ccl: true,
            },
            latches: Latches {
                high_cell: true,
                low_cell: false,
            },
            last_plausible_day: Some(20_500),
        }
    }

    #[test]
    fn a_file_from_before_the_latches_were_kept_reads_with_none_set() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let old = r#"{"charge_ah": 100.0, "feed_in": {"disabled_by_us": true, "saved_value": 1}}"#;
        fs::write(store.path(), old).unwrap();
        let state = store.load().unwrap();
        assert_eq!(state.latches, Latches::default());
        assert_eq!(state.feed_in.clear_for_s, 0.0);
        assert!(!state.feed_in.near_lowered_ccl);
    }

    #[test]
    fn recordings_beyond_max_files_are_removed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("recordings");
        for k in 0..5 {
            let path = folder.join(format!("recording-{k:03}-x.jsonl.gz"));
            write_recording(&path, b"r", 3).unwrap();
        }
        fs::write(folder.join("notes.txt"), "kept").unwrap();
        let mut names: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "notes.txt",
                "recording-002-x.jsonl.gz",
                "recording-003-x.jsonl.gz",
                "recording-004-x.jsonl.gz"
            ]
        );
    }

    #[test]
    fn a_file_in_place_of_the_recordings_folder_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("recordings");
        fs::write(&folder, "a file").unwrap();
        let err = write_recording(&folder.join("recording-1-x.jsonl.gz"), b"r", 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a folder: a file of that name is in the way"
        );
        assert_eq!(fs::read(&folder).unwrap(), b"a file");
    }

    #[test]
    fn happenings_never_remove_the_recordings_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("recordings");
        let save = |k: u32, reason: &str| {
            let path = folder.join(format!("recording-{k:03}-{reason}.jsonl.gz"));
            write_recording(&path, b"r", 2).unwrap();
        };
        save(0, "asked");
        save(1, "bound");
        save(2, "asked");
        for k in 3..8 {
            save(k, "feed-in");
        }
        let names = || {
            let mut names: Vec<String> = fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(),
            [
                "recording-000-asked.jsonl.gz",
                "recording-002-asked.jsonl.gz",
                "recording-006-feed-in.jsonl.gz",
                "recording-007-feed-in.jsonl.gz",
            ]
        );
        // Asked ones are counted among themselves.
        save(8, "asked");
        assert_eq!(
            names(),
            [
                "recording-002-asked.jsonl.gz",
                "recording-006-feed-in.jsonl.gz",
                "recording-007-feed-in.jsonl.gz",
                "recording-008-asked.jsonl.gz",
            ]
        );
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path().join("state"));
        assert!(matches!(store.load(), Err(LoadProblem::Missing(_))));
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
    }

    #[test]
    fn a_file_with_unknown_keys_or_a_bad_part_gives_back_every_other_part() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut file = serde_json::to_value(sample()).unwrap();
        // As a newer version would write it, then one value damaged.
        file["soc_model"] = serde_json::json!({"k": 2});
        file["feed_in"]["ramp_s"] = serde_json::json!(30);
        file["strategy"]["version"] = serde_json::json!(2);
        file["latches"]["low_cell"] = serde_json::json!("yes");
        file["charge_ah"] = serde_json::json!("lots");
        fs::write(store.path(), file.to_string()).unwrap();
        let (state, problems) = store.load_parts().unwrap();
        let expected = State {
            charge_ah: None,
            latches: Latches {
                high_cell: true,
                low_cell: false,
            },
            ..sample()
        };
        assert_eq!(state, expected);
        let mut problems = problems;
        problems.sort();
        assert_eq!(problems.len(), 5, "{problems:?}");
        for (problem, start) in problems.iter().zip([
            "charge_ah: invalid type",
            "feed_in.ramp_s: unknown key",
            "latches.low_cell: invalid type",
            "soc_model: unknown key",
            "strategy.version: unknown key",
        ]) {
            assert!(problem.starts_with(start), "{problem}");
        }
        // Nothing to keep a copy of: the parts were read.
        assert!(!dir.path().join(UNREADABLE_COPY).exists());
    }

    /// docs/state.md §4: a user's value of the wrong type never costs an open feed-in episode;
    /// `1.0` is read as 1, and what is no whole number comes back as 1. The episode was dropped
    /// before (feed-in stayed at our 0 for good), `1.0` included.
    #[test]
    fn an_open_episode_with_a_saved_value_of_the_wrong_type_is_kept_and_ends_with_1() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let file = |value: &str| {
            format!(
                r#"{{"charge_ah":300,"capacity_ah":560,"feed_in":{{"disabled_by_us":true,
                "saved_value":{value},"strategy_off":false,"clear_for_s":0,
                "near_lowered_ccl":false}}}}"#
            )
        };
        fs::write(store.path(), file("1.0")).unwrap();
        let (state, problems) = store.load_parts().unwrap();
        assert_eq!(problems, Vec::<String>::new());
        let (state, problems) = state.checked();
        assert_eq!(problems, Vec::<String>::new());
        assert!(state.feed_in.disabled_by_us);
        assert_eq!(state.feed_in.saved_value, Some(1));
        for bad in [r#""1""#, "1e308", "0.5"] {
            fs::write(store.path(), file(bad)).unwrap();
            let (state, read) = store.load_parts().unwrap();
            let (state, checked) = state.checked();
            let problems = [read, checked].concat();
            assert_eq!(problems.len(), 2, "{bad}: {problems:?}");
            assert!(
                problems
                    .iter()
                    .all(|p| p.starts_with("feed_in.saved_value: ")),
                "{bad}: {problems:?}"
            );
            assert!(state.feed_in.disabled_by_us, "{bad}");
            assert_eq!(state.feed_in.saved_value, Some(1), "{bad}");
            assert_eq!(state.charge_ah, Some(300.0), "{bad}");
        }
    }

    /// docs/state.md §4: a charge the bank cannot hold is no charge.
    #[test]
    fn a_charge_above_its_capacity_is_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        for charge in ["1e308", "560.5", "-1"] {
            fs::write(
                store.path(),
                format!(r#"{{"charge_ah":{charge},"capacity_ah":560}}"#),
            )
            .unwrap();
            let (state, problems) = store.load_parts().unwrap();
            assert!(problems.is_empty(), "{problems:?}");
            let (state, problems) = state.checked();
            assert_eq!(state.charge_ah, None, "{charge}");
            assert_eq!(state.capacity_ah, Some(560.0), "{charge}");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with("charge_ah: "), "{problems:?}");
        }
        // Full, and a rescaled full charge a rounding above: taken back.
        for charge in [560.0, 560.0 * (1.0 + 1e-12)] {
            let state = State {
                charge_ah: Some(charge),
                capacity_ah: Some(560.0),
                ..State::default()
            };
            assert_eq!(state.checked(), (state.clone(), Vec::new()));
        }
    }

    /// docs/state.md §1: a downgrade, then an upgrade, keeps what the newer version saved.
    #[test]
    fn unknown_keys_of_a_newer_version_survive_a_load_and_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut file = serde_json::to_value(sample()).unwrap();
        file["soc_model"] = serde_json::json!({"k": 2, "curve": [1.5, 2]});
        file["feed_in"]["ramp_s"] = serde_json::json!(30);
        file["strategy"]["version"] = serde_json::json!(2);
        fs::write(store.path(), file.to_string()).unwrap();
        let (state, problems) = store.load_parts().unwrap();
        assert_eq!(state, sample());
        assert_eq!(problems.len(), 3, "{problems:?}");
        // This version's values change; the newer version's stay as they were.
        let changed = State {
            charge_ah: Some(100.0),
            ..sample()
        };
        store.save(&changed).unwrap();
        let mut expected = serde_json::to_value(&changed).unwrap();
        expected["soc_model"] = file["soc_model"].clone();
        expected["feed_in"]["ramp_s"] = serde_json::json!(30);
        expected["strategy"]["version"] = serde_json::json!(2);
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(saved, expected);
        // And again by a store that loaded the file it wrote.
        let mut again = StateStore::new(dir.path());
        assert_eq!(again.load().unwrap(), changed);
        again.save(&changed).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(saved, expected);
        // A part no longer written takes its unknown keys with it.
        let no_strategy = State {
            strategy: None,
            ..changed
        };
        again.save(&no_strategy).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(saved["strategy"], serde_json::Value::Null);
        assert_eq!(saved["soc_model"], file["soc_model"]);
    }

    #[test]
    fn a_file_that_cannot_be_read_at_all_is_kept_beside_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let copy = dir.path().join(UNREADABLE_COPY);
        fs::write(store.path(), "{\"charge_ah\": 1").unwrap();
        let Err(LoadProblem::Unreadable(_, why)) = store.load_parts() else {
            panic!("read");
        };
        assert!(
            why.ends_with(&format!("kept as {}", copy.display())),
            "{why}"
        );
        assert_eq!(fs::read(&copy).unwrap(), b"{\"charge_ah\": 1");
        // Not written again for the same file (a start that could not replace it).
        let written = fs::metadata(&copy).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(store.load_parts().is_err());
        assert_eq!(fs::metadata(&copy).unwrap().modified().unwrap(), written);
        // The new state replaces the file; the copy stays.
        store.save(&sample()).unwrap();
        assert_eq!(store.load_parts().unwrap(), (sample(), Vec::new()));
        assert!(copy.exists());
    }

    /// `f` on a thread, its answer awaited for at most 10 s: a read that blocks for ever fails
    /// the test instead of hanging it.
    pub(crate) fn within_10_s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, answer) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = send.send(f());
        });
        answer
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read blocked")
    }

    pub(crate) fn make_fifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path that lives through the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    /// docs/state.md §4: a FIFO in place of the file does not hold the start.
    #[test]
    fn a_fifo_in_place_of_the_state_file_is_unreadable_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        make_fifo(&path.join(STATE_FILE));
        let loaded = within_10_s(move || StateStore::new(path).load_parts());
        let Err(LoadProblem::Unreadable(_, why)) = loaded else {
            panic!("{loaded:?}");
        };
        assert_eq!(why, "not a regular file (a FIFO)");
        // Nothing to keep: a FIFO holds no bytes.
        assert!(!dir.path().join(UNREADABLE_COPY).exists());
        let err = within_10_s(move || read_bounded(Path::new("/dev/zero"), 10)).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file (a device)");
    }

    /// docs/state.md §4: a file beyond the bound is not read, and moved aside, not copied.
    #[test]
    fn a_state_file_beyond_the_bound_is_moved_aside_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let copy = dir.path().join(UNREADABLE_COPY);
        fs::write(&copy, "an older unreadable file").unwrap();
        let big = fs::File::create(store.path()).unwrap();
        big.set_len(STATE_MAX_BYTES + 1).unwrap();
        drop(big);
        let Err(LoadProblem::Unreadable(_, why)) = store.load_parts() else {
            panic!("read");
        };
        assert_eq!(
            why,
            format!(
                "too large: 1048577 bytes, more than the 1048576 bytes (1 MiB) read at most; \
                 moved to {}",
                copy.display()
            )
        );
        assert!(!store.path().exists());
        assert_eq!(fs::metadata(&copy).unwrap().len(), STATE_MAX_BYTES + 1);
        // The next start is a first one; the next save a file of the usual size.
        assert!(matches!(store.load_parts(), Err(LoadProblem::Missing(_))));
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
    }

    /// docs/state.md §1: the keys of a newer version are kept up to a bound, not a key of any
    /// size written again at every save.
    #[test]
    fn unknown_keys_beyond_the_bound_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let mut file = serde_json::to_value(sample()).unwrap();
        file["huge"] = serde_json::json!("x".repeat(UNKNOWN_MAX_BYTES));
        file["small"] = serde_json::json!({"k": 2});
        fs::write(store.path(), file.to_string()).unwrap();
        let (state, problems) = store.load_parts().unwrap();
        assert_eq!(state, sample());
        assert_eq!(
            problems,
            [
                "huge: unknown key (from another version?), ignored; not kept: 65542 bytes, \
                 beyond the 65536 bytes kept of the keys this version does not know",
                "small: unknown key (from another version?), ignored; kept in the file",
            ]
        );
        store.save(&sample()).unwrap();
        let saved: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(store.path()).unwrap()).unwrap();
        assert_eq!(saved.get("huge"), None);
        assert_eq!(saved["small"], file["small"]);
    }

    /// docs/tick.md §6: a store that uses no file reads and writes none.
    #[test]
    fn an_unused_store_reads_and_writes_nothing() {
        let mut store = StateStore::unused("the state folder is not known");
        let Err(LoadProblem::NotUsed(why)) = store.load_parts() else {
            panic!("loaded");
        };
        assert_eq!(why, "the state folder is not known");
        store.save(&sample()).unwrap();
        assert!(!Path::new(STATE_FILE).exists());
        // Nor at a lost bus connection's save.
        assert!(!store.save_if_changed(&sample()).unwrap());
        assert!(!Path::new(STATE_FILE).exists());
    }

    #[test]
    fn file_is_not_world_writable_and_no_temp_is_left() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        store.save(&sample()).unwrap();
        store.save(&State::default()).unwrap();
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o022, 0, "mode {mode:o}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn empty_truncated_and_garbage_files_are_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        let full = serde_json::to_string(&sample()).unwrap();
        for bad in ["", &full[..full.len() / 2], "\u{0}\u{1}garbage", "[1, 2]"] {
            fs::write(store.path(), bad).unwrap();
            match store.load() {
                Err(LoadProblem::Unreadable(path, why)) => {
                    assert_eq!(path, store.path());
                    assert!(!why.is_empty());
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn temporary_files_of_an_interrupted_write_are_removed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = StateStore::new(dir.path());
        store.save(&State::default()).unwrap();
        let leftover = dir.path().join(".state-AbC123.tmp");
        fs::write(&leftover, "{\"charge_").unwrap();
        let other = dir.path().join("notes.txt");
        fs::write(&other, "kept").unwrap();
        assert!(store.load().is_ok());
        assert!(!leftover.exists());
        assert!(other.exists());
    }
}
