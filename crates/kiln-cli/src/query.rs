//! `kiln query`: one query of the untrusted surface, under its limits
//! (kiln_control::query_limits): kiln::query plans it and bounds DataFusion's memory pool;
//! this module, which owns the process and the output, bounds the rest: the timeout, the
//! rows and bytes of the output, and the process's resident memory.

use std::process::ExitCode;
use std::time::Duration;

use kiln::KilnError;
use kiln::control::query_limits::{QueryOverrides, parse_limit, positive_count, positive_duration};

use crate::{EnvArg, Format, ProjectDir};

#[derive(Debug, clap::Args)]
pub(crate) struct QueryArgs {
    /// The query, or `-` to read it from standard input (a long generated query: a
    /// command-line argument holds at most 128 KiB on Linux).
    sql: String,
    #[command(flatten)]
    dir: ProjectDir,
    #[command(flatten)]
    env: EnvArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Stop the query after this long (`30s`, `5 minutes`; `none`): exit 1, with what was
    /// printed so far. Default: kiln.toml's `[query] timeout`, else 10 minutes.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    timeout: Option<Limit<Duration>>,
    /// Fail (exit 1) when the result has more rows than this (`none`: no limit) instead
    /// of reading (and, for `--format table`, holding) them all. Default: `[query] max_rows`.
    #[arg(long, value_name = "N", value_parser = parse_rows)]
    max_rows: Option<Limit<u64>>,
    /// Fail (exit 1) before the output passes this many bytes (`64MiB`; `none`).
    /// Default: `[query] max_bytes`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<Limit<u64>>,
    /// The most memory the query may use (`512MiB`, `2GiB`; `none`): half of it is
    /// DataFusion's pool, and the process ends (exit 1) once its resident memory passes
    /// it. Default: `[query] memory`, else 2GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<Limit<u64>>,
}

/// A limit given on the command line: `Limit(None)` is `none`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit<T>(Option<T>);

fn parse_timeout(text: &str) -> Result<Limit<Duration>, String> {
    parse_limit(text, positive_duration)
        .map(Limit)
        .ok_or_else(|| format!("`{text}` is not a positive duration (e.g. 30s, 5 minutes) or none"))
}

fn parse_rows(text: &str) -> Result<Limit<u64>, String> {
    parse_limit(text, positive_count).map(Limit).ok_or_else(|| format!("`{text}` is not a positive count or none"))
}

fn parse_size(text: &str) -> Result<Limit<u64>, String> {
    parse_limit(text, kiln::control::units::parse_bytes)
        .map(Limit)
        .ok_or_else(|| format!("`{text}` is not a size (e.g. 512MiB, 2GiB) or none"))
}

pub(crate) async fn run(args: QueryArgs) -> Result<ExitCode, KilnError> {
    let QueryArgs { sql, dir, env, format, timeout, max_rows, max_bytes, memory } = args;
    let dir = dir.resolve(None)?;
    let sql = if sql == "-" { sql_from_stdin()? } else { sql };
    let overrides = QueryOverrides {
        timeout: timeout.map(|l| l.0),
        max_rows: max_rows.map(|l| l.0),
        max_bytes: max_bytes.map(|l| l.0),
        memory: memory.map(|l| l.0),
    };
    let limits = kiln::inspect::query_limits(&dir, &overrides)?;
    // Before planning: constant folding evaluates `repeat('x', 2147483647)` there.
    if let Some(bytes) = limits.memory {
        watch_memory(bytes);
    }
    let run = async {
        let (schema, stream) = kiln::query(&dir, &sql, &env.options(), &limits).await?;
        let stream = match limits.max_rows {
            Some(n) => kiln::inspect::row_capped(stream, n),
            None => stream,
        };
        let format = match format {
            Format::Table => kiln::QueryFormat::Table,
            Format::Csv => kiln::QueryFormat::Csv,
            Format::Json => kiln::QueryFormat::Json,
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        kiln::inspect::write_result(&schema, stream, format, &mut out, limits.max_bytes).await?;
        std::io::Write::flush(&mut out)
            .map_err(|e| KilnError::Io { context: "cannot write the result".into(), source: e })?;
        Ok::<_, KilnError>(ExitCode::SUCCESS)
    };
    let Some(limit) = limits.timeout else { return run.await };
    let over =
        move || format!("the query ran longer than its timeout of {limit:?} (--timeout, [query] timeout); stopped");
    // DataFusion's operators yield to the runtime, so the timeout cancels the query;
    // should one not (planning 5,000 UNION ALL, one nested-loop join batch, levenshtein
    // of two 100 KB strings: none yields), the process ends 1.5 s later all the same,
    // within the documented limit + 2 s with the process's start and exit.
    std::thread::spawn(move || {
        std::thread::sleep(limit + Duration::from_millis(1500));
        eprintln!("error: {}", over());
        std::process::exit(1);
    });
    tokio::time::timeout(limit, run).await.map_err(|_| KilnError::Query(over()))?
}

/// `kiln query -`: the query on standard input, which must be UTF-8 text.
#[expect(clippy::result_large_err, reason = "called once per command; KilnError is the binary's one error")]
fn sql_from_stdin() -> Result<String, KilnError> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes)
        .map_err(|e| KilnError::Io { context: "cannot read the query from standard input".into(), source: e })?;
    String::from_utf8(bytes).map_err(|e| {
        KilnError::Query(format!(
            "the query on standard input is not UTF-8 text (byte {} is not)",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Ends the process (exit 1) once its resident memory passes `limit` bytes, checked every
/// 5 ms: the bound on what allocates outside DataFusion's pool. Allocating and touching
/// memory runs at a few GB/s, so a query ends within some tens of MB past the limit.
/// Linux only (`/proc/self/status`); elsewhere only the pool holds.
fn watch_memory(limit: u64) {
    if resident_bytes().is_none() {
        return;
    }
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(5));
            if resident_bytes().is_some_and(|rss| rss > limit) {
                eprintln!(
                    "error: the query used more than {} of memory (--memory, [query] memory in kiln.toml); stopped",
                    size_text(limit)
                );
                std::process::exit(1);
            }
        }
    });
}

/// The process's resident memory (`VmRSS`), where the OS says.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// `2GiB`, `512MiB`, or bytes: a size as the limits are written.
fn size_text(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}
