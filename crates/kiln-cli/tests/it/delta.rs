//! Products as Delta Lake tables, read by engines that are not Kiln: the Python
//! `deltalake` package and Polars (from PyPI, in a virtualenv under the target directory)
//! must see exactly the rows of the files Kiln's committed record lists, at exactly the
//! version Kiln committed, through rebuilds, a rollback, a gc, kills and concurrent
//! builds.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{committed, kiln};

/// The python of a virtualenv holding deltalake, polars and pyarrow.
fn delta_python() -> PathBuf {
    crate::venv("delta-venv", &["deltalake", "polars", "pyarrow"], "import deltalake, polars, pyarrow")
}

const READERS: &str = include_str!("delta_readers.py");

/// What every Delta reader saw of `datasets` in `dir`'s warehouse, checked against Kiln's
/// committed records: panics with every mismatch.
fn assert_readers_agree(dir: &Path, datasets: &[&str], when: &str) -> serde_json::Value {
    let report = read_with_peers(dir, datasets, when);
    let problems: Vec<String> = report
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(name, r)| {
            r["mismatches"].as_array().unwrap().iter().map(move |m| format!("{name}: {}", m.as_str().unwrap()))
        })
        .collect();
    assert!(problems.is_empty(), "{when}:\n{}", problems.join("\n"));
    report
}

