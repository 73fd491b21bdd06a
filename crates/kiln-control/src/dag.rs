//! The project graph: sources and products, the references between them, their order.

use std::collections::{BTreeSet, HashMap};

use crate::error::{ControlError, Location};
pub use crate::sqlfile::NodeKind;
use crate::sqlfile::SqlFile;

/// A source or product with the nodes it reads.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub at: Location,
    /// Indices of the nodes this one reads, sorted.
    pub deps: Vec<usize>,
    /// (file index, statement index) of the definition.
    pub def: (usize, usize),
    /// Why this node cannot be compiled (an unknown table, a self reference, a cycle); its
    /// dependents cannot be built either. The rest of the project is unaffected.
    pub broken: Option<String>,
    /// The product an audit or test checks (also one of its `deps`).
    pub target: Option<usize>,
    /// The file defining it, relative to the project (`/` separators).
    pub path: String,
    /// Its tags: `WITH (tags = ...)` and those kiln.toml's `[tags]` gives its folder.
    pub tags: Vec<String>,
}

/// The resolved project graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    index: HashMap<String, usize>,
}

impl Graph {
    /// Builds the graph from parsed files and fails on any problem (see [`Graph::resolve`]).
    pub fn build(files: &[SqlFile]) -> Result<Self, ControlError> {
        let (graph, mut errors) = Self::resolve(files);
        errors.extend(graph.nodes.iter().filter_map(|n| n.broken.clone()).map(|message| ControlError::Compile {
            at: Location { file: String::new(), line: 0, column: 0 },
            product: String::new(),
            message,
        }));
        ControlError::from_list(errors)?;
        Ok(graph)
    }

    /// Builds the graph from the files' statement summaries: resolves every table a
    /// product reads (CTE names excluded) and orders the nodes. Problems confined to one
    /// node (an unknown table, a product reading itself, a cycle) mark the node
    /// [`Node::broken`] with a located message; the returned errors are the rest (a
    /// duplicate definition, which is ignored). Nodes on a cycle lose their edges, so
    /// [`Graph::order`] always succeeds afterwards.
    pub fn resolve(files: &[SqlFile]) -> (Self, Vec<ControlError>) {
        let mut graph = Graph::default();
        let mut errors = Vec::new();
        for (fi, file) in files.iter().enumerate() {
            for (si, summary) in file.summaries.iter().enumerate() {
                let name = summary.name.clone();
                if let Some(&first) = graph.index.get(&name) {
                    errors.push(ControlError::Duplicate {
                        at: summary.at.clone(),
                        name,
                        first: graph.nodes[first].at.clone(),
                    });
                    continue;
                }
                graph.index.insert(name.clone(), graph.nodes.len());
                graph.nodes.push(Node {
                    name,
                    kind: summary.kind,
                    at: summary.at.clone(),
                    deps: Vec::new(),
                    def: (fi, si),
                    broken: None,
                    target: None,
                    path: file.path.clone(),
                    tags: summary.tags.clone(),
                });
            }
        }
        for i in 0..graph.nodes.len() {
            let (fi, si) = graph.nodes[i].def;
            let summary = &files[fi].summaries[si];
            if let Some(problem) = &summary.problem {
                graph.nodes[i].broken = Some(problem.clone());
                continue;
            }
            let mut deps = BTreeSet::new();
            let mut problems = Vec::new();
            for (name, at) in &summary.refs {
                match graph.index.get(name) {
                    Some(&d) if d == i => problems.push(ControlError::Compile {
                        at: at.clone(),
                        product: summary.name.clone(),
                        message: "a product cannot read itself".into(),
                    }),
                    Some(&d) => {
                        deps.insert(d);
                    }
                    None => {
                        let hint = graph.closest(name).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                        problems.push(ControlError::UnknownTable {
                            at: at.clone(),
                            product: summary.name.clone(),
                            name: name.clone(),
                            hint,
                        });
                    }
                }
            }
            if let Some((target, at)) = &summary.target {
                match graph.index.get(target) {
                    Some(&t) if graph.nodes[t].kind == NodeKind::Product => graph.nodes[i].target = Some(t),
                    Some(&t) => problems.push(ControlError::Compile {
                        at: at.clone(),
                        product: summary.name.clone(),
                        message: format!(
                            "`{target}` is a {}; audits and tests check products",
                            graph.nodes[t].kind.as_str()
                        ),
                    }),
                    None => {} // reported above as an unknown table
                }
            }
            // Nothing reads an audit or a test.
            for &d in &deps {
                if graph.nodes[d].kind.is_check() {
                    problems.push(ControlError::Compile {
                        at: summary.at.clone(),
                        product: summary.name.clone(),
                        message: format!(
                            "reads `{}`, which is a {}",
                            graph.nodes[d].name,
                            graph.nodes[d].kind.as_str()
                        ),
                    });
                }
            }
            graph.nodes[i].deps = deps.into_iter().collect();
            if !problems.is_empty() {
                let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
                graph.nodes[i].broken = Some(messages.join("\n"));
            }
        }
        // Break cycles one at a time: every node on a cycle is broken and loses its edges.
        while let Err(ControlError::Cycle(names)) = graph.order() {
            let message = ControlError::Cycle(names.clone()).to_string();
            for name in &names {
                if let Some(&n) = graph.index.get(name) {
                    graph.nodes[n].broken.get_or_insert_with(|| message.clone());
                    graph.nodes[n].deps.clear();
                }
            }
        }
        (graph, errors)
    }

