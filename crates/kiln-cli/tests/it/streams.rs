//! `kiln stream`: windows against a reference, restarts (SIGKILL, failpoints), golden views
//! straight through and with a checkpoint/restore in the middle, watermarks across
//! partitions with an idle timeout.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use proptest::prelude::*;

use crate::{kiln, write_files};

const KILN_TOML: &str = "[project]\nname = \"s\"\n[storage]\nwarehouse = \"warehouse\"\nartifacts = \".kiln\"\n";

/// [`KILN_TOML`] letting `kiln query` read the streams `sources` (and their rejects).
fn kiln_toml(sources: &[&str]) -> String {
    let list: Vec<String> = sources.iter().map(|s| format!("\"{s}\"")).collect();
    format!("{KILN_TOML}[query]\nsources = [{}]\n", list.join(", "))
}

/// One event: event time (ms), user, amount.
type Ev = (i64, i64, i64);
/// Per (window start, user): count, sum, max.
type Groups = BTreeMap<(i64, i64), (i64, i64, i64)>;

fn line((ts, user, amount): Ev) -> String {
    format!(r#"{{"ts": "{}", "user_id": {user}, "amount": {amount}}}"#, chrono_ms(ts))
}

/// A project with stream `events` (ms timestamps, `delay_ms` allowed lateness, micro-batches
/// of `batch` records) and `views` (SQL text).
fn project(delay_ms: i64, batch: usize, idle: &str, views: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!(
        "CREATE STREAM events (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
         WATERMARK FOR ts AS ts - INTERVAL '{delay_ms}' MILLISECOND)\n\
         WITH (connector = 'log', topic = 'events', batch_records = '{batch}', idle_timeout = '{idle}', on_error = 'reject');\n"
    );
    write_files(dir.path(), &[("kiln.toml", &kiln_toml(&["events"])), ("stream.sql", &stream), ("views.sql", views)]);
    dir
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn produce(dir: &Path, events: &[Ev]) {
    let text: String = events.iter().map(|e| line(*e) + "\n").collect();
    kiln::produce(dir, "events", Some(1), None, std::io::Cursor::new(text)).await.unwrap();
}

async fn run_until_idle(dir: &Path) -> kiln::StreamReport {
    let options =
        kiln::StreamOptions { until_idle: true, checkpoint_interval: Duration::from_millis(1), ..Default::default() };
    kiln::stream(dir, &options, &kiln::Quiet, Arc::new(AtomicBool::new(false))).await.unwrap()
}

/// A query's rows, one `a|b|c` line each.
async fn rows(dir: &Path, sql: &str) -> Vec<String> {
    let batches = kiln::inspect::query_batches(dir, sql).await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| datafusion::arrow::util::display::array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

/// Windows (start, end) containing `t`: starts at multiples of `slide`, length `size`
/// (brute force over candidate starts).
fn windows_of(t: i64, size: i64, slide: i64) -> Vec<i64> {
    let mut s = (t - size - slide).div_euclid(slide) * slide;
    let mut out = Vec::new();
    while s <= t {
        if s <= t && t < s + size {
            out.push(s);
        }
        s += slide;
    }
    out
}

/// The reference: single partition, micro-batches of `batch` events in order. The
/// watermark after a batch is the greatest event time so far minus `delay`; an event is
/// late when any window containing it ended at or before the watermark before its batch.
/// Returns the late count and, per (window start, user), (count, sum, max) of the rest,
/// for windows ending at or before the final watermark.
fn reference(events: &[Ev], batch: usize, delay: i64, size: i64, slide: i64) -> (u64, Groups) {
    let mut watermark = i64::MIN;
    let mut max_seen = i64::MIN;
    let mut late = 0;
    let mut groups = Groups::new();
    for chunk in events.chunks(batch) {
        for &(ts, user, amount) in chunk {
            let starts = windows_of(ts, size, slide);
            if starts.iter().any(|s| s + size <= watermark) {
                late += 1;
                continue;
            }
            for s in starts {
                let g = groups.entry((s, user)).or_insert((0, 0, i64::MIN));
                g.0 += 1;
                g.1 += amount;
                g.2 = g.2.max(amount);
            }
        }
        max_seen = max_seen.max(chunk.iter().map(|e| e.0).max().unwrap_or(i64::MIN));
        watermark = watermark.max(max_seen - delay);
    }
    groups.retain(|(s, _), _| s + size <= watermark);
    (late, groups)
}

fn window_view(name: &str, window: &str) -> String {
    let start = if window.starts_with("TUMBLE") { "TUMBLE_START" } else { "HOP_START" };
    let args = &window[window.find('(').unwrap()..];
    format!(
        "CREATE MATERIALIZED VIEW {name} AS SELECT {start}{args} AS w, user_id, count(*) AS n, sum(amount) AS total, max(amount) AS top\n\
         FROM events GROUP BY {window}, user_id;\n"
    )
}

fn expected_rows(groups: &Groups) -> Vec<String> {
    groups
        .iter()
        .map(|((s, user), (n, total, top))| {
            let w = chrono_ms(*s);
            format!("{w}|{user}|{n}|{total}|{top}")
        })
        .collect()
}

/// `ms` since the epoch as Arrow displays a TIMESTAMP(3) (and parses it back).
pub(crate) fn chrono_ms(ms: i64) -> String {
    let value = datafusion::arrow::array::TimestampMillisecondArray::from(vec![ms]);
    datafusion::arrow::util::display::array_value_to_string(&value, 0).unwrap()
}

/// Events in [0, 60 s), each displaced backwards by up to `disorder` ms, then a sentinel
/// far ahead that closes every window of the others.
fn stream_of(raw: &[(u16, u8, u8)], disorder: i64) -> Vec<Ev> {
    let n = raw.len().max(1) as i64;
    let mut events: Vec<Ev> = raw
        .iter()
        .enumerate()
        .map(|(i, &(jitter, user, amount))| {
            // Quarter-second event times, so window ends and watermarks often coincide.
            let base = i as i64 * 240 / n * 250;
            let shift = i64::from(jitter) % (disorder + 1) / 250 * 250;
            ((base - shift).max(0), i64::from(user % 3), i64::from(amount))
        })
        .collect();
    events.push((1_000_000, 0, 0));
    events
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The oracle: random out-of-order events through a TUMBLE and a HOP view give, once
    /// the watermark has passed their windows, exactly the reference's groups over the
    /// events that were not late, and the same late count.
    #[test]
    fn windows_equal_a_batch_group_by_minus_late_events(
        raw in proptest::collection::vec((0u16..20_000, 0u8..3, 0u8..100), 1..120),
        disorder in 0i64..8_000,
        delay in (0i64..16).prop_map(|q| q * 250),
        batch in 1usize..25,
        (size, slide) in prop_oneof![Just((1_000i64, 1_000i64)), Just((5_000, 5_000)), Just((4_000, 2_000)), Just((5_000, 2_000))],
    ) {
        let events = stream_of(&raw, disorder);
        let tumble = format!("TUMBLE(ts, INTERVAL '{size}' MILLISECOND)");
        let hop = format!("HOP(ts, INTERVAL '{slide}' MILLISECOND, INTERVAL '{size}' MILLISECOND)");
        let views = window_view("t", &tumble) + &window_view("h", &hop);
        let dir = project(delay, batch, "1h", &views);
        let rt = rt();
        let (report, t_rows, h_rows) = rt.block_on(async {
            produce(dir.path(), &events).await;
            let report = run_until_idle(dir.path()).await;
            let t = rows(dir.path(), "SELECT * FROM t ORDER BY w, user_id").await;
            let h = rows(dir.path(), "SELECT * FROM h ORDER BY w, user_id").await;
            (report, t, h)
        });
        let (t_late, t_groups) = reference(&events, batch, delay, size, size);
        let (h_late, h_groups) = reference(&events, batch, delay, size, slide);
        prop_assert_eq!(t_rows, expected_rows(&t_groups));
        prop_assert_eq!(h_rows, expected_rows(&h_groups));
        let late: BTreeMap<&str, u64> = report.views.iter().map(|v| (v.view.as_str(), v.late)).collect();
        prop_assert_eq!(late["t"], t_late);
        prop_assert_eq!(late["h"], h_late);
    }
}

/// Golden views: run straight through, and again in two halves (a checkpoint with open
/// windows, a new process state, a restore), both give the same hand-computed rows.
#[test]
fn golden_views_straight_and_restored() {
    let views = "\
CREATE MATERIALIZED VIEW big_spenders AS
SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS w, TUMBLE_END(ts, INTERVAL '10' SECOND) AS w_end,
       user_id, count(*) AS n, sum(amount) AS total, avg(CAST(amount AS DOUBLE)) AS mean
FROM events WHERE amount >= 10
GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user_id
HAVING sum(amount) > 20;

CREATE MATERIALIZED VIEW busy AS
SELECT HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS w,
       HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS w_end,
       count(DISTINCT user_id) AS users, min(amount) AS low
FROM events
GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND);

CREATE MATERIALIZED VIEW big_tvf AS
SELECT window_start AS w, window_end AS w_end, user_id, count(*) AS n, sum(amount) AS total,
       avg(CAST(amount AS DOUBLE)) AS mean
FROM TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '10' SECOND)
WHERE amount >= 10
GROUP BY window_start, window_end, user_id
HAVING sum(amount) > 20;

CREATE MATERIALIZED VIEW busy_tvf AS
SELECT window_start AS w, window_end AS w_end, count(DISTINCT user_id) AS users, min(amount) AS low
FROM HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS h
GROUP BY window_start, window_end;

CREATE MATERIALIZED VIEW tagged AS
SELECT user_id * 10 AS u10, upper(CAST(amount AS VARCHAR)) AS a, ts FROM events WHERE amount > 40;
";
    // (ts ms, user, amount); delay 1 s; batches of 3.
    let events: Vec<Ev> = vec![
        (1_000, 1, 15),
        (2_000, 2, 50),
        (4_000, 1, 9),
        (6_000, 1, 12),
        (3_000, 2, 30),
        (11_000, 1, 25),
        (12_500, 2, 5),
        (9_500, 1, 41), // late for busy's [0,10) and big_spenders' [0,10)? watermark is 11 s - 1 s = 10 s after batch 2
        (15_000, 2, 60),
        (21_000, 1, 1),
        (26_000, 2, 2),
        (40_000, 1, 3),
    ];
    let expected_big = [
        "1970-01-01T00:00:00|1970-01-01T00:00:10|1|2|27|13.5",
        "1970-01-01T00:00:00|1970-01-01T00:00:10|2|2|80|40.0",
        "1970-01-01T00:00:10|1970-01-01T00:00:20|2|1|60|60.0",
        "1970-01-01T00:00:10|1970-01-01T00:00:20|1|1|25|25.0",
    ];
    let expected_busy = [
        "1969-12-31T23:59:55|1970-01-01T00:00:05|2|9",
        "1970-01-01T00:00:00|1970-01-01T00:00:10|2|9",
        "1970-01-01T00:00:05|1970-01-01T00:00:15|2|5",
        "1970-01-01T00:00:10|1970-01-01T00:00:20|2|5",
        "1970-01-01T00:00:15|1970-01-01T00:00:25|2|1",
        "1970-01-01T00:00:20|1970-01-01T00:00:30|2|1",
        "1970-01-01T00:00:25|1970-01-01T00:00:35|1|2",
    ];
    let expected_tagged = ["20|50|1970-01-01T00:00:02", "10|41|1970-01-01T00:00:09.500", "20|60|1970-01-01T00:00:15"];
    // Splits at micro-batch boundaries (lateness depends on where batches end).
    for split in [events.len(), 6, 9] {
        let dir = project(1_000, 3, "1h", views);
        let rt = rt();
        let (big, busy, tagged, late, tvf) = rt.block_on(async {
            produce(dir.path(), &events[..split]).await;
            run_until_idle(dir.path()).await;
            if split < events.len() {
                produce(dir.path(), &events[split..]).await;
                run_until_idle(dir.path()).await;
            }
            let report = run_until_idle(dir.path()).await;
            let big = rows(dir.path(), "SELECT * FROM big_spenders ORDER BY w, w_end").await;
            let busy = rows(dir.path(), "SELECT * FROM busy ORDER BY w").await;
            let tagged = rows(dir.path(), "SELECT * FROM tagged ORDER BY ts").await;
            let late: BTreeMap<String, u64> = report.views.iter().map(|v| (v.view.clone(), v.late)).collect();
            let tvf = (
                rows(dir.path(), "SELECT * FROM big_tvf ORDER BY w, w_end").await,
                rows(dir.path(), "SELECT * FROM busy_tvf ORDER BY w").await,
            );
            (big, busy, tagged, late, tvf)
        });
        let mut big_sorted = big.clone();
        big_sorted.sort_by_key(|r| (r[..19].to_owned(), r.split('|').nth(2).map(str::to_owned)));
        let mut expected_big_sorted = expected_big.map(str::to_owned).to_vec();
        expected_big_sorted.sort_by_key(|r| (r[..19].to_owned(), r.split('|').nth(2).map(str::to_owned)));
        assert_eq!(big_sorted, expected_big_sorted, "big_spenders, split at {split}");
        assert_eq!(busy, expected_busy, "busy, split at {split}");
        assert_eq!(tagged, expected_tagged, "tagged, split at {split}");
        assert_eq!(late["big_spenders"], 1, "the 9.5 s event arrives after [0, 10) closed");
        assert_eq!(late["busy"], 1);
        assert_eq!(late["tagged"], 0, "a view without windows has no late events");
        // The table-valued forms give the same windows.
        let mut big_tvf = tvf.0.clone();
        big_tvf.sort_by_key(|r| (r[..19].to_owned(), r.split('|').nth(2).map(str::to_owned)));
        assert_eq!(big_tvf, expected_big_sorted, "big_tvf, split at {split}");
        assert_eq!(tvf.1, expected_busy, "busy_tvf, split at {split}");
        assert_eq!((late["big_tvf"], late["busy_tvf"]), (1, 1));
    }
}

