//! Every product of the TPC-H example equals (row count and an order-independent row
//! checksum) the same SQL run by plain DataFusion on the same source files, with upstream
//! products also computed by plain DataFusion, so nothing of Kiln's is on the other side.
//! Where a product uses Kiln-only SQL, [`PLAIN_SQL`] gives the same query in DataFusion's
//! own terms.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kiln::control::dialect::Statement;
use sha2::{Digest, Sha256};

/// Plain-DataFusion spellings of products that use Kiln's SQL: `UNNEST ... WITH OFFSET`
/// becomes DataFusion's `unnest` of the list zipped with `range` over its length.
const PLAIN_SQL: [(&str, &str); 1] = [(
    "order_items",
    "SELECT o_orderkey, idx, item['linenumber'] AS linenumber, item['partkey'] AS partkey,
            item['quantity'] AS quantity, item['price'] AS price
     FROM (SELECT o_orderkey, unnest(items) AS item,
                  unnest(range(0, CAST(array_length(items) AS BIGINT))) AS idx
           FROM orders_nested)",
)];

/// (rows, sum of per-row sha256 prefixes): equal multisets of rows give equal checksums.
fn checksum(batches: &[RecordBatch]) -> (usize, u128) {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = 0;
    let mut sum = 0u128;
    for batch in batches {
        let formatters: Vec<_> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
        for r in 0..batch.num_rows() {
            let line: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            let digest = Sha256::digest(line.join("\u{1f}").as_bytes());
            sum = sum.wrapping_add(u128::from_le_bytes(digest[..16].try_into().unwrap()));
            rows += 1;
        }
    }
    (rows, sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_products_equal_plain_datafusion() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tpch");
    kiln::init::init(&dir, Some("tpch")).unwrap();
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();

    let report = kiln::build(&dir, &kiln::BuildOptions::default(), &kiln::Quiet).await.unwrap();
    assert_eq!(report.failed().count(), 0, "{:?}", report.summary.products);
    let built: BTreeMap<String, u64> = report.summary.products.iter().map(|p| (p.product.clone(), p.rows)).collect();
    assert_eq!(built.len(), 6, "{built:?}");

    let project = kiln::Project::load(&dir).unwrap();
    let warehouse = kiln::data::Warehouse::local(&dir.join("warehouse")).unwrap();
    // The direct side runs the same SQL in a plain SessionContext. Kiln's functions are
    // installed there too (their outputs are pinned by known-answer tests in
    // kiln-functions); everything else (DAG, compilation, writer, commit) is Kiln-free.
    let direct = SessionContext::new();
    kiln::functions::Registry::builtin(project.config.resolve_secrets()).install(&direct).unwrap();
    let kiln_side = SessionContext::new();
    for &i in &project.graph.order().unwrap() {
        let node = &project.graph.nodes[i];
        let (fi, si) = node.def;
        match project.files[fi].statement(si).unwrap() {
            Statement::Source(def) => {
                let path = dir.join(def.options.get("path").unwrap().0);
                direct
                    .register_parquet(&def.name, path.to_str().unwrap(), ParquetReadOptions::default())
                    .await
                    .unwrap();
            }
            Statement::Product(def) => {
                let sql = PLAIN_SQL
                    .iter()
                    .find(|(name, _)| *name == def.name)
                    .map_or_else(|| def.query.to_string(), |(_, sql)| (*sql).to_owned());
                let expected = direct.sql(&sql).await.unwrap().collect().await.unwrap();
                let schema = expected.first().map(|b| b.schema()).unwrap();
                direct
                    .register_table(
                        def.name.as_str(),
                        Arc::new(MemTable::try_new(Arc::clone(&schema), vec![expected.clone()]).unwrap()),
                    )
                    .unwrap();

                let manifest = warehouse.current(&def.name).await.unwrap().expect("committed");
                let files: Vec<String> = manifest
                    .files
                    .iter()
                    .map(|f| dir.join("warehouse").join(&f.path).to_string_lossy().into_owned())
                    .collect();
                let actual = if def.partition_by.is_empty() {
                    kiln_side.read_parquet(files, ParquetReadOptions::default()).await.unwrap().collect().await.unwrap()
                } else {
                    // Hive-partitioned: DataFusion's own listing reads the build directory
                    // and parses the partition values from the paths (not Kiln's manifest),
                    // then the columns are put back in the product's order.
                    let build_dir = dir.join("warehouse").join(&manifest.build_dir);
                    let partition_cols = def
                        .partition_by
                        .iter()
                        .map(|c| (c.clone(), schema.field_with_name(c).unwrap().data_type().clone()))
                        .collect();
                    let options = ParquetReadOptions::default().table_partition_cols(partition_cols);
                    let listed = kiln_side.read_parquet(format!("{}/", build_dir.display()), options).await.unwrap();
                    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    listed.select_columns(&columns).unwrap().collect().await.unwrap()
                };

                let (want_rows, want_sum) = checksum(&expected);
                let (got_rows, got_sum) = checksum(&actual);
                assert!(want_rows > 0, "{}: the example should produce rows", def.name);
                assert_eq!(got_rows, want_rows, "{}: row count", def.name);
                assert_eq!(got_sum, want_sum, "{}: row checksum", def.name);
                assert_eq!(built[&def.name], want_rows as u64, "{}: summary rows", def.name);
                assert_eq!(manifest.totals.rows_written, want_rows as u64);
                assert_eq!(manifest.totals.rows_read, manifest.totals.rows_written + manifest.totals.rows_rejected);
            }
            // Run by `kiln stream`, not `kiln build`: kiln-cli's readme_stream_walkthrough
            // checks the example's views.
            Statement::Stream(_) | Statement::View(_) | Statement::Audit(_) | Statement::Test(_) => {}
        }
    }
}
