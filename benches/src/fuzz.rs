//! `kiln-bench fuzz`: mutation fuzzing of everything Kiln parses, in-process, counting
//! panics, aborts (a stack overflow, an out-of-memory kill) and inputs slower than 5 s.
//!
//! The machine has one stable toolchain and no libFuzzer (cargo-fuzz needs nightly), so
//! this is our own harness and it is not coverage-guided: each input is a committed corpus
//! entry (`benches/fuzz/corpus/<target>/`, every entry run once unchanged first) changed by
//! a few byte-level and dictionary mutations (flips, deletions, SQL/CSV/JSON tokens,
//! splices of two entries, a range repeated up to thousands of times for deep nesting and
//! long chains). Input `i` of a run depends only on the seed, `i` and the corpus, so any
//! finding replays with `--replay FILE`.
//!
//! A supervisor process runs each target in a worker process (this binary again, with
//! the kiln binary's 512 MiB planning stack): the worker writes each input to
//! `<work>/<target>/current` before running it, so when the worker dies (an abort) or its
//! watchdog ends it (an input over the time limit), the supervisor keeps that input under
//! `<work>/findings/` and starts a new worker at the next input. Panics are counted by a
//! panic hook, also those a Kiln boundary catches (`catch_unwind` per product is the last
//! resort, not a pass).
//!
//! Targets: `sql` (the dialect: `parse_file`), `plan` (a project file compiled by `kiln
//! plan`: DDL, product options, the TUMBLE/HOP rewrite, UNNEST, variables), `query` (the
//! untrusted surface planning `kiln query`), `config` (kiln.toml: profiles, settings,
//! `[query]`, secrets), `csv`, `ndjson`, `parquet` (a source file built by `kiln build`,
//! through a source that rejects bad records and one that fails on them).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// The fuzz targets, in the order `fuzz` runs them.
pub const TARGETS: [&str; 7] = ["sql", "plan", "query", "config", "csv", "ndjson", "parquet"];

/// The largest input a mutation produces.
const MAX_INPUT: usize = 64 << 10;

/// The same stack as the kiln binary's planning threads (kiln-cli `STACK_BYTES`): an input
/// that overflows it here would abort `kiln` too.
const STACK_BYTES: usize = 512 << 20;

/// Exit code of a worker whose watchdog saw an input run past the time limit.
const SLOW_EXIT: i32 = 87;

/// What `fuzz` found for one target.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    panics: Vec<String>,
    aborts: u64,
    slow: u64,
    micros: Vec<u64>,
    findings: Vec<PathBuf>,
}

/// `kiln-bench fuzz`: `runs` inputs of each of `targets` (all when empty), `seed` for the
/// mutations, `limit` the time an input may take; findings under `work`, the summary
/// in `<out>/fuzz.json`. Fails when any target has a panic, an abort or a slow input.
pub fn supervise(targets: &[String], runs: u64, seed: u64, limit: Duration, work: &Path, out: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let chosen: Vec<&str> =
        if targets.is_empty() { TARGETS.to_vec() } else { targets.iter().map(String::as_str).collect() };
    if let Some(t) = chosen.iter().find(|t| !TARGETS.contains(t)) {
        bail!("unknown fuzz target `{t}` (targets: {})", TARGETS.join(", "));
    }
    std::fs::create_dir_all(work.join("findings"))?;
    std::fs::create_dir_all(out)?;
    let mut summary = serde_json::Map::new();
    let mut bad = 0;
    println!("| target | inputs | panics | aborts | over {:.0} s | p50 ms | p99 ms | max ms |", limit.as_secs_f64());
    println!("|---|---|---|---|---|---|---|---|");
    for target in chosen {
        let started = Instant::now();
        let tally = supervise_one(&exe, target, runs, seed, limit, work)?;
        let mut sorted = tally.micros.clone();
        sorted.sort_unstable();
        let pct =
            |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).map_or(0.0, |&u| u as f64 / 1e3);
        println!(
            "| {target} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            tally.runs,
            tally.panics.len(),
            tally.aborts,
            tally.slow,
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        for p in &tally.panics {
            println!("    panic: {p}");
        }
        for f in &tally.findings {
            println!("    kept: {}", f.display());
        }
        bad += tally.panics.len() as u64 + tally.aborts + tally.slow;
        summary.insert(
            target.to_owned(),
            json!({
                "inputs": tally.runs, "panics": tally.panics, "aborts": tally.aborts, "slow": tally.slow,
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "seconds": started.elapsed().as_secs_f64(),
                "findings": tally.findings.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            }),
        );
    }
    let result = json!({ "seed": seed, "limit_s": limit.as_secs_f64(), "targets": Value::Object(summary) });
    std::fs::write(out.join("fuzz.json"), serde_json::to_string_pretty(&result)?)?;
    if bad > 0 {
        bail!("fuzzing found {bad} failing inputs (kept under {})", work.join("findings").display());
    }
    Ok(())
}

