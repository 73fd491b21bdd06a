//! The artifact store over object_store: the same behaviour on the local and the
//! in-memory store; blobs addressed by their sha256; events in parts, joined in order.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod identity;

use std::collections::BTreeSet;

use kiln_artifact::plan::{CANONICAL_PLAN_VERSION, sha256_hex};
use kiln_artifact::{ArtifactStore, CanonicalPlan, PlanItem, PlanNode};

fn plan(constant: &str) -> CanonicalPlan {
    CanonicalPlan {
        format_version: CANONICAL_PLAN_VERSION,
        root: PlanNode { kind: "Filter".into(), items: vec![PlanItem::new("predicate", constant)], children: vec![] },
    }
}

async fn exercise(store: &ArtifactStore) {
    // Plans: stored once under their fingerprint, read back equal.
    let (a, b) = (plan("x > 1"), plan("x > 2"));
    store.put_plan(&a).await.unwrap();
    store.put_plan(&a).await.unwrap();
    store.put_plan(&b).await.unwrap();
    assert_eq!(store.plan(&a.fingerprint()).await.unwrap(), Some(a.clone()));
    assert_eq!(store.plan("0".repeat(64).as_str()).await.unwrap(), None);

    // Blobs: named by the sha256 of their bytes (checked against hashing them here).
    let bytes = b"substrait plan bytes".to_vec();
    let sha = store.put_blob(&bytes).await.unwrap();
    assert_eq!(sha, sha256_hex(&bytes));
    assert_eq!(store.put_blob(&bytes).await.unwrap(), sha, "same content, same name");
    assert_eq!(store.blob(&sha).await.unwrap(), Some(bytes.clone()));
    let other = store.put_blob(b"other").await.unwrap();

    // Events: parts in order, joined into one file; a second run is separate.
    store.put_event_part("r1", 0, b"{\"n\":1}\n".to_vec()).await.unwrap();
    store.put_event_part("r1", 1, b"{\"n\":2}\n{\"n\":3}\n".to_vec()).await.unwrap();
    store.put_event_part("r2", 0, b"{\"n\":9}\n".to_vec()).await.unwrap();
    store.finish_events("r1").await.unwrap();
    let events = store.run_file("r1", "events.jsonl").await.unwrap().unwrap();
    assert_eq!(String::from_utf8(events).unwrap(), "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");

    // Retention: what is not kept goes.
    let keep: BTreeSet<String> = [a.fingerprint()].into();
    assert_eq!(store.retain_plans(&keep).await.unwrap(), 1);
    assert_eq!(store.plan(&b.fingerprint()).await.unwrap(), None);
    assert_eq!(store.retain_blobs(&[sha.clone()].into()).await.unwrap(), 1);
    assert_eq!(store.blob(&other).await.unwrap(), None);
    assert!(store.blob(&sha).await.unwrap().is_some());
}

#[tokio::test]
async fn memory_store_records_blobs_and_events() {
    exercise(&ArtifactStore::memory()).await;
}

#[tokio::test]
async fn local_store_records_blobs_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(".kiln", tmp.path()).unwrap();
    exercise(&store).await;
    // The layout on disk is the documented one.
    let sha = sha256_hex(b"substrait plan bytes");
    assert!(tmp.path().join(".kiln/blobs").join(&sha[..2]).join(&sha).is_file());
    assert!(tmp.path().join(".kiln/runs/r1/events.jsonl").is_file());
    assert!(!tmp.path().join(".kiln/runs/r1/events").exists(), "parts are removed once joined");
    assert!(tmp.path().join(".kiln/runs/r2/events/00000000.jsonl").is_file(), "an unfinished run keeps its parts");
}

#[tokio::test]
async fn a_blob_whose_bytes_changed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(".kiln", tmp.path()).unwrap();
    let sha = store.put_blob(b"original").await.unwrap();
    std::fs::write(tmp.path().join(".kiln/blobs").join(&sha[..2]).join(&sha), b"tampered").unwrap();
    let e = store.blob(&sha).await.unwrap_err().to_string();
    assert!(e.contains("does not match its sha256"), "{e}");
}

#[test]
fn caches_are_local_files_and_absent_in_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(".kiln", tmp.path()).unwrap();
    let mut cache = store.parse_cache();
    assert!(cache.files.is_empty());
    cache.files.insert("fp".into(), Vec::new());
    store.put_parse_cache(&cache).unwrap();
    assert!(tmp.path().join(".kiln/cache/parse.json").is_file());
    assert_eq!(store.parse_cache().files.len(), 1);
    // Corrupt: empty again, never an error.
    std::fs::write(tmp.path().join(".kiln/cache/parse.json"), b"{not json").unwrap();
    assert!(store.parse_cache().files.is_empty());

    let memory = ArtifactStore::memory();
    memory.put_parse_cache(&cache).unwrap();
    assert!(memory.parse_cache().files.is_empty());
}

#[test]
fn unknown_store_schemes_are_named() {
    let here = std::path::Path::new(".");
    if !cfg!(feature = "s3") {
        let e = ArtifactStore::open("s3://bucket/kiln", here).unwrap_err().to_string();
        assert_eq!(
            e,
            "artifact store `s3://bucket/kiln`: the `s3://` store needs kiln built with the `s3` cargo feature"
        );
    }
    let e = ArtifactStore::open("ftp://host/kiln", here).unwrap_err().to_string();
    assert_eq!(
        e,
        "artifact store `ftp://host/kiln`: unknown store `ftp://` (supported: a path, file://, memory://, s3://, gs://, az://)"
    );
}
