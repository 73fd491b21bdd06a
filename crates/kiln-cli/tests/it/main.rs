//! End-to-end tests of the `kiln` binary: exit codes, messages, the build summary.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod example;
mod interop;
use std::path::Path;
use std::process::Command;

/// Runs the kiln binary; returns (exit code, stdout, stderr).
pub fn kiln(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
