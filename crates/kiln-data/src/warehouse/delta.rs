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

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TableReference, TransactionError};
use deltalake_core::kernel::{Action, Add, MetadataExt, Protocol, Remove, StructType, Transaction, new_metadata};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::protocol::{DeltaOperation, OutputMode, SaveMode};
use deltalake_core::table::state::DeltaTableState;
use deltalake_core::{DeltaTable, DeltaTableError};
use kiln_artifact::{FileEntry, KilnCommit, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals};
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use serde::Deserialize;

use super::Warehouse;
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

    /// What commit `version` of the table at `root` did (`None`: its commit file is gone).
    async fn read_commit(&self, root: &str, version: u64) -> Result<Option<TableVersion>> {
        let rel = format!("{root}/_delta_log/{version:020}.json");
        let Some(bytes) = super::get_optional(&self.store, &self.path(&rel)).await? else { return Ok(None) };
        let text = String::from_utf8_lossy(&bytes);
        let mut out = TableVersion { version, operation: None, record: None, changes_data: false };
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
        let versions = self.log_versions(&root).await?;
        let Some(&latest) = versions.last() else {
            if self.scope.prefix.is_empty() {
                super::legacy::refuse_old_layout(self, name).await?;
            }
            return Ok(None);
        };
        self.manifest_at(name, &root, latest, &versions).await.map(Some)
    }

    /// The manifest of version `version` of the table at `root` (dataset `name`).
    pub(super) async fn manifest_of(&self, name: &str, root: &str, version: u64) -> Result<Manifest> {
        let versions = self.log_versions(root).await?;
        self.manifest_at(name, root, version, &versions).await
    }

    /// The manifest of version `version` of the table at `root` (`versions`: its log's
    /// versions).
    async fn manifest_at(&self, name: &str, root: &str, version: u64, versions: &[u64]) -> Result<Manifest> {
        // The commit whose Kiln record describes this version's data: this one, or the
        // last before it when only commits that change no data (VACUUM, properties)
        // followed.
        let mut at = version;
        let record = loop {
            match self.read_commit(root, at).await? {
                Some(TableVersion { record: Some(record), .. }) => break Some(record),
                Some(v) if !v.changes_data && at > 0 && versions.binary_search(&(at - 1)).is_ok() => at -= 1,
                _ => break None,
            }
        };
        match record {
            Some(r) if r.complete => Ok(r.manifest(version, r.added.clone())),
            Some(r) => {
                let state = self.snapshot(root, version).await?;
                let files = snapshot_files(&state, root, &r.partition_by, &r.added);
                Ok(r.manifest(version, files))
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
        // A lazy snapshot: the schema needs the log's metadata, not its files.
        let log_store = self.log_store(&root)?;
        let snapshot =
            off_worker(
                async move { deltalake_core::kernel::Snapshot::try_new(log_store.as_ref(), Some(version)).await },
            )
            .await?
            .map_err(DataError::delta(format!("table `{root}`: cannot read version {version}")))?;
        serde_json::to_string(snapshot.schema().as_ref())
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
        let Some(schema) = schema else { return self.commit_stored(manifest, base, None).await };
        let table_schema: StructType = serde_json::from_str(schema).map_err(|e| bad(e.to_string()))?;
        let stored: Schema = (&table_schema).try_into_arrow().map_err(|e| bad(e.to_string()))?;
        self.commit_stored(manifest, base, Some((&stored, table_schema))).await
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
        self.commit_stored(manifest, base, Some((&stored, table_schema))).await
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
        let state = match read {
            Some(v) => Some(self.snapshot(&root, v).await?),
            None => None,
        };

        let before: BTreeSet<&str> = base.iter().flat_map(|b| &b.files).map(|f| f.path.as_str()).collect();
        let after: BTreeSet<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        let record = KilnCommit::of(manifest, &before);
        let now = now_ms();
        let delta =
            |e: deltalake_core::kernel::Error| DataError::Internal(format!("dataset `{name}`: Delta metadata: {e}"));

        let mut actions = Vec::new();
        let (protocol, metadata) = match (&state, schema) {
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
            (Some(s), Some((stored, table_schema))) => {
                let same = s.schema().as_ref() == &table_schema
                    && s.metadata().partition_columns() == manifest.partition_by.as_slice();
                if same {
                    (None, None)
                } else {
                    let metadata =
                        new_metadata(&table_schema, &manifest.partition_by, s.metadata().configuration().clone())
                            .and_then(|m| m.with_table_id(s.metadata().id().to_owned()))
                            .and_then(|m| m.with_name(name.to_owned()))
                            .map_err(delta)?;
                    (protocol_for(stored, Some(s.protocol()))?, Some(metadata))
                }
            }
        };
        if let Some(p) = &protocol {
            actions.push(Action::Protocol(p.clone()));
        }
        if let Some(m) = &metadata {
            actions.push(Action::Metadata(m.clone()));
        }
        let mut removed = 0;
        for file in base.iter().flat_map(|b| &b.files).filter(|f| !after.contains(f.path.as_str())) {
            actions.push(Action::Remove(remove_action(file, &root, &base_partitions(base), now)?));
            removed += 1;
        }
        for file in &record.added {
            actions.push(Action::Add(add_action(file, &root, &manifest.partition_by, now, true)?));
        }

        let operation = match (&state, protocol, metadata) {
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
        let mut properties =
            CommitProperties::default().with_metadata([(RECORD_KEY.to_owned(), record.to_json()?)]).with_max_retries(0);
        // Micro-batch progress as Delta application transactions too, the protocol's own
        // record of a streaming writer's position (Kiln's is in its record).
        for (feed, position) in &manifest.positions {
            properties = properties
                .with_application_transaction(Transaction::new(format!("kiln:{name}:{feed}"), position.batches as i64));
        }
        let version = self.commit_actions(&root, read, state.as_ref(), actions, operation, properties).await?;
        Ok(committed(manifest, version))
    }

    /// Makes one commit on top of `state` (version `read`), without retries.
    async fn commit_actions(
        &self,
        root: &str,
        read: Option<u64>,
        state: Option<&DeltaTableState>,
        actions: Vec<Action>,
        operation: DeltaOperation,
        properties: CommitProperties,
    ) -> Result<u64> {
        let log_store = self.log_store(root)?;
        let name = super::env::unscoped(root);
        let refused = |e: DeltaTableError| commit_error(name, read, e);
        crate::failpoint("before_commit");
        let committed = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(state.map(|s| s as &dyn TableReference), log_store, operation)
            .into_prepared_commit_future()
            .await
            .map_err(refused)?
            .await
            .map_err(refused)?;
        let version = committed.version;
        crate::failpoint("after_commit");
        // The commit is durable; what follows only speeds up later reads: a checkpoint
        // every `checkpoint_interval` versions and, with it, expired log cleanup (which
        // can only remove logs a checkpoint covers). It runs only at those versions: its
        // other work is reloading the table state, which Kiln does not use, and listing the
        // log, on every commit (a promote of 1,000 products makes 1,000 commits). Its
        // failure does not fail the build.
        let interval = state.map_or(100, |s| {
            use deltalake_core::table::config::TablePropertiesExt;
            s.table_config().checkpoint_interval().get()
        });
        if (version + 1).is_multiple_of(interval)
            && let Err(e) = committed.await
        {
            tracing::warn!(dataset = name, version, error = %e, "post-commit checkpoint failed");
        }
        Ok(version)
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
        let state = self.snapshot(&root, read).await?;
        let before: BTreeSet<&str> = current.files.iter().map(|f| f.path.as_str()).collect();
        let after: BTreeSet<&str> = compacted.files.iter().map(|f| f.path.as_str()).collect();
        let record = KilnCommit::of(compacted, &before);
        let now = now_ms();
        let mut actions = Vec::new();
        for file in current.files.iter().filter(|f| !after.contains(f.path.as_str())) {
            let mut remove = remove_action(file, &root, &current.partition_by, now)?;
            remove.data_change = false;
            actions.push(Action::Remove(remove));
        }
        for file in &record.added {
            actions.push(Action::Add(add_action(file, &root, &compacted.partition_by, now, false)?));
        }
        let operation = DeltaOperation::Optimize { predicate: None, target_size: target_size as i64 };
        let properties =
            CommitProperties::default().with_metadata([(RECORD_KEY.to_owned(), record.to_json()?)]).with_max_retries(0);
        let version = self.commit_actions(&root, Some(read), Some(&state), actions, operation, properties).await?;
        Ok(committed(compacted, version))
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
        Ok(committed(target, version))
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

/// `manifest` as committed at `version` (its files' Delta statistics now live in the log).
fn committed(manifest: &Manifest, version: u64) -> Manifest {
    let mut out = Manifest { version: Some(version), ..manifest.clone() };
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
                source: TransactionError::MaxCommitAttempts(_) | TransactionError::CommitConflict(_)
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
        side: Default::default(),
        sidecars: Vec::new(),
        version: Some(version),
    }
}

/// The protocol a table of stored schema `stored` needs: `None` when `current` already
/// allows it. Timestamps without a time zone (`timestamp_ntz`) need reader 3 / writer 7
/// with the `timestampNtz` feature; everything else Kiln writes needs no feature.
fn protocol_for(stored: &Schema, current: Option<&Protocol>) -> Result<Option<Protocol>> {
    let ntz = stored.fields().iter().any(|f| has_ntz(f));
    let json = |e: serde_json::Error| DataError::Internal(format!("Delta protocol: {e}"));
    let mut value = match current {
        None if !ntz => serde_json::json!({ "minReaderVersion": 1, "minWriterVersion": 2 }),
        None => serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz"],
        }),
        Some(p) => {
            let value = serde_json::to_value(p).map_err(json)?;
            let has = |key: &str| {
                value.get(key).and_then(|v| v.as_array()).is_some_and(|a| a.iter().any(|f| f == "timestampNtz"))
            };
            if !ntz || has("readerFeatures") {
                return Ok(None);
            }
            value
        }
    };
    if current.is_some() {
        // An upgrade to table features keeps what the legacy writer version implied.
        let writer = value["minWriterVersion"].as_i64().unwrap_or(2);
        let mut writer_features: Vec<serde_json::Value> =
            value.get("writerFeatures").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        if writer < 7 {
            writer_features.extend(["appendOnly".into(), "invariants".into()]);
        }
        writer_features.push("timestampNtz".into());
        let mut reader_features: Vec<serde_json::Value> =
            value.get("readerFeatures").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        reader_features.push("timestampNtz".into());
        value = serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": reader_features, "writerFeatures": writer_features,
        });
    }
    serde_json::from_value(value).map(Some).map_err(json)
}

fn has_ntz(field: &Field) -> bool {
    match field.data_type() {
        DataType::Timestamp(_, None) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => has_ntz(f),
        DataType::Struct(fields) => fields.iter().any(|f| has_ntz(f)),
        _ => false,
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
}
