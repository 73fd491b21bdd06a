//! `cargo bench -p kiln-explode`: the kernels alone, on arrow only. 100k parent rows with
//! 0..20 elements each (~1M elements) and 3 parent columns (int64, utf8, float64), for
//! `list<int64>` and `list<struct<a int64, b utf8, c float64>>`: explode without idx, with
//! idx, and the physical limit (copying the values buffers once). Throughput is in
//! elements. The side-by-side comparison with DataFusion's `unnest` is suite `explode` of
//! `cargo xtask bench` (DataFusion is not a dependency of this crate).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, StringArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_explode::{ExplodeOptions, explode_batch};

const PARENTS: usize = 100_000;
const BATCH: usize = 8192;

fn batch(structs: bool) -> RecordBatch {
    let mut state: u64 = 7;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    let lens: Vec<usize> = (0..PARENTS).map(|_| (next() % 21) as usize).collect();
    let m: usize = lens.iter().sum();
    let item: ArrayRef = if structs {
        Arc::new(StructArray::new(
            Fields::from(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, true),
                Field::new("c", DataType::Float64, true),
            ]),
            vec![
                Arc::new(Int64Array::from_iter_values(0..m as i64)),
                Arc::new(StringArray::from_iter_values((0..m).map(|i| format!("s{}", i % 1000)))),
                Arc::new(Float64Array::from_iter_values((0..m).map(|i| i as f64 * 0.5))),
            ],
            None,
        ))
    } else {
        Arc::new(Int64Array::from_iter_values(0..m as i64))
    };
    let field = Arc::new(Field::new_list_field(item.data_type().clone(), true));
    let list = ListArray::new(field, OffsetBuffer::from_lengths(lens), item, None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("p1", DataType::Int64, false),
        Field::new("p2", DataType::Utf8, false),
        Field::new("p3", DataType::Float64, false),
        Field::new("l", list.data_type().clone(), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..PARENTS as i64)),
        Arc::new(StringArray::from_iter_values((0..PARENTS).map(|i| format!("parent-{i}")))),
        Arc::new(Float64Array::from_iter_values((0..PARENTS).map(|i| i as f64))),
        Arc::new(list),
    ];
    RecordBatch::try_new(schema, columns).unwrap_or_else(|e| panic!("bench input: {e}"))
}

fn copy_values(batch: &RecordBatch) -> usize {
    fn copy(data: &arrow::array::ArrayData) -> usize {
        let own: usize = data.buffers().iter().map(|b| std::hint::black_box(b.as_slice().to_vec()).len()).sum();
        own + data.child_data().iter().map(copy).sum::<usize>()
    }
    batch.column(3).as_any().downcast_ref::<ListArray>().map_or(0, |l| copy(&l.values().to_data()))
}

fn bench(c: &mut Criterion) {
    for structs in [false, true] {
        let input = batch(structs);
        let elements = input.column(3).as_any().downcast_ref::<ListArray>().map_or(0, |l| l.values().len());
        let mut group = c.benchmark_group(if structs { "list<struct<a,b,c>>" } else { "list<int64>" });
        group.throughput(Throughput::Elements(elements as u64));
        group.sample_size(20);
        for (name, with_idx) in [("explode", false), ("explode with idx", true)] {
            let options = ExplodeOptions { with_idx, ..ExplodeOptions::default() };
            group.bench_function(name, |b| {
                b.iter(|| {
                    let mut rows = 0;
                    // Input batches of BATCH parents, as an operator sees them.
                    let mut start = 0;
                    while start < PARENTS {
                        let len = BATCH.min(PARENTS - start);
                        let out = explode_batch(&input.slice(start, len), 3, "value", &options, BATCH);
                        rows += out.map_or(0, |v| v.iter().map(RecordBatch::num_rows).sum::<usize>());
                        start += len;
                    }
                    assert_eq!(rows, elements);
                })
            });
        }
        group.bench_function("copy values once (limit)", |b| b.iter(|| copy_values(&input)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
