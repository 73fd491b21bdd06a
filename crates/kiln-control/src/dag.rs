//! The project graph: sources and products, the references between them, their order.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::{Spanned, Statement as SqlStatement, visit_relations};

use crate::dialect::Statement;
use crate::error::{ControlError, Location};
use crate::project::SqlFile;
use kiln_artifact::{ParsedRef, ParsedStatement};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Product,
    /// An unbounded source (`CREATE STREAM`), run by `kiln stream`.
    Stream,
    /// A continuous query over streams (`CREATE MATERIALIZED VIEW`), run by `kiln stream`.
    View,
}

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

    /// Resolves a selection: space- or comma-separated terms, each `name`, `+name` (with
    /// everything upstream) or `name+` (with everything downstream). Returns node indices.
    pub fn select(&self, selection: &str) -> Result<BTreeSet<usize>, ControlError> {
        let mut out = BTreeSet::new();
        for term in selection.split([',', ' ']).filter(|t| !t.is_empty()) {
            let up = term.starts_with('+');
            let down = term.ends_with('+') && term.len() > 1;
            let name = term.trim_matches('+').to_lowercase();
            let i = self.get(&name).ok_or_else(|| ControlError::Selection(term.to_owned()))?;
            out.insert(i);
            if up {
                self.walk(i, &mut out, |g, n| g.nodes[n].deps.clone());
            }
            if down {
                self.walk(i, &mut out, |g, n| (0..g.nodes.len()).filter(|&m| g.nodes[m].deps.contains(&n)).collect());
            }
        }
        Ok(out)
    }

    fn walk(&self, from: usize, out: &mut BTreeSet<usize>, next: impl Fn(&Graph, usize) -> Vec<usize>) {
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for m in next(self, n) {
                if out.insert(m) {
                    todo.push(m);
                }
            }
        }
    }
}

/// What the graph needs from one statement: cheap to cache (kiln-artifact's
/// `ParsedStatement`) so unchanged files need no parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub kind: NodeKind,
    pub name: String,
    pub at: Location,
    /// The tables the statement's query reads (CTE names excluded), each at its first
    /// reference, in a stable order.
    pub refs: Vec<(String, Location)>,
    /// A problem resolving the references (a malformed reference).
    pub problem: Option<String>,
}

impl Summary {
    /// Summarizes a parsed statement of file `file`.
    pub fn of(statement: &Statement, file: &str) -> Self {
        let kind = match statement {
            Statement::Source(_) => NodeKind::Source,
            Statement::Product(_) => NodeKind::Product,
            Statement::Stream(_) => NodeKind::Stream,
            Statement::View(_) => NodeKind::View,
        };
        let mut summary = Summary {
            kind,
            name: statement.name().to_owned(),
            at: statement.at().clone(),
            refs: Vec::new(),
            problem: None,
        };
        let Some(query) = statement.query() else { return summary };
        let wrapped = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
        match resolve_table_references(&wrapped, true) {
            Ok((refs, _ctes)) => {
                let spans = relation_locations(query, file);
                let names: BTreeSet<String> = refs.iter().map(|r| r.table().to_owned()).collect();
                summary.refs = names
                    .into_iter()
                    .map(|name| {
                        let at = spans.get(&name).cloned().unwrap_or_else(|| summary.at.clone());
                        (name, at)
                    })
                    .collect();
            }
            Err(e) => {
                summary.problem = Some(
                    ControlError::Compile {
                        at: summary.at.clone(),
                        product: summary.name.clone(),
                        message: e.to_string(),
                    }
                    .to_string(),
                );
            }
        }
        summary
    }

    /// The cacheable record of this summary (file paths are not stored: a renamed file
    /// keeps its entry).
    pub fn to_record(&self) -> ParsedStatement {
        ParsedStatement {
            kind: self.kind.as_str().to_owned(),
            name: self.name.clone(),
            line: self.at.line,
            column: self.at.column,
            refs: self
                .refs
                .iter()
                .map(|(name, at)| ParsedRef { name: name.clone(), line: at.line, column: at.column })
                .collect(),
            problem: self.problem.clone(),
        }
    }

    /// A summary from its record, located in `file`; `None` for an unknown kind.
    pub fn from_record(record: &ParsedStatement, file: &str) -> Option<Self> {
        let at = |line, column| Location { file: file.to_owned(), line, column };
        Some(Summary {
            kind: NodeKind::parse(&record.kind)?,
            name: record.name.clone(),
            at: at(record.line, record.column),
            refs: record.refs.iter().map(|r| (r.name.clone(), at(r.line, r.column))).collect(),
            problem: record.problem.clone(),
        })
    }
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Source => "source",
            NodeKind::Product => "product",
            NodeKind::Stream => "stream",
            NodeKind::View => "view",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [NodeKind::Source, NodeKind::Product, NodeKind::Stream, NodeKind::View].into_iter().find(|k| k.as_str() == text)
    }
}

/// The location of the first reference to each (normalized) table name in a query.
fn relation_locations(query: &datafusion::sql::sqlparser::ast::Query, file: &str) -> HashMap<String, Location> {
    let mut out = HashMap::new();
    let _ = visit_relations(query, |name| {
        if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
            let span = name.span();
            out.entry(crate::dialect::normalize(last)).or_insert(Location {
                file: file.to_owned(),
                line: span.start.line.max(1),
                column: span.start.column.max(1),
            });
        }
        ControlFlow::<()>::Continue(())
    });
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
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
