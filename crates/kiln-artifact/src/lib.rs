//! The artifact plane: every serialized record Kiln writes, and nothing else.
//!
//! Kiln's runs leave records behind that explain them: the [`Manifest`] of each committed
//! product build (the commit point of a write), the [`CurrentPointer`] that names a
//! product's visible build, and the [`RunSummary`] of a `kiln build`. Every record is a
//! plain serde struct with a `format_version`, so tools in any language can read it, and
//! the JSON shapes are documented in docs/artifacts.md.
//!
//! Main types: [`Manifest`] (with the [`BuildFingerprints`] that produced it),
//! [`FileEntry`], [`CurrentPointer`], [`RunSummary`], [`ProductRun`]; the control plane's
//! records: [`CanonicalPlan`] (hashed into `query_fp`), [`PlanDiff`], [`Lineage`],
//! [`PlanReport`] (`kiln plan --json`); and the local [`ArtifactStore`] under `.kiln/`.
//!
//! Architecture invariants:
//! - This is the only crate that defines serialized formats; others construct these
//!   records and never invent their own JSON.
//! - No DataFusion: records are data, not plans. (Plan text arrives as strings.)

pub mod catalog;
pub mod identity;
pub mod manifest;
pub mod plan;
pub mod remote;
pub mod run;
pub mod store;
pub mod time;

pub use catalog::{FunctionArg, FunctionCatalog, FunctionEntry};
pub use manifest::{
    ColumnStats, CurrentPointer, FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals, SourcePosition,
    StreamCheckpoint,
};
pub use plan::{
    BaseColumn, BuildFingerprints, BuildPlans, BuildRecord, CachedCompile, CanonicalPlan, ChangeCategory,
    CheckpointStats, ColumnLineage, ColumnShape, CompileCache, ContentVersions, Decision, DeletedBuild, Edit, EditOp,
    EffectiveSettings, ExplainReport, GcReport, Lineage, OperatorMetrics, ParseCache, ParsedRef, ParsedStatement,
    PlanDiff, PlanItem, PlanNode, PlanReport, ProductDiff, ProductPlan, ProductShape, Reason, RollbackReport,
    TelemetryEvent,
};
pub use run::{
    Action, ProductRun, RunSummary, STREAM_REPORT_VERSION, SchemaPromotion, Stopped, StreamReport, ViewStatus,
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
