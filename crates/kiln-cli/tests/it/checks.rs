//! Write–audit–publish: constraints and audits run on the staged build and block its
//! commit; `kiln test` runs them on committed builds and runs unit tests on fixtures;
//! `kiln freshness`. Every expected count below is worked out by hand from the rows the
//! test writes.

use std::path::Path;

use crate::{committed, kiln, write_files};

const TOML: (&str, &str) = ("kiln.toml", "[project]\nname = \"checks\"\n");

const MODELS: &str = "
CREATE SOURCE items (k BIGINT NOT NULL, pid BIGINT, amount BIGINT, tag VARCHAR)
  WITH (connector = 'files', path = 'data/items.csv', format = 'csv');
CREATE PRODUCT parents (id BIGINT PRIMARY KEY) AS SELECT * FROM (VALUES (1), (2), (3)) t(id);
CREATE PRODUCT items_clean (
  k BIGINT NOT NULL PRIMARY KEY,
  pid BIGINT REFERENCES parents (id),
  amount BIGINT CHECK (amount >= 0),
  tag VARCHAR,
  UNIQUE (pid, tag)
) AS SELECT * FROM items;
CREATE PRODUCT downstream AS SELECT count(*) AS n FROM items_clean;
CREATE PRODUCT independent AS SELECT 1 AS one;
";

/// Passes every constraint: a NULL reference and a NULL amount are not violations, and
/// UNIQUE does not compare rows with a NULL key column.
const CLEAN: &str = "k,pid,amount,tag\n1,1,10,a\n2,2,20,b\n3,,5,c\n4,3,,a\n";

/// One violation of each kind, counted by hand: key 1 twice (1 duplicated key), pids 9
/// and 8 have no parent (2 rows), amount -3 (1 row), (pid, tag) = (2, b) twice (1
/// duplicated key).
const SEEDED: &str = "k,pid,amount,tag\n1,1,10,a\n1,2,20,b\n5,9,1,x\n6,8,2,y\n7,1,-3,z\n8,2,4,b\n";

fn project(models: &str, csv: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[TOML, ("data/items.csv", csv), ("models.sql", models)]);
    tmp
}

/// What the Python `deltalake` package reads of `dataset`: its version and its rows
/// sorted, as text.
pub(crate) fn delta_reads(dir: &Path, dataset: &str) -> String {
    let python = crate::venv("delta-venv", &["deltalake", "polars", "pyarrow"], "import deltalake, polars, pyarrow");
    // os._exit after the flush: the reader's threads have been seen to abort the
    // interpreter's shutdown ("terminate called without an active exception"), after the
    // answer was printed.
    let script = "import os, sys\nfrom deltalake import DeltaTable\nt = DeltaTable(sys.argv[1])\n\
                  rows = sorted(map(str, t.to_pyarrow_table().to_pylist()))\nprint(t.version(), rows, flush=True)\n\
                  os._exit(0)";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .arg(dir.join("warehouse").join(dataset))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn product<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["products"].as_array().unwrap().iter().find(|p| p["product"] == name).unwrap()
}

