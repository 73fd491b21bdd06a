//! Suite `write`: rewrite TPC-H lineitem (Parquet -> Parquet, zstd(3)), unpartitioned and
//! partitioned by ship year.
//!
//! Side by side, alternating, in one process: a Kiln build of one product (compile,
//! execute, write, verify footers, commit) against DataFusion's `COPY (...) TO ... STORED
//! AS PARQUET [PARTITIONED BY]` of the same query on the same files, with the same
//! compression; Kiln with its default profile, as COPY runs with DataFusion's defaults.
//! Kiln's peak RSS is measured in one more build under the `memory_limited` profile (the
//! kernel's high-water mark, reset before the run through /proc/self/clear_refs).
//! PyArrow's `write_dataset` of the same data is reported when `KILN_PEERS_PYTHON` names
//! a python with pyarrow (`../shared/tools/peers-venv.sh` makes one).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use serde_json::{Value, json};
use std::sync::Arc;

const CASES: [(&str, &str, &str); 2] = [
    ("unpartitioned", "", "SELECT * FROM lineitem"),
    (
        "partitioned by ship year",
        "PARTITIONED BY (ship_year)",
        "SELECT *, CAST(date_part('year', l_shipdate) AS INT) AS ship_year FROM lineitem",
    ),
];

use crate::{median, peak_rss_bytes, peak_rss_reset};

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { dir_bytes(&p) } else { e.metadata().map_or(0, |m| m.len()) }
        })
        .sum()
}

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let data = std::path::absolute(out.join(format!("tpch-sf{sf}")))?;
    if !kiln::data::tpch::is_generated(&data, sf) {
        eprintln!("generating TPC-H sf {sf} into {}", data.display());
        kiln::data::tpch::generate(&data, sf, &[], 2)?;
    }
    let sources = include_str!("../../examples/tpch/sources.sql");
    let lineitem_source = sources
        .split(';')
        .find(|s| s.contains("CREATE SOURCE lineitem"))
        .context("the example declares lineitem")?
        .trim()
        .to_owned();
    let mut rows_out = Vec::new();
    for (case, partitioning, query) in CASES {
        let project = std::path::absolute(out.join("write-project"))?;
        let _ = std::fs::remove_dir_all(&project);
        std::fs::create_dir_all(&project)?;
        std::fs::write(project.join("kiln.toml"), "[project]\nname = \"write\"\n")?;
        std::fs::write(
            project.join("models.sql"),
            format!("{lineitem_source};\nCREATE PRODUCT li {partitioning} AS {query};\n"),
        )?;
        std::os::unix::fs::symlink(&data, project.join("data")).context("link data")?;

        let ctx = SessionContext::new();
        ctx.register_listing_table(
            "lineitem",
            data.join("lineitem").to_string_lossy().as_ref(),
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
            None,
            None,
        )
        .await?;

        let fresh_build = |profile: Option<&str>| {
            let _ = std::fs::remove_dir_all(project.join("warehouse"));
            let _ = std::fs::remove_dir_all(project.join(".kiln"));
            let options = kiln::BuildOptions { profile: profile.map(str::to_owned), ..Default::default() };
            let project = project.clone();
            async move {
                let report = kiln::build(&project, &options, &kiln::Quiet).await?;
                if report.failed().next().is_some() {
                    bail!("kiln build failed: {:?}", report.summary.products);
                }
                Ok(())
            }
        };
        let (mut k, mut d) = (Vec::new(), Vec::new());
        let (mut kiln_bytes, mut df_bytes) = (0, 0);
        for i in 0..runs {
            let t = Instant::now();
            fresh_build(None).await?;
            k.push(t.elapsed().as_secs_f64());
            kiln_bytes = dir_bytes(&project.join("warehouse"));

            let target = project.join(format!("copy-{i}"));
            let partition_clause = if partitioning.is_empty() { "" } else { "PARTITIONED BY (ship_year)" };
            let copy = format!(
                "COPY ({query}) TO '{}/' STORED AS PARQUET {partition_clause} OPTIONS ('format.compression' 'zstd(3)')",
                target.display()
            );
            let t = Instant::now();
            ctx.sql(&copy).await?.collect().await?;
            d.push(t.elapsed().as_secs_f64());
            df_bytes = dir_bytes(&target);
            let _ = std::fs::remove_dir_all(&target);
            eprintln!("write {case} run {i}: kiln {:.2}s, datafusion COPY {:.2}s", k[i], d[i]);
        }
        let (km, dm) = (median(k.clone()), median(d.clone()));
        peak_rss_reset();
        let t = Instant::now();
        fresh_build(Some("memory_limited")).await?;
        let limited = t.elapsed().as_secs_f64();
        let peak = peak_rss_bytes().unwrap_or(0);
        rows_out.push(json!({
            "case": format!("lineitem sf {sf} {case}"), "peer": "DataFusion COPY TO",
            "kiln_seconds": k, "peer_seconds": d, "kiln_median": km, "peer_median": dm, "ratio": km / dm,
            "target": "ratio <= 1.05; peak RSS <= 1 GiB under memory_limited",
            "kiln_peak_rss_bytes": peak, "kiln_memory_limited_seconds": limited,
            "kiln_bytes": kiln_bytes, "peer_bytes": df_bytes,
        }));
        eprintln!(
            "write {case}: kiln {km:.2}s vs COPY {dm:.2}s (ratio {:.3}); memory_limited {limited:.2}s, peak RSS {:.0} MiB; {} vs {} bytes",
            km / dm,
            peak as f64 / 1048576.0,
            kiln_bytes,
            df_bytes
        );
        if let Some(python) = std::env::var_os("KILN_PEERS_PYTHON") {
            let target = project.join("pyarrow");
            let script = format!(
                r#"
import sys, time, pyarrow as pa, pyarrow.dataset as ds, pyarrow.compute as pc
src = ds.dataset(sys.argv[1], format="parquet")
t = time.time()
table_or_scanner = src.scanner()
opts = ds.ParquetFileFormat().make_write_options(compression="zstd", compression_level=3)
if {partitioned}:
    tbl = src.to_table()
    tbl = tbl.cast(pa.schema([pa.field(f.name, pa.string() if f.type == pa.string_view() else f.type) for f in tbl.schema]))
    tbl = tbl.append_column("ship_year", pc.year(tbl["l_shipdate"]).cast("int32"))
    ds.write_dataset(tbl, sys.argv[2], format="parquet", file_options=opts, partitioning=["ship_year"], partitioning_flavor="hive")
else:
    ds.write_dataset(table_or_scanner, sys.argv[2], format="parquet", file_options=opts)
print(time.time() - t)
"#,
                partitioned = if partitioning.is_empty() { "False" } else { "True" }
            );
            let mut times = Vec::new();
            for _ in 0..runs {
                let _ = std::fs::remove_dir_all(&target);
                let o = Command::new(&python)
                    .args([
                        "-c",
                        &script,
                        data.join("lineitem").to_str().unwrap_or_default(),
                        target.to_str().unwrap_or_default(),
                    ])
                    .output()?;
                if !o.status.success() {
                    bail!("pyarrow write failed: {}", String::from_utf8_lossy(&o.stderr));
                }
                times.push(String::from_utf8_lossy(&o.stdout).trim().parse::<f64>()?);
            }
            let pm = median(times.clone());
            eprintln!("write {case}: pyarrow write_dataset {pm:.2}s (in-process time, excluding interpreter start)");
            rows_out.push(json!({
                "case": format!("lineitem sf {sf} {case} vs PyArrow"), "peer": "PyArrow write_dataset",
                "kiln_seconds": k, "peer_seconds": times, "kiln_median": km, "peer_median": pm, "ratio": km / pm,
                "target": "report",
            }));
            let _ = std::fs::remove_dir_all(&target);
        }
    }
    Ok(json!({ "scale_factor": sf, "rows": rows_out }))
}
