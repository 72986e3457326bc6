//! Reading `state.json` part by part (docs/state.md §4): a key this version does not know is
//! left aside, a part that cannot be read keeps its fresh value, and every other part is taken
//! back. A file from a newer version, or one damaged in a single value, must not cost an open
//! feed-in episode or the counter's charge.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// `text` read as a `T`, part by part, with a line for each key left aside and each part not
/// taken back. `shape` is a `T` with every optional part present, so that keys inside an
/// absent part are known too. `Err` only when the text is no JSON object at all.
pub fn read<T>(text: &str, shape: &T) -> Result<(T, Vec<String>), String>
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
    let mut problems = Vec::new();
    take(&file, &shape, "", &mut taken, &fits, &mut problems);
    let state = T::deserialize(&taken).map_err(|err| err.to_string())?;
    Ok((state, problems))
}

/// Takes the keys of the object `file` (at `pointer` in the whole) into `taken`, one by one,
/// each kept only if the whole still `fits`.
fn take(
    file: &Value,
    shape: &Value,
    pointer: &str,
    taken: &mut Value,
    fits: &dyn Fn(&Value) -> Result<(), String>,
    problems: &mut Vec<String>,
) {
    let (Some(file), Some(shape)) = (file.as_object(), shape.as_object()) else {
        return;
    };
    for (key, value) in file {
        let name = dotted(pointer, key);
        let Some(part_shape) = shape.get(key) else {
            problems.push(unknown(&name));
            continue;
        };
        let at = format!("{pointer}/{key}");
        if value.is_object() && taken.pointer(&at).is_some_and(Value::is_object) {
            take(value, part_shape, &at, taken, fits, problems);
            continue;
        }
        let value = known(value, part_shape, &name, problems);
        let Some(slot) = taken.pointer_mut(&at) else {
            continue;
        };
        let fresh = std::mem::replace(slot, value);
        if let Err(err) = fits(taken) {
            if let Some(slot) = taken.pointer_mut(&at) {
                *slot = fresh;
            }
            problems.push(format!("{name}: {err}; not restored"));
        }
    }
}

/// `value` without the keys `shape` does not have, each named.
fn known(value: &Value, shape: &Value, name: &str, problems: &mut Vec<String>) -> Value {
    let (Some(map), Some(shape)) = (value.as_object(), shape.as_object()) else {
        return value.clone();
    };
    let mut kept = Map::new();
    for (key, part) in map {
        let inner = format!("{name}.{key}");
        match shape.get(key) {
            Some(part_shape) => {
                kept.insert(key.clone(), known(part, part_shape, &inner, problems));
            }
            None => problems.push(unknown(&inner)),
        }
    }
    Value::Object(kept)
}

fn unknown(name: &str) -> String {
    format!("{name}: unknown key (from another version?), ignored")
}

fn dotted(pointer: &str, key: &str) -> String {
    let parent = pointer.trim_start_matches('/').replace('/', ".");
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}
