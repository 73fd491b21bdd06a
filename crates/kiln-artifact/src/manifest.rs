//! Committed builds: the [`Manifest`] (Kiln's whole view of one build of a dataset: its
//! files, totals, identity, position, checkpoint) and the [`KilnCommit`] record that
//! carries it in the dataset's Delta Lake commit.
//!
//! Layout of a product `p` under the warehouse (ARCHITECTURE.md, "Delta tables"):
//!
//! ```text
//! p/_delta_log/00000000000000000003.json         the commits; the latest is the visible build
//! p/builds/<run_id>/part-<stream>-<seq>.parquet   data files, invisible until a commit adds them
//! ```
//!
//! Every commit Kiln makes carries a [`KilnCommit`] in its `commitInfo` (key `kiln`): the
//! manifest's record without the files other commits already added. A reader takes the
//! latest commit, then exactly the files of that table version; it never lists data
//! directories. A file no committed version holds does not exist, for Kiln or for any
//! other Delta reader. ([`CurrentPointer`] is the pre-Delta layout's pointer, read only to
//! convert such a warehouse.)

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
    /// Incremental products (`incremental = 'by_time'`): the intervals the build holds
    /// and the input files they were computed from (crate::intervals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<crate::intervals::IntervalState>,
    /// Products merged by key (`incremental = 'by_unique_key'`): the input files merged
    /// (crate::merge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::merge::MergeState>,
    /// Materialized views: the commits of the side datasets (`<view>__late`,
    /// `<stream>__rejected`) this checkpoint makes too, each with the files it adds to its
    /// dataset. The view's commit is their commit point: they are committed to their own
    /// tables right after it, and on restart when a run was killed in between.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub side: BTreeMap<String, KilnCommit>,
    /// `_common_metadata` / `_metadata` files of this build that describe exactly the
    /// listed files (`metadata_sidecars = 'true'`), relative to the warehouse root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<String>,
    /// The Delta table version this build is (absent until committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Where the log of the table this build was read from set the protocol and metadata
    /// in force at `version` (absent when not known: the next commit over it reads them
    /// from a snapshot of the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_log: Option<TableLog>,
}

/// The commits of a Delta log that last set the table's protocol and its metadata, as of
/// one version. A writer reads those one or two commit files instead of replaying the
/// log to find them, so a commit costs the same at version 5 and at version 5,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPointers {
    pub protocol: u64,
    pub metadata: u64,
}

/// [`LogPointers`] as of version `version` of the table at warehouse-relative `table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableLog {
    pub table: String,
    pub version: u64,
    pub pointers: LogPointers,
}

/// Version of [`KilnCommit`].
pub const KILN_COMMIT_VERSION: u32 = 1;

/// Kiln's record of one commit of a dataset's Delta table, in the commit's `commitInfo`
/// under `kiln`: everything the manifest says besides the files earlier commits added.
/// With the Delta log it gives back the [`Manifest`] of every committed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilnCommit {
    pub format_version: u32,
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    pub build_dir: String,
    pub schema_fp: String,
    pub ordering_tier: u8,
    pub sort_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub write_options: BTreeMap<String, String>,
    /// Totals over all the version's files.
    pub totals: ManifestTotals,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<BuildFingerprints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentVersions>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, SourcePosition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamCheckpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<crate::intervals::IntervalState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::merge::MergeState>,
    /// Materialized views: [`Manifest::side`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub side: BTreeMap<String, KilnCommit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<String>,
    /// The files this commit added, with Kiln's details of each.
    pub added: Vec<FileEntry>,
    /// Whether `added` is every file of the version (the commit replaced all others), so
    /// the version's files are known without reading the rest of the log.
    pub complete: bool,
    /// Where the table's log set the protocol and metadata in force at this commit's
    /// version (this version itself when the commit sets them). Absent in records made
    /// before it was kept and in RESTORE commits, whose actions delta-rs decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogPointers>,
}

