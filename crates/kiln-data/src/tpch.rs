//! TPC-H data generation with tpchgen, as Parquet (zstd), for the example project, tests
//! and benchmarks. No downloads: the data is computed.
//!
//! Layout: `<out>/<table>/part-<n>.parquet`, one file per generator part (about a million
//! rows each), then `<out>/_tpch.json` recording the scale factor. Files are written under
//! a hidden temporary name and renamed, and the marker is written last, so an interrupted
//! generation is redone rather than half used.

use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatchReader;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

use crate::{DataError, Result};

/// The eight TPC-H tables.
pub const TABLES: [&str; 8] = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"];

/// Rows per table at scale factor 1 (nation and region are fixed).
fn rows_at_sf1(table: &str) -> f64 {
    match table {
        "part" => 200_000.0,
        "supplier" => 10_000.0,
        "partsupp" => 800_000.0,
        "customer" => 150_000.0,
        "orders" => 1_500_000.0,
        "lineitem" => 6_001_215.0,
        _ => 25.0,
    }
}

/// Whether `out` already holds data generated at `scale_factor`.
pub fn is_generated(out: &Path, scale_factor: f64) -> bool {
    std::fs::read_to_string(out.join("_tpch.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("scale_factor").and_then(serde_json::Value::as_f64))
        .is_some_and(|sf| sf == scale_factor)
}

/// Generates the given tables (all when empty) at `scale_factor` into `out`, using up to
/// `threads` threads. Returns the number of rows written.
pub fn generate(out: &Path, scale_factor: f64, tables: &[&str], threads: usize) -> Result<u64> {
    if !(scale_factor > 0.0 && scale_factor.is_finite()) {
        return Err(DataError::Config(format!("tpch scale factor must be positive, got {scale_factor}")));
    }
    let tables: Vec<&str> = if tables.is_empty() { TABLES.to_vec() } else { tables.to_vec() };
    if let Some(bad) = tables.iter().find(|t| !TABLES.contains(t)) {
        return Err(DataError::Config(format!("unknown TPC-H table `{bad}` (known: {})", TABLES.join(", "))));
    }
    let _ = std::fs::remove_file(out.join("_tpch.json"));
    let mut jobs = Vec::new();
    for table in &tables {
        let dir = out.join(table);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(DataError::io(format!("cannot clear {}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir).map_err(DataError::io(format!("cannot create {}", dir.display())))?;
        let parts = ((rows_at_sf1(table) * scale_factor) / 1_000_000.0).ceil().max(1.0) as i32;
        jobs.extend((1..=parts).map(|p| (*table, p, parts)));
    }
    let queue = Mutex::new(jobs);
    let total = Mutex::new(Ok(0u64));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let job = queue.lock().ok().and_then(|mut q| q.pop());
                    let Some((table, part, parts)) = job else { break };
                    let result = write_part(out, table, scale_factor, part, parts);
                    if let Ok(mut t) = total.lock() {
                        *t = match (std::mem::replace(&mut *t, Ok(0)), result) {
                            (Ok(a), Ok(b)) => Ok(a + b),
                            (Err(e), _) | (_, Err(e)) => Err(e),
                        };
                    }
                }
            });
        }
    });
    let rows = total.into_inner().map_err(|_| DataError::Internal("tpch generator thread panicked".into()))??;
    std::fs::write(out.join("_tpch.json"), format!("{{\"scale_factor\": {scale_factor}}}\n"))
        .map_err(DataError::io(format!("cannot write {}", out.join("_tpch.json").display())))?;
    Ok(rows)
}

fn write_part(out: &Path, table: &str, sf: f64, part: i32, parts: i32) -> Result<u64> {
    let reader: Box<dyn RecordBatchReader + Send> = match table {
        "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, part, parts))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(sf, part, parts))),
        "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, part, parts))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))),
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, part, parts))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts))),
        _ => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, part, parts))),
    };
    let tmp = out.join(table).join(format!(".part-{part}.parquet.tmp"));
    let dest = out.join(table).join(format!("part-{part}.parquet"));
    let file = File::create(&tmp).map_err(DataError::io(format!("cannot create {}", tmp.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_created_by("kiln tpch".into())
        .build();
    let mut writer = ArrowWriter::try_new(file, reader.schema(), Some(props))
        .map_err(DataError::parquet(format!("cannot write {}", tmp.display())))?;
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| DataError::Config(format!("tpch {table}: {e}")))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(DataError::parquet(format!("cannot write {}", tmp.display())))?;
    }
    writer.close().map_err(DataError::parquet(format!("cannot finish {}", tmp.display())))?;
    std::fs::rename(&tmp, &dest).map_err(DataError::io(format!("cannot rename {}", tmp.display())))?;
    Ok(rows)
}
