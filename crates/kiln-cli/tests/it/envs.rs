//! Environments: a change built in `dev` leaves prod alone, promote makes prod equal to
//! dev all-or-nothing (also when killed at each of its steps), a reverted definition reuses
//! its earlier build, and table-diff reports a hand-made change exactly.

use std::path::Path;

use crate::{kiln, write_files};

const TOML: (&str, &str) = ("kiln.toml", "[project]\nname = \"envs\"\n");

/// `base` and nine products reading it: a change to `base` changes all ten.
fn models(factor: u32) -> String {
    let mut sql = format!(
        "CREATE PRODUCT base ORDER BY (k) AS SELECT v AS k, v * {factor} AS x FROM (VALUES (1), (2), (3), (4)) t(v);\n"
    );
    for i in 1..=9 {
        sql.push_str(&format!("CREATE PRODUCT p{i} ORDER BY (k) AS SELECT k, x + {i} AS y FROM base;\n"));
    }
    sql
}

/// Every product's sum, in one query: what Kiln reads in environment `env`.
fn sums(dir: &Path, env: &str) -> String {
    let mut parts = vec!["SELECT 'base' AS p, sum(x) AS s FROM base".to_owned()];
    parts.extend((1..=9).map(|i| format!("SELECT 'p{i}', sum(y) FROM p{i}")));
    let sql = format!("{} ORDER BY p", parts.join(" UNION ALL "));
    let (code, out, err) = kiln(&["query", "--env", env, "--format", "csv", &sql], dir);
    assert_eq!(code, 0, "{err}");
    out
}

/// The expected sums when base's x is `v * factor` (v = 1..4, so sum(x) = 10 * factor and
/// sum(x + i) = 10 * factor + 4 * i), as `sums` prints them.
fn expected(factor: u64) -> String {
    let mut rows: Vec<(String, u64)> = vec![("base".into(), 10 * factor)];
    rows.extend((1..=9).map(|i| (format!("p{i}"), 10 * factor + 4 * i)));
    rows.sort();
    let mut out = "p,s\n".to_owned();
    for (p, s) in rows {
        out.push_str(&format!("{p},{s}\n"));
    }
    out
}

fn build(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(&all, dir);
    assert_eq!(code, 0, "{out}{err}");
    out
}

/// A project with prod built at factor 10 and dev built at factor 100.
fn prod_and_dev() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[TOML, ("models.sql", &models(10))]);
    build(tmp.path(), &[]);
    write_files(tmp.path(), &[("models.sql", &models(100))]);
    let out = build(tmp.path(), &["--env", "dev"]);
    assert!(out.contains("10 built"), "{out}");
    tmp
}

fn parquet_files(dir: &Path) -> usize {
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, n);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("warehouse"), &mut n);
    n
}

#[test]
fn a_change_built_in_dev_leaves_prod_and_promote_makes_prod_equal_to_dev() {
    let tmp = prod_and_dev();
    let dir = tmp.path();
    assert_eq!(sums(dir, "prod"), expected(10), "prod is untouched by dev's build");
    assert_eq!(sums(dir, "dev"), expected(100));
    let prod_before = crate::checks::delta_reads(dir, "p3");
    assert!(prod_before.contains("'y': 13"), "the Delta reader reads prod's old build: {prod_before}");
    let dev_table = crate::checks::delta_reads(dir, "__env/dev/p3");
    assert!(dev_table.contains("'y': 103"), "dev's own table is a Delta table: {dev_table}");

    let (code, diff, err) = kiln(&["env", "diff", "dev", "prod", "--json"], dir);
    assert_eq!(code, 0, "{err}");
    let diff: serde_json::Value = serde_json::from_str(&diff).unwrap();
    let products = diff["products"].as_array().unwrap();
    assert_eq!(products.len(), 10);
    assert!(products.iter().all(|p| p["status"] == "different"), "{diff}");
    let base = products.iter().find(|p| p["product"] == "base").unwrap();
    assert_eq!(base["reasons"][0]["kind"], "query_changed", "{base}");

    // A no-op build in dev writes nothing.
    let before = parquet_files(dir);
    let out = build(dir, &["--env", "dev"]);
    assert!(out.contains("0 built, 10 fresh"), "{out}");
    assert_eq!(parquet_files(dir), before);

    let (code, out, err) = kiln(&["promote", "dev"], dir);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("10 changed, 0 unchanged"), "{out}");
    assert_eq!(sums(dir, "prod"), expected(100), "prod now has dev's builds");
    assert!(crate::checks::delta_reads(dir, "p3").contains("'y': 103"), "and so does a Delta reader");
    let (code, plan, err) = kiln(&["plan", "--env", "prod", "--json"], dir);
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert!(plan["products"].as_array().unwrap().iter().all(|p| p["decision"] == "fresh"), "{plan}");
    let (_, envs, _) = kiln(&["envs", "--json"], dir);
    let envs: serde_json::Value = serde_json::from_str(&envs).unwrap();
    assert_eq!(envs["environments"][1]["differs"].as_array().unwrap().len(), 0, "{envs}");

    // gc keeps what both environments read; dropping dev leaves prod whole.
    let (code, _, err) = kiln(&["gc"], dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sums(dir, "dev"), expected(100));
    let (code, _, err) = kiln(&["env", "drop", "dev"], dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(sums(dir, "prod"), expected(100));
    let (code, _, err) = kiln(&["query", "--env", "dev", "SELECT 1"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("no environment `dev` (environments: prod)"), "{err}");
    let (code, _, err) = kiln(&["build", "--env", "../x"], dir);
    assert_eq!(code, 1);
    assert!(err.contains("not an environment name"), "{err}");
}

#[test]
fn reverting_a_definition_reuses_its_earlier_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[TOML, ("models.sql", &models(10))]);
    build(dir, &[]);
    let first = crate::committed(dir, "p1").unwrap().build_id;
    write_files(dir, &[("models.sql", &models(100))]);
    build(dir, &[]);
    let before = parquet_files(dir);
    write_files(dir, &[("models.sql", &models(10))]);
    let (code, out, err) = kiln(&["build", "--json"], dir);
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    for p in summary["products"].as_array().unwrap() {
        assert_eq!(p["action"], "reused", "{p}");
        assert_eq!(p["bytes"], 0, "{p}");
        let reason = p["reasons"].as_array().unwrap().last().unwrap();
        assert_eq!(reason["kind"], "reused", "{p}");
        assert_eq!(reason["from"], "prod v0", "{p}");
    }
    assert_eq!(parquet_files(dir), before, "nothing written");
    assert_eq!(crate::committed(dir, "p1").unwrap().build_id, first, "the earlier build id");
    assert_eq!(sums(dir, "prod"), expected(10));
}

