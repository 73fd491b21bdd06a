//! Runtime profiles: classification, runtime_fp, and build ids that do not depend on the
//! machine's parallelism or memory.

use std::collections::BTreeMap;

use kiln_control::RuntimeProfile;
use kiln_control::profile::{KeyClass, classify};

use crate::Tpch;

fn fp(profile: &str, settings: &[(&str, &str)]) -> String {
    let settings: Vec<(String, String)> = settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    RuntimeProfile::resolve(profile, &BTreeMap::new(), &settings).unwrap().runtime_fp().unwrap()
}

#[test]
fn performance_settings_stay_out_of_runtime_fp() {
    let base = fp("prod_fast", &[]);
    for (k, v) in [
        ("datafusion.execution.target_partitions", "64"),
        ("datafusion.execution.target_partitions", "1"),
        ("datafusion.execution.batch_size", "1024"),
        ("kiln.memory_limit", "1GiB"),
        ("kiln.memory_pool", "fair"),
        ("kiln.spill_dir", "/tmp"),
        ("datafusion.execution.parquet.pushdown_filters", "true"),
        ("datafusion.optimizer.prefer_hash_join", "false"),
    ] {
        assert_eq!(fp("prod_fast", &[(k, v)]), base, "{k} = {v} changed runtime_fp");
    }
    // Profiles that differ only in performance settings agree.
    assert_eq!(fp("dev", &[]), base);
    assert_eq!(fp("memory_limited", &[]), base);
    assert_eq!(fp("prod_safe", &[]), base);
}

#[test]
fn semantic_settings_change_runtime_fp() {
    let base = fp("prod_fast", &[]);
    for (k, v) in [
        ("datafusion.execution.time_zone", "+02:00"),
        ("datafusion.sql_parser.enable_ident_normalization", "false"),
        ("datafusion.execution.parquet.compression", "snappy"),
        ("datafusion.execution.parquet.max_row_group_size", "1000"),
        ("datafusion.optimizer.expand_views_at_output", "true"),
    ] {
        assert_ne!(fp("prod_fast", &[(k, v)]), base, "{k} = {v} did not change runtime_fp");
    }
}

#[test]
fn classification_is_explicit_and_unknown_keys_are_semantic() {
    assert_eq!(classify("datafusion.execution.target_partitions"), KeyClass::Performance);
    assert_eq!(classify("datafusion.execution.batch_size"), KeyClass::Performance);
    assert_eq!(classify("kiln.memory_limit"), KeyClass::Performance);
    assert_eq!(classify("datafusion.execution.time_zone"), KeyClass::Semantic);
    assert_eq!(classify("datafusion.some_future_key"), KeyClass::Semantic);
}

#[test]
fn effective_settings_record_both_classes() {
    let settings = vec![("datafusion.execution.batch_size".to_owned(), "1234".to_owned())];
    let profile = RuntimeProfile::resolve("prod_fast", &BTreeMap::new(), &settings).unwrap();
    let effective = profile.effective().unwrap();
    assert_eq!(effective.performance["datafusion.execution.batch_size"], "1234");
    assert_eq!(effective.performance["kiln.memory_pool"], "greedy");
    assert_eq!(effective.semantic["datafusion.execution.parquet.compression"], "zstd(3)");
    assert!(!effective.semantic.contains_key("datafusion.execution.target_partitions"));
}

/// The default profile is memory-bounded: `auto` is half the machine's memory (this
/// machine's MemTotal read independently here), `none` lifts the bound, bytes set it.
#[test]
fn the_default_memory_limit_is_half_the_machine() {
    let limit = |settings: &[(&str, &str)]| {
        let settings: Vec<(String, String)> =
            settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        RuntimeProfile::resolve("prod_fast", &BTreeMap::new(), &settings).unwrap().memory_limit().unwrap()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let auto = limit(&[]).expect("prod_fast has a memory limit") as u64;
    assert!(auto <= total_kb * 1024 / 2 && auto > 0, "{auto} vs MemTotal {total_kb} kB");
    assert_eq!(limit(&[("kiln.memory_limit", "none")]), None);
    assert_eq!(limit(&[("kiln.memory_limit", "512MiB")]), Some(512 << 20));
    let profile = RuntimeProfile::resolve("prod_fast", &BTreeMap::new(), &[]).unwrap();
    assert_eq!(profile.effective().unwrap().performance["kiln.memory_limit"], "auto");
}

#[test]
fn bad_settings_name_the_key() {
    for (k, v, needle) in [
        ("datafusion.execution.batch_sise", "1", "batch_sise"),
        ("datafusion.execution.batch_size", "many", "batch_size"),
        ("kiln.memory_limt", "1GiB", "kiln.memory_limt"),
        ("kiln.memory_limit", "lots", "kiln.memory_limit"),
        // Parquet's parser panicked on this one.
        ("datafusion.execution.parquet.compression", "zstd(3)ß", "expected a Parquet codec"),
    ] {
        let e = RuntimeProfile::resolve("prod_fast", &BTreeMap::new(), &[(k.to_owned(), v.to_owned())]).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}

/// The same project compiles to the same query fingerprints and runtime_fp on a "2-core"
/// and a "64-core" session with different batch sizes and memory limits.
#[tokio::test]
async fn build_identity_does_not_depend_on_parallelism_or_memory() {
    let small = [
        ("datafusion.execution.target_partitions", "2"),
        ("datafusion.execution.batch_size", "1024"),
        ("kiln.memory_limit", "512MiB"),
    ];
    let large = [
        ("datafusion.execution.target_partitions", "64"),
        ("datafusion.execution.batch_size", "65536"),
        ("kiln.memory_limit", "256GiB"),
    ];
    let (mut a, mut b) = (Tpch::with_settings(&small), Tpch::with_settings(&large));
    assert_eq!(a.substrate.runtime_fp(), b.substrate.runtime_fp());
    for (name, q) in crate::tpch::ALL {
        let (pa, pb) = (a.compile(q).await.unwrap(), b.compile(q).await.unwrap());
        assert_eq!(pa.query_fp, pb.query_fp, "{name}");
        assert_eq!(pa.schema_fp, pb.schema_fp, "{name}");
        assert_eq!(pa.func_fp, pb.func_fp, "{name}");
    }
}
