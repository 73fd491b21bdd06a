//! Dataset manifests and the current-build pointer.
//!
//! Layout of a product `p` under the warehouse (see ARCHITECTURE.md, "Atomic writes"):
//!
//! ```text
//! p/builds/<run_id>/part-<stream>-<seq>.parquet   data files, invisible until committed
//! p/builds/<run_id>/_manifest.json                the commit point of the build
//! p/_current.json                                 CurrentPointer -> the visible build
//! ```
//!
//! A reader takes the pointer, then the manifest, then exactly the files the manifest lists;
//! it never lists directories. A file not named by a committed manifest does not exist for
//! Kiln.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ArtifactError;
use crate::plan::{BuildFingerprints, ContentVersions};

/// Bump when a field changes meaning or is removed (adding optional fields does not).
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// One committed build of a product dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    /// Directory of the build, relative to the warehouse root.
    pub build_dir: String,
    /// Canonical schema fingerprint of the data files (kiln-contracts).
    pub schema_fp: String,
    /// 1 = no ordering promise, 2 = producer order, 3 = canonical sort (verified).
    pub ordering_tier: u8,
    pub sort_keys: Vec<String>,
    /// Hive partition columns (`PARTITIONED BY`), in directory order; they are not stored
    /// inside the files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// The product's Parquet write options (`compression`, `max_rows_per_row_group`, ...),
    /// when it set any; the session's defaults otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub write_options: BTreeMap<String, String>,
    pub files: Vec<FileEntry>,
    pub totals: ManifestTotals,
    /// The inputs of `build_id`, so the next run can say what changed (absent in builds
    /// recorded before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<BuildFingerprints>,
    /// Versions of this build's rows and columns, which downstream build ids use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentVersions>,
    /// Micro-batch sources (HTTP): where the next ingest resumes, per source. Committed in
    /// the same manifest as the rows read up to there, so a restart neither loses nor
    /// duplicates records.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, SourcePosition>,
    /// Materialized views (`kiln stream`): the rest of the checkpoint this manifest
    /// commits together with the rows emitted up to it and `positions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamCheckpoint>,
    /// Materialized views: the manifests of the datasets this checkpoint also commits
    /// (`<view>__late`, `<stream>__rejected`), all files so far. The view's manifest is
    /// their commit point; their own pointers are switched after it and repaired from
    /// here when a run was killed in between.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub side: BTreeMap<String, Manifest>,
    /// `_common_metadata` / `_metadata` files of this build that describe exactly the
    /// listed files (`metadata_sidecars = 'true'`), relative to the warehouse root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<String>,
}

/// A materialized view's checkpoint besides its source position: event time per source
/// partition, the watermark windows were closed at, and the open windows' state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamCheckpoint {
    /// The stream's watermark (ms since the epoch): windows ending at or before it have
    /// been emitted; events only in such windows are late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// Per source partition, the greatest event time read (ms since the epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<i32, i64>,
    /// The open windows' partial aggregate state (an Arrow IPC file, relative to the
    /// warehouse root), absent when no window is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub state_rows: u64,
    pub state_bytes: u64,
    /// Totals since the view started: events read, late events, rejected records, rows
    /// emitted.
    pub events: u64,
    pub late: u64,
    #[serde(default)]
    pub rejected: u64,
    pub emitted: u64,
}

/// How far a micro-batch source has been read. HTTP: the next request, and how many
/// records of its response are already committed (the last page of an append-only feed
/// grows; it is fetched again and its first `skip` records passed over). Kafka: the next
/// offset of each partition (`url` names the topic).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// The URL of the next request (for cursor pagination, with the cursor in it).
    pub url: String,
    pub skip: u64,
    /// Records consumed from the source so far, rejected ones included.
    pub records: u64,
    /// Micro-batches committed so far.
    pub batches: u64,
    /// Kafka sources: per partition, the offset of the next record to read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub offsets: BTreeMap<i32, i64>,
    /// File streams: the files already read (names relative to the stream's directory).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub files: std::collections::BTreeSet<String>,
}

/// One data file of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the warehouse root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub row_groups: u32,
    /// Values of the partition columns for every row of the file (NULL as `None`), aligned
    /// with `Manifest::partition_by`; the directory names are their Hive-escaped forms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition: Vec<Option<String>>,
    /// Size of the Parquet footer (metadata) in bytes.
    #[serde(default)]
    pub footer_bytes: u64,
    /// Per top-level column, from the footer's statistics (absent in older manifests).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnStats>,
}

/// One column of one file: NULL count, and min/max rendered as text (absent when the
/// file has no statistics for it, e.g. nested columns or all values NULL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnStats {
    pub nulls: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<String>,
}

/// Totals over the files, plus the accounting invariant
/// `rows_read = rows_written + rows_rejected`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTotals {
    pub files: u64,
    pub rows_written: u64,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_rejected: u64,
}

impl Manifest {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "manifest", source })
    }

    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, ArtifactError> {
        serde_json::from_slice(bytes).map_err(|source| ArtifactError::Decode {
            what: "manifest",
            path: path.to_owned(),
            source,
        })
    }
}

/// `<product>/_current.json`: which build of a product is visible. Replaced atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentPointer {
    pub format_version: u32,
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    /// Manifest path relative to the warehouse root.
    pub manifest: String,
}

impl CurrentPointer {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "pointer", source })
    }

    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, ArtifactError> {
        serde_json::from_slice(bytes).map_err(|source| ArtifactError::Decode {
            what: "current-build pointer",
            path: path.to_owned(),
            source,
        })
    }
}
