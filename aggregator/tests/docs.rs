//! The repository explains itself: every `docs/<page>.md §n` reference in code, tests and
//! documents names a page of `docs/` and a section that page has, and nothing cites a document
//! that is not in the repository. Walks the tree with `std::fs` only.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Citations of documents outside the repository. Written in pieces so that this file does not
/// match its own patterns.
const FOREIGN: [&str; 6] = [
    concat!("SP", "EC §"),
    concat!("SP", "EC.md"),
    concat!("REFER", "ENCE §"),
    concat!("REFER", "ENCE.md"),
    concat!("VENUS", "-DBUS"),
    concat!("HE", "AD §"),
];

/// This file, whose examples and patterns are not references.
fn is_this_file(path: &Path) -> bool {
    path.ends_with(file!())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the aggregator crate sits in the repository")
        .to_path_buf()
}

/// `path` as the repository names it.
fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every text file of the repository but build output and git's own, with its text.
fn text_files() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path, out),
                Ok(t) if t.is_file() => {
                    // Binary files (seeds, images) are not text and cite nothing.
                    if let Ok(text) = fs::read_to_string(&path) {
                        out.push((path, text));
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    assert!(
        out.iter().any(|(p, _)| p.ends_with("docs/README.md")),
        "docs/README.md not found under {}",
        root().display()
    );
    out
}

/// The section numbers of a Markdown page: `## 3. Title` gives `3`, `### 2.4 Title` gives `2.4`.
fn sections(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let title = line.strip_prefix('#')?.trim_start_matches('#').trim_start();
            let number: String = title
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let number = number.trim_end_matches('.');
            (!number.is_empty()).then(|| number.to_string())
        })
        .collect()
}

/// A section number at the start of `s` (after `§`), and its length in bytes.
fn section_at(s: &str) -> Option<(String, usize)> {
    let len = s
        .char_indices()
        .take_while(|(_, c)| c.is_ascii_digit() || *c == '.')
        .map(|(i, c)| i + c.len_utf8())
        .last()?;
    let number = s[..len].trim_end_matches('.');
    (!number.is_empty()).then(|| (number.to_string(), len))
}

/// One `§` reference: the page it points to (`None`: the page it is written in) and the section.
struct Reference {
    line: usize,
    page: Option<String>,
    section: String,
}

/// The `§` references of a text, and the `§` signs that belong to no reference. A reference is
/// `<name>.md §n`, followed by more sections joined by `,`, `and`, `to`, `-` or `–`
/// (`docs/guard.md §5 and §7`).
fn references(text: &str) -> (Vec<Reference>, Vec<usize>) {
    let mut found = Vec::new();
    let mut bare = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let mut used = BTreeSet::new();
        let mut from = 0;
        while let Some(at) = line[from..].find(".md") {
            let end = from + at + 3;
            from = end;
            let start = line[..end - 3]
                .char_indices()
                .rev()
                .find(|(_, c)| !(c.is_ascii_alphanumeric() || "_-/.".contains(*c)))
                .map_or(0, |(i, c)| i + c.len_utf8());
            let page = &line[start..end];
            let mut rest = &line[end..];
            let mut pos = end;
            let mut first = true;
            loop {
                let skipped = rest.len()
                    - rest
                        .trim_start_matches([' ', ',', '-', '–'])
                        .trim_start_matches("and ")
                        .trim_start_matches("to ")
                        .len();
                let after = &rest[skipped..];
                // The first section follows the page directly: `page.md §3`.
                if first && skipped > 1 {
                    break;
                }
                let Some(tail) = after.strip_prefix('§') else {
                    break;
                };
                let Some((section, len)) = section_at(tail) else {
                    break;
                };
                used.insert(pos + skipped);
                found.push(Reference {
                    line: k + 1,
                    page: Some(page.to_string()),
                    section,
                });
                let consumed = skipped + '§'.len_utf8() + len;
                rest = &rest[consumed..];
                pos += consumed;
                first = false;
            }
        }
        for (i, _) in line.match_indices('§') {
            if used.contains(&i) {
                continue;
            }
            match section_at(&line[i + '§'.len_utf8()..]) {
                Some((section, _)) => found.push(Reference {
                    line: k + 1,
                    page: None,
                    section,
                }),
                None => bare.push(k + 1),
            }
        }
    }
    (found, bare)
}

