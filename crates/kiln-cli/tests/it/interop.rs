//! Peers read what Kiln writes: PyArrow and DuckDB (installed from PyPI into a virtualenv
//! under the target directory by this harness) open every committed dataset from its
//! manifest's file list and must agree with Kiln on rows, columns, NULL counts and sums.

use std::path::PathBuf;
use std::process::Command;

use crate::kiln;

/// The python of a virtualenv holding pyarrow and duckdb: `KILN_PEERS_PYTHON` when set,
/// else one made (once) under the target directory.
fn peers_python() -> PathBuf {
    if let Some(python) = std::env::var_os("KILN_PEERS_PYTHON") {
        return PathBuf::from(python);
    }
    crate::venv("peers-venv", &["pyarrow", "duckdb"], "import pyarrow, duckdb")
}

const READ: &str = r#"
import json, sys
import duckdb, pyarrow.parquet as pq
out = {}
for product, files in json.loads(sys.argv[1]).items():
    table = pq.read_table(files)
    con = duckdb.connect()
    listed = "[" + ", ".join("'" + f + "'" for f in files) + "]"
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet({listed})").fetchall()]
    nulls = {c: con.execute(f'SELECT count(*) - count("{c}") FROM read_parquet({listed})').fetchone()[0] for c in cols}
    out[product] = {
        "pyarrow_rows": table.num_rows,
        "pyarrow_columns": table.column_names,
        "pyarrow_nulls": {c: table.column(c).null_count for c in table.column_names},
        "pyarrow_sum_a": int(sum(v for v in table.column("a").to_pylist() if v is not None)),
        "duckdb_rows": con.execute(f"SELECT count(*) FROM read_parquet({listed})").fetchone()[0],
        "duckdb_columns": cols,
        "duckdb_nulls": nulls,
        "duckdb_sum_a": int(con.execute(f"SELECT coalesce(sum(a), 0) FROM read_parquet({listed})").fetchone()[0]),
    }
print(json.dumps(out))
"#;