/// check name -> (status, failing rows) of one product's line.
fn checks(line: &serde_json::Value) -> Vec<(String, String, u64)> {
    line["checks"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap().to_owned(),
                        c["status"].as_str().unwrap().to_owned(),
                        c["failing_rows"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn query(dir: &Path, sql: &str) -> String {
    let (code, out, err) = kiln(&["query", sql, "--format", "csv"], dir);
    assert_eq!(code, 0, "{sql}: {err}");
    out
}

/// Every file of `dir`'s warehouse under `dataset` with its bytes (the table as any
/// reader sees it: log and data files).
fn snapshot(dir: &Path, dataset: &str) -> Vec<(String, Vec<u8>)> {
    let root = dir.join("warehouse").join(dataset);
    crate::files_under(&root)
        .into_iter()
        .map(|rel| (rel.to_string_lossy().into_owned(), std::fs::read(root.join(&rel)).unwrap()))
        .collect()
}

/// The files the committed version of `dataset` reads, with their bytes.
fn committed_files(dir: &Path, dataset: &str) -> Vec<(String, Vec<u8>)> {
    let manifest = committed(dir, dataset).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), std::fs::read(dir.join("warehouse").join(&f.path)).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn seeded_violations_block_the_commit_with_their_counts() {
    let tmp = project(MODELS, CLEAN);
    let dir = tmp.path();
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let first = summary(&out);
    let passed = checks(product(&first, "items_clean"));
    assert_eq!(
        passed,
        [
            ("primary_key(k)".to_owned(), "pass".to_owned(), 0),
            ("references(pid -> parents(id))".to_owned(), "pass".to_owned(), 0),
            ("check(amount >= 0)".to_owned(), "pass".to_owned(), 0),
            ("unique(pid, tag)".to_owned(), "pass".to_owned(), 0),
        ]
    );
    let version = committed(dir, "items_clean").unwrap().version;
    let before_files = committed_files(dir, "items_clean");
    let before_log: Vec<_> =
        snapshot(dir, "items_clean").into_iter().filter(|(p, _)| p.starts_with("_delta_log")).collect();
    let before_rows = query(dir, "SELECT * FROM items_clean ORDER BY k");
    let before_delta = delta_reads(dir, "items_clean");
    assert!(before_delta.starts_with("0 ") && before_delta.contains("'tag': 'c'"), "{before_delta}");

    write_files(dir, &[("data/items.csv", SEEDED)]);
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 1, "{out}{err}");
    let second = summary(&out);
    let line = product(&second, "items_clean");
    assert_eq!(line["action"], "audit_failed");
    assert_eq!(
        checks(line),
        [
            ("primary_key(k)".to_owned(), "error".to_owned(), 1),
            ("references(pid -> parents(id))".to_owned(), "error".to_owned(), 2),
            ("check(amount >= 0)".to_owned(), "error".to_owned(), 1),
            ("unique(pid, tag)".to_owned(), "error".to_owned(), 1),
        ]
    );
    assert_eq!(product(&second, "downstream")["action"], "skipped");
    assert_eq!(product(&second, "downstream")["error"], "upstream `items_clean` failed its checks");
    assert!(err.contains("error: product `items_clean`: checks failed: primary_key(k): 1 failing row(s);"), "{err}");
    // Nothing was published: the same version, the same log, the same bytes, the same rows.
    assert_eq!(committed(dir, "items_clean").unwrap().version, version);
    let after_log: Vec<_> =
        snapshot(dir, "items_clean").into_iter().filter(|(p, _)| p.starts_with("_delta_log")).collect();
    assert_eq!(after_log, before_log);
    assert_eq!(committed_files(dir, "items_clean"), before_files);
    assert_eq!(query(dir, "SELECT * FROM items_clean ORDER BY k"), before_rows);
    assert_eq!(delta_reads(dir, "items_clean"), before_delta, "an external reader sees the previous version");
    // The failing rows are kept, by check, as JSON objects.
    assert_eq!(
        query(dir, "SELECT \"check\", count(*) AS n FROM items_clean__failures GROUP BY 1 ORDER BY 1"),
        "check,n\ncheck(amount >= 0),1\nprimary_key(k),1\nreferences(pid -> parents(id)),2\n\"unique(pid, tag)\",1\n"
    );
    assert_eq!(
        query(dir, "SELECT \"row\" FROM items_clean__failures WHERE \"check\" = 'primary_key(k)'"),
        "row\n\"{\"\"k\"\":1,\"\"kiln_rows\"\":2}\"\n"
    );
    assert_eq!(
        query(dir, "SELECT \"row\" FROM items_clean__failures WHERE kind = 'references' ORDER BY 1"),
        "row\n\"{\"\"k\"\":5,\"\"pid\"\":9,\"\"amount\"\":1,\"\"tag\"\":\"\"x\"\"}\"\n\"{\"\"k\"\":6,\"\"pid\"\":8,\"\"amount\"\":2,\"\"tag\"\":\"\"y\"\"}\"\n"
    );

    // Fixed data commits, and the failures dataset is emptied.
    write_files(dir, &[("data/items.csv", CLEAN.replace("4,3,,a", "4,3,,d").as_str())]);
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(product(&summary(&out), "items_clean")["action"], "built");
    assert!(committed(dir, "items_clean").unwrap().version > version);
    assert_eq!(query(dir, "SELECT count(*) AS n FROM items_clean__failures"), "n\n0\n");
    assert_eq!(query(dir, "SELECT n FROM downstream"), "n\n4\n");
}

#[test]
fn audits_warn_or_fail_by_threshold_and_rerun_when_edited() {
    let audits = "
CREATE AUDIT big_amounts ON items_clean WITH (severity = 'warn') AS SELECT * FROM items_clean WHERE amount > 6;
CREATE AUDIT tagged_a ON items_clean WITH (error_after = 2) AS SELECT * FROM items_clean WHERE tag = 'a';
CREATE AUDIT volume ON items_clean WITH (min_rows = 3, max_rows = 10);
";
    let tmp = project(&format!("{MODELS}{audits}"), CLEAN);
    let dir = tmp.path();
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let line = summary(&out);
    let line = product(&line, "items_clean");
    assert_eq!(line["action"], "built");
    // amounts 10 and 20 exceed 6 (a warning); two rows are tagged `a`, not more than 2;
    // 4 rows are within [3, 10].
    let found = checks(line);
    assert_eq!(
        found[4..],
        [
            ("big_amounts".to_owned(), "warn".to_owned(), 2),
            ("tagged_a".to_owned(), "pass".to_owned(), 2),
            ("volume".to_owned(), "pass".to_owned(), 0),
        ]
    );
    let build_id = committed(dir, "items_clean").unwrap().build_id;
    let (_, text, _) = kiln(&["build"], dir);
    assert!(!text.contains("checks:"), "unchanged checks do not run again on a fresh build:\n{text}");

    // Editing an audit re-runs the checks on the committed build; the build id stays.
    write_files(dir, &[("models.sql", &format!("{MODELS}{}", audits.replace("min_rows = 3", "min_rows = 5")))]);
    let (code, out, _) = kiln(&["plan"], dir);
    assert_eq!(code, 0);
    assert!(out.contains("its checks changed") && out.contains("checks: primary_key(k)"), "{out}");
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 1, "{out}{err}");
    let s = summary(&out);
    let line = product(&s, "items_clean");
    assert_eq!(line["action"], "audit_failed");
    assert_eq!(checks(line)[6], ("volume".to_owned(), "error".to_owned(), 1));
    assert_eq!(committed(dir, "items_clean").unwrap().build_id, build_id);
    assert_eq!(
        query(dir, "SELECT \"row\" FROM items_clean__failures WHERE \"check\" = 'volume'"),
        "row\n\"{\"\"kiln_rows\"\":4}\"\n"
    );
    // Still failing: the failure is not forgotten on the next run.
    let (code, _, _) = kiln(&["build"], dir);
    assert_eq!(code, 1);
    // A third row tagged `a` passes error_after = 2 no more.
    write_files(dir, &[("models.sql", &format!("{MODELS}{audits}")), ("data/items.csv", &format!("{CLEAN}5,1,1,a\n"))]);
    let (code, out, _) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 1);
    assert_eq!(checks(product(&summary(&out), "items_clean"))[5], ("tagged_a".to_owned(), "error".to_owned(), 3));
}

