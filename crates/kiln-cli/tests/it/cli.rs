//! The command line itself: one way to name the project on every command, found upward
//! like cargo finds Cargo.toml, and no panic when stdout's reader goes away.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{kiln, write_files};

const PROJECT: [(&str, &str); 3] = [
    ("kiln.toml", "[project]\nname = \"cli\"\n"),
    ("data/t.csv", "a,b\n1,x\n2,y\n3,z\n"),
    (
        "models/m.sql",
        "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/t.csv', format = 'csv');\n\
         CREATE PRODUCT p (a BIGINT NOT NULL PRIMARY KEY, b VARCHAR) AS SELECT a, b FROM t;\n\
         CREATE PRODUCT q AS SELECT b, count(*) AS n FROM p GROUP BY b;\n",
    ),
];

/// Runs kiln with stdout a pipe whose reader is already closed: (exit code, stderr).
fn into_closed_pipe(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_command_survives_a_closed_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &PROJECT);
    assert_eq!(kiln(&["build"], dir).0, 0);
    let commands: &[&[&str]] = &[
        &["build"],
        &["build", "--json"],
        &["plan"],
        &["plan", "--json"],
        &["test"],
        &["test", "--json"],
        &["freshness"],
        &["lineage", "q.n"],
        &["lineage", "q.n", "--json"],
        &["diff", "q"],
        &["explain", "q"],
        &["explain", "q", "--analyze", "--json"],
        &["query", "SELECT * FROM p, p AS p2, p AS p3, p AS p4, p AS p5, p AS p6"],
        &["query", "SELECT * FROM p, p AS p2, p AS p3, p AS p4, p AS p5, p AS p6", "--format", "csv"],
        &["query", "SELECT * FROM p, p AS p2, p AS p3, p AS p4, p AS p5, p AS p6", "--format", "json"],
        &["functions"],
        &["functions", "--json"],
        &["optimize"],
        &["gc"],
        &["--help"],
    ];
    for args in commands {
        let (code, err) = into_closed_pipe(args, dir);
        assert!(!err.contains("panicked"), "kiln {args:?} panicked: {err}");
        // 141 when it wrote to the closed pipe, else its own code; never 101 (a panic).
        assert!(matches!(code, Some(0 | 141)), "kiln {args:?} exited {code:?}: {err}");
    }
}

#[test]
fn the_project_is_named_one_way_everywhere_and_found_upward() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    write_files(&dir, &PROJECT);
    let shop = dir.to_str().unwrap();
    // The positional DIR, -C and --project are the same.
    assert_eq!(kiln(&["build", shop], tmp.path()).0, 0);
    let (code, out, err) = kiln(&["build", "-C", shop], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 built, 2 fresh"), "{out}");
    for args in [
        vec!["plan", "--project", shop],
        vec!["lineage", "q.n", "-C", shop],
        vec!["query", "SELECT count(*) FROM p", "--project", shop],
        vec!["gc", "-C", shop],
        vec!["test", "-C", shop],
        vec!["freshness", "-C", shop],
    ] {
        let (code, _, err) = kiln(&args, tmp.path());
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    // A product reading another explains with its physical plan, no --analyze needed.
    let (code, out, err) = kiln(&["explain", "q", "-C", shop], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("DataSourceExec"), "{out}");
    // From a directory below the project, kiln.toml is found upward.
    let below = dir.join("models");
    let (code, out, err) = kiln(&["plan"], &below);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 to build, 2 fresh"), "{out}");
    let (code, out, _) = kiln(&["query", "SELECT sum(a) AS s FROM p", "--format", "csv"], &below);
    assert_eq!((code, out.as_str()), (0, "s\n6\n"));
    // Two different directories are a usage error; outside any project, the error says so.
    let (code, _, err) = kiln(&["plan", shop, "-C", "elsewhere"], tmp.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two project directories"), "{err}");
    let (code, _, err) = kiln(&["plan"], tmp.path());
    assert_eq!(code, 1);
    assert!(err.contains("no kiln.toml"), "{err}");
}

#[test]
fn sources_read_every_standard_extension_and_any_named_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"ext\"\n"),
            ("feed/a.json", "{\"n\": 1}\n"),
            ("feed/b.ndjson", "{\"n\": 2}\n{\"n\": 3}\n"),
            ("feed/c.jsonl", "{\"n\": 4}\n"),
            ("feed/notes.txt", "not data\n"),
            ("one/events.ndjson", "{\"n\": 10}\n{\"n\": 20}\n"),
            ("one/table.txt", "n\n7\n8\n9\n"),
            (
                "m.sql",
                "CREATE SOURCE feed (n BIGINT) WITH (connector = 'files', path = 'feed/', format = 'ndjson');\n\
                 CREATE SOURCE events (n BIGINT) WITH (connector = 'files', path = 'one/events.ndjson', format = 'json');\n\
                 CREATE SOURCE table_txt (n BIGINT) WITH (connector = 'files', path = 'one/table.txt', format = 'csv');\n\
                 CREATE PRODUCT sums AS SELECT (SELECT sum(n) FROM feed) AS feed, (SELECT sum(n) FROM events) AS events,\n\
                   (SELECT sum(n) FROM table_txt) AS txt;\n",
            ),
        ],
    );
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{err}");
    // .json, .ndjson and .jsonl files of the directory (not the .txt); the named files whole.
    let (_, out, _) = kiln(&["query", "SELECT * FROM sums", "--format", "csv"], dir);
    assert_eq!(out, "feed,events,txt\n10,30,24\n");
    // A directory with none of the format's files is an error, not an empty product.
    write_files(
        dir,
        &[(
            "m.sql",
            "CREATE SOURCE feed (n BIGINT) WITH (connector = 'files', path = 'feed/', format = 'parquet');\nCREATE PRODUCT c AS SELECT count(*) AS n FROM feed;\n",
        )],
    );
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("source `feed`: no .parquet files under"), "{err}");
}

