//! One writer at a time (kiln::lock): while `kiln stream` runs, `kiln build --no-wait`
//! fails naming the holder, readers go on, `kiln gc` waits and runs once the holder is
//! gone (here killed with SIGKILL: the OS releases the lock with the process).

use std::time::{Duration, Instant};

use crate::{kiln, write_files};

#[test]
fn a_second_writer_waits_or_fails_and_readers_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_files(
        dir,
        &[
            ("kiln.toml", "[project]\nname = \"lock\"\n"),
            (
                "m.sql",
                "CREATE STREAM events (n BIGINT NOT NULL) WITH (connector = 'log', topic = 'events');
                 CREATE MATERIALIZED VIEW seen AS SELECT n FROM events;
                 CREATE PRODUCT p AS SELECT 1 AS one;\n",
            ),
        ],
    );
    let (code, _, err) = kiln(&["build"], dir);
    assert_eq!(code, 0, "{err}");
    assert_eq!(crate::produce(dir, &["events"], "{\"n\": 1}\n").0, Some(0));
    let lock = dir.join("warehouse/_kiln_writer.lock");
    let mut stream = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["stream", "--checkpoint-interval", "0s"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.contains("kiln stream")) {
        assert!(t.elapsed() < Duration::from_secs(60), "the stream never took the lock");
        assert!(stream.try_wait().unwrap().is_none(), "the stream ended");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, out, err) = kiln(&["build", "--no-wait"], dir);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("another kiln writer holds") && err.contains("kiln stream"), "{err}");
    let (code, _, err) = kiln(&["promote", "dev", "--no-wait"], dir);
    assert_eq!(code, 1, "{err}");
    // Readers take no lock.
    let (code, out, err) = kiln(&["query", "--format", "csv", "SELECT one FROM p"], dir);
    assert_eq!((code, out.as_str()), (0, "one\n1\n"), "{err}");

    let gc = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["gc"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut gc = gc;
    assert!(gc.try_wait().unwrap().is_none(), "gc waits while the stream writes");
    stream.kill().unwrap(); // SIGKILL
    stream.wait().unwrap();
    let out = gc.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("waiting for another kiln writer to finish (pid"), "{err}");
    let (code, _, err) = kiln(&["build", "--no-wait"], dir);
    assert_eq!(code, 0, "the lock went with its process: {err}");
}