impl KilnCommit {
    /// The record of `manifest` committed over a table whose files were `before` (paths):
    /// the files it adds, and whether they are all of its files.
    pub fn of(manifest: &Manifest, before: &std::collections::BTreeSet<&str>) -> Self {
        let added: Vec<FileEntry> =
            manifest.files.iter().filter(|f| !before.contains(f.path.as_str())).cloned().collect();
        let complete = added.len() == manifest.files.len();
        Self {
            format_version: KILN_COMMIT_VERSION,
            product: manifest.product.clone(),
            build_id: manifest.build_id.clone(),
            run_id: manifest.run_id.clone(),
            build_dir: manifest.build_dir.clone(),
            schema_fp: manifest.schema_fp.clone(),
            ordering_tier: manifest.ordering_tier,
            sort_keys: manifest.sort_keys.clone(),
            partition_by: manifest.partition_by.clone(),
            write_options: manifest.write_options.clone(),
            totals: manifest.totals.clone(),
            fingerprints: manifest.fingerprints.clone(),
            content: manifest.content.clone(),
            positions: manifest.positions.clone(),
            stream: manifest.stream.clone(),
            intervals: manifest.intervals.clone(),
            merge: manifest.merge.clone(),
            side: manifest.side.clone(),
            sidecars: manifest.sidecars.clone(),
            added,
            complete,
            log: None,
        }
    }

    /// The manifest of version `version`, whose files are `files` (this record's `added`
    /// when it is complete; else the version's files from the log).
    pub fn manifest(&self, version: u64, files: Vec<FileEntry>) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            product: self.product.clone(),
            build_id: self.build_id.clone(),
            run_id: self.run_id.clone(),
            build_dir: self.build_dir.clone(),
            schema_fp: self.schema_fp.clone(),
            ordering_tier: self.ordering_tier,
            sort_keys: self.sort_keys.clone(),
            partition_by: self.partition_by.clone(),
            write_options: self.write_options.clone(),
            files,
            totals: self.totals.clone(),
            fingerprints: self.fingerprints.clone(),
            content: self.content.clone(),
            positions: self.positions.clone(),
            stream: self.stream.clone(),
            intervals: self.intervals.clone(),
            merge: self.merge.clone(),
            side: self.side.clone(),
            sidecars: self.sidecars.clone(),
            version: Some(version),
            table_log: None,
        }
    }

    /// The (uncommitted) manifest this record makes when committed over `base`, for a
    /// commit that only adds files or replaces them all (a side dataset's): its files are
    /// `added` when complete, else `base`'s and then `added`.
    pub fn over(&self, base: Option<&Manifest>) -> Manifest {
        let mut files = match base {
            Some(b) if !self.complete => b.files.clone(),
            _ => Vec::new(),
        };
        files.extend(self.added.iter().cloned());
        Manifest { version: None, ..self.manifest(0, files) }
    }

    pub fn to_json(&self) -> Result<serde_json::Value, ArtifactError> {
        serde_json::to_value(self).map_err(|source| ArtifactError::Encode { what: "kiln commit record", source })
    }

    pub fn from_json(value: serde_json::Value, path: &str) -> Result<Self, ArtifactError> {
        serde_json::from_value(value).map_err(|source| ArtifactError::Decode {
            what: "kiln commit record",
            path: path.to_owned(),
            source,
        })
    }
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
    /// Per top-level column, from the footer's statistics (absent in older manifests, and
    /// for files Kiln knows from the Delta log alone).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, ColumnStats>,
    /// The file's statistics in the Delta protocol's JSON form (`numRecords`,
    /// `minValues`, `maxValues`, `nullCount`), carried to its `add` action: they live in
    /// the Delta log, not in Kiln's records.
    #[serde(skip)]
    pub delta_stats: Option<String>,
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

/// `<product>/_current.json` of the pre-Delta layout: which build of a product was
/// visible. Read only to convert such a warehouse into Delta tables.
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