/// Runs workers for `target` until `runs` inputs are done, a new worker after each one
/// that died or was stopped by its watchdog.
fn supervise_one(exe: &Path, target: &str, runs: u64, seed: u64, limit: Duration, work: &Path) -> Result<Tally> {
    let dir = work.join(target);
    let mut tally = Tally::default();
    let mut next = 0u64;
    while next < runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(exe)
            .args(["fuzz-worker", target, "--dir"])
            .arg(&dir)
            .args(["--from", &next.to_string(), "--to", &runs.to_string(), "--seed", &seed.to_string()])
            .args(["--limit-ms", &limit.as_millis().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a fuzz worker")?;
        let stdout = child.stdout.take().context("no worker stdout")?;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(i), Some(rest)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let i: u64 = i.parse()?;
            tally.runs += 1;
            match kind {
                "ok" => tally.micros.push(rest.parse()?),
                "panic" => {
                    tally.panics.push(format!("input {i}: {rest}"));
                    tally.findings.push(keep(&dir.join(format!("panic-{i}")), work, target, "panic", i)?);
                }
                _ => bail!("unexpected worker line `{line}`"),
            }
        }
        let status = child.wait()?;
        if status.success() {
            break;
        }
        // The input in `current` is the one the worker did not finish.
        let Some(i) = current_index(&dir) else { bail!("the {target} worker failed before its first input: {status}") };
        tally.runs += 1;
        next = i + 1;
        let current = dir.join("current");
        if status.code() == Some(SLOW_EXIT) {
            tally.slow += 1;
            tally.findings.push(keep(&current, work, target, "slow", i)?);
        } else {
            tally.aborts += 1;
            tally.findings.push(keep(&current, work, target, "abort", i)?);
        }
    }
    Ok(tally)
}

fn current_index(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("current.index")).ok()?.trim().parse().ok()
}

/// Copies input `from` of the worker to `<work>/findings/<target>-<kind>-<i>`.
fn keep(from: &Path, work: &Path, target: &str, kind: &str, i: u64) -> Result<PathBuf> {
    let to = work.join("findings").join(format!("{target}-{kind}-{i}"));
    std::fs::copy(from, &to)?;
    Ok(to)
}

/// The worker: inputs `from..to` of `target`, one `ok I MICROS` or `panic I MESSAGE` line
/// each on stdout; exits [`SLOW_EXIT`] when an input passes `limit`.
pub fn work(target: &str, dir: &Path, from: u64, to: u64, seed: u64, limit: Duration) -> Result<()> {
    let corpus = corpus(target)?;
    let panicked: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let hook = Arc::clone(&panicked);
    std::panic::set_hook(Box::new(move |info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut slot) = hook.lock() {
            slot.get_or_insert(format!("{at}: {}", message.replace('\n', " ")));
        }
    }));
    // The watchdog: the start of the running input (ms since `epoch`), 0 between inputs.
    let epoch = Instant::now();
    let running = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (running, stop) = (Arc::clone(&running), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = running.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64 + 1;
                if started != 0 && now.saturating_sub(started) > limit.as_millis() as u64 {
                    std::process::exit(SLOW_EXIT);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    }
    let dir = dir.to_owned();
    let target = target.to_owned();
    let planner = std::thread::Builder::new().stack_size(STACK_BYTES).spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().thread_stack_size(STACK_BYTES).enable_all().build()?;
        let fixture = rt.block_on(Fixture::new(&target, &dir))?;
        let mut out = std::io::stdout().lock();
        for i in from..to {
            let input = input(&corpus, seed, i);
            std::fs::write(dir.join("current"), &input)?;
            std::fs::write(dir.join("current.index"), i.to_string())?;
            let started = Instant::now();
            running.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
            // A panic is counted by the hook; catching it here keeps the worker going.
            let _ = rt.block_on(futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fixture.run(&input, i))));
            running.store(0, Ordering::Relaxed);
            let micros = started.elapsed().as_micros() as u64;
            let panic = panicked.lock().ok().and_then(|mut p| p.take());
            match panic {
                Some(message) => {
                    // Kept before the report: `current` is the next input by the time
                    // the supervisor reads it.
                    std::fs::write(dir.join(format!("panic-{i}")), &input)?;
                    writeln!(out, "panic {i} {message}")?
                }
                None => writeln!(out, "ok {i} {micros}")?,
            }
            out.flush()?;
        }
        Ok(())
    })?;
    let result = planner.join().map_err(|_| anyhow::anyhow!("the fuzz worker's thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    result
}

/// `--replay FILE`: runs one input of `target` in this process (a panic or overflow
/// shows as it would in `kiln`).
pub fn replay(target: &str, file: &Path, dir: &Path) -> Result<()> {
    let input = std::fs::read(file)?;
    let (file, dir) = (file.to_owned(), dir.to_owned());
    let target = target.to_owned();
    let thread = std::thread::Builder::new().stack_size(STACK_BYTES).spawn(move || -> Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread().thread_stack_size(STACK_BYTES).enable_all().build()?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let fixture = rt.block_on(Fixture::new(&target, &dir))?;
        let started = Instant::now();
        rt.block_on(fixture.run(&input, 0));
        println!("{target}: {} took {:.1} ms", file.display(), started.elapsed().as_secs_f64() * 1e3);
        Ok(())
    })?;
    thread.join().map_err(|_| anyhow::anyhow!("the input panicked"))?
}