#[test]
fn pyarrow_and_duckdb_read_kiln_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..3000)
        .map(|i| {
            let s = if i % 10 == 0 { String::new() } else { format!("s{}", i % 13) };
            format!("{i},{},{s},{}.{:02},2024-01-{:02}\n", i % 5, i % 97, i % 100, 1 + i % 28)
        })
        .collect();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"interop\"\n"),
            ("data/t.csv", &format!("a,g,s,price,day\n{rows}")),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, g BIGINT, s VARCHAR, price DECIMAL(10, 2), day DATE)
                   WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT flat ORDER BY (a) WITH (max_rows_per_file = 700) AS
                   SELECT a, g, s, price, day, CAST(day AS TIMESTAMP) AS ts FROM t;
                 CREATE PRODUCT nested ORDER BY (a) AS
                   SELECT g AS a, array_agg(struct(s AS s, price AS price) ORDER BY a) AS items, count(*) AS n
                   FROM t GROUP BY g;
                 CREATE PRODUCT exploded ORDER BY (a, idx) AS
                   SELECT n.a, idx, item['s'] AS s FROM nested n CROSS JOIN UNNEST(n.items) WITH OFFSET AS i(item, idx);
                 CREATE PRODUCT by_group PARTITIONED BY (g, s) WITH (metadata_sidecars = 'true') AS SELECT a, g, s, price FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();

    // What Kiln says about each product: its manifest, and sums through `kiln query`.
    let mut files = serde_json::Map::new();
    let mut manifests = std::collections::BTreeMap::new();
    for p in summary["products"].as_array().unwrap() {
        let name = p["product"].as_str().unwrap().to_owned();
        if name == "by_group" {
            continue; // read as a Hive-partitioned directory below
        }
        let manifest = crate::current_manifest(tmp.path(), &name);
        files.insert(name.clone(), crate::manifest_files(tmp.path(), &manifest).into());
        manifests.insert(name, manifest);
    }
    assert_eq!(manifests["flat"]["files"].as_array().unwrap().len(), 5, "3000 rows in files of 700");

    let python = peers_python();
    let out = Command::new(&python).args(["-c", READ, &serde_json::Value::Object(files).to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    for (name, manifest) in &manifests {
        let peer = &peers[name];
        let rows = manifest["totals"]["rows_written"].as_u64().unwrap();
        assert_eq!(peer["pyarrow_rows"].as_u64(), Some(rows), "{name}");
        assert_eq!(peer["duckdb_rows"].as_u64(), Some(rows), "{name}");
        let (_, out, _) = kiln(&["query", &format!("SELECT * FROM {name} LIMIT 1"), "--format", "csv"], tmp.path());
        let columns: Vec<&str> = out.lines().next().unwrap_or_default().split(',').collect();
        assert_eq!(peer["pyarrow_columns"], serde_json::json!(columns), "{name}");
        assert_eq!(peer["duckdb_columns"], serde_json::json!(columns), "{name}");
        // NULL counts: the manifest's (from footers) = PyArrow's = DuckDB's.
        for c in &columns {
            let from_footers: u64 = manifest["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["columns"][c]["nulls"].as_u64().unwrap_or(0))
                .sum();
            if manifest["files"][0]["columns"].get(c).is_some() {
                assert_eq!(peer["pyarrow_nulls"][c].as_u64(), Some(from_footers), "{name}.{c}");
            }
            assert_eq!(peer["pyarrow_nulls"][c], peer["duckdb_nulls"][c], "{name}.{c}");
        }
        let (_, out, _) =
            kiln(&["query", &format!("SELECT coalesce(sum(a), 0) AS s FROM {name}"), "--format", "csv"], tmp.path());
        let sum: i64 = out.lines().nth(1).unwrap().parse().unwrap();
        assert_eq!(peer["pyarrow_sum_a"].as_i64(), Some(sum), "{name}");
        assert_eq!(peer["duckdb_sum_a"].as_i64(), Some(sum), "{name}");
    }
    // The partitioned product, read by each peer as a Hive-partitioned directory, and by
    // Kiln through its manifest.
    let manifest = crate::current_manifest(tmp.path(), "by_group");
    assert_eq!(manifest["partition_by"], serde_json::json!(["g", "s"]));
    // g = i % 5 and s = s{i % 13}, NULL when i % 10 == 0 (so only with g = 0): 5 * 13 + 1
    // keys, each its own directory.
    let keys: std::collections::BTreeSet<String> =
        manifest["files"].as_array().unwrap().iter().map(|f| f["partition"].to_string()).collect();
    assert_eq!(keys.len(), 66, "{keys:?}");
    assert!(keys.contains(r#"["0",null]"#), "{keys:?}");
    let build_dir = tmp.path().join("warehouse").join(manifest["build_dir"].as_str().unwrap());
    let hive = r#"
import json, sys
import duckdb, pyarrow.dataset as ds, pyarrow.parquet as pq
d = sys.argv[1]
t = ds.dataset(d, format="parquet", partitioning="hive").to_table()
con = duckdb.connect()
q = f"FROM read_parquet('{d}/**/*.parquet', hive_partitioning = true)"
meta = pq.read_metadata(f"{d}/_metadata")
via_meta = ds.parquet_dataset(f"{d}/_metadata", partitioning="hive").to_table()
print(json.dumps({
    "pyarrow": [t.num_rows, sum(t.column("a").to_pylist()), sum(t.column("g").to_pylist()), t.column("s").null_count],
    "duckdb": list(con.execute(f"SELECT count(*), sum(a), sum(CAST(g AS BIGINT)), count(*) - count(s) {q}").fetchone()),
    "metadata": [meta.num_rows, meta.num_row_groups, pq.read_schema(f"{d}/_common_metadata").names],
    "parquet_dataset": [via_meta.num_rows, sum(via_meta.column("a").to_pylist()), sum(via_meta.column("g").to_pylist())],
}))
"#;
    let out = Command::new(&python).args(["-c", hive, build_dir.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let peers_hive: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, out, err) = kiln(
        &["query", "SELECT count(*), sum(a), sum(g), count(*) - count(s) FROM by_group", "--format", "csv"],
        tmp.path(),
    );
    let kiln_side: Vec<i64> =
        out.lines().nth(1).unwrap_or_else(|| panic!("{err}")).split(',').map(|v| v.parse().unwrap()).collect();
    // Hand-computed: 3000 rows, sum(a) = 3000*2999/2, sum(g) = 600 * (0+1+2+3+4), 300 NULL s.
    assert_eq!(kiln_side, [3000, 3000 * 2999 / 2, 6000, 300]);
    assert_eq!(peers_hive["pyarrow"], serde_json::json!(kiln_side));
    assert_eq!(peers_hive["duckdb"], serde_json::json!(kiln_side));
    // The sidecars: `_metadata` lists every row group of the build's files (PyArrow opens
    // the dataset from it alone), `_common_metadata` the files' schema.
    let row_groups: u64 = manifest["files"].as_array().unwrap().iter().map(|f| f["row_groups"].as_u64().unwrap()).sum();
    assert_eq!(peers_hive["metadata"], serde_json::json!([3000, row_groups, ["a", "price"]]));
    assert_eq!(peers_hive["parquet_dataset"], serde_json::json!(kiln_side[..3]));
    let dir = manifest["build_dir"].as_str().unwrap();
    assert_eq!(
        manifest["sidecars"],
        serde_json::json!([format!("{dir}/_common_metadata"), format!("{dir}/_metadata")])
    );

    // Hand-computed: s is NULL for every tenth row of t (an empty CSV field), 300 of 3000.
    assert_eq!(peers["flat"]["pyarrow_nulls"]["s"], 300);
    assert_eq!(peers["flat"]["pyarrow_sum_a"], 3000 * 2999 / 2);
}

/// A Parquet source whose writer (PyArrow here) stored page checksums: a data page whose
/// bytes changed after writing fails the build with the file named, instead of being read
/// as wrong values. Without checksums the same change cannot be seen (the file builds).
#[test]
fn corrupted_parquet_pages_fail_when_the_file_has_checksums() {
    const WRITE: &str = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
values = pa.array([0x0102030405060708 + i for i in range(1000)], pa.int64())
for name, checksums in (("with", True), ("without", False)):
    pq.write_table(pa.table({"v": values}), f"{sys.argv[1]}/{name}/part.parquet", compression="none",
                   use_dictionary=False, write_statistics=False, write_page_checksum=checksums)
"#;
    let tmp = tempfile::tempdir().unwrap();
    let models = "CREATE SOURCE with_crc (v BIGINT) WITH (connector = 'files', path = 'data/with/', format = 'parquet');\n\
                  CREATE SOURCE without_crc (v BIGINT) WITH (connector = 'files', path = 'data/without/', format = 'parquet');\n\
                  CREATE PRODUCT checked AS SELECT sum(v) AS total FROM with_crc;\n\
                  CREATE PRODUCT unchecked AS SELECT sum(v) AS total FROM without_crc;\n";
    crate::write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"crc\"\n"), ("models.sql", models)]);
    for d in ["with", "without"] {
        std::fs::create_dir_all(tmp.path().join("data").join(d)).unwrap();
    }
    let out = Command::new(peers_python()).args(["-c", WRITE]).arg(tmp.path().join("data")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    // One byte of the 500th value changed, in both files.
    let target = (0x0102030405060708i64 + 500).to_le_bytes();
    for d in ["with", "without"] {
        let path = tmp.path().join("data").join(d).join("part.parquet");
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(8).position(|w| w == target).expect("the value is stored plain");
        bytes[at] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 1, "{out}{err}");
    let expected = "error: product `checked`: reading data/with/part.parquet: Arrow error: Parquet argument error: \
                    Parquet error: Page CRC checksum mismatch";
    assert!(err.contains(expected), "{err}");
    assert!(err.contains("unchecked: built: 1 rows"), "without checksums the change goes unseen: {err}");
}
