//! `kiln-bench`: end-to-end benchmark suites against peers, driven by `cargo xtask bench`.
//!
//! Suites:
//! - `build`: the example project's products at the given TPC-H scale factor. Kiln's
//!   `build` wall time against the same SQL run by plain DataFusion (`DataFrame::
//!   write_parquet`, zstd(3) like Kiln, the same ORDER BY sorts), alternating the two
//!   in one process and reporting medians and their ratio.
//!
//! - `functions`, `explode`: see their modules.
//! - `plan`: `kiln plan` cold, no-op and after one edit on generated projects of 1,000 and
//!   10,000 products (see the module).
//! - `incremental`: a no-op `kiln build` on the example and on 1,000 generated products.
//! - `stream`: Nexmark bids through q7-like and q5-like views (see the module).
//! - `checks`: the example's checks as a fraction of its build; `kiln test` on 1,000
//!   products with one constraint each (see the module).
//! - `envs`: environment creation, a no-op build in it and promote of 1,000 products (see
//!   the module).
//!
//! Results are merged into `<out>/results.json` (keyed by suite) and `<out>/results.md`.

/// The same allocator as the `kiln` binary (see kiln-cli), for Kiln and its peers alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use kiln::control::dialect::Statement;
use serde_json::{Value, json};

mod checks;
mod envs;
mod explode;
mod functions;
mod incremental;
mod plan;
mod stream;
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
    /// Generate TPC-H tables as Parquet.
    Tpch {
        #[arg(long, default_value = "1")]
        sf: f64,
        #[arg(long)]
        out: PathBuf,
    },
}

const SUITES: [&str; 9] = ["build", "functions", "explode", "plan", "incremental", "write", "stream", "checks", "envs"];

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().command {
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
                    "write" => write::suite(&out, sf, runs.max(1)).await?,
                    "stream" => stream::suite(&out, runs.max(1)).await?,
                    "checks" => checks::suite(&out, sf, runs.max(1)).await?,
                    "envs" => envs::suite(&out, runs.max(1)).await?,
                    _ => build_suite(&out, sf, runs.max(1)).await?,
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

async fn build_suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let data = std::path::absolute(out.join(format!("tpch-sf{sf}")))?;
    if !kiln::data::tpch::is_generated(&data, sf) {
        eprintln!("generating TPC-H sf {sf} into {}", data.display());
        tpch(&data, sf)?;
    }
    let project = std::path::absolute(out.join("build-project"))?;
    let _ = std::fs::remove_dir_all(&project);
    kiln::init::init(&project, Some("tpch"))?;
    let toml = std::fs::read_to_string(project.join("kiln.toml"))?;
    let toml = toml.replace("scale_factor = 0.1 ", &format!("scale_factor = {sf} "));
    std::fs::write(project.join("kiln.toml"), toml)?;
    std::os::unix::fs::symlink(&data, project.join("data")).context("link data")?;

    let loaded = kiln::Project::load(&project)?;
    let mut kiln_times = Vec::new();
    let mut df_times = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let report = kiln::build(&project, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
        if report.failed().next().is_some() {
            bail!("kiln build failed: {:?}", report.summary.products);
        }
        kiln_times.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        plain_datafusion(&loaded, &project.join(format!("df-out-{i}"))).await?;
        df_times.push(t.elapsed().as_secs_f64());
        let _ = std::fs::remove_dir_all(project.join(format!("df-out-{i}")));
        eprintln!("build run {i}: kiln {:.2}s, datafusion {:.2}s", kiln_times[i], df_times[i]);
    }
    let (k, d) = (median(kiln_times.clone()), median(df_times.clone()));
    Ok(json!({
        "scale_factor": sf,
        "kiln_seconds": kiln_times,
        "datafusion_seconds": df_times,
        "kiln_median": k,
        "datafusion_median": d,
        "ratio": k / d,
        "target": "ratio <= 1.10",
    }))
}

/// The same products as plain DataFusion: register the sources, then run each product's
/// SQL (with its ORDER BY) and `write_parquet` it, registering the output for downstream.
async fn plain_datafusion(project: &kiln::Project, out: &Path) -> Result<()> {
    let ctx = SessionContext::new();
    // Kiln's functions (the example hashes PII) are the only Kiln code on this side.
    kiln::functions::Registry::builtin(project.config.resolve_secrets())
        .install(&ctx)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut parquet = TableParquetOptions::default();
    parquet.global.compression = Some("zstd(3)".into());
    for &i in &project.graph.order()? {
        let node = &project.graph.nodes[i];
        let (fi, si) = node.def;
        match project.files[fi].statement(si)? {
            Statement::Source(def) => {
                let (path, _) = def.options.get("path").context("source path")?;
                let dir = project.root.join(path);
                ctx.register_listing_table(
                    &def.name,
                    dir.to_string_lossy().as_ref(),
                    ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
                    None,
                    None,
                )
                .await?;
            }
            Statement::Product(def) => {
                let mut sql = format!("SELECT * FROM ({}) AS q", def.query);
                if !def.order_by.is_empty() {
                    let keys: Vec<String> = def
                        .order_by
                        .iter()
                        .map(|(c, asc)| format!("{c} {}", if *asc { "ASC" } else { "DESC" }))
                        .collect();
                    sql.push_str(&format!(" ORDER BY {}", keys.join(", ")));
                }
                let dir = out.join(&def.name);
                std::fs::create_dir_all(&dir)?;
                let dir_url = format!("{}/", dir.display());
                ctx.sql(&sql)
                    .await?
                    .write_parquet(&dir_url, DataFrameWriteOptions::new(), Some(parquet.clone()))
                    .await?;
                ctx.register_listing_table(
                    &def.name,
                    &dir_url,
                    ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
                    None,
                    None,
                )
                .await?;
            }
            Statement::Stream(_) | Statement::View(_) => anyhow::bail!("the build bench runs batch projects only"),
            Statement::Audit(_) | Statement::Test(_) => {} // checks are not part of the plain-DataFusion side
        }
    }
    Ok(())
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