/// The committed corpus of `target`: every file of `benches/fuzz/corpus/<target>/`, and
/// for `sql` the example project's SQL files as they are (not copied into the corpus).
fn corpus(target: &str) -> Result<Vec<Vec<u8>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let listed = |dir: &Path| -> Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the corpus {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?)
    };
    let dir = root.join("fuzz/corpus").join(target);
    let mut names = listed(&dir)?;
    if target == "sql" {
        let example = root.join("../examples/tpch");
        let mut dirs = vec![example];
        while let Some(d) = dirs.pop() {
            for path in listed(&d)? {
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "sql") {
                    names.push(path);
                }
            }
        }
    }
    names.sort();
    let corpus: Vec<Vec<u8>> = names.iter().map(std::fs::read).collect::<std::io::Result<_>>()?;
    if corpus.is_empty() {
        bail!("the corpus {} is empty", dir.display());
    }
    Ok(corpus)
}

/// Input `i`: corpus entry `i` as it is for the first entries, then a mutation.
fn input(corpus: &[Vec<u8>], seed: u64, i: u64) -> Vec<u8> {
    if let Some(entry) = corpus.get(i as usize) {
        return entry.clone();
    }
    let mut rng = Rng(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut data = corpus[rng.below(corpus.len())].clone();
    let rounds = if rng.below(8) == 0 { 1 + rng.below(16) } else { 1 + rng.below(4) };
    for _ in 0..rounds {
        mutate(&mut rng, &mut data, corpus);
    }
    data.truncate(MAX_INPUT);
    data
}

/// Tokens worth inserting: SQL syntax Kiln rewrites (windows, UNNEST, options,
/// variables), delimiters of the record formats, and text that is not UTF-8.
const TOKENS: &[&[u8]] = &[
    b"(",
    b")",
    b",",
    b";",
    b"'",
    b"\"",
    b"`",
    b"[",
    b"]",
    b"{",
    b"}",
    b":",
    b"=",
    b"=>",
    b"::",
    b"$",
    b"$x",
    b"--",
    b"/*",
    b"*/",
    b"/*!",
    b"\n",
    b"\r\n",
    b"\r",
    b"\t",
    b"\0",
    b"\\",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x99\x82",
    b"\xc3\x9f",
    b" SELECT ",
    b" FROM ",
    b" WHERE ",
    b" GROUP BY ",
    b" ORDER BY ",
    b" AS ",
    b" AND ",
    b" OR ",
    b" NOT ",
    b"1+",
    b"CAST(",
    b" AS BIGINT)",
    b"TUMBLE(",
    b"HOP(",
    b"TABLE ",
    b"DESCRIPTOR(",
    b"INTERVAL '1' SECOND",
    b"INTERVAL '-1' DAY",
    b"TUMBLE_START(",
    b"HOP_END(",
    b"UNNEST(",
    b" WITH OFFSET",
    b"WITH (",
    b"compression = 'zstd(3)'",
    b"'zstd(99)'",
    b"partition_by = ",
    b"sensitive = ",
    b"incremental = ",
    b"unique_key = ",
    b"late_events = 'table'",
    b"max_rows_per_file = ",
    b"kiln_pii_hash(",
    b"key => ",
    b"CREATE PRODUCT ",
    b"CREATE SOURCE ",
    b"CREATE STREAM ",
    b"CREATE MATERIALIZED VIEW ",
    b"CREATE TEST ",
    b"CREATE AUDIT ",
    b"WATERMARK FOR ",
    b"array_agg(",
    b"struct(",
    b"named_struct(",
    b"generate_series(",
    b"repeat(",
    b"NULL",
    b"null",
    b"true",
    b"9223372036854775808",
    b"-9223372036854775809",
    b"1e309",
    b"-0",
    b"NaN",
    b"0x",
    b"1970-01-01T00:00:00",
    b"9999-12-31",
    b"[profiles.",
    b"[query]",
    b"[vars]",
    b"[secrets]",
    b"[storage]",
    b"memory_limit = ",
    b"batch_size = 0",
    b"target_partitions = ",
    b" = \"",
    b"{ env = ",
    b"\\u0000",
    b"\\ud800",
    b"\"\"",
    b",,",
    b"PAR1",
];

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = data.len();
    let at = |rng: &mut Rng| rng.below(len + 1);
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = [0u8, 0xff, 0x7f, 0x80, b'\'', b'"', b'(', b')', b'0', b'9', b',', b'\n'][rng.below(12)];
        }
        2 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below(16.min(len - i));
            data.drain(i..i + n);
        }
        3 | 4 => {
            let i = at(rng);
            let token = TOKENS[rng.below(TOKENS.len())];
            data.splice(i..i, token.iter().copied());
        }
        5 if len > 0 => {
            // A range repeated: nesting (`CAST(` × 1000), chains (`1+` × 8000), wide rows.
            let i = rng.below(len);
            let n = 1 + rng.below(8.min(len - i));
            let times = if rng.below(4) == 0 { 100 + rng.below(8_000) } else { 2 + rng.below(16) };
            let piece = data[i..i + n].to_vec();
            let repeated: Vec<u8> = piece.iter().copied().cycle().take((n * times).min(MAX_INPUT)).collect();
            data.splice(i..i, repeated);
        }
        6 => {
            // A splice: this entry's head, another's tail.
            let other = &corpus[rng.below(corpus.len())];
            let (i, j) = (at(rng), rng.below(other.len() + 1));
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
        }
        7 if len > 1 => {
            // A chunk copied from elsewhere in the input.
            let (i, j) = (rng.below(len), rng.below(len));
            let n = 1 + rng.below(32.min(len - i));
            let piece = data[i..i + n].to_vec();
            data.splice(j..j, piece);
        }
        8 => data.truncate(at(rng)),
        _ => {
            let i = at(rng);
            data.insert(i, rng.below(256) as u8);
        }
    }
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// The project a target runs its inputs in.
struct Fixture {
    target: String,
    dir: PathBuf,
}

