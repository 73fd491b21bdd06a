//! The documents behind `kiln docs`' site: one JSON document per page set, each embedded
//! in its pages (a `<script type="application/json" id="kiln-data">`, since a page opened
//! from `file://` may not fetch) and written beside them under `data/` for other tools.
//!
//! ```text
//! data/dag.json                DocsDag: every definition, its inputs and last status
//! data/lineage.json            DocsLineage: every table's columns and column lineage
//! data/products/<page>.json    DocsNodePage: one definition's page
//! data/runs.json               DocsRuns: the most recent runs
//! ```

use serde::{Deserialize, Serialize};

use crate::ArtifactError;
use crate::plan::{BuildRecord, ColumnLineage, PlanDiff, ProductPlan};
use crate::run::{CheckRun, LastTestRun, RunSummary};

/// Version of every document of the site.
pub const DOCS_FORMAT_VERSION: u32 = 1;

/// What every document says about where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocsHeader {
    pub format_version: u32,
    pub project: String,
    /// The environment whose builds it shows (`prod` when none was named).
    pub env: String,
    /// RFC 3339, UTC.
    pub generated_at: String,
}

/// `data/dag.json`: the project's graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsDag {
    #[serde(flatten)]
    pub header: DocsHeader,
    /// Problems outside any one definition (files that do not parse, duplicates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// In topological order (inputs first); audits and tests are on their product's page.
    pub nodes: Vec<DocsNode>,
}

/// One definition on the DAG page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocsNode {
    pub name: String,
    /// `source`, `product`, `stream`, `view`.
    pub kind: String,
    /// The file defining it (relative to the project, `/` separators) and its line.
    pub path: String,
    pub line: u64,
    pub tags: Vec<String>,
    /// The definitions it reads.
    pub deps: Vec<String>,
    /// Its page, relative to the site's root.
    pub page: String,
    /// Its last status: the action of the most recent run that included it (`built`,
    /// `fresh`, `reused`, `failed`, `skipped`, `audit_failed`), else `committed` (a build
    /// exists, made by no run kept), `never_built`, `broken` (does not compile), or
    /// `defined` (sources and streams).
    pub status: String,
    /// What `kiln plan` would do now (`fresh`, `build`, `failed`), for products and views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The first line of its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// `data/lineage.json`: every table's columns, and every product's column lineage, from
/// which the site draws any column's upstream (to the sources) and downstream graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsLineage {
    #[serde(flatten)]
    pub header: DocsHeader,
    pub tables: Vec<DocsTable>,
}

/// A source, stream, product or view with its columns; products and views with lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocsTable {
    pub name: String,
    pub kind: String,
    pub page: String,
    pub columns: Vec<DocsColumn>,
    /// One entry per output column, in output order (empty for sources and streams, and
    /// for products that do not compile).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<ColumnLineage>,
}

/// One column and its SQL type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocsColumn {
    pub name: String,
    /// As Kiln's SQL writes it (`BIGINT`, `DECIMAL(38, 4)`, `LIST<VARCHAR>`).
    #[serde(rename = "type")]
    pub sql_type: String,
    pub nullable: bool,
}

/// `data/products/<page>.json`: one definition's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsNodePage {
    #[serde(flatten)]
    pub header: DocsHeader,
    #[serde(flatten)]
    pub node: DocsNode,
    /// The `--` comment block right above the statement, without the dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The statement as written.
    pub sql: String,
    pub columns: Vec<DocsColumn>,
    /// Declared constraints (`PRIMARY KEY (k)`, `CHECK (x > 0)`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<String>,
    /// Why it does not compile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `kiln plan`'s entry for it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ProductPlan>,
    /// The canonical plan of its current query (`query_fp`'s text), when compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// The record of its committed build: plans, per-operator metrics, phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildRecord>,
    /// Its builds in the runs kept, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<DocsBuild>,
    /// Its constraints and audits with the results of their last run on the committed
    /// build, and its unit tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<DocsCheck>,
    /// The semantic diff of the committed build's query against the previous build's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<DocsDiff>,
}

/// One build of a product, from a run summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsBuild {
    pub run_id: String,
    /// RFC 3339, from the run id.
    pub at: String,
    /// `built`, `reused`, `failed`, `audit_failed` (runs where it was fresh or skipped
    /// are not listed).
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub files: u64,
    pub seconds: f64,
    /// Why it was built, as sentences.
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A check of a product: a constraint, an audit or a unit test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsCheck {
    pub name: String,
    /// `primary_key`, `unique`, `references`, `check`, `not_null`, `audit`, `row_count`,
    /// `test`.
    pub kind: String,
    /// Where an audit or test is defined (`file:line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// Its last result on the committed build (constraints and audits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<CheckRun>,
    /// A unit test's last result (`kiln test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<LastTestRun>,
}

/// What changed in a product's query between two builds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsDiff {
    pub from_build: String,
    pub to_build: String,
    pub diff: PlanDiff,
}

/// `data/runs.json`: the most recent runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocsRuns {
    #[serde(flatten)]
    pub header: DocsHeader,
    pub runs: Vec<RunSummary>,
}

/// A document as pretty JSON.
pub fn to_json<T: Serialize>(document: &T) -> Result<Vec<u8>, ArtifactError> {
    serde_json::to_vec_pretty(document).map_err(|source| ArtifactError::Encode { what: "docs document", source })
}
