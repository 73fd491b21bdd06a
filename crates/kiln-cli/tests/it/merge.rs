//! Products merged by key (`incremental = 'by_unique_key'`), end to end: after random
//! sequences of arriving change files, rewritten and removed files and restatements, each
//! product equals a reference computed here (the newest row per key over the files now),
//! each build merged exactly the new files (or was computed whole when a merged file was
//! rewritten or removed, or on --restate), and the rows it reports updated and inserted
//! are the keys the reference had before and did not. Bad input fails with nothing
//! committed; a build killed before its commit leaves the previous content.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::{kiln, kiln_env, write_files};

const MODELS: &str = "\
CREATE SOURCE changes (id BIGINT, grp VARCHAR, amount BIGINT, v BIGINT)
WITH (path = 'data/changes', format = 'csv');

CREATE PRODUCT latest
WITH (incremental = 'by_unique_key', unique_key = 'id')
AS SELECT id, grp, amount, v FROM changes
   QUALIFY row_number() OVER (PARTITION BY id ORDER BY v DESC) = 1;

CREATE PRODUCT latest_by_grp PARTITIONED BY (grp)
WITH (incremental = 'by_unique_key', unique_key = 'grp, id')
AS SELECT grp, id, amount * 2 AS doubled, v FROM changes
   QUALIFY row_number() OVER (PARTITION BY grp, id ORDER BY v DESC) = 1;
";

/// One file's rows: (id, grp, amount); each row gets the next version `v`, so a later
/// file's row for a key is always the newer one.
type Rows = Vec<(i64, char, i64)>;

#[derive(Debug, Clone)]
enum Step {
    Add(Rows),
    /// File `k % files` is rewritten (its rows get new versions).
    Rewrite(usize, Rows),
    Remove(usize),
    Restate,
}

fn rows() -> impl Strategy<Value = Rows> {
    proptest::collection::vec((0..12i64, prop_oneof![Just('a'), Just('b')], -50..50i64), 0..6)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => rows().prop_map(Step::Add),
        1 => (0..8usize, rows()).prop_map(|(k, r)| Step::Rewrite(k, r)),
        1 => (0..8usize).prop_map(Step::Remove),
        1 => Just(Step::Restate),
    ]
}

/// A file's text, its rows versioned from `*next` on.
fn csv(rows: &Rows, next: &mut i64) -> (String, Vec<(i64, char, i64, i64)>) {
    let mut text = "id,grp,amount,v\n".to_owned();
    let mut versioned = Vec::new();
    for &(id, g, a) in rows {
        *next += 1;
        text.push_str(&format!("{id},{g},{a},{next}\n"));
        versioned.push((id, g, a, *next));
    }
    (text, versioned)
}

type Files = BTreeMap<String, Vec<(i64, char, i64, i64)>>;

/// The newest row per key of `key` over all files: `(key, (id, grp, amount, v))`.
fn newest<K: Ord>(files: &Files, key: impl Fn(&(i64, char, i64, i64)) -> K) -> BTreeMap<K, (i64, char, i64, i64)> {
    let mut out: BTreeMap<K, (i64, char, i64, i64)> = BTreeMap::new();
    for row in files.values().flatten() {
        let e = out.entry(key(row)).or_insert(*row);
        if row.3 > e.3 {
            *e = *row;
        }
    }
    out
}

fn reference(files: &Files) -> (String, String) {
    let mut latest = "id,grp,amount,v\n".to_owned();
    for (id, g, a, v) in newest(files, |r| r.0).values() {
        latest.push_str(&format!("{id},{g},{a},{v}\n"));
    }
    let mut by_grp = "grp,id,doubled,v\n".to_owned();
    for (id, g, a, v) in newest(files, |r| (r.1, r.0)).values() {
        by_grp.push_str(&format!("{g},{id},{},{v}\n", a * 2));
    }
    (latest, by_grp)
}

fn query(dir: &Path, sql: &str) -> String {
    let (code, out, err) = kiln(&["query", "--format", "csv", sql], dir);
    assert_eq!(code, 0, "{err}");
    out
}

/// Both products as CSV (`kiln query` prints nothing, not even a header, for no rows).
fn content(dir: &Path) -> (String, String) {
    let or_header = |out: String, header: &str| if out.is_empty() { format!("{header}\n") } else { out };
    (
        or_header(query(dir, "SELECT * FROM latest ORDER BY id"), "id,grp,amount,v"),
        or_header(query(dir, "SELECT grp, id, doubled, v FROM latest_by_grp ORDER BY grp, id"), "grp,id,doubled,v"),
    )
}