/// Sources and a stream the `plan` and `query` inputs may name.
const BASE_SQL: &str = "CREATE SOURCE orders (id BIGINT NOT NULL, customer VARCHAR, amount DOUBLE, at TIMESTAMP, tags VARCHAR)\n\
    WITH (connector = 'files', path = 'data/orders.csv', format = 'csv', on_error = 'reject');\n\
    CREATE STREAM events (ts TIMESTAMP(3) NOT NULL, user_id BIGINT NOT NULL, amount BIGINT,\n\
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH (connector = 'log', topic = 'events');\n\
    CREATE PRODUCT totals WITH (sensitive = 'customer') AS SELECT id, customer, amount FROM orders;\n\
    CREATE PRODUCT hashed AS SELECT id, kiln_pii_hash(customer, key => 'k') AS c FROM orders;\n";

const ORDERS_CSV: &str = "id,customer,amount,at,tags\n1,ann,1.5,2024-01-01T00:00:00,a|b\n2,bob,,2024-01-02T10:00:00,\n";

const KILN_TOML: &str =
    "[project]\nname = \"fuzz\"\n\n[secrets]\nk = { env = \"KILN_FUZZ_NEVER_SET\", fallback = \"dev\" }\n";

impl Fixture {
    async fn new(target: &str, dir: &Path) -> Result<Self> {
        let write = |path: &str, text: &[u8]| -> Result<()> {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Ok(std::fs::write(path, text)?)
        };
        let project = dir.join("project");
        match target {
            "sql" => {}
            "plan" | "query" | "config" => {
                let toml = match target {
                    "query" => format!("{KILN_TOML}\n[query]\nsources = [\"orders\", \"events\"]\n"),
                    _ => KILN_TOML.to_owned(),
                };
                write("project/kiln.toml", toml.as_bytes())?;
                write("project/models/base.sql", BASE_SQL.as_bytes())?;
                write("project/data/orders.csv", ORDERS_CSV.as_bytes())?;
                // The fixture must work, or every input would only test an error path.
                let options = kiln::BuildOptions::default();
                let plan = kiln::plan(&project, &options).await?;
                if plan.products.len() != 2 || !plan.errors.is_empty() {
                    bail!("the fuzz project does not plan: {:?}", plan.errors);
                }
                if target == "query" {
                    kiln::build(&project, &options, &kiln::Quiet).await?;
                    let limits = kiln::control::query_limits::QueryLimits::default();
                    kiln::query(&project, "SELECT count(*) FROM totals", &options, &limits).await?;
                }
            }
            "csv" | "ndjson" | "parquet" => {
                let (format, columns) = match target {
                    "parquet" => ("parquet", "id BIGINT, name VARCHAR, price DOUBLE, at TIMESTAMP"),
                    _ => (target, "id BIGINT NOT NULL, name VARCHAR, price DOUBLE, at TIMESTAMP"),
                };
                let sql = format!(
                    "CREATE SOURCE kept ({columns}) WITH (connector = 'files', path = 'data/', format = '{format}', on_error = 'reject', allow_empty = 'true');\n\
                     CREATE SOURCE strict ({columns}) WITH (connector = 'files', path = 'data/', format = '{format}', allow_empty = 'true');\n\
                     CREATE PRODUCT from_kept AS SELECT * FROM kept;\n\
                     CREATE PRODUCT from_strict AS SELECT id, count(*) AS n, max(name) AS name, sum(price) AS price FROM strict GROUP BY id;\n"
                );
                write("project/kiln.toml", KILN_TOML.as_bytes())?;
                write("project/models/m.sql", sql.as_bytes())?;
                let report = kiln::build(&project, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
                if report.summary.products.len() != 2 || report.failed().count() > 0 {
                    bail!("the fuzz project does not build its two products: {:?}", report.summary.errors);
                }
            }
            other => bail!("unknown fuzz target `{other}`"),
        }
        Ok(Self { target: target.to_owned(), dir: project })
    }

    /// Runs one input; its errors are the expected outcome of most inputs.
    async fn run(&self, input: &[u8], i: u64) {
        let options = kiln::BuildOptions::default();
        match self.target.as_str() {
            "sql" => {
                let _ = kiln::control::dialect::parse_file("fuzz.sql", &String::from_utf8_lossy(input));
            }
            "plan" => {
                // The file's bytes as they are: a file that is not UTF-8 is an input too.
                if std::fs::write(self.dir.join("models/fuzz.sql"), input).is_ok() {
                    let _ = kiln::plan(&self.dir, &options).await;
                }
                self.reset_every(i, 500);
            }
            "config" => {
                if std::fs::write(self.dir.join("kiln.toml"), input).is_ok() {
                    let _ = kiln::plan(&self.dir, &options).await;
                }
                self.reset_every(i, 500);
            }
            "query" => {
                let sql = String::from_utf8_lossy(input);
                let limits = kiln::control::query_limits::QueryLimits::default();
                // Planned and checked, not run: running is the hostile suite's (bench reliability).
                let _ = kiln::query(&self.dir, &sql, &options, &limits).await;
            }
            _ => {
                let data = self.dir.join("data");
                let _ = std::fs::remove_dir_all(&data);
                let extension = if self.target == "ndjson" { "json" } else { &self.target };
                if std::fs::create_dir_all(&data).is_ok()
                    && std::fs::write(data.join(format!("in-{i}.{extension}")), input).is_ok()
                {
                    let _ = kiln::build(&self.dir, &options, &kiln::Quiet).await;
                }
                self.reset_every(i, 200);
            }
        }
    }

    /// Drops the warehouse and artifacts every `n` inputs: their history grows with each.
    fn reset_every(&self, i: u64, n: u64) {
        if i % n == n - 1 {
            let _ = std::fs::remove_dir_all(self.dir.join("warehouse"));
            let _ = std::fs::remove_dir_all(self.dir.join(".kiln"));
        }
    }
}
