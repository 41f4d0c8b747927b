//! The module graph of `src/` keeps its layers: imports only go down, peers of one layer do not
//! import each other, and no circle of imports forms between the sub-modules of a layer.
//!
//! The graph is read from the source text: every `crate::a::b` path (in `use` lines, braced groups
//! and inline paths) and every `super::` path, outside comments. docs/architecture.md explains the
//! layers; a new layer or module is added to [`LAYERS`] together with that page.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use the modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["error", "fault", "torch_error"],
    &["device", "progress", "settings", "torch_ext"],
    &["io"],
    &["text"],
    &["models"],
    &["experiment", "adversary"],
    &["train"],
    &["diffusion"],
    &["eval", "scan", "attack"],
    &["shapes", "bench", "zoo"],
    &["demo"],
    &["cli"],
];

/// Items exported at the crate root by `error` (macros and aliases).
const ROOT_ITEMS_OF_ERROR: &[&str] = &["input_bail", "input_err", "Result", "InputError"];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The module path of a source file: `src/eval/stage/report.rs` → `["eval", "stage", "report"]`
/// (`mod.rs` names its folder; `lib.rs` and `main.rs` are the root, `[]`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !["mod", "lib", "main"].contains(&stem) {
        parts.push(stem.to_string());
    }
    parts
}

/// Code with line comments removed (doc links name modules without importing them).
fn code_lines(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            // Keep `//` inside string literals such as URLs: only strip when no quote precedes it.
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// Every module path a file refers to, as absolute paths (first two components at most).
fn references(file_module: &[String], text: &str) -> BTreeSet<Vec<String>> {
    let code = code_lines(text);
    let mut out = BTreeSet::new();
    let mut push = |base: Vec<String>, rest: &str| {
        let mut p = base;
        let mut rest = rest;
        while p.len() < 2 {
            let id = ident_at(rest);
            if id.is_empty() || id.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
                break;
            }
            p.push(id.clone());
            rest = &rest[id.len()..];
            match rest.strip_prefix("::") {
                Some(r) if !r.starts_with('{') => rest = r,
                _ => break,
            }
        }
        if !p.is_empty() {
            out.insert(p);
        }
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                push(vec![], item.trim());
            }
        } else {
            push(vec![], rest);
        }
    }
    for (i, _) in code.match_indices("super::") {
        // Count a run of `super::` once, from its start.
        if code[..i].ends_with("super::") {
            continue;
        }
        let mut rest = &code[i..];
        let mut base: Vec<String> = file_module.to_vec();
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                push(base.clone(), item.trim());
            }
        } else {
            push(base, rest);
        }
    }
    out
}

/// The comma-separated items of a braced `use` group (up to its closing brace).
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = vec![];
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn top_module(p: &[String]) -> String {
    match p.first().map(String::as_str) {
        Some(m) if ROOT_ITEMS_OF_ERROR.contains(&m) => "error".into(),
        Some(m) => m.into(),
        None => String::new(),
    }
}

/// Problems of the graph of `files` (module path, text): upward or sideways imports across layers,
/// modules missing from [`LAYERS`], and circles between sub-modules of one top-level module.
fn violations(files: &[(Vec<String>, String)]) -> Vec<String> {
    let mut problems = vec![];
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in files {
        let Some(own) = module.first() else { continue };
        let Some(own_layer) = layer_of(own) else {
            problems.push(format!(
                "module `{own}` is in no layer of tests/suite/architecture.rs"
            ));
            continue;
        };
        for r in references(module, text) {
            let top = top_module(&r);
            if top.is_empty() || top == *own {
                // Within one top-level module: an edge between its sub-modules (the root excluded:
                // a parent declares its children and lends them shared helpers).
                if top == *own && module.len() >= 2 && r.len() >= 2 && module[1] != r[1] {
                    edges
                        .entry(format!("{own}::{}", module[1]))
                        .or_default()
                        .insert(format!("{own}::{}", r[1]));
                }
                continue;
            }
            match layer_of(&top) {
                None => problems.push(format!(
                    "{} uses crate::{top}, which is in no layer",
                    module.join("::")
                )),
                Some(l) if l >= own_layer => problems.push(format!(
                    "{} (layer {own_layer}) uses crate::{} (layer {l}): imports only go down",
                    module.join("::"),
                    r.join("::")
                )),
                _ => {}
            }
        }
    }
    for circle in circles(&edges) {
        problems.push(format!("import circle: {}", circle.join(" -> ")));
    }
    problems
}

