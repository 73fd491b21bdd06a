//! Suite `intervals`: an incremental product by day over TPC-H orders (about 2,400 days
//! at any scale factor), measured against a full rebuild of the same product in the
//! same run.
//!
//! Setup (untimed): orders generated at the scale factor, rewritten with DataFusion into
//! one Parquet file per year sorted by `o_orderdate` with 16,384-row row groups (the
//! layout of event data that arrives by day, so statistics prune), then the product built
//! once. Each run appends one new day (a file of the last day's orders, dated one day
//! later, with new keys) and times, alternating which goes first:
//!
//! - `kiln build`: the incremental build (the new day, plus `lookback = '2 days'`);
//! - `kiln build --restate`: the same product recomputed whole (every interval, one
//!   commit): what a build costs without intervals.
//!
//! - DuckDB (the engine a user would pick instead, which has no intervals): the same
//!   query over the same files to Parquet partitioned by day, zstd, every run.
//!
//! Targets (issue 20): incremental ≤ 0.05× the full rebuild; `kiln plan` of the product
//! with 2,400 intervals ≤ 0.1 s (timed after an append, so it has intervals to compute).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

const MODELS: &str = "\
CREATE SOURCE orders (o_orderkey BIGINT NOT NULL, o_custkey BIGINT NOT NULL, o_orderstatus VARCHAR NOT NULL,
  o_totalprice DECIMAL(15, 2) NOT NULL, o_orderdate DATE NOT NULL, o_orderpriority VARCHAR NOT NULL,
  o_clerk VARCHAR NOT NULL, o_shippriority INT NOT NULL, o_comment VARCHAR NOT NULL)
WITH (path = 'data/orders', format = 'parquet');

CREATE PRODUCT daily_revenue PARTITIONED BY (order_day)
WITH (incremental = 'by_time', time_column = 'order_day', grain = 'day', start = '1992-01-01',
      lookback = '2 days')
AS SELECT o_orderdate AS order_day, o_orderstatus, sum(o_totalprice) AS revenue, count(*) AS orders
   FROM orders GROUP BY 1, 2;
";

async fn build(dir: &Path, restate: bool) -> Result<(f64, kiln::artifact::ProductRun)> {
    let options =
        kiln::BuildOptions { intervals: kiln::IntervalRequest { range: None, restate }, ..Default::default() };
    let t = Instant::now();
    let report = kiln::build(dir, &options, &kiln::Quiet).await?;
    let seconds = t.elapsed().as_secs_f64();
    let failed: Vec<_> = report.failed().take(3).collect();
    ensure!(failed.is_empty(), "failed: {failed:?}");
    let run = report.summary.products.into_iter().find(|p| p.product == "daily_revenue");
    Ok((seconds, run.ok_or_else(|| anyhow::anyhow!("no daily_revenue in the summary"))?))
}

fn intervals(run: &kiln::artifact::ProductRun) -> u64 {
    run.intervals.as_ref().map_or(0, |i| i.intervals)
}

/// Writes `data/orders/` as one file per year sorted by date, from orders at `sf`.
async fn source(dir: &Path, sf: f64) -> Result<()> {
    let raw = dir.join("raw");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    kiln::data::tpch::generate(&raw, sf, &["orders"], threads)?;
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_parquet("orders", raw.join("orders").to_string_lossy().as_ref(), Default::default()).await?;
    std::fs::create_dir_all(dir.join("data/orders"))?;
    for year in 1992..=1998 {
        let file = dir.join(format!("data/orders/{year}.parquet"));
        let sql = format!(
            "COPY (SELECT * FROM orders WHERE date_part('year', o_orderdate) = {year} ORDER BY o_orderdate) \
             TO '{}' STORED AS PARQUET OPTIONS ('format.max_row_group_size' '16384')",
            file.display()
        );
        ctx.sql(&sql).await?.collect().await?;
    }
    std::fs::remove_dir_all(&raw)?;
    Ok(())
}

/// Appends day `k` after the data's last day: the last day's orders, one day later per
/// `k`, with keys past every existing one.
async fn append_day(dir: &Path, k: i64) -> Result<()> {
    let ctx = datafusion::prelude::SessionContext::new();
    let path = dir.join("data/orders/1998.parquet");
    ctx.register_parquet("o", path.to_string_lossy().as_ref(), Default::default()).await?;
    let file = dir.join(format!("data/orders/new-{k:04}.parquet"));
    let sql = format!(
        "COPY (SELECT o_orderkey + {offset} AS o_orderkey, o_custkey, o_orderstatus, o_totalprice, \
                      o_orderdate + INTERVAL '{k} days' AS o_orderdate, o_orderpriority, o_clerk, o_shippriority, o_comment \
               FROM o WHERE o_orderdate = (SELECT max(o_orderdate) FROM o)) \
         TO '{}' STORED AS PARQUET",
        file.display(),
        offset = 1_000_000_000 * k,
    );
    ctx.sql(&sql).await?.collect().await?;
    Ok(())
}

