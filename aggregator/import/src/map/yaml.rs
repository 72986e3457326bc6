//! The imported `config.yaml` as text: keys in the order first set, a comment above each
//! section and key, numbers and strings as YAML reads them back.

use super::*;

/// A number as YAML: the shortest text that reads back to the same `f64`.
pub(super) fn yaml_number(n: f64) -> String {
    n.to_string()
}

pub(super) fn yaml_list(items: &[f64]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|n| yaml_number(*n))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub(super) fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

pub(super) fn yaml_item(value: &Value) -> String {
    match value {
        Value::Str(s) => yaml_string(s),
        other => other
            .as_f64()
            .map_or_else(|| yaml_string(&other.repr()), yaml_number),
    }
}

/// The YAML document, keys in the order first set, with comments above keys.
#[derive(Default)]
pub(super) struct Tree {
    items: Vec<Item>,
}

struct Item {
    key: String,
    value: Option<String>,
    comment: Option<String>,
    children: Vec<Item>,
}

/// A comment above each top-level section, saying what it is.
const SECTION_COMMENTS: &[(&str, &str)] = &[
    (
        "batteries",
        "Which services are batteries and what the bank holds.",
    ),
    ("current_source", "Where the bank current comes from."),
    ("soc", "The own Coulomb counter."),
    (
        "strategy",
        "The charge strategy: a plugin that computes CVL, CCL and DCL.",
    ),
    (
        "safety",
        "Bounds the daemon enforces on any strategy, whatever it returns. REQUIRED.",
    ),
    ("publish", "The published virtual battery."),
    (
        "paths",
        "Folders; relative paths are relative to this file's folder.",
    ),
    ("logging", "Logging."),
];

impl Tree {
    pub(super) fn set(&mut self, path: &str, value: String, comment: Option<String>) {
        let mut items = &mut self.items;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let at = match items.iter().position(|item| item.key == *part) {
                Some(at) => at,
                None => {
                    items.push(Item {
                        key: part.to_string(),
                        value: None,
                        comment: None,
                        children: Vec::new(),
                    });
                    items.len() - 1
                }
            };
            if i + 1 == parts.len() {
                items[at].value = Some(value);
                if comment.is_some() {
                    items[at].comment = comment;
                }
                return;
            }
            items = &mut items[at].children;
        }
    }

    pub(super) fn render(&self, header: &str) -> String {
        let mut out = String::new();
        for line in header.lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        // The sections in the order of the shipped config.yaml.
        let order = [
            "update_interval",
            "batteries",
            "current_source",
            "soc",
            "strategy",
            "safety",
            "publish",
            "paths",
            "logging",
        ];
        let mut items: Vec<&Item> = self.items.iter().collect();
        items.sort_by_key(|item| {
            order
                .iter()
                .position(|k| *k == item.key)
                .unwrap_or(order.len())
        });
        for item in items {
            out.push('\n');
            if let Some((_, comment)) = SECTION_COMMENTS.iter().find(|(k, _)| *k == item.key) {
                out.push_str(&format!("# {comment}\n"));
            }
            render_item(item, 0, &mut out);
        }
        out
    }
}

fn render_item(item: &Item, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    if let Some(comment) = &item.comment {
        out.push_str(&format!("{indent}# {comment}\n"));
    }
    match &item.value {
        Some(value) if item.children.is_empty() => {
            out.push_str(&format!("{indent}{}: {value}\n", item.key))
        }
        _ => {
            out.push_str(&format!("{indent}{}:\n", item.key));
            for child in &item.children {
                render_item(child, depth + 1, out);
            }
        }
    }
}
