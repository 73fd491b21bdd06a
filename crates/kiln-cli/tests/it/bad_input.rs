//! Bad input: one precise error, the right exit code, nothing half-written visible.

use crate::{committed, current_manifest, kiln, manifest_files, read_rows, write_files};

const CSV: (&str, &str) = ("data/t.csv", "a,b\n1,x\n2,y\n");
const TOML: (&str, &str) = ("kiln.toml", "[project]\nname = \"bad\"\n");
const SOURCE: &str =
    "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n";

fn project(models: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let sql = format!("{SOURCE}{models}");
    write_files(tmp.path(), &[TOML, CSV, ("models.sql", &sql)]);
    tmp
}

fn first_error_line(stderr: &str) -> &str {
    stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or("")
}

#[test]
fn missing_project_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(&["build", "no/such/dir"], tmp.path());
    assert_eq!(code, 1);
    assert_eq!(first_error_line(&err), "error: no/such/dir: project directory not found");
}

#[test]
fn missing_kiln_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert!(first_error_line(&err).starts_with("error: .: no kiln.toml"), "{err}");
}

#[test]
fn syntax_error_names_file_line_and_column() {
    let tmp = project("CREATE PRODUCT p AS\nSELEC a FROM t;\n");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1, "{err}");
    let first = first_error_line(&err);
    assert!(first.starts_with("error: models.sql:3:1: "), "{err}");
    assert!(first.contains("SELEC"), "{err}");
    assert!(err.contains("3 | SELEC a FROM t;\n  | ^"), "caret snippet missing:\n{err}");
}

#[test]
fn unknown_table_names_its_position() {
    let tmp = project("CREATE PRODUCT p AS SELECT a FROM tt;\n");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert_eq!(first_error_line(&err), "error: models.sql:2:35: unknown table `tt` in product `p` (did you mean `t`?)");
}

#[test]
fn cycle_names_the_products() {
    let tmp = project("CREATE PRODUCT a AS SELECT * FROM b;\nCREATE PRODUCT b AS SELECT * FROM a;\n");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert_eq!(first_error_line(&err), "error: cycle between products: a -> b -> a");
}

#[test]
fn usage_error_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(&["build", "--no-such-flag"], tmp.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn contract_mismatch_lists_every_violation() {
    let tmp = project("CREATE PRODUCT p (a INT NOT NULL, c VARCHAR) AS SELECT a, b FROM t;\n");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("models.sql:2:16: product `p` breaks its declared columns:"), "{err}");
    assert!(err.contains("  - a: expected Int32, found Int64"), "{err}");
    assert!(err.contains("  - c: missing column"), "{err}");
    assert!(err.contains("  - b: unexpected column of type Utf8"), "{err}");
}

#[test]
fn failed_product_leaves_nothing_visible_and_others_build() {
    let tmp = project(
        "CREATE PRODUCT ok AS SELECT a FROM t;\n\
         CREATE PRODUCT broken (x BIGINT NOT NULL) AS SELECT CAST(NULL AS BIGINT) AS x FROM t;\n\
         CREATE PRODUCT after_broken AS SELECT x FROM broken;\n",
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("product `broken`: column `x` is declared NOT NULL but the query produced 2 NULL value(s)"),
        "{err}"
    );
    assert!(out.contains("after_broken") && out.contains("skipped"), "{out}");
    assert!(crate::committed(tmp.path(), "ok").is_some());
    assert!(crate::committed(tmp.path(), "broken").is_none(), "a failed build must not be visible");
}

#[test]
fn one_broken_file_or_product_does_not_stop_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"b\"\n"),
            ("data/t.csv", "a,b\n1,x\n2,y\n"),
            (
                "sources.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');",
            ),
            ("a_broken.sql", "CREATE PRODUCT broken AS\nSELEC a FROM t;"),
            (
                "b_models.sql",
                "CREATE PRODUCT good AS SELECT a FROM t;\n\
                CREATE PRODUCT typo AS SELECT a FROM tt;\n\
                CREATE PRODUCT selfish AS SELECT a FROM selfish;\n\
                CREATE PRODUCT bad_column AS SELECT nope FROM t;\n\
                CREATE PRODUCT ambiguous AS SELECT a FROM t JOIN good ON true;\n\
                CREATE PRODUCT bad_type AS SELECT a + b FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("good") && out.contains("1 built"), "{out}");
    for expected in [
        "error: a_broken.sql:2:1: ",
        "error: b_models.sql:2:38: unknown table `tt` in product `typo` (did you mean `t`?)",
        "error: b_models.sql:3:41: product `selfish`: a product cannot read itself",
        "error: b_models.sql:4:37: product `bad_column`: Schema error: No field named nope",
        "error: b_models.sql:5:36: product `ambiguous`: ",
        "error: b_models.sql:6:35: product `bad_type`: Cannot coerce",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(err.contains("2 | SELEC a FROM t;"), "caret snippet missing:\n{err}");
    assert!(err.contains("ambiguous") || err.contains("Ambiguous"), "{err}");
    assert!(crate::committed(tmp.path(), "good").is_some());
}

#[test]
fn a_source_without_data_is_a_located_error_not_a_silent_skip() {
    let tmp = project("CREATE PRODUCT p AS SELECT a FROM t;\n");
    std::fs::remove_file(tmp.path().join("data/t.csv")).unwrap();
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        first_error_line(&err),
        "error: models.sql:1:15: source `t`: no .csv files under ./data/ (allow_empty = 'true' reads it as empty)"
    );
    assert!(out.contains("p        skipped"), "{out}");
}

