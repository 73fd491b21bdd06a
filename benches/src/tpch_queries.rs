//! Suite `tpch`: the 22 TPC-H queries as Kiln products against DuckDB writing the same
//! Parquet, in the same run.
//!
//! The queries are `benches/tpch/queries.sql` (the specification's text with its validation
//! parameters), the eight tables the example's sources.sql and `benches/tpch/sources.sql`
//! declare, over data `kiln-bench tpch`
//! generates once per scale factor. A generated project holds one product `qNN` per query.
//! Each run, alternating the sides:
//!
//! - Kiln, whole: `kiln::build` of all 22 products from an emptied warehouse and artifacts
//!   directory, in this process (Kiln runs independent products concurrently); its peak
//!   RSS from `VmHWM`, reset before the build.
//! - DuckDB: each query as `COPY (query) TO` Parquet zstd(3), one after the other, in one
//!   Python process over views of the same files; per query and in total, its peak RSS.
//! - Kiln, one at a time: 22 builds, each `--select qNN` from an emptied warehouse, so each
//!   product's own time has no neighbour on the cores, as DuckDB's does not.
//!
//! The totals compare directly (whole build against DuckDB's sum, both including their
//! writes); per query the product's own build time (compile, plan, execute and write,
//! commit) against DuckDB's COPY. Every run checks that both sides wrote the same number of
//! rows per query, so a ratio never compares different answers' sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{median, peak_rss_bytes, peak_rss_reset};

const QUERIES: &str = include_str!("../tpch/queries.sql");
/// The example's five sources, then part, supplier and partsupp.
const SOURCES: [&str; 2] = [include_str!("../../examples/tpch/sources.sql"), include_str!("../tpch/sources.sql")];

/// The 22 queries: (`qNN`, SQL), from the `-- qNN` blocks of queries.sql.
pub(crate) fn queries() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in QUERIES.lines() {
        if let Some(name) = line.strip_prefix("-- q").filter(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push((format!("q{name}"), String::new()));
        } else if let Some((_, sql)) = out.last_mut() {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    for (_, sql) in &mut out {
        *sql = sql.trim().to_owned();
    }
    out
}

/// A fresh project at `dir` with the eight sources over `data` and one product per query;
/// its absolute path.
fn project(dir: &Path, data: &Path, queries: &[(String, String)]) -> Result<PathBuf> {
    let dir = std::path::absolute(dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("products"))?;
    std::fs::write(
        dir.join("kiln.toml"),
        "[project]\nname = \"tpch_queries\"\n\n[storage]\nwarehouse = \"warehouse\"\nartifacts = \".kiln\"\n\n\
         [profile]\ndefault = \"prod_fast\"\n",
    )?;
    std::fs::write(dir.join("sources.sql"), SOURCES.join("\n"))?;
    for (name, sql) in queries {
        std::fs::write(
            dir.join("products").join(format!("{name}.sql")),
            format!("CREATE PRODUCT {name} AS\n{sql};\n"),
        )?;
    }
    std::os::unix::fs::symlink(data, dir.join("data")).context("link data")?;
    Ok(dir)
}

const DUCKDB_SCRIPT: &str = r#"
import json, os, sys, time
import duckdb
data, out, queries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
for t in ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]:
    con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/**/*.parquet')")
seconds, rows = {}, {}
os.makedirs(out, exist_ok=True)
for name, sql in queries:
    target = os.path.join(out, f"{name}.parquet")
    t = time.time()
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)")
    seconds[name] = time.time() - t
    rows[name] = con.execute(f"SELECT count(*) FROM read_parquet('{target}')").fetchone()[0]
# VmHWM, not ru_maxrss: Linux carries the parent's peak over exec into the latter.
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"total": sum(seconds.values()), "seconds": seconds, "rows": rows,
                  "peak_rss_bytes": int(hwm.split()[1]) * 1024}))
"#;

fn clear(project: &Path) {
    let _ = std::fs::remove_dir_all(project.join("warehouse"));
    let _ = std::fs::remove_dir_all(project.join(".kiln"));
}

/// Builds `select` (all when `None`) from an empty warehouse: the wall time, and each
/// built product's (seconds, rows).
async fn kiln_build(project: &Path, select: Option<&str>) -> Result<(f64, BTreeMap<String, (f64, u64)>)> {
    clear(project);
    let options = kiln::BuildOptions { select: select.map(str::to_owned), ..kiln::BuildOptions::default() };
    let t = Instant::now();
    let report = kiln::build(project, &options, &kiln::Quiet).await?;
    let seconds = t.elapsed().as_secs_f64();
    if report.failed().next().is_some() {
        bail!("kiln build failed: {:?}", report.summary.products);
    }
    let built = report
        .summary
        .products
        .iter()
        .filter(|p| p.action == kiln::artifact::Action::Built)
        .map(|p| (p.product.clone(), (p.seconds, p.rows)))
        .collect();
    Ok((seconds, built))
}

#[derive(Default)]
struct Times {
    total: Vec<f64>,
    per: BTreeMap<String, Vec<f64>>,
    peak_rss: Vec<u64>,
}

impl Times {
    fn medians(&self) -> BTreeMap<String, f64> {
        self.per.iter().map(|(k, v)| (k.clone(), median(v.clone()))).collect()
    }