/// The stream's watermark is the least over partitions until one goes idle: a partition
/// that stops sending holds windows open until `idle_timeout` passes.
#[test]
fn idle_partitions_stop_holding_the_watermark_back() {
    let views = window_view("t", "TUMBLE(ts, INTERVAL '10' SECOND)");
    let dir = project(0, 100, "300ms", &views);
    let rt = rt();
    rt.block_on(async {
        let warehouse = kiln::data::Warehouse::local(&dir.path().join("warehouse")).unwrap();
        let topic = kiln::data::log::LogTopic::open_or_create(&warehouse, "events", Some(2)).await.unwrap();
        // Partition 0 runs to 45 s; partition 1 stops at 12 s.
        let p0: Vec<String> = (0..10).map(|k| line((k * 5_000, 0, 1))).collect();
        let p1: Vec<String> = (0..5).map(|k| line((k * 3_000, 1, 1))).collect();
        topic.append(0, &p0).await.unwrap();
        topic.append(1, &p1).await.unwrap();
        run_until_idle(dir.path()).await;
        // Watermark min(45, 12) = 12 s: only [0, 10) is out.
        let first = rows(dir.path(), "SELECT w, user_id, n FROM t ORDER BY w, user_id").await;
        assert_eq!(first, ["1970-01-01T00:00:00|0|2", "1970-01-01T00:00:00|1|4"]);
        // Running on, partition 1 goes idle after 300 ms and partition 0 alone moves the
        // watermark to 45 s; the observer stops the run once progress shows it (or after
        // 60 s, which fails below).
        let stop = Arc::new(AtomicBool::new(false));
        let options = kiln::StreamOptions {
            checkpoint_interval: Duration::from_millis(50),
            poll_interval: Duration::from_millis(20),
            progress_interval: Duration::from_millis(50),
            ..Default::default()
        };
        let observer = StopAt { watermark_ms: 45_000, stop: Arc::clone(&stop) };
        let flag = Arc::clone(&stop);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let report = kiln::stream(dir.path(), &options, &observer, stop).await.unwrap();
        stopper.abort();
        assert_eq!(report.stopped, kiln::stream::Stopped::Signal);
        assert_eq!(report.views[0].watermark.as_deref(), Some("1970-01-01T00:00:45.000Z"));
        let all = rows(dir.path(), "SELECT w, user_id, n FROM t ORDER BY w, user_id").await;
        assert_eq!(
            all,
            [
                "1970-01-01T00:00:00|0|2",
                "1970-01-01T00:00:00|1|4",
                "1970-01-01T00:00:10|0|2",
                "1970-01-01T00:00:10|1|1",
                "1970-01-01T00:00:20|0|2",
                "1970-01-01T00:00:30|0|2",
            ]
        );
    });
}