/// Strongly connected components with more than one node (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct St<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.edges.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = vec![];
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    let nodes: BTreeSet<&str> = edges
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.iter().map(String::as_str)))
        .collect();
    for n in nodes {
        if !s.index.contains_key(n) {
            visit(&mut s, n);
        }
    }
    s.out
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            source_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn crate_files() -> Vec<(Vec<String>, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = vec![];
    source_files(&src, &mut paths);
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap();
            (module_path(rel), std::fs::read_to_string(p).unwrap())
        })
        .collect()
}

#[test]
fn imports_only_go_down_and_form_no_circles() {
    let files = crate_files();
    assert!(files.len() > 100, "read {} files", files.len());
    let problems = violations(&files);
    assert!(
        problems.is_empty(),
        "module graph problems (see docs/architecture.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line.trim().strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            assert!(
                layer_of(m).is_some(),
                "src/lib.rs declares `{m}`, which has no layer"
            );
        }
    }
}

/// Library code (all but `cli` and the binary) that writes to the terminal or parses flags: the
/// lines using `clap`, `indicatif` or a print macro, outside `#[cfg(test)]` code.
fn terminal_uses(files: &[(Vec<String>, String)]) -> Vec<String> {
    let mut found = vec![];
    for (module, text) in files {
        if module.first().map(String::as_str) == Some("cli") || module.is_empty() {
            continue;
        }
        let code = code_lines(text);
        // Unit tests sit at the end of a file, after `#[cfg(test)]`.
        let library = code.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in library.lines().enumerate() {
            let hit = [
                "clap::",
                "indicatif",
                "println!",
                "eprintln!",
                "print!(",
                "eprint!(",
            ]
            .iter()
            .find(|w| line.contains(*w));
            if let Some(w) = hit {
                found.push(format!("{}:{}: {w}", module.join("::"), n + 1));
            }
        }
    }
    found
}

#[test]
fn the_library_has_no_terminal_and_no_flags() {
    let found = terminal_uses(&crate_files());
    assert!(
        found.is_empty(),
        "report through crate::progress (task, note) and parse flags in src/cli:\n{}",
        found.join("\n")
    );
    let m = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    let synthetic = vec![
        (
            m("train::x"),
            "fn f() { eprintln!(\"hi\"); }\n#[cfg(test)]\nmod t { fn g() { println!(); } }"
                .to_string(),
        ),
        (
            m("cli::y"),
            "fn f() { eprintln!(\"ok here\"); }".to_string(),
        ),
        (m("eval::z"), "#[derive(clap::Args)]\nstruct A;".to_string()),
    ];
    let f = terminal_uses(&synthetic);
    assert_eq!(f.len(), 2, "{f:?}");
}

/// The checker itself: a synthetic crate with an upward import, a sideways one, a circle, and
/// references that are not imports (a comment, a URL string).
#[test]
fn the_checker_finds_each_kind_of_problem() {
    let m = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    let files = vec![
        (
            m("train::trainer"),
            "use crate::cli::progress;\n".to_string(),
        ),
        (
            m("eval::stage"),
            "use crate::{io::atomic, scan::embed};".to_string(),
        ),
        (m("eval::a"), "use super::b::X;".to_string()),
        (m("eval::b"), "fn f() { crate::eval::a::g() }".to_string()),
        (
            m("models::x"),
            "// see crate::cli::run\nconst U: &str = \"http://x\"; use super::super::io::y;"
                .to_string(),
        ),
        (
            m("text::t"),
            "use crate::input_bail; use crate::Result;".to_string(),
        ),
    ];
    let p = violations(&files);
    assert!(
        p.iter()
            .any(|s| s.contains("train::trainer") && s.contains("crate::cli")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|s| s.contains("eval::stage") && s.contains("crate::scan")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|s| s.contains("circle") && s.contains("eval::a")),
        "{p:?}"
    );
    assert_eq!(p.len(), 3, "{p:?}");
}