/// A reused build brings the rejected records of what it read: `p` reads source `a`
/// (one malformed line), then `b` (none), then `a` again and is reused. Each source's
/// `__rejected` describes its files; in `dev`, `p`'s build over new files of `a` is built
/// once, and prod's build after the same change reuses it, `a__rejected` with it.
#[test]
fn a_reused_build_brings_its_rejected_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sources = "CREATE SOURCE a (k BIGINT NOT NULL) WITH (connector = 'files', path = 'data/a/', format = 'csv', on_error = 'reject');
                   CREATE SOURCE b (k BIGINT NOT NULL) WITH (connector = 'files', path = 'data/b/', format = 'csv', on_error = 'reject');\n";
    let model = |from: &str| format!("{sources}CREATE PRODUCT p ORDER BY (k) AS SELECT k FROM {from};\n");
    // (`kiln query` may read the sources' rejects: kiln.toml lists them.)
    let toml = "[project]\nname = \"envs\"\n\n[query]\nsources = [\"a\", \"b\"]\n";
    write_files(
        dir,
        &[("kiln.toml", toml), ("data/a/x.csv", "k\n1\noops\n3\n"), ("data/b/x.csv", "k\n7\n"), ("m.sql", &model("a"))],
    );
    let rejected = |dir: &Path, source: &str, env: &str| {
        let sql = format!("SELECT count(*) AS n FROM {source}__rejected");
        let (code, out, err) = kiln(&["query", "--env", env, "--format", "csv", &sql], dir);
        assert_eq!(code, 0, "{err}");
        out
    };
    build(dir, &[]);
    assert_eq!(rejected(dir, "a", "prod"), "n\n1\n");
    write_files(dir, &[("m.sql", &model("b"))]);
    build(dir, &[]);
    assert_eq!(rejected(dir, "b", "prod"), "n\n0\n");
    assert_eq!(rejected(dir, "a", "prod"), "n\n1\n", "a's files did not change");
    write_files(dir, &[("m.sql", &model("a"))]);
    let out = build(dir, &[]);
    assert!(out.contains("1 reused"), "{out}");
    assert_eq!(rejected(dir, "a", "prod"), "n\n1\n");
    let (_, out, _) = kiln(&["query", "--format", "csv", "SELECT k FROM p ORDER BY k"], dir);
    assert_eq!(out, "k\n1\n3\n");

    // New files of `a`, built in dev first: prod then reuses dev's build of `p` and of
    // `a__rejected`, and nothing is executed.
    let (code, _, err) = kiln(&["env", "create", "dev"], dir);
    assert_eq!(code, 0, "{err}");
    write_files(dir, &[("data/a/y.csv", "k\nbad\n4\nworse\n")]);
    let out = build(dir, &["--env", "dev"]);
    assert!(out.contains("1 built"), "{out}");
    assert_eq!(rejected(dir, "a", "dev"), "n\n3\n");
    assert_eq!(rejected(dir, "a", "prod"), "n\n1\n", "prod is untouched");
    let out = build(dir, &[]);
    assert!(out.contains("1 reused"), "{out}");
    assert_eq!(rejected(dir, "a", "prod"), "n\n3\n");
}

