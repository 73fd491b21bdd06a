//! The summary of one `kiln build` run (`.kiln/runs/<run_id>/run_summary.json`).

use serde::{Deserialize, Serialize};

use crate::ArtifactError;
use crate::plan::Reason;

/// What happened to a product in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Built,
    Fresh,
    /// Its build id was already committed (in this or another environment, or an earlier
    /// version): bound to that build again, nothing executed, no data written.
    Reused,
    Failed,
    Skipped,
    /// Its staged build (or, for a fresh product whose checks changed, its committed one)
    /// failed an error-level check: nothing was committed, and its dependents are skipped.
    AuditFailed,
}

impl Action {
    /// The action as records write it: `built`, `fresh`, `reused`, `failed`, `skipped`,
    /// `audit_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Built => "built",
            Action::Fresh => "fresh",
            Action::Reused => "reused",
            Action::Failed => "failed",
            Action::Skipped => "skipped",
            Action::AuditFailed => "audit_failed",
        }
    }

    /// Whether the run fails (exit 1) because of it.
    pub fn is_failure(self) -> bool {
        matches!(self, Action::Failed | Action::AuditFailed)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Error,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Warn => "warn",
            CheckStatus::Error => "error",
        }
    }
}

/// One check (constraint or audit) run on a product's build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRun {
    pub name: String,
    pub product: String,
    /// `primary_key`, `unique`, `references`, `check`, `audit`, `row_count`.
    pub kind: String,
    /// `error` (can block the commit) or `warn`.
    pub severity: String,
    pub status: CheckStatus,
    pub failing_rows: u64,
    pub seconds: f64,
    /// Why it could not run (then its status is `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The checks that last ran on a product's committed build, kept so a fresh product's
/// checks re-run only when their definitions changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecksRecord {
    pub build_id: String,
    /// sha256 over the definitions of every check of the product.
    pub checks_fp: String,
    pub checks: Vec<CheckRun>,
}

/// One product's line in the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRun {
    pub product: String,
    pub action: Action,
    pub build_id: Option<String>,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
    /// A failure that is Kiln's (or a dependency's) fault, not the input's: a panic
    /// caught at the product's boundary or an internal error. The run exits 3.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Seconds per phase of a build: `compile`, `plan`, `execute_write`, `commit`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub phases: std::collections::BTreeMap<String, f64>,
    /// Why it was built (empty when fresh, failed or skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
    /// The checks run on its build in this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckRun>,
    /// An incremental product: the intervals this run computed, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<Box<crate::intervals::IntervalPlan>>,
    /// A product merged by key: the files this run merged, the rows it updated and
    /// inserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Box<crate::merge::MergePlan>>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub format_version: u32,
    pub run_id: String,
    pub project: String,
    /// The environment it built (summaries written before environments say nothing: prod).
    #[serde(default = "prod")]
    pub env: String,
    /// The runtime profile and its semantic fingerprint; every effective setting is in
    /// `settings.json` next to this summary.
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub runtime_fp: String,
    /// Problems outside any one product: files that do not parse, duplicate definitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub products: Vec<ProductRun>,
    pub seconds: f64,
    /// Source columns read with a wider type than declared (`schema_evolution =
    /// 'permissive'`): the schema the run actually read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<SchemaPromotion>,
    /// Every warning the run gave (stale sources, empty `allow_empty` sources, secrets
    /// read from their fallback, records that could not be written, ...), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A declared source column the files hold with a wider type, read as that type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaPromotion {
    pub source: String,
    pub column: String,
    pub declared: String,
    pub promoted: String,
    /// A file holding the wider type.
    pub file: String,
}

fn prod() -> String {
    "prod".to_owned()
}

impl RunSummary {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "run summary", source })
    }
}

/// Version of [`StreamReport`].
pub const STREAM_REPORT_VERSION: u32 = 1;

/// The outcome of `kiln stream` (`--json`, `.kiln/runs/<run_id>/stream_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    pub format_version: u32,
    pub run_id: String,
    pub views: Vec<ViewStatus>,
    pub stopped: Stopped,
}