/// A Parquet list as PyArrow, DuckDB and Spark write it (element field `element`) and a
/// map with `key`/`value` entries read as the declared `ARRAY<BIGINT>` and `MAP`.
#[test]
fn standard_parquet_lists_and_maps_match_their_declaration() {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array, Int64Builder, ListBuilder, MapBuilder, StringBuilder};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut lists =
        ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new("element", DataType::Int64, true)));
    lists.append_value([Some(1), Some(2)]);
    lists.append_value([Some(5)]);
    let mut maps = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    maps.keys().append_value("a");
    maps.values().append_value(7);
    maps.append(true).unwrap();
    maps.keys().append_value("b");
    maps.values().append_value(8);
    maps.append(true).unwrap();
    let (lists, maps) = (lists.finish(), maps.finish());
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("l", lists.data_type().clone(), true),
        Field::new("m", maps.data_type().clone(), true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(Int64Array::from(vec![1, 2])), Arc::new(lists), Arc::new(maps)],
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let file = std::fs::File::create(dir.join("data/lists.parquet")).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"lists\"\n"),
            (
                "m.sql",
                "CREATE SOURCE s (id BIGINT NOT NULL, l ARRAY<BIGINT>, m MAP<VARCHAR, BIGINT>)\n\
                   WITH (connector = 'files', path = 'data/', format = 'parquet');\n\
                 CREATE PRODUCT p ORDER BY (id) AS SELECT id, cardinality(l) AS n, l[1] AS first, cardinality(m) AS entries FROM s;\n",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT * FROM p", "--format", "csv"], dir);
    assert_eq!(out, "id,n,first,entries\n1,2,1,1\n2,1,5,1\n");
}

#[test]
fn query_errors_speak_kiln_not_datafusion_internals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &PROJECT);
    assert_eq!(kiln(&["build"], dir).0, 0);
    for (sql, expected) in [
        ("SELECT * FROM qq", "error: query: unknown table `qq` (did you mean `q`?)"),
        ("SELECT * FROM nowhere_at_all", "error: query: unknown table `nowhere_at_all`"),
        ("SELEC 1", "error: query: Expected: an SQL statement, found: SELEC at Line: 1, Column: 1"),
        ("SELECT nope FROM p", "error: query: No field named nope."),
    ] {
        let (code, _, err) = kiln(&["query", sql], dir);
        assert_eq!(code, 1, "{sql}");
        assert_eq!(err.lines().next(), Some(expected), "{sql}: {err}");
        assert!(!err.contains("datafusion.public") && !err.contains("untrusted"), "{sql}: {err}");
    }
}

