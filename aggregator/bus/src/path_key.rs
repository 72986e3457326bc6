//! A D-Bus path as the key of the values read, held in the key itself when short.
//!
//! At each tick the daemon looks up every value of every battery in the cache by its path:
//! about 1,200 lookups at 16 batteries of 32 cells. The cache was last touched a second
//! before, so each lookup reads memory gone cold. With `String` keys a lookup read three
//! places: the table's control bytes, the slot, and the key's bytes on the heap; `memcmp`,
//! most of it on these keys, took a sixth of the daemon's CPU time at that bank. A [`PathKey`]
//! holds a path of up to [`INLINE`] bytes in the slot itself: every path of a battery that is
//! read but `/System/NrOfModulesBlocking…`, and those of chargers and shunts; longer ones (and
//! the settings' long paths) are on the heap, as before.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

/// The longest path held in the key itself: a key takes 32 bytes, as a `String` and its tag
/// would.
pub const INLINE: usize = 30;

/// A path as a map key: looked up by `&str` (`values.get("/Dc/0/Voltage")`), read with
/// [`PathKey::as_str`].
#[derive(Clone)]
pub struct PathKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl PathKey {
    /// The key of `path`.
    pub fn new(path: &str) -> Self {
        let mut bytes = [0u8; INLINE];
        match bytes.get_mut(..path.len()) {
            Some(room) => {
                room.copy_from_slice(path.as_bytes());
                // `path.len()` ≤ INLINE < 256.
                let len = path.len() as u8;
                PathKey(Repr::Inline { len, bytes })
            }
            None => PathKey(Repr::Heap(path.into())),
        }
    }

    /// The path.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len).min(INLINE)];
                // SAFETY: an inline key is the whole of a `&str` copied in (`new`), so its
                // bytes are valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Heap(text) => text,
        }
    }
}

impl Borrow<str> for PathKey {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// As `str` hashes, so that a lookup by `&str` finds the key.
impl Hash for PathKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq for PathKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PathKey {}

impl std::fmt::Debug for PathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregator_core::path_hash::PathMap;
    use std::collections::HashMap;
    use std::hash::BuildHasherDefault;

    #[test]
    fn a_key_reads_back_as_its_path_in_place_or_on_the_heap() {
        let long = "/Alarms/HighChargeTemperatureAndMore";
        for path in [
            "",
            "/Soc",
            "/Voltages/Cell16",
            &"x".repeat(INLINE),
            long,
            "/Température",
        ] {
            let key = PathKey::new(path);
            assert_eq!(key.as_str(), path);
            assert_eq!(format!("{key:?}"), format!("{path:?}"));
            let inline = matches!(key.0, Repr::Inline { .. });
            assert_eq!(inline, path.len() <= INLINE, "{path}");
        }
        assert_eq!(std::mem::size_of::<PathKey>(), 32);
    }

    #[test]
    fn a_map_of_keys_is_looked_up_by_str_as_a_map_of_strings_is() {
        type Keyed =
            HashMap<PathKey, usize, BuildHasherDefault<aggregator_core::path_hash::PathHasher>>;
        let paths: Vec<String> = (0..200)
            .map(|k| format!("/Voltages/Cell{k}"))
            .chain((0..50).map(|k| format!("/Alarms/SomethingRatherLongNumber{k}")))
            .collect();
        let mut keyed = Keyed::default();
        let mut strings: PathMap<usize> = PathMap::default();
        for (k, path) in paths.iter().enumerate() {
            keyed.insert(PathKey::new(path), k);
            strings.insert(path.clone(), k);
        }
        for path in &paths {
            assert_eq!(keyed.get(path.as_str()), strings.get(path.as_str()));
        }
        assert_eq!(keyed.get("/Voltages/Cell200"), None);
        assert_eq!(keyed.get("/Voltages/Cell1 "), None);
        let mut keys: Vec<&str> = keyed.keys().map(PathKey::as_str).collect();
        keys.sort_unstable();
        let mut by_text: Vec<&str> = strings.keys().map(String::as_str).collect();
        by_text.sort_unstable();
        assert_eq!(keys, by_text);
    }
}
