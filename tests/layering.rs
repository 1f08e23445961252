//! The layout is the architecture: no module of any crate in the workspace
//! reaches a module that reaches back to it.
//!
//! Read from the sources, so a new import that closes a loop fails here
//! rather than in a reviewer's head. For every pair of modules that import
//! each other's siblings (`cache` and `metrics`, `upstream::budget` and
//! `upstream::fleet`, …) the test names the files and lines of each edge.
//!
//! How an edge is found: every `crate::…`, `super::…` and `self::…` path in
//! non-test code (use trees expanded) is resolved to the deepest module file
//! it names. A path from module `a::x` to `a::y::z` is an edge between the
//! siblings `x` and `y` under their closest common parent `a`. A path to an
//! ancestor or a descendant is not an edge: a parent declares and re-exports
//! its children, and children use their parent's items. Unit-test modules
//! (`#[cfg(test)] mod tests`, `tests.rs`) are left out: tests may reach any
//! layer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module path inside one crate, e.g. `["upstream", "budget"]`; the crate
/// root is empty.
type ModPath = Vec<String>;

/// Where an edge comes from, for the failure message.
#[derive(Debug, Clone)]
struct Origin {
    file: PathBuf,
    line: usize,
    path: String,
}

/// The crates' source roots, relative to the workspace root.
fn crate_roots() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![root.join("src")];
    let mut crates: Vec<PathBuf> = fs::read_dir(root.join("crates"))
        .expect("crates/ exists")
        .map(|e| e.expect("readable entry").path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    crates.sort();
    roots.extend(crates);
    roots
}