    pub fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// A defined name within edit distance 2 of `name`, for "did you mean".
    fn closest(&self, name: &str) -> Option<&str> {
        self.nodes
            .iter()
            .map(|n| (edit_distance(&n.name, name), n.name.as_str()))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, n)| n)
    }

    /// Topological order (dependencies first; ties in definition order). A cycle is an
    /// error that names every product on it.
    pub fn order(&self) -> Result<Vec<usize>, ControlError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        fn visit(
            g: &Graph,
            i: usize,
            marks: &mut [Mark],
            stack: &mut Vec<usize>,
            out: &mut Vec<usize>,
        ) -> Result<(), ControlError> {
            match marks[i] {
                Mark::Done => return Ok(()),
                Mark::Active => {
                    let start = stack.iter().position(|&s| s == i).unwrap_or(0);
                    let mut cycle: Vec<String> = stack[start..].iter().map(|&s| g.nodes[s].name.clone()).collect();
                    cycle.push(g.nodes[i].name.clone());
                    return Err(ControlError::Cycle(cycle));
                }
                Mark::New => {}
            }
            marks[i] = Mark::Active;
            stack.push(i);
            for &d in &g.nodes[i].deps {
                visit(g, d, marks, stack, out)?;
            }
            stack.pop();
            marks[i] = Mark::Done;
            out.push(i);
            Ok(())
        }
        let mut marks = vec![Mark::New; self.nodes.len()];
        let mut out = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            visit(self, i, &mut marks, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    /// The audits and tests of product `i`.
    pub fn checks_of(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(move |&n| self.nodes[n].target == Some(i))
    }

    /// Resolves a selection: space- or comma-separated terms, each a node set with graph
    /// operators. A set is `name`, `tag:TAG` (every node tagged TAG) or `path:PREFIX`
    /// (every node defined in a file under PREFIX); `+set` adds everything upstream and
    /// `set+` everything downstream, `N+set` / `set+N` only N levels. Returns node indices.
    pub fn select(&self, selection: &str) -> Result<BTreeSet<usize>, ControlError> {
        let mut out = BTreeSet::new();
        for term in selection.split([',', ' ']).filter(|t| !t.is_empty()) {
            let (up, rest) = graph_operator(term, true);
            let (down, core) = graph_operator(rest, false);
            let matched: Vec<usize> = if let Some(tag) = core.strip_prefix("tag:") {
                let tag = tag.to_lowercase();
                (0..self.nodes.len()).filter(|&i| self.nodes[i].tags.contains(&tag)).collect()
            } else if let Some(prefix) = core.strip_prefix("path:") {
                let prefix = prefix.trim_start_matches("./");
                (0..self.nodes.len()).filter(|&i| self.nodes[i].path.starts_with(prefix)).collect()
            } else {
                let name = core.to_lowercase();
                vec![self.get(&name).ok_or_else(|| ControlError::Selection(term.to_owned()))?]
            };
            if matched.is_empty() {
                return Err(ControlError::Selection(term.to_owned()));
            }
            for i in matched {
                out.insert(i);
                if let Some(depth) = up {
                    self.walk(i, depth, &mut out, |g, n| g.nodes[n].deps.clone());
                }
                if let Some(depth) = down {
                    self.walk(i, depth, &mut out, |g, n| {
                        (0..g.nodes.len()).filter(|&m| g.nodes[m].deps.contains(&n)).collect()
                    });
                }
            }
        }
        Ok(out)
    }

    /// Adds the nodes `next` reaches from `from`, at most `depth` steps away.
    /// `select` (every node when `None`) without what `exclude` selects (`--exclude`).
    pub fn select_excluding(
        &self,
        select: Option<&str>,
        exclude: Option<&str>,
    ) -> Result<BTreeSet<usize>, ControlError> {
        let mut selected = match select {
            Some(s) => self.select(s)?,
            None => (0..self.nodes.len()).collect(),
        };
        if let Some(exclude) = exclude {
            for i in self.select(exclude)? {
                selected.remove(&i);
            }
        }
        Ok(selected)
    }

    fn walk(&self, from: usize, depth: usize, out: &mut BTreeSet<usize>, next: impl Fn(&Graph, usize) -> Vec<usize>) {
        let mut level = vec![from];
        let mut seen = BTreeSet::from([from]);
        for _ in 0..depth {
            let mut following = Vec::new();
            for n in level {
                for m in next(self, n) {
                    if seen.insert(m) {
                        out.insert(m);
                        following.push(m);
                    }
                }
            }
            if following.is_empty() {
                break;
            }
            level = following;
        }
    }
}

