//! Suite `build`: the example project at a TPC-H scale factor, Kiln against DuckDB and
//! plain DataFusion in the same run.
//!
//! Each run builds into fresh outputs, alternating the sides: Kiln (`kiln::build` on an
//! emptied warehouse and artifacts directory, in this process; its peak RSS from
//! `VmHWM`, reset before the build), DuckDB (the same products as SQL `COPY ... TO`
//! Parquet zstd(3), each product read back by the next from its files, in a Python
//! subprocess; its own peak RSS), and plain DataFusion (the products' SQL through
//! `write_parquet`, with DataFusion's own `array_agg`; `order_items` is skipped there:
//! DataFusion 55 cannot plan `UNNEST ... WITH OFFSET`). Medians per side, per product and
//! in total.
//!
//! DuckDB comes from `KILN_PEERS_PYTHON` (a python with duckdb) or a virtualenv the suite
//! makes under `<out>/peers-venv` from PyPI. Its `customer_clean` hashes with `sha256(key
//! || value)` (DuckDB has no HMAC): the same amount of hashing, not the same digests.
//!
//! Per-product times are each product's own wall time; Kiln runs independent products
//! concurrently, DuckDB one after the other, so only the totals compare directly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use kiln::control::dialect::Statement;
use serde_json::{Value, json};

use crate::{median, peak_rss_bytes, peak_rss_reset};

/// The example's products in DuckDB's SQL, in build order: (name, query, partition column).
const DUCKDB_PRODUCTS: &[(&str, &str, &str)] = &[
    (
        "customer_clean",
        "SELECT c_custkey, c_name, sha256('example-key-not-secret' || c_phone) AS phone_hash, \
         sha256('example-key-not-secret' || c_address) AS address_hash, c_nationkey, c_acctbal, c_mktsegment \
         FROM customer ORDER BY c_custkey",
        "",
    ),
    (
        "customer_order_summary",
        "WITH per_customer AS (SELECT o_custkey, COUNT(*) AS order_count, SUM(o_totalprice) AS total_spent, \
         MIN(o_orderdate) AS first_order, MAX(o_orderdate) AS last_order FROM orders GROUP BY o_custkey) \
         SELECT c.c_custkey, c.c_mktsegment, c.c_nationkey, p.order_count, p.total_spent, p.first_order, p.last_order \
         FROM customer_clean c JOIN per_customer p ON p.o_custkey = c.c_custkey ORDER BY c.c_custkey",
        "",
    ),
    (
        "revenue_by_nation_year",
        "SELECT r.r_name AS region, n.n_name AS nation, CAST(date_part('year', o.o_orderdate) AS INT) AS order_year, \
         COUNT(DISTINCT o.o_orderkey) AS orders, SUM(l.l_extendedprice * (1 - l.l_discount)) AS revenue \
         FROM lineitem l JOIN orders o ON l.l_orderkey = o.o_orderkey JOIN customer_clean c ON o.o_custkey = c.c_custkey \
         JOIN nation n ON c.c_nationkey = n.n_nationkey JOIN region r ON n.n_regionkey = r.r_regionkey \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        "region",
    ),
    (
        "segment_value",
        "SELECT s.c_mktsegment, n.n_name AS nation, COUNT(*) AS customers, SUM(s.total_spent) AS total_spent, \
         AVG(s.order_count) AS avg_orders FROM customer_order_summary s JOIN nation n ON s.c_nationkey = n.n_nationkey \
         GROUP BY 1, 2 ORDER BY 1, 2",
        "",
    ),
    (
        "orders_nested",
        "SELECT o.o_orderkey, o.o_orderdate, array_agg(struct_pack(linenumber := l.l_linenumber, \
         partkey := l.l_partkey, quantity := l.l_quantity, price := l.l_extendedprice) ORDER BY l.l_linenumber) AS items \
         FROM orders o JOIN lineitem l ON l.l_orderkey = o.o_orderkey GROUP BY o.o_orderkey, o.o_orderdate \
         ORDER BY o.o_orderkey",
        "",
    ),
    (
        "order_items",
        "SELECT o_orderkey, idx, item.linenumber AS linenumber, item.partkey AS partkey, item.quantity AS quantity, \
         item.price AS price FROM (SELECT o_orderkey, unnest(range(len(items))) AS idx, unnest(items) AS item \
         FROM orders_nested) ORDER BY o_orderkey, idx",
        "",
    ),
];

