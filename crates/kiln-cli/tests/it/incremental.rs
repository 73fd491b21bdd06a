//! Incremental products by time interval, end to end: after random sequences of arriving
//! files, late corrections, removed files and restatements, each product's content equals
//! a reference computed here from the CSV files, and the intervals each build executed are
//! exactly the minimal set computed here from the files that changed; a backfill killed
//! between its batches keeps its committed batches and the rerun computes only the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use proptest::prelude::*;

use super::{kiln, kiln_env, write_files};

/// 2026-01-01 as days since 1970-01-01.
const START: i32 = 20_454;

const MODELS: &str = "\
CREATE SOURCE events (event_day DATE, amount BIGINT, kind VARCHAR)
WITH (path = 'data/events', format = 'csv');

CREATE PRODUCT daily PARTITIONED BY (day)
WITH (incremental = 'by_time', time_column = 'day', grain = 'day', start = '2026-01-01',
      lookback = '1', batch_size = '5')
AS SELECT event_day AS day, kind, sum(amount) AS total, count(*) AS n FROM events GROUP BY 1, 2;

CREATE PRODUCT weekly PARTITIONED BY (week)
WITH (incremental = 'by_time', time_column = 'week', grain = 'week', start = '2025-12-29')
AS SELECT CAST(date_trunc('week', day) AS DATE) AS week, sum(total) AS total, sum(n) AS n
   FROM daily GROUP BY 1;
";

/// One file's rows: (day offset from START, kind, amount).
type Rows = Vec<(i32, char, i64)>;

fn day(offset: i32) -> String {
    ::kiln::artifact::intervals::format_day(START + offset)
}

fn csv(rows: &Rows) -> String {
    let mut text = "event_day,amount,kind\n".to_owned();
    for (d, k, a) in rows {
        text.push_str(&format!("{},{a},{k}\n", day(*d)));
    }
    text
}

/// The days a file covers as the build sees it: every day from its first to its last.
fn span(rows: &Rows) -> BTreeSet<i32> {
    match (rows.iter().map(|r| r.0).min(), rows.iter().map(|r| r.0).max()) {
        (Some(a), Some(b)) => (a..=b).collect(),
        _ => BTreeSet::new(),
    }
}

/// `daily` and `weekly` computed here, as `kiln query --format csv` prints them.
fn reference(files: &BTreeMap<String, Rows>) -> (String, String) {
    let mut daily: BTreeMap<(i32, char), (i64, i64)> = BTreeMap::new();
    for (d, k, a) in files.values().flatten() {
        let e = daily.entry((*d, *k)).or_default();
        e.0 += a;
        e.1 += 1;
    }
    let mut weekly: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for ((d, _), (t, n)) in &daily {
        // 2026-01-01 is a Thursday: its week starts 3 days earlier.
        let monday = (d + 3).div_euclid(7) * 7 - 3;
        let e = weekly.entry(monday).or_default();
        e.0 += t;
        e.1 += n;
    }
    let mut d = "day,kind,total,n\n".to_owned();
    for ((day_, k), (t, n)) in &daily {
        d.push_str(&format!("{},{k},{t},{n}\n", day(*day_)));
    }
    let mut w = "week,total,n\n".to_owned();
    for (monday, (t, n)) in &weekly {
        w.push_str(&format!("{},{t},{n}\n", day(*monday)));
    }
    (d, w)
}

fn query(dir: &Path, sql: &str) -> String {
    let (code, out, err) = kiln(&["query", "--format", "csv", sql], dir);
    assert_eq!(code, 0, "{err}");
    out
}

