//! The artifact plane: every serialized record Kiln writes, every identity it computes,
//! and the artifact store.
//!
//! Kiln's runs leave records behind that explain them: the [`Manifest`] of each committed
//! product build (the commit point of a write), the [`CurrentPointer`] that names a
//! product's visible build, the [`RunSummary`] of a `kiln build` and the [`StreamReport`]
//! of a `kiln stream`, the [`BuildRecord`] of every build, the [`TelemetryEvent`]s of a
//! run, and the control plane's records: [`CanonicalPlan`] (hashed into `query_fp`),
//! [`PlanDiff`], [`Lineage`], [`PlanReport`] (`kiln plan --json`), the
//! [`FunctionCatalog`] (`kiln functions --json`). Every record is a plain serde struct
//! with a `format_version`, so tools in any language can read it; docs/json.md documents
//! each shape.
//!
//! - [`identity`]: every build id, fingerprint and version scheme, each with its own
//!   domain tag and version;
//! - [`time`]: run ids and RFC 3339 timestamps;
//! - [`store`]: the [`ArtifactStore`] (`.kiln/`, or any object store URL): plans
//!   content-addressed by `query_fp`, build records, blobs by sha256, run files, events;
//! - [`remote`]: cloud object stores by URL (cargo features `s3`, `gcs`, `azure`).
//!
//! Architecture invariants:
//! - This is the only crate that defines serialized formats; others construct these
//!   records and never invent their own JSON.
//! - No DataFusion: records are data, not plans. (Plan text arrives as strings.)
//!
//! Computing a build id and reading it back from a manifest:
//!
//! ```
//! use kiln_artifact::identity::build_id;
//! use kiln_artifact::BuildFingerprints;
//!
//! let fps = BuildFingerprints {
//!     schema_fp: "…".into(),
//!     query_fp: "…".into(),
//!     runtime_fp: "…".into(),
//!     func_fp: "…".into(),
//!     upstream: [("orders".to_owned(), "<data version>".to_owned())].into(),
//! };
//! let id = build_id("daily_revenue", &fps);
//! assert_eq!(id.len(), 64);
//! assert_ne!(id, build_id("weekly_revenue", &fps), "the product's name is part of it");
//! ```

pub mod catalog;
pub mod docs;
pub mod env;
pub mod identity;
pub mod intervals;
pub mod manifest;
pub mod merge;
pub mod plan;
pub mod remote;
pub mod run;
pub mod store;
pub mod time;

pub use catalog::{FunctionArg, FunctionCatalog, FunctionEntry};
pub use manifest::{
    ColumnStats, CurrentPointer, FileEntry, KILN_COMMIT_VERSION, KilnCommit, LogPointers, MANIFEST_FORMAT_VERSION,
    Manifest, ManifestTotals, SourcePosition, StreamCheckpoint, TableLog,
};
pub use plan::{
    BaseColumn, BuildFingerprints, BuildPlans, BuildRecord, CachedCompile, CanonicalPlan, ChangeCategory,
    CheckpointStats, ColumnLineage, ColumnShape, CompileCache, ContentVersions, Decision, DeletedBuild, Edit, EditOp,
    EffectiveSettings, ExplainReport, GcReport, Lineage, OperatorMetrics, OptimizeReport, OptimizedDataset, ParseCache,
    ParsedRef, ParsedStatement, PlanDiff, PlanItem, PlanNode, PlanReport, ProductDiff, ProductPlan, ProductShape,
    Reason, RollbackReport, TelemetryEvent,
};
pub use run::{
    Action, CheckRun, CheckStatus, ChecksRecord, FreshnessReport, LastTestRun, ListReport, ListedNode, ProductRun,
    RunSummary, STREAM_REPORT_VERSION, SchemaPromotion, SourceFreshness, Stopped, StreamReport, TestReport, TestStatus,
    UnitTestRun, ViewStatus,
};
pub use store::ArtifactStore;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A record on disk does not parse: it was written by another format version or
    /// corrupted. The environment's fault, not the user's.
    #[error("cannot read {what} at {path}: {source}")]
    Decode {
        what: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The object store failed (the environment).
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// A stored artifact does not match its content address (the environment).
    #[error("corrupt artifact: {0}")]
    Corrupt(String),
    /// A location the user gave is not usable.
    #[error("{0}")]
    Config(String),
    /// A record could not be encoded (an internal error).
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}
