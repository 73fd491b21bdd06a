//! A local warehouse whose writes are durable when they return: object_store's
//! `LocalFileSystem` writes a temporary file and renames (or links) it into place, but
//! syncs nothing, so after a power loss a committed Delta version could name data files
//! whose bytes never reached the disk, or be missing itself. [`Durable`] forwards every
//! call and, after each write (put, completed multipart upload, copy, rename), syncs the
//! file, its directory, and the ancestors up to the warehouse root whose entries may be
//! new (a new directory's entry must be synced in its parent; each directory once per
//! process).
//!
//! The power-loss model that follows: a build's data files are written (and so synced)
//! before its commit file is created; the commit file is synced before the commit
//! returns. After a power loss the table is at its last version whose commit returned,
//! or (a crash during the commit) at the one before it, with every file it names
//! intact. Deletes (gc, vacuum) are not synced: one lost after a power loss leaves a
//! file that the next gc deletes again. Object stores (S3 and the like) are durable on
//! their own and are not wrapped. object_store has no option for this, hence this layer.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// A [`LocalFileSystem`] (rooted at `/`) that syncs what it writes under `root`.
#[derive(Debug)]
pub struct Durable {
    inner: Arc<LocalFileSystem>,
    synced: Arc<Synced>,
}

/// The warehouse directory, and the directories whose own entry in their parent is
/// known to be on disk (synced once by this process): a write syncs its file and its
/// parent, and the ancestors only up to the first such directory.
#[derive(Debug)]
struct Synced {
    root: PathBuf,
    dirs: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
}

impl Durable {
    pub fn new(root: PathBuf) -> Self {
        let synced = Synced { root, dirs: Default::default() };
        Self { inner: Arc::new(LocalFileSystem::new()), synced: Arc::new(synced) }
    }

    async fn sync(&self, location: &Path, what: Written) -> Result<()> {
        let file = self.inner.path_to_filesystem(location)?;
        sync_blocking(file, Arc::clone(&self.synced), what).await
    }
}

/// What a write made that must reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// New bytes (a put, an upload, a rename's target): the file and its directories.
    Bytes,
    /// A new name for bytes already on disk (a copy, which `LocalFileSystem` makes as a
    /// hard link): only its directories. The link's inode change is journaled with the
    /// directory entry on the file systems Kiln runs on (ext4, XFS), and what Kiln links
    /// are files of committed builds, synced when they were written. A promote of 1,000
    /// products links 1,000 files: this halves their fsyncs.
    Name,
}

async fn sync_blocking(file: PathBuf, synced: Arc<Synced>, what: Written) -> Result<()> {
    let generic = |e: Box<dyn std::error::Error + Send + Sync>| object_store::Error::Generic {
        store: "durable local",
        source: e,
    };
    tokio::task::spawn_blocking(move || synced.file(&file, what))
        .await
        .map_err(|e| generic(Box::new(e)))?
        .map_err(|e| generic(Box::new(e)))
}

impl Synced {
    /// Syncs `file` (unless `what` is only its entry) and its directory, then each
    /// ancestor whose entry may be new, up to the warehouse root.
    fn file(&self, file: &FsPath, what: Written) -> std::io::Result<()> {
        if what == Written::Bytes {
            std::fs::File::open(file)?.sync_all()?;
        }
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            // `d`'s entry is in its parent, synced next unless it is known already.
            let mut known = self.dirs.lock().map_err(|_| std::io::Error::other("durable: poisoned lock"))?;
            if !known.insert(d.to_path_buf()) {
                break;
            }
            drop(known);
            dir = d.parent();
        }
        Ok(())
    }
}

impl fmt::Display for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Durable {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location, Written::Bytes).await?;
        Ok(put)
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        let file = self.inner.path_to_filesystem(location)?;
        Ok(Box::new(DurableUpload { inner: upload, file, synced: Arc::clone(&self.synced) }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to, Written::Name).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        self.sync(to, Written::Bytes).await
    }
}

/// A multipart upload that syncs its file once it is complete.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    file: PathBuf,
    synced: Arc<Synced>,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let put = self.inner.complete().await?;
        sync_blocking(self.file.clone(), Arc::clone(&self.synced), Written::Bytes).await?;
        Ok(put)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// Writes through every path land where LocalFileSystem puts them, and read back.
    #[tokio::test]
    async fn writes_land_and_read_back() {
        let dir = std::env::temp_dir().join(format!("kiln-durable-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.canonicalize().unwrap();
        let store = Durable::new(root.clone());
        let at = |rel: &str| Path::from_absolute_path(root.join(rel)).unwrap();
        store.put(&at("t/_delta_log/0.json"), PutPayload::from_static(b"{}")).await.unwrap();
        let mut upload = store.put_multipart(&at("t/builds/r/part-0.parquet")).await.unwrap();
        upload.put_part(PutPayload::from_static(b"abc")).await.unwrap();
        upload.put_part(PutPayload::from_static(b"def")).await.unwrap();
        upload.complete().await.unwrap();
        store.copy(&at("t/builds/r/part-0.parquet"), &at("u/builds/r/part-0.parquet")).await.unwrap();
        assert_eq!(std::fs::read(root.join("t/_delta_log/0.json")).unwrap(), b"{}");
        assert_eq!(std::fs::read(root.join("t/builds/r/part-0.parquet")).unwrap(), b"abcdef");
        let copied = store.get(&at("u/builds/r/part-0.parquet")).await.unwrap().bytes().await.unwrap();
        assert_eq!(&copied[..], b"abcdef");
        let listed = store.list_with_delimiter(Some(&at("t"))).await.unwrap();
        assert_eq!(listed.common_prefixes.len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