#[test]
fn tags_paths_and_depths_select_and_exclude_and_ls_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"sel\"\n\n[tags]\n\"marts/\" = [\"Finance\"]\n"),
            ("staging/a.sql", "CREATE PRODUCT a WITH (tags = 'daily, core') AS SELECT 1 AS x;\n"),
            ("staging/b.sql", "CREATE PRODUCT b WITH (tags = 'daily') AS SELECT x FROM a;\n"),
            ("marts/c.sql", "CREATE PRODUCT c AS SELECT x FROM b;\n"),
            ("marts/d.sql", "CREATE PRODUCT d AS SELECT x FROM c;\n"),
        ],
    );
    let built = |args: &[&str]| {
        let mut all = vec!["build", "--json"];
        all.extend_from_slice(args);
        let (code, out, err) = kiln(&all, dir);
        assert_eq!(code, 0, "{args:?}: {err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mut names: Vec<String> =
            summary["products"].as_array().unwrap().iter().map(|p| p["product"].as_str().unwrap().to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(built(&["--select", "tag:daily"]), ["a", "b"]);
    assert_eq!(built(&["--select", "tag:finance"]), ["c", "d"], "folder tags from kiln.toml");
    assert_eq!(built(&["--select", "path:staging/"]), ["a", "b"]);
    assert_eq!(built(&["--select", "1+c"]), ["b", "c"]);
    assert_eq!(built(&["--select", "a+2"]), ["a", "b", "c"]);
    assert_eq!(built(&["--select", "+d", "--exclude", "tag:core"]), ["b", "c", "d"]);
    assert_eq!(built(&["--select", "+c+"]), ["a", "b", "c", "d"]);
    let (code, _, err) = kiln(&["build", "--select", "tag:nothing"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("invalid selection `tag:nothing`"), "{err}");

    let (code, out, _) = kiln(&["ls", "--json", "--select", "tag:daily"], dir);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = &report["nodes"][0];
    assert_eq!(
        (a["name"].as_str(), a["kind"].as_str(), a["at"].as_str()),
        (Some("a"), Some("product"), Some("staging/a.sql:1"))
    );
    assert_eq!(a["tags"], serde_json::json!(["daily", "core"]));
    assert_eq!(
        (a["status"].as_str(), a["version"].as_u64(), a["rows"].as_u64()),
        (Some("committed"), Some(0), Some(1))
    );
    let (_, text, _) = kiln(&["ls"], dir);
    assert!(
        text.lines().any(|l| l.starts_with("d ") && l.contains("marts/d.sql:1") && l.contains("finance")),
        "{text}"
    );
}

#[test]
fn completions_for_every_shell() {
    let tmp = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = kiln(&["completions", shell], tmp.path());
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains("freshness") && out.contains("--select"), "{shell}: {out}");
    }
    // The bash script loads and registers its completion function.
    let (code, out, _) = kiln(&["completions", "bash"], tmp.path());
    assert_eq!(code, 0);
    let script = tmp.path().join("kiln.bash");
    std::fs::write(&script, out).unwrap();
    let shown = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p kiln", script.display()))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&shown.stdout).contains("_kiln"), "{shown:?}");
}

/// A secret's development fallback is announced only when a product about to be computed
/// is keyed by it: not for other products, not when nothing is built.
#[test]
fn a_fallback_secret_is_reported_only_when_used() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            (
                "kiln.toml",
                "[project]\nname = \"s\"\n\n[secrets]\nk = { env = \"KILN_TEST_NEVER_SET\", fallback = \"dev\" }\n",
            ),
            (
                "m.sql",
                "CREATE PRODUCT hashed AS SELECT kiln_pii_hash(v, key => 'k') AS h FROM (VALUES ('555-0100')) t(v);\nCREATE PRODUCT plain AS SELECT 1 AS one;\n",
            ),
        ],
    );
    let (code, _, err) = kiln(&["build", "--select", "plain"], dir);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("fallback"), "{err}");
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: secret `k` uses its fallback value from kiln.toml (for hashed)"), "{err}");
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("fallback"), "nothing computed: {err}");

    // `kiln query` reads the stored hashes but cannot use the key itself (anyone who can
    // query could hash candidate phone numbers and join them against those hashes).
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT length(h) AS n FROM hashed"], dir);
    assert_eq!((code, out.as_str()), (0, "n\n64\n"), "{err}");
    for sql in [
        "SELECT kiln_pii_hash('555-0100', key => 'k') AS h",
        "SELECT h FROM hashed WHERE h = kiln_pii_hash('555-0100', key => 'k')",
        "SELECT * FROM hashed WHERE h IN (SELECT kiln_pii_hash(v, key => 'k') FROM (VALUES ('555-0100')) t(v))",
    ] {
        let (code, out, err) = kiln(&["query", sql], dir);
        assert_eq!(code, 1, "{sql}: {out}{err}");
        assert!(err.contains("`kiln_pii_hash` is keyed by a project secret and cannot be called here"), "{sql}: {err}");
    }
}

/// A product compiled (and cached) but not selected builds on the next run: its table is
/// registered from the cache with the exact Arrow types compiling gives (`Utf8`, not the
/// `Utf8View` that the contract's `VARCHAR` reads back as), so compiling it again does not
/// collide with it ("The table hashed already exists", before).
#[test]
fn a_product_left_out_of_a_selection_builds_on_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"c\"\n"),
            (
                "m.sql",
                "CREATE PRODUCT hashed AS SELECT kiln_sha256_hex(v) AS h FROM (VALUES ('x')) t(v);\nCREATE PRODUCT plain AS SELECT 1 AS one;\n",
            ),
        ],
    );
    let (code, _, err) = kiln(&["build", "--select", "plain"], dir);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 built, 1 fresh"), "{out}");
}

