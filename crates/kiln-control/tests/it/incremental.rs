//! Incremental products: the interval filter derived from the time column's lineage (or
//! why not), the batch plan's filter reaching the scan, and the minimal set of intervals
//! `decide` computes, against a day-by-day model.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use kiln_artifact::intervals::{DaySet, Grain, InputFile, IntervalReason, IntervalState, format_day, parse_day};
use kiln_control::dialect::{Statement, parse_file};
use kiln_control::incremental::{Incremental, Inputs, IntervalFilter, batch_plan, decide, forward_day};
use proptest::prelude::*;

use super::Tpch;

async fn compile(t: &mut Tpch, options: &str, query: &str) -> Incremental {
    let text = format!(
        "CREATE PRODUCT p PARTITIONED BY (d) WITH (incremental = 'by_time', time_column = 'd', start = '1992-01-01'{options}) AS {query}"
    );
    let Statement::Product(def) = parse_file("p.sql", &text).unwrap().remove(0) else { panic!("a product") };
    let product = t.substrate.compile_product(&def).await.unwrap_or_else(|e| panic!("{e}\n{query}"));
    product.incremental.unwrap()
}

#[tokio::test]
async fn the_interval_filter_follows_the_time_column_or_says_why_not() {
    let derived = [
        ("", "SELECT o_orderdate AS d, count(*) AS n FROM orders GROUP BY 1", "orders.o_orderdate"),
        (
            "",
            "SELECT o_orderdate AS d, sum(l_quantity) AS q FROM orders JOIN lineitem ON o_orderkey = l_orderkey GROUP BY 1",
            "orders.o_orderdate",
        ),
        (
            ", grain = 'month'",
            "SELECT CAST(date_trunc('month', o_orderdate) AS DATE) AS d, count(*) AS n FROM orders GROUP BY 1",
            "orders.o_orderdate",
        ),
        ("", "SELECT o_orderdate + INTERVAL '1' DAY AS d, o_orderkey FROM orders", "orders.o_orderdate"),
        (
            "",
            "SELECT d, count(*) AS n FROM (SELECT l_shipdate AS d FROM lineitem WHERE l_quantity > 10) s GROUP BY d",
            "lineitem.l_shipdate",
        ),
    ];
    for (options, query, expected) in derived {
        let mut t = Tpch::new();
        let spec = compile(&mut t, options, query).await;
        assert_eq!(spec.filter.describe(), format!("derived from {expected}"), "{query}");
    }
    let refused = [
        ("SELECT o_orderdate AS d, sum(o_totalprice) OVER (ORDER BY o_orderdate) AS r FROM orders", "window function"),
        ("SELECT max(o_orderdate) AS d, count(*) AS n FROM orders", "aggregate's result"),
        (
            "SELECT a.o_orderdate AS d, count(*) AS n FROM orders a JOIN orders b ON a.o_custkey = b.o_custkey GROUP BY 1",
            "read more than once",
        ),
        ("SELECT CAST(o_comment AS DATE) AS d, o_orderkey FROM orders", "not a date or timestamp"),
        ("SELECT o_orderdate AS d, o_orderkey FROM orders ORDER BY o_totalprice LIMIT 10", "LIMIT"),
    ];
    for (query, why) in refused {
        let mut t = Tpch::new();
        let spec = compile(&mut t, "", query).await;
        let IntervalFilter::Unfiltered { why: got } = &spec.filter else { panic!("{query}: {:?}", spec.filter) };
        assert!(got.contains(why), "{query}: {got}");
    }
    let mut t = Tpch::new();
    let spec = compile(
        &mut t,
        "",
        "SELECT o_orderdate AS d, o_orderkey FROM orders WHERE o_orderdate >= kiln_interval_start() - INTERVAL '7' DAY",
    )
    .await;
    assert!(matches!(spec.filter, IntervalFilter::Written));
}

#[tokio::test]
async fn a_batch_plan_filters_the_scan_and_the_output() {
    let mut t = Tpch::new();
    let text = "CREATE PRODUCT p PARTITIONED BY (d) WITH (incremental = 'by_time', time_column = 'd', grain = 'month', start = '1992-01-01') \
                AS SELECT CAST(date_trunc('month', o_orderdate) AS DATE) AS d, count(*) AS n FROM orders GROUP BY 1";
    let Statement::Product(def) = parse_file("p.sql", text).unwrap().remove(0) else { panic!("a product") };
    let product = t.substrate.compile_product(&def).await.unwrap();
    let spec = product.incremental.clone().unwrap();
    let day = |s: &str| parse_day(s).unwrap();
    let days = DaySet::range(day("1995-03-01"), day("1995-05-01"));
    let plan = t.substrate.optimize(&batch_plan(&product.plan, &spec, &days).unwrap()).unwrap();
    let text = plan.display_indent().to_string();
    let scan = text.lines().find(|l| l.contains("TableScan: orders")).unwrap();
    // The scan's bounds: the batch's days widened by a day for each cast (DATE to
    // TIMESTAMP for date_trunc, and back) and by a month for date_trunc: a superset,
    // folded into literals.
    assert!(scan.contains("1995-02-27") && scan.contains("1995-06-03"), "{text}");
    // The output filter (pushed below the aggregate by the optimizer) is exact.
    assert!(text.contains(">= Date32(\"1995-03-01\")") && text.contains("< Date32(\"1995-05-01\")"), "{text}");
    let forward = |v: &str| forward_day(&spec.filter, ScalarValue::Date32(Some(day(v)))).map(format_day);
    assert_eq!(forward("1995-03-17").as_deref(), Some("1995-03-01"));
}

