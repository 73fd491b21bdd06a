//! `kiln init --example tpch` then `kiln build`, at a tiny scale factor.

use crate::{kiln, mask};

#[test]
fn example_builds_and_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (code, out, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kiln.toml"), "{out}");
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();

    let (code, out, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    insta::assert_snapshot!("example_build_summary", mask(&out));

    // A second build must not fail, and readers see the newest committed build.
    let (code, out2, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert_eq!(mask(&out), mask(&out2));

    // init refuses to overwrite a project.
    let (code, _, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already has a kiln.toml"), "{err}");
}

#[test]
fn build_json_is_the_run_summary() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"j\"\n"),
            ("data/t.csv", "a,b\n1,x\n2,y\n3,z\n"),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT evens AS SELECT a, b FROM t WHERE a % 2 = 0;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["products"][0]["product"], "evens");
    assert_eq!(json["products"][0]["action"], "built");
    assert_eq!(json["products"][0]["rows"], 1);
}