#[test]
fn a_kill_during_the_checks_publishes_nothing() {
    let tmp = project(MODELS, CLEAN);
    let dir = tmp.path();
    assert_eq!(kiln(&["build"], dir).0, 0);
    let before = snapshot(dir, "items_clean");
    write_files(dir, &[("data/items.csv", &format!("{CLEAN}9,1,1,q\n"))]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .current_dir(dir)
        .env("KILN_FAILPOINT", "during_checks")
        .output()
        .unwrap();
    assert!(!out.status.success() && out.status.code().is_none(), "killed by the failpoint: {out:?}");
    // The staged files may remain (gc sweeps them); the table's log did not move.
    let log =
        |s: Vec<(String, Vec<u8>)>| s.into_iter().filter(|(p, _)| p.starts_with("_delta_log")).collect::<Vec<_>>();
    assert_eq!(log(snapshot(dir, "items_clean")), log(before));
    assert_eq!(query(dir, "SELECT count(*) AS n FROM items_clean"), "n\n4\n");
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(query(dir, "SELECT count(*) AS n FROM items_clean"), "n\n5\n");
}

#[test]
fn kiln_test_runs_checks_on_committed_builds_and_unit_tests_on_fixtures() {
    let tests = "
CREATE PRODUCT per_parent (pid BIGINT, n BIGINT NOT NULL, total BIGINT) AS
  SELECT i.pid, count(*) AS n, sum(i.amount) AS total FROM items_clean i JOIN parents p ON p.id = i.pid GROUP BY i.pid;
CREATE TEST per_parent_sums FOR per_parent
GIVEN (
  items_clean AS (VALUES (1, 1, 10, 'a'), (2, 1, 5, 'b'), (3, 2, NULL, 'c'), (4, 7, 1, 'd')),
  parents FROM 'fixtures/parents.csv'
)
EXPECT (VALUES (1, 2, 15), (2, 1, NULL));
CREATE TEST per_parent_wrong FOR per_parent
GIVEN (items_clean AS (VALUES (1, 1, 10, 'a'), (2, 2, 3, 'b')), parents AS (VALUES (1), (2)))
EXPECT (VALUES (1, 1, 11), (3, 1, 1));
";
    let tmp = project(&format!("{MODELS}{tests}"), CLEAN);
    let dir = tmp.path();
    write_files(dir, &[("fixtures/parents.csv", "id\n1\n2\n")]);
    // Before any build: checks need a committed build, unit tests need none.
    let (code, out, err) = kiln(&["test", "--json", "--junit", "junit.xml"], dir);
    assert_eq!(code, 1, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["not_built"], serde_json::json!(["parents", "items_clean"]));
    assert!(!dir.join("warehouse/per_parent").exists(), "unit tests write nothing");
    let tests = report["tests"].as_array().unwrap();
    assert_eq!((tests[0]["name"].as_str(), tests[0]["status"].as_str()), (Some("per_parent_sums"), Some("pass")));
    assert_eq!(tests[1]["status"], "fail");
    // (1, 1, 10) was produced where (1, 1, 11) was expected; (2, 1, 3) is unexpected.
    assert_eq!(tests[1]["mismatches"], serde_json::json!(["row (1, ...): column `total`: expected 11, got 10"]));
    assert_eq!(tests[1]["missing"], serde_json::json!(["(1, 1, 11)", "(3, 1, 1)"]));
    assert_eq!(tests[1]["unexpected"], serde_json::json!(["(1, 1, 10)", "(2, 1, 3)"]));
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuite name=\"kiln unit tests\" tests=\"2\" failures=\"1\" errors=\"0\""), "{junit}");
    assert!(junit.contains("<testcase classname=\"per_parent\" name=\"per_parent_wrong\""), "{junit}");

    let (code, text, _) = kiln(&["test"], dir);
    assert_eq!(code, 1);
    assert!(text.contains("~ row (1, ...): column `total`: expected 11, got 10"), "{text}");

    // On a built warehouse the checks run on the committed builds, without building.
    assert_eq!(kiln(&["build"], dir).0, 0);
    let (code, out, _) = kiln(&["test", "--json", "--select", "items_clean"], dir);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["checks"].as_array().unwrap().len(), 4);
    assert!(report["tests"].as_array().unwrap().is_empty());
    // A violation that reached the warehouse another way is found by `kiln test`.
    write_files(
        dir,
        &[(
            "models.sql",
            &format!("{MODELS}{}", "CREATE AUDIT no_b ON items_clean AS SELECT * FROM items_clean WHERE tag = 'b';"),
        )],
    );
    let (code, out, _) = kiln(&["test", "--json", "--select", "items_clean"], dir);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let no_b = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "no_b").unwrap();
    assert_eq!((no_b["status"].as_str(), no_b["failing_rows"].as_u64()), (Some("error"), Some(1)));

    // The two unit tests are no longer defined: gc deletes their last results.
    assert!(dir.join(".kiln/tests/per_parent_sums.json").is_file());
    let (code, out, err) = kiln(&["gc", "--json"], dir);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["test_results"], serde_json::json!(["per_parent_sums", "per_parent_wrong"]), "{out}");
    assert!(!dir.join(".kiln/tests/per_parent_sums.json").exists());
    let (_, out, _) = kiln(&["gc", "--json"], dir);
    assert!(!out.contains("test_results"), "{out}");
}