/// `kiln build ARGS --json`: each product's `merge` report.
fn build(dir: &Path, args: &[&str]) -> BTreeMap<String, serde_json::Value> {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(&all, dir);
    assert_eq!(code, 0, "kiln {all:?}: {out}{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    summary["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["product"].as_str().unwrap().to_owned(), p["merge"].clone()))
        .collect()
}

fn run_history(first: Rows, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("kiln.toml", "[project]\nname = \"merge\"\n"), ("models.sql", MODELS)]);
    let mut files = Files::new();
    let (mut next_file, mut next_version) = (0, 0i64);
    let mut history = vec![Step::Add(first)];
    history.extend(steps);
    for (k, step) in history.into_iter().enumerate() {
        let before = files.clone();
        let names: Vec<String> = files.keys().cloned().collect();
        // Some(n): n new files merged; None: computed whole.
        let merged = match &step {
            Step::Add(rows) => {
                let name = format!("c{next_file:03}.csv");
                next_file += 1;
                let (text, versioned) = csv(rows, &mut next_version);
                write_files(dir, &[(&format!("data/changes/{name}"), &text)]);
                files.insert(name, versioned);
                (k > 0).then_some(1)
            }
            Step::Rewrite(j, rows) if !names.is_empty() => {
                let name = &names[*j % names.len()];
                let (text, versioned) = csv(rows, &mut next_version);
                write_files(dir, &[(&format!("data/changes/{name}"), &text)]);
                files.insert(name.clone(), versioned);
                None
            }
            Step::Remove(j) if names.len() > 1 => {
                let name = &names[*j % names.len()];
                std::fs::remove_file(dir.join("data/changes").join(name)).unwrap();
                files.remove(name);
                None
            }
            Step::Restate => None,
            _ => continue,
        };
        let restate = matches!(step, Step::Restate);
        let reports = build(dir, if restate { &["--restate"] } else { &[] });
        prop_assert_eq!(content(dir), reference(&files), "after step {} ({:?})", k, step);
        for (product, key) in [("latest", 0usize), ("latest_by_grp", 1)] {
            let report = &reports[product];
            match merged {
                Some(n) => {
                    prop_assert!(report["rebuild"].is_null(), "{product} after {step:?}: {report}");
                    prop_assert_eq!(report["files"].as_u64(), Some(n), "{} after {:?}", product, step);
                    // The keys of the new file the product held before are updated.
                    let (old, now) = if key == 0 {
                        let old = newest(&before, |r| (r.0, ' '));
                        let new: Files = files
                            .iter()
                            .filter(|(n, _)| !before.contains_key(*n))
                            .map(|(n, r)| (n.clone(), r.clone()))
                            .collect();
                        (old, newest(&new, |r| (r.0, ' ')))
                    } else {
                        let new: Files = files
                            .iter()
                            .filter(|(n, _)| !before.contains_key(*n))
                            .map(|(n, r)| (n.clone(), r.clone()))
                            .collect();
                        (newest(&before, |r| (r.0, r.1)), newest(&new, |r| (r.0, r.1)))
                    };
                    let updated = now.keys().filter(|k| old.contains_key(k)).count() as u64;
                    prop_assert_eq!(report["updated"].as_u64(), Some(updated), "{} after {:?}", product, step);
                    prop_assert_eq!(
                        report["inserted"].as_u64(),
                        Some(now.len() as u64 - updated),
                        "{} after {:?}",
                        product,
                        step
                    );
                }
                None => {
                    let why = report["rebuild"].as_str().unwrap_or("");
                    let expected = match step {
                        Step::Restate => "--restate",
                        Step::Rewrite(..) => "was replaced",
                        Step::Remove(_) => "was removed",
                        Step::Add(_) => "the first build",
                    };
                    prop_assert!(why.contains(expected), "{product} after {step:?}: {report}");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn merged_products_equal_the_newest_row_per_key_and_merge_only_new_files(
        first in rows(),
        steps in proptest::collection::vec(step(), 1..7),
    ) {
        run_history(first, steps)?;
    }
}

#[test]
fn duplicate_or_null_keys_fail_with_nothing_committed_and_a_kill_before_the_commit_keeps_the_previous_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = "\
CREATE SOURCE changes (id BIGINT, amount BIGINT) WITH (path = 'data/changes', format = 'csv');
CREATE PRODUCT plain WITH (incremental = 'by_unique_key', unique_key = 'id')
AS SELECT id, amount FROM changes;
";
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"merge\"\n"),
            ("models.sql", models),
            ("data/changes/a.csv", "id,amount\n1,10\n2,20\n"),
        ],
    );
    build(dir, &[]);
    let rows = |dir: &Path| query(dir, "SELECT * FROM plain ORDER BY id");
    assert_eq!(rows(dir), "id,amount\n1,10\n2,20\n");

    write_files(dir, &[("data/changes/b.csv", "id,amount\n3,30\n3,31\n")]);
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("2 rows have the unique_key id = 3") && err.contains("nothing was committed"), "{err}");
    assert_eq!(rows(dir), "id,amount\n1,10\n2,20\n");

    write_files(dir, &[("data/changes/b.csv", "id,amount\n,30\n")]);
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("a row has a NULL in its unique_key (id = NULL)"), "{err}");
    assert_eq!(rows(dir), "id,amount\n1,10\n2,20\n");

    write_files(dir, &[("data/changes/b.csv", "id,amount\n2,21\n3,30\n")]);
    let (code, _, _) = kiln_env(&["build"], dir, &[("KILN_FAILPOINT", "merge_commit#1")]);
    assert_ne!(code, 0, "the failpoint aborts the build");
    assert_eq!(rows(dir), "id,amount\n1,10\n2,20\n");
    let reports = build(dir, &[]);
    assert!(reports["plain"]["rebuild"].is_null(), "{:?}", reports["plain"]);
    assert_eq!(reports["plain"]["updated"].as_u64(), Some(1));
    assert_eq!(reports["plain"]["inserted"].as_u64(), Some(1));
    assert_eq!(rows(dir), "id,amount\n1,10\n2,21\n3,30\n");
    // A query change computes it whole, over all the files: without a way to tell which
    // of a key's rows is the newest, that is refused, and the merged rows stay.
    let changed = models.replace("SELECT id, amount", "SELECT id, amount + 1 AS amount");
    write_files(dir, &[("models.sql", &changed)]);
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("2 rows have the unique_key id = 2"), "{err}");
    assert_eq!(rows(dir), "id,amount\n1,10\n2,21\n3,30\n");
    // With one, it is computed whole.
    let changed = models.replace(
        "FROM changes;",
        "FROM (SELECT *, row_number() OVER () AS n FROM changes) QUALIFY row_number() OVER (PARTITION BY id ORDER BY amount DESC) = 1;",
    );
    write_files(dir, &[("models.sql", &changed)]);
    let reports = build(dir, &[]);
    assert_eq!(reports["plain"]["rebuild"].as_str(), Some("the query changed"), "{:?}", reports["plain"]);
    assert_eq!(rows(dir), "id,amount\n1,10\n2,21\n3,30\n");
}

