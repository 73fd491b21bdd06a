//! `bench reliability`: the hostile suite. Every statement of
//! `benches/hostile/statements.txt`, and generated parser and planner bombs, run by the
//! `kiln` binary (`kiln query`, as a user with query access would) against the TPC-H
//! example at scale factor 0.01, built, with its order events streamed, one product
//! marking a column `sensitive`, and `[query]` limits of 3 s, 1 GiB and 16 MiB of output.
//!
//! A statement is harmful when it exits other than 0 or 1 (a panic, an abort, an
//! internal error), breaks its expectation (`refuse`: exit 1 and nothing printed;
//! `allow`: exit 0), runs past its timeout + 2 s, reaches a peak resident memory over
//! its limit + 20% (the process's `VmHWM`, polled every 2 ms until it exits), prints a
//! protected value (a customer's phone number or address from the `customer` source, a
//! `sensitive` column's values, the `pii_key` secret, the contents of files outside the
//! project), or changes a file of the project or outside it. The suite fails with any.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const TIMEOUT_S: u64 = 3;
const MEMORY: u64 = 1 << 30;
/// A statement longer than this goes on standard input (`kiln query -`): Linux holds at
/// most 128 KiB in one argument.
const ARG_MAX: usize = 100 << 10;
const OUTSIDE_MARKER: &str = "KILN-HOSTILE-MARKER";
const SENSITIVE_MARKER: &str = "SENSITIVE-";
const SECRET: &str = "example-key-not-secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Refuse,
    Allow,
    Bound,
}

struct Statement {
    expect: Expect,
    sql: String,
    /// A short name for the report: the statement, shortened.
    name: String,
}

pub async fn suite(out: &Path, _runs: usize) -> Result<Value> {
    let kiln = kiln_binary()?;
    let base = std::path::absolute(out.join("reliability"))?;
    let _ = std::fs::remove_dir_all(&base);
    let outside = base.join("outside");
    std::fs::create_dir_all(&outside)?;
    let project = super::example_project(&base.join("shop"), 0.01)?;
    setup(&kiln, &project, &outside).await?;
    let markers = Markers::read(&project).await?;
    let statements = statements(&outside)?;
    // A first query compiles the project into its cache; from then on, nothing changes.
    run(&kiln, &project, "SELECT count(*) FROM customer_clean")?;
    let before = snapshot(&[&project, &outside])?;
    let mut rows = Vec::new();
    let mut harmful = Vec::new();
    let (mut slowest, mut peak_max) = (0f64, 0u64);
    for (i, s) in statements.iter().enumerate() {
        let r = run(&kiln, &project, &s.sql)?;
        let mut problems = Vec::new();
        match (r.code, s.expect) {
            (Some(0 | 1), Expect::Bound) | (Some(1), Expect::Refuse) | (Some(0), Expect::Allow) => {}
            (code, expect) => problems.push(format!("exit {code:?}, expected {expect:?}")),
        }
        if s.expect == Expect::Refuse && !r.stdout.is_empty() {
            problems.push(format!("printed {} bytes", r.stdout.len()));
        }
        if r.seconds > (TIMEOUT_S + 2) as f64 {
            problems.push(format!("ran {:.1} s", r.seconds));
        }
        if r.peak_bytes > MEMORY + MEMORY / 5 {
            problems.push(format!("peak RSS {} MiB", r.peak_bytes >> 20));
        }
        if let Some(leak) = markers.find(&r.stdout).or_else(|| markers.find(&r.stderr)) {
            problems.push(format!("printed protected value `{leak}`"));
        }
        let after = snapshot(&[&project, &outside])?;
        if let Some(changed) = changed(&before, &after) {
            problems.push(format!("changed {changed}"));
        }
        slowest = slowest.max(r.seconds);
        peak_max = peak_max.max(r.peak_bytes);
        let first =
            String::from_utf8_lossy(&r.stderr).lines().find(|l| l.starts_with("error")).unwrap_or("").to_owned();
        if !problems.is_empty() {
            println!("HARMFUL {i}: {}: {}", s.name, problems.join("; "));
            harmful.push(json!({ "statement": s.name, "problems": problems }));
        }
        rows.push(json!({
            "statement": s.name, "expect": format!("{:?}", s.expect), "exit": r.code,
            "seconds": r.seconds, "peak_mib": r.peak_bytes >> 20, "error": first,
        }));
    }
    let summary = json!({
        "statements": statements.len(),
        "harmful": harmful.len(),
        "timeout_s": TIMEOUT_S, "memory_mib": MEMORY >> 20,
        "slowest_s": slowest, "peak_rss_mib": peak_max >> 20,
        "refused": rows.iter().filter(|r| r["exit"] == json!(1)).count(),
    });
    println!("reliability: {summary}");
    std::fs::write(
        base.join("statements.json"),
        serde_json::to_string_pretty(&json!({ "summary": summary, "harmful": harmful, "statements": rows }))?,
    )?;
    if !harmful.is_empty() {
        bail!("{} of {} hostile statements were harmful (see above)", harmful.len(), statements.len());
    }
    Ok(json!({
        "summary": summary,
        "rows": [
            { "case": format!("{} hostile statements: slowest (s)", statements.len()), "kiln_median": slowest,
              "peer": "limit: timeout + 2 s", "peer_median": (TIMEOUT_S + 2) as f64,
              "ratio": slowest / (TIMEOUT_S + 2) as f64, "target": "<= 1" },
            { "case": "peak RSS (GiB)", "kiln_median": peak_max as f64 / (1u64 << 30) as f64,
              "peer": "limit: memory + 20%", "peer_median": 1.2,
              "ratio": peak_max as f64 / (MEMORY + MEMORY / 5) as f64, "target": "<= 1" },
        ],
    }))
}

