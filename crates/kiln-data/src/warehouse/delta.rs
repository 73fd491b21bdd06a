//! Datasets as Delta Lake tables, read and committed through delta-rs.
//!
//! `<warehouse>/<dataset>/` is a Delta table: `_delta_log/` holds its commits and
//! `builds/<run_id>/[col=value/]part-*.parquet` its data files. One Delta commit (the
//! put-if-absent of the next `_delta_log/<version>.json`) is the one moment a build becomes
//! visible, to Kiln and to every other Delta reader alike: before it the build's files
//! are in no version; after it they are the latest version.
//!
//! Kiln's record of the build ([`KilnCommit`]: build id, fingerprints, totals, positions,
//! checkpoint, and the files it adds with Kiln's details of each) travels in the same
//! commit, as the `kiln` key of its `commitInfo`, so there is no state in which Kiln and a
//! Delta reader disagree about what is current. Reading the current build takes one LIST
//! of `_delta_log/` and one GET of the latest commit when that commit replaced every file
//! (`complete`), which full builds do; for appends (ingest, streams) the file list comes
//! from delta-rs's snapshot of the version.
//!
//! Every commit is made on top of the version the run read (`Manifest::version` of its
//! base) with no retries: when another writer committed in between, the commit is refused
//! with [`DataError::ConcurrentCommit`] and nothing of the run is visible.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitData, CommitProperties, TransactionError};
use deltalake_core::kernel::{
    Action, Add, Metadata, MetadataExt, Protocol, Remove, StructType, Transaction, new_metadata,
};
use deltalake_core::logstore::{CommitOrBytes, LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::protocol::{DeltaOperation, OutputMode, SaveMode};
use deltalake_core::table::state::DeltaTableState;
use deltalake_core::{DeltaTable, DeltaTableError};
use kiln_artifact::{FileEntry, KilnCommit, LogPointers, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals, TableLog};
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use serde::Deserialize;

use super::Warehouse;
use super::protocol::{append_only, protocol_for, writable};
use crate::{DataError, Result};

/// The `commitInfo` key of Kiln's record.
const RECORD_KEY: &str = "kiln";

/// One version of a dataset's table, as its commit says.
#[derive(Debug, Clone)]
pub struct TableVersion {
    pub version: u64,
    /// The Delta operation (`WRITE`, `RESTORE`, `VACUUM END`, ...), when recorded.
    pub operation: Option<String>,
    /// Kiln's record, when Kiln made the commit.
    pub record: Option<KilnCommit>,
    /// Whether the commit changed the table's rows or schema (adds or removes files with
    /// `dataChange`, or sets new metadata).
    pub changes_data: bool,
    /// Whether the commit sets the table's protocol (read only for commits Kiln did not
    /// make: Kiln's record says where the protocol was set).
    pub sets_protocol: bool,
}

/// One line of a commit file, as far as Kiln reads it (other keys are skipped).
#[derive(Deserialize)]
struct LogLine {
    #[serde(rename = "commitInfo")]
    commit_info: Option<serde_json::Map<String, serde_json::Value>>,
    add: Option<FileChange>,
    remove: Option<FileChange>,
    #[serde(rename = "metaData")]
    metadata: Option<serde::de::IgnoredAny>,
    protocol: Option<serde::de::IgnoredAny>,
}

/// A commit line's protocol and metadata actions, parsed (other keys are skipped).
#[derive(Deserialize)]
struct MetaLine {
    protocol: Option<Protocol>,
    #[serde(rename = "metaData")]
    metadata: Option<Metadata>,
}

/// A table's protocol and metadata as of one version, and the commits that set them.
struct TableMeta {
    protocol: Protocol,
    metadata: Metadata,
    /// `None`: not known (read from a snapshot of the log); the next commit states both
    /// again, so that the commit after it knows them.
    pointers: Option<LogPointers>,
}

#[derive(Deserialize)]
struct FileChange {
    #[serde(rename = "dataChange", default)]
    data_change: bool,
}

impl Warehouse {
    /// The delta-rs log store of the table at warehouse-relative `root`.
    fn log_store(&self, root: &str) -> Result<LogStoreRef> {
        let url = self.table_url(root)?;
        let prefixed: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(Arc::clone(&self.store), self.path(root)));
        Ok(default_logstore(prefixed, Arc::clone(&self.store), &url, &StorageConfig::default()))
    }

    /// The versions whose commit files are in the log of the table at `root`, ascending
    /// (empty: no table).
    pub(super) async fn log_versions(&self, root: &str) -> Result<Vec<u64>> {
        let dir = self.path(&format!("{root}/_delta_log"));
        let listed =
            self.store.list_with_delimiter(Some(&dir)).await.map_err(DataError::store(format!("cannot list {dir}")))?;
        let mut versions: Vec<u64> =
            listed.objects.iter().filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok()).collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// The latest version of the table at `root` (`None`: no table). The LIST starts
    /// after its last checkpoint (`_last_checkpoint`), so on a local disk, where a LIST
    /// stats every file it returns, the cost stays within one checkpoint interval of
    /// commits instead of growing with every commit the log retention keeps.
    pub(super) async fn latest_version(&self, root: &str) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct LastCheckpoint {
            version: u64,
        }
        let hint = format!("{root}/_delta_log/_last_checkpoint");
        if let Some(bytes) = super::get_optional(&self.store, &self.path(&hint)).await?
            && let Ok(LastCheckpoint { version: at }) = serde_json::from_slice(&bytes)
        {
            use futures::TryStreamExt;
            let dir = self.path(&format!("{root}/_delta_log"));
            let offset = self.path(&format!("{root}/_delta_log/{at:020}.json"));
            let listed: Vec<object_store::ObjectMeta> = self
                .store
                .list_with_offset(Some(&dir), &offset)
                .try_collect()
                .await
                .map_err(DataError::store(format!("cannot list {dir}")))?;
            let after = listed.iter().filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok()).max();
            if let Some(latest) = after {
                return Ok(Some(latest));
            }
        }
        // No checkpoint, or none committed after it: the whole log.
        Ok(self.log_versions(root).await?.last().copied())
    }

    /// What commit `version` of the table at `root` did (`None`: its commit file is gone).
    async fn read_commit(&self, root: &str, version: u64) -> Result<Option<TableVersion>> {
        let rel = format!("{root}/_delta_log/{version:020}.json");
        let Some(bytes) = super::get_optional(&self.store, &self.path(&rel)).await? else { return Ok(None) };
        let text = String::from_utf8_lossy(&bytes);
        let mut out =
            TableVersion { version, operation: None, record: None, changes_data: false, sets_protocol: false };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line: LogLine = serde_json::from_str(line)
                .map_err(|e| DataError::Config(format!("{rel}: not a Delta commit line: {e}")))?;
            if let Some(info) = line.commit_info {
                out.operation = info.get("operation").and_then(|v| v.as_str()).map(str::to_owned);
                if let Some(record) = info.get(RECORD_KEY) {
                    out.record = Some(KilnCommit::from_json(record.clone(), &rel)?);
                    // Kiln's record says all the commit did (commitInfo is its first line).
                    out.changes_data = true;
                    return Ok(Some(out));
                }
            }
            let changed = |c: &Option<FileChange>| c.as_ref().is_some_and(|c| c.data_change);
            out.changes_data |= changed(&line.add) || changed(&line.remove) || line.metadata.is_some();
            out.sets_protocol |= line.protocol.is_some();
        }
        Ok(Some(out))
    }

    /// Every version of this environment's table of `name` whose commit file is kept,
    /// oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<TableVersion>> {
        self.history_at(&self.scoped(name)).await
    }

    /// Every version of the table at `root` whose commit file is kept, oldest first.
    pub(super) async fn history_at(&self, root: &str) -> Result<Vec<TableVersion>> {
        let mut out = Vec::new();
        for version in self.log_versions(root).await? {
            if let Some(v) = self.read_commit(root, version).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// The committed manifest of dataset `name` in this environment (`None`: no build):
    /// an unfinished promote's, else its table's latest version, else its binding
    /// (warehouse::env).
    pub async fn current(&self, name: &str) -> Result<Option<Manifest>> {
        if let Some(m) = self.scope.pending.get(name) {
            return Ok(Some(m.clone()));
        }
        let own = self.own_current(name).await?;
        self.current_over(name, own).await
    }

    /// [`Warehouse::current`] given `own`, the latest version of this environment's own
    /// table of `name` (read already by the caller).
    pub(super) async fn current_over(&self, name: &str, own: Option<Manifest>) -> Result<Option<Manifest>> {
        if let Some(m) = self.scope.pending.get(name) {
            return Ok(Some(m.clone()));
        }
        if own.is_some() {
            return Ok(own);
        }
        match self.scope.bindings.get(name) {
            Some(b) => self.manifest_of(name, &b.table, b.version).await.map(Some),
            None => Ok(None),
        }
    }

    /// The latest version of this environment's own table of `name`.
    pub(super) async fn own_current(&self, name: &str) -> Result<Option<Manifest>> {
        let root = self.scoped(name);
        let Some(latest) = self.latest_version(&root).await? else {
            if self.scope.prefix.is_empty() {
                super::legacy::refuse_old_layout(self, name).await?;
            }
            return Ok(None);
        };
        self.manifest_at(name, &root, latest).await.map(Some)
    }

    /// The manifest of version `version` of the table at `root` (dataset `name`).
    pub(super) async fn manifest_of(&self, name: &str, root: &str, version: u64) -> Result<Manifest> {
        self.manifest_at(name, root, version).await
    }

    /// The manifest of version `version` of the table at `root`.
    async fn manifest_at(&self, name: &str, root: &str, version: u64) -> Result<Manifest> {
        // The commit whose Kiln record describes this version's data: this one, or the
        // last before it when only commits that change no data (VACUUM, properties)
        // followed.
        let mut at = version;
        // The latest of those later commits that set the protocol, if any.
        let mut protocol_at = None;
        let record = loop {
            match self.read_commit(root, at).await? {
                Some(TableVersion { record: Some(record), .. }) => break Some(record),
                // (A missing earlier commit file reads as `None`: no record.)
                Some(v) if !v.changes_data && at > 0 => {
                    protocol_at = protocol_at.or(v.sets_protocol.then_some(at));
                    at -= 1;
                }
                _ => break None,
            }
        };
        let table_log = |r: &KilnCommit| {
            r.log.map(|p| TableLog {
                table: root.to_owned(),
                version,
                pointers: LogPointers { protocol: protocol_at.unwrap_or(p.protocol), ..p },
            })
        };
        match record {
            Some(r) if r.complete => Ok(Manifest { table_log: table_log(&r), ..r.manifest(version, r.added.clone()) }),
            Some(r) => {
                let state = self.snapshot(root, version).await?;
                let files = snapshot_files(&state, root, &r.partition_by, &r.added);
                Ok(Manifest { table_log: table_log(&r), ..r.manifest(version, files) })
            }
            // Another writer changed the data: the version stands as it is (Kiln's readers
            // read exactly its files); without fingerprints, the next build replaces it.
            None => {
                let state = self.snapshot(root, version).await?;
                let partition_by = state.metadata().partition_columns().to_vec();
                let files = snapshot_files(&state, root, &partition_by, &[]);
                Ok(foreign_manifest(name, version, partition_by, files))
            }
        }
    }

    /// The committed manifest of version `version` of this environment's table of `name`.
    pub async fn version(&self, name: &str, version: u64) -> Result<Manifest> {
        self.manifest_of(name, &self.scoped(name), version).await
    }

    /// The Delta schema (JSON) of the table `build` was committed to, at its version.
    pub(super) async fn build_schema_json(&self, build: &Manifest) -> Result<String> {
        let root = table_root_of(build)?;
        let version = build.version.ok_or_else(|| {
            DataError::Internal(format!("dataset `{}`: build {} has no table version", build.product, build.build_id))
        })?;
        let meta = self.table_meta(&root, version, build.table_log.as_ref()).await?;
        let schema = meta.metadata.parse_schema().map_err(|e| DataError::Delta {
            context: format!("table `{root}`: the schema of version {version}"),
            source: Box::new(e.into()),
        })?;
        serde_json::to_string(&schema)
            .map_err(|e| DataError::Internal(format!("dataset `{}`: Delta schema: {e}", build.product)))
    }

    /// The schema of the table `build` was committed to, at its version, as stored
    /// (kiln_contracts::storage: the types Delta holds).
    pub async fn stored_schema(&self, build: &Manifest) -> Result<Schema> {
        use deltalake_core::kernel::engine::arrow_conversion::TryIntoArrow;
        let json = self.build_schema_json(build).await?;
        let bad = |e: String| DataError::Internal(format!("dataset `{}`: Delta schema: {e}", build.product));
        let table_schema: StructType = serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
        (&table_schema).try_into_arrow().map_err(|e| bad(e.to_string()))
    }

    /// Commits `manifest` over `base` with the table schema `schema` (Delta JSON, as
    /// [`Warehouse::build_schema_json`] gives it; `None`: the table's own, unchanged).
    pub(super) async fn commit_with_delta_schema(
        &self,
        manifest: &Manifest,
        base: Option<&Manifest>,
        schema: Option<&str>,
    ) -> Result<Manifest> {
        use deltalake_core::kernel::engine::arrow_conversion::TryIntoArrow;
        let name = manifest.product.as_str();
        let bad = |e: String| DataError::Internal(format!("dataset `{name}`: Delta schema: {e}"));
        let Some(schema) = schema else { return Box::pin(self.commit_stored(manifest, base, None)).await };
        let table_schema: StructType = serde_json::from_str(schema).map_err(|e| bad(e.to_string()))?;
        let stored: Schema = (&table_schema).try_into_arrow().map_err(|e| bad(e.to_string()))?;
        Box::pin(self.commit_stored(manifest, base, Some((&stored, table_schema)))).await
    }

    /// The protocol and metadata of the table at `root` at `version`: from the commits
    /// `known` points to when it describes that version (one or two small GETs), else
    /// from delta-rs's lazy snapshot (a replay of the log since its last checkpoint).
    async fn table_meta(&self, root: &str, version: u64, known: Option<&TableLog>) -> Result<TableMeta> {
        if let Some(t) = known.filter(|t| t.table == root && t.version == version) {
            let LogPointers { protocol: p, metadata: m } = t.pointers;
            let (protocol, metadata) = self.meta_lines(root, p).await?;
            let metadata = if m == p { metadata } else { self.meta_lines(root, m).await?.1 };
            // A pointer to a commit that cleanup removed (or that holds no such action)
            // is no pointer: the snapshot says.
            if let (Some(protocol), Some(metadata)) = (protocol, metadata) {
                return Ok(TableMeta { protocol, metadata, pointers: Some(t.pointers) });
            }
        }
        let log_store = self.log_store(root)?;
        let snapshot =
            off_worker(
                async move { deltalake_core::kernel::Snapshot::try_new(log_store.as_ref(), Some(version)).await },
            )
            .await?
            .map_err(DataError::delta(format!("table `{root}`: cannot read version {version}")))?;
        Ok(TableMeta { protocol: snapshot.protocol().clone(), metadata: snapshot.metadata().clone(), pointers: None })
    }

    /// The protocol and metadata actions of commit `version` of the table at `root`
    /// (both `None`: its commit file is gone).
    async fn meta_lines(&self, root: &str, version: u64) -> Result<(Option<Protocol>, Option<Metadata>)> {
        let rel = format!("{root}/_delta_log/{version:020}.json");
        let Some(bytes) = super::get_optional(&self.store, &self.path(&rel)).await? else { return Ok((None, None)) };
        let (mut protocol, mut metadata) = (None, None);
        for line in bytes.split(|b| *b == b'\n').filter(|l| l.iter().any(|b| !b.is_ascii_whitespace())) {
            let line: MetaLine = serde_json::from_slice(line)
                .map_err(|e| DataError::Config(format!("{rel}: not a Delta commit line: {e}")))?;
            protocol = line.protocol.or(protocol);
            metadata = line.metadata.or(metadata);
        }
        Ok((protocol, metadata))
    }

    async fn snapshot(&self, root: &str, version: u64) -> Result<DeltaTableState> {
        let log_store = self.log_store(root)?;
        off_worker(async move { DeltaTableState::try_new(log_store.as_ref(), Some(version)).await })
            .await?
            .map_err(DataError::delta(format!("table `{root}`: cannot read version {version}")))
    }

    /// Commits `manifest` (a build of a dataset of logical schema `schema`) as the next
    /// version of its table, on top of `base` (the committed manifest the build read, with
    /// its version; `None`: the table does not exist yet). Files of `base` that `manifest`
    /// does not list are removed, its new files added. Returns the manifest with its
    /// version.
    pub async fn commit(&self, manifest: &Manifest, base: Option<&Manifest>, schema: &Schema) -> Result<Manifest> {
        let name = manifest.product.as_str();
        let stored = kiln_contracts::storage_schema(schema)
            .map_err(|source| DataError::Storage { product: name.to_owned(), source })?;
        let table_schema: StructType = (&stored)
            .try_into_kernel()
            .map_err(|e| DataError::Internal(format!("dataset `{name}`: Delta schema of {stored:?}: {e}")))?;
        // Boxed, as every entry to `commit_stored`: its future (the log reads, the
        // commit, a checkpoint) is large in debug builds, and kept inline it overflowed
        // the 2 MiB stack of a test thread polling a whole build.
        Box::pin(self.commit_stored(manifest, base, Some((&stored, table_schema)))).await
    }

    /// [`Warehouse::commit`] with the stored schema and its Delta form (`None`: the
    /// table exists and keeps its schema).
    async fn commit_stored(
        &self,
        manifest: &Manifest,
        base: Option<&Manifest>,
        schema: Option<(&Schema, StructType)>,
    ) -> Result<Manifest> {
        let name = manifest.product.as_str();
        let root = self.scoped(name);
        // A base from another table (this environment's binding, before it had a table of
        // its own): this commit creates the table, with the files it keeps of that build
        // linked into it (warehouse::env).
        let imported;
        let (manifest, base) = match base {
            Some(b) if !self.owns(&root, b) => {
                imported = self.import(manifest).await?;
                (&imported, None)
            }
            other => (manifest, other),
        };
        let read = match base {
            Some(b) => Some(b.version.ok_or_else(|| {
                DataError::Internal(format!("dataset `{name}`: commit over a manifest with no table version"))
            })?),
            None => None,
        };
        let meta = match (read, base) {
            (Some(v), Some(b)) => Some(self.table_meta(&root, v, b.table_log.as_ref()).await?),
            _ => None,
        };
        if let Some(m) = &meta {
            writable(name, &m.protocol, &m.metadata)?;
        }

        let before: BTreeSet<&str> = base.iter().flat_map(|b| &b.files).map(|f| f.path.as_str()).collect();
        let after: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let mut record = KilnCommit::of(manifest, &before);
        let now = now_ms();
        let delta =
            |e: deltalake_core::kernel::Error| DataError::Internal(format!("dataset `{name}`: Delta metadata: {e}"));

        let (protocol, metadata) = match (&meta, schema) {
            (Some(_), None) => (None, None),
            (None, None) => {
                return Err(DataError::Internal(format!("dataset `{name}`: a new table needs a schema")));
            }
            (None, Some((stored, table_schema))) => {
                let metadata =
                    new_metadata(&table_schema, &manifest.partition_by, std::iter::empty::<(String, String)>())
                        .and_then(|m| m.with_name(name.to_owned()))
                        .map_err(delta)?;
                (protocol_for(stored, None)?, Some(metadata))
            }
            (Some(m), Some((stored, table_schema))) => {
                let current = m
                    .metadata
                    .parse_schema()
                    .map_err(|e| DataError::Internal(format!("dataset `{name}`: the table's Delta schema: {e}")))?;
                let same =
                    current == table_schema && m.metadata.partition_columns() == manifest.partition_by.as_slice();
                if same {
                    (None, None)
                } else {
                    let metadata =
                        new_metadata(&table_schema, &manifest.partition_by, m.metadata.configuration().clone())
                            .and_then(|n| n.with_table_id(m.metadata.id().to_owned()))
                            .and_then(|n| n.with_name(name.to_owned()))
                            .map_err(delta)?;
                    (protocol_for(stored, Some(&m.protocol))?, Some(metadata))
                }
            }
        };
        let mut actions = Vec::new();
        let version = read.map_or(0, |v| v + 1);
        record.log = Some(log_actions(&mut actions, meta.as_ref(), protocol.clone(), metadata.clone(), version)?);
        let mut removed = 0;
        for file in base.iter().flat_map(|b| &b.files).filter(|f| !after.contains(f.path.as_str())) {
            actions.push(Action::Remove(remove_action(file, &root, &base_partitions(base), now)?));
            removed += 1;
        }
        for file in &record.added {
            actions.push(Action::Add(add_action(file, &root, &manifest.partition_by, now, true)?));
        }

        let operation = match (&meta, protocol, metadata) {
            (None, Some(protocol), Some(metadata)) => DeltaOperation::Create {
                mode: SaveMode::ErrorIfExists,
                location: self.table_url(&root)?,
                protocol,
                metadata,
            },
            _ if !manifest.positions.is_empty() => DeltaOperation::StreamingUpdate {
                output_mode: if removed == 0 { OutputMode::Append } else { OutputMode::Complete },
                query_id: name.to_owned(),
                epoch_id: manifest.positions.values().map(|p| p.batches as i64).max().unwrap_or(0),
            },
            _ => DeltaOperation::Write {
                mode: if removed == 0 { SaveMode::Append } else { SaveMode::Overwrite },
                partition_by: (!manifest.partition_by.is_empty()).then(|| manifest.partition_by.clone()),
                predicate: None,
            },
        };
        // Micro-batch progress as Delta application transactions too, the protocol's own
        // record of a streaming writer's position (Kiln's is in its record).
        let transactions = manifest
            .positions
            .iter()
            .map(|(feed, position)| Transaction::new(format!("kiln:{name}:{feed}"), position.batches as i64))
            .collect();
        let pointers = record.log;
        let commit = CommitData::new(actions, operation, record_metadata(&record)?, transactions);
        self.commit_actions(&root, read, meta.as_ref(), commit).await?;
        Ok(committed(manifest, &root, version, pointers))
    }

    /// Writes `commit` as version `read + 1` (0: `None`) of the table at `root`, whose
    /// protocol and metadata at `read` are `meta`: a put-if-absent of the commit file,
    /// without retries.
    ///
    /// Kiln writes the commit itself rather than through delta-rs's `CommitBuilder`: that
    /// takes the table's eager snapshot (every file action since the last checkpoint,
    /// replayed), which made each commit cost O(versions) and a promote of 1,000
    /// products several seconds. What the builder checks is checked here: the protocol
    /// Kiln can write ([`writable`], stricter than delta-rs's) and append-only tables;
    /// a lost race is the put-if-absent failing.
    async fn commit_actions(
        &self,
        root: &str,
        read: Option<u64>,
        meta: Option<&TableMeta>,
        commit: CommitData,
    ) -> Result<u64> {
        let name = super::env::unscoped(root);
        if let Some(m) = meta
            && append_only(&m.protocol, &m.metadata)
            && commit.actions.iter().any(|a| matches!(a, Action::Remove(r) if r.data_change))
        {
            return Err(DataError::TableRefused {
                product: name.to_owned(),
                reason: "the table is append-only (`delta.appendOnly`) and this build replaces or removes rows".into(),
            });
        }
        let bytes = commit.get_bytes().map_err(|e| commit_error(name, read, e.into()))?;
        let version = read.map_or(0, |v| v + 1);
        let log_store = self.log_store(root)?;
        crate::failpoint("before_commit");
        log_store
            .write_commit_entry(version, CommitOrBytes::LogBytes(bytes), uuid::Uuid::new_v4())
            .await
            .map_err(|e| commit_error(name, read, e.into()))?;
        crate::failpoint("after_commit");
        // The commit is durable; what follows only speeds up later reads: a checkpoint
        // every `delta.checkpointInterval` versions and, with it, expired log cleanup
        // (which can only remove logs a checkpoint covers). Its failure does not fail
        // the build.
        let config = |key: &str| meta.and_then(|m| m.metadata.configuration().get(key));
        let interval = config("delta.checkpointInterval").and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
        if (version + 1).is_multiple_of(interval.unwrap_or(100)) {
            let cleanup = config("delta.enableExpiredLogCleanup").is_none_or(|v| v != "false");
            if let Err(e) = self.checkpoint(root, version, cleanup).await {
                tracing::warn!(dataset = name, version, error = %e, "post-commit checkpoint failed");
            }
        }
        Ok(version)
    }

    /// Writes a checkpoint of version `version` of the table at `root` and, when
    /// `cleanup`, removes the log files it covers that are older than the table's log
    /// retention (delta-rs's post-commit hook, made at the versions that need it).
    async fn checkpoint(&self, root: &str, version: u64, cleanup: bool) -> Result<()> {
        let log_store = self.log_store(root)?;
        let fail = DataError::delta(format!("table `{root}`: checkpoint of version {version}"));
        off_worker(async move {
            let mut table = DeltaTable::new(log_store);
            table.load_version(version).await?;
            deltalake_core::checkpoints::create_checkpoint(&table, None).await?;
            if cleanup {
                deltalake_core::checkpoints::cleanup_metadata(&table, None).await?;
            }
            Ok::<(), DeltaTableError>(())
        })
        .await?
        .map_err(fail)
    }

    /// Rewrites the files of `current` into `compacted` (the same rows in fewer files) as
    /// one commit that changes no data (`OPTIMIZE`): readers see the same rows throughout.
    pub async fn commit_compaction(
        &self,
        current: &Manifest,
        compacted: &Manifest,
        target_size: u64,
    ) -> Result<Manifest> {
        let name = current.product.as_str();
        let root = self.scoped(name);
        let read = current.version.ok_or_else(|| DataError::Internal(format!("dataset `{name}`: no table version")))?;
        let meta = self.table_meta(&root, read, current.table_log.as_ref()).await?;
        writable(name, &meta.protocol, &meta.metadata)?;
        let before: BTreeSet<&str> = current.files.iter().map(|f| f.path.as_str()).collect();
        let after: BTreeSet<&str> = compacted.files.iter().map(|f| f.path.as_str()).collect();
        let mut record = KilnCommit::of(compacted, &before);
        let now = now_ms();
        let mut actions = Vec::new();
        let version = read + 1;
        record.log = Some(log_actions(&mut actions, Some(&meta), None, None, version)?);
        for file in current.files.iter().filter(|f| !after.contains(f.path.as_str())) {
            let mut remove = remove_action(file, &root, &current.partition_by, now)?;
            remove.data_change = false;
            actions.push(Action::Remove(remove));
        }
        for file in &record.added {
            actions.push(Action::Add(add_action(file, &root, &compacted.partition_by, now, false)?));
        }
        let operation = DeltaOperation::Optimize { predicate: None, target_size: target_size as i64 };
        let pointers = record.log;
        let commit = CommitData::new(actions, operation, record_metadata(&record)?, Vec::new());
        Box::pin(self.commit_actions(&root, Some(read), Some(&meta), commit)).await?;
        Ok(committed(compacted, &root, version, pointers))
    }

    /// Makes `target` (an earlier version's manifest) the table's content again, as a new
    /// version on top of `current` (delta-rs's RESTORE: time travel to every version stays
    /// possible). Fails when `kiln gc` deleted files `target` needs.
    pub async fn restore(&self, current: &Manifest, target: &Manifest) -> Result<Manifest> {
        let name = current.product.as_str();
        let (Some(from), Some(to)) = (current.version, target.version) else {
            return Err(DataError::Internal(format!("dataset `{name}`: restore between unversioned manifests")));
        };
        let mut table = DeltaTable::new(self.log_store(&self.scoped(name))?);
        table.load_version(from).await.map_err(DataError::delta(format!("dataset `{name}`: version {from}")))?;
        let before: BTreeSet<&str> = current.files.iter().map(|f| f.path.as_str()).collect();
        let record = KilnCommit::of(target, &before);
        let properties =
            CommitProperties::default().with_metadata([(RECORD_KEY.to_owned(), record.to_json()?)]).with_max_retries(0);
        crate::failpoint("before_commit");
        let (table, _) = table
            .restore()
            .with_version_to_restore(to)
            .with_commit_properties(properties)
            .await
            .map_err(|e| match e {
                DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_) => {
                    commit_error(name, Some(from), e)
                }
                other => DataError::Delta {
                    context: format!(
                        "dataset `{name}`: cannot restore version {to} (`kiln gc` may have deleted its files; `[storage] retain_versions` keeps more)"
                    ),
                    source: Box::new(other),
                },
            })?;
        crate::failpoint("after_commit");
        let version = table.version().ok_or_else(|| DataError::Internal(format!("dataset `{name}`: no version")))?;
        // delta-rs decided the protocol and metadata actions of the RESTORE: the next
        // commit reads them from a snapshot.
        Ok(committed(target, &self.scoped(name), version, None))
    }

    /// Deletes the data files of `name` that its latest version and the versions `keep`
    /// no longer reference (delta-rs's VACUUM, lite: files of `remove` actions). Returns
    /// their warehouse-relative paths.
    pub async fn vacuum(&self, name: &str, keep: &[u64]) -> Result<Vec<String>> {
        let root = self.scoped(name);
        let mut table = DeltaTable::new(self.log_store(&root)?);
        table.load().await.map_err(DataError::delta(format!("dataset `{name}`: cannot read its table")))?;
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .with_keep_versions(keep)
            .with_mode(VacuumMode::Lite)
            .await
            .map_err(DataError::delta(format!("dataset `{name}`: vacuum")))?;
        Ok(metrics.files_deleted.iter().map(|p| file_path(&root, p)).collect())
    }
}