/// What the Delta readers saw of `datasets`, and how it compares with Kiln's records read
/// just before (which a running build may since have superseded).
fn read_with_peers(dir: &Path, datasets: &[&str], when: &str) -> serde_json::Value {
    let warehouse = dir.join("warehouse").canonicalize().unwrap();
    // Where a file is on disk: its object path (Kiln's paths are escaped once more by
    // object_store).
    let store = ::kiln::data::Warehouse::local(&warehouse).unwrap();
    let on_disk = |path: &str| format!("/{}", store.path(path));
    let mut specs = serde_json::Map::new();
    for name in datasets {
        let manifest = committed(dir, name).unwrap_or_else(|| panic!("{when}: `{name}` has no committed build"));
        let files: Vec<serde_json::Value> = manifest
            .files
            .iter()
            .map(|f| {
                let partition: serde_json::Map<String, serde_json::Value> = manifest
                    .partition_by
                    .iter()
                    .zip(&f.partition)
                    .map(|(c, v)| (c.clone(), v.clone().map_or(serde_json::Value::Null, serde_json::Value::String)))
                    .collect();
                serde_json::json!({
                    "path": on_disk(&f.path),
                    "partition": partition,
                })
            })
            .collect();
        specs.insert(
            (*name).to_owned(),
            serde_json::json!({
                "table": warehouse.join(name).to_string_lossy(),
                "version": manifest.version,
                "files": files,
            }),
        );
    }
    let out = Command::new(delta_python())
        .args(["-c", READERS, &serde_json::Value::Object(specs).to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{when}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Kiln's own count of `product`'s rows.
fn kiln_count(dir: &Path, product: &str) -> u64 {
    let (code, out, err) = kiln(&["query", &format!("SELECT count(*) AS n FROM {product}"), "--format", "csv"], dir);
    assert_eq!(code, 0, "{err}");
    out.lines().nth(1).unwrap().parse().unwrap()
}

const PRODUCTS: [&str; 6] = [
    "customer_clean",
    "customer_order_summary",
    "revenue_by_nation_year",
    "segment_value",
    "orders_nested",
    "order_items",
];
const STREAMED: [&str; 5] =
    ["revenue_per_minute", "revenue_per_minute__late", "active_customers", "large_orders", "order_events__rejected"];

/// The ```python block of README.md's "Reading products", as written.
fn readme_python() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = &readme[readme.find("## Reading products").unwrap()..];
    let block = &section[section.find("```python\n").unwrap() + "```python\n".len()..];
    block[..block.find("```").unwrap()].to_owned()
}

#[test]
fn delta_readers_read_every_example_product_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    crate::example::small_example(&dir, tmp.path());
    let clean = dir.join("staging/customer_clean.sql");
    let original = std::fs::read_to_string(&clean).unwrap();
    // Three builds, each changing what customer_clean (and everything downstream) holds.
    for (k, filter) in ["", "WHERE c_acctbal > 0", "WHERE c_acctbal > 5000"].iter().enumerate() {
        std::fs::write(&clean, original.replace("FROM customer;", &format!("FROM customer {filter};"))).unwrap();
        let (code, out, err) = kiln(&["build", "."], &dir);
        assert_eq!(code, 0, "build {k}: {out}{err}");
    }
    // The streams and their views, rejects (the example's data has one), and a late event
    // (one for a window the first run closed), in two runs.
    let late = "{\"order_id\": 900, \"customer_id\": 7, \"status\": \"shipped\", \"amount\": 10.5, \"event_time\": \"2026-11-20T12:00:01Z\"}\n";
    let example = std::fs::read_to_string(dir.join("streams/order_events.ndjson")).unwrap();
    for input in [example.as_str(), late] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["produce", "order_events"])
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
        let (code, out, err) = kiln(&["stream", "--until-idle"], &dir);
        assert_eq!(code, 0, "{out}{err}");
    }

    let all: Vec<&str> = PRODUCTS.iter().chain(&STREAMED).copied().collect();
    let report = assert_readers_agree(&dir, &all, "after three builds");
    // README.md's Python, run as written from the project's parent directory.
    let out = Command::new(delta_python()).args(["-c", &readme_python()]).current_dir(tmp.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let first = printed.lines().next().unwrap();
    assert_eq!(first, format!("2 {}", kiln_count(&dir, "customer_clean")), "{printed}");
    assert!(printed.contains("AMERICA") && printed.contains("revenue"), "{printed}");
    for name in &all {
        assert_eq!(report[name]["deltalake_rows"].as_u64().unwrap(), kiln_count(&dir, name), "{name}");
    }
    assert_eq!(report["customer_clean"]["version"], 2, "three builds, three versions");
    assert_eq!(report["revenue_by_nation_year"]["partition_columns"], serde_json::json!(["region"]));
    let rows = |r: &serde_json::Value, name: &str| r[name]["deltalake_rows"].as_u64().unwrap();
    for name in &all {
        assert!(rows(&report, name) > 0, "{name} is empty: the test would prove little");
    }

    // Rollback: the build before (filter `> 0`) is what every reader sees, as a new version.
    let (code, out, err) = kiln(&["rollback", "customer_clean", "--json"], &dir);
    assert_eq!(code, 0, "{out}{err}");
    let rolled: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((rolled["from_version"].as_u64(), rolled["to_version"].as_u64()), (Some(2), Some(1)), "{out}");
    assert_eq!(rolled["version"], 3, "{out}");
    let after = assert_readers_agree(&dir, &all, "after a rollback");
    assert!(rows(&after, "customer_clean") > rows(&report, "customer_clean"), "the wider filter is back");

    // Gc keeps the current versions whole (the superseded builds' files go).
    let (code, out, err) = kiln(&["gc", "--json"], &dir);
    assert_eq!(code, 0, "{out}{err}");
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(gc["files"].as_u64().unwrap() > 0, "{out}");
    let after_gc = assert_readers_agree(&dir, &all, "after gc");
    for name in &all {
        assert_eq!(after_gc[name]["deltalake_rows"], after[name]["deltalake_rows"], "{name}");
    }
}

/// A project of two products over a CSV of `rows` rows (`b = a * k`): `p` in many small
/// files, `q` partitioned by `g`.
fn write_project(dir: &Path, rows: usize, k: u64) {
    let data: String = (0..rows).map(|a| format!("{a},{},{}\n", a as u64 * k, a % 5)).collect();
    crate::write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"delta\"\n"),
            ("data/t.csv", &format!("a,b,g\n{data}")),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b BIGINT NOT NULL, g BIGINT NOT NULL)
                   WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT p WITH (max_rows_per_file = 2000) AS SELECT a, b, g FROM t;
                 CREATE PRODUCT q PARTITIONED BY (g) WITH (max_rows_per_file = 3000) AS SELECT a, b, g FROM t;\n",
            ),
        ],
    );
}