/// on_error = 'reject': malformed records land in `<source>__rejected` with their file,
/// line, raw text and reason, once per version of the source's files however many
/// products read it (`q` too; `first`, under a LIMIT, stops its scan early); the
/// manifest accounts for every record read.
#[test]
fn rejected_records_are_kept_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            TOML,
            (
                "data/t.csv",
                "a,b,d\n1,x,2024-01-01\noops,y,2024-01-02\n3,z\n4,\"quoted, comma\",2024-01-04\n,w,2024-01-05\n6,v,not a date\n7,u,2024-01-07\n",
            ),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR, d DATE) WITH (connector = 'files', path = 'data/', format = 'csv', on_error = 'reject');
                 CREATE PRODUCT p ORDER BY (a) AS SELECT a, b, d FROM t;
                 CREATE PRODUCT q AS SELECT count(*) AS n FROM t;
                 CREATE PRODUCT first AS SELECT a FROM t LIMIT 1;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json", "--select", "p", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["products"][0]["rows"], 3, "{out}");
    let (_, out, _) = kiln(&["query", "SELECT a, b FROM p", "--format", "csv"], tmp.path());
    assert_eq!(out, "a,b\n1,x\n4,\"quoted, comma\"\n7,u\n");

    // The rejected dataset, read with plain DataFusion from its manifest.
    let manifest = current_manifest(tmp.path(), "t__rejected");
    assert_eq!(manifest["totals"]["rows_written"], 4);
    let rows = read_rows(manifest_files(tmp.path(), &manifest), &["source", "file", "line", "raw", "reason"], "line");
    let want = [
        "| t | ./data/t.csv | 3 | oops,y,2024-01-02 | column `a`: cannot read `oops` as Int64 |",
        "| t | ./data/t.csv | 4 | 3,z | expected 3 fields, found 2 |",
        "| t | ./data/t.csv | 6 | ,w,2024-01-05 | column `a` is NOT NULL but the field is empty |",
        "| t | ./data/t.csv | 7 | 6,v,not a date | column `d`: cannot read `not a date` as Date32 |",
    ];
    assert_eq!(rows, want);

    // The product's manifest: rows_read = rows_written + rows_rejected.
    let manifest = current_manifest(tmp.path(), "p");
    assert_eq!(manifest["totals"]["rows_rejected"], 4);
    assert_eq!(manifest["totals"]["rows_read"], 7);

    // The other products read the same files: nothing more is written.
    let commits = |name: &str| {
        std::fs::read_dir(tmp.path().join(format!("warehouse/{name}/_delta_log")))
            .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(commits("t__rejected"), 1);
    assert_eq!((commits("p__rejected"), commits("q__rejected"), commits("first__rejected")), (0, 0, 0));
    let (_, out, _) = kiln(&["query", "SELECT n FROM q", "--format", "csv"], tmp.path());
    assert_eq!(out, "n\n3\n");

    // New files: the next product to read them writes their rejects, all of them even
    // when its scan stops early.
    write_files(tmp.path(), &[("data/u.csv", "a,b,d\n8,t,2024-01-08\nnine,s,2024-01-09\n")]);
    let (code, out, err) = kiln(&["build", "--select", "first", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(commits("t__rejected"), 2);
    let manifest = current_manifest(tmp.path(), "t__rejected");
    let rows = read_rows(manifest_files(tmp.path(), &manifest), &["file", "line"], "line");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.contains(&"| ./data/u.csv | 3 |".to_owned()), "{rows:?}");
}

/// on_error = 'fail' (the default): a value that does not parse fails the product with
/// the file, the line and the column (DataFusion's CSV and JSON readers say "line 2" of a
/// batch and no file), and nothing of it is committed.
#[test]
fn failing_records_name_their_file_and_line() {
    for (file, data, line, raw) in [
        ("data/t.csv", "a,b\n1,x\n2,y\nthree,z\n4,w\n", 4, "three,z"),
        (
            "data/t.json",
            "{\"a\": 1, \"b\": \"x\"}\n\n{\"a\": \"three\", \"b\": \"z\"}\n",
            3,
            "{\"a\": \"three\", \"b\": \"z\"}",
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let format = if file.ends_with("csv") { "csv" } else { "json" };
        let models = format!(
            "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = '{format}');
             CREATE PRODUCT p AS SELECT a, b FROM t;"
        );
        write_files(tmp.path(), &[TOML, (file, data), ("models.sql", &models)]);
        let (code, out, err) = kiln(&["build", "."], tmp.path());
        assert_eq!(code, 1, "{out}{err}");
        let want = format!(
            "error: product `p`: source `t`: {file}:{line}: column `a`: cannot read `three` as Int64 (record: `{raw}`); on_error = 'reject' keeps such records in `t__rejected` instead"
        );
        assert!(err.contains(&want), "{err}");
        assert!(committed(tmp.path(), "p").is_none());
    }
}

/// Bytes that are not UTF-8 in a text field reject their record (CSV: it was read as NULL;
/// NDJSON: as U+FFFD), with the column; the other records are read as they are.
#[test]
fn non_utf8_records_are_rejected_not_altered() {
    for (file, data, good) in [
        ("data/t.csv", &b"a,b\n1,caf\xe9\n2,ok\n"[..], "a,b\n2,ok\n"),
        ("data/t.json", &b"{\"a\": 1, \"b\": \"caf\xe9\"}\n{\"a\": 2, \"b\": \"ok\"}\n"[..], "a,b\n2,ok\n"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let format = if file.ends_with("csv") { "csv" } else { "json" };
        let models = format!(
            "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = '{format}', on_error = 'reject');
             CREATE PRODUCT p ORDER BY (a) AS SELECT a, b FROM t;"
        );
        write_files(tmp.path(), &[TOML, ("models.sql", &models)]);
        std::fs::create_dir_all(tmp.path().join("data")).unwrap();
        std::fs::write(tmp.path().join(file), data).unwrap();
        let (code, out, err) = kiln(&["build", "."], tmp.path());
        assert_eq!(code, 0, "{out}{err}");
        let (_, out, _) = kiln(&["query", "SELECT a, b FROM p", "--format", "csv"], tmp.path());
        assert_eq!(out, good, "{file}");
        let manifest = current_manifest(tmp.path(), "t__rejected");
        let rows = read_rows(manifest_files(tmp.path(), &manifest), &["line", "reason"], "line");
        // The CSV header is line 1; NDJSON has none.
        let want =
            if format == "csv" { "| 2 | column `b`: not valid UTF-8 text |" } else { "| 1 | not valid UTF-8 text |" };
        assert_eq!(rows, [want], "{file}");
    }
}

/// A deep expression plans (a 1,500-term chain aborted the process with a stack overflow
/// on the default 8 MiB stack) and one past the dialect's operator limit is a located
/// error; the other products of the project are unaffected.
#[test]
fn deep_expressions_plan_or_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = |n: usize| vec!["a"; n].join("+");
    let models = format!(
        "CREATE SOURCE t (a BIGINT) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
         CREATE PRODUCT deep AS SELECT {} AS x FROM t;\n",
        chain(1500)
    );
    let huge = format!("CREATE PRODUCT huge AS SELECT {} AS x FROM t;\n", chain(3000));
    write_files(tmp.path(), &[TOML, ("data/t.csv", "a\n1\n"), ("models.sql", &models), ("huge.sql", &huge)]);
    let (code, out, err) = kiln(&["plan", "."], tmp.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("deep     build"), "{out}");
    assert!(out.contains("huge.sql:1:4032: statement too large: more than 2000 operators"), "{out}");
}

/// CRLF line endings: the same lines and raw text as with LF (the reader's position lags
/// one byte after a CRLF record: lines were one short and raw text began with `\n`), and a
/// quoted field spanning lines keeps the line its record starts on.
#[test]
fn crlf_rejects_keep_their_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let csv =
        "a,b,d\r\n1,x,2024-01-01\r\noops,y,2024-01-02\r\n3,z\r\n4,\"two\r\nlines\",2024-01-04\r\n6,v,not a date\r\n";
    write_files(
        tmp.path(),
        &[
            TOML,
            ("data/t.csv", csv),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR, d DATE) WITH (connector = 'files', path = 'data/', format = 'csv', on_error = 'reject');
                 CREATE PRODUCT p ORDER BY (a) AS SELECT a, b, d FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let manifest = current_manifest(tmp.path(), "t__rejected");
    let rows = read_rows(manifest_files(tmp.path(), &manifest), &["line", "raw", "reason"], "line");
    let want = [
        "| 3 | oops,y,2024-01-02 | column `a`: cannot read `oops` as Int64 |",
        "| 4 | 3,z | expected 3 fields, found 2 |",
        "| 7 | 6,v,not a date | column `d`: cannot read `not a date` as Date32 |",
    ];
    assert_eq!(rows, want);
}

/// The same for NDJSON: invalid JSON, a non-object line, a nested value, a value of the
/// wrong type and a missing NOT NULL field are rejected by line.
#[test]
fn rejected_json_records_are_kept_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            TOML,
            (
                "data/t.json",
                "{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\"\n[1, 2]\n{\"a\": 3, \"b\": [\"n\"]}\n\n{\"a\": \"four\", \"b\": \"y\"}\n{\"b\": \"z\"}\n{\"a\": 6, \"b\": null}\n",
            ),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'json', on_error = 'reject');
                 CREATE PRODUCT p ORDER BY (a) AS SELECT a, b FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT a, b FROM p", "--format", "csv"], tmp.path());
    assert_eq!(out, "a,b\n1,x\n6,\n");
    let manifest = current_manifest(tmp.path(), "t__rejected");
    let rows = read_rows(manifest_files(tmp.path(), &manifest), &["line", "reason"], "line");
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows[0].starts_with("| 2 | invalid JSON:"), "{rows:?}");
    assert_eq!(rows[1], "| 3 | expected a JSON object |");
    assert_eq!(rows[2], "| 4 | column `b`: expected a scalar, found nested JSON |");
    assert_eq!(rows[3], "| 6 | column `a`: cannot read `four` as Int64 |");
    assert_eq!(rows[4], "| 7 | column `a` is NOT NULL but the field is empty |");
}

