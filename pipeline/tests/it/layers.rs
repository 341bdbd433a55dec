//! The layer rule of `pipeline/src` (docs/ARCHITECTURE.md): a module imports only
//! from layers below its own, and no modules import each other in a circle.
//!
//! The check reads the sources: every `crate::...` path outside comments and
//! outside the `#[cfg(test)]` module at the end of a file (tests may reach
//! anywhere) is an edge from the file's module to the longest module the path
//! names. A new module must be given a layer in `LAYERS`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path prefixes and their layers, lowest first. A module takes the layer
/// of the longest prefix that matches it.
const LAYERS: &[(&str, u8)] = &[
    ("shutdown", 0),
    ("metrics", 0),
    ("privacy::tables", 0),
    ("privacy::keys", 0),
    ("privacy::geo", 0),
    ("query::sql", 0),
    ("dev::generator", 0),
    ("dev::emif", 0),
    ("config", 1),
    ("kafka", 2),
    ("aggregate", 3),
    ("compact", 3),
    ("cost", 3),
    ("privacy::consent", 3),
    ("ingest", 4),
    ("privacy::subjects", 4),
    ("privacy::lifecycle", 4),
    ("privacy::erasure", 5),
    ("inputs", 5),
    ("elhub", 5),
    ("query", 6),
    ("serve::jwt", 0),
    ("serve::guard", 0),
    ("serve::metrics", 1),
    ("serve::policy", 1),
    ("serve::settings", 2),
    ("serve::token", 3),
    ("serve::functions", 0),
    ("serve::scan", 0),
    ("serve::pg_types", 0),
    ("serve::pg_settings", 0),
    ("serve::catalog", 4),
    ("serve::session", 5),
    ("serve::server", 6),
    ("service", 7),
    ("dev", 8),
    // Folder facades (they declare their modules and re-export) and the binary.
    ("privacy", 9),
    ("serve", 9),
    ("main", 10),
];

/// `pipeline/src/a/b.rs` -> `a::b`; `a/mod.rs` -> `a`; `lib.rs` -> `` (the root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments, string contents and its trailing test
/// module.
fn code_of(text: &str) -> String {
    let end = test_module_start(text).unwrap_or(text.len());
    let mut out = String::new();
    let mut chars = text[..end].chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_string = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push('"');
            }
            '\'' => {
                // A char literal ('"', '\'') is skipped; a lifetime is kept.
                let mut ahead = chars.clone();
                match (ahead.next(), ahead.next()) {
                    (Some('\\'), _) => {
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push(c),
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Where the file's test module begins: a `#[cfg(test)]` line followed, after
/// any other attributes, by a `mod` line.
fn test_module_start(text: &str) -> Option<usize> {
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            let after = &text[at + line.len()..];
            let next = after.lines().map(str::trim).find(|l| !l.starts_with("#["));
            if next.is_some_and(|l| l.starts_with("mod ")) {
                return Some(at);
            }
        }
        at += line.len();
    }
    None
}

/// Every module path a file's code names through `crate::` (including the paths
/// inside `use crate::{a::b, c::{d, e}}` groups), as `a::b::Item` strings.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `meterline_crate::` or similar, not ours
        }
        expand("", rest, &mut out);
    }
    out
}

/// Expand the path at the start of `text` (after a `crate::` or inside a group)
/// with `prefix` in front.
fn expand(prefix: &str, text: &str, out: &mut Vec<String>) {
    let ident_end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let path = format!("{prefix}{}", &text[..ident_end]);
    let after = &text[ident_end..];
    if (path.is_empty() || path.ends_with("::")) && after.starts_with('{') {
        // A group: split its top-level items and expand each.
        let mut depth = 0;
        let mut start = 1;
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        expand(&path, after[start..i].trim_start(), out);
                        return;
                    }
                }
                ',' if depth == 1 => {
                    expand(&path, after[start..i].trim_start(), out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        return;
    }
    let path = path.trim_end_matches(':');
    if !path.is_empty() && path != "self" {
        out.push(path.to_owned());
    }
}

/// The module a path names: its longest prefix that is a module.
fn target<'a>(path: &str, modules: &'a BTreeSet<String>) -> Option<&'a String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| modules.get(&parts[..n].join("::")))
}

fn layer(module: &str) -> Option<(&'static str, u8)> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| module == *prefix || module.starts_with(&format!("{prefix}::")))
        .max_by_key(|(prefix, _)| prefix.len())
        .copied()
}

/// Module -> the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 20,
        "read only {} files of {}",
        files.len(),
        src.display()
    );
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let from = module_of(&src, file);
        let to: BTreeSet<String> = crate_paths(&code_of(&text))
            .iter()
            .filter_map(|p| target(p, &modules))
            .filter(|m| **m != from && !m.is_empty())
            .cloned()
            .collect();
        graph.insert(from, to);
    }
    graph
}

/// The edges that break the rule, as readable lines.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (from, targets) in graph {
        if from.is_empty() {
            continue; // lib.rs declares the modules
        }
        let Some((from_entry, from_layer)) = layer(from) else {
            out.push(format!("`{from}` has no layer: add it to LAYERS in tests/it/layers.rs and to docs/ARCHITECTURE.md"));
            continue;
        };
        for to in targets {
            let Some((to_entry, to_layer)) = layer(to) else {
                continue; // reported as its own line
            };
            if to_entry != from_entry && to_layer >= from_layer {
                out.push(format!(
                    "`{from}` (layer {from_layer}) imports `{to}` (layer {to_layer}): \
                     a module may import only from lower layers"
                ));
            }
        }
    }
    out
}

/// A cycle among the modules, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|m| m == next).expect("on the stack");
                    let mut found = stack[start..].to_vec();
                    found.push(next.clone());
                    return Some(found);
                }
                0 => {
                    if let Some(found) = visit(next, graph, state, stack) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(found) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn modules_import_only_from_lower_layers_and_never_in_a_circle() {
    let graph = graph();
    // The reader must see the edges it is meant to judge: a few known ones.
    for (from, to) in [
        ("ingest::runner", "config"),
        ("privacy::lifecycle", "aggregate"),
        ("service", "privacy::erasure"),
    ] {
        assert!(
            graph.get(from).is_some_and(|t| t.contains(to)),
            "the reader missed `{from}` -> `{to}`: {:?}",
            graph.get(from)
        );
    }
    let wrong = violations(&graph);
    assert!(wrong.is_empty(), "layer rule broken:\n{}", wrong.join("\n"));
    if let Some(found) = cycle(&graph) {
        panic!("import cycle: {}", found.join(" -> "));
    }
}

#[test]
fn the_reader_expands_groups_and_skips_comments_and_tests() {
    let code = code_of(
        "use crate::{a::b, c::{d, e::F}};\n\
         // crate::commented::out\n\
         let x = \"crate::in_a_string\";\n\
         let q = '\"'; let r = '\\''; fn l<'a>(_: &'a str) {}\n\
         fn f() { crate::g::h(); }\n\
         #[cfg(test)]\n#[allow(dead_code)]\nmod tests { use crate::only_in_tests; }\n",
    );
    assert_eq!(
        crate_paths(&code),
        ["a::b", "c::d", "c::e::F", "g::h"].map(String::from)
    );
    let mut graph = BTreeMap::new();
    graph.insert("config".to_owned(), BTreeSet::from(["ingest".to_owned()]));
    graph.insert("ingest".to_owned(), BTreeSet::from(["config".to_owned()]));
    assert_eq!(
        violations(&graph).len(),
        1,
        "config -> ingest breaks the rule"
    );
    assert!(cycle(&graph).is_some(), "config <-> ingest is a cycle");
}
