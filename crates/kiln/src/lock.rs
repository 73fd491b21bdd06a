//! One writer per warehouse: every command that commits (`build`, `stream`, `gc`,
//! `optimize`, `rollback`, `promote`, `env create|drop`) holds an exclusive advisory lock
//! for as long as it runs; a second one waits for it (saying who holds it) or, with
//! [`Wait::Fail`] (`--no-wait`), fails at once with exit 1.
//!
//! The lock is an OS file lock (`flock` through `std::fs::File::lock`) on
//! `<warehouse>/_kiln_writer.lock` when the warehouse is a local directory, else on
//! `<temp dir>/kiln-locks/<hash of the warehouse URL>.lock` (nothing is written to the
//! project, whose artifacts may be remote too). The OS releases it when its process ends however it ends
//! (`kill -9` included), so a lock is never left stale. The holder writes its pid, command
//! and start time into the file for the message a waiter prints.
//!
//! Why: two builds of one project each did all the work, and `kiln gc` during a build
//! deleted files the build was about to commit (it then failed with "not found"). With
//! the lock, gc never runs while a build that may still commit does.
//!
//! Decision: a file lock, not a lock object on the store. Object stores have no lock with
//! a lease that ends with its holder; a lock object would be left behind by a killed
//! process and need expiry guesses. Writers on other machines sharing a remote warehouse
//! are not excluded by it: their commits are still Delta commits without retries, so the
//! second of two racing commits to one table is refused ("superseded"), never merged.
//! Readers (`plan`, `query`, `lineage`, ...) take no lock; a reader that finds an
//! unfinished promote finishes it (each of its commits is idempotent).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use kiln_data::Warehouse;

use crate::{Event, KilnError, Observer};

/// What a writer does when another holds the lock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Wait {
    /// Wait for it, after saying who holds it.
    #[default]
    Block,
    /// Fail at once (`--no-wait`).
    Fail,
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

/// The lock file of warehouse `warehouse` (module docs).
pub(crate) fn lock_path(warehouse: &Warehouse) -> PathBuf {
    match warehouse.local_dir() {
        Some(dir) => dir.join("_kiln_writer.lock"),
        None => {
            // A remote (or in-memory) warehouse: a lock per warehouse location in the
            // system's temporary directory, so nothing is written to the project.
            let location = format!("{}/{}", warehouse.store_url(), warehouse.path(""));
            let key = kiln_artifact::plan::sha256_hex(location.as_bytes());
            std::env::temp_dir().join("kiln-locks").join(format!("{}.lock", &key[..32]))
        }
    }
}

/// Takes the writer lock of `warehouse` for `command`.
pub(crate) async fn hold(
    warehouse: &Warehouse,
    command: &str,
    wait: Wait,
    observer: &dyn Observer,
) -> Result<WriterLock, KilnError> {
    WriterLock::acquire(lock_path(warehouse), command, wait, observer).await
}

impl WriterLock {
    /// Takes the lock at `path` for `command`, waiting for another holder per `wait`.
    pub(crate) async fn acquire(
        path: PathBuf,
        command: &str,
        wait: Wait,
        observer: &dyn Observer,
    ) -> Result<Self, KilnError> {
        let io = |what: &'static str| {
            let path = path.clone();
            move |source| KilnError::Io { context: format!("cannot {what} the writer lock {}", path.display()), source }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create the directory of"))?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if wait == Wait::Fail {
                    return Err(KilnError::Busy(format!(
                        "another kiln writer holds {} ({holder}); retry when it ends, or without --no-wait to wait for it",
                        path.display()
                    )));
                }
                observer.event(Event::Warning(format!(
                    "waiting for another kiln writer to finish ({holder}; lock {})",
                    path.display()
                )));
                file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .map_err(|e| KilnError::Internal(format!("waiting for the writer lock: {e}")))?
                    .map_err(io("wait for"))?;
            }
            Err(TryLockError::Error(e)) => return Err(io("take")(e)),
        }
        let note =
            format!("pid {}: kiln {command}, since {}\n", std::process::id(), kiln_artifact::time::now_rfc3339());
        file.set_len(0).map_err(io("write"))?;
        file.rewind().map_err(io("write"))?;
        file.write_all(note.as_bytes()).map_err(io("write"))?;
        Ok(Self { _file: file })
    }
}

/// Who holds the lock, as its holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match text.trim() {
        "" => "holder unknown".to_owned(),
        t => t.to_owned(),
    }
}
