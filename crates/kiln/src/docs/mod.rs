//! `kiln docs`: a static site of the project, from what the artifact records already say.
//!
//! `gather` reads the project (compiled, or from the compile cache: a project built
//! before compiles nothing), `kiln plan`'s decisions, each product's committed build, its
//! build record, its checks record, the runs kept and its Delta history (for the semantic
//! diff), into the documents of `kiln_artifact::docs`; `html` renders them. The site is
//! written to a temporary directory beside `--out` and renamed into place, so a reader
//! (or `kiln docs --serve`) never sees half a site.
//!
//! Decision: pages are rendered here, in Rust (SQL highlighted with Kiln's own
//! tokenizer), and one small script of our own (`assets/site.js`, no dependencies) draws
//! the graphs in the browser as SVG and evaluates selections. Drawing in the browser keeps
//! the site's size linear in the project: a column's lineage graph is laid out when it
//! is asked for, from `data/lineage.json`, instead of one drawing per column.

mod html;
pub mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use kiln_artifact::docs::{
    DOCS_FORMAT_VERSION, DocsBuild, DocsCheck, DocsColumn, DocsDag, DocsDiff, DocsHeader, DocsLineage, DocsNode,
    DocsNodePage, DocsRuns, DocsTable,
};
use kiln_artifact::{ColumnLineage, ProductPlan, RunSummary};
use kiln_control::NodeKind;
use kiln_control::dialect::Statement;
use kiln_control::sqltext::StatementText;

use crate::KilnError;
use crate::events::{BuildOptions, Quiet};
use crate::session::{Need, Session};

/// How many runs the runs page shows (the builds of each product come from every run kept).
pub const RUNS_SHOWN: usize = 50;

/// What `kiln docs` wrote.
#[derive(Debug, Clone)]
pub struct DocsReport {
    /// The site's directory; `index.html` is the DAG page.
    pub out: PathBuf,
    pub pages: usize,
    pub bytes: u64,
}

/// The site's default directory for project `dir`.
pub fn default_out(dir: &Path) -> PathBuf {
    dir.join(".kiln").join("docs")
}

/// `kiln docs`: writes the site of the project in `dir` to `out` (replacing it).
pub async fn docs(dir: &Path, out: &Path, options: &BuildOptions) -> Result<DocsReport, KilnError> {
    let site = gather(dir, options).await?;
    let files = html::render(&site)?;
    write_site(out, &files)
}

/// Every document of the site.
#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) dag: DocsDag,
    pub(crate) lineage: DocsLineage,
    pub(crate) pages: Vec<DocsNodePage>,
    pub(crate) runs: DocsRuns,
}

/// The site's page of a definition, relative to its root: `nodes/<name>.html`, with
/// characters outside `[a-z0-9_-]` written as `~XX` (hex of each UTF-8 byte).
pub(crate) fn page_of(name: &str) -> String {
    let mut out = String::from("nodes/");
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => out.push(char::from(b)),
            _ => out.push_str(&format!("~{b:02x}")),
        }
    }
    out.push_str(".html");
    out
}

