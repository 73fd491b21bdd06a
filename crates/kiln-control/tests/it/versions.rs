//! Content versions: what a downstream build id sees of an upstream product.

use kiln_artifact::ContentVersions;
use kiln_artifact::identity::{content_versions, scoped_upstream as scoped_version};

use crate::Tpch;

/// The content versions of `query` over sources with fixed data versions.
async fn content(query: &str) -> ContentVersions {
    let p = Tpch::new().compile(query).await.unwrap();
    let sources: Vec<(String, ContentVersions)> = p
        .shape
        .tables
        .iter()
        .map(|t| (t.clone(), ContentVersions { rows: format!("data-of-{t}"), columns: Default::default() }))
        .collect();
    let source = |t: &str| sources.iter().find(|(name, _)| name == t).map(|(_, v)| v);
    content_versions(&p.shape, "runtime", &p.func_fp, &source)
}

const BASE: &str = "SELECT c_custkey, c_name, c_acctbal FROM customer WHERE c_acctbal > 0";

#[tokio::test]
async fn an_added_column_leaves_the_others_and_the_rows_alone() {
    let (a, b) =
        (content(BASE).await, content(&BASE.replace("c_acctbal FROM", "c_acctbal, upper(c_phone) AS p FROM")).await);
    assert_eq!(a.rows, b.rows);
    for c in ["c_custkey", "c_name", "c_acctbal"] {
        assert_eq!(a.columns[c], b.columns[c], "{c}");
    }
    assert!(b.columns.contains_key("p"));
    let used = ["c_name".to_owned()];
    assert_eq!(scoped_version(&a, &used), scoped_version(&b, &used));
}

#[tokio::test]
async fn a_changed_expression_changes_only_its_column() {
    let (a, b) = (content(BASE).await, content(&BASE.replace("c_name,", "upper(c_name) AS c_name,")).await);
    assert_eq!(a.rows, b.rows);
    assert_ne!(a.columns["c_name"], b.columns["c_name"]);
    assert_eq!(a.columns["c_custkey"], b.columns["c_custkey"]);
    assert_eq!(scoped_version(&a, &["c_custkey".to_owned()]), scoped_version(&b, &["c_custkey".to_owned()]));
    assert_ne!(scoped_version(&a, &["c_name".to_owned()]), scoped_version(&b, &["c_name".to_owned()]));
}

#[tokio::test]
async fn a_changed_filter_changes_the_rows_and_every_column() {
    let (a, b) = (content(BASE).await, content(&BASE.replace("> 0", "> 1")).await);
    assert_ne!(a.rows, b.rows);
    for c in ["c_custkey", "c_name", "c_acctbal"] {
        assert_ne!(a.columns[c], b.columns[c], "{c}");
    }
    assert_ne!(scoped_version(&a, &[]), scoped_version(&b, &[]));
}

#[tokio::test]
async fn new_source_data_changes_everything_read_from_it() {
    let p = Tpch::new().compile(BASE).await.unwrap();
    let v = |data: &str| {
        let version = ContentVersions { rows: data.to_owned(), columns: Default::default() };
        let source = |_: &str| Some(&version);
        content_versions(&p.shape, "runtime", &p.func_fp, &source)
    };
    let (a, b) = (v("d1"), v("d2"));
    assert_ne!(a.rows, b.rows);
    assert_ne!(a.columns["c_name"], b.columns["c_name"]);
}
