//! Kiln's grouped `array_agg` (kiln_functions::nest) against DataFusion's own on random
//! data: NULL values and keys, empty groups (a FILTER no row passes), ties in the order
//! key, nested structs, several partitions and batch sizes, and a memory pool small enough
//! that the aggregation emits early and spills.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
use kiln_functions::nest_plan::NestPlan;
use kiln_functions::{Registry, Secrets};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Row {
    g: i32,
    k: Option<i32>,
    a: Option<i64>,
    s: Option<String>,
    keep: bool,
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        0..12i32,
        proptest::option::weighted(0.85, 0..6i32),
        proptest::option::weighted(0.8, -3..3i64),
        proptest::option::weighted(0.8, "[ab]{0,2}"),
        proptest::bool::weighted(0.9),
    )
        .prop_map(|(g, k, a, s, keep)| Row { g, k, a, s, keep });
    proptest::collection::vec(row, 0..160)
}

fn table(rows: &[Row], partitions: usize, batch: usize) -> MemTable {
    let inner = Field::new(
        "n",
        DataType::Struct(vec![Field::new("a", DataType::Int64, true), Field::new("s", DataType::Utf8, true)].into()),
        true,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int32, false),
        Field::new("k", DataType::Int32, true),
        inner.clone(),
        Field::new("keep", DataType::Boolean, false),
    ]));
    let mut parts = vec![Vec::new(); partitions.max(1)];
    for (i, chunk) in rows.chunks(batch.max(1)).enumerate() {
        let nested = StructArray::try_new(
            match inner.data_type() {
                DataType::Struct(f) => f.clone(),
                _ => unreachable!(),
            },
            vec![
                Arc::new(chunk.iter().map(|r| r.a).collect::<Int64Array>()) as ArrayRef,
                Arc::new(chunk.iter().map(|r| r.s.clone()).collect::<StringArray>()),
            ],
            // Every fifth row's struct is NULL as a whole.
            Some(chunk.iter().enumerate().map(|(j, _)| (i * batch + j) % 5 != 4).collect::<Vec<_>>().into()),
        )
        .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(chunk.iter().map(|r| r.g).collect::<Int32Array>()),
            Arc::new(chunk.iter().map(|r| r.k).collect::<Int32Array>()),
            Arc::new(nested),
            Arc::new(chunk.iter().map(|r| Some(r.keep)).collect::<BooleanArray>()),
        ];
        parts[i % partitions.max(1)].push(RecordBatch::try_new(Arc::clone(&schema), columns).unwrap());
    }
    MemTable::try_new(schema, parts).unwrap()
}

fn context(kiln: bool, target_partitions: usize, batch_size: usize, memory: Option<usize>) -> SessionContext {
    planned(kiln, false, target_partitions, batch_size, memory)
}

/// [`context`], with Kiln's physical rule for the nest operator when `rule`
/// (kiln_functions::nest_plan: one phase, compacted output), as Kiln's sessions have.
fn planned(
    kiln: bool,
    rule: bool,
    target_partitions: usize,
    batch_size: usize,
    memory: Option<usize>,
) -> SessionContext {
    let mut config = SessionConfig::new().with_target_partitions(target_partitions).with_batch_size(batch_size);
    config.options_mut().execution.sort_spill_reservation_bytes = 256 << 10;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = memory {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime.build_arc().unwrap())
        .with_default_features();
    if rule {
        state = state.with_physical_optimizer_rule(Arc::new(NestPlan));
    }
    let ctx = SessionContext::new_with_state(state.build());
    if kiln {
        Registry::builtin(Secrets::from_values([])).install(&ctx).unwrap();
    }
    ctx
}

/// Each group's lists, one element per string; a list is `None` when NULL.
type Lists = Vec<(String, Vec<Option<Vec<String>>>)>;

async fn run(ctx: &SessionContext, t: MemTable, sql: &str) -> Lists {
    run_counting_spills(ctx, t, sql).await.0
}

/// [`run`], and how many times the plan's operators spilled.
async fn run_counting_spills(ctx: &SessionContext, t: MemTable, sql: &str) -> (Lists, usize) {
    fn spills(plan: &dyn ExecutionPlan) -> usize {
        plan.metrics().and_then(|m| m.spill_count()).unwrap_or(0)
            + plan.children().iter().map(|c| spills(c.as_ref())).sum::<usize>()
    }
    ctx.register_table("t", Arc::new(t)).unwrap();
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let batches = collect(Arc::clone(&plan), ctx.task_ctx()).await.unwrap();
    (lists(&batches), spills(plan.as_ref()))
}

/// The lists of `batches` (group key, then a list per column).
fn lists(batches: &[RecordBatch]) -> Lists {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let g = ArrayFormatter::try_new(b.column(0).as_ref(), &options).unwrap();
        for row in 0..b.num_rows() {
            let lists = (1..b.num_columns())
                .map(|c| {
                    let list = b.column(c).as_list::<i32>();
                    (!list.is_null(row)).then(|| {
                        let elements = list.value(row);
                        let f = ArrayFormatter::try_new(elements.as_ref(), &options).unwrap();
                        (0..elements.len()).map(|i| f.value(i).to_string()).collect()
                    })
                })
                .collect();
            out.push((g.value(row).to_string(), lists));
        }
    }
    out
}

