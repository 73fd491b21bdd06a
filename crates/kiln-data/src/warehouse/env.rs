//! Environments: named sets of "dataset → committed build" bindings over one warehouse.
//!
//! `prod` is the warehouse itself (`<warehouse>/<dataset>/`). Any other environment `E`
//! lives under `<warehouse>/__env/E/`:
//!
//! ```text
//! __env/E/_env.json                      the environment: where it came from, and its bindings
//! __env/E/<dataset>/_delta_log/...       a Delta table of each dataset E built (or was promoted)
//! __env/E/<dataset>/builds/<run>/...     the data files of those builds
//! __env/<target>.promote.json            a promote into <target> that is not finished
//! ```
//!
//! An environment starts as a copy of another's bindings: `_env.json` names, for every
//! dataset, the table and version it reads (`<dataset>` at version 7: prod's build). No data
//! is copied and no table made: creating an environment writes one object. A dataset the
//! environment then builds gets its own table, which from then on is its binding; the
//! files of an earlier build it keeps (appends) are linked into that table first
//! (`ObjectStore::copy_if_not_exists`: a hard link on local stores, a server-side copy on
//! object stores), because Delta readers resolve every file under the table's root
//! (deltalake 1.6 joins even absolute `add` paths to it; tested), so a table can only
//! reference files below it.
//!
//! External readers read an environment's dataset as its binding says: the table
//! `__env/E/<dataset>/` when it has one, else `<binding.table>` at `binding.version`
//! (Delta time travel). `kiln env show E --json` prints exactly that.
//!
//! Promote (`from` → `to`) is all-or-nothing for Kiln: the files of every dataset whose
//! build differs are linked into `to`'s tables first (invisible), then one object, the
//! intent `__env/<to>.promote.json` holding every dataset's target manifest, is written:
//! that put is the commit point. Its Delta commits follow, one per table; every Kiln
//! command that opens `to` afterwards finishes a promote whose intent is still there
//! (each commit is skipped when its table already has the build) and, until then, reads
//! the intent's manifests. External Delta readers see each table switch at its own commit
//! (Delta has no multi-table transaction): within the promote, some tables new and some
//! old; after it, or after the next Kiln command, all new.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kiln_artifact::Manifest;
use serde::{Deserialize, Serialize};

use super::Warehouse;
use crate::{DataError, Result};

/// The default environment: the warehouse's own tables.
pub const PROD: &str = "prod";
/// The directory of every other environment.
pub(super) const ENV_DIR: &str = "__env";
const ENV_DOC: &str = "_env.json";
const ENV_FORMAT_VERSION: u32 = 1;

/// The environment of a [`Warehouse`] handle.
#[derive(Debug)]
pub(super) struct Scope {
    pub(super) name: String,
    /// `""` for prod, `__env/<name>/` otherwise.
    pub(super) prefix: String,
    /// What the environment reads for datasets it has no table of.
    pub(super) bindings: BTreeMap<String, Binding>,
    /// An unfinished promote into this environment: what Kiln reads for its datasets.
    pub(super) pending: BTreeMap<String, Manifest>,
}

impl Default for Scope {
    fn default() -> Self {
        Self { name: PROD.to_owned(), prefix: String::new(), bindings: BTreeMap::new(), pending: BTreeMap::new() }
    }
}

/// `__env/<name>/_env.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDoc {
    pub format_version: u32,
    pub name: String,
    /// The environment whose bindings it started from.
    pub from: String,
    /// When it was made (RFC 3339, UTC).
    pub created: String,
    /// Per dataset, the build it reads while it has no table of its own.
    pub bindings: BTreeMap<String, Binding>,
}

/// A dataset's build in another table: `table` (warehouse-relative root) at `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub table: String,
    pub version: u64,
}

/// `__env/<to>.promote.json`: a promote's commit point (module docs).
#[derive(Debug, Serialize, Deserialize)]
struct PromoteIntent {
    format_version: u32,
    from: String,
    to: String,
    /// Per dataset: its manifest in `to` (paths under `to`'s tables) and its table's
    /// Delta schema (JSON), which the commit needs when `from` is gone (`None`: the
    /// schema of `to`'s table, which the build's schema fingerprint and partitioning
    /// equal).
    datasets: BTreeMap<String, (Manifest, Option<String>)>,
}