const DUCKDB_SCRIPT: &str = r#"
import json, os, sys, time
import duckdb
data, out, products = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
for t in ["nation", "region", "customer", "orders", "lineitem"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/**/*.parquet')")
seconds = {}
start = time.time()
for name, sql, part in products:
    t = time.time()
    target = os.path.join(out, name)
    opts = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3"
    if part:
        con.execute(f"COPY ({sql}) TO '{target}' ({opts}, PARTITION_BY ({part}))")
    else:
        os.makedirs(target, exist_ok=True)
        con.execute(f"COPY ({sql}) TO '{target}/data.parquet' ({opts})")
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{target}/**/*.parquet', hive_partitioning = true)")
    seconds[name] = time.time() - t
# VmHWM, not ru_maxrss: Linux carries the parent's peak over exec into the latter.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"total": time.time() - start, "seconds": seconds, "peak_rss_bytes": int(hwm.split()[1]) * 1024}))
"#;

/// A python that imports duckdb: `KILN_PEERS_PYTHON`, else a virtualenv made under `out`.
pub(crate) fn duckdb_python(out: &Path) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_PEERS_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = out.join("peers-venv");
    let python = venv.join("bin/python");
    let ok = |p: &Path| Command::new(p).args(["-c", "import duckdb"]).output().is_ok_and(|o| o.status.success());
    if !ok(&python) {
        eprintln!("making a virtualenv with duckdb in {}", venv.display());
        let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status()?;
        ensure_ok(status.success(), "python3 -m venv")?;
        let status = Command::new(venv.join("bin/pip")).args(["install", "-q", "duckdb"]).status()?;
        ensure_ok(status.success(), "pip install duckdb")?;
    }
    Ok(python)
}

fn ensure_ok(ok: bool, what: &str) -> Result<()> {
    if ok { Ok(()) } else { bail!("{what} failed") }
}

struct Side {
    total: Vec<f64>,
    products: BTreeMap<String, Vec<f64>>,
    peak_rss: Vec<u64>,
}

impl Side {
    fn new() -> Self {
        Self { total: Vec::new(), products: BTreeMap::new(), peak_rss: Vec::new() }
    }

