//! Column lineage on TPC-H queries: exact value, filter, join, group and order sets, written
//! by hand from the SQL (not from Kiln's output).

use std::collections::BTreeSet;

use kiln_artifact::ColumnLineage;

use crate::{Tpch, tpch};

fn set(cols: &[&str]) -> BTreeSet<String> {
    cols.iter().map(|c| (*c).to_owned()).collect()
}

fn names(cols: &[kiln_artifact::BaseColumn]) -> BTreeSet<String> {
    cols.iter().map(ToString::to_string).collect()
}

/// Row-level sets shared by every output column of a query.
struct Rows<'a> {
    filter: &'a [&'a str],
    join: &'a [&'a str],
    group: &'a [&'a str],
    order: &'a [&'a str],
}

fn check(actual: &[ColumnLineage], rows: &Rows<'_>, values: &[(&str, &[&str])]) {
    let got: Vec<&str> = actual.iter().map(|c| c.column.as_str()).collect();
    let want: Vec<&str> = values.iter().map(|(c, _)| *c).collect();
    assert_eq!(got, want, "output columns");
    for (c, (name, value)) in actual.iter().zip(values) {
        assert_eq!(names(&c.value), set(value), "{name}: value");
        assert_eq!(names(&c.filter), set(rows.filter), "{name}: filter");
        assert_eq!(names(&c.join), set(rows.join), "{name}: join");
        assert_eq!(names(&c.group), set(rows.group), "{name}: group");
        assert_eq!(names(&c.order), set(rows.order), "{name}: order");
    }
}

async fn lineage(query: &str) -> Vec<ColumnLineage> {
    Tpch::new().compile(query).await.unwrap().lineage
}

#[tokio::test]
async fn q1_pricing_summary() {
    let keys = ["lineitem.l_returnflag", "lineitem.l_linestatus"];
    check(
        &lineage(tpch::Q1).await,
        &Rows { filter: &["lineitem.l_shipdate"], join: &[], group: &keys, order: &keys },
        &[
            ("l_returnflag", &["lineitem.l_returnflag"]),
            ("l_linestatus", &["lineitem.l_linestatus"]),
            ("sum_qty", &["lineitem.l_quantity"]),
            ("sum_base_price", &["lineitem.l_extendedprice"]),
            ("sum_disc_price", &["lineitem.l_extendedprice", "lineitem.l_discount"]),
            ("avg_disc", &["lineitem.l_discount"]),
            ("count_order", &[]),
        ],
    );
}

#[tokio::test]
async fn q3_shipping_priority() {
    check(
        &lineage(tpch::Q3).await,
        &Rows {
            filter: &["customer.c_mktsegment", "orders.o_orderdate", "lineitem.l_shipdate"],
            join: &["customer.c_custkey", "orders.o_custkey", "lineitem.l_orderkey", "orders.o_orderkey"],
            group: &["lineitem.l_orderkey", "orders.o_orderdate", "orders.o_shippriority"],
            order: &["lineitem.l_extendedprice", "lineitem.l_discount", "orders.o_orderdate"],
        },
        &[
            ("l_orderkey", &["lineitem.l_orderkey"]),
            ("revenue", &["lineitem.l_extendedprice", "lineitem.l_discount"]),
            ("o_orderdate", &["orders.o_orderdate"]),
            ("o_shippriority", &["orders.o_shippriority"]),
        ],
    );
}

#[tokio::test]
async fn q6_forecast_revenue() {
    check(
        &lineage(tpch::Q6).await,
        &Rows {
            filter: &["lineitem.l_shipdate", "lineitem.l_discount", "lineitem.l_quantity"],
            join: &[],
            group: &[],
            order: &[],
        },
        &[("revenue", &["lineitem.l_extendedprice", "lineitem.l_discount"])],
    );
}

#[tokio::test]
async fn q13_customer_distribution() {
    // The ON clause's `o_comment NOT LIKE ...` only restricts the orders side of the LEFT
    // JOIN: it is a filter on orders, not a join key.
    check(
        &lineage(tpch::Q13).await,
        &Rows {
            filter: &["orders.o_comment"],
            join: &["customer.c_custkey", "orders.o_custkey"],
            group: &["customer.c_custkey", "orders.o_orderkey"],
            order: &["orders.o_orderkey"],
        },
        &[("c_count", &["orders.o_orderkey"]), ("custdist", &[])],
    );
}

#[tokio::test]
async fn q18_large_volume_customer() {
    // The IN subquery is a semi join on l_orderkey; its GROUP BY and HAVING decide which
    // orders survive, so they reach every output column.
    check(
        &lineage(tpch::Q18).await,
        &Rows {
            filter: &["lineitem.l_quantity"],
            join: &["customer.c_custkey", "orders.o_custkey", "orders.o_orderkey", "lineitem.l_orderkey"],
            group: &[
                "customer.c_name",
                "customer.c_custkey",
                "orders.o_orderkey",
                "orders.o_orderdate",
                "orders.o_totalprice",
                "lineitem.l_orderkey",
            ],
            order: &["orders.o_totalprice", "orders.o_orderdate"],
        },
        &[
            ("c_name", &["customer.c_name"]),
            ("c_custkey", &["customer.c_custkey"]),
            ("o_orderkey", &["orders.o_orderkey"]),
            ("o_orderdate", &["orders.o_orderdate"]),
            ("o_totalprice", &["orders.o_totalprice"]),
            ("total_qty", &["lineitem.l_quantity"]),
        ],
    );
}

#[tokio::test]
async fn window_partition_and_order_reach_only_the_window_column() {
    let l =
        lineage("SELECT o_orderkey, row_number() OVER (PARTITION BY o_custkey ORDER BY o_orderdate) AS rn FROM orders")
            .await;
    assert_eq!(names(&l[0].value), set(&["orders.o_orderkey"]));
    assert!(l[0].group.is_empty() && l[0].order.is_empty());
    assert!(l[1].value.is_empty());
    assert_eq!(names(&l[1].group), set(&["orders.o_custkey"]));
    assert_eq!(names(&l[1].order), set(&["orders.o_orderdate"]));
}

#[tokio::test]
async fn lineage_reads_through_products_by_name() {
    let mut t = Tpch::new();
    t.compile("SELECT c_custkey AS id, upper(c_name) AS name FROM customer WHERE c_acctbal > 0").await.unwrap();
    let downstream = t.compile("SELECT name FROM p1 WHERE id > 10").await.unwrap();
    let l = &downstream.lineage[0];
    assert_eq!(names(&l.value), set(&["p1.name"]));
    assert_eq!(names(&l.filter), set(&["p1.id"]));
}
