//! Kiln's UNNEST forms, run end to end through the Substrate (parser, rewrite, planner,
//! ExplodeExec). Expected tables are written by hand from the input below and assert the
//! output order (parent row, idx) as produced: one input partition, no ORDER BY.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, Int64Builder, ListBuilder, MapBuilder, RecordBatch, StringBuilder,
};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use kiln_control::surface::Surface;

use crate::Tpch;

/// id | xs            | ys              | m
///  1 | [10, 20, 30]  | [a, b]          | {k1: 1}
///  2 | []            | [c]             | {}
///  3 | NULL          | NULL            | NULL
///  4 | [NULL, 40]    | [d, e, f]       | {k2: 2, k3: 3}
fn nested() -> RecordBatch {
    let id: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4]));
    let mut xs = ListBuilder::new(Int64Builder::new());
    xs.append_value([Some(10), Some(20), Some(30)]);
    xs.append_value([]);
    xs.append_null();
    xs.append_value([None, Some(40)]);
    let mut ys = ListBuilder::new(StringBuilder::new());
    ys.append_value([Some("a"), Some("b")]);
    ys.append_value([Some("c")]);
    ys.append_null();
    ys.append_value([Some("d"), Some("e"), Some("f")]);
    let mut m = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    m.keys().append_value("k1");
    m.values().append_value(1);
    m.append(true).unwrap();
    m.append(true).unwrap();
    m.append(false).unwrap();
    for (k, v) in [("k2", 2), ("k3", 3)] {
        m.keys().append_value(k);
        m.values().append_value(v);
    }
    m.append(true).unwrap();
    RecordBatch::try_from_iter([
        ("id", id),
        ("xs", Arc::new(xs.finish()) as ArrayRef),
        ("ys", Arc::new(ys.finish()) as ArrayRef),
        ("m", Arc::new(m.finish()) as ArrayRef),
    ])
    .unwrap()
}

fn substrate() -> Tpch {
    let t = Tpch::with_settings(&[("datafusion.execution.target_partitions", "1")]);
    let batch = nested();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
    t.substrate.context().register_table("t", Arc::new(table)).unwrap();
    t
}

async fn run(t: &Tpch, sql: &str) -> Result<String, String> {
    let plan = t.substrate.plan_sql(Surface::Admin, sql).await.map_err(|e| e.to_string())?;
    let df = t.substrate.context().execute_logical_plan(plan).await.map_err(|e| e.to_string())?;
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    Ok(pretty_format_batches(&batches).unwrap().to_string())
}

async fn check(sql: &str, expected: &str) {
    let t = substrate();
    let got = run(&t, sql).await.unwrap_or_else(|e| panic!("{sql}\n{e}"));
    let expected: Vec<&str> = expected.trim().lines().map(str::trim).collect();
    let got: Vec<&str> = got.trim().lines().map(str::trim).collect();
    assert_eq!(got, expected, "\n{sql}\n{}", got.join("\n"));
}

#[tokio::test]
async fn cross_join_with_offset_is_zero_based_in_parent_then_idx_order() {
    check(
        "SELECT id, x, idx FROM t CROSS JOIN UNNEST(t.xs) WITH OFFSET AS u(x, idx)",
        "
        +----+----+-----+
        | id | x  | idx |
        +----+----+-----+
        | 1  | 10 | 0   |
        | 1  | 20 | 1   |
        | 1  | 30 | 2   |
        | 4  |    | 0   |
        | 4  | 40 | 1   |
        +----+----+-----+",
    )
    .await;
}

#[tokio::test]
async fn with_ordinality_is_one_based() {
    check(
        "SELECT id, u.y, u.n FROM t CROSS JOIN UNNEST(ys) WITH ORDINALITY AS u(y, n) WHERE id <> 1",
        "
        +----+---+---+
        | id | y | n |
        +----+---+---+
        | 2  | c | 1 |
        | 4  | d | 1 |
        | 4  | e | 2 |
        | 4  | f | 3 |
        +----+---+---+",
    )
    .await;
}

#[tokio::test]
async fn bigquery_form_and_comma_join() {
    check(
        "SELECT id, y, pos FROM t, UNNEST(t.ys) AS y WITH OFFSET AS pos WHERE pos > 0",
        "
        +----+---+-----+
        | id | y | pos |
        +----+---+-----+
        | 1  | b | 1   |
        | 4  | e | 1   |
        | 4  | f | 2   |
        +----+---+-----+",
    )
    .await;
}