/// Stops a run once its first view's watermark reaches `watermark_ms`.
struct StopAt {
    watermark_ms: i64,
    stop: Arc<AtomicBool>,
}

impl kiln::Observer for StopAt {
    fn event(&self, event: kiln::Event) {
        if let kiln::Event::StreamProgress(views) = event
            && views.first().is_some_and(|v| v.watermark_ms >= Some(self.watermark_ms))
        {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// The binary killed with SIGKILL at random points, and at each failpoint, then
/// restarted until a run finishes: the view and its late events equal an uninterrupted
/// run's: nothing lost, nothing emitted twice.
#[test]
fn killed_streams_restart_exactly_once() {
    let views = "CREATE MATERIALIZED VIEW t WITH (late_events = 'table') AS \
                 SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, user_id, count(*) AS n, sum(amount) AS total \
                 FROM events GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), user_id;\n\
                 CREATE MATERIALIZED VIEW h AS \
                 SELECT HOP_START(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) AS w, count(*) AS n \
                 FROM events GROUP BY HOP(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND);\n";
    let raw: Vec<(u16, u8, u8)> = (0..3_000u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 3_000) as u16, (i % 7) as u8, (i % 100) as u8))
        .collect();
    let mut events = stream_of(&raw, 2_500);
    // A malformed record and one without event time, rejected by the stream.
    events.truncate(events.len() - 1);
    let mut text: String = events.iter().map(|e| line(*e) + "\n").collect();
    text.push_str("{\"ts\": \"soon\", \"user_id\": 1}\n{\"user_id\": 2, \"amount\": 3}\n");
    text.push_str(&(line((1_000_000, 0, 0)) + "\n"));
    let setup = || {
        let dir = project(1_000, 37, "1h", views);
        let input = dir.path().join("events.ndjson");
        std::fs::write(&input, &text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["produce", "events", "--partitions", "1"])
            .current_dir(dir.path())
            .stdin(std::fs::File::open(&input).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        dir
    };
    let snapshot = |dir: &Path| {
        let rt = rt();
        rt.block_on(async {
            (
                rows(dir, "SELECT * FROM t ORDER BY w, user_id").await,
                rows(dir, "SELECT * FROM h ORDER BY w").await,
                rows(dir, "SELECT user_id, amount, ts FROM t__late ORDER BY ts, user_id, amount").await,
                rows(dir, "SELECT file, line, reason FROM events__rejected ORDER BY line").await,
            )
        })
    };
    let straight = setup();
    let (code, out, err) = kiln(&["stream", "--until-idle", "--checkpoint-interval", "0s"], straight.path());
    assert_eq!(code, 0, "{out}{err}");
    let expected = snapshot(straight.path());
    assert!(expected.0.len() > 100 && !expected.2.is_empty(), "the run emits windows and late events");
    assert_eq!(expected.3.len(), 2, "{:?}", expected.3);

    // Failpoints: a kill after data files, before and after a Delta commit, after a
    // checkpoint and around a side dataset's commit, each then restarted to the end.
    // The restart checkpoints only at its end, so it replays from the last checkpoint
    // with other checkpoint boundaries than the killed run.
    for point in
        ["after_file", "before_commit", "after_commit", "after_checkpoint", "before_side_publish", "after_side_commit"]
    {
        let dir = setup();
        let killed = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["stream", "--until-idle", "--checkpoint-interval", "0s"])
            .env("KILN_FAILPOINT", point)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!killed.status.success(), "{point}: the failpoint aborts the run");
        if point == "before_side_publish" {
            // Killed before the side datasets' pointers moved: gc must keep their files.
            let (code, out, err) = kiln(&["gc"], dir.path());
            assert_eq!(code, 0, "{out}{err}");
        }
        let (code, out, err) = kiln(&["stream", "--until-idle", "--checkpoint-interval", "1h"], dir.path());
        assert_eq!(code, 0, "{point}: {out}{err}");
        assert_eq!(snapshot(dir.path()), expected, "failpoint {point}");
    }