/// `manifest` as committed at `version` of the table at `root`, whose log set the protocol
/// and metadata at `pointers` (its files' Delta statistics now live in the log).
fn committed(manifest: &Manifest, root: &str, version: u64, pointers: Option<LogPointers>) -> Manifest {
    let table_log = pointers.map(|pointers| TableLog { table: root.to_owned(), version, pointers });
    let mut out = Manifest { version: Some(version), table_log, ..manifest.clone() };
    for file in &mut out.files {
        file.delta_stats = None;
    }
    out
}

/// A refused commit: the next version was taken by another writer (or the table created
/// by one), or some other failure.
fn commit_error(name: &str, read: Option<u64>, e: DeltaTableError) -> DataError {
    let lost = matches!(
        &e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    );
    if lost {
        return DataError::ConcurrentCommit {
            product: name.to_owned(),
            read: read.map_or_else(|| "none: the table did not exist".to_owned(), |v| v.to_string()),
            version: read.map_or(0, |v| v + 1),
        };
    }
    DataError::Delta { context: format!("dataset `{name}`: commit"), source: Box::new(e) }
}

/// The `commitInfo` entries of a commit carrying Kiln's `record`.
fn record_metadata(record: &KilnCommit) -> Result<HashMap<String, serde_json::Value>> {
    Ok(HashMap::from([(RECORD_KEY.to_owned(), record.to_json()?)]))
}