/// Plans name files relative to the project: `kiln explain --json` (with and without
/// `--analyze`) and the build records carry no path of this machine.
#[test]
fn plans_and_build_records_hold_no_machine_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    write_files(&dir, &PROJECT);
    let (code, _, err) = kiln(&["build"], &dir);
    assert_eq!(code, 0, "{err}");
    let machine = dir.to_str().unwrap().trim_start_matches('/').to_owned();
    for args in [["explain", "q", "--json"], ["explain", "q", "--analyze"]] {
        let (code, out, err) = kiln(&args, &dir);
        assert_eq!(code, 0, "{err}");
        assert!(!out.contains(&machine), "{args:?}: {out}");
        assert!(out.contains("warehouse/p/builds/"), "{args:?} names the files it reads: {out}");
    }
    let mut records = 0;
    for product in ["p", "q"] {
        for entry in std::fs::read_dir(dir.join(".kiln/builds").join(product)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!text.contains(&machine), "{product}: {text}");
            records += 1;
        }
    }
    assert_eq!(records, 2);
}

/// The JSON functions in a product over a JSON-text column: typed values out, NULL where
/// nothing is found, listed by `kiln functions`, and part of the product's func_fp.
#[test]
fn json_functions_read_json_text_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"j\"\n"),
            (
                "data/e.ndjson",
                "{\"id\": 1, \"payload\": \"{\\\"user\\\": {\\\"name\\\": \\\"ann\\\"}, \\\"n\\\": 3, \\\"tags\\\": [\\\"a\\\"]}\"}\n\
                 {\"id\": 2, \"payload\": \"{\\\"n\\\": \\\"three\\\"}\"}\n\
                 {\"id\": 3, \"payload\": \"not json\"}\n",
            ),
            (
                "m.sql",
                "CREATE SOURCE e (id BIGINT NOT NULL, payload VARCHAR) WITH (connector = 'files', path = 'data/', format = 'json');\n\
                 CREATE PRODUCT fields AS SELECT id, json_get_str(payload, 'user', 'name') AS name, \
                 json_get_int(payload, 'n') AS n, json_contains(payload, 'tags') AS tagged, \
                 CAST(json_length(payload, 'tags') AS BIGINT) AS tags FROM e;\n",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kiln(&["query", "SELECT * FROM fields ORDER BY id", "--format", "csv"], dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "id,name,n,tagged,tags\n1,ann,3,true,1\n2,,,false,\n3,,,false,\n");
    let (_, catalog, _) = kiln(&["functions", "--json"], dir);
    let catalog: serde_json::Value = serde_json::from_str(&catalog).unwrap();
    let names: Vec<&str> =
        catalog["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    for f in ["json_get_str", "json_get_int", "json_contains", "json_length"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    // func_fp covers the JSON functions the product calls: not the empty set's.
    let (_, plan, _) = kiln(&["plan", "--json"], dir);
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let func_fp = plan["products"][0]["fingerprints"]["func_fp"].as_str().unwrap().to_owned();
    let none = kiln::functions::registry::fingerprint_of(&[], &[]);
    assert_ne!(func_fp, none);
}

/// A project whose products take a while in a debug build: `copy` (1.5M rows from CSV),
/// `sorted` (ORDER BY, so nothing is written until the sort has read everything) and
/// `agg` (97 groups).
fn slow_project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("a,b\n");
    for a in 0..1_500_000u64 {
        csv.push_str(&format!("{a},{}\n", a % 97));
    }
    write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"slow\"\n"),
            ("data/t.csv", &csv),
            (
                "m.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b BIGINT) WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT copy AS SELECT a, b FROM t;
                 CREATE PRODUCT sorted ORDER BY (b, a) AS SELECT a, b FROM copy;
                 CREATE PRODUCT agg AS SELECT b, count(*) AS n FROM sorted GROUP BY b;\n",
            ),
        ],
    );
    tmp
}

