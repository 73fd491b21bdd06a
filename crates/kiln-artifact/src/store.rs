//! The artifact store (`.kiln/` by default): records that later runs read back to explain
//! themselves, written through object_store.
//!
//! ```text
//! plans/<query_fp>.json                 canonical plans, so `kiln plan` can diff a changed query
//! builds/<product>/<build_id>.json      build records (plans, metrics, lineage, inputs)
//! blobs/<sha256[0..2]>/<sha256>         binary artifacts by content (Substrait plans)
//! runs/<run_id>/run_summary.json        what each product did and why
//! runs/<run_id>/settings.json           the effective settings of the run
//! tests/<test>.json                   a unit test's last result (`kiln test`)
//! runs/<run_id>/events.jsonl            telemetry; while the run is going, events/<seq>.jsonl parts
//! cache/compile.json, cache/parse.json  local caches (see below)
//! ```
//!
//! Location: a path (relative to the project), `file://path`, or `memory://` (tests, and
//! one-off runs that should leave nothing behind). Records are objects: a put is atomic (the
//! local store writes a temporary file and renames it), so a reader never sees half a
//! record and a killed run leaves whole records or none. Object stores cannot append, so
//! events are written as numbered parts while a run goes and concatenated into
//! `events.jsonl` when it ends; a killed run keeps its parts.
//!
//! The caches are different: they are per machine and never required (deleting or
//! corrupting them changes speed, not results), so they are plain local files under the
//! store's directory, and absent for a `memory://` store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::ArtifactError;
use crate::plan::{
    BuildRecord, COMPILE_CACHE_VERSION, CanonicalPlan, CompileCache, PARSE_CACHE_VERSION, ParseCache, sha256_hex,
};

/// Records, blobs, runs and caches of one project.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    /// Where the caches live (a local directory), if anywhere.
    cache_dir: Option<PathBuf>,
    /// The location as the user gave it, for messages.
    location: String,
}

impl ArtifactStore {
    /// Opens `location`: a path relative to `base`, `file://path` or `memory://`.
    pub fn open(location: &str, base: &Path) -> Result<Self, ArtifactError> {
        if let Some(rest) = location.strip_prefix("file://") {
            return Self::local(rest);
        }
        if location.starts_with("memory://") {
            return Ok(Self::memory());
        }
        match crate::remote::open_remote(location) {
            Ok(Some(remote)) => {
                let store = object_store::prefix::PrefixStore::new(remote.store, remote.prefix);
                return Ok(Self { store: Arc::new(store), cache_dir: None, location: location.to_owned() });
            }
            Ok(None) => {}
            Err(e) => return Err(ArtifactError::Config(format!("artifact store {e}"))),
        }
        if let Some((scheme, _)) = location.split_once("://") {
            return Err(ArtifactError::Config(format!(
                "artifact store `{location}`: unknown store `{scheme}://` (supported: a path, file://, memory://, s3://, gs://, az://)"
            )));
        }
        Self::local(base.join(location))
    }

    /// A local directory (created when missing).
    pub fn local(root: impl Into<PathBuf>) -> Result<Self, ArtifactError> {
        let root: PathBuf = root.into();
        std::fs::create_dir_all(&root)
            .map_err(|source| ArtifactError::Io { context: format!("cannot create {}", root.display()), source })?;
        // Deleting the last object of a directory removes the directory too.
        let store = LocalFileSystem::new_with_prefix(&root)
            .map_err(|source| ArtifactError::Store { context: format!("cannot open {}", root.display()), source })?
            .with_automatic_cleanup(true);
        Ok(Self { store: Arc::new(store), cache_dir: Some(root.join("cache")), location: root.display().to_string() })
    }

    /// An in-memory store: records live as long as the process; no caches.
    pub fn memory() -> Self {
        Self { store: Arc::new(InMemory::new()), cache_dir: None, location: "memory://".into() }
    }