    // SIGKILL at pseudo-random moments.
    let dir = setup();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for _ in 0..40 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["stream", "--until-idle", "--checkpoint-interval", "0s"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + seed % 900));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let (code, out, err) = kiln(&["stream", "--until-idle", "--checkpoint-interval", "0s"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(kills > 0, "at least one run was killed");
    assert_eq!(snapshot(dir.path()), expected, "after {kills} kills");
}

/// SIGTERM takes a final checkpoint and exits 0; the next run resumes from it.
#[test]
fn sigterm_checkpoints_and_exits_zero() {
    let views = window_view("t", "TUMBLE(ts, INTERVAL '1' SECOND)");
    let dir = project(0, 10, "1h", &views);
    let events: String = (0..50).map(|k| line((k * 100, 1, 1)) + "\n").collect();
    write_files(dir.path(), &[("e.ndjson", &events)]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["produce", "events"])
        .current_dir(dir.path())
        .stdin(std::fs::File::open(dir.path().join("e.ndjson")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["stream", "--checkpoint-interval", "1h"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until its progress says it has read everything (nothing is committed yet: the
    // interval is an hour), then terminate it.
    // (A reader thread keeps draining stderr, so the child never writes to a closed pipe.)
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(60)) {
        let done = l.contains(" 50 events") && l.contains("lag 0 records");
        seen.push(l);
        if done {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("lag 0 records")), "{seen:?}");
    assert!(crate::committed(dir.path(), "t").is_none(), "no checkpoint before the signal");
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped (signal)"), "{stdout}");
    let manifest = crate::current_manifest(dir.path(), "t");
    assert_eq!(manifest["positions"]["events"]["records"], 50);
    assert_eq!(manifest["stream"]["watermark_ms"], 4_900);
    // Windows [0,1) .. [3,4) are out; [4,5) is open in the state.
    assert_eq!(manifest["totals"]["rows_written"], 4);
    assert_eq!(manifest["stream"]["state_rows"], 1);
}

/// A `files` stream reads each arriving file once, whatever its name sorts as, in JSON,
/// CSV or Arrow IPC; malformed records and rows without event time are rejected with
/// their file and line.
#[test]
fn files_streams_read_each_arriving_file_once() {
    use datafusion::arrow::array::{Int64Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let mut sql = String::new();
    for format in ["json", "csv", "arrow"] {
        sql.push_str(&format!(
            "CREATE STREAM s_{format} (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
             WATERMARK FOR ts AS ts) WITH (connector = 'files', path = 'in_{format}', format = '{format}', on_error = 'reject');\n\
             CREATE MATERIALIZED VIEW v_{format} AS SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, count(*) AS n, sum(amount) AS total\n\
             FROM s_{format} GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);\n"
        ));
    }
    write_files(dir.path(), &[("kiln.toml", &kiln_toml(&["s_json", "s_csv", "s_arrow"])), ("s.sql", &sql)]);
    // (ts ms, amount); the first file's second record is malformed, the third has no time.
    let first = [(100, "1"), (200, "x"), (-1, "5"), (1_300, "2")];
    let second = [(2_100, "4"), (900, "100")]; // 900 is late: [0, 1 s) closed at 1.3 s
    let write = |name: &str, rows: &[(i64, &str)]| {
        for format in ["json", "csv", "arrow"] {
            let d = dir.path().join(format!("in_{format}"));
            std::fs::create_dir_all(&d).unwrap();
            let path = d.join(format!("{name}.{format}"));
            match format {
                "json" => {
                    let text: String = rows
                        .iter()
                        .map(|(ts, a)| {
                            let t = if *ts < 0 { String::new() } else { format!(r#""ts": "{}", "#, chrono_ms(*ts)) };
                            format!("{{{t}\"user_id\": 1, \"amount\": \"{a}\"}}\n")
                        })
                        .collect();
                    std::fs::write(path, text).unwrap();
                }
                "csv" => {
                    let text: String = rows
                        .iter()
                        .map(|(ts, a)| format!("{},1,{a}\n", if *ts < 0 { String::new() } else { chrono_ms(*ts) }))
                        .collect();
                    std::fs::write(path, format!("ts,user_id,amount\n{text}")).unwrap();
                }
                _ => {
                    // Arrow: amounts that are not numbers cannot be written as Int64;
                    // the row carries NULL instead (a nullable column: it stays).
                    let schema = Arc::new(Schema::new(vec![
                        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
                        Field::new("user_id", DataType::Int64, false),
                        Field::new("amount", DataType::Int64, true),
                    ]));
                    let ts: TimestampMillisecondArray = rows.iter().map(|(t, _)| (*t >= 0).then_some(*t)).collect();
                    let amount: Int64Array = rows.iter().map(|(_, a)| a.parse::<i64>().ok()).collect();
                    let batch = datafusion::arrow::array::RecordBatch::try_new(
                        Arc::clone(&schema),
                        vec![Arc::new(ts), Arc::new(Int64Array::from(vec![1; rows.len()])), Arc::new(amount)],
                    )
                    .unwrap();
                    let mut file = std::fs::File::create(path).unwrap();
                    let mut w = datafusion::arrow::ipc::writer::FileWriter::try_new(&mut file, &schema).unwrap();
                    w.write(&batch).unwrap();
                    w.finish().unwrap();
                }
            }
        }
    };
    write("b-first", &first);
    let rt = rt();
    rt.block_on(run_until_idle(dir.path()));
    // A file whose name sorts before the one already read is still new.
    write("a-second", &second);
    let report = rt.block_on(run_until_idle(dir.path()));
    for format in ["json", "csv", "arrow"] {
        let got = rt.block_on(rows(dir.path(), &format!("SELECT * FROM v_{format} ORDER BY w")));
        let rejected =
            rt.block_on(rows(dir.path(), &format!("SELECT line, reason FROM s_{format}__rejected ORDER BY line")));
        let status = report.views.iter().find(|v| v.view == format!("v_{format}")).unwrap();
        assert_eq!(status.late, 1, "{format}");
        if format == "arrow" {
            // [0,1): 100 and 200 (amount NULL); [1,2): 1300.
            assert_eq!(got, ["1970-01-01T00:00:00|2|1", "1970-01-01T00:00:01|1|2"], "{format}");
            assert_eq!(rejected, ["3|no event time: `ts` is missing or null"], "{format}");
        } else {
            assert_eq!(got, ["1970-01-01T00:00:00|1|1", "1970-01-01T00:00:01|1|2"], "{format}");
            let lines: Vec<&str> = rejected.iter().map(|r| r.split('|').next().unwrap()).collect();
            let (bad, missing) = if format == "csv" { ("3", "4") } else { ("2", "3") };
            assert_eq!(lines, [bad, missing], "{format}: {rejected:?}");
            assert!(rejected[0].contains("column `amount`: cannot read `x`"), "{rejected:?}");
            assert!(rejected[1].ends_with("no event time: `ts` is missing or null"), "{rejected:?}");
        }
    }
}

/// A log stream of CSV lines (`format = 'csv'`, declared column order); a malformed line is
/// rejected with its offset.
#[test]
fn csv_log_streams() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE STREAM s (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
               WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 's', format = 'csv', on_error = 'reject', poll_interval = '20ms');\n\
               CREATE MATERIALIZED VIEW v AS SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, sum(amount) AS total\n\
               FROM s GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);\n";
    write_files(dir.path(), &[("kiln.toml", &kiln_toml(&["s"])), ("s.sql", sql)]);
    let lines = "1970-01-01T00:00:00.100,1,5\n1970-01-01T00:00:00.200,1,seven\n1970-01-01T00:00:00.900,2,\n\
                 1970-01-01T00:00:01.500,1,1\n1970-01-01T00:00:02.000,1,1\n";
    let rt = rt();
    rt.block_on(async {
        kiln::produce(dir.path(), "s", None, None, std::io::Cursor::new(lines)).await.unwrap();
        run_until_idle(dir.path()).await;
        // [0, 1): 5 + NULL; [1, 2): 1; [2, 3) is open (watermark 2 s).
        let got = rows(dir.path(), "SELECT * FROM v ORDER BY w").await;
        assert_eq!(got, ["1970-01-01T00:00:00|5", "1970-01-01T00:00:01|1"]);
        let rejected = rows(dir.path(), "SELECT file, line, raw, reason FROM s__rejected").await;
        assert_eq!(
            rejected,
            ["log://s/0|1|1970-01-01T00:00:00.200,1,seven|column `amount`: cannot read `seven` as Int64"]
        );
    });
}

/// A view's late events and a stream's rejected records are its raw records: `kiln query`
/// reads `<view>__late` and `<stream>__rejected` only when `[query] sources` lists the
/// stream, and then not the columns the stream protects (`user_id`, which a view hashes),
/// in `__late` as columns and in `__rejected` inside `raw`.
#[test]
fn late_events_and_rejects_are_raw_input_to_kiln_query() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE STREAM s (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
               WATERMARK FOR ts AS ts) WITH (connector = 'log', topic = 's', format = 'csv', batch_records = '1', on_error = 'reject');\n\
               CREATE MATERIALIZED VIEW v WITH (late_events = 'table') AS SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, sum(amount) AS total\n\
               FROM s GROUP BY TUMBLE(ts, INTERVAL '1' SECOND);\n\
               CREATE MATERIALIZED VIEW users AS SELECT ts, kiln_pii_hash(CAST(user_id AS VARCHAR), key => 'k') AS u FROM s;\n";
    let secrets = "[secrets]\nk = { env = \"KILN_TEST_NEVER_SET\", fallback = \"dev\" }\n";
    write_files(dir.path(), &[("kiln.toml", &format!("{KILN_TOML}{secrets}")), ("s.sql", sql)]);
    // The third record is late (the watermark is at 2 s when it arrives), the fourth malformed.
    let lines = "1970-01-01T00:00:00.100,1,5\n1970-01-01T00:00:02.000,1,1\n1970-01-01T00:00:00.500,777,555\n\
                 1970-01-01T00:00:03.000,888,x\n";
    let (code, out) = crate::produce(dir.path(), &["s"], lines);
    assert_eq!(code, Some(0), "{out}");
    let (code, out, err) = kiln(&["stream", "--until-idle"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    let raw_input = "is raw input: `kiln query` reads the committed products";
    for sql in ["SELECT amount FROM v__late", "SELECT count(*) FROM v__late", "SELECT line FROM s__rejected"] {
        let (code, out, err) = kiln(&["query", sql], dir.path());
        assert_eq!(code, 1, "{sql}: {out}{err}");
        assert!(err.contains(raw_input), "{sql}: {err}");
        assert!(!out.contains("555") && !out.contains("888"), "{sql}: {out}");
    }
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT total FROM v ORDER BY w"], dir.path());
    assert_eq!((code, out.as_str()), (0, "total\n5\n"), "{err}");

    write_files(dir.path(), &[("kiln.toml", &format!("{}{secrets}", kiln_toml(&["s"])))]);
    for (sql, column, table) in [
        ("SELECT user_id FROM v__late", "user_id", "v__late"),
        ("SELECT * FROM v__late", "user_id", "v__late"),
        ("SELECT raw FROM s__rejected", "raw", "s__rejected"),
    ] {
        let (code, out, err) = kiln(&["query", sql], dir.path());
        assert_eq!(code, 1, "{sql}: {out}{err}");
        assert!(err.contains(&format!("column `{column}` of `{table}` is not readable by kiln query")), "{sql}: {err}");
        assert!(!out.contains("777") && !out.contains("888"), "{sql}: {out}");
    }
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT amount FROM v__late"], dir.path());
    assert_eq!((code, out.as_str()), (0, "amount\n555\n"), "{err}");
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT line FROM s__rejected"], dir.path());
    assert_eq!((code, out.as_str()), (0, "line\n3\n"), "{err}");
}

/// A run says where it started: first run, resumed from its checkpoint, or replaying the
/// stream because the view's definition changed; each run records its summary and one
/// event per checkpoint in the artifact store.
#[test]
fn runs_say_where_they_started_and_are_recorded() {
    let views = window_view("t", "TUMBLE(ts, INTERVAL '1' SECOND)");
    let dir = project(0, 10, "1h", &views);
    let rt = rt();
    let events: Vec<Ev> = (0..30).map(|k| (k * 100, 1, 1)).collect();
    rt.block_on(produce(dir.path(), &events));
    let first = rt.block_on(run_until_idle(dir.path()));
    assert_eq!(first.views[0].started, "first run: from the beginning of the stream");
    let second = rt.block_on(run_until_idle(dir.path()));
    assert!(second.views[0].started.starts_with("resumed from checkpoint "), "{}", second.views[0].started);
    assert_eq!(second.views[0].events, 30, "nothing read twice");
    // gc keeps what the checkpoint needs: the next run resumes with the open window's state.
    rt.block_on(kiln::gc(dir.path(), false, kiln::lock::Wait::Block, &kiln::Quiet)).unwrap();
    let more: Vec<Ev> = (30..40).map(|k| (k * 100, 1, 1)).collect();
    rt.block_on(produce(dir.path(), &more));
    let after_gc = rt.block_on(run_until_idle(dir.path()));
    assert!(after_gc.views[0].started.starts_with("resumed from checkpoint "));
    let got = rt.block_on(rows(dir.path(), "SELECT w, n FROM t ORDER BY w"));
    assert_eq!(got, ["1970-01-01T00:00:00|10", "1970-01-01T00:00:01|10", "1970-01-01T00:00:02|10"]);
    let changed = window_view("t", "TUMBLE(ts, INTERVAL '2' SECOND)");
    write_files(dir.path(), &[("views.sql", &changed)]);
    let third = rt.block_on(run_until_idle(dir.path()));
    assert_eq!(third.views[0].started, "definition changed (query): from the beginning of the stream, replacing");
    assert_eq!(third.views[0].events, 40);
    // [0, 2) is the only window closed at watermark 3.9 s; the 1 s windows are gone.
    let got = rt.block_on(rows(dir.path(), "SELECT w, n FROM t ORDER BY w"));
    assert_eq!(got, ["1970-01-01T00:00:00|20"]);
    let run_dir = dir.path().join(".kiln/runs").join(&first.run_id);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("stream_summary.json")).unwrap()).unwrap();
    assert_eq!(summary["views"][0]["events"], 30);
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    let checkpoints: Vec<serde_json::Value> = events.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(checkpoints.len() >= 3, "one per micro-batch here: {events}");
    assert_eq!(checkpoints.last().unwrap()["records"], 30);
}

/// An `http` stream (a paged feed served on 127.0.0.1) through a windowed view; records
/// appended to the feed later are read by the next run, once.
#[test]
fn http_streams_poll_a_feed() {
    use crate::http_source::{Feed, Paging};
    let record = |(ts, user, amount): Ev| line((ts, user, amount));
    let feed = Feed::new((0..25).map(|k| record((k * 100, k % 2, 1))).collect(), 10, Paging::LinkHeader);
    let url = feed.serve();
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE STREAM s (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
         WATERMARK FOR ts AS ts) WITH (connector = 'http', url = '{url}/feed', batch_records = '10');\n\
         CREATE MATERIALIZED VIEW v AS SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, user_id, count(*) AS n\n\
         FROM s GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), user_id;\n"
    );
    write_files(dir.path(), &[("kiln.toml", KILN_TOML), ("s.sql", &sql)]);
    let rt = rt();
    let first = rt.block_on(run_until_idle(dir.path()));
    assert_eq!(first.views[0].events, 25);
    // Watermark 2.4 s: [0, 1) and [1, 2) are out, 5 events per user each.
    let got = rt.block_on(rows(dir.path(), "SELECT * FROM v ORDER BY w, user_id"));
    assert_eq!(
        got,
        ["1970-01-01T00:00:00|0|5", "1970-01-01T00:00:00|1|5", "1970-01-01T00:00:01|0|5", "1970-01-01T00:00:01|1|5"]
    );
    feed.records.lock().unwrap().extend((25..40).map(|k| record((k * 100, k % 2, 1))));
    let second = rt.block_on(run_until_idle(dir.path()));
    assert_eq!(second.views[0].events, 40, "the last page is read again without its first records");
    let got =
        rt.block_on(rows(dir.path(), "SELECT * FROM v WHERE w = TIMESTAMP '1970-01-01 00:00:02' ORDER BY user_id"));
    assert_eq!(got, ["1970-01-01T00:00:02|0|5", "1970-01-01T00:00:02|1|5"]);
}