async fn gather(dir: &Path, options: &BuildOptions) -> Result<Site, KilnError> {
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    let header = DocsHeader {
        format_version: DOCS_FORMAT_VERSION,
        project: session.project.config.project.name.clone(),
        env: options.env().to_owned(),
        generated_at: kiln_artifact::time::now_rfc3339(),
    };
    let plans: HashMap<String, ProductPlan> =
        crate::build::plan_products(&mut session).await?.into_iter().map(|p| (p.product.clone(), p)).collect();
    let graph = Arc::clone(&session.graph);
    let shown: Vec<usize> = session
        .order
        .iter()
        .copied()
        .filter(|&i| {
            matches!(graph.nodes[i].kind, NodeKind::Source | NodeKind::Product | NodeKind::Stream | NodeKind::View)
        })
        .collect();
    let tabled: Vec<usize> =
        shown.iter().copied().filter(|&i| matches!(graph.nodes[i].kind, NodeKind::Product | NodeKind::View)).collect();
    let mut currents = session.currents(&tabled).await?;

    // Runs, oldest first; each product's last action and its builds.
    let store = session.store.clone();
    let mut runs: Vec<RunSummary> = Vec::new();
    for id in store.run_ids().await? {
        let Some(bytes) = store.run_file(&id, "run_summary.json").await? else { continue };
        // A summary another version wrote, or a damaged one, is left out of the site, and
        // so are the runs of other environments.
        if let Ok(summary) = serde_json::from_slice::<RunSummary>(&bytes)
            && summary.env == options.env()
        {
            runs.push(summary);
        }
    }
    let mut last_action: HashMap<&str, &'static str> = HashMap::new();
    let mut builds: HashMap<&str, Vec<DocsBuild>> = HashMap::new();
    for run in &runs {
        for p in &run.products {
            last_action.insert(&p.product, p.action.as_str());
            if matches!(p.action.as_str(), "fresh" | "skipped") {
                continue;
            }
            builds.entry(&p.product).or_default().push(DocsBuild {
                run_id: run.run_id.clone(),
                at: run_time(&run.run_id),
                action: p.action.as_str().to_owned(),
                build_id: p.build_id.clone(),
                rows: p.rows,
                bytes: p.bytes,
                files: p.files,
                seconds: p.seconds,
                reasons: p.reasons.iter().map(ToString::to_string).collect(),
                error: p.error.clone(),
            });
        }
    }

    let mut nodes = Vec::new();
    let mut tables = Vec::new();
    let mut pages = Vec::new();
    for &i in &shown {
        let node = &graph.nodes[i];
        let kind = node.kind;
        let current = currents.remove(&i).flatten();
        let plan = plans.get(&node.name).cloned();
        let status = match (&node.broken, last_action.get(node.name.as_str()), &current, kind) {
            (Some(_), _, _, _) => "broken",
            (None, _, _, NodeKind::Source | NodeKind::Stream) => "defined",
            (None, Some(action), _, _) => action,
            (None, None, Some(_), _) => "committed",
            (None, None, None, _) => "never_built",
        };
        let (file, statement_index) = node.def;
        let texts = kiln_control::sqltext::statements(&session.project.files[file].text);
        let text = texts
            .iter()
            .find(|t| (t.first_line..=t.last_line).contains(&node.at.line))
            .cloned()
            .or_else(|| texts.get(statement_index).cloned());
        let StatementText { sql, description, .. } = text.unwrap_or(StatementText {
            first_line: node.at.line,
            last_line: node.at.line,
            sql: String::new(),
            description: None,
        });
        let statement = session.project.files[file].statement(statement_index).ok().cloned();
        let (columns, lineage, canonical, error) = match kind {
            NodeKind::Product | NodeKind::View => product_shape(&mut session, i).await?,
            _ => (statement.as_ref().map(declared_columns).unwrap_or_default(), Vec::new(), None, None),
        };
        let page = page_of(&node.name);
        let docs_node = DocsNode {
            name: node.name.clone(),
            kind: kind.as_str().to_owned(),
            path: node.path.clone(),
            line: node.at.line,
            tags: node.tags.clone(),
            deps: node.deps.iter().map(|&d| graph.nodes[d].name.clone()).collect(),
            page: page.clone(),
            status: status.to_owned(),
            plan: plan.as_ref().map(|p| decision_name(p).to_owned()),
            summary: description.as_ref().and_then(|d| d.lines().next()).map(str::to_owned),
        };
        tables.push(DocsTable {
            name: node.name.clone(),
            kind: kind.as_str().to_owned(),
            page: page.clone(),
            columns: columns.clone(),
            lineage,
        });
        let build = match &current {
            Some(m) => store.build_record(&node.name, &m.build_id).await?,
            None => None,
        };
        let checks = checks_of(&session, i, current.as_ref().map(|m| m.build_id.as_str())).await?;
        let diff = match &current {
            Some(m) if m.version.is_some_and(|v| v > 0) => diff_with_previous(&session, &node.name, m).await?,
            _ => None,
        };
        let constraints = match &statement {
            Some(Statement::Product(p)) => p.constraints.iter().map(|c| c.kind.to_string()).collect(),
            _ => Vec::new(),
        };
        let mut product_builds = builds.remove(node.name.as_str()).unwrap_or_default();
        product_builds.reverse();
        pages.push(DocsNodePage {
            header: header.clone(),
            node: docs_node.clone(),
            description,
            sql,
            columns,
            constraints,
            error: error.or_else(|| node.broken.clone()),
            plan,
            canonical,
            build,
            builds: product_builds,
            checks,
            diff,
        });
        nodes.push(docs_node);
    }
    let errors = session.problems.iter().map(ToString::to_string).collect();
    runs.reverse();
    runs.truncate(RUNS_SHOWN);
    Ok(Site {
        dag: DocsDag { header: header.clone(), errors, nodes },
        lineage: DocsLineage { header: header.clone(), tables },
        pages,
        runs: DocsRuns { header, runs },
    })
}

