//! One SQL file of a project ([`SqlFile`]: its text, parsed on first use) and what the
//! project graph needs from each of its statements ([`Summary`]: kind, name, the tables
//! it reads), cheap enough to cache so unchanged files need no parsing.

use std::collections::{BTreeSet, HashMap};
use std::ops::ControlFlow;
use std::sync::OnceLock;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::resolve::resolve_table_references;
use datafusion::sql::sqlparser::ast::{Spanned, Statement as SqlStatement, visit_relations};
use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{ParsedRef, ParsedStatement};

use crate::dialect::{self, Statement};
use crate::error::{ControlError, Location};

/// What a statement defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Product,
    /// An unbounded source (`CREATE STREAM`), run by `kiln stream`.
    Stream,
    /// A continuous query over streams (`CREATE MATERIALIZED VIEW`), run by `kiln stream`.
    View,
    /// A query over a product whose rows are failures (`CREATE AUDIT ... ON product`),
    /// run on every staged build of the product before it commits.
    Audit,
    /// A product's query run on fixtures (`CREATE TEST ... FOR product`), by `kiln test`.
    Test,
}

/// One SQL file: its text, the summaries the graph needs, and its statements, parsed on
/// first use (a file whose summaries came from the parse cache is parsed only if one of
/// its statements must be compiled).
#[derive(Debug)]
pub struct SqlFile {
    /// Path relative to the project root, with `/` separators (shown in errors).
    pub path: String,
    pub text: String,
    /// sha256 of `text`: the parse cache's key and part of the compile cache's.
    pub fp: String,
    pub summaries: Vec<Summary>,
    parsed: OnceLock<Result<Vec<Statement>, ControlError>>,
}

impl SqlFile {
    /// Parses `text` now.
    pub fn parse(path: &str, text: &str) -> Result<Self, ControlError> {
        let statements = dialect::parse_file(path, text)?;
        let summaries = statements.iter().map(|s| Summary::of(s, path)).collect();
        Ok(Self {
            path: path.to_owned(),
            text: text.to_owned(),
            fp: sha256_hex(text.as_bytes()),
            summaries,
            parsed: OnceLock::from(Ok(statements)),
        })
    }

    /// A file that does not parse (`error`): one summary per definition it still names
    /// ([`dialect::declared_names`]), each broken by the syntax error. Never cached.
    pub fn unparsed(path: &str, text: String, error: &ControlError) -> Self {
        let summaries = dialect::declared_names(path, &text)
            .into_iter()
            .filter_map(|(kind, name, at)| {
                Some(Summary {
                    kind: NodeKind::parse(kind)?,
                    name,
                    at,
                    refs: Vec::new(),
                    problem: Some(format!("{path} does not parse: {error}")),
                    target: None,
                    checks_fp: String::new(),
                    tags: Vec::new(),
                })
            })
            .collect();
        let fp = sha256_hex(text.as_bytes());
        Self { path: path.to_owned(), text, fp, summaries, parsed: OnceLock::new() }
    }

    /// A file whose summaries are known (from the parse cache); parsed on demand.
    pub fn summarized(path: &str, text: String, fp: String, summaries: Vec<Summary>) -> Self {
        Self { path: path.to_owned(), text, fp, summaries, parsed: OnceLock::new() }
    }

    /// The file's statements, parsing it on first use.
    pub fn statements(&self) -> Result<&[Statement], ControlError> {
        let parsed = self.parsed.get_or_init(|| dialect::parse_file(&self.path, &self.text));
        match parsed {
            Ok(statements) => Ok(statements),
            // The summaries came from the parse cache, so this text parsed before.
            Err(e) => Err(ControlError::Internal(format!("{} no longer parses: {e}", self.path))),
        }
    }

    /// Statement `index` of the file.
    pub fn statement(&self, index: usize) -> Result<&Statement, ControlError> {
        self.statements()?
            .get(index)
            .ok_or_else(|| ControlError::Internal(format!("{}: statement {index} changed while loading", self.path)))
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
    /// The product an audit is `ON` or a test is `FOR`, with its position.
    pub target: Option<(String, Location)>,
    /// sha256 of what the statement contributes to its product's checks (a product's
    /// constraints, an audit's definition; empty otherwise).
    pub checks_fp: String,
    /// `WITH (tags = '...')`.
    pub tags: Vec<String>,
}

impl Summary {
    /// Summarizes a parsed statement of file `file`.
    pub fn of(statement: &Statement, file: &str) -> Self {
        let kind = match statement {
            Statement::Source(_) => NodeKind::Source,
            Statement::Product(_) => NodeKind::Product,
            Statement::Stream(_) => NodeKind::Stream,
            Statement::View(_) => NodeKind::View,
            Statement::Audit(_) => NodeKind::Audit,
            Statement::Test(_) => NodeKind::Test,
        };
        let target = match statement {
            Statement::Audit(a) => Some((a.product.clone(), a.product_at.clone())),
            Statement::Test(t) => Some((t.product.clone(), t.product_at.clone())),
            _ => None,
        };
        let checks = statement.checks_text();
        let mut summary = Summary {
            kind,
            name: statement.name().to_owned(),
            at: statement.at().clone(),
            refs: target.iter().cloned().collect(),
            problem: None,
            target,
            checks_fp: if checks.is_empty() { String::new() } else { sha256_hex(checks.as_bytes()) },
            tags: statement.tags(),
        };
        let Some(query) = statement.query() else { return summary };
        let wrapped = DfStatement::Statement(Box::new(SqlStatement::Query(Box::new(query.clone()))));
        match resolve_table_references(&wrapped, true) {
            Ok((refs, _ctes)) => {
                let spans = relation_locations(query, file);
                let mut names: BTreeSet<String> = refs.iter().map(|r| r.table().to_owned()).collect();
                if let Some((target, _)) = &summary.target {
                    names.remove(target);
                }
                let mut found: Vec<(String, Location)> = names
                    .into_iter()
                    .map(|name| {
                        let at = spans.get(&name).cloned().unwrap_or_else(|| summary.at.clone());
                        (name, at)
                    })
                    .collect();
                summary.refs.append(&mut found);
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
            target: self.target.as_ref().map(|(name, at)| ParsedRef {
                name: name.clone(),
                line: at.line,
                column: at.column,
            }),
            checks_fp: self.checks_fp.clone(),
            tags: self.tags.clone(),
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
            target: record.target.as_ref().map(|r| (r.name.clone(), at(r.line, r.column))),
            checks_fp: record.checks_fp.clone(),
            tags: record.tags.clone(),
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
            NodeKind::Audit => "audit",
            NodeKind::Test => "test",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [NodeKind::Source, NodeKind::Product, NodeKind::Stream, NodeKind::View, NodeKind::Audit, NodeKind::Test]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    /// Audits and tests: they check a product and are not read by anything.
    pub fn is_check(self) -> bool {
        matches!(self, NodeKind::Audit | NodeKind::Test)
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
