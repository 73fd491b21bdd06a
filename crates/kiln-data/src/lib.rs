//! The data plane: Kiln's programs run here as streams of Arrow record batches.
//!
//! The control plane (kiln-control) compiles SQL into the types this crate executes: a
//! DataFusion physical plan plus a [`WriteSpec`] (whose [`WriteLayout`] is the typed
//! layout of a product's files), a [`FileSource`] for each file source, a
//! [`MicroBatchSource`] for each ingested source or stream, a [`ProductTable`] for each
//! product read downstream, and a [`stream::ViewProgram`] for each materialized view.
//! This crate moves the data:
//!
//! - [`warehouse`]: where datasets live (object_store: local files, memory, cloud), the
//!   layout of builds, manifests and the current-build pointer, and the atomic commit.
//! - [`layout`]: the typed layout of a dataset's files (ordering tier, partitioning, file
//!   sizing, Parquet options, existing-data policy, file names).
//! - [`writer`]: the one materialization primitive. It consumes every output partition of
//!   a plan concurrently, conforms batches to the product's contract (casts between
//!   encodings of one logical type, enforces NOT NULL on the data), rolls files by rows
//!   and bytes, writes Parquet through object_store, reads every footer back against the
//!   contract, and returns the [`kiln_artifact::Manifest`] to commit.
//! - [`source`]: file sources (parquet, csv, json, arrow) with an explicit schema,
//!   reconciled with the files' own schemas, and their data version (the listing);
//!   [`checked`]: CSV and NDJSON read with every malformed record rejected with its
//!   file, line and reason; [`codec`]: the whole-file compressions of CSV and JSON files.
//! - [`feed`]: micro-batch sources (HTTP, Kafka, files arriving in a directory, the
//!   embedded [`log`]) and the tables they are registered as.
//! - [`stream`]: the streaming runtime (watermarks, late events, windowed aggregation
//!   over Arrow state, checkpoints).
//! - [`product_table`]: a DataFusion table provider that reads a product's committed build
//!   from its manifest's file list, never by listing directories; [`explode_exec`]: the
//!   operator behind Kiln's `UNNEST`.
//! - [`tpch`]: TPC-H data generation (tpchgen) for the example project and benchmarks.
//!
//! Architecture invariants:
//! - Never parses SQL or option text and holds no policy: it runs what it is given.
//! - Never collects a whole result: batches flow from the plan to the file writers (the
//!   documented exceptions are a stream's micro-batch and its rows between checkpoints).
//! - Every dataset is a Delta Lake table; a build becomes visible only through
//!   [`warehouse::Warehouse::commit`], one Delta commit (made on the version the build
//!   read, never over a newer one); a crash before it leaves the previous version visible
//!   and the new files in no version.
//!
//! Writing a dataset from any stream of record batches and committing it:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use datafusion::arrow::array::{Int64Array, RecordBatch};
//! use datafusion::arrow::datatypes::{DataType, Field, Schema};
//! use datafusion::common::config::TableParquetOptions;
//! use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
//! use kiln_data::{BuildIds, Warehouse, WriteLayout, WriteSpec, write_dataset};
//!
//! let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
//! let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])?;
//! let rows = Box::pin(RecordBatchStreamAdapter::new(schema.clone(), futures::stream::iter([Ok(batch)])));
//!
//! let warehouse = Warehouse::memory();
//! let ids = BuildIds { build_id: "b1".into(), run_id: "r1".into(), batch: None };
//! let schema_fp = kiln_contracts::schema_fingerprint(&schema);
//! let spec = WriteSpec::new("numbers", ids, (schema.clone(), schema_fp), WriteLayout::derived(1_000_000), &TableParquetOptions::default())?;
//! let manifest = write_dataset(&warehouse, vec![rows], Arc::new(spec), Arc::default()).await?;
//! assert!(warehouse.current("numbers").await?.is_none(), "written, not yet visible");
//! let committed = warehouse.commit(&manifest, None, &schema).await?; // version 0 of a new table
//! assert_eq!(committed.version, Some(0));
//! assert_eq!(warehouse.current("numbers").await?.map(|m| m.totals.rows_written), Some(3));
//! # Ok(()) }
//! ```