/// Rejection in a Hive-partitioned source: directory values are read like fields (NULL
/// for the default partition; a value that does not parse rejects the file's records).
#[test]
fn rejected_records_of_partitioned_sources() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            TOML,
            (
                "data/year=2024/region=EU/a.csv",
                "id,v
1,1.5
2,oops
3,2.5
",
            ),
            (
                "data/year=2024/region=North%2FSouth/b.csv",
                "id,v
4,1.0
",
            ),
            (
                "data/year=2025/region=__HIVE_DEFAULT_PARTITION__/c.csv",
                "id,v
5,3.0
,4.0
",
            ),
            (
                "data/year=20x5/region=EU/d.csv",
                "id,v
7,1.0
",
            ),
            (
                "models.sql",
                "CREATE SOURCE t (id BIGINT NOT NULL, v DOUBLE, year INT, region VARCHAR)
                   WITH (path = 'data/', format = 'csv', on_error = 'reject', partitioned_by = 'year, region');
                 CREATE PRODUCT p ORDER BY (id) AS SELECT id, v, year, region FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT id, v, year, region FROM p", "--format", "csv"], tmp.path());
    assert_eq!(
        out,
        "id,v,year,region
1,1.5,2024,EU
3,2.5,2024,EU
4,1.0,2024,North/South
5,3.0,2025,
"
    );
    let manifest = current_manifest(tmp.path(), "t__rejected");
    let rows = read_rows(manifest_files(tmp.path(), &manifest), &["line", "reason"], "reason");
    assert_eq!(
        rows,
        [
            "| 3 | column `id` is NOT NULL but the field is empty |",
            "| 3 | column `v`: cannot read `oops` as Float64 |",
            "| 2 | column `year`: cannot read `20x5` as Int32 |",
        ]
    );
    assert_eq!(current_manifest(tmp.path(), "p")["totals"]["rows_rejected"], 3);
}

