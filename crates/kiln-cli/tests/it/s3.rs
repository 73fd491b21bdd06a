//! A warehouse and an artifact store on S3 (feature `s3`): the S3 API served by moto's
//! server on 127.0.0.1 (installed from PyPI into a virtualenv by this harness). Builds,
//! reads, incremental no-ops, a kill before the pointer switch, and gc all go through the
//! S3 protocol.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::moto::{create_bucket, moto};
use crate::write_files;

fn kiln_s3(args: &[&str], dir: &std::path::Path, port: u16, failpoint: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1");
    if let Some(point) = failpoint {
        cmd.env("KILN_FAILPOINT", point);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn warehouse_and_artifacts_on_s3() {
    let moto = moto();
    create_bucket(moto.port, "lake");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rows: String = (1..=1000).map(|i| format!("{i},{}\n", i % 7)).collect();
    write_files(
        dir,
        &[
            (
                "kiln.toml",
                "[project]\nname = \"s3\"\n[storage]\nwarehouse = \"s3://lake/wh\"\nartifacts = \"s3://lake/kiln\"\n",
            ),
            ("data/t.csv", &format!("a,g\n{rows}")),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, g BIGINT) WITH (path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT by_g PARTITIONED BY (g) AS SELECT g, a FROM t WHERE a % 2 = 0;\n\
                 CREATE PRODUCT totals ORDER BY (g) AS SELECT g, count(*) AS n, sum(a) AS s FROM by_g GROUP BY g;\n",
            ),
        ],
    );
    let port = moto.port;
    let (code, out, err) = kiln_s3(&["build", "."], dir, port, None);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!dir.join("warehouse").exists() && !dir.join(".kiln").exists(), "nothing is written locally");

    // Even a's: 500 rows; per g, the hand-computed count and sum.
    let (code, out, err) =
        kiln_s3(&["query", "SELECT g, n, s FROM totals ORDER BY g", "--format", "csv"], dir, port, None);
    assert_eq!(code, 0, "{out}\n{err}");
    let mut expected = String::from("g,n,s\n");
    for g in 0..7 {
        let evens: Vec<i64> = (1..=1000).filter(|a| a % 2 == 0 && a % 7 == g).collect();
        expected.push_str(&format!("{g},{},{}\n", evens.len(), evens.iter().sum::<i64>()));
    }
    assert_eq!(out, expected);

    // Nothing changed: nothing built.
    let (code, out, _) = kiln_s3(&["build", "."], dir, port, None);
    assert_eq!(code, 0);
    assert!(out.contains("0 built, 2 fresh"), "{out}");

    // A build killed after writing its files, before its Delta commit, leaves the previous
    // build visible; gc then deletes the leftover.
    std::fs::write(dir.join("data/t.csv"), format!("a,g\n{rows}1001,0\n1002,0\n")).unwrap();
    let (code, _, _) = kiln_s3(&["build", "."], dir, port, Some("before_commit"));
    assert_ne!(code, 0);
    let (_, out, _) = kiln_s3(&["query", "SELECT count(*) AS n FROM by_g", "--format", "csv"], dir, port, None);
    assert_eq!(out, "n\n500\n");
    let (code, out, err) = kiln_s3(&["gc", "--json"], dir, port, None);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let deleted = report["deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{out}");
    assert_eq!(deleted[0]["product"], "by_g", "{out}");
    let (code, out, err) = kiln_s3(&["build", "."], dir, port, None);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, out, _) =
        kiln_s3(&["query", "SELECT count(*) AS n, sum(a) AS s FROM by_g", "--format", "csv"], dir, port, None);
    assert_eq!(out, format!("n,s\n501,{}\n", (1..=500).map(|i| 2 * i).sum::<i64>() + 1002));
}

/// Two builds racing on an S3 warehouse: delta-rs commits with a conditional put
/// (`If-None-Match`), so each table version is made by exactly one of them; the other
/// fails clearly. Every version that exists is one reported commit.
#[test]
fn racing_builds_on_s3_never_share_a_version() {
    let moto = moto();
    create_bucket(moto.port, "race");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let project = |k: u64| {
        let rows: String = (1..=3000u64).map(|i| format!("{i},{}\n", i * k)).collect();
        write_files(
            dir,
            &[
                (
                    "kiln.toml",
                    "[project]\nname = \"race\"\n[storage]\nwarehouse = \"s3://race/wh\"\nartifacts = \"s3://race/kiln\"\n",
                ),
                ("data/t.csv", &format!("a,b\n{rows}")),
                (
                    "models.sql",
                    "CREATE SOURCE t (a BIGINT NOT NULL, b BIGINT) WITH (path = 'data/', format = 'csv');\n\
                     CREATE PRODUCT p AS SELECT a, b FROM t;\n",
                ),
            ],
        );
    };
    let port = moto.port;
    let mut commits = 0;
    let mut lost = 0;
    for round in 0..4u64 {
        project(round + 1);
        let spawn = || {
            Command::new(env!("CARGO_BIN_EXE_kiln"))
                .args(["build", "--json", "."])
                .current_dir(dir)
                .env("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
                .env("AWS_ALLOW_HTTP", "true")
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_REGION", "us-east-1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {
                    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    commits += usize::from(summary["products"][0]["action"] == "built");
                }
                Some(1) => {
                    assert!(err.contains("another run committed version"), "round {round}: {err}");
                    lost += 1;
                }
                other => panic!("round {round}: exit {other:?}: {err}"),
            }
        }
    }
    // Versions of p's table: LIST its log through the S3 API.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /race?list-type=2&prefix=wh/p/_delta_log/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut listing = String::new();
    s.read_to_string(&mut listing).unwrap();
    let versions = listing.matches(".json</Key>").count();
    assert_eq!(versions, commits, "every version is one reported commit ({lost} builds lost a race): {listing}");
    assert!(commits >= 4, "a commit per round at least");
}
