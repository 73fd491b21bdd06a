//! The project's local artifact store (`.kiln/` by default): content-addressed records that
//! later runs read back to explain themselves.
//!
//! ```text
//! .kiln/plans/<query_fp>.json       canonical plans, so `kiln plan` can diff a changed query
//! .kiln/runs/<run_id>/...           run summaries, effective settings, events.jsonl
//! .kiln/builds/<product>/<build_id>.json   build records (plans, metrics, lineage, inputs)
//! .kiln/cache/compile.json          compile results by input key (a cache: deleting it is safe)
//! .kiln/cache/parse.json            per-file statement summaries by file content (idem)
//! ```
//!
//! Writes go to a temporary file renamed into place, so a reader never sees half a record.

use std::path::{Path, PathBuf};

use crate::ArtifactError;
use crate::plan::{
    BuildRecord, COMPILE_CACHE_VERSION, CanonicalPlan, CompileCache, PARSE_CACHE_VERSION, ParseCache, TelemetryEvent,
};

/// A directory of records.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn plan_path(&self, query_fp: &str) -> PathBuf {
        self.root.join("plans").join(format!("{query_fp}.json"))
    }

    /// Stores a canonical plan under its fingerprint (a no-op when it is already there).
    pub fn put_plan(&self, plan: &CanonicalPlan) -> Result<(), ArtifactError> {
        let path = self.plan_path(&plan.fingerprint());
        if path.exists() {
            return Ok(());
        }
        write_atomic(&path, &plan.to_json()?)
    }

    /// The canonical plan with this fingerprint, if one was stored.
    pub fn plan(&self, query_fp: &str) -> Result<Option<CanonicalPlan>, ArtifactError> {
        let path = self.plan_path(query_fp);
        match std::fs::read(&path) {
            Ok(bytes) => CanonicalPlan::from_json(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ArtifactError::Io { context: format!("cannot read {}", path.display()), source }),
        }
    }
}

impl ArtifactStore {
    fn cache_path(&self) -> PathBuf {
        self.root.join("cache").join("compile.json")
    }

    /// The compile cache; empty when absent, unreadable or of another version (a cache is
    /// never worth failing a run for).
    pub fn compile_cache(&self) -> CompileCache {
        read_cache(&self.cache_path(), |c: &CompileCache| c.format_version == COMPILE_CACHE_VERSION)
            .unwrap_or(CompileCache { format_version: COMPILE_CACHE_VERSION, entries: Default::default() })
    }

    /// The parse cache; empty when absent, unreadable or of another version.
    pub fn parse_cache(&self) -> ParseCache {
        read_cache(&self.root.join("cache").join("parse.json"), |c: &ParseCache| {
            c.format_version == PARSE_CACHE_VERSION
        })
        .unwrap_or(ParseCache { format_version: PARSE_CACHE_VERSION, files: Default::default() })
    }

    pub fn put_parse_cache(&self, cache: &ParseCache) -> Result<(), ArtifactError> {
        let bytes =
            serde_json::to_vec(cache).map_err(|source| ArtifactError::Encode { what: "parse cache", source })?;
        write_atomic(&self.root.join("cache").join("parse.json"), &bytes)
    }

    pub fn put_compile_cache(&self, cache: &CompileCache) -> Result<(), ArtifactError> {
        let bytes =
            serde_json::to_vec(cache).map_err(|source| ArtifactError::Encode { what: "compile cache", source })?;
        write_atomic(&self.cache_path(), &bytes)
    }
}

impl ArtifactStore {
    /// Stores the record of a committed build.
    pub fn put_build_record(&self, record: &BuildRecord) -> Result<(), ArtifactError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|source| ArtifactError::Encode { what: "build record", source })?;
        write_atomic(&self.root.join("builds").join(&record.product).join(format!("{}.json", record.build_id)), &bytes)
    }

    /// Stores a binary artifact of a build next to its record
    /// (`builds/<product>/<build_id>.<extension>`); returns its file name.
    pub fn put_build_blob(
        &self,
        product: &str,
        build_id: &str,
        extension: &str,
        bytes: &[u8],
    ) -> Result<String, ArtifactError> {
        let name = format!("{build_id}.{extension}");
        write_atomic(&self.root.join("builds").join(product).join(&name), bytes)?;
        Ok(name)
    }

    /// The record of a build, if stored.
    pub fn build_record(&self, product: &str, build_id: &str) -> Result<Option<BuildRecord>, ArtifactError> {
        let path = self.root.join("builds").join(product).join(format!("{build_id}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| ArtifactError::Decode {
                what: "build record",
                path: path.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ArtifactError::Io { context: format!("cannot read {}", path.display()), source }),
        }
    }

    /// Appends one event to the run's `events.jsonl` (one line, written with one call).
    pub fn append_event(&self, event: &TelemetryEvent) -> Result<(), ArtifactError> {
        use std::io::Write;
        let dir = self.root.join("runs").join(&event.run_id);
        let io = |context: String| move |source| ArtifactError::Io { context, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut line = serde_json::to_vec(event).map_err(|source| ArtifactError::Encode { what: "event", source })?;
        line.push(b'\n');
        let path = dir.join("events.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        file.write_all(&line).map_err(io(format!("cannot write {}", path.display())))
    }

    /// Deletes stored canonical plans whose fingerprint is not in `keep`; returns how many.
    pub fn retain_plans(&self, keep: &std::collections::BTreeSet<String>) -> Result<u64, ArtifactError> {
        let dir = self.root.join("plans");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(ArtifactError::Io { context: format!("cannot list {}", dir.display()), source }),
        };
        let mut deleted = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(fp) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if path.extension().is_some_and(|e| e == "json") && !keep.contains(fp) {
                std::fs::remove_file(&path).map_err(|source| ArtifactError::Io {
                    context: format!("cannot delete {}", path.display()),
                    source,
                })?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// A cache file's content when it exists, parses and passes `current` (its version);
/// `None` otherwise (a cache is never worth failing a run for).
fn read_cache<T: serde::de::DeserializeOwned>(path: &Path, current: impl Fn(&T) -> bool) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<T>(&bytes).ok().filter(|c| current(c))
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let io = |context: String| move |source| ArtifactError::Io { context, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("cannot rename to {}", path.display())))
}