    /// Any object store (remote stores come with their cargo features); caches in
    /// `cache_dir` when given.
    pub fn over(store: Arc<dyn ObjectStore>, location: &str, cache_dir: Option<PathBuf>) -> Self {
        Self { store, cache_dir, location: location.to_owned() }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(parts: &[&str]) -> ObjectPath {
        ObjectPath::from_iter(parts.iter().copied())
    }

    fn err(&self, what: &str, path: &ObjectPath) -> impl FnOnce(object_store::Error) -> ArtifactError {
        let context = format!("cannot {what} {}/{path}", self.location);
        move |source| ArtifactError::Store { context, source }
    }

    async fn get(&self, path: &ObjectPath) -> Result<Option<Vec<u8>>, ArtifactError> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(self.err("read", path))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("read", path)(e)),
        }
    }

    async fn put(&self, path: &ObjectPath, bytes: Vec<u8>) -> Result<(), ArtifactError> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(self.err("write", path))?;
        Ok(())
    }

    async fn exists(&self, path: &ObjectPath) -> Result<bool, ArtifactError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err("read", path)(e)),
        }
    }

    async fn list(&self, prefix: &ObjectPath) -> Result<Vec<ObjectPath>, ArtifactError> {
        let metas: Vec<_> = self.store.list(Some(prefix)).try_collect().await.map_err(self.err("list", prefix))?;
        let mut paths: Vec<ObjectPath> = metas.into_iter().map(|m| m.location).collect();
        paths.sort();
        Ok(paths)
    }

    async fn delete(&self, path: &ObjectPath) -> Result<(), ArtifactError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", path)(e)),
        }
    }
}

// Canonical plans, build records, blobs.
impl ArtifactStore {
    fn plan_path(query_fp: &str) -> ObjectPath {
        Self::path(&["plans", &format!("{query_fp}.json")])
    }

    /// Stores a canonical plan under its fingerprint (a no-op when it is already there).
    pub async fn put_plan(&self, plan: &CanonicalPlan) -> Result<(), ArtifactError> {
        let path = Self::plan_path(&plan.fingerprint());
        if self.exists(&path).await? {
            return Ok(());
        }
        self.put(&path, plan.to_json()?).await
    }

    /// The canonical plan with this fingerprint, if one was stored.
    pub async fn plan(&self, query_fp: &str) -> Result<Option<CanonicalPlan>, ArtifactError> {
        let path = Self::plan_path(query_fp);
        match self.get(&path).await? {
            Some(bytes) => CanonicalPlan::from_json(&bytes, &format!("{}/{path}", self.location)).map(Some),
            None => Ok(None),
        }
    }

