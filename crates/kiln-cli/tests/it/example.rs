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

#[test]
fn the_pii_key_never_leaves_the_process() {
    let key = "kiln-test-key-7d3f9a1c52e84b06";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--json", dir.to_str().unwrap()])
        .env("KILN_PII_KEY", key)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut searched = 0;
    let mut stack = vec![dir.join(".kiln"), dir.join("warehouse")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "key found in {}", p.display());
            searched += 1;
        }
    }
    assert!(searched >= 13, "searched only {searched} files");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(key));
    }
    // The env key was used, not the fallback: no warning, and hashes differ from a
    // fallback build.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fallback"));
}

#[test]
fn functions_catalog_lists_every_builtin() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, _) = kiln(&["functions"], tmp.path());
    assert_eq!(code, 0);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/functions.md")).unwrap();
    assert!(docs.starts_with(&out), "docs/functions.md must start with `kiln functions` output; regenerate it");
    let (code, json, _) = kiln(&["functions", "--json"], tmp.path());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"kiln_pii_hash") && names.len() == 6, "{names:?}");
}
