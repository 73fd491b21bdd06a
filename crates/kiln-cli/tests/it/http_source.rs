//! HTTP sources against a real HTTP/1.1 server on 127.0.0.1 (in this process): pagination
//! by Link header, body link and cursor, a 503 retried, malformed records rejected,
//! incremental polls, and builds killed mid-ingest then restarted.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{current_manifest, kiln, manifest_files, read_rows, write_files};

/// How the feed links its pages.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Paging {
    /// `Link: </feed?page=N>; rel="next"`, body a JSON array.
    LinkHeader,
    /// `{"data": [...], "next": "/feed?page=N"}`.
    BodyNext,
    /// `{"data": [...], "next_cursor": "cN"}`, requested as `?cursor=cN`.
    Cursor,
}

/// A child process the server may kill.
type Victim = Arc<Mutex<Option<Child>>>;

/// An append-only feed of JSON records served in pages of `page_size`.
pub(crate) struct Feed {
    pub(crate) records: Mutex<Vec<String>>,
    page_size: usize,
    paging: Paging,
    /// Requests served so far (every attempt counts).
    requests: AtomicU64,
    /// Request numbers (1-based) answered with 503.
    unavailable: Mutex<Vec<u64>>,
    /// On this request number, kill `child` before answering.
    kill_at: Mutex<Option<(u64, Victim)>>,
}

impl Feed {
    pub(crate) fn new(records: Vec<String>, page_size: usize, paging: Paging) -> Arc<Self> {
        Arc::new(Feed {
            records: Mutex::new(records),
            page_size,
            paging,
            requests: AtomicU64::new(0),
            unavailable: Mutex::new(Vec::new()),
            kill_at: Mutex::new(None),
        })
    }

    /// Serves the feed on 127.0.0.1; returns its base URL.
    pub(crate) fn serve(self: &Arc<Self>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let feed = Arc::clone(self);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let response = feed.answer(&target);
                let _ = stream.write_all(response.as_bytes());
            }
        });
        url
    }

    fn answer(&self, target: &str) -> String {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, child)) = self.kill_at.lock().unwrap().as_ref()
            && *at == n
            && let Some(child) = child.lock().unwrap().as_mut()
        {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        if self.unavailable.lock().unwrap().contains(&n) {
            return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy".into();
        }
        let param = |name: &str| {
            target
                .split_once('?')
                .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned)))
        };
        let page: usize = match self.paging {
            Paging::Cursor => param("cursor").map_or(0, |c| c.trim_start_matches('c').parse().unwrap()),
            _ => param("page").map_or(0, |p| p.parse().unwrap()),
        };
        let records = self.records.lock().unwrap();
        let start = (page * self.page_size).min(records.len());
        let end = (start + self.page_size).min(records.len());
        let items = records[start..end].join(",");
        // A full page links to the next one (which may be empty, for now).
        let has_next = end - start == self.page_size;
        let next = page + 1;
        let (body, link) = match self.paging {
            Paging::LinkHeader => {
                (format!("[{items}]"), has_next.then(|| format!("</feed?page={next}>; rel=\"next\"")))
            }
            Paging::BodyNext => {
                let next = if has_next { format!("\"/feed?page={next}\"") } else { "null".into() };
                (format!("{{\"data\": [{items}], \"next\": {next}}}"), None)
            }
            Paging::Cursor => {
                let next = if has_next { format!("\"c{next}\"") } else { "null".into() };
                (format!("{{\"data\": [{items}], \"next_cursor\": {next}}}"), None)
            }
        };
        let link = link.map(|l| format!("Link: {l}\r\n")).unwrap_or_default();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

fn records(ids: std::ops::Range<i64>) -> Vec<String> {
    ids.map(|i| format!(r#"{{"id": {i}, "user": "u{}", "amount": {}.5}}"#, i % 3, i)).collect()
}

fn project(url: &str, options: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE SOURCE events (id BIGINT NOT NULL, user VARCHAR, amount DOUBLE)\n  \
         WITH (connector = 'http', url = '{url}/feed', retry_backoff = '10ms'{options});\n\
         CREATE PRODUCT raw_events AS SELECT id, upper(user) AS user, amount FROM events WHERE amount > 1;\n\
         CREATE PRODUCT per_user AS SELECT user, count(*) AS n, sum(amount) AS total FROM raw_events GROUP BY user;\n"
    );
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"feed\"\n"), ("models.sql", &sql)]);
    tmp
}

