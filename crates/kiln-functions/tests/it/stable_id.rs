use sha2::{Digest, Sha256};

use crate::{column, ctx_with};

/// Reference implementation of the documented encoding for (BIGINT, VARCHAR) rows.
fn reference(int: Option<i64>, s: Option<&str>) -> String {
    let mut buf = b"kiln.stable_id.v1".to_vec();
    buf.push(b'i');
    match int {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            buf.extend_from_slice(&8u64.to_le_bytes());
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
    buf.push(b's');
    match s {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
    }
    Sha256::digest(&buf)[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn ids_follow_the_documented_encoding() {
    let ctx = ctx_with(&[]);
    let got = column(
        &ctx,
        "SELECT kiln_stable_id(a, b) FROM (VALUES (CAST(1 AS BIGINT), 'x'), (NULL, ''), (NULL, NULL), (7, NULL)) t(a, b)",
    )
    .await;
    let want =
        [reference(Some(1), Some("x")), reference(None, Some("")), reference(None, None), reference(Some(7), None)];
    assert_eq!(got, want);
}

#[tokio::test]
async fn null_empty_and_boundaries_stay_distinct() {
    let ctx = ctx_with(&[]);
    let ids = column(
        &ctx,
        "SELECT kiln_stable_id(a, b) FROM (VALUES ('a', 'bc'), ('ab', 'c'), ('', NULL), (NULL, ''), ('', '')) t(a, b)",
    )
    .await;
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
    // Integer width and string encoding do not change the id.
    let narrow = column(&ctx, "SELECT kiln_stable_id(CAST(5 AS INT), arrow_cast('q', 'Utf8View'))").await;
    let wide = column(&ctx, "SELECT kiln_stable_id(CAST(5 AS BIGINT), arrow_cast('q', 'LargeUtf8'))").await;
    assert_eq!(narrow, wide);
}

#[tokio::test]
async fn ids_do_not_depend_on_batch_boundaries() {
    let ctx = ctx_with(&[]);
    let sql = "SELECT kiln_stable_id(v, v % 7) FROM generate_series(1, 5000) t(v) ORDER BY v";
    let whole = column(&ctx, sql).await;
    let small = datafusion::prelude::SessionContext::new_with_config(
        datafusion::prelude::SessionConfig::new().with_batch_size(7),
    );
    kiln_functions::Registry::builtin(kiln_functions::Secrets::default()).install(&small).unwrap();
    assert_eq!(column(&small, sql).await, whole);
}