#[test]
fn bad_check_definitions_are_located_errors() {
    let cases = [
        (
            "CREATE PRODUCT p (a BIGINT, PRIMARY KEY (nope)) AS SELECT 1 AS a;",
            "models.sql:1:42: product `p`: primary_key(nope) names `nope`, which is not a declared column",
        ),
        (
            "CREATE PRODUCT p (a BIGINT REFERENCES nowhere (id)) AS SELECT 1 AS a;",
            "models.sql:1:19: check `references(a -> nowhere(id))`: REFERENCES `nowhere`: no such source or product",
        ),
        (
            "CREATE PRODUCT p (a BIGINT CHECK (b > 0)) AS SELECT 1 AS a;",
            "models.sql:1:19: check `check(b > 0)`: Schema error: No field named b.",
        ),
        ("CREATE AUDIT x ON missing AS SELECT 1;", "models.sql:1:19: unknown table `missing`"),
        (
            "CREATE PRODUCT p AS SELECT 1 AS a;\nCREATE AUDIT x ON p AS SELECT * FROM items;",
            "models.sql:2:19: check `x`: the audit's query does not read `p`",
        ),
        (
            "CREATE PRODUCT p AS SELECT k FROM items;\nCREATE TEST t FOR p GIVEN (items AS (VALUES (1, 2))) EXPECT (VALUES (1));",
            "models.sql:2:28: check `t`: the rows for `items` have 2 column(s); `items` has 4 (k, pid, amount, tag)",
        ),
        (
            "CREATE PRODUCT p AS SELECT k FROM items;\nCREATE TEST t FOR p GIVEN (items AS (VALUES (make_array(1, 2), 1, 2, 'x'))) EXPECT (VALUES (1));",
            "models.sql:2:28: check `t`: column 1 of the rows for `items` (`k`) is List(",
        ),
        (
            "CREATE PRODUCT p AS SELECT k FROM items;\nCREATE TEST t FOR p GIVEN (parents AS (VALUES (1))) EXPECT (VALUES (1));",
            "models.sql:2:28: check `t`: `p` does not read `parents` (it reads: items)",
        ),
        (
            "CREATE PRODUCT p (a BIGINT DEFAULT 1) AS SELECT 1 AS a;",
            "models.sql:1:19: column `a`: `DEFAULT 1` is not a product column option",
        ),
        (
            "CREATE AUDIT x ON items AS SELECT * FROM items;",
            "models.sql:1:19: product `x`: `items` is a source; audits and tests check products",
        ),
    ];
    for (sql, expected) in cases {
        let tmp = project(&format!("{MODELS}{sql}"), CLEAN);
        let dir = tmp.path();
        let test = sql.contains("CREATE TEST");
        let (code, out, err) = kiln(if test { &["test"] } else { &["build"] }, dir);
        let all = format!("{out}{err}");
        assert_eq!(code, 1, "{sql}: {all}");
        // Positions are in the file: MODELS adds its lines before the case.
        let offset = MODELS.lines().count() as u64;
        let expected = shift_line(expected, offset);
        assert!(all.contains(&expected), "{sql}:\nwanted {expected}\ngot {all}");
    }
}