/// Pushes the protocol and metadata actions of a commit at `version` over a table whose
/// protocol and metadata are `meta` (`None`: a new table): `protocol` and `metadata`
/// when the commit changes them, and both as they are when where the log set them is not
/// known, so that it is known after this commit. Returns where the log sets them as of
/// `version`.
fn log_actions(
    actions: &mut Vec<Action>,
    meta: Option<&TableMeta>,
    protocol: Option<Protocol>,
    metadata: Option<Metadata>,
    version: u64,
) -> Result<LogPointers> {
    let known = meta.and_then(|m| m.pointers);
    let restate = meta.filter(|m| m.pointers.is_none());
    let protocol = protocol.or_else(|| restate.map(|m| m.protocol.clone()));
    let metadata = metadata.or_else(|| restate.map(|m| m.metadata.clone()));
    let at = |set: bool, was: Option<u64>| {
        if set {
            Ok(version)
        } else {
            was.ok_or_else(|| {
                DataError::Internal(format!("version {version}: a new table without protocol or metadata"))
            })
        }
    };
    let pointers = LogPointers {
        protocol: at(protocol.is_some(), known.map(|k| k.protocol))?,
        metadata: at(metadata.is_some(), known.map(|k| k.metadata))?,
    };
    actions.extend(protocol.map(Action::Protocol));
    actions.extend(metadata.map(Action::Metadata));
    Ok(pointers)
}