/// Runs `kiln build ARGS --json`: the days each incremental product computed.
fn build(dir: &Path, args: &[&str]) -> BTreeMap<String, BTreeSet<i32>> {
    let mut all = vec!["build", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = kiln(&all, dir);
    assert_eq!(code, 0, "kiln {all:?}: {out}{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut computed = BTreeMap::new();
    for p in summary["products"].as_array().unwrap() {
        let mut days = BTreeSet::new();
        for run in p["intervals"]["compute"].as_array().into_iter().flatten() {
            let parse = |k: &str| ::kiln::artifact::intervals::parse_day(run[k].as_str().unwrap()).unwrap() - START;
            days.extend(parse("start")..parse("end"));
        }
        computed.insert(p["product"].as_str().unwrap().to_owned(), days);
    }
    computed
}

/// The weeks (as day offsets of their Mondays) holding `days`.
fn weeks(days: impl IntoIterator<Item = i32>) -> BTreeSet<i32> {
    days.into_iter().map(|d| (d + 3).div_euclid(7) * 7 - 3).collect()
}

/// A step of a random history.
#[derive(Debug, Clone)]
enum Step {
    /// A new file arrives.
    Add(Rows),
    /// File `k % files` is rewritten (a late correction).
    Rewrite(usize, Rows),
    Remove(usize),
    /// `--restate --start --end` over these day offsets.
    Restate(i32, i32),
}

fn rows() -> impl Strategy<Value = Rows> {
    proptest::collection::vec((0..40i32, prop_oneof![Just('a'), Just('b')], 1..100i64), 1..6)
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => rows().prop_map(Step::Add),
        2 => (0..8usize, rows()).prop_map(|(k, r)| Step::Rewrite(k, r)),
        1 => (0..8usize).prop_map(Step::Remove),
        1 => (0..40i32, 0..10i32).prop_map(|(a, n)| Step::Restate(a, a + n)),
    ]
}

/// What the test expects a build after a step to compute: for `daily`, the days of
/// every changed file (before and after), the days past the end it had, and the last day
/// (lookback 1); `weekly`, the weeks of the days `daily` rewrote that hold rows before or
/// after, and the weeks past its end.
struct Model {
    files: BTreeMap<String, Rows>,
    daily_end: i32,
    weekly_end: i32,
    next: usize,
}

impl Model {
    fn end(&self) -> i32 {
        self.files.values().flatten().map(|r| r.0 + 1).max().unwrap_or(0)
    }

    fn days_with_rows(&self) -> BTreeSet<i32> {
        self.files.values().flatten().map(|r| r.0).collect()
    }
}

fn run_history(first: Rows, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("kiln.toml", "[project]\nname = \"inc\"\n"), ("models.sql", MODELS)]);
    let mut model = Model { files: BTreeMap::new(), daily_end: 0, weekly_end: -3, next: 0 };
    let mut history = vec![Step::Add(first)];
    history.extend(steps);
    for step in history {
        let before_rows = model.days_with_rows();
        let mut changed: BTreeSet<i32> = BTreeSet::new();
        let mut restate = None;
        let names: Vec<String> = model.files.keys().cloned().collect();
        match step {
            Step::Add(rows) => {
                let name = format!("f{:03}.csv", model.next);
                model.next += 1;
                changed.extend(span(&rows));
                write_files(dir, &[(&format!("data/events/{name}"), &csv(&rows))]);
                model.files.insert(name, rows);
            }
            Step::Rewrite(k, rows) if !names.is_empty() => {
                let name = &names[k % names.len()];
                changed.extend(span(&model.files[name]));
                changed.extend(span(&rows));
                write_files(dir, &[(&format!("data/events/{name}"), &csv(&rows))]);
                model.files.insert(name.clone(), rows);
            }
            Step::Remove(k) if names.len() > 1 => {
                let name = &names[k % names.len()];
                changed.extend(span(&model.files[name]));
                std::fs::remove_file(dir.join("data/events").join(name)).unwrap();
                model.files.remove(name);
            }
            Step::Restate(a, b) => restate = Some((a, b)),
            _ => continue,
        }
        let end = model.end().max(model.daily_end);
        let computed = match restate {
            Some((a, b)) => build(dir, &["--restate", "--start", &day(a), "--end", &day(b)]),
            None => build(dir, &[]),
        };
        let expected_daily: BTreeSet<i32> = match restate {
            Some((a, b)) => (a.max(0)..=b.min(end - 1)).collect(),
            None => {
                let mut e: BTreeSet<i32> = changed.iter().copied().filter(|d| *d < end).collect();
                e.extend(model.daily_end..end);
                if !e.is_empty() {
                    e.insert(end - 1);
                }
                e
            }
        };
        let got_daily = computed.get("daily").cloned().unwrap_or_default();
        prop_assert_eq!(&got_daily, &expected_daily, "daily's intervals");
        model.daily_end = end;
        // weekly reads daily's files: the days daily rewrote that hold rows now or held
        // them before changed files.
        let after_rows = model.days_with_rows();
        let touched = got_daily.iter().copied().filter(|d| before_rows.contains(d) || after_rows.contains(d));
        let weekly_end = weeks([model.end() - 1]).into_iter().next().unwrap_or(-3) + 7;
        let mut expected_weekly = weeks(touched);
        expected_weekly.extend((model.weekly_end..weekly_end).step_by(7));
        let got_weekly = weeks(computed.get("weekly").cloned().unwrap_or_default());
        if restate.is_none() {
            prop_assert_eq!(&got_weekly, &expected_weekly, "weekly's intervals");
        }
        model.weekly_end = model.weekly_end.max(weekly_end);
        let (daily, weekly) = reference(&model.files);
        prop_assert_eq!(query(dir, "SELECT * FROM daily ORDER BY day, kind"), daily);
        prop_assert_eq!(query(dir, "SELECT * FROM weekly ORDER BY week"), weekly);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn incremental_products_equal_a_full_rebuild_and_compute_only_what_changed(
        first in rows(),
        steps in proptest::collection::vec(step(), 1..6),
    ) {
        run_history(first, steps)?;
    }
}