const DUCKDB: &str = r#"
import duckdb, shutil, sys, time
data, target = sys.argv[1], sys.argv[2]
shutil.rmtree(target, ignore_errors=True)
t = time.time()
duckdb.sql(f"COPY (SELECT o_orderdate AS order_day, o_orderstatus, sum(o_totalprice) AS revenue, count(*) AS orders "
           f"FROM read_parquet('{data}/*.parquet') GROUP BY 1, 2) TO '{target}' "
           f"(FORMAT parquet, PARTITION_BY (order_day), COMPRESSION zstd, COMPRESSION_LEVEL 3)")
print(time.time() - t)
"#;

/// DuckDB's full computation of the product (seconds, inside its process).
fn duckdb(python: &Path, dir: &Path) -> Result<f64> {
    let out =
        Command::new(python).args(["-c", DUCKDB]).arg(dir.join("data/orders")).arg(dir.join("duckdb-out")).output()?;
    ensure!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let dir = std::path::absolute(out.join("intervals-orders"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("kiln.toml"), "[project]\nname = \"intervals\"\n")?;
    std::fs::write(dir.join("models.sql"), MODELS)?;
    source(&dir, sf).await?;
    let (cold, run) = build(&dir, false).await?;
    eprintln!("intervals: first build {cold:.2} s, {} intervals", intervals(&run));
    let python = crate::build::duckdb_python(out)?;
    let (mut incremental, mut full, mut plans, mut duck) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut held = 0;
    let mut computed = 0;
    let mut day = 0;
    for k in 0..runs {
        // Each side gets a new day of its own; which goes first alternates.
        let mut sides = [false, true];
        if k % 2 == 1 {
            sides.reverse();
        }
        if k % 2 == 0 {
            duck.push(duckdb(&python, &dir)?);
        }
        for restate in sides {
            day += 1;
            append_day(&dir, day).await?;
            if !restate {
                let t = Instant::now();
                let plan = kiln::plan(&dir, &kiln::BuildOptions::default()).await?;
                plans.push(t.elapsed().as_secs_f64());
                let entry = plan.products.iter().find(|p| p.product == "daily_revenue");
                held = entry.and_then(|p| p.intervals.as_ref()).map_or(0, |i| i.held);
            }
            let (seconds, run) = build(&dir, restate).await?;
            ensure!(run.action == kiln::artifact::Action::Built, "daily_revenue was not built: {run:?}");
            eprintln!(
                "intervals run {k}: {} {seconds:.3} s ({} intervals)",
                if restate { "full rebuild" } else { "incremental" },
                intervals(&run)
            );
            if restate {
                full.push(seconds);
            } else {
                computed = intervals(&run);
                incremental.push(seconds);
            }
        }
        if k % 2 == 1 {
            duck.push(duckdb(&python, &dir)?);
        }
    }
    let duck = crate::median(duck);
    let (inc, fr, plan) = (crate::median(incremental), crate::median(full), crate::median(plans));
    Ok(json!({
        "runs": runs,
        "rows": [
            {
                "case": format!("orders sf {sf}: one new day, {computed} of {held} days computed"),
                "kiln_median": inc,
                "peer": "kiln build --restate (full rebuild)",
                "peer_median": fr,
                "ratio": inc / fr,
                "target": "<= 0.05",
            },
            {
                "case": format!("orders sf {sf}: one new day, incremental"),
                "kiln_median": inc,
                "peer": "DuckDB, the whole query to partitioned Parquet",
                "peer_median": duck,
                "ratio": inc / duck,
                "target": "",
            },
            {
                "case": format!("orders sf {sf}: full rebuild (kiln build --restate)"),
                "kiln_median": fr,
                "peer": "DuckDB, the whole query to partitioned Parquet",
                "peer_median": duck,
                "ratio": fr / duck,
                "target": "",
            },
            {
                "case": format!("orders sf {sf}: kiln plan, {held} intervals"),
                "kiln_median": plan,
                "peer": "target",
                "peer_median": 0.1,
                "ratio": plan / 0.1,
                "target": "<= 0.1 s",
            },
        ],
    }))
}