#[tokio::test]
async fn left_join_on_true_keeps_empty_and_null_lists() {
    check(
        "SELECT id, x, idx FROM t LEFT JOIN UNNEST(xs) WITH OFFSET AS u(x, idx) ON TRUE",
        "
        +----+----+-----+
        | id | x  | idx |
        +----+----+-----+
        | 1  | 10 | 0   |
        | 1  | 20 | 1   |
        | 1  | 30 | 2   |
        | 2  |    |     |
        | 3  |    |     |
        | 4  |    | 0   |
        | 4  | 40 | 1   |
        +----+----+-----+",
    )
    .await;
}

#[tokio::test]
async fn several_arrays_zip_and_pad_with_null() {
    check(
        "SELECT id, x, y, i FROM t CROSS JOIN UNNEST(xs, ys) WITH OFFSET AS u(x, y, i)",
        "
        +----+----+---+---+
        | id | x  | y | i |
        +----+----+---+---+
        | 1  | 10 | a | 0 |
        | 1  | 20 | b | 1 |
        | 1  | 30 |   | 2 |
        | 2  |    | c | 0 |
        | 4  |    | d | 0 |
        | 4  | 40 | e | 1 |
        | 4  |    | f | 2 |
        +----+----+---+---+",
    )
    .await;
}

#[tokio::test]
async fn maps_explode_to_key_and_value() {
    check(
        "SELECT id, k, v, idx FROM t CROSS JOIN UNNEST(m) WITH OFFSET AS e(k, v, idx)",
        "
        +----+----+---+-----+
        | id | k  | v | idx |
        +----+----+---+-----+
        | 1  | k1 | 1 | 0   |
        | 4  | k2 | 2 | 0   |
        | 4  | k3 | 3 | 1   |
        +----+----+---+-----+",
    )
    .await;
}

#[tokio::test]
async fn join_on_a_condition_filters_the_elements() {
    check(
        "SELECT id, x FROM t JOIN UNNEST(xs) AS u(x) ON u.x >= 20",
        "
        +----+----+
        | id | x  |
        +----+----+
        | 1  | 20 |
        | 1  | 30 |
        | 4  | 40 |
        +----+----+",
    )
    .await;
}

#[tokio::test]
async fn leading_unnest_with_ordinality_and_default_names() {
    check(
        "SELECT * FROM UNNEST([7, 8]) WITH ORDINALITY",
        "
        +-------+------------+
        | value | ordinality |
        +-------+------------+
        | 7     | 1          |
        | 8     | 2          |
        +-------+------------+",
    )
    .await;
}

#[tokio::test]
async fn unnest_chains_and_aggregates_over_the_index() {
    // Two explodes in one FROM, and the exploded rows feed an aggregate.
    check(
        "SELECT id, count(*) AS pairs, sum(i * 10 + j) AS code
         FROM t CROSS JOIN UNNEST(xs) WITH OFFSET AS a(x, i)
                CROSS JOIN UNNEST(ys) WITH OFFSET AS b(y, j)
         GROUP BY id ORDER BY id",
        // id 1: i in 0..3, j in 0..2 -> 6 pairs, sum = 2*(0+10+20) + 3*(0+1) = 63
        // id 4: i in 0..2, j in 0..3 -> 6 pairs, sum = 3*(0+10) + 2*(0+1+2) = 36
        "
        +----+-------+------+
        | id | pairs | code |
        +----+-------+------+
        | 1  | 6     | 63   |
        | 4  | 6     | 36   |
        +----+-------+------+",
    )
    .await;
}

#[tokio::test]
async fn plain_datafusion_unnest_still_works() {
    check(
        "SELECT id, unnest(ys) AS y FROM t WHERE id = 1",
        "
        +----+---+
        | id | y |
        +----+---+
        | 1  | a |
        | 1  | b |
        +----+---+",
    )
    .await;
}