/// Progress where stderr is not a terminal (CI logs): a line when each product starts and
/// finishes, numbered against the plan, and a line per interval while one runs, with its
/// phase (`sort` before a sorted product writes anything) and rows against the estimate
/// from its input's statistics (`copy`'s exact row count).
#[test]
fn build_progress_in_logs_names_phases_rows_and_estimates() {
    let tmp = slow_project();
    let (code, _, err) = crate::kiln_env(&["build"], tmp.path(), &[("KILN_PROGRESS_INTERVAL", "0.1")]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let position =
        |line: &str| lines.iter().position(|l| *l == line).unwrap_or_else(|| panic!("no `{line}` in\n{err}"));
    let (copy, sorted, agg) = (position("copy: started"), position("sorted: started"), position("agg: started"));
    assert!(copy < sorted && sorted < agg, "{err}");
    for (k, product, rows) in [(1, "copy", 1_500_000), (2, "sorted", 1_500_000), (3, "agg", 97)] {
        let done = format!("[{k}/3] {product}: built: {rows} rows, ");
        assert!(lines.iter().any(|l| l.starts_with(&done)), "no `{done}` in\n{err}");
    }
    // While `sorted` runs: its sort first (nothing written yet), then its writing, both
    // against the 1,500,000 rows `copy` committed.
    let running: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("sorted: ")).collect();
    assert!(running.iter().any(|l| l.starts_with("sort 0/~1500000 rows, 0 B, 0 files, ")), "{err}");
    let rows_of =
        |l: &str| l.split_whitespace().nth(1).and_then(|r| r.split('/').next()).and_then(|r| r.parse::<u64>().ok());
    let rows: Vec<u64> = running.iter().filter_map(|l| rows_of(l)).collect();
    assert!(rows.windows(2).all(|w| w[0] <= w[1]), "rows go backwards: {err}");
    // Nothing ran on a second build, so it logs nothing per product.
    let (_, _, err) = kiln(&["build"], tmp.path());
    assert!(!err.contains(": started"), "{err}");
}

