//! The `kiln` binary: argument parsing, progress, rendering. The only crate that prints.
//!
//! Exit codes: 0 ok; 1 a product or statement failed (the user's input); 2 usage error
//! (clap's own code); 3 internal or environment error; 141 stdout's reader went away
//! (`kiln ... | head`), as a process killed by SIGPIPE reports.

/// `println!` that ends the process quietly with 141 when stdout's reader has gone
/// (`kiln lineage ... | head`) instead of panicking. Every line the binary prints to
/// stdout goes through it.
macro_rules! out {
    () => {
        $crate::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::write_line(format_args!($($arg)*))
    };
}

mod envs;
mod progress;
mod query;
mod render;
mod summary;

/// The exit code of a write to a closed pipe (128 + SIGPIPE).
const BROKEN_PIPE: u8 = 141;

/// Writes one line to stdout (see `out!`): a closed pipe exits 141, any other write
/// failure (a full disk behind a redirect) exits 3 with the reason.
pub(crate) fn write_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(BROKEN_PIPE));
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(3);
    }
}

/// mimalloc instead of the system allocator: operators allocate and free many
/// batch-sized buffers, and glibc's heap trimming turns that into page faults (the explode
/// suite ran 2x slower under glibc). Decision recorded in ARCHITECTURE.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln::artifact::Decision;
use kiln::{BuildOptions, KilnError};