/// The table root a committed build's records live in: its build directory's
/// `<root>/builds/<run>`.
fn table_root_of(build: &Manifest) -> Result<String> {
    build.build_dir.rsplit_once("/builds/").map(|(root, _)| root.to_owned()).ok_or_else(|| {
        DataError::Internal(format!("dataset `{}`: build {} has no build directory", build.product, build.build_id))
    })
}

impl Warehouse {
    /// Whether `base` is a version of the table at `root` (not a binding to another's).
    fn owns(&self, root: &str, base: &Manifest) -> bool {
        if base.build_dir.is_empty() {
            // Versions another writer made carry no build directory; they are this table's
            // unless this environment has no table yet (then they are a binding's).
            return self.scope.prefix.is_empty() || base.files.iter().all(|f| f.path.starts_with(&format!("{root}/")));
        }
        base.build_dir.starts_with(&format!("{root}/"))
    }
}

fn base_partitions(base: Option<&Manifest>) -> Vec<String> {
    base.map(|b| b.partition_by.clone()).unwrap_or_default()
}

/// The path of a warehouse-relative file of the table at `root` as its `add` action names
/// it (relative to the table root; its object key, which delta-rs escapes for the log).
fn table_path(file: &FileEntry, root: &str) -> Result<String> {
    file.path
        .strip_prefix(root)
        .and_then(|p| p.strip_prefix('/'))
        .map(str::to_owned)
        .ok_or_else(|| DataError::Internal(format!("file {} is not inside table `{root}`", file.path)))
}

