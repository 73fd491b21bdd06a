//! Suite `explode`: 1M parent rows, 10M list elements, 3 parent columns.
//!
//! Side by side, alternating, one thread: Kiln's `explode_batch` without idx vs DataFusion
//! `SELECT p1, p2, p3, unnest(l) FROM t` (one partition), Kiln with idx, and the physical
//! limit: copying the values buffer once. Also Kiln's SQL path end to end (`CROSS JOIN
//! UNNEST(l) AS u(v)` planned by the Substrate and run by `ExplodeExec`) against the same
//! DataFusion query. Cases: `list<int64>` and `list<struct<a int64, b utf8, c float64>>`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use kiln::control::surface::Surface;
use kiln::control::{RuntimeProfile, Substrate};
use kiln::explode::{ExplodeOptions, explode_batch};
use serde_json::{Value, json};

const PARENTS: usize = 1_000_000;
const BATCH: usize = 8192;

fn batches(structs: bool) -> Result<Vec<RecordBatch>> {
    let mut state: u64 = 7;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < PARENTS {
        let n = BATCH.min(PARENTS - start);
        let lens: Vec<usize> = (0..n).map(|_| (next() % 21) as usize).collect();
        let m: usize = lens.iter().sum();
        let item: ArrayRef = if structs {
            let a = Int64Array::from_iter_values((0..m).map(|i| i as i64));
            let b = StringArray::from_iter_values((0..m).map(|i| format!("s{}", i % 1000)));
            let c = Float64Array::from_iter_values((0..m).map(|i| i as f64 * 0.5));
            Arc::new(StructArray::new(
                Fields::from(vec![
                    Field::new("a", DataType::Int64, true),
                    Field::new("b", DataType::Utf8, true),
                    Field::new("c", DataType::Float64, true),
                ]),
                vec![Arc::new(a), Arc::new(b), Arc::new(c)],
                None,
            ))
        } else {
            Arc::new(Int64Array::from_iter_values((0..m).map(|i| i as i64)))
        };
        let field = Arc::new(Field::new_list_field(item.data_type().clone(), true));
        let list = ListArray::try_new(field, OffsetBuffer::from_lengths(lens), item, None)?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("p1", DataType::Int64, false),
            Field::new("p2", DataType::Utf8, false),
            Field::new("p3", DataType::Float64, false),
            Field::new("l", list.data_type().clone(), true),
        ]));
        out.push(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values((start..start + n).map(|i| i as i64))),
                Arc::new(StringArray::from_iter_values((start..start + n).map(|i| format!("parent-{i}")))),
                Arc::new(Float64Array::from_iter_values((start..start + n).map(|i| i as f64))),
                Arc::new(list),
            ],
        )?);
        start += n;
    }
    Ok(out)
}

fn kiln(batches: &[RecordBatch], with_idx: bool) -> Result<usize> {
    let options = ExplodeOptions { with_idx, ..Default::default() };
    let mut rows = 0;
    for b in batches {
        for out in explode_batch(b, 3, "value", &options, BATCH)? {
            rows += out.num_rows();
        }
    }
    Ok(rows)
}

/// Copies every buffer of the list's values (children included) once: the least work any
/// explode that materializes its values must do.
fn copy_values(batches: &[RecordBatch]) -> usize {
    fn copy(data: &datafusion::arrow::array::ArrayData) -> usize {
        let own: usize = data.buffers().iter().map(|b| std::hint::black_box(b.as_slice().to_vec()).len()).sum();
        own + data.child_data().iter().map(copy).sum::<usize>()
    }
    batches
        .iter()
        .filter_map(|b| b.column(3).as_any().downcast_ref::<ListArray>())
        .map(|l| copy(&l.values().to_data()))
        .sum()
}