/// `models.sql:L:C` with L moved down by `by` lines.
fn shift_line(text: &str, by: u64) -> String {
    let rest = text.strip_prefix("models.sql:").unwrap();
    let (line, tail) = rest.split_once(':').unwrap();
    format!("models.sql:{}:{tail}", line.parse::<u64>().unwrap() + by)
}

#[test]
fn freshness_by_column_and_by_file_times() {
    let models = "
CREATE SOURCE events (id BIGINT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (connector = 'files', path = 'data/events.csv', format = 'csv',
        freshness_warn = '1 day', freshness_error = '30 days', freshness_column = 'at');
CREATE SOURCE files (id BIGINT NOT NULL, at TIMESTAMP NOT NULL)
  WITH (connector = 'files', path = 'data/events.csv', format = 'csv', freshness_error = '2 days');
CREATE PRODUCT n AS SELECT count(*) AS n FROM events;
";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The newest event is 3 days old: past freshness_warn, within freshness_error.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let at = |secs_ago: i64| {
        let t = now - secs_ago;
        let (days, rem) = (t.div_euclid(86_400), t.rem_euclid(86_400));
        let (y, m, d) = ::kiln::artifact::time::civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
    };
    let csv = format!("id,at\n1,{}\n2,{}\n", at(10 * 86_400), at(3 * 86_400));
    write_files(dir, &[TOML, ("data/events.csv", &csv), ("models.sql", models)]);
    let (code, out, err) = kiln(&["freshness", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let events = &report["sources"][0];
    assert_eq!((events["source"].as_str(), events["status"].as_str()), (Some("events"), Some("warn")));
    let age = events["age_seconds"].as_f64().unwrap();
    assert!((3.0 * 86_400.0..3.0 * 86_400.0 + 120.0).contains(&age), "{age}");
    assert_eq!(report["sources"][1]["status"], "pass", "the file was just written");
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0);
    assert!(err.contains("source `events` is stale (warn)"), "{err}");
    // A file modified 5 days ago is past files' freshness_error: exit 1.
    let status = std::process::Command::new("touch")
        .args(["-d", "5 days ago"])
        .arg(dir.join("data/events.csv"))
        .status()
        .unwrap();
    assert!(status.success());
    let (code, out, _) = kiln(&["freshness"], dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.lines().any(|l| l.starts_with("files ") && l.contains("error")), "{out}");
}
