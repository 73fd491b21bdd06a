//! Suite `functions`: hashing throughput over 10M strings of 10–40 bytes.
//!
//! Measured side by side, alternating, single-threaded:
//! - kernel level: `kiln_sha256_hex` / `kiln_pii_hash` invoked on Arrow arrays vs the sha2
//!   crate (and an HMAC from the hmac crate) called directly in a tight loop over the same
//!   bytes (digest only, no hex): the physical limit; and vs a tight loop that also writes
//!   the hex (the same output work as the kernel);
//! - SQL level: `SELECT kiln_sha256_hex(s)` vs DataFusion's `encode(sha256(s), 'hex')`
//!   over the same in-memory table, one partition.
//!
//! Ratios are kiln time / peer time (lower is better for Kiln); MB/s counts input bytes.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::config::ConfigOptions;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use kiln::functions::{Registry, Secrets};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ROWS: usize = 10_000_000;
const BATCH: usize = 8192;

fn data() -> (Vec<ArrayRef>, u64) {
    // A fixed LCG so every run hashes the same bytes.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut total = 0u64;
    let mut arrays = Vec::new();
    let mut left = ROWS;
    while left > 0 {
        let n = left.min(BATCH);
        let values: Vec<String> = (0..n)
            .map(|_| {
                let len = 10 + (next() % 31) as usize;
                (0..len).map(|_| char::from(b'a' + (next() % 26) as u8)).collect()
            })
            .collect();
        total += values.iter().map(|v| v.len() as u64).sum::<u64>();
        arrays.push(Arc::new(StringArray::from(values)) as ArrayRef);
        left -= n;
    }
    (arrays, total)
}

fn invoke(udf: &ScalarUDF, arrays: &[ArrayRef], key: Option<&str>) -> Result<usize> {
    let config = Arc::new(ConfigOptions::default());
    let mut produced = 0;
    for a in arrays {
        let mut args = vec![ColumnarValue::Array(Arc::clone(a))];
        let mut fields = vec![Arc::new(Field::new("s", DataType::Utf8, true))];
        if let Some(k) = key {
            args.push(ColumnarValue::Scalar(ScalarValue::Utf8(Some(k.to_owned()))));
            fields.push(Arc::new(Field::new("key", DataType::Utf8, false)));
        }
        let out = udf.invoke_with_args(ScalarFunctionArgs {
            args,
            arg_fields: fields,
            number_rows: a.len(),
            return_field: Arc::new(Field::new("out", DataType::Utf8, true)),
            config_options: Arc::clone(&config),
        })?;
        if let ColumnarValue::Array(o) = out {
            produced += o.len();
        }
    }
    Ok(produced)
}

fn tight_sha2(arrays: &[ArrayRef]) -> u8 {
    let mut acc = 0u8;
    for a in arrays {
        let s = a.as_any().downcast_ref::<StringArray>().map(|s| s.iter().flatten().collect::<Vec<_>>());
        for v in s.unwrap_or_default() {
            acc ^= Sha256::digest(v.as_bytes())[0];
        }
    }
    acc
}

fn tight_sha2_hex(arrays: &[ArrayRef]) -> usize {
    let mut total = 0;
    for a in arrays {
        let Some(s) = a.as_any().downcast_ref::<StringArray>() else { continue };
        let mut values: Vec<u8> = Vec::with_capacity(s.len() * 64);
        for v in s.iter().flatten() {
            let d: [u8; 32] = Sha256::digest(v.as_bytes()).into();
            values.extend_from_slice(&kiln::functions::hex::hex32(&d));
        }
        total += values.len();
    }
    total
}

fn tight_hmac(arrays: &[ArrayRef], key: &[u8]) -> u8 {
    use hmac::{Hmac, Mac};
    let mac = Hmac::<Sha256>::new_from_slice(key).ok();
    let mut acc = 0u8;
    for a in arrays {
        let s = a.as_any().downcast_ref::<StringArray>().map(|s| s.iter().flatten().collect::<Vec<_>>());
        for v in s.unwrap_or_default() {
            if let Some(m) = &mac {
                acc ^= m.clone().chain_update(v.as_bytes()).finalize().into_bytes()[0];
            }
        }
    }
    acc
}

