//! `kiln-bench`: end-to-end benchmark suites against peers, driven by `cargo xtask bench`.
//!
//! Suites:
//! - `build`: the example project at the given TPC-H scale factor against DuckDB and plain
//!   DataFusion, per product and in total, with peak RSS (see the module).
//! - `tpch`: the 22 TPC-H queries as products against DuckDB writing the same Parquet,
//!   whole and one at a time (see the module `tpch_queries`).
//!
//! - `functions`, `explode`: see their modules.
//! - `plan`: `kiln plan` cold, no-op and after one edit on generated projects of 1,000 and
//!   10,000 products (see the module).
//! - `incremental`: a no-op `kiln build` on the example and on 1,000 generated products.
//! - `intervals`: an incremental product by day over orders: one new day against a full
//!   rebuild, and `kiln plan` with 2,400 intervals (see the module).
//! - `stream`: Nexmark bids through q7-like and q5-like views (see the module).
//! - `checks`: the example's checks as a fraction of its build; `kiln test` on 1,000
//!   products with one constraint each (see the module).
//! - `docs`: `kiln docs` on 1,000 generated products and its DAG page in headless Chromium.
//! - `envs`: environment creation, a no-op build in it and promote of 1,000 products (see
//!   the module).
//!
//! - `reliability`: the hostile suite, untrusted statements through `kiln query` (see the
//!   module).
//!
//! `fuzz`: mutation fuzzing of the dialect, planning, the untrusted surface, kiln.toml and
//! the CSV/NDJSON/Parquet readers (see the module).
//!
//! Results are merged into `<out>/results.json` (keyed by suite) and `<out>/results.md`.

/// The same allocator as the `kiln` binary (see kiln-cli), for Kiln and its peers alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

mod build;
mod checks;
mod docs;
mod envs;
mod explode;
mod functions;
mod fuzz;
mod incremental;
mod intervals;
mod plan;
mod reliability;
mod stream;
mod tpch_queries;
mod write;

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a suite (default: all).
    Bench {
        suite: Option<String>,
        #[arg(long, default_value = "1")]
        sf: f64,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Timed repetitions per side.
        #[arg(long, default_value = "3")]
        runs: usize,
        /// Project sizes for the `plan` suite.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        products: Vec<usize>,
    },
    /// Fuzz what Kiln parses: `runs` inputs per target (see the fuzz module).
    Fuzz {
        /// Targets (default: all).
        #[arg(long, value_delimiter = ',')]
        targets: Vec<String>,
        #[arg(long, default_value = "10000")]
        runs: u64,
        #[arg(long, default_value = "1")]
        seed: u64,
        /// The time one input may take, in seconds.
        #[arg(long, default_value = "5")]
        limit: f64,
        /// Where workers run and findings are kept.
        #[arg(long, default_value = "target/fuzz")]
        work: PathBuf,
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Run one file of the target (`--targets T`) in this process instead.
        #[arg(long)]
        replay: Option<PathBuf>,
    },
    /// One fuzz worker (started by `fuzz`).
    #[command(hide = true)]
    FuzzWorker {
        target: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        limit_ms: u64,
    },
    /// Generate TPC-H tables as Parquet.
    Tpch {
        #[arg(long, default_value = "1")]
        sf: f64,
        #[arg(long)]
        out: PathBuf,
    },
}