/// Writes a Parquet file of `columns` (name, values; `None` is NULL) with the given types.
fn parquet_file(path: &std::path::Path, columns: Vec<(&str, datafusion::arrow::array::ArrayRef)>) {
    use datafusion::arrow::array::RecordBatch;
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Parquet sources whose files differ from the declared columns: `strict` names the file
/// and column; `permissive` reads lossless widenings and missing nullable columns, and
/// promotes a column the files hold wider than declared (recorded in the run summary).
#[test]
fn parquet_sources_evolve_by_policy() {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let i32s = |v: Vec<i32>| Arc::new(Int32Array::from(v)) as ArrayRef;
    let i64s = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
    let strs = |v: Vec<&str>| Arc::new(StringArray::from(v)) as ArrayRef;
    parquet_file(&dir.join("data/1.parquet"), vec![("a", i32s(vec![1, 2])), ("b", strs(vec!["x", "y"]))]);
    parquet_file(
        &dir.join("data/2.parquet"),
        vec![
            ("a", i64s(vec![10, 20, 30])),
            ("b", strs(vec!["z", "z", "w"])),
            ("c", Arc::new(Float64Array::from(vec![0.5; 3]))),
        ],
    );
    parquet_file(&dir.join("data/3.parquet"), vec![("a", i32s(vec![100]))]);
    let project = |declared: &str, policy: &str| {
        write_files(
            dir,
            &[
                TOML,
                (
                    "models.sql",
                    &format!(
                        "CREATE SOURCE t ({declared}) WITH (path = 'data/', schema_evolution = '{policy}');\n\
                         CREATE PRODUCT p AS SELECT sum(a) AS s, count(b) AS bs, arrow_typeof(max(a)) AS ty FROM t;\n"
                    ),
                ),
            ],
        )
    };

    project("a BIGINT NOT NULL, b VARCHAR", "strict");
    let (code, _, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 1);
    assert_eq!(
        first_error_line(&err),
        "error: models.sql:1:15: source `t`: column `a`: 1.parquet has Int32, 2.parquet has Int64 (schema_evolution = 'strict'; 'permissive' unifies widenings)"
    );

    project("a BIGINT NOT NULL, b VARCHAR", "permissive");
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    // a: 1 + 2 + 10 + 20 + 30 + 100; b is missing from 3.parquet (NULL) and c is not read.
    assert_eq!(
        read_rows(manifest_files(dir, &current_manifest(dir, "p")), &["s", "bs", "ty"], "s"),
        ["| 163 | 5 | Int64 |"]
    );

    // Declared narrower than the files hold: promoted, with a warning and a record.
    project("a INT NOT NULL, b VARCHAR", "permissive");
    let (code, out, err) = kiln(&["build", "--json", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("warning: source `t`: column `a` declared Int32 is read as Int64, the type 2.parquet holds"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        summary["promotions"],
        serde_json::json!([{"source": "t", "column": "a", "declared": "Int32", "promoted": "Int64", "file": "2.parquet"}])
    );
    assert_eq!(read_rows(manifest_files(dir, &current_manifest(dir, "p")), &["s", "ty"], "s"), ["| 163 | Int64 |"]);

    // A NOT NULL column missing from a file is an error under either policy.
    project("a BIGINT NOT NULL, b VARCHAR NOT NULL", "permissive");
    let (code, _, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 1);
    assert_eq!(
        first_error_line(&err),
        "error: models.sql:1:15: source `t`: 3.parquet has no column `b` (it is declared NOT NULL)"
    );
}

/// Arrow IPC files are a source format too (typed, like Parquet).
#[test]
fn arrow_ipc_sources() {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    for (k, ids) in [(0, vec![1, 2, 3]), (1, vec![40, 50])] {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
            ("tag", Arc::new(StringArray::from(ids.iter().map(|i| format!("t{}", i % 2)).collect::<Vec<_>>()))),
        ])
        .unwrap();
        let file = std::fs::File::create(dir.join(format!("data/{k}.arrow"))).unwrap();
        let mut w = datafusion::arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
    }
    write_files(
        dir,
        &[
            TOML,
            (
                "models.sql",
                "CREATE SOURCE t (id BIGINT NOT NULL, tag VARCHAR) WITH (path = 'data/', format = 'arrow');
                 CREATE PRODUCT p ORDER BY (tag) AS SELECT tag, sum(id) AS s FROM t GROUP BY tag;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT tag, s FROM p", "--format", "csv"], dir);
    assert_eq!(out, "tag,s\nt0,92\nt1,4\n");
}

/// A file that does not parse keeps its products in the run: each is reported failed with
/// the syntax error, what reads them is skipped, and the rest of the project builds.
#[test]
fn a_file_that_does_not_parse_shows_its_products_failed() {
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            TOML,
            ("a.sql", "CREATE PRODUCT good AS SELECT 1 AS x;\n"),
            (
                "b.sql",
                "CREATE PRODUCT one AS SELEC 1;\n-- a comment\nCREATE OR REPLACE PRODUCT \"Two\" AS SELECT 2 AS y;\n",
            ),
            ("c.sql", "CREATE PRODUCT reader AS SELECT y FROM \"Two\";\n"),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json"], tmp.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("b.sql:1:"), "the syntax error is reported: {err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let action = |name: &str| {
        let p = summary["products"].as_array().unwrap().iter().find(|p| p["product"] == name);
        p.map(|p| (p["action"].as_str().unwrap().to_owned(), p["error"].as_str().unwrap_or_default().to_owned()))
    };
    assert_eq!(action("good").unwrap().0, "built", "{out}");
    for name in ["one", "Two"] {
        let (what, why) = action(name).unwrap_or_else(|| panic!("`{name}` missing: {out}"));
        assert_eq!(what, "failed", "{out}");
        assert!(why.contains("b.sql does not parse"), "{why}");
    }
    let (what, why) = action("reader").unwrap_or_else(|| panic!("`reader` missing: {out}"));
    assert!(what == "skipped" || what == "failed", "{out}");
    assert!(why.contains("upstream `Two` failed"), "{why}");
}

/// A source path with no data files fails the source (naming the fix), unless
/// `allow_empty = 'true'`: then it reads as empty and the build warns.
#[test]
fn an_empty_source_fails_unless_allowed_and_then_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = |allow: &str| {
        format!(
            "CREATE SOURCE t (a BIGINT NOT NULL) WITH (connector = 'files', path = 'incoming/', format = 'csv'{allow});
             CREATE PRODUCT p AS SELECT count(*) AS n FROM t;\n"
        )
    };
    write_files(tmp.path(), &[TOML, ("incoming/readme.txt", "not data\n"), ("m.sql", &model(""))]);
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("source `t`: no .csv files under") && err.contains("allow_empty = 'true'"), "{err}");
    write_files(tmp.path(), &[("m.sql", &model(", allow_empty = 'true'"))]);
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let warning = "source `t` has no .csv files under incoming (allow_empty = 'true')";
    assert!(err.contains(&format!("warning: {warning}")), "{err}");
    // The summary repeats it, and the run summary (`--json`) has it.
    assert!(out.contains(&format!("warning: {warning}")), "{out}");
    let (_, json, _) = kiln(&["build", "--json"], tmp.path());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let warnings = json["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().starts_with(warning)), "{json}");
    let (_, out, _) = kiln(&["query", "--format", "csv", "SELECT n FROM p"], tmp.path());
    assert_eq!(out, "n\n0\n");
    // Files arriving later are read.
    write_files(tmp.path(), &[("incoming/x.csv", "a\n1\n2\n")]);
    let (code, _, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("no .csv files"), "{err}");
    let (_, out, _) = kiln(&["query", "--format", "csv", "SELECT n FROM p"], tmp.path());
    assert_eq!(out, "n\n2\n");
}

/// `text` compressed with `codec` by the reference encoder of its format.
fn compress(codec: &str, text: &str) -> Vec<u8> {
    use std::io::Write;
    match codec {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        }
        "zstd" => zstd::encode_all(text.as_bytes(), 3).unwrap(),
        "bzip2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        }
        "xz" => {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        }
        other => panic!("codec {other}"),
    }
}

fn write_bytes(dir: &std::path::Path, path: &str, bytes: &[u8]) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// CSV rows `a` = `from..=to`, with `b` = `a * 2`.
fn csv_rows(from: i64, to: i64) -> String {
    (from..=to).fold(String::from("a,b\n"), |s, a| format!("{s}{a},{}\n", a * 2))
}

fn json_rows(from: i64, to: i64) -> String {
    (from..=to).map(|a| format!("{{\"a\": {a}, \"b\": {}}}\n", a * 2)).collect()
}

/// Compressed CSV and NDJSON sources: each codec by its extension (a directory of
/// `.csv.gz` files, single `.ndjson.zst`, `.csv.bz2` and `.jsonl.xz` files), a declared
/// codec on a file whose name says nothing, and rejects with the lines of the decoded text.
/// Every count and sum is computed here from the rows written.
#[test]
fn compressed_sources_are_decoded_by_extension_or_declared_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_bytes(dir, "gz/one.csv.gz", &compress("gzip", &csv_rows(1, 100)));
    write_bytes(dir, "gz/two.csv.gz", &compress("gzip", &csv_rows(101, 250)));
    write_bytes(dir, "gz/notes.txt", b"not data");
    write_bytes(dir, "hive/k=1/part.csv.zst", &compress("zstd", &csv_rows(1, 10)));
    write_bytes(dir, "hive/k=2/part.csv.zst", &compress("zstd", &csv_rows(11, 15)));
    write_bytes(dir, "single/events.ndjson.zst", &compress("zstd", &json_rows(1, 40)));
    write_bytes(dir, "single/x.csv.bz2", &compress("bzip2", &csv_rows(5, 9)));
    write_bytes(dir, "single/y.jsonl.xz", &compress("xz", &json_rows(10, 12)));
    write_bytes(dir, "single/dump.dat", &compress("gzip", &csv_rows(1, 3)));
    write_bytes(dir, "bad/t.csv.gz", &compress("gzip", "a,b\n1,2\r\n2,oops\r\n3\r\n4,8\r\n"));
    let columns = "(a BIGINT NOT NULL, b BIGINT)";
    let models = format!(
        "CREATE SOURCE g {columns} WITH (connector = 'files', path = 'gz/', format = 'csv');
         CREATE SOURCE z {columns} WITH (connector = 'files', path = 'single/events.ndjson.zst', format = 'ndjson');
         CREATE SOURCE b {columns} WITH (connector = 'files', path = 'single/x.csv.bz2', format = 'csv');
         CREATE SOURCE x {columns} WITH (connector = 'files', path = 'single/y.jsonl.xz', format = 'json');
         CREATE SOURCE f {columns} WITH (connector = 'files', path = 'single/dump.dat', format = 'csv', compression = 'gzip');
         CREATE SOURCE r {columns} WITH (connector = 'files', path = 'bad/', format = 'csv', on_error = 'reject');
         CREATE SOURCE h (a BIGINT NOT NULL, b BIGINT, k BIGINT)
           WITH (connector = 'files', path = 'hive/', format = 'csv', partitioned_by = 'k');
         CREATE PRODUCT totals ORDER BY (s) AS
           SELECT 'g' AS s, count(*) AS n, sum(a) AS sa, sum(b) AS sb FROM g
           UNION ALL SELECT 'z', count(*), sum(a), sum(b) FROM z
           UNION ALL SELECT 'b', count(*), sum(a), sum(b) FROM b
           UNION ALL SELECT 'x', count(*), sum(a), sum(b) FROM x
           UNION ALL SELECT 'f', count(*), sum(a), sum(b) FROM f
           UNION ALL SELECT 'r', count(*), sum(a), sum(b) FROM r
           UNION ALL SELECT 'h', count(*), sum(a), sum(b) FROM h WHERE k = 2;\n"
    );
    write_files(dir, &[TOML, ("models.sql", &models)]);
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "--format", "csv", "SELECT s, n, sa, sb FROM totals"], dir);
    let sum = |from: i64, to: i64| (from..=to).sum::<i64>();
    let want: Vec<String> = [
        ("b", 5, sum(5, 9)),
        ("f", 3, sum(1, 3)),
        ("g", 250, sum(1, 250)),
        ("h", 5, sum(11, 15)),
        ("r", 2, 1 + 4),
        ("x", 3, sum(10, 12)),
        ("z", 40, sum(1, 40)),
    ]
    .iter()
    .map(|(s, n, sa)| format!("{s},{n},{sa},{}", if *s == "r" { 10 } else { sa * 2 }))
    .collect();
    assert_eq!(out, format!("s,n,sa,sb\n{}\n", want.join("\n")));
    let manifest = current_manifest(dir, "r__rejected");
    let rows = read_rows(manifest_files(dir, &manifest), &["file", "line", "raw", "reason"], "line");
    let file = "./bad/t.csv.gz";
    assert_eq!(
        rows,
        [
            format!("| {file} | 3 | 2,oops | column `b`: cannot read `oops` as Int64 |"),
            format!("| {file} | 4 | 3 | expected 2 fields, found 1 |"),
        ]
    );
}

