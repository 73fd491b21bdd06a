//! The bounded amplifying functions: the same answers as DataFusion's below the limit,
//! a clear error naming the function and the size above it, before allocating, for
//! constant and column arguments alike.

use datafusion::execution::FunctionRegistry;
use datafusion::prelude::SessionContext;
use kiln_functions::bounded::{BOUNDED_FUNCTIONS, bounded};

use crate::column;

const LIMIT: u64 = 1 << 20;

fn bounded_ctx() -> SessionContext {
    let ctx = SessionContext::new();
    for name in BOUNDED_FUNCTIONS {
        let udf = ctx.state().udf(name).unwrap();
        ctx.register_udf(bounded(&udf, LIMIT).unwrap());
    }
    ctx
}

async fn error(ctx: &SessionContext, sql: &str) -> String {
    let result = match ctx.sql(sql).await {
        Ok(frame) => frame.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    result.expect_err(sql).strip_backtrace()
}

#[tokio::test]
async fn below_the_limit_they_answer_as_datafusion_does() {
    let (ours, theirs) = (bounded_ctx(), SessionContext::new());
    for sql in [
        "SELECT repeat('ab', 1000)",
        "SELECT repeat(s, n) FROM (VALUES ('x', 3), ('yz', 0), (NULL, 2), ('q', -1)) t(s, n)",
        "SELECT lpad('x', 10, 'ab'), rpad('x', 5), lpad('long text', 3)",
        "SELECT array_repeat(1, 5), array_repeat('s', 2), list_repeat([1, 2], 3)",
        "SELECT array_resize([1, 2], 5, 0), array_resize([1], 0)",
        "SELECT generate_series(1, 10), range(1, 10, 3), range(10, 1, -2), generate_series(5, 1)",
        "SELECT generate_series(DATE '2024-01-01', DATE '2024-03-01', INTERVAL '1' MONTH)",
        "SELECT range(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-02', INTERVAL '6' HOUR)",
        "SELECT cardinality(generate_series(1, 100000))",
        "SELECT sum(cardinality(range(0, v))) FROM generate_series(1, 100) t(v)",
    ] {
        assert_eq!(column(&ours, sql).await, column(&theirs, sql).await, "{sql}");
    }
}

#[tokio::test]
async fn above_the_limit_they_fail_before_allocating() {
    let ctx = bounded_ctx();
    for (sql, function, size) in [
        ("SELECT repeat('x', 2147483647)", "repeat", "2.0 GiB"),
        ("SELECT length(repeat('ab', 600000))", "repeat", "1.1 MiB"),
        ("SELECT lpad('x', 2000000)", "lpad", "1.9 MiB"),
        ("SELECT rpad('x', 2000000, 'y')", "rpad", "1.9 MiB"),
        ("SELECT array_repeat(1, 1000000000)", "array_repeat", ""),
        ("SELECT array_resize([1], 200000)", "array_resize", "1.5 MiB"),
        ("SELECT * FROM unnest(generate_series(1, 1000000000))", "generate_series", "7.5 GiB"),
        ("SELECT cardinality(range(1, 200000))", "range", "1.5 MiB"),
        ("SELECT generate_series(DATE '2000-01-01', DATE '9999-01-01', INTERVAL '1' DAY)", "generate_series", ""),
        ("SELECT range(TIMESTAMP '2000-01-01', TIMESTAMP '2001-01-01', INTERVAL '1' SECOND)", "range", "241.3 MiB"),
        // From a column: 1,000 rows of 2 KiB each are 2 MiB in one batch.
        ("SELECT repeat('x', 2048 + v - v) FROM generate_series(1, 1000) t(v)", "repeat", "2.0 MiB"),
        ("SELECT repeat('x', v) FROM (VALUES (1), (3000000)) t(v)", "repeat", "2.9 MiB"),
    ] {
        let e = error(&ctx, sql).await;
        let expected = format!("{function}() would produce {size}");
        assert!(e.contains(&expected), "{sql}: {e}");
        assert!(e.contains("more than the 1.0 MiB a value may take here"), "{sql}: {e}");
    }
}
