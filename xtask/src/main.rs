//! `cargo xtask`: maintainer tasks. `ci` is the test command README.md documents.
//!
//! - `ci`: fmt check, clippy -D warnings, deps, every test suite (golden suites included).
//! - `deps [--manifest-path P]`: the layering check of the brief (§3), internal
//!   dependencies no code uses, circles among a crate's modules, one version of the arrow
//!   family, and kiln-explode / kiln-contracts free of DataFusion.
//! - `golden [--update]`: the end-to-end golden suites; `--update` accepts new snapshots.
//! - `features`: tests of the optional cargo features (`substrait`, which needs protoc;
//!   `s3`, against moto's S3 server; `kafka`, against a Tansu broker; `gcs`, `azure`, compile-tested).
//! - `bench [SUITE] [--sf N]`: benchmark suites (release), results in target/bench/.
//! - `fuzz [--runs N] [--targets a,b]`: mutation fuzzing of what Kiln parses (release).
//! - `tpch --sf N --out DIR`: TPC-H tables as Parquet.

mod deps;
mod modules;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Everything CI checks: fmt, clippy, deps, tests, golden tests.
    Ci,
    /// Reject internal dependencies the layering does not allow.
    Deps {
        #[arg(long)]
        manifest_path: Option<String>,
    },
    /// Test the optional cargo features (substrait, s3, kafka; compile gcs, azure).
    Features,
    /// Run the golden suites; --update accepts new snapshots.
    Golden {
        #[arg(long)]
        update: bool,
    },
    /// Run benchmark suites in release mode (default: all).
    Bench {
        suite: Option<String>,
        /// TPC-H scale factor for suites that use it.
        #[arg(long, default_value = "1")]
        sf: String,
    },
    /// Fuzz the dialect, planning, kiln query, kiln.toml and the source readers (release):
    /// `--runs N` inputs per target; findings under target/fuzz/findings.
    Fuzz {
        /// Extra arguments for `kiln-bench fuzz` (`--runs N`, `--targets a,b`, `--seed S`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Generate TPC-H tables as Parquet.
    Tpch {
        #[arg(long, default_value = "1")]
        sf: String,
        #[arg(long)]
        out: String,
    },
}

fn main() -> Result<()> {
    match Args::parse().task {
        Task::Ci => ci(),
        Task::Features => features(),
        Task::Deps { manifest_path } => {
            deps::check(manifest_path.as_deref())?;
            if manifest_path.is_none() {
                deps::standalone()?;
            }
            Ok(())
        }
        Task::Golden { update } => golden(update),
        Task::Bench { suite, sf } => {
            let mut args = vec!["bench"];
            if let Some(s) = suite.as_deref() {
                args.push(s);
            }
            args.extend(["--sf", &sf, "--out", "target/bench"]);
            run(Command::new(bench_binary()?).args(&args))
        }
        Task::Fuzz { args } => run(Command::new(bench_binary()?).arg("fuzz").args(&args)),
        Task::Tpch { sf, out } => run(Command::new(bench_binary()?).args(["tpch", "--sf", &sf, "--out", &out])),
    }
}

fn ci() -> Result<()> {
    step("fmt", || cargo(&["fmt", "--all", "--", "--check"]))?;
    step("clippy", || cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    step("deps", || deps::check(None).and_then(|()| deps::standalone()))?;
    // The L0 crates alone, with only arrow / sqlparser (their own feature set).
    step("check kiln-explode, kiln-contracts alone", || {
        cargo(&["check", "--locked", "-p", "kiln-explode", "-p", "kiln-contracts", "--lib"])
    })?;
    // The golden suites are part of the workspace tests (package kiln-tests); INSTA_UPDATE=no
    // makes a snapshot mismatch fail instead of writing a .snap.new.
    step("test", || {
        run(Command::new(cargo_bin()).args(["test", "--workspace", "--locked"]).env("INSTA_UPDATE", "no"))
    })?;
    features()
}

/// The optional cargo features' tests (also `cargo xtask features` alone). The `substrait`
/// feature needs `protoc`, and its dependencies change feature sets deep in the DataFusion
/// stack, which recompiles all of it: the most expensive step of `ci`.
fn features() -> Result<()> {
    // The GCS/Azure stores cannot run here (no emulators installed): they are
    // compile-tested.
    step("clippy kafka,cloud", || {
        cargo(&["clippy", "--locked", "-p", "kiln-cli", "--features", "kafka,cloud", "--", "-D", "warnings"])
    })?;
    // One build with the three features, which all change the crates' feature sets: the
    // S3 test runs against moto's S3 server, the Kafka tests against a Tansu broker (both
    // from PyPI), the Substrait test needs protoc.
    step("test substrait,s3,kafka", || {
        run(Command::new(cargo_bin())
            .args(["test", "--locked", "-p", "kiln-cli", "--features", "substrait,s3,kafka", "--test", "it", "--"])
            .args(["substrait", "s3::", "kafka::"])
            .env("INSTA_UPDATE", "no"))
    })
}

/// The golden suites: the end-to-end suite (kiln-tests) and the CLI suite with its insta
/// snapshots (kiln-cli).
fn golden(update: bool) -> Result<()> {
    for (package, test) in [("kiln-tests", "golden"), ("kiln-cli", "it")] {
        let mut cmd = Command::new(cargo_bin());
        cmd.args(["test", "-p", package, "--test", test]);
        cmd.env("INSTA_UPDATE", if update { "always" } else { "no" });
        if update {
            cmd.env_remove("CI");
        }
        run(&mut cmd)?;
    }
    Ok(())
}

/// `kiln-bench`, built in release together with the `kiln` binary the hostile suite runs:
/// one build, one feature set (building the two packages apart compiled the DataFusion
/// stack twice).
fn bench_binary() -> Result<std::path::PathBuf> {
    cargo(&["build", "--release", "--quiet", "--locked", "-p", "kiln-cli", "-p", "kiln-benches"])?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask has no workspace")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), std::path::PathBuf::from);
    Ok(target.join("release").join("kiln-bench"))
}

fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    eprintln!("==> xtask ci: {name}");
    let t = std::time::Instant::now();
    f().with_context(|| format!("xtask ci: step `{name}` failed"))?;
    eprintln!("==> {name} ok ({:.0}s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(cargo_bin()).args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