fn ids(dir: &Path) -> Vec<i64> {
    let manifest = current_manifest(dir, "raw_events");
    read_rows(manifest_files(dir, &manifest), &["id"], "id")
        .iter()
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').parse().unwrap())
        .collect()
}

#[test]
fn pages_retries_rejects_and_incremental_polls() {
    let mut feed_records = records(0..25);
    feed_records[6] = r#"{"id": "seven", "user": "u1", "amount": 7.5}"#.into();
    feed_records[11] = r#"{"user": "u2", "amount": 11.5}"#.into();
    let feed = Feed::new(feed_records, 4, Paging::LinkHeader);
    feed.unavailable.lock().unwrap().push(2); // the first attempt at page 1
    let url = feed.serve();
    let tmp = project(&url, ", on_error = 'reject', batch_records = '8'");
    let dir = tmp.path();

    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    // 25 records; two rejected; id 0 (amount 0.5) filtered out by the query.
    let expected: Vec<i64> = (1..25).filter(|i| *i != 6 && *i != 11).collect();
    assert_eq!(ids(dir), expected);
    // 7 pages (the last has one record) + the retried one.
    assert_eq!(feed.requests.load(Ordering::SeqCst), 8);
    let manifest = current_manifest(dir, "raw_events");
    let position = &manifest["positions"]["events"];
    assert_eq!(position["url"], format!("{url}/feed?page=6"));
    assert_eq!(position["skip"], 1);
    assert_eq!(position["records"], 25);
    // Batches end at page boundaries once they hold 8 records: pages 0-1, 2-3, 4-5, 6.
    assert_eq!(position["batches"], 4);
    assert_eq!(manifest["totals"]["rows_rejected"], 2);
    assert_eq!(manifest["totals"]["rows_written"], 22);
    let rejected = current_manifest(dir, "raw_events__rejected");
    let reasons = read_rows(manifest_files(dir, &rejected), &["file", "line", "reason"], "line");
    assert_eq!(
        reasons,
        vec![
            format!("| {url}/feed?page=1 | 3 | column `id`: cannot read `seven` as Int64 |"),
            format!("| {url}/feed?page=2 | 4 | column `id` is NOT NULL but the field is empty |"),
        ]
    );
    // Downstream of the feed (amount = id + 0.5, user = id % 3): U0 has ids 3, 9, 12, 15,
    // 18, 21, 24; U1 1, 4, 7, 10, 13, 16, 19, 22; U2 2, 5, 8, 14, 17, 20, 23.
    let per_user = current_manifest(dir, "per_user");
    let rows = read_rows(manifest_files(dir, &per_user), &["user", "n", "total"], "user");
    assert_eq!(rows, vec!["| U0 | 7 | 105.5 |", "| U1 | 8 | 96.0 |", "| U2 | 7 | 92.5 |"]);

    // Nothing new: the feed's last page is read again, nothing is committed.
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(current_manifest(dir, "raw_events")["build_id"], manifest["build_id"]);
    assert_eq!(feed.requests.load(Ordering::SeqCst), 9);

    // New records: the last page fills up and a new one starts; only they are appended.
    feed.records.lock().unwrap().extend(records(25..31));
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    let expected: Vec<i64> = (1..31).filter(|i| *i != 6 && *i != 11).collect();
    assert_eq!(ids(dir), expected);
    let manifest = current_manifest(dir, "raw_events");
    assert_eq!(manifest["positions"]["events"]["records"], 31);
    assert_eq!(manifest["totals"]["rows_rejected"], 2);
    let rows = read_rows(manifest_files(dir, &current_manifest(dir, "per_user")), &["user", "n", "total"], "user");
    assert_eq!(rows, vec!["| U0 | 9 | 163.5 |", "| U1 | 10 | 150.0 |", "| U2 | 9 | 148.5 |"]);

    // A changed query starts again from the first page and replaces the data.
    let sql = std::fs::read_to_string(dir.join("models.sql")).unwrap().replace("amount > 1", "amount > 20");
    std::fs::write(dir.join("models.sql"), sql).unwrap();
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (20..31).collect::<Vec<_>>());
    assert!(out.contains("query changed"), "{out}");
}

