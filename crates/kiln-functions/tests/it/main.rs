//! Known-answer and behaviour tests of the builtin functions, through SQL.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bounded;
mod hashing;
mod json;
mod nest;
mod registry;
mod stable_id;
mod windows;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use kiln_functions::{Registry, Secrets};

pub fn ctx_with(secrets: &[(&str, &str)]) -> SessionContext {
    let ctx = SessionContext::new();
    Registry::builtin(Secrets::from_values(secrets.iter().copied())).install(&ctx).unwrap();
    ctx
}

/// Runs SQL and returns every cell of the first column as text (NULL as "NULL").
pub async fn column(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let f = ArrayFormatter::try_new(b.column(0).as_ref(), &options).unwrap();
        out.extend((0..b.num_rows()).map(|i| f.value(i).to_string()));
    }
    out
}

/// The error message of a failing SQL statement (planning or execution).
pub async fn error(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Err(e) => e.strip_backtrace(),
        Ok(df) => df.collect().await.unwrap_err().strip_backtrace(),
    }
}