/// Every `.rs` file below `dir` with its module path.
fn module_files(src: &Path) -> Vec<(ModPath, PathBuf)> {
    fn walk(dir: &Path, prefix: &ModPath, out: &mut Vec<(ModPath, PathBuf)>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .expect("readable dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("utf-8 name")
                .to_owned();
            if path.is_dir() {
                let mut sub = prefix.clone();
                sub.push(name);
                walk(&path, &sub, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let module = match name.as_str() {
                    "mod" | "lib" | "main" => prefix.clone(),
                    _ => {
                        let mut m = prefix.clone();
                        m.push(name);
                        m
                    }
                };
                out.push((module, path));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, &Vec::new(), &mut out);
    out
}

/// The source without comments and without its unit-test module (which by
/// convention closes the file).
fn production_code(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cfg_test = false;
    for raw in text.lines() {
        let trimmed = raw.trim_start();
        // `#[cfg(test)] mod tests;` names a file (skipped as `tests.rs`);
        // `#[cfg(test)] mod tests {` opens the inline module that ends it.
        if cfg_test && trimmed.starts_with("mod tests") && trimmed.contains('{') {
            lines.pop();
            break;
        }
        cfg_test = trimmed.starts_with("#[cfg(test)]");
        // Comments go; a `//` inside a string (a URL) also cuts the line,
        // which can only hide a path, never invent one.
        let code = match raw.find("//") {
            Some(i) => &raw[..i],
            None => raw,
        };
        lines.push(code.to_owned());
    }
    lines
}

/// Modules declared `#[cfg(test)] mod name;` (test helpers in a file of
/// their own): like unit tests, they may reach any layer.
fn test_only_modules(files: &[(ModPath, PathBuf)]) -> Vec<ModPath> {
    let mut out = Vec::new();
    for (module, file) in files {
        let text = fs::read_to_string(file).expect("readable source");
        let mut cfg_test = false;
        for line in text.lines().map(str::trim) {
            if cfg_test {
                let decl = line.strip_prefix("pub ").unwrap_or(line);
                if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
                    let mut m = module.clone();
                    m.push(name.trim().to_owned());
                    out.push(m);
                }
            }
            cfg_test = line.starts_with("#[cfg(test)]");
        }
    }
    out
}

/// Expands a `use` tree (`crate::{a::b, c::{d, e}}`) into its paths.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
        match tree.find('{') {
            None => out.push(format!("{prefix}{tree}")),
            Some(open) => {
                let head = &tree[..open];
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                let mut depth = 0;
                let mut start = 0;
                let mut parts = Vec::new();
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            parts.push(&inner[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                parts.push(&inner[start..]);
                for part in parts.into_iter().filter(|p| !p.is_empty()) {
                    expand(&format!("{prefix}{head}"), part, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    expand("", &tree, &mut out);
    out
}

/// The `crate::`/`super::`/`self::` paths of one file, with their lines.
fn paths_in(lines: &[String]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let joined = lines.join("\n");
    // `use` statements first, possibly spanning lines.
    let mut rest = joined.as_str();
    let mut offset = 0;
    while let Some(at) = find_use(rest) {
        let start = at + "use ".len();
        let end = rest[start..].find(';').map_or(rest.len(), |e| start + e);
        let line = joined[..offset + at].matches('\n').count() + 1;
        for path in expand_use(&rest[start..end]) {
            found.push((line, path));
        }
        offset += end;
        rest = &rest[end..];
    }
    // Then inline paths (`crate::store::keys::user(id)`), line by line.
    for (i, line) in lines.iter().enumerate() {
        for root in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(at) = line[from..].find(root) {
                let at = from + at;
                let before = line[..at].chars().last();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    from = at + root.len();
                    continue;
                }
                let end = line[at..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                    .map_or(line.len(), |e| at + e);
                found.push((i + 1, line[at..end].to_owned()));
                from = end;
            }
        }
    }
    found
}

/// The next `use ` that starts a statement (not `fuse `, not in a word).
fn find_use(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("use ") {
        let at = from + at;
        let before = text[..at].chars().last();
        if before.is_none_or(|c| c.is_whitespace() || c == ';' || c == '{' || c == '}') {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// Resolves `path`, written in module `here`, to the deepest known module.
fn resolve(here: &ModPath, path: &str, known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let mut segments = path.split("::").filter(|s| !s.is_empty());
    let mut base: ModPath = match segments.next()? {
        "crate" => Vec::new(),
        "self" => here.clone(),
        "super" => {
            let mut b = here.clone();
            b.pop()?;
            b
        }
        _ => return None,
    };
    let mut deepest = base.clone();
    for seg in segments {
        if seg == "super" {
            base.pop()?;
            deepest = base.clone();
            continue;
        }
        base.push(seg.to_owned());
        if known.contains(&base) {
            deepest = base.clone();
        } else {
            break;
        }
    }
    Some(deepest)
}

/// The edge `from` → `to` between siblings under their common parent, if
/// neither contains the other.
fn sibling_edge(from: &ModPath, to: &ModPath) -> Option<(ModPath, String, String)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((
        from[..common].to_vec(),
        from[common].clone(),
        to[common].clone(),
    ))
}

/// The groups of modules that reach each other (strongly connected
/// components with more than one member), each sorted.
fn knots(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let nodes: BTreeSet<&String> = edges
        .iter()
        .flat_map(|(from, tos)| std::iter::once(from).chain(tos))
        .collect();
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.clone()];
        while let Some(n) = todo.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for n in &nodes {
        if out.iter().any(|k| k.contains(*n)) {
            continue;
        }
        let knot: BTreeSet<String> = reachable[n]
            .iter()
            .filter(|m| reachable[m].contains(*n))
            .cloned()
            .collect();
        if knot.len() > 1 {
            out.push(knot);
        }
    }
    out
}

#[test]
fn no_crate_in_the_workspace_has_a_module_cycle() {
    let mut problems = Vec::new();
    for src in crate_roots() {
        let files = module_files(&src);
        let known: BTreeSet<ModPath> = files.iter().map(|(m, _)| m.clone()).collect();
        // parent → (from → to → where)
        let mut graphs: BTreeMap<ModPath, BTreeMap<String, BTreeMap<String, Origin>>> =
            BTreeMap::new();
        let test_only = test_only_modules(&files);
        for (module, file) in &files {
            if file.file_name().is_some_and(|n| n == "tests.rs")
                || test_only.iter().any(|t| module.starts_with(t))
            {
                continue;
            }
            let text = fs::read_to_string(file).expect("readable source");
            for (line, path) in paths_in(&production_code(&text)) {
                let Some(target) = resolve(module, &path, &known) else {
                    continue;
                };
                if let Some((parent, from, to)) = sibling_edge(module, &target) {
                    graphs
                        .entry(parent)
                        .or_default()
                        .entry(from)
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| Origin {
                            file: file.clone(),
                            line,
                            path: path.clone(),
                        });
                }
            }
        }
        for (parent, graph) in &graphs {
            let edges: BTreeMap<String, BTreeSet<String>> = graph
                .iter()
                .map(|(from, tos)| (from.clone(), tos.keys().cloned().collect()))
                .collect();
            for knot in knots(&edges) {
                let place = if parent.is_empty() {
                    "the crate root".to_owned()
                } else {
                    parent.join("::")
                };
                let names: Vec<&str> = knot.iter().map(String::as_str).collect();
                let mut message = format!(
                    "{}: modules under {place} reach each other: {}",
                    src.display(),
                    names.join(", ")
                );
                for (from, tos) in graph.iter().filter(|(f, _)| knot.contains(*f)) {
                    for (to, origin) in tos.iter().filter(|(t, _)| knot.contains(*t)) {
                        message.push_str(&format!(
                            "\n    {from} → {to}: {}:{} ({})",
                            origin.file.display(),
                            origin.line,
                            origin.path
                        ));
                    }
                }
                problems.push(message);
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_cycle_check_sees_a_knot_and_ignores_parents() {
    let known: BTreeSet<ModPath> = [
        vec![],
        vec!["a".to_owned()],
        vec!["a".to_owned(), "x".to_owned()],
        vec!["a".to_owned(), "y".to_owned()],
        vec!["b".to_owned()],
    ]
    .into_iter()
    .collect();
    let ax = vec!["a".to_owned(), "x".to_owned()];
    // A use tree with groups resolves each leaf to its deepest module.
    let paths = expand_use("crate::{a::y::Thing, b::{self, Other}}");
    assert_eq!(
        paths,
        ["crate::a::y::Thing", "crate::b::self", "crate::b::Other"]
    );
    let targets: Vec<ModPath> = paths
        .iter()
        .filter_map(|p| resolve(&ax, p, &known))
        .collect();
    assert_eq!(targets[0], vec!["a".to_owned(), "y".to_owned()]);
    assert_eq!(targets[2], vec!["b".to_owned()]);
    // Siblings make an edge; a child using its parent does not.
    assert_eq!(
        sibling_edge(&ax, &targets[0]),
        Some((vec!["a".to_owned()], "x".to_owned(), "y".to_owned()))
    );
    assert_eq!(
        sibling_edge(&ax, &resolve(&ax, "super::Item", &known).unwrap()),
        None
    );
    // A chain is no knot; closing it makes one of all three.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("x".into()).or_default().insert("y".into());
    edges.entry("y".into()).or_default().insert("z".into());
    assert!(knots(&edges).is_empty());
    edges.entry("z".into()).or_default().insert("x".into());
    let knot: BTreeSet<String> = ["x", "y", "z"].map(String::from).into();
    assert_eq!(knots(&edges), vec![knot]);
    // Comments and the unit-test module are not production code.
    let code = production_code(
        "use crate::a; // use crate::b;\n#[cfg(test)]\nmod tests;\nuse crate::c;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n",
    );
    assert_eq!(
        code,
        [
            "use crate::a; ",
            "#[cfg(test)]",
            "mod tests;",
            "use crate::c;"
        ]
    );
}
