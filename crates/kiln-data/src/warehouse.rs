//! Where datasets live, their layout, and the atomic commit of a build.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use kiln_artifact::{CurrentPointer, MANIFEST_FORMAT_VERSION, Manifest};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::{DataError, Result};

/// A warehouse root: an object store plus a prefix inside it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    /// The URL DataFusion resolves the store by: `file://`, `memory://`, `s3://bucket`.
    base_url: String,
    root: Path,
}

impl Warehouse {
    /// Opens a warehouse at a local directory (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(DataError::io(format!("cannot create warehouse {}", dir.display())))?;
        let abs = dir.canonicalize().map_err(DataError::io(format!("cannot resolve warehouse {}", dir.display())))?;
        let root = Path::from_absolute_path(&abs)
            .map_err(|e| DataError::Config(format!("bad warehouse path {}: {e}", abs.display())))?;
        Ok(Self { store: Arc::new(LocalFileSystem::new()), base_url: "file://".into(), root })
    }

    /// An in-memory warehouse (tests; `memory://` in kiln.toml).
    pub fn memory() -> Self {
        Self { store: Arc::new(InMemory::new()), base_url: "memory://".into(), root: Path::from("warehouse") }
    }

    /// Opens `location`: a path relative to `base`, an absolute path, `file://PATH`,
    /// `memory://`, or a cloud URL (kiln_artifact::remote; each needs its cargo feature).
    pub fn open(location: &str, base: &FsPath) -> Result<Self> {
        if let Some(rest) = location.strip_prefix("file://") {
            return Self::local(&PathBuf::from(rest));
        }
        if location.starts_with("memory://") {
            return Ok(Self::memory());
        }
        match kiln_artifact::remote::open_remote(location) {
            Ok(Some(remote)) => {
                return Ok(Self { store: remote.store, base_url: remote.base_url, root: remote.prefix });
            }
            Ok(None) => {}
            Err(e) => return Err(DataError::Config(format!("warehouse {e}"))),
        }
        if let Some((scheme, _)) = location.split_once("://") {
            return Err(DataError::Config(format!(
                "warehouse `{location}`: unknown store `{scheme}://` (supported: a path, file://, memory://, s3://, gs://, az://)"
            )));
        }
        Self::local(&base.join(location))
    }

    /// The object store URL DataFusion resolves this warehouse by (`file://`, `memory://`,
    /// `s3://bucket`).
    pub fn store_url(&self) -> String {
        self.base_url.clone()
    }

    /// Makes the store reachable by DataFusion under this warehouse's URL.
    pub fn register(&self, runtime: &RuntimeEnv) -> Result<()> {
        let url = url_of(&self.base_url)?;
        runtime.register_object_store(&url, Arc::clone(&self.store));
        Ok(())
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of a warehouse-relative path.
    pub fn path(&self, relative: &str) -> Path {
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = p.join(part);
        }
        p
    }

    /// The URL DataFusion reads a warehouse-relative file by.
    pub fn url(&self, relative: &str) -> Result<ListingTableUrl> {
        let full = format!("{}/{}", self.base_url, self.path(relative));
        ListingTableUrl::parse(&full).map_err(DataError::exec(format!("bad dataset url {full}")))
    }

    /// `<product>/builds/<run_id>`: the private directory of one build.
    pub fn build_dir(product: &str, run_id: &str) -> String {
        format!("{product}/builds/{run_id}")
    }

    fn pointer_path(product: &str) -> String {
        format!("{product}/_current.json")
    }

    /// Commits a build: writes its manifest (the commit point), then atomically replaces
    /// the product's pointer. Before the manifest exists the build is invisible; between
    /// the two writes the previous build is still the visible one.
    pub async fn commit(&self, manifest: &Manifest) -> Result<()> {
        let manifest_rel = format!("{}/_manifest.json", manifest.build_dir);
        crate::failpoint("before_manifest");
        put_bytes(&self.store, &self.path(&manifest_rel), manifest.to_json()?).await?;
        crate::failpoint("before_pointer");
        let pointer = CurrentPointer {
            format_version: MANIFEST_FORMAT_VERSION,
            product: manifest.product.clone(),
            build_id: manifest.build_id.clone(),
            run_id: manifest.run_id.clone(),
            manifest: manifest_rel,
        };
        // LocalFileSystem and InMemory both make `put` atomic (write to a temporary file,
        // then rename), which is what makes the pointer switch atomic.
        put_bytes(&self.store, &self.path(&Self::pointer_path(&manifest.product)), pointer.to_json()?).await?;
        crate::failpoint("after_pointer");
        Ok(())
    }

    /// Writes one object (atomically, as `put` is) at `relative`.
    pub async fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        put_bytes(&self.store, &self.path(relative), bytes).await
    }

    /// Reads one object.
    pub async fn get(&self, relative: &str) -> Result<bytes::Bytes> {
        let failed = || DataError::store(format!("cannot read {relative}"));
        self.store.get(&self.path(relative)).await.map_err(failed())?.bytes().await.map_err(failed())
    }

    /// The products with a directory in the warehouse, sorted. Maintenance only (`gc`):
    /// readers never list.
    pub async fn products(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root))
            .await
            .map_err(DataError::store(format!("cannot list {}", self.root)))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| name != "_topics") // the embedded log (crate::log)
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every build directory of a product (relative to the warehouse), oldest first (run
    /// ids sort by time), each with its manifest when it was committed. Maintenance only
    /// (`rollback`, `gc`): readers never list.
    pub async fn builds(&self, product: &str) -> Result<Vec<(String, Option<Manifest>)>> {
        let prefix = self.path(&format!("{product}/builds"));
        let listed = self
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(DataError::store(format!("cannot list {prefix}")))?;
        let mut dirs: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(|run| Self::build_dir(product, run)))
            .collect();
        dirs.sort();
        let mut out = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let rel = format!("{dir}/_manifest.json");
            let manifest = match get_optional(&self.store, &self.path(&rel)).await? {
                Some(bytes) => Some(Manifest::from_json(&bytes, &rel)?),
                None => None,
            };
            out.push((dir, manifest));
        }
        Ok(out)
    }

    /// Deletes every object under `dir` (relative to the warehouse); returns (files, bytes).
    pub async fn delete_dir(&self, dir: &str) -> Result<(u64, u64)> {
        use futures::TryStreamExt;
        let prefix = self.path(dir);
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(DataError::store(format!("cannot list {prefix}")))?;
        let (mut files, mut bytes) = (0, 0);
        // The manifest goes first: a half-deleted build is then uncommitted, not corrupt.
        let (manifests, data): (Vec<_>, Vec<_>) =
            objects.into_iter().partition(|o| o.location.filename() == Some("_manifest.json"));
        for object in manifests.into_iter().chain(data) {
            self.store
                .delete(&object.location)
                .await
                .map_err(DataError::store(format!("cannot delete {}", object.location)))?;
            files += 1;
            bytes += object.size;
        }
        Ok((files, bytes))
    }

    /// The committed manifest of a product, if any.
    pub async fn current(&self, product: &str) -> Result<Option<Manifest>> {
        let rel = Self::pointer_path(product);
        let Some(bytes) = get_optional(&self.store, &self.path(&rel)).await? else {
            return Ok(None);
        };
        let pointer = CurrentPointer::from_json(&bytes, &rel)?;
        let bytes = get_optional(&self.store, &self.path(&pointer.manifest))
            .await?
            .ok_or_else(|| DataError::Config(format!("pointer {rel} names a missing manifest {}", pointer.manifest)))?;
        Ok(Some(Manifest::from_json(&bytes, &pointer.manifest)?))
    }
}

async fn get_optional(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<Vec<u8>>> {
    match store.get(path).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(DataError::store(format!("cannot read {path}")))?;
            Ok(Some(bytes.to_vec()))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(DataError::store(format!("cannot read {path}"))(e)),
    }
}

async fn put_bytes(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Vec<u8>) -> Result<()> {
    store.put(path, bytes.into()).await.map(|_| ()).map_err(DataError::store(format!("cannot write {path}")))
}

fn url_of(s: &str) -> Result<url::Url> {
    url::Url::parse(s).map_err(|e| DataError::Config(format!("bad url {s}: {e}")))
}
