//! Semantic diffs between compiled queries: categories and edit counts.

use kiln_artifact::{ChangeCategory, EditOp};
use kiln_control::diff::diff;

use crate::Tpch;

async fn diff_of(a: &str, b: &str) -> kiln_artifact::PlanDiff {
    let mut t = Tpch::new();
    let (a, b) = (t.compile(a).await.unwrap(), t.compile(b).await.unwrap());
    diff(&a.canonical, &b.canonical)
}

const BASE: &str =
    "SELECT o_custkey, sum(o_totalprice) AS total FROM orders WHERE o_orderstatus = 'F' GROUP BY o_custkey";

#[tokio::test]
async fn reformatting_is_metadata_only() {
    let d = diff_of(BASE, "select o.o_custkey, SUM(o.o_totalprice) as total -- same\n from orders o where o.o_orderstatus = 'F' group by 1").await;
    assert_eq!(d.category, ChangeCategory::MetadataOnly);
    assert_eq!((d.inserted, d.removed, d.updated), (0, 0, 0));
}

#[tokio::test]
async fn an_added_aggregate_column_is_non_breaking() {
    let d = diff_of(BASE, "SELECT o_custkey, sum(o_totalprice) AS total, count(*) AS orders FROM orders WHERE o_orderstatus = 'F' GROUP BY o_custkey").await;
    assert_eq!(d.category, ChangeCategory::NonBreaking, "{d:#?}");
    assert_eq!(d.removed + d.updated, 0);
    assert!(d.edits.iter().any(|e| e.path == "Output" && e.new.as_deref() == Some("orders := count(Int64(1))")));
}

#[tokio::test]
async fn an_added_scanned_column_is_non_breaking() {
    let d = diff_of(
        "SELECT c_custkey, c_name FROM customer WHERE c_acctbal > 0",
        "SELECT c_custkey, c_name, c_phone FROM customer WHERE c_acctbal > 0",
    )
    .await;
    assert_eq!(d.category, ChangeCategory::NonBreaking, "{d:#?}");
    assert_eq!(d.inserted, 2, "the output column and the scanned column: {d:#?}");
}

#[tokio::test]
async fn a_changed_filter_constant_is_one_breaking_update() {
    let d = diff_of(BASE, &BASE.replace("'F'", "'O'")).await;
    assert_eq!(d.category, ChangeCategory::Breaking);
    // The Filter's predicate and the same predicate pushed into the scan.
    assert_eq!((d.inserted, d.removed), (0, 0));
    assert!(d.updated >= 1);
    let update = d.edits.iter().find(|e| e.role == "predicate").unwrap();
    assert_eq!(update.op, EditOp::Update);
    assert!(update.old.as_deref().unwrap().contains("F") && update.new.as_deref().unwrap().contains("O"));
}

#[tokio::test]
async fn removing_or_renaming_a_column_is_breaking() {
    let d = diff_of(BASE, "SELECT o_custkey FROM orders WHERE o_orderstatus = 'F' GROUP BY o_custkey").await;
    assert_eq!(d.category, ChangeCategory::Breaking);
    let d = diff_of(BASE, &BASE.replace("AS total", "AS sum_total")).await;
    assert_eq!(d.category, ChangeCategory::Breaking);
    assert_eq!((d.inserted, d.removed, d.updated), (0, 0, 1), "{d:#?}");
}

#[tokio::test]
async fn a_changed_join_type_is_breaking() {
    let d = diff_of(
        "SELECT c_custkey, o_orderkey FROM customer JOIN orders ON c_custkey = o_custkey",
        "SELECT c_custkey, o_orderkey FROM customer LEFT JOIN orders ON c_custkey = o_custkey",
    )
    .await;
    assert_eq!(d.category, ChangeCategory::Breaking);
    assert!(d.edits.iter().any(|e| e.role == "type" && e.op == EditOp::Update), "{d:#?}");
}

#[test]
fn identical_plans_have_no_edits() {
    let plan = kiln_artifact::CanonicalPlan {
        format_version: 1,
        root: kiln_artifact::PlanNode { kind: "Output".into(), items: vec![], children: vec![] },
    };
    let d = diff(&plan, &plan);
    assert!(d.edits.is_empty());
    assert_eq!(d.summary(), "metadata-only: 0 inserted, 0 removed, 0 updated");
}
