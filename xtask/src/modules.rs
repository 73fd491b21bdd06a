//! Inside a crate: the modules its code refers to (`crate::a::b`, `super::x`), and the
//! circles among them, which `cargo xtask deps` rejects.
//!
//! A module's edges come from the paths its code names, up to its `#[cfg(test)]` part.
//! Re-exports (`pub use`) are not edges (they only make items nameable elsewhere), but
//! they are followed: `crate::feed::MicroBatch`, re-exported by `feed` from
//! `feed::batch`, is an edge to `feed::batch`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};

/// A crate's modules, by path (`""` is the crate root, `writer::spec` a nested module).
#[derive(Debug, Default)]
struct Crate {
    modules: BTreeSet<String>,
    /// Per module, the items it re-exports and the module each comes from.
    reexports: BTreeMap<String, BTreeMap<String, String>>,
    /// Per module, the paths its code names (as written, with the module they start in).
    uses: BTreeMap<String, Vec<Vec<String>>>,
}

/// The module circles of the crate whose sources are under `src`, each as
/// `a -> b -> a` (module paths relative to the crate root).
pub fn circles(src: &Path) -> Result<Vec<String>> {
    let mut krate = Crate::default();
    let mut files = Vec::new();
    collect(src, &mut files)?;
    for file in &files {
        let rel = file.strip_prefix(src).unwrap_or(file).to_string_lossy().replace('\\', "/");
        krate.modules.insert(module_of(&rel));
    }
    for file in &files {
        let rel = file.strip_prefix(src).unwrap_or(file).to_string_lossy().replace('\\', "/");
        let module = module_of(&rel);
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        // Comments name modules too (`// see crate::log`): they are not uses. A trailing
        // comment starts at ` //` (URLs such as `file://` have no space before theirs).
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| l.find(" //").map_or(l, |i| &l[..i]))
            .collect::<Vec<_>>()
            .join("\n");
        let (uses, reexports) = paths(&code);
        let absolute = |p: &[String]| absolute(&module, p);
        let resolved: Vec<Vec<String>> = uses.iter().filter_map(|p| absolute(p)).collect();
        krate.uses.insert(module.clone(), resolved);
        let mut items = BTreeMap::new();
        for path in reexports.iter().filter_map(|p| absolute(p)) {
            if let Some((item, from)) = path.split_last() {
                items.insert(item.clone(), from.join("::"));
            }
        }
        krate.reexports.insert(module, items);
    }
    // Edges, then strongly connected components.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, uses) in &krate.uses {
        for path in uses {
            let target = krate.resolve(path);
            if &target != module {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    Ok(cycles(&krate.modules, &edges))
}

impl Crate {
    /// The module an absolute path (`["feed", "MicroBatch"]`) refers to: its longest
    /// module prefix, then through that module's re-exports of the next segment.
    fn resolve(&self, path: &[String]) -> String {
        let mut module = String::new();
        let mut rest = path;
        loop {
            let Some((first, tail)) = rest.split_first() else { return module };
            let child = if module.is_empty() { first.clone() } else { format!("{module}::{first}") };
            if self.modules.contains(&child) {
                module = child;
                rest = tail;
                continue;
            }
            match self.reexports.get(&module).and_then(|r| r.get(first)) {
                Some(from) if from != &module && self.modules.contains(from) => {
                    module = from.clone();
                    rest = tail;
                }
                _ => return module,
            }
        }
    }
}

/// `lib.rs` -> "", `a.rs` -> "a", `a/mod.rs` -> "a", `a/b.rs` -> "a::b".
fn module_of(rel: &str) -> String {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let parts: Vec<&str> = rel.split('/').collect();
    let parts: Vec<&str> = match parts.split_last() {
        Some((&"lib" | &"main", [])) => Vec::new(),
        Some((&"mod", dirs)) => dirs.to_vec(),
        _ => parts,
    };
    parts.join("::")
}

/// A path as the crate names it: `crate::`, `super::` and `self::` resolved against
/// `module`; other paths (external crates, std) are `None`.
fn absolute(module: &str, path: &[String]) -> Option<Vec<String>> {
    let here: Vec<String> =
        if module.is_empty() { Vec::new() } else { module.split("::").map(str::to_owned).collect() };
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here,
        // `super` of module `a::b` is `a`, whether `a::b` is a file or a directory.
        "super" => {
            let mut up = here;
            up.pop();
            up
        }
        _ => return None,
    };
    let mut rest = rest;
    while let Some((s, tail)) = rest.split_first() {
        if s != "super" {
            break;
        }
        base.pop();
        rest = tail;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The paths `code` names (in `use` items, expanded, and inline `crate::a::b`
/// expressions) and, separately, the paths its `pub use` items re-export.
fn paths(code: &str) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut uses = Vec::new();
    let mut reexports = Vec::new();
    let mut rest = code;
    // `use` items (`pub use`, `pub(crate) use` are re-exports).
    while let Some(at) = find_use(rest) {
        let (public, start) = at;
        let Some(end) = rest[start..].find(';') else { break };
        let tree = &rest[start + "use ".len()..start + end];
        let mut expanded = Vec::new();
        expand(tree.trim(), &mut Vec::new(), &mut expanded);
        if public {
            reexports.extend(expanded)
        } else {
            uses.extend(expanded)
        }
        rest = &rest[start + end + 1..];
    }
    // Inline paths anywhere else.
    for keyword in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(keyword) {
            let at = from + i;
            let before = code[..at].chars().next_back();
            from = at + keyword.len();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '{') {
                continue; // part of a longer path, or inside a use tree (handled above)
            }
            let path: Vec<String> = code[at..]
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap_or_default()
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            uses.push(path);
        }
    }
    (uses, reexports)
}

