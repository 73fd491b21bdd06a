//! Project variables: typed `$name` values from kiln.toml `[vars]` and `--var`, part of a
//! product's build identity exactly when it uses one, never spliced in as text.

use crate::{kiln, write_files};

const TOML: &str = "[project]\nname = \"vars\"\n\n[vars]\nlow = 2\nsince = 1995-01-01\nwho = \"x' OR '1' = '1\"\n";
const MODELS: &str = "CREATE PRODUCT p AS SELECT v FROM (VALUES (1), (2), (3), (4)) t(v) WHERE v >= $low;
CREATE PRODUCT dated AS SELECT d FROM (VALUES (DATE '1994-06-01'), (DATE '1995-06-01')) t(d) WHERE d >= $since;
CREATE PRODUCT named AS SELECT n FROM (VALUES ('x'), ('y')) t(n) WHERE n = $who;
CREATE PRODUCT plain AS SELECT 1 AS one;\n";

fn build(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(&all, dir);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap()
}

fn product<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["products"].as_array().unwrap().iter().find(|p| p["product"] == name).unwrap()
}

fn csv(dir: &std::path::Path, sql: &str, args: &[&str]) -> String {
    let mut all = vec!["query", "--format", "csv", sql];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(&all, dir);
    assert_eq!(code, 0, "{err}");
    out
}

#[test]
fn variables_are_typed_values_in_the_build_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("kiln.toml", TOML), ("m.sql", MODELS)]);
    let first = build(dir, &[]);
    assert_eq!(csv(dir, "SELECT v FROM p ORDER BY v", &[]), "v\n2\n3\n4\n");
    assert_eq!(csv(dir, "SELECT d FROM dated", &[]), "d\n1995-06-01\n");
    // A value is a value: the quote does not end a string literal.
    assert_eq!(csv(dir, "SELECT count(*) AS n FROM named", &[]), "n\n0\n");

    // Another value rebuilds exactly the product that uses it, because its query changed.
    let other = build(dir, &["--var", "low=4"]);
    assert_eq!(product(&other, "p")["action"], "built", "{other}");
    assert_eq!(product(&other, "p")["reasons"][0]["kind"], "query_changed", "{other}");
    for fresh in ["dated", "named", "plain"] {
        assert_eq!(product(&other, fresh)["action"], "fresh", "{other}");
    }
    assert_eq!(csv(dir, "SELECT v FROM p", &[]), "v\n4\n");
    // Back to kiln.toml's value: the first build again, bound without executing.
    let back = build(dir, &[]);
    assert_eq!(product(&back, "p")["action"], "reused", "{back}");
    assert_eq!(product(&back, "p")["build_id"], product(&first, "p")["build_id"]);

    // Ad-hoc queries take variables too.
    assert_eq!(csv(dir, "SELECT $low + 1 AS n", &["--var", "low=41"]), "n\n42\n");
}

#[test]
fn undeclared_or_ill_typed_variables_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("kiln.toml", TOML), ("m.sql", MODELS)]);
    let (code, _, err) = kiln(&["build", "--var", "nope=1"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--var nope: no variable `nope` in kiln.toml [vars] (declared: low, since, who)"), "{err}");
    let (code, _, err) = kiln(&["plan", "--var", "since=1995-02-30"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--var since: `1995-02-30` is not a DATE"), "{err}");

    write_files(dir, &[("m.sql", "CREATE PRODUCT p AS SELECT 1 AS one;\nCREATE PRODUCT q AS SELECT $missing AS x;\n")]);
    let (code, out, err) = kiln(&["build"], dir);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("m.sql:2:1")
            && err.contains("unknown variable `$missing` (kiln.toml [vars] declares: low, since, who)"),
        "{err}"
    );
    assert!(out.contains("1 built"), "the other product builds: {out}");

    write_files(dir, &[("kiln.toml", "[project]\nname = \"vars\"\n\n[vars]\nat = 1995-01-01T10:00:00\n")]);
    let (code, _, err) = kiln(&["plan"], dir);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("kiln.toml: [vars] at: only a date"), "{err}");
}