/// Ctrl-C during a build: it says so, exits 130 and commits nothing of the product that
/// was running (its previous build stays current); the next build builds it.
#[test]
fn ctrl_c_interrupts_a_build_and_commits_nothing_running() {
    use std::io::{BufRead, BufReader};
    let tmp = slow_project();
    let (code, _, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{err}");
    let before = crate::committed(tmp.path(), "sorted").unwrap().build_id;
    // A change that rebuilds `sorted` and `agg`.
    let sql = std::fs::read_to_string(tmp.path().join("m.sql")).unwrap().replace("ORDER BY (b, a)", "ORDER BY (a, b)");
    write_files(tmp.path(), &[("m.sql", &sql)]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build"])
        .current_dir(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the build ended first:\n{seen}");
        seen.push_str(&line);
        if line.starts_with("sorted: started") {
            break;
        }
    }
    let signal = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(signal.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted: nothing of the running builds was committed"), "{seen}{rest}");
    assert_eq!(crate::committed(tmp.path(), "sorted").unwrap().build_id, before);
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_ne!(crate::committed(tmp.path(), "sorted").unwrap().build_id, before);
    assert!(out.contains("2 built, 1 fresh"), "{out}");
}

/// `kiln query --timeout` stops a query that would run for hours (a count over 10^11
/// generated rows) with exit 1 within the limit plus the 2 s grace, and `--max-rows`
/// fails a result with more rows than allowed while one at the limit passes.
#[test]
fn query_timeout_and_row_cap() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"q\"\n")]);
    let started = std::time::Instant::now();
    let (code, _, err) =
        kiln(&["query", "SELECT count(*) FROM generate_series(1, 100000000000)", "--timeout", "1s"], tmp.path());
    let took = started.elapsed();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the query ran longer than its timeout of 1s (--timeout"), "{err}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    let (code, _, err) = kiln(&["query", "SELECT 1", "--timeout", "0s"], tmp.path());
    assert_eq!(code, 2, "{err}");

    let sql = |n: u32| format!("SELECT value FROM generate_series(1, {n})");
    let (code, out, err) = kiln(&["query", &sql(5), "--max-rows", "5", "--format", "csv"], tmp.path());
    assert_eq!((code, out.as_str()), (0, "value\n1\n2\n3\n4\n5\n"), "{err}");
    let (code, _, err) = kiln(&["query", &sql(6), "--max-rows", "5", "--format", "csv"], tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the result has more than 5 rows (--max-rows"), "{err}");
}

/// `kiln query` reads the committed products, not the sources they are made from: a
/// source of phone numbers and its `__rejected` dataset are refused, saying how to allow
/// them, while the product over it reads; `[query] sources` allows what it lists, and an
/// unknown name there is an error.
#[test]
fn query_reads_products_and_only_the_sources_kiln_toml_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = "CREATE SOURCE customer (id BIGINT NOT NULL, phone VARCHAR) WITH (connector = 'files', path = 'data/c.csv', format = 'csv', on_error = 'reject');\n\
                  CREATE PRODUCT customers AS SELECT count(*) AS n FROM customer;\n";
    let toml = |query: &str| format!("[project]\nname = \"a\"\n{query}");
    write_files(
        dir,
        &[
            ("kiln.toml", &toml("")),
            ("m.sql", models),
            ("data/c.csv", "id,phone\n1,555-0100\nx,555-0101\n2,555-0102\n"),
        ],
    );
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT n FROM customers"], dir);
    assert_eq!((code, out.as_str()), (0, "n\n2\n"), "{err}");
    for sql in [
        "SELECT phone FROM customer",
        "SELECT n FROM customers WHERE n > (SELECT count(*) FROM customer)",
        "SELECT line FROM customer__rejected",
        "DESCRIBE customer",
    ] {
        let (code, out, err) = kiln(&["query", sql], dir);
        assert_eq!(code, 1, "{sql}: {out}{err}");
        assert!(err.contains("is raw input: `kiln query` reads the committed products"), "{sql}: {err}");
        assert!(!out.contains("555"), "{sql}: {out}");
    }
    write_files(dir, &[("kiln.toml", &toml("\n[query]\nsources = [\"customer\"]\n"))]);
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT phone FROM customer ORDER BY id"], dir);
    assert_eq!((code, out.as_str()), (0, "phone\n555-0100\n555-0102\n"), "{err}");
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT count(*) AS n FROM customer__rejected"], dir);
    assert_eq!((code, out.as_str()), (0, "n\n1\n"), "{err}");
    write_files(dir, &[("kiln.toml", &toml("\n[query]\nsources = [\"custmer\"]\n"))]);
    let (code, _, err) = kiln(&["query", "SELECT n FROM customers"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("[query] sources: `custmer` is not a source or stream of this project"), "{err}");
}

/// Columns `kiln query` may not read, even in a readable table: those a product marks
/// `sensitive`, and the columns of a source the project lets queries read (and of a
/// product) whose values a product publishes only through `kiln_pii_hash`, traced
/// through a rename in a CTE and back to the source through a product's lineage. Selecting, filtering on or joining on one is refused;
/// the other columns and `count(*)` read.
#[test]
fn query_refuses_sensitive_and_hashed_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = "CREATE SOURCE customer (id BIGINT NOT NULL, phone VARCHAR, region VARCHAR) WITH (connector = 'files', path = 'data/c.csv', format = 'csv');\n\
                  CREATE PRODUCT staged WITH (sensitive = 'email') AS SELECT id, region, phone AS tel, concat('u', id, '@x') AS email FROM customer;\n\
                  CREATE PRODUCT contacts AS WITH s AS (SELECT id, tel AS t FROM staged) SELECT id, kiln_pii_hash(t, key => 'k') AS phone_hash FROM s;\n\
                  CREATE PRODUCT notes AS SELECT id, kiln_pii_hash(region, key => 'k') AS r FROM customer WHERE phone IS NOT NULL;\n";
    let toml = "[project]\nname = \"a\"\n\n[secrets]\nk = { env = \"KILN_TEST_NEVER_SET\", fallback = \"dev\" }\n\n[query]\nsources = [\"customer\"]\n";
    write_files(
        dir,
        &[
            ("kiln.toml", toml),
            ("m.sql", models),
            ("data/c.csv", "id,phone,region\n1,555-0100,north\n2,555-0102,south\n"),
        ],
    );
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    for (sql, column, table, why) in [
        ("SELECT email FROM staged", "email", "staged", "`staged` marks it sensitive"),
        ("SELECT * FROM staged", "email", "staged", "`staged` marks it sensitive"),
        ("SELECT id FROM staged WHERE email LIKE 'u1%'", "email", "staged", "`staged` marks it sensitive"),
        ("SELECT tel FROM staged", "tel", "staged", "`contacts` publishes it only through kiln_pii_hash"),
        ("SELECT phone FROM customer", "phone", "customer", "`contacts` publishes it only through kiln_pii_hash"),
        ("SELECT count(*) FROM customer WHERE region = 'north'", "region", "customer", "`notes` publishes it"),
        (
            "SELECT c.id FROM contacts c JOIN staged s ON c.phone_hash = s.tel",
            "tel",
            "staged",
            "`contacts` publishes it only through kiln_pii_hash",
        ),
    ] {
        let (code, out, err) = kiln(&["query", sql], dir);
        assert_eq!(code, 1, "{sql}: {out}{err}");
        let refused = format!("column `{column}` of `{table}` is not readable by kiln query: {why}");
        assert!(err.contains(&refused), "{sql}: {err}");
        assert!(!out.contains("555") && !out.contains("north") && !out.contains("@x"), "{sql}: {out}");
    }
    // The rest reads: other columns, count(*), the published hashes.
    for (sql, expected) in [
        ("SELECT id, region FROM staged ORDER BY id", "id,region\n1,north\n2,south\n"),
        ("SELECT count(*) AS n FROM staged", "n\n2\n"),
        ("SELECT id FROM customer WHERE id > 1", "id\n2\n"),
        ("SELECT count(*) AS n FROM contacts WHERE length(phone_hash) = 64", "n\n2\n"),
    ] {
        let (code, out, err) = kiln(&["query", "--format", "csv", sql], dir);
        assert_eq!((code, out.as_str()), (0, expected), "{sql}: {err}");
    }
    // A column that is not the product's is a located error.
    let bad = models.replace("sensitive = 'email'", "sensitive = 'e_mail'");
    write_files(dir, &[("m.sql", &bad)]);
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("m.sql:2:"), "{err}");
    assert!(err.contains("sensitive: `e_mail` is not a column of `staged` (columns: id, region, tel, email)"), "{err}");
}