    fn summary(&self) -> Value {
        let per: BTreeMap<&String, f64> = self.products.iter().map(|(k, v)| (k, median(v.clone()))).collect();
        json!({
            "seconds": self.total, "median": median(self.total.clone()), "products": per,
            "peak_rss_bytes": self.peak_rss.iter().max(),
        })
    }
}

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let data = std::path::absolute(out.join(format!("tpch-sf{sf}")))?;
    if !kiln::data::tpch::is_generated(&data, sf) {
        eprintln!("generating TPC-H sf {sf} into {}", data.display());
        crate::tpch(&data, sf)?;
    }
    let project = crate::example_project(&out.join("build-project"), sf)?;
    std::os::unix::fs::symlink(&data, project.join("data")).context("link data")?;
    let loaded = kiln::Project::load(&project)?;
    let python = duckdb_python(out)?;
    let duck_products = serde_json::to_string(DUCKDB_PRODUCTS)?;

    let (mut kiln_side, mut duck, mut df) = (Side::new(), Side::new(), Side::new());
    for i in 0..runs {
        // Kiln, from an empty warehouse: every product built.
        let _ = std::fs::remove_dir_all(project.join("warehouse"));
        let _ = std::fs::remove_dir_all(project.join(".kiln"));
        peak_rss_reset();
        let t = Instant::now();
        let report = kiln::build(&project, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
        let seconds = t.elapsed().as_secs_f64();
        if report.failed().next().is_some() {
            bail!("kiln build failed: {:?}", report.summary.products);
        }
        let built = report.summary.products.iter().filter(|p| p.action == kiln::artifact::Action::Built).count();
        ensure_ok(built == DUCKDB_PRODUCTS.len(), "kiln built every product")?;
        kiln_side.total.push(seconds);
        kiln_side.peak_rss.push(peak_rss_bytes().unwrap_or(0));
        for p in &report.summary.products {
            kiln_side.products.entry(p.product.clone()).or_default().push(p.seconds);
        }

        let target = out.join(format!("duckdb-out-{i}"));
        let _ = std::fs::remove_dir_all(&target);
        let o =
            Command::new(&python).args(["-c", DUCKDB_SCRIPT]).arg(&data).arg(&target).arg(&duck_products).output()?;
        if !o.status.success() {
            bail!("duckdb build failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let r: Value = serde_json::from_slice(&o.stdout)?;
        duck.total.push(r["total"].as_f64().unwrap_or(f64::NAN));
        duck.peak_rss.push(r["peak_rss_bytes"].as_u64().unwrap_or(0));
        for (name, s) in r["seconds"].as_object().into_iter().flatten() {
            duck.products.entry(name.clone()).or_default().push(s.as_f64().unwrap_or(f64::NAN));
        }
        let _ = std::fs::remove_dir_all(&target);

        let target = project.join(format!("df-out-{i}"));
        peak_rss_reset();
        let t = Instant::now();
        let per = plain_datafusion(&loaded, &target).await?;
        df.total.push(t.elapsed().as_secs_f64());
        df.peak_rss.push(peak_rss_bytes().unwrap_or(0));
        for (name, s) in per {
            df.products.entry(name).or_default().push(s);
        }
        let _ = std::fs::remove_dir_all(&target);
        eprintln!(
            "build run {i}: kiln {:.2}s, duckdb {:.2}s, datafusion (without order_items) {:.2}s",
            kiln_side.total[i], duck.total[i], df.total[i]
        );
    }
    let (k, d) = (median(kiln_side.total.clone()), median(duck.total.clone()));
    let mut rows = vec![json!({
        "case": format!("example project sf {sf}"), "peer": "DuckDB COPY", "kiln_median": k, "peer_median": d,
        "ratio": k / d, "target": "ratio <= 2 (issue 21)",
    })];
    let per_kiln = kiln_side.summary();
    let per_duck = duck.summary();
    for (name, _, _) in DUCKDB_PRODUCTS {
        let (km, dm) = (per_kiln["products"][name].as_f64(), per_duck["products"][name].as_f64());
        if let (Some(km), Some(dm)) = (km, dm) {
            rows.push(json!({
                "case": format!("{name} sf {sf} (own wall time)"), "peer": "DuckDB COPY", "kiln_median": km,
                "peer_median": dm, "ratio": km / dm,
                "target": if *name == "orders_nested" { "ratio <= 1.5 (issue 21)" } else { "report" },
            }));
        }
    }
    Ok(json!({
        "scale_factor": sf, "rows": rows, "kiln": per_kiln, "duckdb": per_duck, "datafusion": df.summary(),
        "datafusion_skips": ["order_items"],
    }))
}

/// The products as plain DataFusion, DataFusion's own `array_agg`: register the sources,
/// then run each product's SQL (with its ORDER BY) and `write_parquet` it, registering
/// the output for downstream. Returns each product's seconds.
async fn plain_datafusion(project: &kiln::Project, out: &Path) -> Result<Vec<(String, f64)>> {
    let ctx = SessionContext::new();
    // Kiln's functions (the example hashes PII) are the only Kiln code on this side.
    kiln::functions::Registry::builtin(project.config.resolve_secrets())
        .install(&ctx)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ctx.register_udaf(datafusion::functions_aggregate::array_agg::array_agg_udaf().as_ref().clone());
    let mut parquet = TableParquetOptions::default();
    parquet.global.compression = Some("zstd(3)".into());
    let mut times = Vec::new();
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
            Statement::Product(def) if def.name == "order_items" => {}
            Statement::Product(def) => {
                let t = Instant::now();
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
                times.push((def.name.clone(), t.elapsed().as_secs_f64()));
            }
            // `kiln build` runs neither (streams run under `kiln stream`), nor do the peers
            // run Kiln's checks.
            Statement::Stream(_) | Statement::View(_) | Statement::Audit(_) | Statement::Test(_) => {}
        }
    }
    Ok(times)
}
