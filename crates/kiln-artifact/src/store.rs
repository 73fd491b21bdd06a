//! The project's local artifact store (`.kiln/` by default): content-addressed records that
//! later runs read back to explain themselves.
//!
//! ```text
//! .kiln/plans/<query_fp>.json       canonical plans, so `kiln plan` can diff a changed query
//! .kiln/runs/<run_id>/...           run summaries
//! ```
//!
//! Writes go to a temporary file renamed into place, so a reader never sees half a record.

use std::path::{Path, PathBuf};

use crate::ArtifactError;
use crate::plan::CanonicalPlan;

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
