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
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{SessionConfig, SessionContext};
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
    let mut config = SessionConfig::new().with_target_partitions(target_partitions).with_batch_size(batch_size);
    config.options_mut().execution.sort_spill_reservation_bytes = 256 << 10;
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(bytes) = memory {
        runtime = runtime.with_memory_limit(bytes, 1.0);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc().unwrap());
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
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in &batches {
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
    (out, spills(plan.as_ref()))
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

            let theirs = run(&context(false, 4, 8192, None), table(&rows, partitions, batch), UNORDERED).await;
            let ours = run(&context(true, 4, 8192, None), table(&rows, partitions, batch), UNORDERED).await;
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