/// The warehouse-relative path of a file of the table at `root` from its `add` path
/// (decoded).
fn file_path(root: &str, add_path: &str) -> String {
    format!("{root}/{add_path}")
}

fn partition_values(file: &FileEntry, partition_by: &[String]) -> HashMap<String, Option<String>> {
    partition_by.iter().cloned().zip(file.partition.iter().cloned().chain(std::iter::repeat(None))).collect()
}

fn add_action(file: &FileEntry, root: &str, partition_by: &[String], now: i64, data_change: bool) -> Result<Add> {
    // Files Kiln knows without their footer's statistics (converted from the pre-Delta
    // layout) still give readers their row count.
    let stats = file.delta_stats.clone().unwrap_or_else(|| {
        format!("{{\"numRecords\":{},\"minValues\":{{}},\"maxValues\":{{}},\"nullCount\":{{}}}}", file.rows)
    });
    Ok(Add {
        path: table_path(file, root)?,
        partition_values: partition_values(file, partition_by),
        size: file.bytes as i64,
        modification_time: now,
        data_change,
        stats: Some(stats),
        ..Default::default()
    })
}

fn remove_action(file: &FileEntry, root: &str, partition_by: &[String], now: i64) -> Result<Remove> {
    Ok(Remove {
        path: table_path(file, root)?,
        data_change: true,
        deletion_timestamp: Some(now),
        extended_file_metadata: Some(true),
        partition_values: Some(partition_values(file, partition_by)),
        size: Some(file.bytes as i64),
        ..Default::default()
    })
}