/// Elements with equal order keys in any order: each run of equal keys sorted by text.
/// The order key is the first field of the element (`{k: .., ...}`), so runs are found
/// on the text.
fn canonical(mut lists: Lists) -> Lists {
    for (_, ls) in &mut lists {
        for l in ls.iter_mut().flatten() {
            let key = |e: &str| e.split(',').next().unwrap_or("").to_owned();
            let mut out = Vec::with_capacity(l.len());
            let mut i = 0;
            while i < l.len() {
                let mut j = i + 1;
                while j < l.len() && key(&l[j]) == key(&l[i]) {
                    j += 1;
                }
                let mut run = l[i..j].to_vec();
                run.sort();
                out.extend(run);
                i = j;
            }
            *l = out;
        }
    }
    lists
}

fn unordered(mut lists: Lists) -> Lists {
    for (_, ls) in &mut lists {
        ls.iter_mut().flatten().for_each(|l| l.sort());
    }
    lists
}

const ORDERED: &str = "SELECT g, \
     array_agg(struct(k AS k, n AS n) ORDER BY k) AS up, \
     array_agg(struct(k AS k, n AS n) ORDER BY k DESC NULLS LAST) FILTER (WHERE keep AND g % 3 <> 0) AS down, \
     array_agg(struct(k AS k, n AS n) ORDER BY k NULLS FIRST, n.a DESC) AS two_keys \
     FROM t GROUP BY g ORDER BY g";
const UNORDERED: &str =
    "SELECT g, array_agg(n) AS l, array_agg(k) FILTER (WHERE keep) AS ks FROM t GROUP BY g ORDER BY g";

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn equals_datafusion_array_agg(rows in rows(), partitions in 1..4usize, batch in 1..40usize) {
        block_on(async {
            let theirs = run(&context(false, 4, 8192, None), table(&rows, partitions, batch), ORDERED).await;
            let ours = run(&context(true, 4, 8192, None), table(&rows, partitions, batch), ORDERED).await;
            prop_assert_eq!(canonical(ours.clone()), canonical(theirs));
            // Deterministic among ties: the same lists, element for element, whatever the
            // partitioning and batch sizes of the input and the session.
            let other = run(&context(true, 3, 7, None), table(&rows, 1, 1 + batch / 2), ORDERED).await;
            prop_assert_eq!(&other, &ours);
            // In one phase (Kiln's physical rule), the same lists again.
            let single = run(&planned(true, true, 4, 8192, None), table(&rows, partitions, batch), ORDERED).await;
            prop_assert_eq!(&single, &ours);

            let theirs = run(&context(false, 4, 8192, None), table(&rows, partitions, batch), UNORDERED).await;
            let ours = run(&context(true, 4, 8192, None), table(&rows, partitions, batch), UNORDERED).await;
            let single = run(&planned(true, true, 3, 5, None), table(&rows, partitions, batch), UNORDERED).await;
            prop_assert_eq!(unordered(single), unordered(ours.clone()));
            prop_assert_eq!(unordered(ours), unordered(theirs));
            Ok(())
        })?;
    }
}

/// Many groups in a small pool: the partial stage emits early (EmitTo::First) and the
/// final stage spills, and the lists are still DataFusion's.
#[test]
fn under_memory_pressure() {
    let rows: Vec<Row> = (0..60_000)
        .map(|i: i32| Row {
            g: i.wrapping_mul(7919) % 15_000,
            k: Some(i % 7),
            a: Some(i64::from(i)),
            s: Some(format!("s{}", i % 13)),
            keep: true,
        })
        .collect();
    let sql = "SELECT g, array_agg(struct(k AS k, n AS n) ORDER BY k, n.a) AS l FROM t GROUP BY g ORDER BY g";
    block_on(async {
        let theirs = run(&context(false, 2, 1024, None), table(&rows, 4, 1000), sql).await;
        let (ours, spilled) =
            run_counting_spills(&context(true, 2, 1024, Some(6 << 20)), table(&rows, 4, 1000), sql).await;
        assert!(spilled > 0, "the aggregation did not spill");
        assert_eq!(ours.len(), 15_000);
        assert_eq!(ours, theirs);
    });
}

/// The physical plan's text, one operator per line.
async fn physical(ctx: &SessionContext, sql: &str) -> String {
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string()
}