/// Per-day model of `decide`: what it must compute for a product built over `before`
/// files (all intervals done) whose files are now `now`, with lookback `lookback`.
fn expected(grain: Grain, start: i32, before: &[InputFile], now: &[InputFile], lookback: u32) -> BTreeSet<i32> {
    let end_of = |files: &[InputFile]| files.iter().filter_map(InputFile::days).map(|(_, b)| b).max();
    let held = end_of(before).map_or(start, |b| grain.next(b - 1));
    let end = end_of(now).map_or(start, |b| grain.next(b - 1)).max(held).max(start);
    let mut days = BTreeSet::new();
    let same = |f: &InputFile, other: &[InputFile]| other.iter().any(|o| o.path == f.path && o.version == f.version);
    for f in before.iter().filter(|f| !same(f, now)).chain(now.iter().filter(|f| !same(f, before))) {
        if let Some((a, b)) = f.days() {
            for d in a..b {
                let s = grain.floor(d);
                days.extend((s..grain.next(d)).filter(|&x| x >= start && x < end));
            }
        }
    }
    days.extend(held..end);
    if !days.is_empty() {
        let mut first = end;
        for _ in 0..lookback {
            if first > start {
                first = grain.floor(first - 1);
            }
        }
        days.extend(first..end);
    }
    days
}

fn file() -> impl Strategy<Value = (u8, u8, i32, i32)> {
    (0..6u8, 0..3u8, 0..120i32, 0..30i32)
}

fn files(raw: &[(u8, u8, i32, i32)], base: i32) -> Vec<InputFile> {
    let mut seen = BTreeSet::new();
    raw.iter()
        .filter(|(p, ..)| seen.insert(*p))
        .map(|&(p, v, a, n)| InputFile {
            path: format!("f{p}"),
            version: v.to_string(),
            first: Some(format_day(base + a)),
            last: Some(format_day(base + a + n)),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decide_computes_the_minimal_set_of_intervals(
        grain in prop_oneof![Just(Grain::Day), Just(Grain::Week), Just(Grain::Month)],
        before in proptest::collection::vec(file(), 1..5),
        now in proptest::collection::vec(file(), 1..5),
        lookback in 0..3u32,
    ) {
        let start = grain.floor(parse_day("1995-01-01").unwrap());
        let base = start + 3;
        let (before, now) = (files(&before, base), files(&now, base));
        let held_end = before.iter().filter_map(InputFile::days).map(|(_, b)| grain.next(b - 1)).max().unwrap_or(start);
        let state = IntervalState {
            column: "d".into(),
            grain,
            start: format_day(start),
            done: DaySet::range(start, held_end).to_ranges(),
            pending: Vec::new(),
            input: Some("t".into()),
            files: before.clone(),
            forward_only: Vec::new(),
        };
        let spec = Incremental {
            column: "d".into(),
            partition: 0,
            grain,
            start,
            lookback: kiln_control::incremental::Span::Intervals(lookback),
            batch: None,
            on_change: kiln_control::incremental::OnChange::Rebuild,
            filter: IntervalFilter::Written,
            at: kiln_control::Location { file: "p.sql".into(), line: 1, column: 1 },
        };
        let inputs = Inputs { state: Some(&state), files: Some(&now), today: 0, ..Inputs::default() };
        let computed = decide(&spec, &inputs);
        let got: BTreeSet<i32> = computed.runs.iter().flat_map(|&(a, b, _)| a..b).collect();
        prop_assert_eq!(&got, &expected(grain, start, &before, &now, lookback));
        prop_assert!(computed.runs.iter().all(|r| r.2 != IntervalReason::Rebuild));
        // Batches of two intervals cover the same days, in order, two intervals each.
        let spec = Incremental { batch: Some(kiln_control::incremental::Span::Intervals(2)), ..spec };
        let batches = spec.batches(&computed.days());
        let mut union = DaySet::new();
        for b in &batches {
            prop_assert!(b.ranges().iter().map(|&(x, y)| grain.count(x, y)).sum::<u64>() <= 2);
            union = union.union(b);
        }
        prop_assert_eq!(union, computed.days());
    }
}