#[test]
fn bad_merge_options_are_located_errors() {
    let cases: &[(&str, &str)] = &[
        ("WITH (incremental = 'by_unique_key')", "needs unique_key = '<column>, ...'"),
        ("WITH (incremental = 'by_unique_key', unique_key = 'nope')", "unique_key `nope` is not an output column"),
        ("WITH (incremental = 'by_unique_key', unique_key = 'id, id')", "unique_key names `id` twice"),
        ("WITH (unique_key = 'id')", "unique_key without incremental = 'by_unique_key'"),
        (
            "WITH (incremental = 'by_unique_key', unique_key = 'id', lookback = '2')",
            "lookback is an option of incremental = 'by_time'",
        ),
        (
            "WITH (incremental = 'by_unique_key', unique_key = 'id', existing_data = 'append')",
            "existing_data = 'append' with incremental = 'by_unique_key'",
        ),
    ];
    for (with, expected) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let models = format!(
            "CREATE SOURCE changes (id BIGINT, amount BIGINT) WITH (path = 'data/changes', format = 'csv');\n\
             CREATE PRODUCT p\n{with}\nAS SELECT id, amount FROM changes;\n"
        );
        write_files(
            dir,
            &[
                ("kiln.toml", "[project]\nname = \"merge\"\n"),
                ("models.sql", &models),
                ("data/changes/a.csv", "id,amount\n1,10\n"),
            ],
        );
        let (code, out, err) = kiln(&["build"], dir);
        assert_eq!(code, 1, "{with}: {out}{err}");
        assert!(err.contains(expected), "{with}: {err}");
        assert!(err.contains("models.sql:3:"), "{with}: located: {err}");
    }
    // Two sources: which one's new files to merge is not said.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = "\
CREATE SOURCE a (id BIGINT) WITH (path = 'data/a', format = 'csv');
CREATE SOURCE b (id BIGINT) WITH (path = 'data/b', format = 'csv');
CREATE PRODUCT p WITH (incremental = 'by_unique_key', unique_key = 'id')
AS SELECT id FROM a UNION ALL SELECT id FROM b;
";
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"merge\"\n"),
            ("models.sql", models),
            ("data/a/x.csv", "id\n1\n"),
            ("data/b/x.csv", "id\n2\n"),
        ],
    );
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("merges the rows of one file source's new files; it reads `a`, `b`"), "{err}");
}