/// `fresh`, `build` or `failed`.
fn decision_name(plan: &ProductPlan) -> &'static str {
    match plan.decision {
        kiln_artifact::Decision::Fresh => "fresh",
        kiln_artifact::Decision::Build => "build",
        kiln_artifact::Decision::Failed => "failed",
    }
}

/// `20261202T221834-...` as `2026-12-02T22:18:34Z` (the run id itself when it is not one).
fn run_time(run_id: &str) -> String {
    let b = run_id.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if digits(0..8) && b.get(8) == Some(&b'T') && digits(9..15) {
        let s = |r: std::ops::Range<usize>| &run_id[r];
        format!("{}-{}-{}T{}:{}:{}Z", s(0..4), s(4..6), s(6..8), s(9..11), s(11..13), s(13..15))
    } else {
        run_id.to_owned()
    }
}

/// The declared columns of a source or stream.
fn declared_columns(statement: &Statement) -> Vec<DocsColumn> {
    use datafusion::sql::sqlparser::ast::ColumnOption;
    let columns = match statement {
        Statement::Source(s) => &s.columns,
        Statement::Stream(s) => &s.columns,
        _ => return Vec::new(),
    };
    columns
        .iter()
        .map(|c| DocsColumn {
            name: kiln_control::dialect::normalize(&c.name),
            // The spelling products' columns get, so one type reads the same everywhere.
            sql_type: kiln_contracts::types::sql_to_arrow(&c.data_type)
                .ok()
                .and_then(|t| kiln_contracts::types::arrow_to_sql(&t))
                .unwrap_or_else(|| c.data_type.to_string()),
            nullable: !c.options.iter().any(|o| matches!(o.option, ColumnOption::NotNull)),
        })
        .collect()
}

fn schema_columns(schema: &SchemaRef) -> Vec<DocsColumn> {
    schema
        .fields()
        .iter()
        .map(|f| DocsColumn {
            name: f.name().clone(),
            sql_type: kiln_contracts::types::arrow_to_sql(f.data_type()).unwrap_or_else(|| f.data_type().to_string()),
            nullable: f.is_nullable(),
        })
        .collect()
}

type Shape = (Vec<DocsColumn>, Vec<ColumnLineage>, Option<String>, Option<String>);

/// A product's or view's columns, lineage, canonical plan text, and why it does not
/// compile: from this run's compile, else from its compile-cache entry (and the canonical
/// plan from the artifact store), compiling only what neither has.
async fn product_shape(session: &mut Session, i: usize) -> Result<Shape, KilnError> {
    if let Some(reason) = &session.nodes[i].failed {
        return Ok((Vec::new(), Vec::new(), None, Some(reason.clone())));
    }
    if session.nodes[i].compiled.is_none()
        && let Some(entry) = &session.nodes[i].cached
        && entry.lineage.len() == entry.arrow_types.len()
    {
        let schema = serde_json::from_str::<serde_json::Value>(&entry.schema)
            .ok()
            .and_then(|v| kiln_contracts::Contract::from_json(&v).ok())
            .map(|c| c.schema);
        if let Some(schema) = schema {
            let (lineage, query_fp) = (entry.lineage.clone(), entry.query_fp.clone());
            let canonical = session.store.plan(&query_fp).await?.map(|p| p.encode());
            return Ok((schema_columns(&schema), lineage, canonical, None));
        }
    }
    match session.ensure_compiled(i).await {
        Ok(()) => {}
        Err(e) => return Ok((Vec::new(), Vec::new(), None, Some(e.to_string()))),
    }
    let Some(c) = &session.nodes[i].compiled else {
        return Ok((Vec::new(), Vec::new(), None, None));
    };
    Ok((schema_columns(&c.schema), c.lineage.clone(), Some(c.canonical.encode()), None))
}