/// How many datasets a promote reads, links and commits at a time.
const PROMOTE_PARALLEL: usize = 8;

/// One dataset's part of a promote, decided before anything is written.
enum PlannedPromote {
    Unchanged,
    Changed(Box<ChangedDataset>),
}

/// A dataset whose build a promote changes.
struct ChangedDataset {
    name: String,
    /// The build it had (`None`: none).
    was: Option<String>,
    /// `from`'s build, its files linked into this environment's table.
    imported: Manifest,
    /// Its table's Delta schema (JSON; `None`: the same as this environment's table).
    schema: Option<String>,
    /// The latest version of this environment's own table of it: the commit's base.
    own: Option<Manifest>,
}

/// What a promote did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteOutcome {
    /// The datasets whose build changed, with (old, new) build ids.
    pub changed: BTreeMap<String, (Option<String>, String)>,
    /// The datasets that already had `from`'s build.
    pub unchanged: u64,
}

/// Environment names are directory names: letters, digits, `_` and `-`, at most 64,
/// starting with a letter or digit.
pub fn validate_env_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(DataError::Config(format!(
            "`{name}` is not an environment name (letters, digits, `_` and `-`, at most 64, starting with a letter or digit)"
        )))
    }
}

fn doc_path(name: &str) -> String {
    format!("{ENV_DIR}/{name}/{ENV_DOC}")
}

fn intent_path(to: &str) -> String {
    format!("{ENV_DIR}/{to}.promote.json")
}

/// A warehouse-relative path without its environment prefix (`__env/E/`).
pub fn unscoped(path: &str) -> &str {
    match path.strip_prefix("__env/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, p)| p),
        None => path,
    }
}

impl Warehouse {
    /// This warehouse as environment `name` (`prod`: the warehouse's own tables). An
    /// unknown environment is created from prod's bindings when `create`, else an error
    /// naming the existing ones. A promote into it that a killed run left unfinished is
    /// finished first; when that fails (a read-only store), the handle reads the promote's
    /// builds anyway.
    pub async fn open_env(&self, name: &str, create: bool) -> Result<Warehouse> {
        validate_env_name(name)?;
        let base = self.base();
        let mut scope = Scope::default();
        if name != PROD {
            let doc = match base.env_doc(name).await? {
                Some(doc) => doc,
                None if create => base.create_env(name, &base).await?,
                None => {
                    let known: Vec<String> = std::iter::once(PROD.to_owned())
                        .chain(base.environments().await?.into_iter().map(|d| d.name))
                        .collect();
                    return Err(DataError::Config(format!(
                        "no environment `{name}` (environments: {}); `kiln build --env {name}` or `kiln env create {name}` makes it",
                        known.join(", ")
                    )));
                }
            };
            scope =
                Scope { name: name.to_owned(), prefix: format!("{ENV_DIR}/{name}/"), bindings: doc.bindings, ..scope };
        }
        let mut out = Warehouse { scope: Arc::new(scope), ..base };
        if let Some(intent) = out.intent().await?
            && let Err(e) = out.finish_promote(&intent, None).await
        {
            tracing::warn!(env = name, error = %e, "cannot finish the promote into it; reading its builds");
            let scope = Scope {
                name: out.scope.name.clone(),
                prefix: out.scope.prefix.clone(),
                bindings: out.scope.bindings.clone(),
                pending: intent.datasets.into_iter().map(|(k, (m, _))| (k, m)).collect(),
            };
            out.scope = Arc::new(scope);
        }
        Ok(out)
    }

    /// This warehouse as prod (the handle every environment is relative to).
    pub fn base(&self) -> Warehouse {
        Warehouse { scope: Arc::default(), ..self.clone() }
    }

    /// The binding of dataset `name` in this environment, if it has one.
    pub fn binding(&self, name: &str) -> Option<&Binding> {
        self.scope.bindings.get(name)
    }

