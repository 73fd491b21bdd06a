//! SQL surfaces: untrusted SQL cannot write, change settings, or read a path.

use kiln_control::surface::Surface;

use crate::Tpch;

async fn untrusted(sql: &str) -> Result<(), String> {
    Tpch::new().substrate.plan_sql(Surface::Untrusted, sql).await.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn untrusted_reads_sources_and_products() {
    untrusted("SELECT n_name FROM nation WHERE n_nationkey < 5").await.unwrap();
    untrusted("SELECT count(*) FROM customer JOIN nation ON c_nationkey = n_nationkey").await.unwrap();
    untrusted("SELECT * FROM generate_series(1, 3)").await.unwrap();
    untrusted("EXPLAIN SELECT * FROM nation").await.unwrap();
}

#[tokio::test]
async fn untrusted_cannot_write() {
    for sql in [
        "INSERT INTO nation VALUES (1, 'x', 1, 'y')",
        "DELETE FROM nation",
        "UPDATE nation SET n_name = 'x'",
        "COPY (SELECT 1) TO '/tmp/kiln-untrusted.csv'",
        "COPY nation TO '/tmp/kiln-untrusted.parquet'",
        "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT * FROM nation",
        "DROP TABLE nation",
        "EXPLAIN ANALYZE INSERT INTO nation VALUES (1, 'x', 1, 'y')",
    ] {
        let e = untrusted(sql).await.expect_err(sql);
        assert!(e.starts_with("query: "), "{sql}: {e}");
    }
}

#[tokio::test]
async fn untrusted_cannot_set() {
    let e = untrusted("SET datafusion.execution.batch_size = 1").await.unwrap_err();
    assert!(e.contains("not supported") || e.contains("not allowed"), "{e}");
}

#[tokio::test]
async fn untrusted_cannot_read_a_path() {
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'data/nation/nation.parquet'",
        "CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM read_parquet('/etc/passwd')",
        "SELECT * FROM information_schema.tables",
    ] {
        untrusted(sql).await.expect_err(sql);
    }
}

#[tokio::test]
async fn untrusted_takes_exactly_one_statement() {
    let e = untrusted("SELECT 1; SELECT 2").await.unwrap_err();
    assert!(e.contains("exactly one statement"), "{e}");
}

#[tokio::test]
async fn admin_may_run_statements() {
    let t = Tpch::new();
    t.substrate.plan_sql(Surface::Admin, "SET datafusion.execution.batch_size = 1024").await.unwrap();
    t.substrate.plan_sql(Surface::Admin, "CREATE VIEW v AS SELECT * FROM nation").await.unwrap();
}

#[tokio::test]
async fn project_products_cannot_write_either() {
    let mut t = Tpch::new();
    // A product's query is a query; smuggling a statement in is a syntax error or rejected.
    assert!(t.compile("SELECT * FROM '/etc/passwd'").await.is_err());
}