/// The files of a snapshot, as manifest entries (those in `known` with Kiln's details),
/// ordered by path (run ids sort by time, so appended builds come in commit order).
fn snapshot_files(state: &DeltaTableState, root: &str, partition_by: &[String], known: &[FileEntry]) -> Vec<FileEntry> {
    let known: HashMap<&str, &FileEntry> = known.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut files: Vec<FileEntry> = state
        .log_data()
        .iter()
        .map(|view| {
            let path = file_path(root, &view.path());
            if let Some(f) = known.get(path.as_str()) {
                return (*f).clone();
            }
            let values = view.partition_values_map();
            FileEntry {
                rows: view.num_records().unwrap_or(0) as u64,
                bytes: view.size().max(0) as u64,
                row_groups: 0,
                partition: partition_by.iter().map(|c| values.get(c).cloned().flatten()).collect(),
                footer_bytes: 0,
                columns: Default::default(),
                delta_stats: None,
                path,
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The manifest of a version another writer made: its files, and no Kiln identity.
fn foreign_manifest(name: &str, version: u64, partition_by: Vec<String>, files: Vec<FileEntry>) -> Manifest {
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        product: name.to_owned(),
        build_id: format!("delta-v{version}"),
        run_id: String::new(),
        build_dir: String::new(),
        schema_fp: String::new(),
        ordering_tier: 1,
        sort_keys: Vec::new(),
        partition_by,
        write_options: Default::default(),
        totals: ManifestTotals {
            files: files.len() as u64,
            rows_written: rows,
            bytes: files.iter().map(|f| f.bytes).sum(),
            rows_read: rows,
            rows_rejected: 0,
        },
        files,
        fingerprints: None,
        content: None,
        positions: Default::default(),
        stream: None,
        intervals: None,
        merge: None,
        side: Default::default(),
        sidecars: Vec::new(),
        version: Some(version),
        table_log: None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Runs a snapshot load of delta-rs on a blocking thread when the runtime has worker
/// threads. The Delta kernel waits for each of its reads with `block_in_place` when called
/// on a runtime worker, which hands the worker's core to another thread per read: most of
/// a 1,000-table promote's time went to that thread churn. From a blocking thread it
/// simply waits. (A current-thread runtime makes delta-rs use its own background thread.)
async fn off_worker<F, T>(load: F) -> Result<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return Ok(load.await);
    }
    tokio::task::spawn_blocking(move || handle.block_on(load))
        .await
        .map_err(|e| DataError::Internal(format!("a Delta snapshot load did not finish: {e}")))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
    use datafusion::common::config::TableParquetOptions;
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use object_store::{ObjectStoreExt, PutPayload};
    use serde_json::json;

    use super::*;
    use crate::layout::{ExistingData, WriteLayout};
    use crate::writer::{BuildIds, WriteSpec, merge_existing, write_dataset};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]))
    }

    /// A build `run` of dataset `p` holding `values`, written (not committed).
    async fn build(wh: &Warehouse, run: &str, values: Vec<i64>) -> Manifest {
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(values))]).unwrap();
        let rows = Box::pin(RecordBatchStreamAdapter::new(schema(), futures::stream::iter([Ok(batch)])));
        let ids = BuildIds { build_id: format!("b-{run}"), run_id: run.into(), batch: None };
        let fp = kiln_contracts::schema_fingerprint(&schema());
        let spec =
            WriteSpec::new("p", ids, (schema(), fp), WriteLayout::derived(1000), &TableParquetOptions::default())
                .unwrap();
        write_dataset(wh, vec![rows], Arc::new(spec), Arc::default()).await.unwrap()
    }

    #[tokio::test]
    async fn commits_are_versions_and_appends_read_back_from_the_log() {
        let wh = Warehouse::memory();
        assert!(wh.current("p").await.unwrap().is_none());
        let v0 = wh.commit(&build(&wh, "r1", vec![1, 2]).await, None, &schema()).await.unwrap();
        assert_eq!(v0.version, Some(0));
        // An append: the record holds only the new file; the version's files come from the log.
        let appended = merge_existing(build(&wh, "r2", vec![3]).await, Some(&v0), ExistingData::Append).unwrap();
        let v1 = wh.commit(&appended, Some(&v0), &schema()).await.unwrap();
        let current = wh.current("p").await.unwrap().unwrap();
        assert_eq!(current.version, Some(1));
        assert_eq!(current.files.iter().map(|f| (&f.path, f.rows)).collect::<Vec<_>>(), {
            v1.files.iter().map(|f| (&f.path, f.rows)).collect::<Vec<_>>()
        });
        assert_eq!(current.totals.rows_written, 3);
        assert_eq!(current.build_id, "b-r2");
        // A replace removes what was there.
        let v2 = wh.commit(&build(&wh, "r3", vec![9]).await, Some(&current), &schema()).await.unwrap();
        assert_eq!(wh.current("p").await.unwrap().unwrap(), v2);
        assert_eq!(wh.version("p", 1).await.unwrap().totals.rows_written, 3, "earlier versions stay readable");
    }

    #[tokio::test]
    async fn a_commit_on_a_superseded_version_is_refused() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
        wh.commit(&build(&wh, "r2", vec![2]).await, Some(&v0), &schema()).await.unwrap();
        let stale = wh.commit(&build(&wh, "r3", vec![3]).await, Some(&v0), &schema()).await.unwrap_err();
        assert!(
            matches!(&stale, DataError::ConcurrentCommit { version: 1, .. }),
            "a second commit on version 0: {stale}"
        );
        let created = wh.commit(&build(&wh, "r4", vec![4]).await, None, &schema()).await.unwrap_err();
        assert!(matches!(created, DataError::ConcurrentCommit { .. }), "{created}");
        assert_eq!(wh.current("p").await.unwrap().unwrap().build_id, "b-r2", "the first commit stands");
    }

    #[tokio::test]
    async fn long_logs_are_checkpointed_and_still_read_exactly() {
        let wh = Warehouse::memory();
        let mut current = wh.commit(&build(&wh, "r000", vec![0]).await, None, &schema()).await.unwrap();
        for i in 1..=105 {
            let run = format!("r{i:03}");
            let next = merge_existing(build(&wh, &run, vec![i]).await, Some(&current), ExistingData::Append).unwrap();
            current = wh.commit(&next, Some(&current), &schema()).await.unwrap();
        }
        let checkpoint = wh.path("p/_delta_log/_last_checkpoint");
        assert!(wh.store().head(&checkpoint).await.is_ok(), "delta-rs checkpoints every 100 versions");
        let read = wh.current("p").await.unwrap().unwrap();
        assert_eq!((read.version, read.files.len(), read.totals.rows_written), (Some(105), 106, 106));
    }

    #[tokio::test]
    async fn versions_of_other_writers_stand_without_kiln_identity() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1, 2]).await, None, &schema()).await.unwrap();
        let log = |v: u64| wh.path(&format!("p/_delta_log/{v:020}.json"));
        // A commit that changes no data (as VACUUM's) is stepped over.
        let info = r#"{"commitInfo":{"timestamp":1,"operation":"VACUUM END"}}"#;
        wh.store().put(&log(1), PutPayload::from(info.as_bytes().to_vec())).await.unwrap();
        let read = wh.current("p").await.unwrap().unwrap();
        assert_eq!((read.version, read.build_id.as_str()), (Some(1), "b-r1"));
        assert_eq!(read.files, v0.files);
        // Another engine's write: its version is read as it is, with no fingerprints.
        let file = &v0.files[0];
        let path = file.path.strip_prefix("p/").unwrap();
        let remove = format!(
            "{{\"commitInfo\":{{\"timestamp\":2,\"operation\":\"DELETE\"}}}}\n{{\"remove\":{{\"path\":\"{path}\",\"dataChange\":true,\"deletionTimestamp\":2}}}}"
        );
        wh.store().put(&log(2), PutPayload::from(remove.into_bytes())).await.unwrap();
        let read = wh.current("p").await.unwrap().unwrap();
        assert_eq!(read.version, Some(2));
        assert!(read.fingerprints.is_none() && read.files.is_empty(), "{read:?}");
    }

    #[tokio::test]
    async fn a_new_zoneless_timestamp_column_upgrades_the_protocol() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
        let wider = Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        wh.commit(&build(&wh, "r2", vec![2]).await, Some(&v0), &wider).await.unwrap();
        let state = wh.snapshot("p", 1).await.unwrap();
        let protocol = serde_json::to_value(state.protocol()).unwrap();
        assert_eq!(protocol["minReaderVersion"], 3, "{protocol}");
        assert!(protocol["readerFeatures"].to_string().contains("timestampNtz"), "{protocol}");
        assert_eq!(state.schema().fields().count(), 2);
        assert_eq!(state.metadata().id(), wh.snapshot("p", 0).await.unwrap().metadata().id(), "the same table");
    }

    /// Writes `lines` as commit `version` of `p`, as another writer would.
    async fn put_commit(wh: &Warehouse, version: u64, lines: &[String]) {
        let path = wh.path(&format!("p/_delta_log/{version:020}.json"));
        wh.store().put(&path, PutPayload::from(lines.join("\n").into_bytes())).await.unwrap();
    }

    /// The `metaData` line of `p`'s first commit.
    async fn metadata_line(wh: &Warehouse) -> serde_json::Value {
        let first = wh.store().get(&wh.path(&format!("p/_delta_log/{:020}.json", 0))).await.unwrap();
        let first = String::from_utf8(first.bytes().await.unwrap().to_vec()).unwrap();
        serde_json::from_str(first.lines().find(|l| l.starts_with("{\"metaData\"")).unwrap()).unwrap()
    }

    fn pointers(m: &Manifest) -> (u64, u64) {
        let p = m.table_log.as_ref().expect("a manifest with log pointers").pointers;
        (p.protocol, p.metadata)
    }

    #[tokio::test]
    async fn each_commit_says_where_the_log_set_protocol_and_metadata() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
        let v1 = wh.commit(&build(&wh, "r2", vec![2]).await, Some(&v0), &schema()).await.unwrap();
        let wider = Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let v2 = wh.commit(&build(&wh, "r3", vec![3]).await, Some(&v1), &wider).await.unwrap();
        let v3 = wh.commit(&build(&wh, "r4", vec![4]).await, Some(&v2), &wider).await.unwrap();
        assert_eq!([&v0, &v1, &v2, &v3].map(pointers), [(0, 0), (0, 0), (2, 2), (2, 2)]);
        let recorded: Vec<(u64, u64)> = wh
            .history("p")
            .await
            .unwrap()
            .iter()
            .map(|v| v.record.as_ref().and_then(|r| r.log).map(|p| (p.protocol, p.metadata)).unwrap())
            .collect();
        assert_eq!(recorded, [(0, 0), (0, 0), (2, 2), (2, 2)], "the records in the log say the same");
        assert_eq!(wh.current("p").await.unwrap().unwrap(), v3, "and the current manifest carries them");

        // Another writer's protocol-only commit (as an upgrade) moves the protocol's.
        let info = r#"{"commitInfo":{"timestamp":1,"operation":"SET TBLPROPERTIES"}}"#.to_owned();
        let protocol = r#"{"protocol":{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["timestampNtz"],"writerFeatures":["appendOnly","invariants","timestampNtz","checkConstraints"]}}"#;
        put_commit(&wh, 4, &[info, protocol.to_owned()]).await;
        let v4 = wh.current("p").await.unwrap().unwrap();
        assert_eq!((v4.version, v4.build_id.as_str(), pointers(&v4)), (Some(4), "b-r4", (4, 2)));

        // A commit reads the pointed commits, not the log: without version 1's file (which
        // a snapshot would need) it still commits, and says the same pointers.
        wh.store().delete(&wh.path(&format!("p/_delta_log/{:020}.json", 1))).await.unwrap();
        let v5 = wh.commit(&build(&wh, "r5", vec![5]).await, Some(&v4), &wider).await.unwrap();
        assert_eq!((v5.version, pointers(&v5)), (Some(5), (4, 2)));
        assert_eq!(wh.build_schema_json(&v5).await.unwrap(), wh.build_schema_json(&v3).await.unwrap());
    }

    #[tokio::test]
    async fn after_a_restore_the_next_commit_states_protocol_and_metadata_again() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
        let v1 = wh.commit(&build(&wh, "r2", vec![2]).await, Some(&v0), &schema()).await.unwrap();
        let v2 = wh.restore(&v1, &v0).await.unwrap();
        assert_eq!(v2.version, Some(2));
        let read = wh.current("p").await.unwrap().unwrap();
        assert!(read.table_log.is_none(), "delta-rs made the RESTORE's actions: {read:?}");
        let v3 = wh.commit(&build(&wh, "r3", vec![3]).await, Some(&read), &schema()).await.unwrap();
        assert_eq!(pointers(&v3), (3, 3));
        let text = wh.store().get(&wh.path(&format!("p/_delta_log/{:020}.json", 3))).await.unwrap();
        let text = String::from_utf8(text.bytes().await.unwrap().to_vec()).unwrap();
        assert!(text.contains("{\"protocol\":") && text.contains("{\"metaData\":"), "{text}");
        let (s0, s3) = (wh.snapshot("p", 0).await.unwrap(), wh.snapshot("p", 3).await.unwrap());
        assert_eq!(s3.metadata().id(), s0.metadata().id(), "the same table");
        assert_eq!((s3.schema(), s3.protocol()), (s0.schema(), s0.protocol()), "stated as they were");
        assert_eq!(wh.current("p").await.unwrap().unwrap().totals.rows_written, 1);
    }

    #[tokio::test]
    async fn tables_that_need_what_kiln_does_not_write_refuse_its_commits() {
        // (protocol, table properties, what the refusal names; `None`: the commit is made)
        let cases = [
            (
                r#"{"minReaderVersion":2,"minWriterVersion":5}"#,
                json!({"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "1"}),
                Some("`columnMapping`"),
            ),
            (r#"{"minReaderVersion":2,"minWriterVersion":5}"#, json!({}), None),
            (
                r#"{"minReaderVersion":1,"minWriterVersion":4}"#,
                json!({"delta.enableChangeDataFeed": "true"}),
                Some("`changeDataFeed`"),
            ),
            (
                r#"{"minReaderVersion":1,"minWriterVersion":3}"#,
                json!({"delta.constraints.positive": "v > 0"}),
                Some("`checkConstraints`"),
            ),
            (
                r#"{"minReaderVersion":3,"minWriterVersion":7,"readerFeatures":["deletionVectors"],"writerFeatures":["deletionVectors"]}"#,
                json!({}),
                Some("`deletionVectors`"),
            ),
        ];
        for (protocol, properties, refusal) in cases {
            let wh = Warehouse::memory();
            let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
            let info = r#"{"commitInfo":{"timestamp":1,"operation":"SET TBLPROPERTIES"}}"#.to_owned();
            let mut metadata = metadata_line(&wh).await;
            if properties.get("delta.columnMapping.mode").is_some() {
                // A column-mapped table names each field's physical column.
                let mut schema: serde_json::Value =
                    serde_json::from_str(metadata["metaData"]["schemaString"].as_str().unwrap()).unwrap();
                schema["fields"][0]["metadata"] =
                    json!({"delta.columnMapping.id": 1, "delta.columnMapping.physicalName": "col-1"});
                metadata["metaData"]["schemaString"] = schema.to_string().into();
            }
            metadata["metaData"]["configuration"] = properties;
            put_commit(&wh, 1, &[info, format!("{{\"protocol\":{protocol}}}"), metadata.to_string()]).await;
            let current = wh.current("p").await.unwrap().unwrap();
            assert_eq!((current.version, current.files.len()), (Some(1), v0.files.len()));
            let commit = wh.commit(&build(&wh, "r2", vec![2]).await, Some(&current), &schema()).await;
            match (refusal, commit) {
                (Some(feature), Err(refused)) => {
                    assert!(
                        matches!(&refused, DataError::TableRefused { product, .. } if product == "p")
                            && refused.to_string().contains(feature),
                        "{refused}"
                    );
                    assert_eq!(wh.current("p").await.unwrap().unwrap().version, Some(1), "nothing committed");
                }
                (None, Ok(committed)) => assert_eq!(committed.version, Some(2)),
                (expected, got) => panic!("{protocol} {expected:?}: {got:?}"),
            }
        }
    }

    #[tokio::test]
    async fn an_append_only_table_takes_appends_and_refuses_replacements() {
        let wh = Warehouse::memory();
        let v0 = wh.commit(&build(&wh, "r1", vec![1]).await, None, &schema()).await.unwrap();
        // Another writer sets `delta.appendOnly` (the table is at writer version 2).
        let mut metadata = metadata_line(&wh).await;
        metadata["metaData"]["configuration"]["delta.appendOnly"] = "true".into();
        let info = r#"{"commitInfo":{"timestamp":1,"operation":"SET TBLPROPERTIES"}}"#.to_owned();
        put_commit(&wh, 1, &[info, metadata.to_string()]).await;
        let current = wh.current("p").await.unwrap().unwrap();
        assert_eq!((current.version, current.files.len()), (Some(1), v0.files.len()));

        let replaced = wh.commit(&build(&wh, "r2", vec![2]).await, Some(&current), &schema()).await.unwrap_err();
        assert!(
            matches!(&replaced, DataError::TableRefused { .. }) && replaced.to_string().contains("append-only"),
            "{replaced}"
        );
        // (The version another writer made has no Kiln schema to append to: the appending
        // manifest is made by hand.)
        let new = build(&wh, "r3", vec![3]).await;
        let appended = Manifest { files: current.files.iter().chain(&new.files).cloned().collect(), ..new };
        let v2 = wh.commit(&appended, Some(&current), &schema()).await.unwrap();
        assert_eq!(v2.version, Some(2));
        let read = wh.current("p").await.unwrap().unwrap();
        assert_eq!(read.files.iter().map(|f| f.rows).sum::<u64>(), 2, "{read:?}");
    }
}