#[derive(Debug, Parser)]
#[command(name = "kiln", version, about = "Deterministic data products on Apache DataFusion")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scaffold a project (empty, or a runnable example with --example tpch).
    Init {
        /// Directory to create the project in.
        dir: PathBuf,
        /// Copy an example project (available: tpch).
        #[arg(long)]
        example: Option<String>,
    },
    /// Compile, execute and commit the project's products.
    Build {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        wait: WaitArg,
        /// Print the run summary as JSON (docs/json.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The decisions `build` would take, without executing: what would rebuild and why.
    Plan {
        #[command(flatten)]
        run: RunArgs,
        /// Print the plan as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Run every constraint and audit on the committed builds (without building) and
    /// every unit test (CREATE TEST) on its fixtures, in memory.
    Test {
        #[command(flatten)]
        run: RunArgs,
        /// Also write the results as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Print the results as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// How old each source's newest data is against its freshness_warn / freshness_error;
    /// exit 1 when one is older than its freshness_error.
    Freshness {
        /// Project directory (or -C DIR; default: the nearest directory upward with a kiln.toml).
        dir: Option<PathBuf>,
        #[command(flatten)]
        project: ProjectDir,
        /// Print the report as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Column lineage: where each output column's values come from, and which columns
    /// filter, join, group or order its rows.
    Lineage {
        /// `product` or `product.column`.
        target: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        /// Print the lineage as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Write the project's documentation site (DAG, products, column lineage, runs):
    /// static files that work opened from disk, default .kiln/docs/.
    Docs {
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        /// Directory to write the site to (replaced; default: .kiln/docs in the project).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Serve the site on 127.0.0.1 and rebuild it when the project changes (Ctrl-C stops).
        #[arg(long)]
        serve: bool,
        /// Port for --serve (default 8080; 0: any free port).
        #[arg(long, default_value_t = 8080, requires = "serve")]
        port: u16,
    },
    /// The semantic diff of a product's query against its committed build.
    Diff {
        product: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        /// Print the diff as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// A product's logical, optimized, canonical and physical plans.
    Explain {
        product: String,
        /// Execute the plan over the committed inputs (writing nothing) and show metrics.
        #[arg(long)]
        analyze: bool,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        /// Print the plans as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// One read-only SQL query over the committed products (no DDL, DML, COPY, SET or
    /// paths), under the limits of kiln.toml's `[query]`.
    Query(query::QueryArgs),
    /// Make a product's previous committed build visible again.
    Rollback {
        product: String,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        #[command(flatten)]
        wait: WaitArg,
        #[arg(long)]
        json: bool,
    },
    /// Compact the small files of appended products and views (checkpoints, micro-batches,
    /// `existing_data = 'append'`) into files of their target size, in one commit that
    /// changes no rows.
    Optimize {
        /// Products: `name`, `+name`, `name+` (default: every product and view).
        select: Option<String>,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        wait: WaitArg,
        #[arg(long)]
        json: bool,
    },
    /// Delete superseded builds, leftovers of failed builds, and unused plans.
    Gc {
        /// Project directory (or -C DIR; default: the nearest directory upward with a kiln.toml).
        dir: Option<PathBuf>,
        #[command(flatten)]
        project: ProjectDir,
        #[command(flatten)]
        wait: WaitArg,
        /// Also delete the tables of products the project no longer defines (kept and
        /// listed otherwise; a table an environment binds is always kept)
        #[arg(long)]
        drop_removed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Append NDJSON records from stdin to a topic of the embedded log (created on first
    /// use): what `connector = 'log'` streams read.
    Produce {
        topic: String,
        #[command(flatten)]
        dir: ProjectDir,
        /// Partitions of a new topic (default 1); an existing topic must match.
        #[arg(long)]
        partitions: Option<u32>,
        /// Route records by this JSON field (same key, same partition); default:
        /// round-robin.
        #[arg(long)]
        key: Option<String>,
    },
    /// Run the project's materialized views over their streams: micro-batches, windows
    /// closed by the watermark, checkpoints that make the output exactly-once. SIGINT or
    /// SIGTERM takes a final checkpoint and exits 0.
    Stream {
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        wait: WaitArg,
        /// Stop (after a final checkpoint) once no stream has new records.
        #[arg(long)]
        until_idle: bool,
        /// How often to checkpoint (`500ms`, `10s`, `1m`; `0s`: after every micro-batch).
        #[arg(long, default_value = "10s", value_parser = parse_interval)]
        checkpoint_interval: std::time::Duration,
        /// Print the final report as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Every source, product, stream, view, audit and test: kind, file:line, tags and,
    /// for products and views, the committed build.
    Ls {
        /// Definitions: the --select syntax (default: all).
        #[arg(long, short)]
        select: Option<String>,
        /// Leave these out (the --select syntax).
        #[arg(long)]
        exclude: Option<String>,
        #[command(flatten)]
        dir: ProjectDir,
        #[command(flatten)]
        env: EnvArg,
        /// Print the list as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
    /// Every environment, with the products whose build differs from prod's.
    Envs {
        #[command(flatten)]
        dir: ProjectDir,
        #[arg(long)]
        json: bool,
    },
    /// Create, drop, show or compare environments.
    Env {
        #[command(subcommand)]
        command: envs::EnvCommand,
    },
    /// Make every product of environment FROM have FROM's build in --to (default prod),
    /// all-or-nothing; nothing is executed and no data copied.
    Promote(envs::PromoteArgs),
    /// Compare two builds of one product: schema, row counts and, with --key, the rows only
    /// in one and the changed rows per column.
    TableDiff(envs::TableDiffArgs),
    /// A shell completion script for kiln: `kiln completions bash > ~/.local/share/bash-completion/completions/kiln`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The function catalog: every Kiln function with its doc and example.
    Functions {
        /// The catalog as JSON (docs/json.md).
        #[arg(long)]
        json: bool,
    },
}

/// `--no-wait`, on every command that commits (kiln::lock).
#[derive(Debug, clap::Args)]
struct WaitArg {
    /// Fail at once (exit 1) when another kiln command is writing the project, instead of
    /// waiting for it.
    #[arg(long)]
    no_wait: bool,
}

impl WaitArg {
    fn wait(&self) -> kiln::lock::Wait {
        if self.no_wait { kiln::lock::Wait::Fail } else { kiln::lock::Wait::Block }
    }
}

/// `--env NAME` (the environment a command reads; default prod) and `--var NAME=VALUE`
/// (the project variables its SQL compiles with).
#[derive(Debug, clap::Args)]
pub(crate) struct EnvArg {
    /// Environment (default: prod).
    #[arg(long)]
    env: Option<String>,
    /// Set a project variable declared in kiln.toml [vars]: `--var start_date=1995-01-01`.
    #[arg(long = "var", value_parser = parse_setting)]
    vars: Vec<(String, String)>,
}

impl EnvArg {
    pub(crate) fn options(self) -> BuildOptions {
        BuildOptions { env: self.env, vars: self.vars, ..BuildOptions::default() }
    }
}

/// What `build` and `plan` share: the project, the selection, the profile and overrides.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Project directory (or -C DIR; default: the nearest directory upward with a kiln.toml).
    dir: Option<PathBuf>,
    #[command(flatten)]
    project: ProjectDir,
    /// Products: `name`, `tag:TAG`, `path:DIR/`; `+x` with everything upstream, `x+`
    /// downstream, `2+x` / `x+1` that many levels; several, space- or comma-separated.
    #[arg(long, short)]
    select: Option<String>,
    /// Leave these out of the selection (same syntax as --select).
    #[arg(long)]
    exclude: Option<String>,
    /// Runtime profile (default: kiln.toml's [profile] default).
    #[arg(long)]
    profile: Option<String>,
    /// Override a setting: `--set datafusion.execution.batch_size=4096`.
    #[arg(long = "set", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Set a project variable declared in kiln.toml [vars]: `--var start_date=1995-01-01`.
    #[arg(long = "var", value_parser = parse_setting)]
    vars: Vec<(String, String)>,
    /// Environment to build in (default: prod); `build` makes a missing one from prod's
    /// builds.
    #[arg(long)]
    env: Option<String>,
    /// Incremental products: compute only the intervals holding days from this one on
    /// (YYYY-MM-DD, inclusive).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    start: Option<i32>,
    /// Incremental products: ... up to the interval holding this day (inclusive).
    #[arg(long, value_name = "DATE", value_parser = parse_date)]
    end: Option<i32>,
    /// Incremental products: recompute the intervals (of --start..--end, or all) even
    /// when they are computed already; products merged by key are computed whole.
    #[arg(long)]
    restate: bool,
}

fn parse_date(text: &str) -> Result<i32, String> {
    kiln::artifact::intervals::parse_day(text).ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

impl RunArgs {
    #[expect(clippy::result_large_err, reason = "called once per command; KilnError is the binary's one error")]
    fn split(self) -> Result<(PathBuf, BuildOptions), KilnError> {
        let dir = self.project.resolve(self.dir)?;
        let range = match (self.start, self.end) {
            (None, None) => None,
            (Some(a), Some(b)) if a > b => {
                return Err(KilnError::Usage(format!(
                    "--start {} is after --end {}",
                    kiln::artifact::intervals::format_day(a),
                    kiln::artifact::intervals::format_day(b)
                )));
            }
            (a, b) => Some((a.unwrap_or(i32::MIN / 2), b.unwrap_or(i32::MAX / 2))),
        };
        Ok((
            dir,
            BuildOptions {
                intervals: kiln::IntervalRequest { range, restate: self.restate },
                select: self.select,
                exclude: self.exclude,
                profile: self.profile,
                settings: self.settings,
                vars: self.vars,
                env: self.env,
                ..BuildOptions::default()
            },
        ))
    }
}

/// `-C DIR` / `--project DIR` (every command but `init` takes it).
#[derive(Debug, clap::Args)]
pub(crate) struct ProjectDir {
    /// Project directory (default: the nearest directory upward with a kiln.toml, as
    /// cargo finds Cargo.toml).
    #[arg(long = "project", short = 'C', visible_alias = "dir", value_name = "DIR", global = true)]
    project: Option<PathBuf>,
}

impl ProjectDir {
    /// The project directory: `-C DIR`, or the command's positional `DIR`, or the nearest
    /// directory from the current one upward that holds a kiln.toml (else the current
    /// directory, whose missing kiln.toml is then the error).
    #[expect(clippy::result_large_err, reason = "called once per command; KilnError is the binary's one error")]
    pub(crate) fn resolve(self, positional: Option<PathBuf>) -> Result<PathBuf, KilnError> {
        match (self.project, positional) {
            (Some(a), Some(b)) if a != b => Err(KilnError::Usage(format!(
                "two project directories: {} and -C {}; give one",
                b.display(),
                a.display()
            ))),
            (Some(dir), _) | (None, Some(dir)) => Ok(dir),
            (None, None) => {
                let here = PathBuf::from(".");
                let Ok(cwd) = std::env::current_dir() else { return Ok(here) };
                Ok(cwd
                    .ancestors()
                    .find(|d| d.join("kiln.toml").is_file())
                    .map_or(here.clone(), |d| if d == cwd { here } else { d.to_path_buf() }))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Csv,
    Json,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    kiln::control::parse_duration(s).ok_or_else(|| format!("expected a duration such as 500ms, 10s or 1m, got `{s}`"))
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .ok_or_else(|| format!("expected key=value, got `{s}`"))
}

/// Sets `stop` on SIGINT or SIGTERM (`kiln stream` then checkpoints and exits 0).
fn watch_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(())
}

/// The stack of every thread that plans SQL. DataFusion's planner and optimizer recurse
/// once per level of an expression, and generated SQL (a 5,000-term OR chain) goes deep:
/// the default 8 MiB overflowed (an abort) at about 8,000 terms. The dialect refuses
/// statements beyond `kiln_control::dialect::MAX_OPERATORS`, which bounds the depth well
/// inside this. A stack is reserved address space; only the pages used are memory.
const STACK_BYTES: usize = 512 << 20;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let main = std::thread::Builder::new().name("kiln".into()).stack_size(STACK_BYTES).spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().thread_stack_size(STACK_BYTES).enable_all().build();
        let runtime = match runtime {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                return ExitCode::from(3);
            }
        };
        match runtime.block_on(run(cli)) {
            Ok(code) => code,
            Err(e) => report(&e),
        }
    });
    match main.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => {
            eprintln!("error: cannot start the main thread: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, KilnError> {
    match cli.command {
        Command::Init { dir, example } => {
            let files = kiln::init::init(&dir, example.as_deref())?;
            out!("created {} ({} files)", dir.display(), files.len());
            for f in files {
                out!("  {f}");
            }
            out!("next: kiln build {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Functions { json } => {
            let registry = kiln::functions::Registry::builtin(kiln::functions::Secrets::default());
            if json {
                out!("{}", String::from_utf8_lossy(&kiln::inspect::catalog().to_json()?));
            } else {
                out!("{}", registry.catalog_markdown().trim_end_matches('\n'));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test { run, junit, json } => {
            let (dir, options) = run.split()?;
            let report = kiln::test(&dir, &options).await?;
            if let Some(path) = junit {
                std::fs::write(&path, render::junit(&report))
                    .map_err(|e| KilnError::Io { context: format!("cannot write {}", path.display()), source: e })?;
            }
            if json {
                out!("{}", json_text(&report).map_err(KilnError::Internal)?);
            } else {
                render::test(&report);
            }
            Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Ls { select, exclude, dir, env, json } => {
            let options = BuildOptions { select, exclude, env: env.env, ..BuildOptions::default() };
            let report = kiln::ls(&dir.resolve(None)?, &options).await?;
            if json {
                out!("{}", json_text(&report).map_err(KilnError::Internal)?);
            } else {
                render::ls(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Envs { dir, json } => envs::list(dir, json).await,
        Command::Env { command } => envs::env(command).await,
        Command::Promote(args) => envs::promote(args).await,
        Command::TableDiff(args) => envs::table_diff(args).await,
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "kiln", &mut script);
            out!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Command::Freshness { dir, project, json } => {
            let dir = project.resolve(dir)?;
            let report = kiln::freshness(&dir, &BuildOptions::default()).await?;
            if json {
                out!("{}", json_text(&report).map_err(KilnError::Internal)?);
            } else {
                render::freshness(&report);
            }
            Ok(if report.failed() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Plan { run, json } => {
            let (dir, options) = run.split()?;
            let report = kiln::plan(&dir, &options).await?;
            if json {
                out!("{}", String::from_utf8_lossy(&report.to_json()?));
            } else {
                render::plan(&report);
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            let failed = !report.errors.is_empty() || report.products.iter().any(|p| p.decision == Decision::Failed);
            Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        Command::Docs { dir, env, out, serve, port } => {
            let dir = dir.resolve(None)?;
            let out = out.unwrap_or_else(|| kiln::docs::default_out(&dir));
            let options = env.options();
            if !serve {
                let report = kiln::docs::docs(&dir, &out, &options).await?;
                out!("wrote {} pages ({} bytes) to {}", report.pages, report.bytes, report.out.display());
                out!("open {}", report.out.join("index.html").display());
                return Ok(ExitCode::SUCCESS);
            }
            let report = |event: kiln::docs::serve::ServeEvent<'_>| match event {
                kiln::docs::serve::ServeEvent::Listening(addr) => out!("serving http://{addr}/ (Ctrl-C stops)"),
                kiln::docs::serve::ServeEvent::Built(r) => out!("wrote {} pages to {}", r.pages, r.out.display()),
                kiln::docs::serve::ServeEvent::Failed(e) => eprintln!("error: {e} (still serving the previous site)"),
            };
            let stop = async {
                // Without a signal handler the process cannot stop cleanly; it then runs until killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            kiln::docs::serve::serve(&dir, &out, port, &options, &report, stop).await?;
            Ok(ExitCode::from(130))
        }
        Command::Diff { product, dir, env, json } => {
            let diff = kiln::diff(&dir.resolve(None)?, &product, &env.options()).await?;
            if json {
                out!("{}", json_text(&diff).map_err(KilnError::Internal)?);
            } else {
                render::diff(&diff);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { product, analyze, dir, env, json } => {
            let report = kiln::explain(&dir.resolve(None)?, &product, analyze, &env.options()).await?;
            if json {
                out!("{}", json_text(&report).map_err(KilnError::Internal)?);
            } else {
                render::explain(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => query::run(args).await,
        Command::Rollback { product, dir, env, wait, json } => {
            let env = env.env.unwrap_or_else(|| kiln::data::warehouse::PROD.to_owned());
            let observer = progress::CliProgress::new(false);
            let r = kiln::rollback(&dir.resolve(None)?, &product, &env, wait.wait(), &observer).await?;
            if json {
                out!("{}", json_text(&r).map_err(KilnError::Internal)?);
            } else {
                out!(
                    "{}: now build {} (run {}), was {} (run {})",
                    r.product,
                    &r.to_build_id[..12.min(r.to_build_id.len())],
                    r.to_run_id,
                    &r.from_build_id[..12.min(r.from_build_id.len())],
                    r.from_run_id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Produce { topic, dir, partitions, key } => {
            let stdin = std::io::stdin().lock();
            let r = kiln::produce(&dir.resolve(None)?, &topic, partitions, key.as_deref(), stdin).await?;
            let ranges: Vec<String> =
                r.offsets.iter().map(|(p, (a, b))| format!("partition {p}: offsets {a}..={b}")).collect();
            let detail = if ranges.is_empty() { String::new() } else { format!(" ({})", ranges.join(", ")) };
            out!("appended {} records to topic `{}`{detail}", r.records, r.topic);
            Ok(ExitCode::SUCCESS)
        }
        Command::Optimize { select, dir, wait, json } => {
            let options = BuildOptions { select, wait: wait.wait(), ..BuildOptions::default() };
            let r = kiln::optimize(&dir.resolve(None)?, &options, &progress::CliProgress::new(false)).await?;
            if json {
                out!("{}", json_text(&r).map_err(KilnError::Internal)?);
            } else {
                for d in &r.datasets {
                    match (&d.version, &d.skipped) {
                        (Some(v), _) => out!(
                            "{}: {} small files rewritten into {} (version {v})",
                            d.product,
                            d.files_before,
                            d.files_after
                        ),
                        (None, Some(why)) => out!("{}: unchanged ({why})", d.product),
                        (None, None) => out!("{}: unchanged", d.product),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc { dir, project, wait, drop_removed, json } => {
            let r =
                kiln::gc(&project.resolve(dir)?, drop_removed, wait.wait(), &progress::CliProgress::new(false)).await?;
            if json {
                out!("{}", json_text(&r).map_err(KilnError::Internal)?);
            } else {
                for d in &r.deleted {
                    let what = if d.committed { "superseded" } else { "uncommitted" };
                    out!("deleted {} ({what}, {} files, {} bytes)", d.build_dir, d.files, d.bytes);
                }
                out!(
                    "{} builds deleted ({} files, {} bytes), {} plans, {} build records and {} blobs deleted, {} empty directories removed, {} current builds kept",
                    r.deleted.len(),
                    r.files,
                    r.bytes,
                    r.plans,
                    r.records,
                    r.blobs,
                    r.empty_dirs,
                    r.kept
                );
                if !r.dropped.is_empty() {
                    out!("dropped the tables of removed products: {}", r.dropped.join(", "));
                }
                if !r.test_results.is_empty() {
                    out!("deleted the last results of tests no longer defined: {}", r.test_results.join(", "));
                }
                if !r.removed.is_empty() {
                    out!(
                        "kept the tables of products no longer defined: {} (kiln gc --drop-removed deletes them)",
                        r.removed.join(", ")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Lineage { target, dir, env, json } => {
            let lineage = kiln::lineage(&dir.resolve(None)?, &target, &env.options()).await?;
            if json {
                out!("{}", String::from_utf8_lossy(&lineage.to_json()?));
            } else {
                render::lineage(&lineage);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stream { run, wait, until_idle, checkpoint_interval, json } => {
            let (dir, mut build) = run.split()?;
            build.wait = wait.wait();
            let options = kiln::StreamOptions { build, until_idle, checkpoint_interval, ..Default::default() };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            watch_signals(std::sync::Arc::clone(&stop))
                .map_err(|e| KilnError::Io { context: "cannot watch for signals".into(), source: e })?;
            let observer = progress::CliProgress::new(!json);
            let report = kiln::stream(&dir, &options, &observer, stop).await?;
            observer.finish();
            if json {
                out!("{}", json_text(&report).map_err(KilnError::Internal)?);
            } else {
                let why = match report.stopped {
                    kiln::artifact::Stopped::Idle => "no new records",
                    kiln::artifact::Stopped::Signal => "signal",
                };
                out!("stopped ({why}), run {}", report.run_id);
                for v in &report.views {
                    out!("{}: {}", v.view, progress::stream_line(v));
                    out!("  {}", v.started);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build { run, wait, json } => {
            let (dir, mut options) = run.split()?;
            options.wait = wait.wait();
            let observer = progress::CliProgress::new(!json);
            // Ctrl-C ends the run at once: a build is visible only after its commit, so the
            // running ones leave nothing (their build directories are gc's); the products
            // that finished stay committed.
            let report = tokio::select! {
                report = kiln::build(&dir, &options, &observer) => report?,
                Ok(()) = tokio::signal::ctrl_c() => {
                    observer.interrupted();
                    // Exit now: dropping the runtime would wait for blocking work in flight
                    // (the OS releases the writer lock with the process).
                    std::process::exit(130);
                }
            };
            observer.finish();
            if json {
                out!("{}", json_text(&report.summary).map_err(KilnError::Internal)?);
            } else {
                summary::print_summary(&report.summary);
            }
            let mut failed = !report.problems.is_empty();
            for problem in &report.problems {
                print_error(problem);
            }
            let mut internal = false;
            for p in report.failed() {
                failed = true;
                internal |= p.internal;
                eprintln!("error: {}", p.error.as_deref().unwrap_or("failed"));
            }
            Ok(match (internal, failed) {
                (true, _) => ExitCode::from(3),
                (false, true) => ExitCode::from(1),
                (false, false) => ExitCode::SUCCESS,
            })
        }
    }
}

/// Prints an error (all of them, for a multi-error) and returns its exit code.
fn report(e: &KilnError) -> ExitCode {
    if let KilnError::Io { source, .. } = e
        && source.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::from(BROKEN_PIPE);
    }
    match e {
        KilnError::Control(c) => print_error(c),
        other => eprintln!("error: {other}"),
    }
    ExitCode::from(e.exit_code())
}

fn json_text(value: &impl serde::Serialize) -> Result<String, String> {
    serde_json::to_string_pretty(value).map_err(|e| format!("cannot render JSON: {e}"))
}

/// Prints a control-plane error (each of a multi-error) with its caret snippet.
fn print_error(e: &kiln::control::ControlError) {
    for one in e.flatten() {
        eprintln!("error: {one}");
        if let Some(snippet) = one.snippet().filter(|s| !s.is_empty()) {
            eprintln!("{snippet}");
        }
    }
}