/// Kills (SIGKILL) builds at 30 pseudo-random moments, and reads while builds run: every
/// Delta reader sees exactly one committed version, the one Kiln's record says is
/// current, whole (its content is a complete build's), never a mix.
#[test]
fn killed_and_running_builds_never_show_a_partial_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rows = 40_000;
    // The content of each input's complete build.
    let mut complete = std::collections::BTreeMap::new();
    for k in [1, 2] {
        write_project(dir, rows, k);
        let (code, out, err) = kiln(&["build", "."], dir);
        assert_eq!(code, 0, "{out}{err}");
        let report = assert_readers_agree(dir, &["p", "q"], "a complete build");
        complete.insert(k, (report["p"]["digest"].clone(), report["q"]["digest"].clone()));
    }
    // How long a build takes here, to spread the kills over it.
    write_project(dir, rows, 1);
    let started = std::time::Instant::now();
    assert_eq!(kiln(&["build", "."], dir).0, 0);
    let span = started.elapsed().as_millis() as u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut k = 1;
    for i in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        k = 3 - k;
        write_project(dir, rows, k);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "."])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = seed % (span + span / 4).max(1);
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let when = format!("kill {i} after {delay} ms of ~{span} ms");
        // Every fourth time, read while it still runs (the build may commit meanwhile:
        // each reader must still see one whole version).
        let during = (i % 4 == 0).then(|| read_with_peers(dir, &["p", "q"], &format!("{when}, running")));
        let _ = child.kill();
        child.wait().unwrap();
        for report in during.iter().chain([&assert_readers_agree(dir, &["p", "q"], &when)]) {
            for digest in ["digest", "polars_digest"] {
                let seen = (report["p"][digest].clone(), report["q"][digest].clone());
                assert!(
                    complete.values().any(|c| c.0 == seen.0) && complete.values().any(|c| c.1 == seen.1),
                    "{when}: a Delta reader ({digest}) saw content no complete build has"
                );
            }
        }
    }
    // And the next build finishes the job.
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    let report = assert_readers_agree(dir, &["p", "q"], "after the kills");
    assert_eq!((report["p"]["digest"].clone(), report["q"]["digest"].clone()), complete[&k]);
}

/// Two `kiln build`s of one project at once: they never both commit a version. The
/// writer lock (kiln::lock) makes the second wait for the first, which then finds the
/// products fresh; should two writers still race (two machines on one remote warehouse,
/// not excluded by a local lock), the loser fails clearly with nothing of it visible.
/// Either way the table's log is one version per committed build.
#[test]
fn concurrent_builds_never_both_commit_a_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_project(dir, 20_000, 1);
    assert_eq!(kiln(&["build", "."], dir).0, 0);
    let mut lost = 0;
    let mut commits = 1;
    for round in 0..4 {
        write_project(dir, 20_000, 2 + round);
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", "."])
                .current_dir(dir)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        for out in &outs {
            let err = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            commits += stdout.lines().filter(|l| l.starts_with("p ") && l.contains(" built ")).count();
            match out.status.code() {
                Some(0) => {}
                Some(1) => {
                    assert!(err.contains("another run committed version"), "round {round}: {err}");
                    lost += 1;
                }
                other => panic!("round {round}: exit {other:?}: {err}"),
            }
        }
        // Each product was committed by one of them: its rows are this round's.
        let k = 2 + round;
        let expected = (0..20_000u64).sum::<u64>() * k;
        for product in ["p", "q"] {
            let sql = format!("SELECT sum(b) AS s FROM {product}");
            let (code, out, err) = kiln(&["query", &sql, "--format", "csv"], dir);
            assert_eq!((code, out), (0, format!("s\n{expected}\n")), "round {round}, {product}: {err}");
        }
        assert_readers_agree(dir, &["p", "q"], &format!("round {round}"));
    }
    // Each version of `p` is one build's commit: never two for one version.
    let log = dir.join("warehouse/p/_delta_log");
    let mut versions: Vec<u64> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".json")?.parse().ok())
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (0..versions.len() as u64).collect::<Vec<_>>());
    assert!(versions.len() >= 5, "a version per round at least: {versions:?}");
    assert_eq!(versions.len(), commits, "every version is one reported build of `p`");
    eprintln!("{lost} of 8 builds lost a race");
}