/// The next `use` item in `code`: (whether it is public, its offset).
fn find_use(code: &str) -> Option<(bool, usize)> {
    let mut from = 0;
    loop {
        let i = code[from..].find("use ")? + from;
        let line_start = code[..i].rfind('\n').map_or(0, |n| n + 1);
        let prefix = code[line_start..i].trim();
        if prefix.is_empty() || prefix == "pub" || prefix.starts_with("pub(") {
            return Some((!prefix.is_empty(), i));
        }
        from = i + 4;
    }
}

/// Expands a use tree (`a::{b, c::{d, e as f}}`) into full paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> =
            tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let inner = tree[open + 1..].strip_suffix('}').unwrap_or(&tree[open + 1..]);
        let depth = prefix.len();
        prefix.extend(head);
        let mut level = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => level += 1,
                '}' => level -= 1,
                ',' if level == 0 => {
                    expand(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], prefix, out);
        prefix.truncate(depth);
        return;
    }
    let item = tree.split(" as ").next().unwrap_or(tree).trim();
    if item.is_empty() {
        return;
    }
    let mut path = prefix.clone();
    if item != "self" {
        path.extend(item.split("::").map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned));
    }
    out.push(path);
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// Circles among `nodes` (strongly connected components of more than one module, or a
/// module that reaches itself), each written `a -> b -> a`.
fn cycles(nodes: &BTreeSet<String>, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    // Tarjan's algorithm, iteratively small enough to recurse: crates have few modules.
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let targets: Vec<&'a str> = s.edges.get(v).map(|t| t.iter().map(String::as_str).collect()).unwrap_or_default();
        for w in targets {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).map(|l| {
                    *l = (*l).min(lw);
                    *l
                });
                let _ = lv;
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                if let Some(l) = s.low.get_mut(v) {
                    *l = (*l).min(iw);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
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
        next: 0,
        out: Vec::new(),
    };
    for v in nodes {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    let name = |m: &String| if m.is_empty() { "(crate root)".to_owned() } else { m.clone() };
    s.out.iter().map(|c| c.iter().map(name).collect::<Vec<_>>().join(" <-> ")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_expand() {
        let mut out = Vec::new();
        expand("crate::a::{b, c::{d, e as f}, self}", &mut Vec::new(), &mut out);
        let text: Vec<String> = out.iter().map(|p| p.join("::")).collect();
        assert_eq!(text, ["crate::a::b", "crate::a::c::d", "crate::a::c::e", "crate::a"]);
    }

    #[test]
    fn module_paths() {
        assert_eq!(module_of("lib.rs"), "");
        assert_eq!(module_of("writer/mod.rs"), "writer");
        assert_eq!(module_of("writer/spec.rs"), "writer::spec");
        assert_eq!(absolute("writer::spec", &["super".into(), "files".into()]).unwrap(), ["writer", "files"]);
        assert_eq!(absolute("writer", &["self".into(), "spec".into()]).unwrap(), ["writer", "spec"]);
        assert_eq!(absolute("a::b::c", &["super".into(), "super".into(), "x".into()]).unwrap(), ["a", "x"]);
        assert_eq!(absolute("a", &["std".into(), "x".into()]), None);
    }
}