#[tokio::test]
async fn bad_unnests_are_located_errors() {
    let t = substrate();
    let e = run(&t, "SELECT * FROM t CROSS JOIN UNNEST(t.id) AS u(x)").await.unwrap_err();
    assert!(e.contains("UNNEST argument `t.id` has type Int64; expected an array (list) or a map"), "{e}");
    let e = run(&t, "SELECT * FROM t CROSS JOIN UNNEST(xs) WITH OFFSET AS u(a, b, c)").await.unwrap_err();
    assert!(e.contains("UNNEST produces 2 column(s) (1 element column(s) and the index) but its alias names 3"), "{e}");
    let e = run(&t, "SELECT * FROM t LEFT JOIN UNNEST(xs) AS u(x) ON u.x > 1").await.unwrap_err();
    assert!(e.contains("supports only ON TRUE"), "{e}");
    let e = run(&t, "SELECT * FROM t FULL JOIN UNNEST(xs) AS u(x) ON TRUE").await.unwrap_err();
    assert!(e.contains("not supported") || e.contains("UNNEST can be joined"), "{e}");
}

#[tokio::test]
async fn errors_in_product_files_point_at_the_unnest() {
    let mut t = substrate();
    let e = t.compile("SELECT * FROM nation CROSS JOIN\n  UNNEST(n_name) AS u(x)").await.unwrap_err().to_string();
    assert!(e.starts_with("test.sql:2:10:"), "{e}"); // the argument
    assert!(e.contains("has type"), "{e}");
}

const NESTED_PRODUCT: &str = "SELECT o_orderkey, array_agg(l_partkey ORDER BY l_linenumber) AS parts \
     FROM orders JOIN lineitem ON l_orderkey = o_orderkey GROUP BY o_orderkey";

#[tokio::test]
async fn unnest_fingerprints_ignore_spelling_and_see_semantics() {
    let mut t = Tpch::new();
    t.compile(NESTED_PRODUCT).await.unwrap(); // p1
    let mut fp = async |q: &str| t.query_fp(q).await;
    let base = fp("SELECT o_orderkey, part, idx FROM p1 CROSS JOIN UNNEST(parts) WITH OFFSET AS u(part, idx)").await;
    // Equivalent spellings: alias names, the BigQuery form, a comma join, ON TRUE.
    for same in [
        "SELECT o_orderkey, part, idx FROM p1 CROSS JOIN UNNEST(p1.parts) WITH OFFSET AS e(part, idx)",
        "SELECT o_orderkey, part, idx FROM p1, UNNEST(parts) AS part WITH OFFSET AS idx",
        "SELECT o_orderkey, part, idx FROM p1 JOIN UNNEST(parts) WITH OFFSET AS u(part, idx) ON TRUE",
        "select O_ORDERKEY, part, idx from p1 cross join unnest(parts) with offset as u(part, idx) -- x",
    ] {
        assert_eq!(fp(same).await, base, "{same}");
    }
    // Different semantics.
    for different in [
        "SELECT o_orderkey, part, idx FROM p1 CROSS JOIN UNNEST(parts) WITH ORDINALITY AS u(part, idx)",
        "SELECT o_orderkey, part, idx FROM p1 LEFT JOIN UNNEST(parts) WITH OFFSET AS u(part, idx) ON TRUE",
        "SELECT o_orderkey, part, idx FROM p1 CROSS JOIN UNNEST(parts, parts) WITH OFFSET AS u(part, p2, idx)",
        "SELECT o_orderkey, part, idx FROM p1 JOIN UNNEST(parts) WITH OFFSET AS u(part, idx) ON idx > 0",
    ] {
        assert_ne!(fp(different).await, base, "{different}");
    }
}

#[tokio::test]
async fn unnest_lineage_reads_the_list_for_values_and_rows() {
    let mut t = Tpch::new();
    t.compile(NESTED_PRODUCT).await.unwrap(); // p1
    let p = t
        .compile("SELECT o_orderkey, part, idx FROM p1 CROSS JOIN UNNEST(parts) WITH OFFSET AS u(part, idx)")
        .await
        .unwrap();
    let show = |c: &kiln_artifact::ColumnLineage| {
        let v = |s: &[kiln_artifact::BaseColumn]| s.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        format!("{}: value={} join={} filter={}", c.column, v(&c.value), v(&c.join), v(&c.filter))
    };
    let got: Vec<String> = p.lineage.iter().map(show).collect();
    assert_eq!(
        got,
        [
            "o_orderkey: value=p1.o_orderkey join=p1.parts filter=",
            "part: value=p1.parts join=p1.parts filter=",
            "idx: value=p1.parts join=p1.parts filter=",
        ]
    );
}