/// `kiln query` reads a stream as an unbounded table: LIMIT returns, a plain SELECT follows
/// the stream (waiting while nothing is new, then showing what arrives), an aggregate is
/// refused with a way forward.
#[test]
fn queries_follow_streams() {
    let views = window_view("t", "TUMBLE(ts, INTERVAL '1' SECOND)");
    let dir = project(0, 10, "1h", &views);
    let rt = rt();
    rt.block_on(produce(dir.path(), &[(100, 1, 5), (200, 2, 6), (300, 3, 7)]));
    let (code, out, err) =
        kiln(&["query", "SELECT user_id, amount FROM events LIMIT 2", "--format", "csv"], dir.path());
    assert_eq!((code, out.as_str()), (0, "user_id,amount\n1,5\n2,6\n"), "{err}");
    let (code, _, err) = kiln(&["query", "SELECT count(*) FROM events"], dir.path());
    assert_ne!(code, 0);
    assert!(err.contains("this query would never finish: it reads a stream"), "{err}");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["query", "SELECT user_id FROM events WHERE amount > 5", "--format", "csv"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufRead::lines(stdout).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!([next(), next(), next()], ["user_id", "2", "3"]);
    // Nothing new: the query waits; a record produced now shows up.
    assert!(lines.recv_timeout(Duration::from_millis(300)).is_err());
    rt.block_on(produce(dir.path(), &[(400, 4, 9), (500, 5, 1)]));
    assert_eq!(next(), "4");
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
}

/// Checkpoints cost what changed, not the history: over 1,000 checkpoints (one event per
/// micro-batch, a checkpoint after each), the Delta log commits of the last hundred are
/// no larger than those of the second hundred (each records the files it adds and the
/// open windows' state, both bounded here), and the view equals the reference.
#[test]
fn a_thousand_checkpoints_cost_the_same_bytes_each() {
    let views = window_view("t", "TUMBLE(ts, INTERVAL '1' SECOND)");
    let dir = project(0, 1, "1h", &views);
    let rt = rt();
    let events: Vec<Ev> = (0..1_000).map(|k| (k * 100, k % 3, 1)).collect();
    rt.block_on(produce(dir.path(), &events));
    // A checkpoint after every micro-batch (a zero interval), whatever the machine's speed:
    // with run_until_idle's 1 ms, two fast batches shared one on a loaded machine (999).
    let options = kiln::StreamOptions { until_idle: true, checkpoint_interval: Duration::ZERO, ..Default::default() };
    let report =
        rt.block_on(kiln::stream(dir.path(), &options, &kiln::Quiet, Arc::new(AtomicBool::new(false)))).unwrap();
    assert_eq!(report.views[0].events, 1_000);
    let log = dir.path().join("warehouse/t/_delta_log");
    let mut commits: Vec<(u64, u64)> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let version = name.strip_suffix(".json")?.parse().ok()?;
            Some((version, e.metadata().unwrap().len()))
        })
        .collect();
    commits.sort();
    assert!(commits.len() >= 1_000, "a commit per checkpoint: {}", commits.len());
    let mean = |part: &[(u64, u64)]| part.iter().map(|c| c.1).sum::<u64>() as f64 / part.len() as f64;
    let (early, late) = (mean(&commits[100..200]), mean(&commits[commits.len() - 100..]));
    eprintln!("{} commits: {early:.0} bytes each (commits 100-199), {late:.0} (the last 100)", commits.len());
    assert!(late <= early * 1.1, "bytes per commit grew from {early:.0} to {late:.0}");
    // Every window but the open last one, 10 events each, split over 3 users.
    let got = rt.block_on(rows(dir.path(), "SELECT count(*), sum(n) FROM t"));
    assert_eq!(got, ["297|990"]);
}