/// A leading (`up`) or trailing graph operator of a selection term: `+` (unbounded) or
/// `N+` / `+N` (N levels); the depth and the rest of the term.
fn graph_operator(term: &str, up: bool) -> (Option<usize>, &str) {
    if up {
        let digits = term.len() - term.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        match term[digits..].strip_prefix('+') {
            Some(rest) if !rest.is_empty() => (Some(term[..digits].parse().unwrap_or(usize::MAX)), rest),
            _ => (None, term),
        }
    } else {
        let trimmed = term.trim_end_matches(|c: char| c.is_ascii_digit());
        match trimmed.strip_suffix('+') {
            Some(rest) if !rest.is_empty() => (Some(term[trimmed.len()..].parse().unwrap_or(usize::MAX)), rest),
            _ => (None, term),
        }
    }
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(sql: &str) -> Result<Graph, ControlError> {
        Graph::build(&[SqlFile::parse("m.sql", sql)?])
    }

    const CHAIN: &str = "CREATE SOURCE s (a INT) WITH (path = 'x');\n\
        CREATE PRODUCT c AS SELECT * FROM b;\n\
        CREATE PRODUCT b AS WITH s AS (SELECT 1) SELECT * FROM a JOIN s ON true;\n\
        CREATE PRODUCT a AS SELECT * FROM s;\n\
        CREATE PRODUCT other AS SELECT * FROM s;";

    #[test]
    fn orders_dependencies_first_and_selects() {
        let g = graph(CHAIN).unwrap();
        let names = |v: Vec<usize>| v.into_iter().map(|i| g.nodes[i].name.clone()).collect::<Vec<_>>();
        assert_eq!(names(g.order().unwrap()), ["s", "a", "b", "c", "other"]);
        // `b` reads product `a` and CTE `s`, which shadows the source `s`.
        assert_eq!(names(g.nodes[g.get("b").unwrap()].deps.clone()), ["a"]);
        assert_eq!(names(g.select("+b").unwrap().into_iter().collect()), ["s", "b", "a"]);
        assert_eq!(names(g.select("a+").unwrap().into_iter().collect()), ["c", "b", "a"]);
        assert!(matches!(g.select("nope"), Err(ControlError::Selection(_))));
        // Depth-limited operators: one level up from c is b; one level down from a is b.
        assert_eq!(names(g.select("1+c").unwrap().into_iter().collect()), ["c", "b"]);
        assert_eq!(names(g.select("a+1").unwrap().into_iter().collect()), ["b", "a"]);
        assert_eq!(names(g.select("+b+").unwrap().into_iter().collect()), ["s", "c", "b", "a"]);
        assert_eq!(names(g.select("path:m.sql").unwrap().into_iter().collect::<Vec<_>>()).len(), 5);
        assert!(matches!(g.select("tag:none"), Err(ControlError::Selection(_))));
    }

    #[test]
    fn selects_by_tag() {
        let g = graph(
            "CREATE PRODUCT a WITH (tags = 'Finance, daily') AS SELECT 1 AS x;\n\
             CREATE PRODUCT b WITH (tags = 'daily') AS SELECT * FROM a;\nCREATE PRODUCT c AS SELECT * FROM b;",
        )
        .unwrap();
        let names = |v: BTreeSet<usize>| v.into_iter().map(|i| g.nodes[i].name.clone()).collect::<Vec<_>>();
        assert_eq!(names(g.select("tag:daily").unwrap()), ["a", "b"]);
        assert_eq!(names(g.select("tag:finance+").unwrap()), ["a", "b", "c"]);
    }

    fn resolve(sql: &str) -> (Graph, Vec<ControlError>) {
        Graph::resolve(&[SqlFile::parse("m.sql", sql).unwrap()])
    }

    fn broken<'g>(g: &'g Graph, name: &str) -> Option<&'g str> {
        g.nodes[g.get(name).unwrap()].broken.as_deref()
    }

    #[test]
    fn detects_cycles_self_references_and_duplicates() {
        let (g, errors) = resolve("CREATE PRODUCT a AS SELECT * FROM a;\nCREATE PRODUCT ok AS SELECT 1;");
        assert!(errors.is_empty());
        assert_eq!(broken(&g, "a"), Some("m.sql:1:35: product `a`: a product cannot read itself"));
        assert_eq!(broken(&g, "ok"), None);
        let (g, _) = resolve(
            "CREATE PRODUCT a AS SELECT * FROM b;\nCREATE PRODUCT b AS SELECT * FROM a;\nCREATE PRODUCT c AS SELECT 1;",
        );
        assert_eq!(broken(&g, "a"), Some("cycle between products: a -> b -> a"));
        assert_eq!(broken(&g, "b"), Some("cycle between products: a -> b -> a"));
        assert_eq!(broken(&g, "c"), None);
        assert_eq!(g.order().unwrap().len(), 3);
        let (_, errors) = resolve("CREATE PRODUCT a AS SELECT 1;\nCREATE PRODUCT a AS SELECT 2;");
        assert_eq!(errors[0].to_string(), "m.sql:2:16: `a` is already defined at m.sql:1:16");
        assert!(graph("CREATE PRODUCT a AS SELECT * FROM nope;").is_err());
    }
}