#[test]
fn a_killed_backfill_keeps_its_batches_and_the_rerun_computes_only_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(dir, &[("kiln.toml", "[project]\nname = \"inc\"\n"), ("models.sql", MODELS)]);
    let rows: Rows = (0..23).map(|d| (d, if d % 2 == 0 { 'a' } else { 'b' }, i64::from(d) + 1)).collect();
    write_files(dir, &[("data/events/all.csv", &csv(&rows))]);
    // 23 days in batches of 5: killed as the third batch commits.
    let (code, _, err) = kiln_env(&["build", "--select", "daily"], dir, &[("KILN_FAILPOINT", "interval_commit#3")]);
    assert_ne!(code, 0, "the failpoint aborts the build: {err}");
    let committed = query(dir, "SELECT min(day) AS first, max(day) AS last, count(*) AS n FROM daily");
    assert_eq!(committed, format!("first,last,n\n{},{},10\n", day(0), day(9)), "two whole batches");
    let (code, plan, _) = kiln(&["plan", "--select", "daily"], dir);
    assert_eq!(code, 0);
    assert!(plan.contains("13 intervals not computed yet"), "{plan}");
    assert!(plan.contains(&format!("{} .. {} (13 days): pending", day(10), day(22))), "{plan}");
    let computed = build(dir, &["--select", "daily"]);
    assert_eq!(computed["daily"], (10..23).collect::<BTreeSet<i32>>(), "only the rest");
    let mut files = BTreeMap::new();
    files.insert("all.csv".to_owned(), rows);
    assert_eq!(query(dir, "SELECT * FROM daily ORDER BY day, kind"), reference(&files).0);
    let (code, out, _) = kiln(&["build", "--select", "daily"], dir);
    assert_eq!(code, 0);
    assert!(out.contains("0 built, 1 fresh"), "{out}");
}

#[test]
fn interval_options_are_checked_where_they_are_written() {
    let cases = [
        ("time_column = 'kind', start = '2026-01-01'", "models.sql:4:", "must be a partition column"),
        ("time_column = 'day', grain = 'hour', start = '2026-01-01'", "models.sql:4:", "finest grain is 'day'"),
        ("time_column = 'day', grain = 'month', start = '2026-01-15'", "models.sql:4:", "not the first day of a month"),
        ("time_column = 'day'", "models.sql:4:", "needs start = 'YYYY-MM-DD'"),
        ("time_column = 'day', start = '2026-01-01', batch_size = '0'", "models.sql:4:", "must be positive"),
        ("time_column = 'day', start = '2026-13-01'", "models.sql:4:", "is not a date"),
    ];
    for (options, at, message) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let models = format!(
            "CREATE SOURCE events (event_day DATE, amount BIGINT, kind VARCHAR) WITH (path = 'data/events', format = 'csv');\n\n\
             CREATE PRODUCT daily PARTITIONED BY (day)\nWITH (incremental = 'by_time', {options})\n\
             AS SELECT event_day AS day, kind, sum(amount) AS total FROM events GROUP BY 1, 2;\n"
        );
        write_files(
            tmp.path(),
            &[
                ("kiln.toml", "[project]\nname = \"inc\"\n"),
                ("models.sql", &models),
                ("data/events/a.csv", "event_day,amount,kind\n2026-01-01,1,a\n"),
            ],
        );
        let (code, out, err) = kiln(&["build"], tmp.path());
        assert_eq!(code, 1, "{options}: {out}{err}");
        let text = format!("{out}{err}");
        assert!(text.contains(at) && text.contains(message), "{options}: expected `{at}` and `{message}` in {text}");
    }
    // A time column that is not a DATE, and --start after --end.
    let tmp = tempfile::tempdir().unwrap();
    write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"inc\"\n"),
            ("models.sql", MODELS),
            ("data/events/a.csv", "event_day,amount,kind\n2026-01-01,1,a\n"),
        ],
    );
    let (code, _, err) = kiln(&["build", "--start", "2026-02-01", "--end", "2026-01-01"], tmp.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--start 2026-02-01 is after --end 2026-01-01"), "{err}");
}