const PRUNING: &str = r#"
import json, os, sys, urllib.parse
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
out = {}
spec = json.loads(sys.argv[1])
for name, table in spec.items():
    dt = DeltaTable(table)
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    out[name] = {
        "partitions": sorted(
            [urllib.parse.unquote(a["path"]), {k[len("partition."):]: v for k, v in a.items() if k.startswith("partition.")}]
            for a in actions
        ),
        "rows": dt.to_pyarrow_table().num_rows,
    }
q = DeltaTable(spec["q"])
out["q_g2_files"] = sorted(q.file_uris(file_pruning_predicate="g = 2"))
out["q_g2_rows"] = q.to_pyarrow_table(filters=[("g", "=", 2)]).num_rows
r = DeltaTable(spec["r"])
out["r_files_below_1000"] = sorted(r.file_uris(file_pruning_predicate="a < 1000"))
out["r_rows_below_1000"] = r.to_pyarrow_dataset().to_table(filter=ds.field("a") < 1000).num_rows
print(json.dumps(out, default=str), flush=True)
# The answer is out: deltalake's threads have been seen to abort the interpreter's
# shutdown ("terminate called without an active exception"), as in checks.rs.
os._exit(0)
"#;

/// Delta partition values are Kiln's (including values Hive escapes in directory names),
/// and readers prune: a partition filter lists only that partition's files, and a filter
/// on a sorted column skips files by their statistics.
#[test]
fn partition_values_and_statistics_prune_delta_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_project(dir, 10_000, 1);
    let names = ["plain", "a b", "x:y", "50%", "a/b", "é=1", ""];
    let text: String = (0..700).map(|i| format!("{i},{}\n", names[i % names.len()])).collect();
    crate::write_files(dir, &[("data2/s.csv", &format!("i,name\n{text}"))]);
    let models = std::fs::read_to_string(dir.join("models.sql")).unwrap()
        + "CREATE PRODUCT r ORDER BY (a) WITH (max_rows_per_file = 2000) AS SELECT a, b FROM t;
           CREATE SOURCE s (i BIGINT NOT NULL, name VARCHAR) WITH (connector = 'files', path = 'data2/', format = 'csv');
           CREATE PRODUCT by_name PARTITIONED BY (name) AS SELECT i, name FROM s;\n";
    std::fs::write(dir.join("models.sql"), models).unwrap();
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_readers_agree(dir, &["p", "q", "r", "by_name"], "partitioned and sorted products");

    let warehouse = dir.join("warehouse").canonicalize().unwrap();
    let tables: serde_json::Map<String, serde_json::Value> = ["q", "r", "by_name"]
        .iter()
        .map(|n| ((*n).to_owned(), warehouse.join(n).to_string_lossy().into_owned().into()))
        .collect();
    let out = Command::new(delta_python())
        .args(["-c", PRUNING, &serde_json::Value::Object(tables).to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Partition values: the Delta log's equal Kiln's record, file by file.
    for name in ["q", "by_name"] {
        let manifest = committed(dir, name).unwrap();
        let mut expected: Vec<serde_json::Value> = manifest
            .files
            .iter()
            .map(|f| {
                let path = f.path.strip_prefix(&format!("{name}/")).unwrap();
                let values: serde_json::Map<String, serde_json::Value> = manifest
                    .partition_by
                    .iter()
                    .zip(&f.partition)
                    .map(|(c, v)| {
                        // deltalake reads partition values typed by the table's schema.
                        let v = match (c.as_str(), v) {
                            ("g", Some(v)) => serde_json::Value::from(v.parse::<i64>().unwrap()),
                            (_, Some(v)) => serde_json::Value::from(v.as_str()),
                            (_, None) => serde_json::Value::Null,
                        };
                        (c.clone(), v)
                    })
                    .collect();
                serde_json::json!([path, values])
            })
            .collect();
        expected.sort_by_key(|v| v.to_string());
        let mut got = seen[name]["partitions"].as_array().unwrap().clone();
        got.sort_by_key(|v| v.to_string());
        assert_eq!(got, expected, "{name}");
    }
    // The empty string is NULL in a Hive partition (CSV reads it as NULL too); every
    // other name is its own partition, its value intact.
    let by_name = committed(dir, "by_name").unwrap();
    let values: std::collections::BTreeSet<Option<String>> =
        by_name.files.iter().map(|f| f.partition[0].clone()).collect();
    assert_eq!(values.len(), names.len(), "{values:?}");
    assert_eq!(seen["by_name"]["rows"], 700);

    // A partition filter lists exactly that partition's files.
    let q = committed(dir, "q").unwrap();
    let mut g2: Vec<String> = q
        .files
        .iter()
        .filter(|f| f.partition[0].as_deref() == Some("2"))
        .map(|f| warehouse.join(&f.path).to_string_lossy().into_owned())
        .collect();
    // (`g` values need no escaping: object path and Kiln path agree.)
    g2.sort();
    let listed: Vec<String> = seen["q_g2_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().trim_start_matches("file://").to_owned())
        .collect();
    assert!(!g2.is_empty() && g2.len() < q.files.len());
    assert_eq!(listed, g2);
    assert_eq!(seen["q_g2_rows"], 2_000);
    // Statistics: of r's files (sorted by a, 2,000 rows each), only the first holds a < 1000.
    let r = committed(dir, "r").unwrap();
    assert!(r.files.len() >= 5, "{}", r.files.len());
    let fragments = seen["r_files_below_1000"].as_array().unwrap();
    assert_eq!(fragments.len(), 1, "{fragments:?}");
    assert!(fragments[0].as_str().unwrap().ends_with(r.files[0].path.rsplit('/').next().unwrap()), "{fragments:?}");
    assert_eq!(seen["r_rows_below_1000"], 1_000);
}

/// Columns are stored as Delta types that hold every value exactly (unsigned integers
/// widened, nanosecond timestamps as whole microseconds), read back by Kiln as their own
/// types; what Delta cannot hold is refused at compile time with the fix, and a value
/// that would be altered fails the build.
#[test]
fn columns_are_stored_exactly_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rows: String = (1..=50).map(|a| format!("{a},s{a}\n")).collect();
    let models =
        "CREATE SOURCE t (a BIGINT NOT NULL, s VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');
        CREATE PRODUCT kinds AS SELECT a, row_number() OVER (ORDER BY a) AS rn, arrow_cast(a, 'UInt8') AS small,
          arrow_cast(a * 1000, 'Timestamp(Nanosecond, None)') AS ts,
          arrow_cast(a * 1000, 'Timestamp(Nanosecond, Some(\"+01:00\"))') AS zoned FROM t;
        CREATE PRODUCT downstream AS SELECT sum(rn) AS rn, max(small) AS small, max(ts) AS ts FROM kinds;\n";
    crate::write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"kinds\"\n"),
            ("data/t.csv", &format!("a,s\n{rows}")),
            ("models.sql", models),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_readers_agree(dir, &["kinds", "downstream"], "stored types");
    // Kiln reads its own types back: sums and the largest timestamp as written.
    let (code, out, err) = kiln(
        &[
            "query",
            "SELECT rn, small, arrow_typeof(small) AS t, CAST(ts AS BIGINT) AS ts FROM downstream",
            "--format",
            "csv",
        ],
        dir,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "rn,small,t,ts\n1275,50,UInt8,50000\n");
    let kinds = committed(dir, "kinds").unwrap();
    let out = Command::new(delta_python())
        .args([
            "-c",
            "import sys; from deltalake import DeltaTable; print(DeltaTable(sys.argv[1]).schema().to_arrow())",
            &dir.join("warehouse/kinds").to_string_lossy(),
        ])
        .output()
        .unwrap();
    let schema = String::from_utf8_lossy(&out.stdout);
    for expected in ["rn: Int64", "small: Int16", "ts: Timestamp(µs)", "zoned: Timestamp(µs, \"UTC\")"] {
        assert!(schema.contains(expected), "missing {expected} in {schema}");
    }
    assert_eq!(kinds.totals.rows_written, 50);

    // A value Delta would have to round fails the build, naming the column.
    let lossy =
        "CREATE PRODUCT lossy AS SELECT arrow_cast(a * 1000 + 1, 'Timestamp(Nanosecond, None)') AS ts FROM t;\n";
    std::fs::write(dir.join("lossy.sql"), lossy).unwrap();
    let (code, _, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("product `lossy`: column `ts`") && err.contains("fraction of a microsecond"), "{err}");
    assert!(committed(dir, "lossy").is_none());
    std::fs::remove_file(dir.join("lossy.sql")).unwrap();

    // Types and names Delta cannot hold: compile errors with the fix.
    for (query, expected) in [
        ("SELECT arrow_cast(a, 'Time64(Microsecond)') AS t FROM t", "Delta has no TIME type; CAST it to VARCHAR"),
        ("SELECT a AS \"a b\" FROM t", "its name contains ' ', which Delta reserves"),
        ("SELECT NULL AS n FROM t", "CAST(NULL AS <type>)"),
    ] {
        std::fs::write(dir.join("bad.sql"), format!("CREATE PRODUCT bad AS {query};\n")).unwrap();
        let (code, _, err) = kiln(&["build", "."], dir);
        assert_eq!(code, 1, "{query}: {err}");
        assert!(err.contains("bad.sql:1:") && err.contains(expected), "{query}: {err}");
    }
}