    async fn env_doc(&self, name: &str) -> Result<Option<EnvDoc>> {
        let Some(bytes) = super::get_optional(&self.store, &self.path(&doc_path(name))).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| DataError::Config(format!("{}: not an environment document: {e}", doc_path(name))))
    }

    /// Every environment but prod, by name.
    pub async fn environments(&self) -> Result<Vec<EnvDoc>> {
        let dir = self.path(ENV_DIR);
        let listed =
            self.store.list_with_delimiter(Some(&dir)).await.map_err(DataError::store(format!("cannot list {dir}")))?;
        let mut out = Vec::new();
        for name in listed.common_prefixes.iter().filter_map(|p| p.filename()) {
            // A directory without its document is a creation or drop that did not finish.
            if let Some(doc) = self.base().env_doc(name).await? {
                out.push(doc);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes environment `name` as a copy of `from`'s bindings: one object written, no
    /// data copied. Fails when it exists.
    pub async fn create_env(&self, name: &str, from: &Warehouse) -> Result<EnvDoc> {
        validate_env_name(name)?;
        if name == PROD {
            return Err(DataError::Config("`prod` always exists".into()));
        }
        let datasets = from.datasets().await?;
        let reads = datasets.into_iter().map(|d| async move { from.current_binding(&d).await.map(|b| (d, b)) });
        let found: Vec<(String, Option<Binding>)> =
            futures::stream::iter(reads).buffer_unordered(32).try_collect().await?;
        let doc = EnvDoc {
            format_version: ENV_FORMAT_VERSION,
            name: name.to_owned(),
            from: from.env().to_owned(),
            created: kiln_artifact::time::now_rfc3339(),
            bindings: found.into_iter().filter_map(|(d, b)| Some((d, b?))).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| DataError::Internal(format!("environment: {e}")))?;
        let path = self.path(&doc_path(name));
        let create = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
        match self.store.put_opts(&path, bytes.into(), create).await {
            Ok(_) => Ok(doc),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(DataError::Config(format!("environment `{name}` exists (`kiln env drop {name}` removes it)")))
            }
            Err(e) => Err(DataError::store(format!("cannot write {path}"))(e)),
        }
    }

    /// Deletes environment `name`: its document first (from then on it does not exist),
    /// then its tables and files. Builds other environments were promoted from stay:
    /// promote linked them into their own tables.
    pub async fn drop_env(&self, name: &str) -> Result<u64> {
        validate_env_name(name)?;
        if name == PROD {
            return Err(DataError::Config("`prod` cannot be dropped".into()));
        }
        if self.env_doc(name).await?.is_none() {
            return Err(DataError::Config(format!("no environment `{name}`")));
        }
        self.delete(&doc_path(name)).await?;
        self.delete_prefix(&format!("{ENV_DIR}/{name}/")).await
    }

    /// Deletes every object under warehouse-relative `prefix`; how many.
    pub(crate) async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let objects = self.objects(prefix).await?;
        let n = objects.len() as u64;
        let deletes = objects.into_iter().map(|(p, _)| async move { self.delete(&p).await });
        futures::stream::iter(deletes).buffer_unordered(16).try_collect::<Vec<()>>().await?;
        Ok(n)
    }

    /// The datasets of this environment: its own tables, its bindings and a pending
    /// promote's, sorted.
    pub async fn datasets(&self) -> Result<Vec<String>> {
        let mut out: std::collections::BTreeSet<String> = self.products().await?.into_iter().collect();
        out.extend(self.scope.bindings.keys().cloned());
        out.extend(self.scope.pending.keys().cloned());
        Ok(out.into_iter().collect())
    }

    /// Where this environment's dataset `name` is: its latest own version, else its
    /// binding (`None`: the environment has no build of it).
    pub async fn current_binding(&self, name: &str) -> Result<Option<Binding>> {
        let root = self.scoped(name);
        match self.latest_version(&root).await? {
            Some(version) => Ok(Some(Binding { table: root, version })),
            None => Ok(self.scope.bindings.get(name).cloned()),
        }
    }

    async fn intent(&self) -> Result<Option<PromoteIntent>> {
        let path = intent_path(self.env());
        let Some(bytes) = super::get_optional(&self.store, &self.path(&path)).await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| DataError::Internal(format!("{path}: {e}")))
    }

    /// Makes every dataset of `from` whose build differs bound to `from`'s build in this
    /// environment, all-or-nothing (module docs). Datasets are read, linked and committed
    /// [`PROMOTE_PARALLEL`] at a time: each is its own table, and the log reads and
    /// commits are small store round trips.
    pub async fn promote_from(&self, from: &Warehouse) -> Result<PromoteOutcome> {
        if from.env() == self.env() {
            return Err(DataError::Config(format!("cannot promote `{}` into itself", self.env())));
        }
        let plans = from.datasets().await?.into_iter().map(|name| self.plan_promote(from, name));
        let planned: Vec<PlannedPromote> = futures::stream::iter(plans)
            .buffer_unordered(PROMOTE_PARALLEL)
            .try_filter_map(|p| async move { Ok(p) })
            .try_collect()
            .await?;
        let mut outcome = PromoteOutcome::default();
        let mut datasets = BTreeMap::new();
        let mut bases = BTreeMap::new();
        for p in planned {
            match p {
                PlannedPromote::Unchanged => outcome.unchanged += 1,
                PlannedPromote::Changed(c) => {
                    let ChangedDataset { name, was, imported, schema, own } = *c;
                    outcome.changed.insert(name.clone(), (was, imported.build_id.clone()));
                    bases.insert(name.clone(), own);
                    datasets.insert(name, (imported, schema));
                }
            }
        }
        if datasets.is_empty() {
            return Ok(outcome);
        }
        let intent = PromoteIntent {
            format_version: ENV_FORMAT_VERSION,
            from: from.env().to_owned(),
            to: self.env().to_owned(),
            datasets,
        };
        let bytes = serde_json::to_vec(&intent).map_err(|e| DataError::Internal(format!("promote intent: {e}")))?;
        self.put(&intent_path(self.env()), bytes).await?;
        crate::failpoint_step("promote");
        self.finish_promote(&intent, Some(&bases)).await?;
        Ok(outcome)
    }

    /// Whether dataset `name` of `from` changes in a promote into this environment and,
    /// if so, its build with the files linked into this environment's table (visible to
    /// nothing yet).
    async fn plan_promote(&self, from: &Warehouse, name: String) -> Result<Option<PlannedPromote>> {
        let Some(build) = from.current(&name).await? else { return Ok(None) };
        let own = self.own_current(&name).await?;
        let mine = self.current_over(&name, own.clone()).await?;
        if mine.as_ref().is_some_and(|m| m.build_id == build.build_id && same_files(m, &build)) {
            return Ok(Some(PlannedPromote::Unchanged));
        }
        // The target table's schema stands when the build's is the same (one Delta log
        // read less per dataset).
        let same_schema =
            own.as_ref().is_some_and(|o| o.schema_fp == build.schema_fp && o.partition_by == build.partition_by);
        let schema = if same_schema { None } else { Some(self.build_schema_json(&build).await?) };
        let imported = self.import(&build).await?;
        crate::failpoint_step("promote");
        let was = mine.map(|m| m.build_id);
        Ok(Some(PlannedPromote::Changed(Box::new(ChangedDataset { name, was, imported, schema, own }))))
    }

    /// Makes the Delta commits of a promote whose intent is written, skipping those made
    /// already, then deletes the intent. `bases`: each dataset's latest own version as
    /// the promote read it (`None`: read them, when finishing an interrupted promote).
    async fn finish_promote(
        &self,
        intent: &PromoteIntent,
        bases: Option<&BTreeMap<String, Option<Manifest>>>,
    ) -> Result<()> {
        let commits = intent.datasets.iter().map(|(name, (manifest, schema))| async move {
            let current = match bases.and_then(|b| b.get(name)) {
                Some(base) => base.clone(),
                None => self.own_current(name).await?,
            };
            if current.as_ref().is_some_and(|c| c.build_id == manifest.build_id && same_files(c, manifest)) {
                return Ok(());
            }
            self.commit_with_delta_schema(manifest, current.as_ref(), schema.as_deref()).await?;
            crate::failpoint_step("promote");
            Ok::<(), DataError>(())
        });
        futures::stream::iter(commits).buffer_unordered(PROMOTE_PARALLEL).try_collect::<Vec<()>>().await?;
        self.delete(&intent_path(self.env())).await
    }

    /// `build` (a committed build of any environment) with every file it needs linked
    /// into this environment's table of it, its paths rewritten to those links.
    pub(crate) async fn import(&self, build: &Manifest) -> Result<Manifest> {
        let root = format!("{}/", self.scoped(&build.product));
        let rebase = |path: &str| -> String {
            if path.starts_with(&root) { path.to_owned() } else { self.scoped(unscoped(path)) }
        };
        // Where the source table's log set things says nothing of this one's.
        let mut out = Manifest { table_log: None, ..build.clone() };
        let mut links: Vec<(String, String)> = Vec::new();
        for file in &mut out.files {
            let to = rebase(&file.path);
            if to != file.path {
                links.push((std::mem::replace(&mut file.path, to.clone()), to));
            }
        }
        for sidecar in &mut out.sidecars {
            let to = rebase(sidecar);
            if to != *sidecar {
                links.push((std::mem::replace(sidecar, to.clone()), to));
            }
        }
        if let Some(state) = out.stream.as_mut().and_then(|s| s.state.as_mut()) {
            let to = rebase(state);
            if to != *state {
                links.push((std::mem::replace(state, to.clone()), to));
            }
        }
        if !out.build_dir.is_empty() {
            out.build_dir = rebase(&out.build_dir);
        }
        for side in out.side.values_mut() {
            side.build_dir = self.scoped(unscoped(&side.build_dir));
            for f in &mut side.added {
                f.path = self.scoped(unscoped(&f.path));
            }
        }
        let copies = links.into_iter().map(|(from, to)| async move { self.link(&from, &to).await });
        futures::stream::iter(copies).buffer_unordered(16).try_collect::<Vec<()>>().await?;
        Ok(out)
    }

    /// Makes `to` the same object as `from` without moving data through Kiln (a hard link
    /// on local stores, a server-side copy elsewhere); an existing `to` (a link an earlier,
    /// killed run made) stands.
    async fn link(&self, from: &str, to: &str) -> Result<()> {
        use object_store::ObjectStoreExt;
        let (src, dst) = (self.path(from), self.path(to));
        match self.store.copy_if_not_exists(&src, &dst).await {
            Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(DataError::store(format!("cannot link {from} to {to}"))(e)),
        }
    }

    /// A committed build of dataset `name` with build id `build_id` whose files all still
    /// exist, in this environment's table, prod's, or another environment's (latest
    /// first in each), with where it was found (`prod v3`).
    pub async fn find_build(&self, name: &str, build_id: &str) -> Result<Option<(Manifest, String)>> {
        let mut tables = vec![(self.env().to_owned(), self.scoped(name))];
        if self.env() != PROD {
            tables.push((PROD.to_owned(), name.to_owned()));
        }
        for doc in self.base().environments().await? {
            if doc.name != self.env() {
                tables.push((doc.name.clone(), format!("{ENV_DIR}/{}/{name}", doc.name)));
            }
        }
        for (env, root) in tables {
            let history = self.history_at(&root).await?;
            let hits = history.iter().rev().filter(|v| v.record.as_ref().is_some_and(|r| r.build_id == build_id));
            for hit in hits {
                let manifest = self.manifest_of(name, &root, hit.version).await?;
                if self.all_exist(&manifest).await? {
                    return Ok(Some((manifest, format!("{env} v{}", hit.version))));
                }
            }
        }
        Ok(None)
    }

    async fn all_exist(&self, manifest: &Manifest) -> Result<bool> {
        use object_store::ObjectStoreExt;
        for f in &manifest.files {
            match self.store.head(&self.path(&f.path)).await {
                Ok(_) => {}
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(DataError::store(format!("cannot read {}", f.path))(e)),
            }
        }
        Ok(true)
    }

    /// Commits `build` (found by [`Warehouse::find_build`]) as the next version of this
    /// environment's table of it, on top of `base`: the build is bound again without
    /// executing anything or writing data.
    pub async fn adopt(&self, build: &Manifest, base: Option<&Manifest>) -> Result<Manifest> {
        let schema = self.build_schema_json(build).await?;
        let imported = self.import(build).await?;
        self.commit_with_delta_schema(&imported, base, Some(&schema)).await
    }
}

/// Whether two manifests hold the same files.
fn same_files(a: &Manifest, b: &Manifest) -> bool {
    a.files.len() == b.files.len() && a.files.iter().zip(&b.files).all(|(x, y)| unscoped(&x.path) == unscoped(&y.path))
}
