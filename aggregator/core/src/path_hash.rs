//! A fast hash for maps keyed by D-Bus paths and names.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map by path or name, hashed with [`PathHasher`].
pub type PathMap<V> = HashMap<String, V, BuildHasherDefault<PathHasher>>;

/// The hash of D-Bus paths and names (a folded multiply per 8 bytes), for the maps looked up
/// at every signal or tick: the bus layer's cache of the values read, and the published
/// service's paths. SipHash cost more than the rest of a signal's handling. Its resistance to
/// chosen keys is not needed: a cached path is one of a fixed set (cells up to a number), a
/// published path one of ours, and unique names are given by the bus.
#[derive(Clone, Copy, Default)]
pub struct PathHasher(u64);

impl PathHasher {
    /// A folded multiply per word: the high half of the product is mixed back into the low
    /// half (a plain multiply, as FxHash does, leaves a difference in the top bits of one word
    /// in the top bits, where the next word can cancel it: `/Voltages/Cell109` and
    /// `/Voltages/Cell186` hashed alike).
    fn add(&mut self, word: u64) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let product = u128::from(self.0 ^ word) * u128::from(K);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        // The last bytes as a word padded with zeros. Zero padding is unambiguous for D-Bus
        // strings, which hold no NUL byte (and `str` hashing appends 0xff); mixing the length
        // into the padded word would not be (it made `/Voltages/Cell1` and `/Voltages/Cell18`
        // alike). The word is the slice's last 8 bytes shifted past those hashed already, not
        // a copy of a length known only at run time (a call to `memcpy`, at each of the
        // hundreds of lookups a tick makes).
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let word = match bytes.len().checked_sub(8) {
                Some(start) => {
                    let mut last = [0u8; 8];
                    last.copy_from_slice(&bytes[start..]);
                    u64::from_le_bytes(last) >> (8 * (8 - rest.len()))
                }
                None => (rest.iter().enumerate())
                    .fold(0, |word, (k, b)| word | u64::from(*b) << (8 * k)),
            };
            self.add(word);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash of the words of the bytes zero-padded to a multiple of 8, as written plainly.
    #[test]
    fn the_last_word_is_the_zero_padded_rest() {
        let text: Vec<u8> = (0..40u8).map(|k| b'A' + k).collect();
        for len in 0..text.len() {
            let bytes = &text[..len];
            let mut plain = PathHasher::default();
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                plain.add(u64::from_le_bytes(word));
            }
            let mut hasher = PathHasher::default();
            hasher.write(bytes);
            assert_eq!(hasher.finish(), plain.finish(), "{len} bytes");
        }
    }

    #[test]
    fn the_hash_tells_every_cached_path_apart() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<PathHasher>::default();
        let mut paths: Vec<String> = (1..=4096).map(|k| format!("/Voltages/Cell{k}")).collect();
        paths.extend(
            [
                "/Dc/0/Voltage",
                "/Dc/0/Current",
                "/Dc/0/Power",
                "/Soc",
                "/Capacity",
            ]
            .iter()
            .map(|p| p.to_string()),
        );
        paths.extend((0..10_000).map(|n| format!(":1.{n}")));
        let hashes: std::collections::HashSet<u64> =
            paths.iter().map(|p| build.hash_one(p)).collect();
        assert_eq!(hashes.len(), paths.len(), "two keys hash alike");
        assert_eq!(build.hash_one("/Soc"), build.hash_one(String::from("/Soc")));
    }
}