#[test]
fn a_query_change_recomputes_every_interval_or_with_forward_only_the_new_ones() {
    for (on_change, expected) in [
        ("rebuild", "day,total\n2026-01-01,20\n2026-01-02,10\n2026-01-03,2\n"),
        ("forward_only", "day,total\n2026-01-01,10\n2026-01-02,5\n2026-01-03,2\n"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let models = format!(
            "CREATE SOURCE events (event_day DATE, amount BIGINT, kind VARCHAR) WITH (path = 'data/events', format = 'csv');\n\
             CREATE PRODUCT daily PARTITIONED BY (day)\n\
             WITH (incremental = 'by_time', time_column = 'day', start = '2026-01-01', on_change = '{on_change}')\n\
             AS SELECT event_day AS day, sum(amount) AS total FROM events GROUP BY 1;\n"
        );
        write_files(
            dir,
            &[
                ("kiln.toml", "[project]\nname = \"inc\"\n"),
                ("models.sql", &models),
                ("data/events/a.csv", "event_day,amount,kind\n2026-01-01,10,a\n2026-01-02,5,b\n"),
            ],
        );
        build(dir, &[]);
        let changed = models.replace("sum(amount) AS total", "sum(amount) * 2 AS total");
        write_files(dir, &[("models.sql", &changed), ("data/events/b.csv", "event_day,amount,kind\n2026-01-03,1,a\n")]);
        let computed = build(dir, &[]);
        let all: BTreeSet<i32> = (0..3).collect();
        let new: BTreeSet<i32> = [2].into();
        assert_eq!(computed["daily"], if on_change == "rebuild" { all } else { new }, "{on_change}");
        assert_eq!(query(dir, "SELECT * FROM daily ORDER BY day"), expected, "{on_change}");
        let manifest = super::current_manifest(dir, "daily");
        let forward = &manifest["intervals"]["forward_only"];
        assert_eq!(forward.as_array().map_or(0, Vec::len), usize::from(on_change == "forward_only"), "{manifest}");
        // A schema change (a new column) rebuilds every interval under either policy.
        let widened = changed.replace("AS total FROM", "AS total, count(*) AS n FROM");
        write_files(dir, &[("models.sql", &widened)]);
        assert_eq!(build(dir, &[])["daily"], (0..3).collect::<BTreeSet<i32>>(), "{on_change}");
    }
}

#[test]
fn a_unit_test_of_an_incremental_product_computes_every_interval_from_its_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let models = "\
CREATE SOURCE events (event_day DATE, amount BIGINT) WITH (path = 'data/events', format = 'csv');
CREATE PRODUCT running PARTITIONED BY (day)
WITH (incremental = 'by_time', time_column = 'day', grain = 'day', start = '2026-01-01')
AS SELECT event_day AS day, amount, sum(amount) OVER (PARTITION BY event_day ORDER BY amount) AS running
   FROM events WHERE event_day >= kiln_interval_start() AND event_day < kiln_interval_end();
CREATE TEST running_days FOR running
GIVEN (events AS (VALUES ('2025-12-31', 5), ('2026-01-01', 1), ('2026-01-01', 2), ('2026-01-02', 4)))
EXPECT (VALUES ('2026-01-01', 1, 1), ('2026-01-01', 2, 3), ('2026-01-02', 4, 4));
";
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"inc\"\n"),
            ("models.sql", models),
            ("data/events/a.csv", "event_day,amount\n2026-01-01,1\n"),
        ],
    );
    let (code, out, err) = kiln(&["test", "--json"], dir);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["tests"][0]["status"], "pass", "{report}");
}