/// The `kiln` binary beside this one (`cargo build --release -p kiln-cli`, which `cargo
/// xtask bench` does first).
fn kiln_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let kiln = exe.with_file_name("kiln");
    if !kiln.is_file() {
        bail!("{} is missing: cargo build --release -p kiln-cli", kiln.display());
    }
    Ok(kiln)
}

/// The example built, its order events streamed; a product with a `sensitive` column;
/// `[query]` limits; secret files outside the project.
async fn setup(kiln: &Path, project: &Path, outside: &Path) -> Result<()> {
    let toml = std::fs::read_to_string(project.join("kiln.toml"))?;
    let limits = format!("[query]\ntimeout = \"{TIMEOUT_S}s\"\nmemory = \"1GiB\"\nmax_bytes = \"16MiB\"\n");
    std::fs::write(project.join("kiln.toml"), toml.replacen("[query]\n", &limits, 1))?;
    std::fs::write(
        project.join("marts/customer_contacts.sql"),
        format!(
            "CREATE PRODUCT customer_contacts WITH (sensitive = 'secret_tag') AS\n\
             SELECT c_custkey, c_nationkey, concat('{SENSITIVE_MARKER}', c_custkey) AS secret_tag FROM customer_clean;\n"
        ),
    )?;
    std::fs::write(outside.join("secret.csv"), format!("a\n{OUTSIDE_MARKER}\n"))?;
    let ctx = datafusion::prelude::SessionContext::new();
    let path = outside.join("secret.parquet");
    ctx.sql(&format!("COPY (SELECT '{OUTSIDE_MARKER}' AS a) TO '{}' STORED AS PARQUET", path.display()))
        .await?
        .collect()
        .await?;
    let step = |args: &[&str], stdin: Option<&Path>| -> Result<()> {
        let mut cmd = Command::new(kiln);
        cmd.args(args).current_dir(project).stdout(Stdio::null());
        if let Some(file) = stdin {
            cmd.stdin(std::fs::File::open(file)?);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("kiln {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    step(&["build"], None)?;
    step(&["produce", "order_events"], Some(&project.join("streams/order_events.ndjson")))?;
    step(&["stream", "--until-idle"], None)
}

/// What no statement may print.
struct Markers {
    exact: HashSet<Vec<u8>>,
    lengths: Vec<usize>,
}

impl Markers {
    /// The customers' phone numbers and addresses, read from the source's files here (not
    /// through Kiln), and the fixed markers.
    async fn read(project: &Path) -> Result<Self> {
        let ctx = datafusion::prelude::SessionContext::new();
        let dir = project.join("data/customer/");
        let frame = ctx
            .read_parquet(dir.display().to_string(), datafusion::prelude::ParquetReadOptions::default())
            .await?
            .select_columns(&["c_phone", "c_address"])?;
        let mut exact = HashSet::new();
        for batch in frame.collect().await? {
            for column in batch.columns() {
                let column = datafusion::arrow::compute::cast(column, &datafusion::arrow::datatypes::DataType::Utf8)?;
                let strings = datafusion::common::cast::as_string_array(&column)?;
                // Short addresses could match by chance in other output: 8 bytes and more.
                exact.extend(strings.iter().flatten().filter(|s| s.len() >= 8).map(|s| s.as_bytes().to_vec()));
            }
        }
        if exact.len() < 1_000 {
            bail!("only {} customer values read from {}", exact.len(), dir.display());
        }
        for m in [OUTSIDE_MARKER, SENSITIVE_MARKER, SECRET] {
            exact.insert(m.as_bytes().to_vec());
        }
        let mut lengths: Vec<usize> = exact.iter().map(Vec::len).collect::<HashSet<_>>().into_iter().collect();
        lengths.sort_unstable();
        Ok(Self { exact, lengths })
    }

    /// The first marker in `text`.
    fn find(&self, text: &[u8]) -> Option<String> {
        for start in 0..text.len() {
            for &n in &self.lengths {
                let Some(piece) = text.get(start..start + n) else { break };
                if self.exact.contains(piece) {
                    return Some(String::from_utf8_lossy(piece).into_owned());
                }
            }
        }
        None
    }
}

struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    seconds: f64,
    peak_bytes: u64,
}

/// `kiln query SQL --format csv` in `project`, its peak resident memory polled.
fn run(kiln: &Path, project: &Path, sql: &str) -> Result<Outcome> {
    let mut cmd = Command::new(kiln);
    cmd.arg("query").current_dir(project).args(["--format", "csv"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let piped = sql.len() > ARG_MAX;
    if piped {
        cmd.arg("-").stdin(Stdio::piped());
    } else {
        cmd.arg(sql).stdin(Stdio::null());
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start kiln")?;
    let pid = child.id();
    if piped && let Some(mut stdin) = child.stdin.take() {
        let text = sql.to_owned();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, text.as_bytes()));
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().context("no stdout")?));
    let stderr = drain(Box::new(child.stderr.take().context("no stderr")?));
    let mut peak = 0;
    let code = loop {
        if let Some(hwm) = super::peak_rss_of(&pid.to_string()) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(60) {
            // Far past any limit: stop it so the suite ends, and report it.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let seconds = started.elapsed().as_secs_f64();
    let join = |t: std::thread::JoinHandle<Vec<u8>>| t.join().unwrap_or_default();
    Ok(Outcome { code, stdout: join(stdout), stderr: join(stderr), seconds, peak_bytes: peak })
}

/// Every file under `roots`: size and modification time.
fn snapshot(roots: &[&Path]) -> Result<BTreeMap<PathBuf, (u64, std::time::SystemTime)>> {
    let mut files = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = roots.iter().map(|r| r.to_path_buf()).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                dirs.push(entry.path());
            } else {
                files.insert(entry.path(), (meta.len(), meta.modified()?));
            }
        }
    }
    Ok(files)
}

fn changed(
    before: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    after: &BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
) -> Option<String> {
    if let Some((path, _)) = after.iter().find(|(p, m)| before.get(*p) != Some(m)) {
        return Some(path.display().to_string());
    }
    before.keys().find(|p| !after.contains_key(*p)).map(|p| format!("{} (deleted)", p.display()))
}

/// The committed statements and the generated ones, `{outside}` replaced.
fn statements(outside: &Path) -> Result<Vec<Statement>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("hostile/statements.txt");
    let text = std::fs::read_to_string(&file)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, sql) =
            line.split_once(' ').with_context(|| format!("{}:{}: no statement", file.display(), n + 1))?;
        let expect = match kind {
            "refuse" => Expect::Refuse,
            "allow" => Expect::Allow,
            "bound" => Expect::Bound,
            other => bail!("{}:{}: `{other}` is not refuse, allow or bound", file.display(), n + 1),
        };
        let sql = sql.replace("{outside}", &outside.display().to_string());
        out.push(Statement { expect, name: sql.chars().take(100).collect(), sql });
    }
    let repeat = |s: &str, n: usize| s.repeat(n);
    let generated: Vec<(String, String)> = vec![
        ("48 nested CAST".into(), format!("SELECT {}1{}", repeat("CAST(", 48), repeat(" AS BIGINT)", 48))),
        ("1,000 nested CAST".into(), format!("SELECT {}1{}", repeat("CAST(", 1000), repeat(" AS BIGINT)", 1000))),
        ("4,200-term + chain".into(), format!("SELECT 1{}", repeat("+1", 4199))),
        ("8,000-term + chain".into(), format!("SELECT 1{}", repeat("+1", 7999))),
        ("100,000-term + chain (stdin)".into(), format!("SELECT 1{}", repeat("+1", 99_999))),
        (
            "13,000 AND".into(),
            format!("SELECT * FROM customer_clean WHERE true{}", repeat(" AND c_custkey > 0", 13_000)),
        ),
        ("100,000 nested parentheses".into(), format!("SELECT {}1{}", repeat("(", 100_000), repeat(")", 100_000))),
        (
            "500 nested subqueries".into(),
            format!("{}SELECT 1 AS x{}", repeat("SELECT x FROM (", 500), repeat(")", 500)),
        ),
        (
            "2,000 nested CASE".into(),
            format!("SELECT {}1{}", repeat("CASE WHEN true THEN ", 2000), repeat(" END", 2000)),
        ),
        ("5,000 nested abs()".into(), format!("SELECT {}1{}", repeat("abs(", 5000), repeat(")", 5000))),
        ("5,000 nested arrays".into(), format!("SELECT {}1{}", repeat("[", 5000), repeat("]", 5000))),
        ("2,000 nested structs".into(), format!("SELECT {}1{}", repeat("{'a': ", 2000), repeat("}", 2000))),
        (
            "IN list of 100,000".into(),
            format!(
                "SELECT count(*) FROM customer_clean WHERE c_custkey IN ({})",
                (0..100_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            ),
        ),
        ("5,000 UNION ALL".into(), format!("SELECT 1 AS x{}", repeat(" UNION ALL SELECT 1", 5000))),
        (
            "20,000 columns".into(),
            format!("SELECT {}", (0..20_000).map(|i| format!("{i} AS c{i}")).collect::<Vec<_>>().join(", ")),
        ),
        ("1,000 chained CTEs".into(), {
            let ctes: Vec<String> = (1..1000).map(|i| format!("t{i} AS (SELECT x + 1 AS x FROM t{})", i - 1)).collect();
            format!("WITH t0 AS (SELECT 1 AS x), {} SELECT x FROM t999", ctes.join(", "))
        }),
        ("1 MiB identifier".into(), format!("SELECT 1 AS {}", repeat("a", 1 << 20))),
        ("16 MiB string literal".into(), format!("SELECT length('{}')", repeat("x", 16 << 20))),
        ("10,000 statements".into(), repeat("SELECT 1;", 10_000)),
    ];
    for (name, sql) in generated {
        out.push(Statement { expect: Expect::Bound, name, sql });
    }
    Ok(out)
}