#[test]
fn every_section_reference_names_a_page_and_a_section_that_exist() {
    let root = root();
    let docs = root.join("docs");
    let mut problems = Vec::new();
    for (path, text) in text_files() {
        if is_this_file(&path) {
            continue;
        }
        let shown = relative(&root, &path);
        let in_docs = path.parent() == Some(docs.as_path());
        let (refs, bare) = references(&text);
        for line in bare {
            problems.push(format!("{shown}:{line}: a § without a section number"));
        }
        for r in refs {
            let target = match &r.page {
                // Within docs/, a bare `§n` is the page's own section, and `page.md §n` a
                // page beside it.
                None if in_docs => path.clone(),
                Some(page) if in_docs && !page.contains('/') => docs.join(page),
                Some(page) if page.starts_with("docs/") => root.join(page),
                None => {
                    problems.push(format!(
                        "{shown}:{}: §{} names no page: write docs/<page>.md §{}",
                        r.line, r.section, r.section
                    ));
                    continue;
                }
                Some(page) => {
                    problems.push(format!(
                        "{shown}:{}: {page} §{} is not a page of docs/",
                        r.line, r.section
                    ));
                    continue;
                }
            };
            let Ok(page) = fs::read_to_string(&target) else {
                problems.push(format!(
                    "{shown}:{}: {} does not exist",
                    r.line,
                    relative(&root, &target)
                ));
                continue;
            };
            if !sections(&page).contains(&r.section) {
                problems.push(format!(
                    "{shown}:{}: {} has no section {}",
                    r.line,
                    relative(&root, &target),
                    r.section
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn nothing_cites_a_document_outside_the_repository() {
    let root = root();
    let mut problems = Vec::new();
    for (path, text) in text_files() {
        let shown = relative(&root, &path);
        for (k, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            for pattern in FOREIGN {
                if line.contains(pattern) {
                    problems.push(format!("{shown}:{}: cites `{pattern}`", k + 1));
                }
            }
            // An issue tracker's numbered issue is not in the repository either.
            let word = concat!("iss", "ue ");
            for (i, _) in lower.match_indices(word) {
                if lower[i + word.len()..].starts_with(|c: char| c.is_ascii_digit()) {
                    problems.push(format!("{shown}:{}: cites an issue", k + 1));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_index_lists_every_page() {
    let docs = root().join("docs");
    let index = fs::read_to_string(docs.join("README.md")).expect("docs/README.md");
    let mut missing = Vec::new();
    for entry in fs::read_dir(&docs).expect("docs/").flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") && name != "README.md" && !index.contains(&format!("({name})")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/README.md does not list {missing:?}"
    );
}

#[test]
fn the_reference_parser_reads_what_the_pages_write() {
    let (refs, bare) = references("see docs/guard.md §5 and §7.2, docs/tick.md §3; §2.4 here; §x");
    let got: Vec<_> = refs
        .iter()
        .map(|r| (r.page.clone(), r.section.clone()))
        .collect();
    let page = |p: &str| Some(p.to_string());
    assert_eq!(
        got,
        [
            (page("docs/guard.md"), "5".to_string()),
            (page("docs/guard.md"), "7.2".to_string()),
            (page("docs/tick.md"), "3".to_string()),
            (None, "2.4".to_string()),
        ]
    );
    assert_eq!(bare, [1]);
    assert_eq!(
        sections("# T\n## 1. A\n### 1.2 B\n## 10. C\ntext 3. no"),
        ["1", "1.2", "10"].map(String::from).into_iter().collect()
    );
}