/// What a codec cannot read is an error naming the source and file, never rows of
/// garbage or none: mixed codecs in one directory, a declared codec the file is not in,
/// fail mode's bad record in a compressed file, and the option on a Parquet source.
#[test]
fn compression_errors_name_the_source_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_bytes(dir, "mixed/a.csv", csv_rows(1, 2).as_bytes());
    write_bytes(dir, "mixed/b.csv.gz", &compress("gzip", &csv_rows(3, 4)));
    write_bytes(dir, "gz/t.csv.gz", &compress("gzip", "a,b\n1,2\n2,oops\n"));
    let build = |source: &str| {
        let models = format!("{source}\nCREATE PRODUCT p AS SELECT count(*) AS n, sum(b) AS sb FROM t;\n");
        write_files(dir, &[TOML, ("models.sql", &models)]);
        kiln(&["build"], dir)
    };
    // (path, format and compression options, what the error says)
    let cases = [
        ("mixed/", "format = 'csv'", "source `t`: its files mix compressions: a.csv is none, b.csv.gz is gzip"),
        ("gz/", "format = 'csv', compression = 'zstd'", "unknown frame descriptor"),
        ("gz/", "format = 'csv'", "source `t`: gz/t.csv.gz:3: column `b`: cannot read `oops` as Int64"),
        ("gz/", "format = 'parquet', compression = 'gzip'", "compression is for csv and json sources"),
        (
            "gz/",
            "format = 'csv', compression = 'zip'",
            "compression = 'zip' (valid: 'auto', 'none', 'gzip', 'zstd', 'bzip2', 'xz')",
        ),
    ];
    for (path, options, want) in cases {
        let (code, out, err) = build(&format!(
            "CREATE SOURCE t (a BIGINT NOT NULL, b BIGINT) WITH (connector = 'files', path = '{path}', {options});"
        ));
        assert_eq!(code, 1, "{options}: {out}{err}");
        if options.ends_with("'zstd'") {
            // The decoder's own words, in its own case.
            assert!(err.contains("product `p`") && err.to_lowercase().contains(want), "{err}");
        } else {
            assert!(err.contains(want), "{options}: {err}");
        }
    }
}

