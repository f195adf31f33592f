//! The layering, checked from the source: no two top-level modules import
//! each other, directly or around a circle, and neither do two sibling
//! files of one module (DESIGN.md: "an arrow only ever points down").
//!
//! The check reads every `crate::m` and `super::m` path outside comments and
//! `#[cfg(test)]` items, builds the graphs, and finds the edges that lie on
//! a circle (both ends in one strongly connected component). The edges that
//! still do are listed in [`KNOWN_TOP`] and [`KNOWN_SIBLING`]; the list is
//! exact, so it can only shrink: an edge that joins a circle fails the test,
//! and so does one that left its circle and is still listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges between top-level modules that lie on a circle today: none since
/// each subsystem owns its peer messages (issue 20).
const KNOWN_TOP: &[(&str, &str)] = &[];

/// What the transport may import: it knows no subsystem (DESIGN.md: "peer:
/// a transport that knows no subsystem").
const PEER_MAY_IMPORT: &[&str] = &[
    "budget", "clock", "config", "encoding", "error", "metrics", "security",
];

/// Edges between sibling files of one module (module, from, to) that lie
/// on a circle today: none since antientropy's rounds take `Parts`.
const KNOWN_SIBLING: &[(&str, &str, &str)] = &[];

#[test]
fn no_import_circles_beyond_the_known_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src);
    assert!(files.len() > 50, "found only {} files in src", files.len());
    let tops: BTreeSet<String> = files.iter().filter_map(|f| top(&src, f)).collect();

    let mut top_graph: Graph = BTreeMap::new();
    let mut sibling_graphs: BTreeMap<String, Graph> = BTreeMap::new();
    let mut edges_read = 0;
    for file in &files {
        let Some(from) = top(&src, file) else {
            continue;
        };
        let text = without_tests(&std::fs::read_to_string(file).expect("read a source file"));
        for to in crate_paths(&text) {
            if to != from && tops.contains(&to) {
                top_graph.entry(from.clone()).or_default().insert(to);
                edges_read += 1;
            }
        }
        let Some(child) = child(&src, file) else {
            continue;
        };
        let children = children(&src, &from);
        let depth = file
            .strip_prefix(src.join(&from))
            .map_or(0, |p| p.components().count());
        let mut to_siblings: BTreeSet<String> = BTreeSet::new();
        // `super::x` from a file right under the module names its sibling
        // x; from deeper files, `super::super::x` does.
        let prefix = "super::".repeat(depth);
        for path in paths_after(&text, &prefix) {
            to_siblings.insert(path);
        }
        for path in paths_after(&text, &format!("crate::{from}::")) {
            to_siblings.insert(path);
        }
        for to in to_siblings {
            if to != child && children.contains(&to) {
                sibling_graphs
                    .entry(from.clone())
                    .or_default()
                    .entry(child.clone())
                    .or_default()
                    .insert(to);
            }
        }
    }
    assert!(
        edges_read > 100,
        "read only {edges_read} imports between top-level modules: the parser broke"
    );
    for must in [
        ("api", "coordinator"),
        ("coordinator", "ring"),
        ("node", "api"),
    ] {
        assert!(
            top_graph.get(must.0).is_some_and(|to| to.contains(must.1)),
            "the parser missed {} -> {}",
            must.0,
            must.1
        );
    }

    let mut problems = Vec::new();
    for to in top_graph.get("peer").into_iter().flatten() {
        if !PEER_MAY_IMPORT.contains(&to.as_str()) {
            problems.push(format!(
                "peer -> {to}: the transport imports a module it must not know"
            ));
        }
    }
    let on_circle = circular_edges(&top_graph);
    let known: BTreeSet<(String, String)> = KNOWN_TOP
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (a, b) in on_circle.difference(&known) {
        problems.push(format!(
            "{a} -> {b} closes an import circle between top-level modules"
        ));
    }
    for (a, b) in known.difference(&on_circle) {
        problems.push(format!(
            "{a} -> {b} is no longer on a circle: delete it from KNOWN_TOP"
        ));
    }
    let mut on_circle = BTreeSet::new();
    for (module, graph) in &sibling_graphs {
        for (a, b) in circular_edges(graph) {
            on_circle.insert((module.clone(), a, b));
        }
    }
    let known: BTreeSet<(String, String, String)> = KNOWN_SIBLING
        .iter()
        .map(|(m, a, b)| (m.to_string(), a.to_string(), b.to_string()))
        .collect();
    for (m, a, b) in on_circle.difference(&known) {
        problems.push(format!(
            "{m}::{a} -> {m}::{b} closes an import circle between sibling files"
        ));
    }
    for (m, a, b) in known.difference(&on_circle) {
        problems.push(format!(
            "{m}::{a} -> {m}::{b} is no longer on a circle: delete it from KNOWN_SIBLING"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The parser and the circle finder, on a made-up tree of modules.
#[test]
fn the_checker_sees_imports_and_circles() {
    let text = without_tests(
        "use crate::a::X;\n// crate::b in a comment\nuse crate::{c::Y, d};\n\
         fn f() { crate::e::g(); }\n#[cfg(test)]\nmod tests {\n    use crate::h;\n}\n",
    );
    assert_eq!(
        crate_paths(&text),
        ["a", "c", "d", "e"].map(String::from).into()
    );
    let mut graph: Graph = BTreeMap::new();
    for (a, b) in [("x", "y"), ("y", "z"), ("z", "x"), ("z", "w"), ("w", "v")] {
        graph.entry(a.into()).or_default().insert(b.into());
    }
    let circle: BTreeSet<(String, String)> = [("x", "y"), ("y", "z"), ("z", "x")]
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .into();
    assert_eq!(circular_edges(&graph), circle);
}

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to; none for lib.rs and main.rs,
/// and none for test files.
fn top(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    if rel
        .components()
        .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs")
    {
        return None;
    }
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The child of its top-level module a file belongs to: `exchange` for
/// src/antientropy/exchange.rs and for src/antientropy/exchange/x.rs; none
/// for the module's own root file.
fn child(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts = rel.components().skip(1);
    let second = parts.next()?.as_os_str().to_str()?;
    let name = second.strip_suffix(".rs").unwrap_or(second);
    (name != "mod").then(|| name.to_string())
}

/// The children of top-level module `m`: its files and folders.
fn children(src: &Path, m: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(src.join(m)) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let name = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (name != "mod" && name != "tests").then_some(name)
        })
        .collect()
}

/// The source without comments and without `#[cfg(test)]` items.
fn without_tests(text: &str) -> String {
    let code: Vec<&str> = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect();
    let code = code.join("\n");
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        rest = skip_item(&rest[at + "#[cfg(test)]".len()..]);
    }
    out.push_str(rest);
    out
}

/// What follows the item at the start of `text`: after its `;`, or after
/// the brace that closes its body.
fn skip_item(text: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            ';' if depth == 0 => return &text[i + 1..],
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return &text[i + 1..];
                }
            }
            _ => {}
        }
    }
    ""
}