#[test]
fn body_links_and_cursors() {
    for (paging, options) in [(Paging::BodyNext, ""), (Paging::Cursor, ", pagination = 'cursor'")] {
        let feed = Feed::new(records(0..10), 3, paging);
        let url = feed.serve();
        let tmp = project(&url, options);
        let (code, out, err) = kiln(&["build", "."], tmp.path());
        assert_eq!(code, 0, "{out}\n{err}");
        assert_eq!(ids(tmp.path()), (1..10).collect::<Vec<_>>());
        // Pages 0..3; the last holds one record.
        assert_eq!(feed.requests.load(Ordering::SeqCst), 4);
    }
}

#[test]
fn malformed_record_fails_the_run_with_its_place() {
    let mut feed_records = records(0..5);
    feed_records[3] = r#"{"id": 3, "amount": "lots"}"#.into();
    let feed = Feed::new(feed_records, 2, Paging::LinkHeader);
    let url = feed.serve();
    let tmp = project(&url, "");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "source `events`: {url}/feed?page=1 record 2: column `amount`: cannot read `lots` as Float64"
        )),
        "{err}"
    );
}

#[test]
fn server_errors_fail_after_retries() {
    let feed = Feed::new(records(0..3), 2, Paging::LinkHeader);
    feed.unavailable.lock().unwrap().extend(1..=3);
    let url = feed.serve();
    let tmp = project(&url, ", max_retries = '2'");
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert!(err.contains(&format!("GET {url}/feed: HTTP 503 (gave up after 3 attempts)")), "{err}");
    assert_eq!(feed.requests.load(Ordering::SeqCst), 3);
    assert!(crate::committed(tmp.path(), "raw_events").is_none());
}

/// A build killed (SIGKILL) while it ingests, at several points, then run again: the
/// product holds every record exactly once.
#[test]
fn killed_mid_ingest_then_restarted_loses_and_duplicates_nothing() {
    for kill_at in [1, 2, 4, 7] {
        let feed = Feed::new(records(0..40), 5, Paging::LinkHeader);
        let url = feed.serve();
        let tmp = project(&url, ", batch_records = '5'");
        let dir = tmp.path();
        let child: Victim = Arc::new(Mutex::new(None));
        *feed.kill_at.lock().unwrap() = Some((kill_at, Arc::clone(&child)));
        let spawned = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "."])
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        *child.lock().unwrap() = Some(spawned);
        // Wait for the kill (the server kills it while answering request `kill_at`).
        let status = loop {
            if let Some(status) = child.lock().unwrap().as_mut().unwrap().try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(!status.success(), "kill at request {kill_at}: the build was not killed");
        // Batches committed before the kill stay committed: one per request answered.
        let committed = if kill_at > 1 { ids(dir).len() } else { 0 };
        assert_eq!(committed, 5 * (kill_at as usize - 1) - usize::from(kill_at > 1), "kill at {kill_at}");

        *feed.kill_at.lock().unwrap() = None;
        let (code, out, err) = kiln(&["build", "."], dir);
        assert_eq!(code, 0, "kill at {kill_at}: {out}\n{err}");
        assert_eq!(ids(dir), (1..40).collect::<Vec<_>>(), "kill at {kill_at}");
    }
}

/// Killed between a batch's data and its commit (and between the rejected dataset's
/// commit and the product's): the batch is read again and committed once.
#[test]
fn killed_around_a_batch_commit() {
    for point in ["after_file", "before_commit", "after_commit", "after_batch"] {
        let mut feed_records = records(0..12);
        feed_records[2] = r#"{"id": 2, "amount": "x"}"#.into();
        let feed = Feed::new(feed_records, 4, Paging::LinkHeader);
        let url = feed.serve();
        let tmp = project(&url, ", batch_records = '4', on_error = 'reject'");
        let dir = tmp.path();
        let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "."])
            .current_dir(dir)
            .env("KILN_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: not killed");
        let (code, out, err) = kiln(&["build", "."], dir);
        assert_eq!(code, 0, "{point}: {out}\n{err}");
        assert_eq!(ids(dir), [1, 3, 4, 5, 6, 7, 8, 9, 10, 11], "{point}");
        let rejected = current_manifest(dir, "raw_events__rejected");
        assert_eq!(rejected["totals"]["rows_written"], 1, "{point}");
        assert_eq!(current_manifest(dir, "raw_events")["totals"]["rows_rejected"], 1, "{point}");
    }
}