/// A product's constraints and audits with their last results on the committed build
/// `build_id`, then its unit tests with their last results.
async fn checks_of(session: &Session, i: usize, build_id: Option<&str>) -> Result<Vec<DocsCheck>, KilnError> {
    let graph = &session.graph;
    let name = &graph.nodes[i].name;
    let record = match build_id {
        Some(id) => session.store.checks(name).await?.filter(|r| r.build_id == id),
        None => None,
    };
    let mut out: Vec<DocsCheck> = record
        .map(|r| r.checks)
        .unwrap_or_default()
        .into_iter()
        .map(|c| DocsCheck { name: c.name.clone(), kind: c.kind.clone(), at: None, last: Some(c), test: None })
        .collect();
    for c in graph.checks_of(i) {
        let check = &graph.nodes[c];
        let at = format!("{}:{}", check.path, check.at.line);
        match out.iter_mut().find(|d| d.name == check.name) {
            Some(found) => found.at = Some(at),
            None => {
                let test = match check.kind {
                    NodeKind::Test => session.store.test_run(&check.name).await?,
                    _ => None,
                };
                out.push(DocsCheck {
                    name: check.name.clone(),
                    kind: if check.kind == NodeKind::Test { "test" } else { "audit" }.to_owned(),
                    at: Some(at),
                    last: None,
                    test,
                });
            }
        }
    }
    Ok(out)
}

/// The semantic diff of `current`'s query against the build before it in the table's
/// history (`None` when there is none, the queries are the same, or a plan is missing).
async fn diff_with_previous(
    session: &Session,
    name: &str,
    current: &kiln_artifact::Manifest,
) -> Result<Option<DocsDiff>, KilnError> {
    let Some(new_fp) = current.fingerprints.as_ref().map(|f| f.query_fp.clone()) else { return Ok(None) };
    let history = session.warehouse.history(name).await?;
    let previous = history
        .iter()
        .rev()
        .filter_map(|v| v.record.as_ref())
        .find(|r| r.build_id != current.build_id && r.fingerprints.is_some());
    let Some(previous) = previous else { return Ok(None) };
    let Some(old_fp) = previous.fingerprints.as_ref().map(|f| f.query_fp.clone()) else { return Ok(None) };
    if old_fp == new_fp {
        return Ok(None);
    }
    let (Some(old), Some(new)) = (session.store.plan(&old_fp).await?, session.store.plan(&new_fp).await?) else {
        return Ok(None);
    };
    Ok(Some(DocsDiff {
        from_build: previous.build_id.clone(),
        to_build: current.build_id.clone(),
        diff: kiln_control::diff::diff(&old, &new),
    }))
}

/// Writes `files` (path relative to the site -> bytes) as the site at `out`: into a
/// sibling temporary directory, then renamed over `out`.
fn write_site(out: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<DocsReport, KilnError> {
    let io = |what: String| move |source: std::io::Error| KilnError::Io { context: what, source };
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(format!("cannot create {}", parent.display())))?;
    let base = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "docs".into());
    let staging = parent.join(format!(".{base}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let mut bytes = 0;
    for (rel, content) in files {
        let path = staging.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
        }
        std::fs::write(&path, content).map_err(io(format!("cannot write {}", path.display())))?;
        bytes += content.len() as u64;
    }
    let old = parent.join(format!(".{base}.old-{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(io(format!("cannot replace {}", out.display())))?;
    }
    std::fs::rename(&staging, out).map_err(io(format!("cannot write {}", out.display())))?;
    let _ = std::fs::remove_dir_all(&old);
    let pages = files.keys().filter(|k| k.ends_with(".html")).count();
    Ok(DocsReport { out: out.to_path_buf(), pages, bytes })
}