async fn sql(ctx: &SessionContext, query: &str) -> Result<usize> {
    let mut stream = ctx.sql(query).await?.execute_stream().await?;
    let mut rows = 0;
    while let Some(b) = stream.next().await {
        rows += b?.num_rows();
    }
    Ok(rows)
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = std::hint::black_box(f());
    (t.elapsed().as_secs_f64(), out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(case: &str, peer: &str, kiln: Vec<f64>, other: Vec<f64>, bytes: u64, target: &str) -> Value {
    let (k, p) = (median(kiln.clone()), median(other.clone()));
    let mb = bytes as f64 / 1e6;
    eprintln!("{case}: kiln {:.0} MB/s, {peer} {:.0} MB/s, ratio {:.3}", mb / k, mb / p, k / p);
    json!({
        "case": case, "peer": peer, "kiln_seconds": kiln, "peer_seconds": other,
        "kiln_median": k, "peer_median": p, "ratio": k / p,
        "kiln_mb_per_s": mb / k, "peer_mb_per_s": mb / p, "target": target,
    })
}

pub async fn suite(runs: usize) -> Result<Value> {
    let (arrays, bytes) = data();
    eprintln!("functions: {ROWS} strings, {:.0} MB", bytes as f64 / 1e6);
    let key = "bench-key";
    let registry = Registry::builtin(Secrets::from_values([("k", key)]));
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
    registry.install(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = ctx.state();
    let sha_udf =
        state.scalar_functions().get("kiln_sha256_hex").cloned().ok_or_else(|| anyhow::anyhow!("missing udf"))?;
    let pii_udf =
        state.scalar_functions().get("kiln_pii_hash").cloned().ok_or_else(|| anyhow::anyhow!("missing udf"))?;
    let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
    let batches: Vec<RecordBatch> = arrays
        .iter()
        .map(|a| RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(a)]))
        .collect::<Result<_, _>>()?;
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![batches])?))?;

    let (mut k_sha, mut p_sha, mut k_pii, mut p_pii, mut k_sql, mut p_sql) = Default::default();
    let mut p_hex = Vec::new();
    let push = |v: &mut Vec<f64>, t: f64| v.push(t);
    for _ in 0..runs {
        let (t, _) = time(|| invoke(&sha_udf, &arrays, None));
        push(&mut k_sha, t);
        let (t, _) = time(|| tight_sha2(&arrays));
        push(&mut p_sha, t);
        let (t, _) = time(|| tight_sha2_hex(&arrays));
        push(&mut p_hex, t);
        let (t, _) = time(|| invoke(&pii_udf, &arrays, Some("k")));
        push(&mut k_pii, t);
        let (t, _) = time(|| tight_hmac(&arrays, key.as_bytes()));
        push(&mut p_pii, t);
        let t = Instant::now();
        sql(&ctx, "SELECT kiln_sha256_hex(s) FROM t").await?;
        push(&mut k_sql, t.elapsed().as_secs_f64());
        let t = Instant::now();
        sql(&ctx, "SELECT encode(sha256(s), 'hex') FROM t").await?;
        push(&mut p_sql, t.elapsed().as_secs_f64());
    }
    Ok(json!({
        "strings": ROWS,
        "bytes": bytes,
        "rows": [
            row("kiln_sha256_hex kernel", "sha2 digest loop", k_sha.clone(), p_sha, bytes, "throughput >= 80% of sha2 (ratio <= 1.25)"),
            row("kiln_sha256_hex kernel", "sha2 digest + hex32 loop", k_sha.clone(), p_hex, bytes, "report (same output work)"),
            row("kiln_pii_hash kernel", "hmac digest loop", k_pii, p_pii, bytes, "throughput >= 80% of hmac (ratio <= 1.25)"),
            row("SQL kiln_sha256_hex", "DataFusion encode(sha256(s), 'hex')", k_sql, p_sql, bytes, "ratio < 1"),
        ],
    }))
}