pub mod checked;
pub mod codec;
pub mod compact;
pub mod explode_exec;
pub mod feed;
pub mod ipc_schema;
pub mod layout;
pub mod log;
pub mod product_table;
pub mod source;
pub mod stream;
pub mod tpch;
pub mod warehouse;
pub mod writer;

pub use codec::Codec;
pub use explode_exec::{ExplodeExec, ExplodeMode};
pub use feed::{
    FilesSource, HttpFormat, HttpSource, KafkaSource, MicroBatch, MicroBatchSource, MicroBatchTable, Pagination,
    StreamTable,
};
pub use layout::{
    Basename, ColumnSetting, ExistingData, FileSizing, NamePart, Ordering, ParquetOptions, SortKey, WriteLayout,
};
pub use product_table::ProductTable;
pub use source::{FileFormat, FileSource, Promotion, SourceCompression, SourceFile};
pub use warehouse::Warehouse;
pub use writer::{BuildIds, WriteProgress, WriteSpec, merge_existing, merge_replacing, merge_rewriting, write_dataset};

use datafusion::error::DataFusionError;

/// Crash-safety testing: when the environment variable `KILN_FAILPOINT` names this point,
/// the process aborts here, as abruptly as a kill (no unwinding, no cleanup). Points:
/// `after_file` (a data file was finished), `before_commit` (every file of a build is
/// written, its Delta commit not made), `after_commit` (the commit is made, nothing after
/// it ran); ingest's `after_batch`; `kiln stream`'s `after_checkpoint` (the view's commit
/// made), `before_side_publish` and `after_side_commit` (around committing a late-events
/// or rejects dataset's part of the checkpoint to its own table). Unset, it costs one
/// cached lookup.
pub fn failpoint(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if POINT.get_or_init(|| std::env::var("KILN_FAILPOINT").ok()).as_deref() == Some(name) {
        std::process::abort();
    }
}

/// `KILN_FAILPOINT=panic:<name>` panics at `name` (tests of the panic boundary around
/// each product's build: no input is known to panic).
pub fn failpoint_panic(name: &str) {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let point = POINT.get_or_init(|| std::env::var("KILN_FAILPOINT").ok()?.strip_prefix("panic:").map(str::to_owned));
    if point.as_deref() == Some(name) {
        // The point of it: a panic on purpose, only when KILN_FAILPOINT asks for one.
        panic!("failpoint {name}");
    }
}

/// Like [`failpoint`], for a step that runs many times: `KILN_FAILPOINT=name#N` aborts at
/// the Nth time `name` is reached (tests kill a promote at each of its steps).
pub fn failpoint_step(name: &str) {
    static POINT: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let v = std::env::var("KILN_FAILPOINT").ok()?;
        let (n, k) = v.split_once('#')?;
        Some((n.to_owned(), k.parse().ok()?))
    });
    if let Some((n, k)) = point
        && n == name
        && SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *k
    {
        std::process::abort();
    }
}