/// kiln.toml's `[query]` sets the limits, each flag overrides its key and `none` lifts
/// it; `--max-bytes` fails the output before it passes the limit.
#[test]
fn query_limits_come_from_kiln_toml_and_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = "[project]\nname = \"q\"\n\n[query]\nmax_rows = 5\ntimeout = \"1s\"\n";
    write_files(tmp.path(), &[("kiln.toml", toml)]);
    let sql = |n: u32| format!("SELECT value FROM generate_series(1, {n})");
    let (code, _, err) = kiln(&["query", &sql(6), "--format", "csv"], tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the result has more than 5 rows"), "{err}");
    let (code, out, err) = kiln(&["query", &sql(6), "--format", "csv", "--max-rows", "none"], tmp.path());
    assert_eq!((code, out.lines().count()), (0, 7), "{err}");

    let started = std::time::Instant::now();
    let (code, _, err) = kiln(&["query", "SELECT count(*) FROM generate_series(1, 100000000000)"], tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timeout of 1s (--timeout, [query] timeout)"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());

    // 1,000 values as CSV are 3,899 bytes (`value\n` and 3,893 of numbers).
    let args = ["query", &sql(1000), "--format", "csv", "--max-rows", "none"];
    let (code, out, err) = kiln(&[&args[..], &["--max-bytes", "3899"]].concat(), tmp.path());
    assert_eq!((code, out.len()), (0, 3899), "{err}");
    let (code, out, err) = kiln(&[&args[..], &["--max-bytes", "3000"]].concat(), tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(out.len() <= 3000, "{} bytes written", out.len());
    assert!(err.contains("the result is larger than 3000 bytes"), "{err}");

    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"q\"\n\n[query]\nmemory = \"lots\"\n")]);
    let (code, _, err) = kiln(&["query", "SELECT 1"], tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("kiln.toml:5:10") && err.contains("`lots` is not a size"), "{err}");
}

/// `--memory` bounds the whole process, allocations DataFusion's pool does not see
/// included. Functions whose output outgrows their input refuse a call past a quarter of
/// it before allocating (a 2 GB `repeat` and a scalar `generate_series` of 10^9 values,
/// both made while planning by constant folding), as does a constant a projection would
/// copy into every row; what else allocates outside the pool (concatenating four 100 MB
/// strings) ends the process with exit 1 once it passes the limit. Peak resident memory
/// (VmHWM, read while it runs) stays within 20% of the limit.
#[test]
fn the_memory_limit_holds_for_allocations_outside_the_pool() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: no /proc (the resident-memory bound is Linux-only)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"q\"\n")]);
    const LIMIT: u64 = 512 << 20;
    let per_value = "more than the 128.0 MiB a value may take here (--memory, [query] memory)";
    let huge = "SELECT length(concat(repeat('x', 100000000), repeat('y', 100000000), repeat('z', 100000000), repeat('w', 100000000)))";
    for (sql, expected) in [
        ("SELECT length(repeat('x', 2147483647))", format!("repeat() would produce 2.0 GiB in one batch, {per_value}")),
        (
            "SELECT count(*) FROM unnest(generate_series(1, 1000000000))",
            format!("generate_series() would produce 7.5 GiB in one batch, {per_value}"),
        ),
        (
            "SELECT repeat('x', 1000000) FROM generate_series(1, 10)",
            format!("a constant of 976.6 KiB would be copied into every row of a batch (up to 8192 rows), {per_value}"),
        ),
        (huge, "the query used more than 512MiB of memory".to_owned()),
    ] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["query", sql, "--memory", "512MiB"])
            .current_dir(tmp.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let status = format!("/proc/{}/status", child.id());
        let mut peak = 0u64;
        let code = loop {
            if let Some(hwm) = std::fs::read_to_string(&status).ok().and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_owned();
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            }) {
                peak = peak.max(hwm * 1024);
            }
            if let Some(code) = child.try_wait().unwrap() {
                break code.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        };
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code, Some(1), "{sql}: {err}");
        assert!(err.contains(&expected), "{sql}: {err}");
        assert!(peak <= LIMIT + LIMIT / 5, "{sql}: peak {} MiB", peak >> 20);
    }
}

