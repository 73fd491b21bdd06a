//! End-to-end tests of the `kiln` binary: exit codes, messages, the build summary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod checks;
mod cli;
mod delta;
mod docs;
mod envs;
pub(crate) mod example;
mod http_source;
mod incremental;
mod interop;
#[cfg(feature = "kafka")]
mod kafka;
mod lock;
mod merge;
#[cfg(any(feature = "s3", feature = "kafka"))]
mod moto;
#[cfg(feature = "s3")]
mod s3;
mod streams;
mod vars;
use std::path::Path;
use std::process::Command;

/// The python of a virtualenv under the target directory holding `packages` from PyPI
/// (made once; `check` is a python statement that succeeds once they are installed).
pub fn venv(name: &str, packages: &[&str], check: &str) -> std::path::PathBuf {
    // Tests run concurrently and share virtualenvs: one makes it while the others wait
    // (a half-installed package must never be imported).
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _making = MAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin/python");
    let ready = |p: &Path| Command::new(p).args(["-c", check]).status().is_ok_and(|s| s.success());
    if !ready(&python) {
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&dir).status().unwrap().success();
        assert!(ok, "python3 -m venv failed (CI installs python3-venv)");
        let ok = Command::new(dir.join("bin/pip")).args(["install", "-q"]).args(packages).status().unwrap().success();
        assert!(ok, "pip install {packages:?} failed");
    }
    assert!(ready(&python), "`{check}` fails in {}", python.display());
    python
}

/// Runs `kiln produce ARGS` in `dir` with `input` on stdin: (exit code, stdout + stderr).
pub fn produce(dir: &std::path::Path, args: &[&str], input: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("produce")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Runs the kiln binary; returns (exit code, stdout, stderr).
pub fn kiln(args: &[&str], cwd: &Path) -> (i32, String, String) {
    kiln_env(args, cwd, &[])
}

/// [`kiln`] with environment variables set (`-1` as the code: killed by a signal).
pub fn kiln_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The committed manifest of `product` in `dir`'s warehouse: the latest version of its
/// Delta table, as Kiln's record of it says.
pub fn current_manifest(dir: &Path, product: &str) -> serde_json::Value {
    serde_json::to_value(committed(dir, product).unwrap_or_else(|| panic!("`{product}` has no committed build")))
        .unwrap()
}

/// The committed manifest of `product`, if it has one.
pub fn committed(dir: &Path, product: &str) -> Option<::kiln::artifact::Manifest> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let warehouse = ::kiln::data::Warehouse::local(&dir.join("warehouse")).unwrap();
        warehouse.current(product).await.unwrap()
    })
}

/// The data files a manifest lists, as paths.
pub fn manifest_files(dir: &Path, manifest: &serde_json::Value) -> Vec<String> {
    manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| dir.join("warehouse").join(f["path"].as_str().unwrap()).to_string_lossy().into_owned())
        .collect()
}

/// The rows of Parquet `files` read with plain DataFusion: `columns`, sorted by `order`,
/// each a table line with runs of spaces collapsed (`| 1 | x |`).
pub fn read_rows(files: Vec<String>, columns: &[&str], order: &str) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx.read_parquet(files, Default::default()).await.unwrap();
        let df = df.select_columns(columns).unwrap().sort_by(vec![datafusion::prelude::col(order)]).unwrap();
        let batches = df.collect().await.unwrap();
        let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        table
            .lines()
            .skip(3)
            .filter(|l| l.starts_with("| "))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    })
}

/// Writes `files` (path, text) under `dir`.
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// Masks what changes between runs (timings, run ids, byte sizes) in CLI output.
pub fn mask(text: &str) -> String {
    text.lines()
        .map(|line| {
            let mut words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if words.len() == 6 && words[1] != "action" {
                words[4] = "<bytes>".into();
                words[5] = "<secs>".into();
            }
            if words.first().is_some_and(|w| w == "checks:")
                && let Some(last) = words.last_mut()
            {
                *last = "<secs>".into();
            }
            if let Some(pos) = words.iter().position(|w| w == "(run") {
                words.truncate(pos);
                if let Some(last) = words.last_mut() {
                    *last = "<secs>".into();
                }
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every file under `dir`, recursively, as paths relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}
