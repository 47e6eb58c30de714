//! No module of the agent imports a module that imports it back (ARCHITECTURE.md): a job gets a
//! narrow context, not the service that spawned it. This test reads the sources, builds the graph
//! of which file module uses which, and fails naming every cycle.
//!
//! An edge is a `use` of another module's item or a `crate::`/`super::` path in code. Re-exports
//! (`pub use`, `pub(crate) use`) are a module's facade, not a dependency, and a parent's `mod child;`
//! is not an import; a child using its parent's items (the module's error type) is the normal
//! direction, so a cycle through a parent is one where the parent also *uses* the child.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source folder") {
        let path = entry.expect("read the source folder").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `agent/src/a/b.rs` -> ["a", "b"]; `a/mod.rs` -> ["a"]; `lib.rs` -> [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else { return vec![tree.to_owned()] };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(|i| expand(i).into_iter().map(move |e| format!("{prefix}{e}")))
        .collect()
}

/// Resolves a path as written in module `here` to an absolute path of segments, or None when it
/// does not start in this crate.
fn absolute(here: &[String], path: &str) -> Option<Vec<String>> {
    let path = path.split(" as ").next()?.trim();
    let mut segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut base: Vec<String> = match *segs.first()? {
        "crate" | "dbagent" => Vec::new(),
        "super" => here.to_vec(),
        "self" => here.to_vec(),
        _ => return None,
    };
    if segs[0] == "crate" || segs[0] == "dbagent" {
        segs.remove(0);
    } else {
        while segs.first() == Some(&"super") {
            base.pop();
            segs.remove(0);
        }
        if segs.first() == Some(&"self") {
            segs.remove(0);
        }
    }
    base.extend(segs.iter().filter(|s| **s != "*").map(|s| (*s).to_owned()));
    Some(base)
}

/// The longest prefix of `path` that is a file module.
fn owner(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)).unwrap_or_default()
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")) && !f.ends_with("main.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let path_in_code = |s: &str| -> Vec<String> {
        let mut found = Vec::new();
        for (i, _) in s.match_indices("crate::").chain(s.match_indices("super::")) {
            let before = s[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = s[i..].find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).map_or(s.len(), |e| i + e);
            found.push(s[i..end].trim_end_matches(':').to_owned());
        }
        found
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let here = module_of(src, file);
        let text = strip_comments(&std::fs::read_to_string(file).expect("read a source file"));
        let mut targets = Vec::new();
        let mut rest = text.as_str();
        // `use` statements (possibly over several lines); re-exports are skipped.
        while let Some(i) = rest.find("use ") {
            let line_start = rest[..i].rfind('\n').map_or(0, |n| n + 1);
            let head = rest[line_start..i].trim();
            let end = rest[i..].find(';').map_or(rest.len(), |e| i + e);
            let stmt = &rest[i + 4..end];
            let is_path = stmt.chars().all(|c| c.is_alphanumeric() || "_:{},* \n\t".contains(c));
            if head.is_empty() && is_path && stmt.matches('{').count() == stmt.matches('}').count() {
                targets.extend(expand(stmt));
            }
            rest = &rest[end.min(rest.len())..];
            if rest.is_empty() {
                break;
            }
            rest = &rest[1..];
        }
        let code: String = text
            .lines()
            .filter(|l| {
                let t = l.trim_start();
                !(t.starts_with("use ") || t.starts_with("pub use ") || t.starts_with("pub(crate) use "))
            })
            .collect::<Vec<_>>()
            .join("\n");
        targets.extend(path_in_code(&code));
        for t in targets {
            let Some(abs) = absolute(&here, &t) else { continue };
            let to = owner(&modules, &abs);
            // Using one's own items or an ancestor's (the parent module's error type) is no edge
            // back; a parent using its child is an edge.
            if to == here || here.starts_with(&to) {
                continue;
            }
            edges.entry(here.clone()).or_default().insert(to);
        }
    }
    edges
}

/// Every cycle through strongly connected components (Tarjan), each as a list of module paths.
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(next) = s.edges.get(v) {
            for w in next {
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(format!("crate::{}", w.join("::")));
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let all: BTreeSet<&Vec<String>> = edges.keys().chain(edges.values().flatten()).collect();
    for v in all {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() > 40, "the scan found too few modules to be reading the sources: {}", edges.len());
    let found = cycles(&edges);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let members: BTreeSet<&String> = c.iter().collect();
            let links: Vec<String> = edges
                .iter()
                .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
                .map(|(f, t)| (format!("crate::{}", f.join("::")), format!("crate::{}", t.join("::"))))
                .filter(|(f, t)| members.contains(f) && members.contains(t))
                .map(|(f, t)| format!("    {f} -> {t}"))
                .collect();
            format!("{}\n{}", c.join(", "), links.join("\n"))
        })
        .collect();
    assert!(found.is_empty(), "modules that import each other in a circle:\n{}", explain.join("\n"));
}

#[test]
fn the_scan_finds_a_planted_cycle_and_accepts_a_child_using_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("svc")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod svc;\n").unwrap();
    // mod.rs re-exports its child and defines the error the child uses: not a cycle.
    std::fs::write(src.join("svc/mod.rs"), "mod job;\nmod service;\npub use service::Service;\npub enum Error {}\n")
        .unwrap();
    std::fs::write(src.join("svc/job.rs"), "use super::Error;\nfn run() -> Result<(), Error> { Ok(()) }\n").unwrap();
    std::fs::write(src.join("svc/service.rs"), "use super::{job, Error};\npub struct Service;\n").unwrap();
    let edges = graph(src);
    assert!(cycles(&edges).is_empty(), "{edges:?}");
    // The job reaches back into the service that spawned it: a cycle.
    std::fs::write(
        src.join("svc/job.rs"),
        "use super::Error;\nfn run(s: &crate::svc::service::Service) -> Result<(), Error> { Ok(()) }\n",
    )
    .unwrap();
    let found = cycles(&graph(src));
    assert_eq!(found, vec![vec!["crate::svc::job".to_owned(), "crate::svc::service".to_owned()]]);
}