/// Kiln's rule plans a grouped `array_agg` as one SinglePartitioned aggregate; without
/// the repartition when the input is already hashed on a subset of the keys (a join on
/// one key grouped by two); and leaves an aggregate with another function two-phase.
#[test]
fn array_agg_runs_in_one_phase() {
    let rows: Vec<Row> = (0..2_000)
        .map(|i: i32| Row { g: i % 97, k: Some(i % 5), a: Some(i64::from(i)), s: None, keep: true })
        .collect();
    block_on(async {
        let ctx = planned(true, true, 4, 256, None);
        ctx.register_table("t", Arc::new(table(&rows, 3, 100))).unwrap();
        let plan = physical(&ctx, ORDERED).await;
        assert!(plan.contains("mode=SinglePartitioned") && !plan.contains("mode=Partial"), "{plan}");
        assert!(plan.contains("CompactExec"), "{plan}");

        let join = "SELECT t.g, array_agg(t.n ORDER BY t.k) AS l FROM t JOIN t AS u ON t.g = u.g \
                    GROUP BY t.g, u.k";
        // Partitioned joins, as over tables too large to broadcast.
        for threshold in ["hash_join_single_partition_threshold", "hash_join_single_partition_threshold_rows"] {
            ctx.sql(&format!("SET datafusion.optimizer.{threshold} = 0")).await.unwrap();
        }
        let plan = physical(&ctx, join).await;
        let agg = plan.lines().position(|l| l.contains("mode=SinglePartitioned")).expect("one phase");
        let below = plan.lines().nth(agg + 1).unwrap_or_default();
        assert!(below.contains("HashJoinExec"), "the join's partitioning serves the aggregate:\n{plan}");
        let theirs =
            run(&context(true, 4, 256, None), table(&rows, 3, 100), &format!("{join} ORDER BY t.g, u.k")).await;
        let ours = ctx.sql(&format!("{join} ORDER BY t.g, u.k")).await.unwrap().collect().await.unwrap();
        let ours = lists(&ours);
        assert_eq!(ours.len(), 97 * 5);
        assert_eq!(ours, theirs);

        let ctx = planned(true, true, 4, 256, None);
        ctx.register_table("t", Arc::new(table(&rows, 3, 100))).unwrap();
        let mixed = physical(&ctx, "SELECT g, array_agg(k), count(*) FROM t GROUP BY g").await;
        assert!(mixed.contains("mode=Partial"), "{mixed}");
    });
}

/// A sort above a grouped `array_agg` whose output is many batch-sized slices of one
/// array: without compaction the sort reserves every slice as the whole array, so in a
/// pool that holds the output several times over it still spills again and again; with
/// Kiln's rule it reserves what it holds, does not spill, and the lists are the same.
#[test]
fn sorted_aggregate_output_is_accounted_as_held() {
    let rows: Vec<Row> = (0..200_000)
        .map(|i: i32| Row { g: i % 50_000, k: Some(i % 3), a: Some(i64::from(i)), s: Some("x".repeat(20)), keep: true })
        .collect();
    let sql = "SELECT g, array_agg(n ORDER BY k, n.a) AS l FROM t GROUP BY g ORDER BY g DESC";
    block_on(async {
        let reference = run(&context(true, 1, 1024, None), table(&rows, 2, 4096), sql).await;
        let pool = 64 << 20;
        let (theirs, spilled) =
            run_counting_spills(&planned(true, false, 1, 1024, Some(pool)), table(&rows, 2, 4096), sql).await;
        assert!(spilled > 0, "the sort should have over-reserved without compaction");
        assert_eq!(theirs, reference);
        let (ours, spilled) =
            run_counting_spills(&planned(true, true, 1, 1024, Some(pool)), table(&rows, 2, 4096), sql).await;
        assert_eq!(spilled, 0, "compacted slices fit the pool");
        assert_eq!(ours.len(), 50_000);
        assert_eq!(ours, reference);
    });
}

/// `compact` copies a slice that holds far more than it uses, and passes others through.
#[test]
fn compact_copies_only_wasteful_slices() {
    use datafusion::common::utils::memory::get_record_batch_memory_size;
    let values = Int64Array::from_iter_values(0..1_000_000);
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
    let whole = get_record_batch_memory_size(&batch);
    let same = kiln_functions::nest_plan::compact(batch.clone()).unwrap();
    assert_eq!(same.column(0).to_data().buffers()[0].as_ptr(), batch.column(0).to_data().buffers()[0].as_ptr());
    let slice = batch.slice(500_000, 1000);
    assert_eq!(get_record_batch_memory_size(&slice), whole);
    let small = kiln_functions::nest_plan::compact(slice.clone()).unwrap();
    assert!(get_record_batch_memory_size(&small) < 64 << 10, "{}", get_record_batch_memory_size(&small));
    assert_eq!(small, slice);

    // A slice of a list holds its parent's whole child array.
    let lists = datafusion::arrow::array::ListArray::from_iter_primitive::<datafusion::arrow::datatypes::Int64Type, _, _>(
        (0..100_000i64).map(|i| Some(vec![Some(i), Some(-i), None])),
    );
    let schema = Arc::new(Schema::new(vec![Field::new("l", lists.data_type().clone(), true)]));
    let batch = RecordBatch::try_new(schema, vec![Arc::new(lists)]).unwrap();
    let slice = batch.slice(50_000, 100);
    let small = kiln_functions::nest_plan::compact(slice.clone()).unwrap();
    assert!(get_record_batch_memory_size(&small) < 64 << 10, "{}", get_record_batch_memory_size(&small));
    assert_eq!(small, slice);
}