    fn summary(&self) -> Value {
        json!({
            "seconds": self.total, "median": median(self.total.clone()), "queries": self.medians(),
            "peak_rss_bytes": self.peak_rss.iter().max(),
        })
    }
}

fn same_rows(kiln: &BTreeMap<String, (f64, u64)>, duck: &Value, what: &str) -> Result<()> {
    for (name, (_, rows)) in kiln {
        let peer = duck["rows"][name].as_u64();
        if peer != Some(*rows) {
            bail!("{name}: kiln ({what}) wrote {rows} rows, duckdb {peer:?}");
        }
    }
    Ok(())
}

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let data = std::path::absolute(out.join(format!("tpch-sf{sf}")))?;
    if !kiln::data::tpch::is_generated(&data, sf) {
        eprintln!("generating TPC-H sf {sf} into {}", data.display());
        crate::tpch(&data, sf)?;
    }
    let queries = queries();
    if queries.len() != 22 {
        bail!("benches/tpch/queries.sql holds {} queries, not 22", queries.len());
    }
    let project = project(&out.join("tpch-project"), &data, &queries)?;
    let python = crate::build::duckdb_python(out)?;
    let queries_json = serde_json::to_string(&queries)?;

    let (mut whole, mut alone, mut duck) = (Times::default(), Times::default(), Times::default());
    for i in 0..runs {
        peak_rss_reset();
        let (seconds, built) = kiln_build(&project, None).await?;
        if built.len() != queries.len() {
            bail!("kiln built {} of {} products", built.len(), queries.len());
        }
        whole.total.push(seconds);
        whole.peak_rss.push(peak_rss_bytes().unwrap_or(0));
        for (name, (s, _)) in &built {
            whole.per.entry(name.clone()).or_default().push(*s);
        }

        let target = out.join(format!("tpch-duckdb-out-{i}"));
        let _ = std::fs::remove_dir_all(&target);
        let o =
            Command::new(&python).args(["-c", DUCKDB_SCRIPT]).arg(&data).arg(&target).arg(&queries_json).output()?;
        let _ = std::fs::remove_dir_all(&target);
        if !o.status.success() {
            bail!("duckdb failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let r: Value = serde_json::from_slice(&o.stdout)?;
        same_rows(&built, &r, "whole build")?;
        duck.total.push(r["total"].as_f64().unwrap_or(f64::NAN));
        duck.peak_rss.push(r["peak_rss_bytes"].as_u64().unwrap_or(0));
        for (name, s) in r["seconds"].as_object().into_iter().flatten() {
            duck.per.entry(name.clone()).or_default().push(s.as_f64().unwrap_or(f64::NAN));
        }

        let mut sum = 0.0;
        for (name, _) in &queries {
            let (_, built) = kiln_build(&project, Some(name)).await?;
            same_rows(&built, &r, "alone")?;
            let (s, _) = built.get(name).with_context(|| format!("{name} was not built"))?;
            alone.per.entry(name.clone()).or_default().push(*s);
            sum += s;
        }
        alone.total.push(sum);
        eprintln!(
            "tpch run {i}: kiln whole {:.2}s, duckdb {:.2}s, kiln one at a time {sum:.2}s",
            whole.total[i], duck.total[i]
        );
    }
    clear(&project);

    let (w, a, d) = (median(whole.total.clone()), median(alone.total.clone()), median(duck.total.clone()));
    let mut rows = vec![
        json!({
            "case": format!("tpch 22 queries sf {sf}, whole build"), "peer": "DuckDB COPY", "kiln_median": w,
            "peer_median": d, "ratio": w / d, "target": "ratio <= 1.3 (issue 21)",
        }),
        json!({
            "case": format!("tpch 22 queries sf {sf}, one at a time"), "peer": "DuckDB COPY", "kiln_median": a,
            "peer_median": d, "ratio": a / d, "target": "report",
        }),
    ];
    let (alone_m, duck_m) = (alone.medians(), duck.medians());
    let mut ratios: Vec<(String, f64)> = Vec::new();
    for (name, _) in &queries {
        if let (Some(k), Some(p)) = (alone_m.get(name), duck_m.get(name)) {
            ratios.push((name.clone(), k / p));
            rows.push(json!({
                "case": format!("tpch {name} sf {sf} (alone)"), "peer": "DuckDB COPY", "kiln_median": k,
                "peer_median": p, "ratio": k / p, "target": "report",
            }));
        }
    }
    ratios.sort_by(|a, b| b.1.total_cmp(&a.1));
    ratios.truncate(3);
    Ok(json!({
        "scale_factor": sf, "rows": rows, "worst_three": ratios, "kiln_whole": whole.summary(),
        "kiln_alone": alone.summary(), "duckdb": duck.summary(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_query_file_holds_the_22_queries_in_order() {
        let q = super::queries();
        let names: Vec<&str> = q.iter().map(|(n, _)| n.as_str()).collect();
        let expected: Vec<String> = (1..=22).map(|i| format!("q{i:02}")).collect();
        assert_eq!(names, expected);
        assert!(q.iter().all(|(_, sql)| sql.starts_with("SELECT") || sql.starts_with("WITH")), "{q:?}");
        assert!(q[14].1.contains("revenue0") && q[21].1.contains("cntrycode"));
    }
}
