//! Streams and materialized views compile: options per connector, watermarks, view queries.

use kiln_control::compiler::watermark_delay;
use kiln_control::dialect::{Statement, parse_file};

use crate::Tpch;

fn stream(t: &mut Tpch, text: &str) -> Result<(), String> {
    let Statement::Stream(def) = parse_file("s.sql", text).unwrap().remove(0) else { panic!("not a stream") };
    if let Some(wm) = &def.watermark {
        watermark_delay(wm).map_err(|e| e.to_string())?;
    }
    t.substrate.register_stream(&def).map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn stream_options_are_checked_per_connector() {
    let mut t = Tpch::new();
    stream(&mut t, "CREATE STREAM a (ts TIMESTAMP NOT NULL) WITH (connector = 'log', topic = 'a')").unwrap();
    let e =
        stream(&mut t, "CREATE STREAM b (ts TIMESTAMP) WITH (connector = 'log', topic = 'b', url = 'x')").unwrap_err();
    assert_eq!(
        e,
        "s.sql:1:70: invalid option: unknown option `url` for a `log` stream (valid: connector, topic, format, batch_records, on_error, idle_timeout, poll_interval)"
    );
    let e = stream(&mut t, "CREATE STREAM c (ts TIMESTAMP) WITH (connector = 'kafka', topic = 'c')").unwrap_err();
    let expected =
        if kiln_data::feed::kafka::ENABLED { "needs a `brokers` option" } else { "the `kafka` cargo feature" };
    assert!(e.contains(expected), "{e}");
    let e = stream(&mut t, "CREATE STREAM d (ts TIMESTAMP) WITH (connector = 'mqtt')").unwrap_err();
    assert!(e.contains("stream connector `mqtt` (valid: log, files, http, kafka)"), "{e}");
}

fn source(t: &mut Tpch, text: &str) -> Result<kiln_control::CompiledSource, String> {
    let Statement::Source(def) = parse_file("s.sql", text).unwrap().remove(0) else { panic!("not a source") };
    t.substrate.register_source(&def).map_err(|e| e.to_string())
}

#[tokio::test]
async fn micro_batch_source_options_are_checked() {
    let mut t = Tpch::new();
    let ok = source(
        &mut t,
        "CREATE SOURCE h (id BIGINT) WITH (connector = 'http', url = 'https://api.example.com/v1/events', \
         pagination = 'cursor', batch_records = '500', retry_backoff = '1s', timeout = '2m')",
    )
    .unwrap();
    let kiln_control::CompiledSource::MicroBatch(kiln_data::MicroBatchSource::Http(h)) = ok else { panic!() };
    assert_eq!(h.batch_records, 500);
    assert_eq!(h.timeout, std::time::Duration::from_secs(120));
    assert_eq!(h.pagination, kiln_data::Pagination::Cursor { param: "cursor".into(), field: "next_cursor".into() });
    assert!(t.substrate.micro_batch_source("h").is_some());
    for (options, expected) in [
        ("url = 'ftp://x/y'", "s.sql:1:55: invalid option: url scheme `ftp` (valid: http, https)"),
        (
            "url = 'http://x', timeout = 'soon'",
            "s.sql:1:73: invalid option: timeout = 'soon': expected a duration such as '250ms', '5s' or '2m'",
        ),
        (
            "url = 'http://x', format = 'ndjson', pagination = 'cursor'",
            "s.sql:1:92: invalid option: cursor pagination reads the cursor from a JSON object body",
        ),
        (
            "url = 'http://x', batch_records = '0'",
            "s.sql:1:73: invalid option: batch_records = '0': expected an integer >= 1",
        ),
        (
            "path = 'x'",
            "s.sql:1:55: invalid option: unknown option `path` for an http source (valid: connector, url, format, records_field, pagination, next_field, cursor_param, cursor_field, batch_records, max_retries, retry_backoff, timeout, on_error)",
        ),
    ] {
        let sql = format!("CREATE SOURCE e (id BIGINT) WITH (connector = 'http', {options})");
        assert_eq!(source(&mut t, &sql).unwrap_err(), expected, "{options}");
    }
    let e = source(&mut t, "CREATE SOURCE n (xs BIGINT[]) WITH (connector = 'http', url = 'http://x')").unwrap_err();
    assert!(e.contains("an http source reads scalar columns; `xs` is List"), "{e}");
    let kafka =
        source(&mut t, "CREATE SOURCE k (id BIGINT) WITH (connector = 'kafka', brokers = 'b:9092', topic = 't')");
    if kiln_data::feed::kafka::ENABLED {
        assert!(kafka.is_ok());
        let e = source(&mut t, "CREATE SOURCE k2 (id BIGINT) WITH (connector = 'kafka', topic = 't')").unwrap_err();
        assert!(e.contains("needs a `brokers` option"), "{e}");
    } else {
        assert!(kafka.unwrap_err().contains("need kiln built with the `kafka` cargo feature"));
    }
}

#[tokio::test]
async fn watermarks_need_a_timestamp_and_a_delay() {
    let mut t = Tpch::new();
    stream(&mut t, "CREATE STREAM a (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (topic = 'a')")
        .unwrap();
    let e = stream(&mut t, "CREATE STREAM b (n BIGINT, WATERMARK FOR n AS n) WITH (topic = 'b')").unwrap_err();
    assert!(e.contains("must be a TIMESTAMP, found Int64"), "{e}");
    let e =
        stream(&mut t, "CREATE STREAM c (ts TIMESTAMP, WATERMARK FOR nope AS nope) WITH (topic = 'c')").unwrap_err();
    assert!(e.contains("`nope`: no such column"), "{e}");
    let e = stream(
        &mut t,
        "CREATE STREAM d (ts TIMESTAMP, WATERMARK FOR ts AS ts + INTERVAL '5' SECOND) WITH (topic = 'd')",
    )
    .unwrap_err();
    assert!(e.contains("expected `ts` or `ts - INTERVAL"), "{e}");
}

#[test]
fn watermark_delays_in_milliseconds() {
    for (text, ms) in [("ts", 0), ("ts - INTERVAL '5' SECOND", 5_000), ("ts - INTERVAL '2' MINUTE", 120_000)] {
        let sql = format!("CREATE STREAM s (ts TIMESTAMP, WATERMARK FOR ts AS {text})");
        let Statement::Stream(def) = parse_file("s.sql", &sql).unwrap().remove(0) else { panic!() };
        assert_eq!(watermark_delay(def.watermark.as_ref().unwrap()), Ok(ms), "{text}");
    }
}

/// A substrate with streams `clicks` (event time `ts`, one second late at most; `at2` another
/// timestamp) and `raw` (no watermark).
fn with_streams() -> Tpch {
    let mut t = Tpch::new();
    stream(
        &mut t,
        "CREATE STREAM clicks (user_id BIGINT NOT NULL, ts TIMESTAMP NOT NULL, at2 TIMESTAMP,\n\
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (topic = 'c')",
    )
    .unwrap();
    stream(&mut t, "CREATE STREAM raw (ts TIMESTAMP NOT NULL) WITH (topic = 'r')").unwrap();
    t
}

#[tokio::test]
async fn materialized_views_compile_over_streams() {
    let mut t = with_streams();
    let text = "CREATE MATERIALIZED VIEW per_minute AS SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS w, count(*) AS n FROM clicks GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)";
    let Statement::View(def) = parse_file("v.sql", text).unwrap().remove(0) else { panic!("not a view") };
    let view = t.substrate.compile_view(&def).await.unwrap();
    assert_eq!(view.schema.fields().len(), 2);
    assert_eq!(view.lineage[1].group.iter().map(ToString::to_string).collect::<Vec<_>>(), ["clicks.ts"]);
    assert_eq!(view.windows.len(), 1);
    assert_eq!(view.windows[0].size_ms, Some(60_000));
    // The table-valued form: the same window, found in the derived table it becomes.
    let text = "CREATE MATERIALIZED VIEW hops AS SELECT window_start, window_end, count(*) AS n \
                FROM HOP(TABLE clicks, DESCRIPTOR(ts), INTERVAL '10' SECOND, INTERVAL '1' MINUTE) GROUP BY window_start, window_end";
    let Statement::View(def) = parse_file("v.sql", text).unwrap().remove(0) else { panic!("not a view") };
    let view = t.substrate.compile_view(&def).await.unwrap();
    assert_eq!(
        view.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(),
        ["window_start", "window_end", "n"]
    );
    assert_eq!((view.windows.len(), view.windows[0].hop, view.windows[0].slide_ms), (1, true, Some(10_000)));
    let compile = |sql: &str| {
        let Statement::View(def) = parse_file("v.sql", sql).unwrap().remove(0) else { panic!("not a view") };
        def
    };
    // Too few arguments for the table-valued form (the rewrite indexed past them and
    // panicked): left to the parser, which says where and what it expected.
    for (sql, at) in [
        ("CREATE MATERIALIZED VIEW v AS SELECT * FROM TUMBLE(TABLE clicks)", "v.sql:1:58"),
        ("CREATE MATERIALIZED VIEW v AS SELECT * FROM HOP(TABLE clicks, DESCRIPTOR(ts))", "v.sql:1:55"),
    ] {
        let e = parse_file("v.sql", sql).unwrap_err().to_string();
        assert!(e.starts_with(at), "{sql}: {e}");
    }
    for (sql, expected) in [
        (
            "CREATE MATERIALIZED VIEW v WITH (emit = 'sometimes') AS SELECT * FROM clicks",
            "unknown option `emit` for a materialized view",
        ),
        (
            "CREATE MATERIALIZED VIEW v WITH (late_events = 'keep') AS SELECT * FROM clicks",
            "v.sql:1:34: invalid option: late_events = 'keep' (valid: 'drop', 'table'",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id",
            "v.sql:1:26: product `v`: a materialized view that aggregates groups by a window, GROUP BY TUMBLE(ts, ...)",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM clicks GROUP BY TUMBLE(at2, INTERVAL '1' MINUTE)",
            "v.sql:1:73: product `v`: the window is over `at2`; a stream's windows are over its event-time column `ts`",
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT count(*) AS n FROM raw GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)",
            "v.sql:1:70: product `v`: stream `raw` has no WATERMARK FOR its event time",
        ),
        ("CREATE MATERIALIZED VIEW v AS SELECT 1 AS one", "a materialized view reads a stream"),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT window_start, count(*) AS n FROM TUMBLE(TABLE clicks, DESCRIPTOR(at2), INTERVAL '1' MINUTE) GROUP BY window_start",
            "v.sql:1:71: product `v`: the window is over `at2`",
        ),
    ] {
        // A fresh substrate each: a view that fails its checks has registered its name.
        let mut t = with_streams();
        let e = t.substrate.compile_view(&compile(sql)).await.unwrap_err().to_string();
        assert!(e.contains(expected), "{sql}: {e}");
    }
}