const SUITES: [&str; 13] = [
    "build",
    "tpch",
    "functions",
    "explode",
    "plan",
    "incremental",
    "intervals",
    "write",
    "stream",
    "checks",
    "envs",
    "docs",
    "reliability",
];

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::Fuzz { targets, runs, seed, limit, work, out, replay } => match replay {
            Some(file) => {
                let [target] = targets.as_slice() else { bail!("--replay needs one target (--targets T)") };
                fuzz::replay(target, &file, &work.join("replay"))
            }
            None => fuzz::supervise(&targets, runs, seed, std::time::Duration::from_secs_f64(limit), &work, &out),
        },
        Cmd::FuzzWorker { target, dir, from, to, seed, limit_ms } => {
            fuzz::work(&target, &dir, from, to, seed, std::time::Duration::from_millis(limit_ms))
        }
        Cmd::Tpch { sf, out } => {
            let rows = tpch(&out, sf)?;
            println!("{rows} rows at scale factor {sf} in {}", out.display());
            Ok(())
        }
        Cmd::Bench { suite, sf, out, runs, products } => {
            let suites: Vec<&str> = match suite.as_deref() {
                None => SUITES.to_vec(),
                Some(s) if SUITES.contains(&s) => vec![s],
                Some(s) => bail!("unknown suite `{s}` (available: {})", SUITES.join(", ")),
            };
            std::fs::create_dir_all(&out)?;
            for s in suites {
                let result = match s {
                    "functions" => functions::suite(runs.max(1)).await?,
                    "explode" => explode::suite(runs.max(1)).await?,
                    "plan" => plan::suite(&out, runs.max(1), &products).await?,
                    "incremental" => incremental::suite(&out, sf, runs.max(1)).await?,
                    "intervals" => intervals::suite(&out, sf, runs.max(1)).await?,
                    "write" => write::suite(&out, sf, runs.max(1)).await?,
                    "stream" => stream::suite(&out, runs.max(1)).await?,
                    "checks" => checks::suite(&out, sf, runs.max(1)).await?,
                    "envs" => envs::suite(&out, runs.max(1)).await?,
                    "docs" => docs::suite(&out, runs.max(1)).await?,
                    "reliability" => reliability::suite(&out, runs.max(1)).await?,
                    "tpch" => tpch_queries::suite(&out, sf, runs.max(1)).await?,
                    _ => build::suite(&out, sf, runs.max(1)).await?,
                };
                record(&out, s, result)?;
            }
            Ok(())
        }
    }
}

fn tpch(out: &Path, sf: f64) -> Result<u64> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Ok(kiln::data::tpch::generate(out, sf, &[], threads)?)
}

/// A fresh copy of the TPC-H example at `dir` (replacing it) generating scale factor `sf`;
/// its absolute path.
fn example_project(dir: &Path, sf: f64) -> Result<PathBuf> {
    let example = std::path::absolute(dir)?;
    let _ = std::fs::remove_dir_all(&example);
    kiln::init::init(&example, Some("tpch"))?;
    let toml = std::fs::read_to_string(example.join("kiln.toml"))?;
    std::fs::write(example.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", &format!("scale_factor = {sf} ")))?;
    Ok(example)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resets this process's peak RSS ("5" to clear_refs, Linux >= 4.0); failure only loses
/// the figure.
fn peak_rss_reset() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// This process's peak RSS since the last [`peak_rss_reset`] (`VmHWM`).
fn peak_rss_bytes() -> Option<u64> {
    peak_rss_of("self")
}

/// The peak RSS (`VmHWM`) of process `pid` (`self`: this one).
fn peak_rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn record(out: &Path, suite: &str, result: Value) -> Result<()> {
    let path = out.join("results.json");
    let mut all: BTreeMap<String, Value> =
        std::fs::read_to_string(&path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
    all.insert(suite.to_owned(), result);
    std::fs::write(&path, serde_json::to_string_pretty(&all)?)?;
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut md = String::from(
        "| suite / case | kiln (s, median) | peer | peer (s, median) | ratio | target |\n|---|---|---|---|---|---|\n",
    );
    for (name, r) in &all {
        let rows: Vec<Value> = match r.get("rows").and_then(Value::as_array) {
            Some(rows) => rows.clone(),
            None => vec![json!({
                "case": format!("sf {}", r["scale_factor"]), "peer": "DataFusion write_parquet",
                "kiln_median": r["kiln_median"], "peer_median": r["datafusion_median"],
                "ratio": r["ratio"], "target": r["target"],
            })],
        };
        for row in rows {
            md.push_str(&format!(
                "| {name}: {} | {:.3} | {} | {:.3} | {:.3} | {} |\n",
                row["case"].as_str().unwrap_or(""),
                f(&row["kiln_median"]),
                row["peer"].as_str().unwrap_or(""),
                f(&row["peer_median"]),
                f(&row["ratio"]),
                row["target"].as_str().unwrap_or("")
            ));
        }
    }
    std::fs::write(out.join("results.md"), &md)?;
    print!("{md}");
    Ok(())
}
