//! Kiln: deterministic data products on Apache DataFusion.
//!
//! This crate is the facade library users depend on and the engine behind the `kiln`
//! binary: it orchestrates the planes and moves no bytes itself. A command opens a
//! [`session`](crate::session) (load the project, compile every node through the control
//! plane), then:
//!
//! - [`build`] decides each product ([`decide`](crate::decide), shared with [`plan`]),
//!   executes the ones to build as streams of record batches through the data plane's
//!   writer ([`execute`](crate::execute); micro-batch sources are ingested batch by batch,
//!   `ingest`), audits each staged build (`checks`: write–audit–publish), commits each
//!   atomically, and records build records, events and the run
//!   summary in the artifact store ([`record`](crate::record));
//! - [`plan`] takes the same decisions without executing;
//! - [`stream()`] runs the materialized views over their streams (the data plane's
//!   streaming runtime) with checkpointed, exactly-once output;
//! - [`inspect`] answers [`lineage`], [`diff`], [`explain`], [`query`] and
//!   [`inspect::catalog`] without building;
//! - [`testing`] runs checks on committed builds and unit tests on fixtures ([`test`]),
//!   and measures sources' [`freshness`];
//! - [`maintain`] rolls back and garbage-collects; [`produce()`] appends records to the
//!   embedded log; [`init`] scaffolds projects.
//!
//! Progress is reported through an [`Observer`] ([`events`]); this crate never prints.
//!
//! The layers are re-exported for library users: [`contracts`], [`explode`], [`functions`],
//! [`artifact`], [`data`], [`control`].
//!
//! Architecture invariants:
//! - The engine orchestrates; it owns no SQL semantics (control) and moves no bytes itself
//!   (data).
//! - A product whose build fails leaves its previous committed build visible; products
//!   downstream of a failure are skipped, independent products still build.
//!
//! Building a project and reading a product back:
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("kiln.toml"), "[project]\nname = \"demo\"\n")?;
//! std::fs::write(
//!     dir.path().join("numbers.sql"),
//!     "CREATE PRODUCT squares ORDER BY (n) AS SELECT v AS n, v * v AS square FROM (VALUES (1), (2), (3)) t(v);",
//! )?;
//! let report = kiln::build(dir.path(), &kiln::BuildOptions::default(), &kiln::Quiet).await?;
//! assert_eq!(report.summary.products[0].rows, 3);
//! let rows = kiln::inspect::query_batches(dir.path(), "SELECT sum(square) AS s FROM squares").await?;
//! assert_eq!(datafusion::arrow::util::pretty::pretty_format_batches(&rows)?.to_string().lines().nth(3), Some("| 14 |"));
//! # Ok(()) }
//! ```

mod build;
mod checks;
mod decide;
pub mod docs;
pub mod envs;
pub mod events;
mod execute;
mod incremental;
mod ingest;
pub mod init;
pub mod inspect;
pub mod lock;
pub mod maintain;
mod merge;
pub mod produce;
mod record;
mod session;
pub mod stream;
pub mod testing;

pub use build::{build, plan};
pub use events::{BuildOptions, BuildReport, Event, IntervalRequest, Observer, Quiet};
pub use inspect::{QueryFormat, diff, explain, lineage, ls, query};
pub use kiln_artifact as artifact;
pub use kiln_contracts as contracts;
pub use kiln_control as control;
pub use kiln_control::Project;
pub use kiln_data as data;
pub use kiln_explode as explode;
pub use kiln_functions as functions;
pub use maintain::{gc, optimize, rollback};
pub use produce::{ProduceReport, produce};
pub use stream::{StreamOptions, StreamReport, ViewStatus, stream};
pub use testing::{freshness, test};

/// The facade's error: which layer failed, with that layer's typed error.
#[derive(Debug, thiserror::Error)]
pub enum KilnError {
    #[error(transparent)]
    Control(#[from] kiln_control::ControlError),
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    #[error(transparent)]
    Artifact(#[from] kiln_artifact::ArtifactError),
    /// A local file operation failed (the environment).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A product the command needs does not compile (the user's definition).
    #[error("product `{product}`: {message}")]
    Product { product: String, message: String },
    /// Error-level checks failed on a product's build: it was not committed (or, for a
    /// fresh product whose checks changed, its committed build fails them).
    #[error("product `{product}`: checks failed: {}", describe_failed_checks(.runs))]
    Audit { product: String, runs: Vec<kiln_artifact::CheckRun> },
    /// An ad-hoc query that cannot run as written (the user's query).
    #[error("{0}")]
    Query(String),
    /// The command was used wrongly: an unknown product or column, a bad argument.
    #[error("{0}")]
    Usage(String),
    /// Another writer holds the project's writer lock and the command was told not to
    /// wait (`--no-wait`; kiln::lock).
    #[error("{0}")]
    Busy(String),
    /// Something that cannot happen did (a bug in Kiln, or a task that died).
    #[error("internal error: {0}")]
    Internal(String),
}

impl KilnError {
    /// Whether the user's input (project, SQL, options, arguments) is at fault: exit code 1
    /// (2 for usage errors), not 3.
    pub fn is_user_error(&self) -> bool {
        match self {
            KilnError::Control(e) => e.is_user_error(),
            KilnError::Data(e) => e.is_user_error(),
            KilnError::Usage(_)
            | KilnError::Product { .. }
            | KilnError::Query(_)
            | KilnError::Audit { .. }
            | KilnError::Busy(_) => true,
            KilnError::Artifact(_) | KilnError::Io { .. } | KilnError::Internal(_) => false,
        }
    }

    /// The process exit code for this error: 2 usage, 1 other user errors, 3 the
    /// environment or Kiln itself.
    pub fn exit_code(&self) -> u8 {
        match self {
            KilnError::Usage(_) => 2,
            e if e.is_user_error() => 1,
            _ => 3,
        }
    }
}

/// The error-level failures: `name: N failing row(s)`, separated by `; `.
fn describe_failed_checks(runs: &[kiln_artifact::CheckRun]) -> String {
    runs.iter()
        .filter(|r| r.status == kiln_artifact::CheckStatus::Error)
        .map(|r| match &r.error {
            Some(e) => format!("{}: {e}", r.name),
            None => format!("{}: {} failing row(s)", r.name, r.failing_rows),
        })
        .collect::<Vec<_>>()
        .join("; ")
}