/// A promote killed at each of its steps (`KILN_FAILPOINT=promote#N`: linking each
/// dataset's files, the intent, each Delta commit): Kiln then reads prod all old or all
/// new, never a mix, and the next command leaves it all new once the intent was written.
#[test]
fn a_promote_killed_at_any_step_leaves_prod_all_old_or_all_new() {
    let template = prod_and_dev();
    let (old, new) = (expected(10), expected(100));
    let mut outcomes = (0, 0);
    for step in 1..=20 {
        let tmp = tempfile::tempdir().unwrap();
        let copy = std::process::Command::new("cp").arg("-a").arg(template.path()).arg(tmp.path()).status().unwrap();
        assert!(copy.success());
        let dir = tmp.path().join(template.path().file_name().unwrap());
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["promote", "dev"])
            .current_dir(&dir)
            .env("KILN_FAILPOINT", format!("promote#{step}"))
            .output()
            .unwrap();
        assert!(out.status.code().is_none(), "step {step} is reached and killed: {out:?}");
        let seen = sums(&dir, "prod");
        assert!(seen == old || seen == new, "step {step}: a mix of old and new builds:\n{seen}");
        // Killed after the intent: the read above finished the promote.
        let intent_written = step > 10;
        assert_eq!(seen == new, intent_written, "step {step}");
        if seen == new {
            outcomes.1 += 1;
        } else {
            outcomes.0 += 1;
        }
        let (code, _, err) = kiln(&["gc"], &dir);
        assert_eq!(code, 0, "{err}");
        assert_eq!(sums(&dir, "prod"), seen, "step {step}: gc keeps what prod reads");
        let (code, out, err) = kiln(&["promote", "dev"], &dir);
        assert_eq!(code, 0, "step {step}: {err}");
        assert!(out.contains(if seen == new { "0 changed" } else { "10 changed" }), "step {step}: {out}");
        assert_eq!(sums(&dir, "prod"), new);
    }
    assert_eq!(outcomes, (10, 10));
}

#[test]
fn table_diff_reports_a_hand_made_change_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let product = |rows: &str| format!("CREATE PRODUCT t AS SELECT * FROM (VALUES {rows}) v(k, a, b);\n");
    write_files(
        dir,
        &[TOML, ("t.sql", &product("(1, 'x', 10), (2, 'y', 20), (3, 'z', 30), (4, 'w', 40), (5, 'v', 50)"))],
    );
    build(dir, &[]);
    // Removed 1; changed 2 (a), 3 (b), 4 (a and b); 5 as it was; added 6 and 7.
    write_files(
        dir,
        &[("t.sql", &product("(2, 'Y', 20), (3, 'z', 33), (4, 'W', 44), (5, 'v', 50), (6, 'u', 60), (7, 't', 70)"))],
    );
    build(dir, &["--env", "dev"]);
    let (code, out, err) = kiln(&["table-diff", "t", "--env", "dev", "--env", "prod", "--key", "k", "--json"], dir);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((r["a"]["rows"].as_u64(), r["b"]["rows"].as_u64()), (Some(6), Some(5)), "{r}");
    let rows = &r["rows"];
    assert_eq!(
        (rows["only_a"].as_u64(), rows["only_b"].as_u64(), rows["changed"].as_u64()),
        (Some(2), Some(1), Some(3))
    );
    assert_eq!(rows["sample_only_a"], serde_json::json!(["k=6", "k=7"]));
    assert_eq!(rows["sample_only_b"], serde_json::json!(["k=1"]));
    let columns: Vec<(String, u64)> = rows["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["column"].as_str().unwrap().to_owned(), c["changed"].as_u64().unwrap()))
        .collect();
    assert_eq!(columns, vec![("a".to_owned(), 2), ("b".to_owned(), 2)]);
    assert_eq!(rows["columns"][0]["sample"][0], serde_json::json!(["k=2", "Y", "y"]));
}

/// `kiln stream --env dev` makes `dev` as a build does, and its view's rows stay in dev.
#[test]
fn a_stream_in_a_new_environment_makes_it_and_leaves_prod_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            TOML,
            (
                "stream.sql",
                "CREATE STREAM events (user_id BIGINT NOT NULL, amount BIGINT) WITH (connector = 'log', topic = 'events');
                 CREATE MATERIALIZED VIEW big AS SELECT user_id, amount FROM events WHERE amount > 10;\n",
            ),
        ],
    );
    let records: String = (0..30).map(|i| format!("{{\"user_id\": {}, \"amount\": {i}}}\n", i % 3)).collect();
    assert_eq!(crate::produce(dir, &["events"], &records).0, Some(0));
    let (code, out, err) = kiln(&["stream", "--env", "dev", "--until-idle"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kiln(&["query", "--env", "dev", "--format", "csv", "SELECT count(*) AS n FROM big"], dir);
    assert_eq!((code, out.as_str()), (0, "n\n19\n"), "{err}");
    let (code, out, _) = kiln(&["envs"], dir);
    assert_eq!(code, 0);
    assert!(out.contains("dev"), "{out}");
    assert!(crate::committed(dir, "big").is_none(), "prod has no build of the view");
}