    /// Stores the record of a committed build.
    pub async fn put_build_record(&self, record: &BuildRecord) -> Result<(), ArtifactError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| ArtifactError::Encode { what: "build record", source })?;
        self.put(&Self::path(&["builds", &record.product, &format!("{}.json", record.build_id)]), bytes).await
    }

    /// Stores the checks last run on a product's committed build (`checks/<product>.json`).
    pub async fn put_checks(&self, product: &str, record: &crate::ChecksRecord) -> Result<(), ArtifactError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| ArtifactError::Encode { what: "checks record", source })?;
        self.put(&Self::path(&["checks", &format!("{product}.json")]), bytes).await
    }

    /// The checks last run on a product's committed build, if recorded (an unreadable
    /// record counts as none: the checks run again).
    pub async fn checks(&self, product: &str) -> Result<Option<crate::ChecksRecord>, ArtifactError> {
        let path = Self::path(&["checks", &format!("{product}.json")]);
        let Some(bytes) = self.get(&path).await? else { return Ok(None) };
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// The record of a build, if stored.
    pub async fn build_record(&self, product: &str, build_id: &str) -> Result<Option<BuildRecord>, ArtifactError> {
        let path = Self::path(&["builds", product, &format!("{build_id}.json")]);
        let Some(bytes) = self.get(&path).await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| ArtifactError::Decode {
            what: "build record",
            path: format!("{}/{path}", self.location),
            source,
        })
    }

    /// Every stored build record's (product, build id).
    pub async fn build_records(&self) -> Result<Vec<(String, String)>, ArtifactError> {
        let mut out = Vec::new();
        for path in self.list(&Self::path(&["builds"])).await? {
            let parts: Vec<_> = path.parts().map(|p| p.as_ref().to_owned()).collect();
            if let [_, product, file] = parts.as_slice()
                && let Some(build_id) = file.strip_suffix(".json")
            {
                out.push((product.clone(), build_id.to_owned()));
            }
        }
        Ok(out)
    }

    pub async fn delete_build_record(&self, product: &str, build_id: &str) -> Result<(), ArtifactError> {
        self.delete(&Self::path(&["builds", product, &format!("{build_id}.json")])).await
    }

    fn blob_path(sha256: &str) -> ObjectPath {
        Self::path(&["blobs", sha256.get(..2).unwrap_or("00"), sha256])
    }

    /// Stores `bytes` by content; returns their sha256 (hex), the blob's name. Storing the
    /// same bytes again writes nothing.
    pub async fn put_blob(&self, bytes: &[u8]) -> Result<String, ArtifactError> {
        let sha = sha256_hex(bytes);
        let path = Self::blob_path(&sha);
        if !self.exists(&path).await? {
            self.put(&path, bytes.to_vec()).await?;
        }
        Ok(sha)
    }

    /// The blob with this sha256, if stored; its content is checked against the name.
    pub async fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        let path = Self::blob_path(sha256);
        let Some(bytes) = self.get(&path).await? else { return Ok(None) };
        if sha256_hex(&bytes) != sha256 {
            return Err(ArtifactError::Corrupt(format!("{}/{path}: content does not match its sha256", self.location)));
        }
        Ok(Some(bytes))
    }

    /// Deletes stored canonical plans whose fingerprint is not in `keep`; returns how many.
    pub async fn retain_plans(&self, keep: &BTreeSet<String>) -> Result<u64, ArtifactError> {
        let mut deleted = 0;
        for path in self.list(&Self::path(&["plans"])).await? {
            let Some(fp) = path.filename().and_then(|f| f.strip_suffix(".json")) else { continue };
            if !keep.contains(fp) {
                self.delete(&path).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Deletes blobs whose sha256 is not in `keep`; returns how many.
    pub async fn retain_blobs(&self, keep: &BTreeSet<String>) -> Result<u64, ArtifactError> {
        let mut deleted = 0;
        for path in self.list(&Self::path(&["blobs"])).await? {
            let Some(sha) = path.filename() else { continue };
            if !keep.contains(sha) {
                self.delete(&path).await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

// Runs.
impl ArtifactStore {
    /// Stores one file of a run (`run_summary.json`, `settings.json`).
    pub async fn put_run_file(&self, run_id: &str, name: &str, bytes: Vec<u8>) -> Result<(), ArtifactError> {
        self.put(&Self::path(&["runs", run_id, name]), bytes).await
    }

    /// A file of a run, if stored.
    /// Keeps a unit test's last result (`tests/<test>.json`).
    pub async fn put_test_run(&self, run: &crate::LastTestRun) -> Result<(), ArtifactError> {
        let bytes =
            serde_json::to_vec_pretty(run).map_err(|source| ArtifactError::Encode { what: "test run", source })?;
        self.put(&Self::path(&["tests", &format!("{}.json", run.run.name)]), bytes).await
    }

    /// Deletes the last results of unit tests not in `keep`; returns their names.
    pub async fn retain_test_runs(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, ArtifactError> {
        let mut deleted = Vec::new();
        for path in self.list(&Self::path(&["tests"])).await? {
            let Some(test) = path.filename().and_then(|f| f.strip_suffix(".json")) else { continue };
            if !keep.contains(test) {
                let test = test.to_owned();
                self.delete(&path).await?;
                deleted.push(test);
            }
        }
        deleted.sort();
        Ok(deleted)
    }

    /// A unit test's last result (`None`: never run, or written by another version).
    pub async fn test_run(&self, test: &str) -> Result<Option<crate::LastTestRun>, ArtifactError> {
        let bytes = self.get(&Self::path(&["tests", &format!("{test}.json")])).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The ids of the runs kept, oldest first (run ids sort by time).
    pub async fn run_ids(&self) -> Result<Vec<String>, ArtifactError> {
        let prefix = Self::path(&["runs"]);
        let listed = self.store.list_with_delimiter(Some(&prefix)).await.map_err(self.err("list", &prefix))?;
        let mut ids: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        ids.sort();
        Ok(ids)
    }

    pub async fn run_file(&self, run_id: &str, name: &str) -> Result<Option<Vec<u8>>, ArtifactError> {
        self.get(&Self::path(&["runs", run_id, name])).await
    }

    /// Stores part `seq` of a run's events: complete JSON lines.
    pub async fn put_event_part(&self, run_id: &str, seq: u64, lines: Vec<u8>) -> Result<(), ArtifactError> {
        self.put(&Self::path(&["runs", run_id, "events", &format!("{seq:08}.jsonl")]), lines).await
    }

    /// Concatenates a run's event parts, in order, into `events.jsonl` and deletes them.
    pub async fn finish_events(&self, run_id: &str) -> Result<(), ArtifactError> {
        let parts = self.list(&Self::path(&["runs", run_id, "events"])).await?;
        let mut all = self.get(&Self::path(&["runs", run_id, "events.jsonl"])).await?.unwrap_or_default();
        for part in &parts {
            all.extend(self.get(part).await?.unwrap_or_default());
        }
        self.put(&Self::path(&["runs", run_id, "events.jsonl"]), all).await?;
        for part in &parts {
            self.delete(part).await?;
        }
        Ok(())
    }
}

// Caches: local files, never required.
impl ArtifactStore {
    fn cache_file(&self, name: &str) -> Option<PathBuf> {
        self.cache_dir.as_ref().map(|d| d.join(name))
    }

    /// The compile cache; empty when absent, unreadable or of another version (a cache is
    /// never worth failing a run for).
    pub fn compile_cache(&self) -> CompileCache {
        self.cache_file("compile.json")
            .and_then(|p| read_cache(&p, |c: &CompileCache| c.format_version == COMPILE_CACHE_VERSION))
            .unwrap_or(CompileCache { format_version: COMPILE_CACHE_VERSION, entries: Default::default() })
    }

    /// The parse cache; empty when absent, unreadable or of another version.
    pub fn parse_cache(&self) -> ParseCache {
        self.cache_file("parse.json")
            .and_then(|p| read_cache(&p, |c: &ParseCache| c.format_version == PARSE_CACHE_VERSION))
            .unwrap_or_else(Self::empty_parse_cache)
    }

    pub fn empty_parse_cache() -> ParseCache {
        ParseCache { format_version: PARSE_CACHE_VERSION, files: Default::default() }
    }

    pub fn put_parse_cache(&self, cache: &ParseCache) -> Result<(), ArtifactError> {
        let Some(path) = self.cache_file("parse.json") else { return Ok(()) };
        let bytes =
            serde_json::to_vec(cache).map_err(|source| ArtifactError::Encode { what: "parse cache", source })?;
        write_atomic(&path, &bytes)
    }

    pub fn put_compile_cache(&self, cache: &CompileCache) -> Result<(), ArtifactError> {
        let Some(path) = self.cache_file("compile.json") else { return Ok(()) };
        let bytes =
            serde_json::to_vec(cache).map_err(|source| ArtifactError::Encode { what: "compile cache", source })?;
        write_atomic(&path, &bytes)
    }
}

/// A cache file's content when it exists, parses and passes `current` (its version);
/// `None` otherwise (a cache is never worth failing a run for).
fn read_cache<T: serde::de::DeserializeOwned>(path: &Path, current: impl Fn(&T) -> bool) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<T>(&bytes).ok().filter(|c| current(c))
}

/// Writes `bytes` to a local `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let io = |context: String| move |source| ArtifactError::Io { context, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("cannot rename to {}", path.display())))
}