/// A panic while one product builds (a bug: `KILN_FAILPOINT=panic:execute:a` makes one,
/// no input is known to) fails that product, exit 3, with a message; nothing of it is
/// committed, what reads it is skipped, and the rest of the project builds.
#[test]
fn a_panic_fails_its_product_not_the_project() {
    let tmp = project(
        "CREATE PRODUCT a AS SELECT a FROM t;\nCREATE PRODUCT b AS SELECT b FROM t;\nCREATE PRODUCT c AS SELECT a FROM a;\n",
    );
    let (code, stdout, stderr) =
        crate::kiln_env(&["build", "--json"], tmp.path(), &[("KILN_FAILPOINT", "panic:execute:a")]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(
        stderr
            .contains("error: product `a`: internal error: panicked: failpoint execute:a (nothing of it was committed"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let action = |p: &str| {
        let run = summary["products"].as_array().unwrap().iter().find(|r| r["product"] == p).unwrap().clone();
        (run["action"].as_str().unwrap().to_owned(), run["internal"].as_bool().unwrap_or(false))
    };
    assert_eq!(action("a"), ("failed".to_owned(), true));
    assert_eq!(action("b"), ("built".to_owned(), false));
    assert_eq!(action("c"), ("skipped".to_owned(), false));
    assert!(committed(tmp.path(), "a").is_none());
    let (code, out, err) = kiln(&["build"], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 built, 1 fresh"), "{out}");
}

/// Durable commits on a local warehouse, traced with strace: every data file a version
/// names, and the directories up to the warehouse, are fsync'd before that version's
/// commit file is linked into `_delta_log`, and the commit file before the build ends.
/// (Skipped without strace, unless KILN_REQUIRE_STRACE is set, as in CI.)
#[test]
fn commits_sync_their_files_before_the_commit_point() {
    let probe = std::process::Command::new("strace").arg("-V").output();
    if probe.as_ref().map_or(true, |o| !o.status.success()) {
        assert!(std::env::var_os("KILN_REQUIRE_STRACE").is_none(), "strace is required here");
        eprintln!("skipped: no strace");
        return;
    }
    let tmp = project("CREATE PRODUCT p PARTITIONED BY (b) AS SELECT a, b FROM t;\n");
    let dir = tmp.path().canonicalize().unwrap();
    let trace = dir.join("trace.txt");
    let status = std::process::Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync,linkat,link,rename,renameat,renameat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&trace).unwrap().lines().map(str::to_owned).collect();
    let synced_at = |path: &str| lines.iter().position(|l| l.contains("fsync(") && l.contains(&format!("<{path}>")));
    let log = dir.join("warehouse/p/_delta_log/00000000000000000000.json").display().to_string();
    let commit_point = lines
        .iter()
        .position(|l| (l.contains("link") || l.contains("rename")) && l.contains(&format!("\"{log}\"")))
        .unwrap_or_else(|| panic!("no commit of {log} in the trace"));
    let manifest = crate::current_manifest(&dir, "p");
    let files = crate::manifest_files(&dir, &manifest);
    assert_eq!(files.len(), 2, "one file per value of b");
    for file in &files {
        let at = synced_at(file).unwrap_or_else(|| panic!("{file} was never synced"));
        assert!(at < commit_point, "{file} synced after the commit point");
        let build_dir = std::path::Path::new(file).parent().unwrap().display().to_string();
        assert!(synced_at(&build_dir).is_some_and(|d| d < commit_point), "{build_dir} not synced before the commit");
    }
    assert!(synced_at(&log).is_some_and(|at| at > commit_point), "the commit file was not synced");
    assert!(synced_at(&dir.join("warehouse/p/_delta_log").display().to_string()).is_some());
}

/// Parquet files whose embedded Arrow schema (`ARROW:schema`) holds what arrow-rs panics
/// on (an unknown type, an integer of -2,147,483,584 bits, ...: found by `cargo xtask fuzz`,
/// kept in its corpus) fail their source with the file named, exit 1: no panic, and the
/// other products build.
#[test]
fn parquet_files_with_a_corrupt_embedded_arrow_schema_are_refused() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/fuzz/corpus/parquet");
    for (file, problem) in [
        ("regression-arrow-schema-7282-a.parquet", "column 2: type NONE"),
        ("regression-arrow-schema-14460-a.parquet", "column `id`: an integer of -2147483584 bits"),
        ("regression-arrow-schema-15187-a.parquet", "column `at`: a time unit <UNKNOWN 18>"),
        ("regression-arrow-schema-6241-b.parquet", "column `price`: a floating point precision <UNKNOWN 770>"),
    ] {
        let dir = project(
            "CREATE SOURCE s (id BIGINT) WITH (connector = 'files', path = 'data/', format = 'parquet');\n\
             CREATE PRODUCT p AS SELECT * FROM s;\nCREATE PRODUCT q AS SELECT 1 AS x;\n",
        );
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::copy(corpus.join(file), dir.path().join("data/x.parquet")).unwrap();
        let (code, out, err) = kiln(&["build"], dir.path());
        assert_eq!(code, 1, "{file}: {out}{err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        let expected = format!("source `s`: x.parquet: its embedded Arrow schema (ARROW:schema) is invalid: {problem}");
        assert!(err.contains(&expected), "{file}: {err}");
        assert!(format!("{out}{err}").contains("1 built"), "{file}: {out}{err}");
    }
}
