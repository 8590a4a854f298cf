//! Imports flow one way, down the request path. This reads `src/` as text
//! and finds, for each top-level module, the other top-level modules it
//! names (`crate::x`), ignoring comments and unit tests. It fails on any
//! cycle, and on any import that climbs the layering below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The gateway's modules, from the top of the request path to the bottom.
/// A module may only import modules listed after it.
const LAYERS: &[&str] = &[
    "demo",
    "app",
    "rlimit",
    "admin",
    "http",
    "graphiql",
    "graphql",
    "sessions",
    "live",
    "auth",
    "error",
    "nodes",
    "accounts",
    "paging",
    "cache",
    "upstream",
    "shared",
    "telemetry",
    "instruments",
    "settings",
    "cursor",
    "model",
    "escape",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file below `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that ships: comments and the unit tests left out.
fn shipped_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).expect("read file");
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]" && !line.starts_with(' ') {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Module name -> the other top-level modules it imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&root).expect("read src") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        let files = modules.entry(name).or_default();
        if path.is_dir() {
            rust_files(&path, files);
        } else {
            files.push(path);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, files) in &modules {
        let mut uses = BTreeSet::new();
        for file in files {
            let code = shipped_code(file);
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let grouped = rest.starts_with('{');
                if grouped {
                    // `use crate::{a, b::c}`: every first segment.
                    let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
                    for part in inner.split(',') {
                        let first = part.trim().split("::").next().unwrap_or("").trim();
                        if names.contains(first) && first != name {
                            uses.insert(first.to_owned());
                        }
                    }
                } else if names.contains(&target) && &target != name {
                    uses.insert(target);
                }
            }
        }
        graph.insert(name.clone(), uses);
    }
    graph
}

#[test]
fn every_module_is_in_the_layering() {
    let graph = graph();
    let listed: BTreeSet<String> = LAYERS.iter().map(|s| (*s).to_owned()).collect();
    let found: BTreeSet<String> = graph.keys().cloned().collect();
    assert_eq!(
        found, listed,
        "a module was added or removed: place it in LAYERS, top of the request path first"
    );
}

#[test]
fn imports_only_go_down_the_request_path() {
    let graph = graph();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut climbing = Vec::new();
    for (module, uses) in &graph {
        for used in uses {
            if let (Some(from), Some(to)) = (rank(module), rank(used))
                && to <= from
            {
                climbing.push(format!("{module} -> {used}"));
            }
        }
    }
    assert!(
        climbing.is_empty(),
        "imports that climb the layering (and so may close a cycle): {climbing:?}\n{graph:#?}"
    );
}

#[test]
fn there_is_no_import_cycle() {
    // Independent of LAYERS: a depth-first search for a back edge.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = stack[at..].iter().map(|s| (*s).to_owned()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node);
        None
    }
    let graph = graph();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_scanner_sees_imports() {
    // Guards the test itself: known edges must be found.
    let graph = graph();
    assert!(graph["app"].contains("http"), "{graph:#?}");
    assert!(graph["sessions"].contains("paging"), "{graph:#?}");
    assert!(graph["paging"].contains("upstream"), "{graph:#?}");
}