impl StreamReport {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "stream report", source })
    }
}

/// Why a `kiln stream` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopped {
    /// `--until-idle`: no stream had new records.
    Idle,
    /// SIGINT / SIGTERM (or the caller's stop flag).
    Signal,
}

/// One materialized view's progress (live, and in the final report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ViewStatus {
    pub view: String,
    pub stream: String,
    /// Events read since the view started (all runs).
    pub events: u64,
    /// Events per second over the last progress interval.
    pub events_per_second: f64,
    /// The watermark (ms since the epoch; RFC 3339 in `watermark`).
    pub watermark_ms: Option<i64>,
    pub watermark: Option<String>,
    /// Records in the stream not read yet (log streams).
    pub lag_records: Option<u64>,
    pub open_windows: usize,
    pub state_bytes: usize,
    pub late: u64,
    pub rejected: u64,
    /// Rows emitted (all runs).
    pub emitted: u64,
    /// Checkpoints committed by this run.
    pub checkpoints: u64,
    /// Where this run started: from the committed checkpoint, or why from the stream's
    /// beginning.
    pub started: String,
}

/// `kiln test --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    pub format_version: u32,
    pub project: String,
    /// Every constraint and audit of the selected products, run on their committed builds.
    pub checks: Vec<CheckRun>,
    /// Selected products with checks but no committed build (their checks did not run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_built: Vec<String>,
    pub tests: Vec<UnitTestRun>,
    pub seconds: f64,
}

impl TestReport {
    /// Whether `kiln test` fails (exit 1): an error-level check or a unit test did.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == CheckStatus::Error)
            || self.tests.iter().any(|t| t.status != TestStatus::Pass)
    }
}

/// The outcome of a unit test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Pass,
    /// The product's rows differ from the expected ones.
    Fail,
    /// The test could not run (a definition that does not compile, a fixture that does
    /// not load).
    Error,
}

impl TestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TestStatus::Pass => "pass",
            TestStatus::Fail => "fail",
            TestStatus::Error => "error",
        }
    }
}

/// One unit test (`CREATE TEST`): a product's query run on fixtures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitTestRun {
    pub name: String,
    pub product: String,
    pub status: TestStatus,
    pub seconds: f64,
    /// Expected rows the product did not produce (each as `(v1, v2, ...)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// Rows the product produced that were not expected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unexpected: Vec<String>,
    /// A missing and an unexpected row with the same first column, told apart by column:
    /// `row (k): column `c`: expected x, got y`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A unit test's last result (`.kiln/tests/<test>.json`), kept by `kiln test` for `kiln docs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastTestRun {
    /// RFC 3339, UTC: when `kiln test` ran it.
    pub at: String,
    #[serde(flatten)]
    pub run: UnitTestRun,
}

/// `kiln freshness --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FreshnessReport {
    pub format_version: u32,
    pub project: String,
    pub sources: Vec<SourceFreshness>,
}

impl FreshnessReport {
    /// Whether a source is older than its `freshness_error` (or could not be measured).
    pub fn failed(&self) -> bool {
        self.sources.iter().any(|s| s.status == CheckStatus::Error)
    }
}

/// How old one source's newest data is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFreshness {
    pub source: String,
    /// The column whose largest value is the newest data; absent: file modification times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The newest data's time (UTC, RFC 3339), absent when the source holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_after_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after_seconds: Option<f64>,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `kiln ls --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReport {
    pub format_version: u32,
    pub project: String,
    pub nodes: Vec<ListedNode>,
}

/// One definition of the project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedNode {
    pub name: String,
    /// `source`, `product`, `stream`, `view`, `audit` or `test`.
    pub kind: String,
    /// `file:line` of its definition.
    pub at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The product an audit or test checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Products and views: `committed` or `never_built`; any node: `broken` when it cannot
    /// be compiled (`error` says why); else `defined`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The committed Delta table version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