/// A view appends a file per checkpoint: with `compact_after` its run compacts them as
/// it goes; `kiln optimize` compacts another's. Each compaction is one commit that changes
/// no rows (every reader sees the same content before and after, and the version before
/// stays readable), the build keeps its id, and the stream continues from it.
#[test]
fn compaction_rewrites_small_files_without_changing_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    crate::write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"compaction\"\n"),
            (
                "stream.sql",
                "CREATE STREAM events (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT)
                   WITH (connector = 'log', topic = 'events');
                 CREATE MATERIALIZED VIEW auto WITH (compact_after = 4) AS SELECT user_id, amount, ts FROM events;
                 CREATE MATERIALIZED VIEW manual AS SELECT user_id, amount FROM events WHERE amount > 10;\n",
            ),
        ],
    );
    let produce = |from: usize| {
        let text: String = (from..from + 50)
            .map(|i| {
                format!("{{\"ts\": \"2026-01-01T00:00:{:02}Z\", \"user_id\": {}, \"amount\": {}}}\n", i % 60, i % 7, i)
            })
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["produce", "events"])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    };
    let mut most = 0;
    for round in 0..10 {
        produce(round * 50);
        let (code, out, err) = kiln(&["stream", "--until-idle"], dir);
        assert_eq!(code, 0, "{out}{err}");
        most = most.max(committed(dir, "auto").unwrap().files.len());
    }
    let auto = committed(dir, "auto").unwrap();
    assert!(most <= 4, "compact_after = 4 keeps `auto` at 4 files at most, saw {most}");
    assert_eq!(auto.totals.rows_written, 500);
    let manual = committed(dir, "manual").unwrap();
    assert_eq!(manual.files.len(), 10, "one file per checkpoint without compaction");
    let before = assert_readers_agree(dir, &["auto", "manual"], "before optimize");

    let (code, out, err) = kiln(&["optimize", "manual", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["datasets"][0]["files_before"], 10, "{out}");
    assert_eq!(report["datasets"][0]["version"], manual.version.unwrap() + 1, "{out}");
    let after = assert_readers_agree(dir, &["auto", "manual"], "after optimize");
    assert_eq!(after["manual"]["digest"], before["manual"]["digest"], "optimize changes no rows");
    let optimized = committed(dir, "manual").unwrap();
    assert!(optimized.files.len() < 10, "{}", optimized.files.len());
    assert_eq!(optimized.build_id, manual.build_id, "same content, same build");
    // The version before is still readable (time travel), with the same rows.
    let table = dir.join("warehouse/manual").canonicalize().unwrap();
    let script = "import sys; from deltalake import DeltaTable
dt = DeltaTable(sys.argv[1], version=int(sys.argv[2]))
print(dt.to_pyarrow_table().num_rows, DeltaTable(sys.argv[1]).history(1)[0]['operation'])";
    let out = Command::new(delta_python())
        .args(["-c", script, &table.to_string_lossy(), &manual.version.unwrap().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} OPTIMIZE", manual.totals.rows_written),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The stream continues from the compacted versions, and nothing rebuilt downstream.
    produce(500);
    let (code, out, err) = kiln(&["stream", "--until-idle"], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(committed(dir, "auto").unwrap().totals.rows_written, 550);
    assert_readers_agree(dir, &["auto", "manual"], "after more checkpoints");
}

/// Rewrites `product`'s table in `dir` into the warehouse layout from before Delta
/// tables: `builds/<run>/_manifest.json`, `_current.json`, object names escaped once more
/// (`k=a%3Ab` stored as `k=a%253Ab`), no `_delta_log`.
fn to_old_layout(dir: &Path, product: &str) {
    let manifest = committed(dir, product).unwrap();
    let warehouse = dir.join("warehouse");
    let mut old = serde_json::to_value(&manifest).unwrap();
    old.as_object_mut().unwrap().remove("version");
    for file in &manifest.files {
        let escaped = file.path.replace('%', "%25");
        if escaped != file.path {
            let to = warehouse.join(&escaped);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::rename(warehouse.join(&file.path), to).unwrap();
        }
    }
    let manifest_path = format!("{}/_manifest.json", manifest.build_dir);
    std::fs::write(warehouse.join(&manifest_path), serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    let pointer = serde_json::json!({"format_version": 1, "product": product, "build_id": manifest.build_id,
                                     "run_id": manifest.run_id, "manifest": manifest_path});
    std::fs::write(warehouse.join(product).join("_current.json"), pointer.to_string()).unwrap();
    std::fs::remove_dir_all(warehouse.join(product).join("_delta_log")).unwrap();
}

/// A warehouse in the pre-Delta layout: readers refuse it naming the fix; `kiln build`
/// converts each product into a Delta table over the same files, with the same build
/// ids (nothing rebuilds), and every Delta reader then reads it exactly.
#[test]
fn old_layout_warehouses_are_converted_by_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let names = ["x:y", "50%", "plain"];
    let text: String = (0..300).map(|i| format!("{i},{}\n", names[i % names.len()])).collect();
    crate::write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"old\"\n"),
            ("data/s.csv", &format!("i,name\n{text}")),
            (
                "models.sql",
                "CREATE SOURCE s (i BIGINT NOT NULL, name VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT by_name PARTITIONED BY (name) AS SELECT i, name FROM s;
                 CREATE PRODUCT totals ORDER BY (name) AS SELECT name, count(*) AS n, sum(i) AS s FROM by_name GROUP BY name;\n",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    let before: Vec<_> = ["by_name", "totals"].iter().map(|p| committed(dir, p).unwrap().build_id).collect();
    let expected = kiln(&["query", "SELECT * FROM totals ORDER BY name", "--format", "csv"], dir).1;
    to_old_layout(dir, "by_name");
    to_old_layout(dir, "totals");

    let (code, _, err) = kiln(&["query", "SELECT * FROM totals", "--format", "csv"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pre-Delta layout") && err.contains("`kiln build` converts it"), "{err}");

    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 built, 2 fresh"), "converted, not rebuilt: {out}");
    let after: Vec<_> = ["by_name", "totals"].iter().map(|p| committed(dir, p).unwrap().build_id).collect();
    assert_eq!(after, before);
    assert!(!dir.join("warehouse/totals/_current.json").exists());
    assert_eq!(kiln(&["query", "SELECT * FROM totals ORDER BY name", "--format", "csv"], dir).1, expected);
    let report = assert_readers_agree(dir, &["by_name", "totals"], "after conversion");
    assert_eq!(report["by_name"]["version"], 0);
    assert_eq!(report["by_name"]["deltalake_rows"], 300);
}
