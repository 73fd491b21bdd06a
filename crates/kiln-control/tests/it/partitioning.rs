//! PARTITIONED BY at compile time: checked columns and types, and part of the identity.

use kiln_control::dialect::{Statement, parse_file};

use crate::Tpch;

async fn compile(t: &mut Tpch, text: &str) -> Result<kiln_control::CompiledProduct, String> {
    let Statement::Product(def) = parse_file("p.sql", text).unwrap().remove(0) else { panic!("not a product") };
    t.substrate.compile_product(&def).await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn partition_columns_are_checked() {
    let mut t = Tpch::new();
    let ok = compile(&mut t, "CREATE PRODUCT a PARTITIONED BY (n_regionkey) AS SELECT n_name, n_regionkey FROM nation")
        .await
        .unwrap();
    assert_eq!(ok.layout.partition_by, ["n_regionkey"]);
    for (text, message) in [
        (
            "CREATE PRODUCT b PARTITIONED BY (nope) AS SELECT n_name FROM nation",
            "PARTITIONED BY column `nope` is not an output column",
        ),
        (
            "CREATE PRODUCT c PARTITIONED BY (n_regionkey, n_regionkey) AS SELECT n_name, n_regionkey FROM nation",
            "PARTITIONED BY names `n_regionkey` twice",
        ),
        (
            "CREATE PRODUCT d PARTITIONED BY (n_regionkey) AS SELECT n_regionkey FROM nation",
            "must leave at least one column",
        ),
        (
            "CREATE PRODUCT e PARTITIONED BY (x) AS SELECT n_name, CAST(n_nationkey AS DOUBLE) AS x FROM nation",
            "PARTITIONED BY column `x` has type Float64; partition by an integer, string, boolean or date column",
        ),
    ] {
        let e = compile(&mut t, text).await.unwrap_err();
        assert!(e.starts_with("p.sql:1:16: product `") && e.contains(message), "{text}\n{e}");
    }
}

#[tokio::test]
async fn partitioning_changes_the_schema_fingerprint_not_the_query() {
    let mut t = Tpch::new();
    let plain = compile(&mut t, "CREATE PRODUCT a AS SELECT n_name, n_regionkey FROM nation").await.unwrap();
    let by_region =
        compile(&mut t, "CREATE PRODUCT b PARTITIONED BY (n_regionkey) AS SELECT n_name, n_regionkey FROM nation")
            .await
            .unwrap();
    let by_name = compile(&mut t, "CREATE PRODUCT c PARTITIONED BY (n_name) AS SELECT n_name, n_regionkey FROM nation")
        .await
        .unwrap();
    assert_eq!(plain.query_fp, by_region.query_fp);
    assert_ne!(plain.schema_fp, by_region.schema_fp);
    assert_ne!(by_region.schema_fp, by_name.schema_fp);
}
