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
    Failed,
    Skipped,
}

impl Action {
    /// The action as records write it: `built`, `fresh`, `failed`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Built => "built",
            Action::Fresh => "fresh",
            Action::Failed => "failed",
            Action::Skipped => "skipped",
        }
    }
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
    /// Seconds per phase of a build: `compile`, `plan`, `execute_write`, `commit`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub phases: std::collections::BTreeMap<String, f64>,
    /// Why it was built (empty when fresh, failed or skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub format_version: u32,
    pub run_id: String,
    pub project: String,
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