/// The one error type of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The query produced data that breaks the product's contract (the user's query).
    #[error("product `{product}`: column `{column}` is declared NOT NULL but the query produced {nulls} NULL value(s)")]
    NullInNotNull { product: String, column: String, nulls: usize },
    /// A written file does not satisfy the contract (checked before commit).
    #[error("product `{product}`: {file} breaks the declared columns:\n  - {}", .violations.join("\n  - "))]
    ContractBroken { product: String, file: String, violations: Vec<String> },
    /// A batch could not be converted to the contract's type (the user's query).
    #[error("product `{product}`: column `{column}`: cannot convert {from} to {to}: {reason}")]
    Conform { product: String, column: String, from: String, to: String, reason: String },
    /// Tier 3: written rows are not in the promised order (an internal error: the plan's
    /// sort should have produced them in order).
    #[error("product `{product}`: {file}: row {row} breaks the ORDER BY ({keys}) of ordering tier 3")]
    OrderBroken { product: String, file: String, row: u64, keys: String },
    /// Execution failed inside DataFusion (usually the query or the data).
    #[error("{context}: {source}")]
    Execution {
        context: String,
        #[source]
        source: DataFusionError,
    },
    /// Reading or writing storage failed (the environment).
    #[error("{context}: {source}")]
    Store {
        context: String,
        #[source]
        source: object_store::Error,
    },
    /// Writing a Parquet file failed (the environment, or an internal error).
    #[error("{context}: {source}")]
    Parquet {
        context: String,
        #[source]
        source: datafusion::parquet::errors::ParquetError,
    },
    /// A local file operation failed (the environment).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored record did not decode.
    #[error(transparent)]
    Artifact(#[from] kiln_artifact::ArtifactError),
    /// A source could not be read (HTTP status, body, or a malformed record).
    #[error("source `{name}`: {message}")]
    Source { name: String, message: String },
    /// A location or option the user gave is not usable.
    #[error("{0}")]
    Config(String),
    /// A product was read before it had any committed build.
    #[error("product `{0}` has no committed build yet")]
    NotBuilt(String),
    /// A Delta Lake operation failed (reading or committing a table's log).
    #[error("{context}: {source}")]
    Delta {
        context: String,
        #[source]
        source: Box<deltalake_core::DeltaTableError>,
    },
    /// Another writer committed a new version of the dataset after this run read it: this
    /// run's commit is refused (nothing of it is visible) rather than overwrite theirs.
    #[error(
        "product `{product}`: another run committed version {version} while this one ran (it read version {read}); nothing of this run was committed, run it again"
    )]
    ConcurrentCommit { product: String, read: String, version: u64 },
    /// A dataset is still in the warehouse layout from before Delta tables.
    #[error(
        "product `{0}` is stored in Kiln's pre-Delta layout (`{0}/_current.json`); `kiln build` converts it to a Delta table"
    )]
    OldLayout(String),
    /// A dataset's Delta table (made or upgraded by another writer) needs what Kiln does
    /// not write: nothing is committed.
    #[error("product `{product}`: Kiln cannot commit to its Delta table: {reason}")]
    TableRefused { product: String, reason: String },
    /// A column cannot be stored in a Delta table.
    #[error("product `{product}`: {source}")]
    Storage {
        product: String,
        #[source]
        source: kiln_contracts::StorageError,
    },
    /// Something that cannot happen did (a bug in Kiln, or a task that died).
    #[error("internal error: {0}")]
    Internal(String),
}

impl DataError {
    /// Whether the user's input (query, data, options) is at fault: not the environment
    /// (storage, files) and not Kiln itself.
    pub fn is_user_error(&self) -> bool {
        !matches!(
            self,
            DataError::Io { .. } | DataError::Store { .. } | DataError::Delta { .. } | DataError::Internal(_)
        )
    }
}

impl DataError {
    /// Whether this is a reader's verdict on a record (a value that does not parse as
    /// its column's type, a malformed CSV or JSON record), not a failure of the query.
    pub fn is_record_error(&self) -> bool {
        use datafusion::arrow::error::ArrowError;
        let Self::Execution { source, .. } = self else { return false };
        match source.find_root() {
            DataFusionError::ArrowError(e, _) => {
                matches!(**e, ArrowError::ParseError(_) | ArrowError::CsvError(_) | ArrowError::JsonError(_))
            }
            _ => false,
        }
    }

    pub(crate) fn exec(context: impl Into<String>) -> impl FnOnce(DataFusionError) -> Self {
        let context = context.into();
        move |source| DataError::Execution { context, source }
    }
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(object_store::Error) -> Self {
        let context = context.into();
        move |source| DataError::Store { context, source }
    }
    pub(crate) fn parquet(
        context: impl Into<String>,
    ) -> impl FnOnce(datafusion::parquet::errors::ParquetError) -> Self {
        let context = context.into();
        move |source| DataError::Parquet { context, source }
    }
    pub(crate) fn delta(context: impl Into<String>) -> impl FnOnce(deltalake_core::DeltaTableError) -> Self {
        let context = context.into();
        move |source| DataError::Delta { context, source: Box::new(source) }
    }
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| DataError::Io { context, source }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