/// `kiln query -` reads the query from standard input: one longer than a command-line
/// argument may be (128 KiB on Linux) runs; text that is not UTF-8 is refused, exit 1.
#[test]
fn query_reads_standard_input() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"q\"\n")]);
    let run = |input: &[u8]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["query", "-", "--format", "csv"])
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // 200 KiB: a comment and then the query.
    let long = format!("-- {}\nSELECT 1 + 1 AS x", "y".repeat(200 << 10));
    assert_eq!(run(long.as_bytes()).1, "x\n2\n");
    let (code, out, err) = run(b"SELECT '\xff' AS x");
    assert_eq!((code, out.as_str()), (Some(1), ""), "{err}");
    assert!(err.contains("the query on standard input is not UTF-8 text (byte 8 is not)"), "{err}");
}

/// CSV has no cells for lists, structs and maps: `--format csv` writes them as the table
/// format shows them (it failed with an internal error, exit 3).
#[test]
fn query_csv_writes_nested_values_as_text() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"q\"\n")]);
    let sql = "SELECT 1 AS n, [1, 2] AS l, {'a': 1, 'b': [3]} AS s, CAST(NULL AS INT[]) AS e";
    let (code, out, err) = kiln(&["query", "--format", "csv", sql], tmp.path());
    assert_eq!((code, out.as_str()), (0, "n,l,s,e\n1,\"[1, 2]\",\"{a: 1, b: [3]}\",\n"), "{err}");
}

/// The products running at once, from the progress lines (`X: started`, `[k/n] X: built`):
/// the largest set of `heavy` products ever running together, and whether any two
/// products overlapped.
fn overlaps(progress: &str, heavy: &[&str]) -> (usize, bool) {
    let mut running: Vec<String> = Vec::new();
    let (mut most_heavy, mut any) = (0, false);
    for line in progress.lines() {
        if let Some(name) = line.strip_suffix(": started") {
            running.push(name.to_owned());
            any |= running.len() > 1;
            most_heavy = most_heavy.max(running.iter().filter(|r| heavy.contains(&r.as_str())).count());
        } else if let Some((_, rest)) = line.split_once("] ")
            && let Some((name, _)) = rest.split_once(": built")
        {
            running.retain(|r| r != name);
        }
    }
    (most_heavy, any)
}

/// Heavy products (inputs of at least kiln.heavy_product_bytes) never run side by side;
/// light ones run beside them. With a threshold nothing reaches, the same products do
/// run together (the schedule is what keeps them apart).
#[test]
fn heavy_products_run_one_at_a_time_and_light_ones_fill_in() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let big: String =
        std::iter::once("id,v\n".to_owned()).chain((0..2_000).map(|i| format!("{i},row {i}\n"))).collect();
    let mut sql = String::from(
        "CREATE SOURCE big (id BIGINT NOT NULL, v VARCHAR NOT NULL) WITH (connector = 'files', path = 'data/big.csv', format = 'csv');\n\
         CREATE SOURCE small (id BIGINT NOT NULL) WITH (connector = 'files', path = 'data/small.csv', format = 'csv');\n",
    );
    for h in ["h1", "h2", "h3"] {
        sql.push_str(&format!("CREATE PRODUCT {h} AS SELECT id % 7 AS k, count(*) AS n FROM big GROUP BY 1;\n"));
    }
    for l in ["l1", "l2", "l3", "l4"] {
        sql.push_str(&format!("CREATE PRODUCT {l} AS SELECT id FROM small;\n"));
    }
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"sched\"\n"),
            ("data/big.csv", &big),
            ("data/small.csv", "id\n1\n2\n"),
            ("m.sql", &sql),
        ],
    );
    let heavy = ["h1", "h2", "h3"];
    for (threshold, apart) in [("1KiB", true), ("1GiB", false)] {
        let _ = std::fs::remove_dir_all(dir.join("warehouse"));
        let _ = std::fs::remove_dir_all(dir.join(".kiln"));
        let setting = format!("kiln.heavy_product_bytes={threshold}");
        let (code, out, err) = kiln(&["build", "--set", &setting, "--set", "kiln.max_parallel_products=2"], dir);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("7 built"), "{out}");
        let (most_heavy, any) = overlaps(&err, &heavy);
        if apart {
            assert_eq!(most_heavy, 1, "two heavy products ran at once:\n{err}");
            assert!(any, "light products should run beside a heavy one:\n{err}");
        } else {
            assert_eq!(most_heavy, 2, "without heavy products, two of them run together:\n{err}");
        }
    }
    let (code, _, err) = kiln(&["build", "--set", "kiln.heavy_product_bytes=lots"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("kiln.heavy_product_bytes") && err.contains("lots"), "{err}");
}
