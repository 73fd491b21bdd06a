//! Criterion: kiln_sha256_hex / kiln_pii_hash kernels vs the sha2 crate in a tight loop,
//! over 1M strings of 10–40 bytes (the `functions` suite of `cargo xtask bench` runs the
//! full 10M side by side with DataFusion's encode(sha256(x), 'hex')).

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion::scalar::ScalarValue;
use kiln_functions::Secrets;
use kiln_functions::builtins::{PiiHash, Sha256Hex};
use sha2::{Digest, Sha256};

fn strings(n: usize) -> (Vec<ArrayRef>, u64) {
    let mut state: u64 = 42;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        state >> 33
    };
    let values: Vec<String> = (0..n)
        .map(|_| (0..10 + (next() % 31) as usize).map(|_| char::from(b'a' + (next() % 26) as u8)).collect())
        .collect();
    let bytes = values.iter().map(|v| v.len() as u64).sum();
    (values.chunks(8192).map(|c| Arc::new(StringArray::from(c.to_vec())) as ArrayRef).collect(), bytes)
}

fn run(udf: &ScalarUDF, arrays: &[ArrayRef], key: bool) -> usize {
    let config = Arc::new(ConfigOptions::default());
    arrays
        .iter()
        .map(|a| {
            let mut args = vec![ColumnarValue::Array(Arc::clone(a))];
            let mut arg_fields = vec![Arc::new(Field::new("s", DataType::Utf8, true))];
            if key {
                args.push(ColumnarValue::Scalar(ScalarValue::Utf8(Some("k".into()))));
                arg_fields.push(Arc::new(Field::new("key", DataType::Utf8, false)));
            }
            let out = udf
                .invoke_with_args(ScalarFunctionArgs {
                    args,
                    arg_fields,
                    number_rows: a.len(),
                    return_field: Arc::new(Field::new("o", DataType::Utf8, true)),
                    config_options: Arc::clone(&config),
                })
                .map(|c| matches!(c, ColumnarValue::Array(_)));
            usize::from(out.unwrap_or(false))
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let (arrays, bytes) = strings(1_000_000);
    let sha = ScalarUDF::new_from_impl(Sha256Hex::default());
    let pii = ScalarUDF::new_from_impl(PiiHash::new(Arc::new(Secrets::from_values([("k", "bench-key")]))));
    let mut g = c.benchmark_group("hash_1m_strings");
    g.throughput(Throughput::Bytes(bytes)).sample_size(10);
    g.bench_function("sha2_digest_loop", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for a in &arrays {
                if let Some(s) = a.as_any().downcast_ref::<StringArray>() {
                    for v in s.iter().flatten() {
                        acc ^= Sha256::digest(v.as_bytes())[0];
                    }
                }
            }
            acc
        })
    });
    g.bench_function("kiln_sha256_hex", |b| b.iter(|| run(&sha, &arrays, false)));
    g.bench_function("kiln_pii_hash", |b| b.iter(|| run(&pii, &arrays, true)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
