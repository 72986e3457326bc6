//! Reading `state.json` part by part (docs/state.md §4): a key this version does not know is
//! left aside, a part that cannot be read keeps its fresh value, and every other part is taken
//! back. A file from a newer version, or one damaged in a single value, must not cost an open
//! feed-in episode or the counter's charge. The keys left aside are kept, to be written back
//! unchanged ([`put_back`], docs/state.md §1): going back to the newer version finds them.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// A key this version does not know: where it was (the keys from the top of the file down to
/// it) and its value as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Unknown {
    keys: Vec<String>,
    value: Value,
}

/// What [`read`] gives: the value, a line for each key left aside and each part not taken
/// back, and the keys left aside.
#[derive(Debug)]
pub struct Read<T> {
    pub value: T,
    pub problems: Vec<String>,
    pub unknown: Vec<Unknown>,
}

/// The keys left aside and the lines of a reading.
struct Found {
    problems: Vec<String>,
    unknown: Vec<Unknown>,
    /// What the keys kept may still take, as JSON text.
    room_bytes: usize,
    /// The bound on all of them.
    max_bytes: usize,
}

impl Found {
    /// A key left aside, kept while the keys kept take at most `max_bytes` in all: every save
    /// writes them again (docs/state.md §1).
    fn unknown(&mut self, keys: Vec<String>, value: &Value) {
        let key = keys.join(".");
        let bytes = key.len() + serde_json::to_string(value).map_or(usize::MAX, |t| t.len());
        if bytes > self.room_bytes {
            self.problems.push(format!(
                "{key}: unknown key (from another version?), ignored; not kept: {bytes} bytes, \
                 beyond the {} bytes kept of the keys this version does not know",
                self.max_bytes
            ));
            return;
        }
        self.room_bytes -= bytes;
        self.problems.push(format!(
            "{key}: unknown key (from another version?), ignored; kept in the file"
        ));
        self.unknown.push(Unknown {
            keys,
            value: value.clone(),
        });
    }
}

/// `text` read as a `T`, part by part, with a line for each key left aside and each part not
/// taken back. `shape` is a `T` with every optional part present, so that keys inside an
/// absent part are known too. The keys left aside are kept while they take at most
/// `unknown_max_bytes` in all. `Err` only when the text is no JSON object at all.
pub fn read<T>(text: &str, shape: &T, unknown_max_bytes: usize) -> Result<Read<T>, String>
where
    T: Serialize + DeserializeOwned + Default,
{
    let file: Value = serde_json::from_str(text).map_err(|err| err.to_string())?;
    if !file.is_object() {
        return Err("not a JSON object".into());
    }
    let shape = serde_json::to_value(shape).map_err(|err| err.to_string())?;
    let mut taken = serde_json::to_value(T::default()).map_err(|err| err.to_string())?;
    let fits = |v: &Value| T::deserialize(v).map(drop).map_err(|err| err.to_string());
    let mut found = Found {
        problems: Vec::new(),
        unknown: Vec::new(),
        room_bytes: unknown_max_bytes,
        max_bytes: unknown_max_bytes,
    };
    take(&file, &shape, &[], &mut taken, &fits, &mut found);
    let value = T::deserialize(&taken).map_err(|err| err.to_string())?;
    Ok(Read {
        value,
        problems: found.problems,
        unknown: found.unknown,
    })
}

/// Puts the keys `unknown` back into `file` (a state as this version writes it), each where it
/// was, unchanged. A key inside a part that is no longer written (the strategy's state gone)
/// goes with it; a key this version writes itself stays as written.
pub fn put_back(file: &mut Value, unknown: &[Unknown]) {
    for Unknown { keys, value } in unknown {
        let Some((key, parents)) = keys.split_last() else {
            continue;
        };
        let parent = (parents.iter()).try_fold(&mut *file, |at, k| at.get_mut(k.as_str()));
        if let Some(part) = parent.and_then(Value::as_object_mut) {
            part.entry(key.as_str()).or_insert_with(|| value.clone());
        }
    }
}

/// Takes the keys of the object `file` (at `keys` in the whole) into `taken`, one by one,
/// each kept only if the whole still `fits`.
fn take(
    file: &Value,
    shape: &Value,
    keys: &[String],
    taken: &mut Value,
    fits: &dyn Fn(&Value) -> Result<(), String>,
    found: &mut Found,
) {
    let (Some(file), Some(shape)) = (file.as_object(), shape.as_object()) else {
        return;
    };
    for (key, value) in file {
        let inner = [keys, std::slice::from_ref(key)].concat();
        let Some(part_shape) = shape.get(key) else {
            found.unknown(inner, value);
            continue;
        };
        let at = pointer(&inner);
        if value.is_object() && taken.pointer(&at).is_some_and(Value::is_object) {
            take(value, part_shape, &inner, taken, fits, found);
            continue;
        }
        let value = known(value, part_shape, &inner, found);
        let Some(slot) = taken.pointer_mut(&at) else {
            continue;
        };
        let fresh = std::mem::replace(slot, value);
        if let Err(err) = fits(taken) {
            if let Some(slot) = taken.pointer_mut(&at) {
                *slot = fresh;
            }
            found
                .problems
                .push(format!("{}: {err}; not restored", inner.join(".")));
        }
    }
}

/// `value` (at `keys`) without the keys `shape` does not have, each found.
fn known(value: &Value, shape: &Value, keys: &[String], found: &mut Found) -> Value {
    let (Some(map), Some(shape)) = (value.as_object(), shape.as_object()) else {
        return value.clone();
    };
    let mut kept = Map::new();
    for (key, part) in map {
        let inner = [keys, std::slice::from_ref(key)].concat();
        match shape.get(key) {
            Some(part_shape) => {
                kept.insert(key.clone(), known(part, part_shape, &inner, found));
            }
            None => found.unknown(inner, part),
        }
    }
    Value::Object(kept)
}

/// The JSON pointer of `keys` (RFC 6901: `~` and `/` in a key escaped).
fn pointer(keys: &[String]) -> String {
    keys.iter()
        .map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_go_back_where_they_were_unless_their_part_is_gone() {
        let unknown = |keys: &[&str], value| Unknown {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            value,
        };
        let mut file = json!({"a": 1, "part": {"b": 2}, "gone": null});
        put_back(
            &mut file,
            &[
                unknown(&["new"], json!({"x": [1]})),
                unknown(&["part", "new/~"], json!(3)),
                unknown(&["gone", "new"], json!(4)),
                unknown(&["a"], json!("not ours")),
                unknown(&["a", "deeper"], json!(5)),
            ],
        );
        assert_eq!(
            file,
            json!({"a": 1, "part": {"b": 2, "new/~": 3}, "gone": null, "new": {"x": [1]}})
        );
        assert_eq!(pointer(&["part".into(), "new/~".into()]), "/part/new~1~0");
    }
}
