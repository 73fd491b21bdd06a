//! The bounded fuzzing run CI does: every committed corpus entry of every target (the
//! regressions among them) and then mutations, 60 inputs per target in all, in a debug
//! build. `cargo xtask fuzz --runs 15000` is the long run (release).

// Test code: a failed expect is a failed test.
#![allow(clippy::expect_used)]

#[test]
fn fuzzing_finds_no_panic_abort_or_slow_input() {
    let work = tempfile::tempdir().expect("a temporary directory");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-bench"))
        .args(["fuzz", "--runs", "60", "--seed", "7"])
        .arg("--work")
        .arg(work.path().join("fuzz"))
        .arg("--out")
        .arg(work.path().join("bench"))
        .output()
        .expect("kiln-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // Each target ran its inputs (the table has a row per target with 60 inputs).
    for target in ["sql", "plan", "query", "config", "csv", "ndjson", "parquet"] {
        assert!(stdout.contains(&format!("| {target} | 60 | 0 | 0 | 0 |")), "{target}: {stdout}");
    }
}
