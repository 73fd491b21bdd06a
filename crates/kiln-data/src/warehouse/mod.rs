//! Where datasets live: a warehouse root on an object store, each dataset a Delta Lake
//! table under it ([`delta`]: reading and committing versions; [`legacy`]: converting the
//! layout from before Delta tables; [`env`]: environments, their bindings and promotion).

mod delta;
mod durable;
mod env;
mod legacy;
mod protocol;

pub use delta::TableVersion;
pub use env::{Binding, EnvDoc, PROD, PromoteOutcome, unscoped, validate_env_name};

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::memory::InMemory;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::{DataError, Result};

/// A warehouse root: an object store plus a prefix inside it.
#[derive(Debug, Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    /// The URL DataFusion resolves the store by: `file://`, `memory://`, `s3://bucket`.
    base_url: String,
    root: Path,
    /// The environment this handle reads and commits (`prod` when `None`'s default):
    /// its tables live under `__env/<name>/` (env).
    scope: Arc<env::Scope>,
}

impl Warehouse {
    /// Opens a warehouse at a local directory (created if missing).
    pub fn local(dir: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(DataError::io(format!("cannot create warehouse {}", dir.display())))?;
        let abs = dir.canonicalize().map_err(DataError::io(format!("cannot resolve warehouse {}", dir.display())))?;
        let root = Path::from_absolute_path(&abs)
            .map_err(|e| DataError::Config(format!("bad warehouse path {}: {e}", abs.display())))?;
        // Every write is synced before it returns (durable: the power-loss model).
        let store = Arc::new(durable::Durable::new(abs));
        Ok(Self { store, base_url: "file://".into(), root, scope: Arc::default() })
    }

    /// An in-memory warehouse (tests; `memory://` in kiln.toml).
    pub fn memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            base_url: "memory://".into(),
            root: Path::from("warehouse"),
            scope: Arc::default(),
        }
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
                return Ok(Self {
                    store: remote.store,
                    base_url: remote.base_url,
                    root: remote.prefix,
                    scope: Arc::default(),
                });
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

    /// Removes every empty directory below a local warehouse's root (a no-op on object
    /// stores, which have none): deleting a build's objects leaves its directories, and a
    /// killed build can leave one it made. Returns how many went. Only while no writer
    /// runs (gc holds the writer lock): a writer may make a directory and then its file.
    /// The embedded log (`_topics/`) is left as it is: its directories are its topics.
    pub fn prune_empty_dirs(&self) -> Result<u64> {
        fn prune(dir: &FsPath, removed: &mut u64) -> std::io::Result<bool> {
            let mut empty = true;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                if entry.file_name() == "_topics" {
                    empty = false;
                } else if entry.file_type()?.is_dir() {
                    if prune(&entry.path(), removed)? {
                        std::fs::remove_dir(entry.path())?;
                        *removed += 1;
                    } else {
                        empty = false;
                    }
                } else {
                    empty = false;
                }
            }
            Ok(empty)
        }
        let Some(root) = self.local_dir() else { return Ok(0) };
        let mut removed = 0;
        prune(&root, &mut removed)
            .map_err(DataError::io(format!("cannot prune empty directories of {}", root.display())))?;
        Ok(removed)
    }

    /// The warehouse's directory when it is on the local file system.
    pub fn local_dir(&self) -> Option<PathBuf> {
        (self.base_url == "file://").then(|| PathBuf::from(format!("/{}", self.root.as_ref())))
    }

    /// The object path of a warehouse-relative path. Its segments are object names as
    /// they are (a Hive directory `k=a%3Ab` is the object prefix `k=a%3Ab`, the name other
    /// engines decode to `a:b`); only a segment object_store cannot hold as it is (a
    /// control character) is escaped.
    pub fn path(&self, relative: &str) -> Path {
        let mut p = self.root.clone();
        for part in relative.split('/').filter(|s| !s.is_empty()) {
            p = match PathPart::parse(part) {
                Ok(raw) => p.join(raw),
                Err(_) => p.join(part),
            };
        }
        p
    }

    /// The URL DataFusion reads a warehouse-relative file by (DataFusion decodes a URL's
    /// path once to find the object, so each segment is encoded here).
    pub fn url(&self, relative: &str) -> Result<ListingTableUrl> {
        const SEGMENT: &AsciiSet = &CONTROLS
            .add(b' ')
            .add(b'"')
            .add(b'#')
            .add(b'%')
            .add(b'<')
            .add(b'>')
            .add(b'?')
            .add(b'`')
            .add(b'{')
            .add(b'}');
        let path = self.path(relative);
        let encoded: Vec<String> = path.parts().map(|p| utf8_percent_encode(p.as_ref(), SEGMENT).to_string()).collect();
        let full = format!("{}/{}", self.base_url, encoded.join("/"));
        ListingTableUrl::parse(&full).map_err(DataError::exec(format!("bad dataset url {full}")))
    }

    /// `<product>/builds/<run_id>`: the private directory of one build, relative to its
    /// environment's root (see [`Warehouse::scoped`]).
    pub fn build_dir(product: &str, run_id: &str) -> String {
        format!("{product}/builds/{run_id}")
    }

    /// `relative` (a dataset-relative path: `<dataset>/...`) as a warehouse-relative path
    /// in this handle's environment: `__env/<env>/<dataset>/...`, or unchanged in `prod`.
    /// Every manifest path is warehouse-relative, so a build of one environment can be read
    /// from any other.
    pub fn scoped(&self, relative: &str) -> String {
        format!("{}{relative}", self.scope.prefix)
    }

    /// The environment this handle reads and commits.
    pub fn env(&self) -> &str {
        &self.scope.name
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

    /// The datasets with a directory in this environment (prod: the warehouse), sorted.
    /// Maintenance only (`gc`, environments): readers never list.
    pub async fn products(&self) -> Result<Vec<String>> {
        let dir = self.path(&self.scope.prefix);
        let listed =
            self.store.list_with_delimiter(Some(&dir)).await.map_err(DataError::store(format!("cannot list {dir}")))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .filter(|name| name != "_topics" && name != env::ENV_DIR) // the embedded log (crate::log), environments
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every object under the warehouse-relative `prefix`: its path relative to the
    /// warehouse, and its size. Maintenance only (`gc`).
    pub async fn objects(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        use futures::TryStreamExt;
        let path = self.path(prefix);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(DataError::store(format!("cannot list {path}")))?;
        Ok(listed.into_iter().filter_map(|o| Some((self.relative(&o.location)?, o.size))).collect())
    }

    /// Deletes one object (warehouse-relative); a missing one is not an error.
    pub async fn delete(&self, relative: &str) -> Result<()> {
        match self.store.delete(&self.path(relative)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(DataError::store(format!("cannot delete {relative}"))(e)),
        }
    }

    /// The warehouse-relative path of an object path under the root (`None` outside it).
    fn relative(&self, location: &Path) -> Option<String> {
        let parts: Vec<String> = location.prefix_match(&self.root)?.map(|p| p.as_ref().to_owned()).collect();
        let decoded: Vec<String> =
            parts.iter().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned()).collect();
        Some(decoded.join("/"))
    }

    /// The URL of the table at warehouse-relative `root` (`file:///.../warehouse/name/`).
    fn table_url(&self, root: &str) -> Result<url::Url> {
        let root = self.path(root);
        url_of(&format!("{}/{}/", self.base_url, root))
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