/// A Substrate with one partition and the suite's batch size, as DataFusion's side gets.
fn kiln_substrate() -> Result<Substrate> {
    let settings = [
        ("datafusion.execution.target_partitions".to_owned(), "1".to_owned()),
        ("datafusion.execution.batch_size".to_owned(), BATCH.to_string()),
    ];
    let profile = RuntimeProfile::resolve("prod_fast", &Default::default(), &settings)?;
    let registry = kiln::functions::Registry::builtin(kiln::functions::Secrets::from_values([]));
    Ok(Substrate::new(&profile, kiln::data::Warehouse::memory(), std::path::Path::new("."), registry)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub async fn suite(runs: usize) -> Result<Value> {
    let mut rows_out = Vec::new();
    for structs in [false, true] {
        let data = batches(structs)?;
        let elements: usize =
            data.iter().map(|b| b.column(3).as_any().downcast_ref::<ListArray>().map_or(0, |l| l.values().len())).sum();
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1).with_batch_size(BATCH));
        ctx.register_table("t", Arc::new(MemTable::try_new(data[0].schema(), vec![data.clone()])?))?;
        let substrate = kiln_substrate()?;
        substrate.context().register_table("t", Arc::new(MemTable::try_new(data[0].schema(), vec![data.clone()])?))?;
        let (mut k, mut ki, mut d, mut c) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut ks = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let n = kiln(&data, false)?;
            k.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut stream = ctx.sql("SELECT p1, p2, p3, unnest(l) FROM t").await?.execute_stream().await?;
            let mut m = 0;
            while let Some(b) = stream.next().await {
                m += b?.num_rows();
            }
            d.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(
                n == m && n == elements,
                "row counts differ: kiln {n}, datafusion {m}, elements {elements}"
            );
            let t = Instant::now();
            kiln(&data, true)?;
            ki.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let plan = substrate
                .plan_sql(Surface::Admin, "SELECT p1, p2, p3, v FROM t CROSS JOIN UNNEST(t.l) AS u(v)")
                .await?;
            let mut stream = substrate.context().execute_logical_plan(plan).await?.execute_stream().await?;
            let mut s = 0;
            while let Some(b) = stream.next().await {
                s += b?.num_rows();
            }
            ks.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(s == elements, "kiln SQL produced {s} rows, expected {elements}");
            let t = Instant::now();
            std::hint::black_box(copy_values(&data));
            c.push(t.elapsed().as_secs_f64());
        }
        let case = if structs { "list<struct<a,b,c>>" } else { "list<int64>" };
        let (km, kim, dm, cm) = (median(k.clone()), median(ki.clone()), median(d.clone()), median(c.clone()));
        let ksm = median(ks.clone());
        eprintln!(
            "explode {case}: kiln {km:.3}s, with idx {kim:.3}s, kiln SQL {ksm:.3}s, datafusion unnest {dm:.3}s, copy {cm:.3}s; {:.1}M elements/s",
            elements as f64 / km / 1e6
        );
        rows_out.push(json!({
            "case": format!("{case} vs unnest"), "peer": "DataFusion unnest", "kiln_seconds": k, "peer_seconds": d,
            "kiln_median": km, "peer_median": dm, "ratio": km / dm, "target": "ratio <= 0.5 (>= 2x faster)",
            "elements": elements, "kiln_elements_per_s": elements as f64 / km,
        }));
        rows_out.push(json!({
            "case": format!("{case} SQL: CROSS JOIN UNNEST vs unnest()"), "peer": "DataFusion unnest", "kiln_seconds": ks,
            "peer_seconds": d, "kiln_median": ksm, "peer_median": dm, "ratio": ksm / dm,
            "target": "ratio <= 0.5 (>= 2x faster)",
        }));
        rows_out.push(json!({
            "case": format!("{case} with idx vs without"), "peer": "Kiln without idx", "kiln_seconds": ki, "peer_seconds": k,
            "kiln_median": kim, "peer_median": km, "ratio": kim / km, "target": "ratio <= 1.25",
        }));
        rows_out.push(json!({
            "case": format!("{case} vs copying the values once"), "peer": "values buffer copy", "kiln_seconds": k, "peer_seconds": c,
            "kiln_median": km, "peer_median": cm, "ratio": km / cm, "target": "report (physical limit)",
            "copy_elements_per_s": elements as f64 / cm,
        }));
    }
    Ok(json!({ "parents": PARENTS, "rows": rows_out }))
}