/// The names that `crate::` paths start with, `use crate::{a, b::c}` too.
fn crate_paths(text: &str) -> BTreeSet<String> {
    paths_after(text, "crate::")
}

/// The names right after `prefix` where it begins a path (a grouped list
/// counts each head): not inside a longer name (`mycrate::`) or a longer
/// path (the `super::x` in `super::super::x`), and not when the path goes
/// up further (`super::` then `super::`).
fn paths_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &text[at + prefix.len()..];
        if rest.starts_with("super::") {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group));
        } else if let Some(name) = ident(rest) {
            out.insert(name);
        }
    }
    out
}

/// The first name of each path in a `{...}` group, up to its closing brace.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut expecting = true;
    let mut i = 0;
    let bytes = group.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'{' => depth += 1,
            b'}' if depth == 0 => break,
            b'}' => depth -= 1,
            b',' if depth == 0 => expecting = true,
            c if expecting && depth == 0 && (c.is_ascii_alphabetic() || c == b'_') => {
                if let Some(name) = ident(&group[i..]) {
                    i += name.len();
                    heads.push(name);
                    expecting = false;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

fn ident(text: &str) -> Option<String> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (end > 0 && !text.starts_with(|c: char| c.is_ascii_digit())).then(|| text[..end].to_string())
}

/// Every edge whose ends lie in one strongly connected component.
fn circular_edges(graph: &Graph) -> BTreeSet<(String, String)> {
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(node) = stack.pop() {
            if node == to {
                return true;
            }
            if seen.insert(node.clone()) {
                stack.extend(graph.get(&node).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut out = BTreeSet::new();
    for (a, tos) in graph {
        for b in tos {
            if reaches(b, a) {
                out.insert((a.clone(), b.clone()));
            }
        }
    }
    out
}
