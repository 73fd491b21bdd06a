//! What callers pass to a run ([`BuildOptions`]), what a run tells its [`Observer`] while it
//! goes ([`Event`]), and what a build returns ([`BuildReport`]).

use std::sync::Arc;

use kiln_artifact::{ProductRun, RunSummary, ViewStatus};
use kiln_control::ControlError;
use kiln_data::WriteProgress;

/// What to build and how.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// A selection (`name`, `tag:t`, `path:p`, with `+` / `N+` operators:
    /// kiln_control::dag::Graph::select); all products when `None`.
    pub select: Option<String>,
    /// A selection to leave out of `select` (`--exclude`).
    pub exclude: Option<String>,
    /// A profile name; kiln.toml's `[profile] default` when `None`.
    pub profile: Option<String>,
    /// `--set key=value` overrides, applied last.
    pub settings: Vec<(String, String)>,
    /// `--var name=value`: values of kiln.toml's `[vars]` (kiln_control::vars).
    pub vars: Vec<(String, String)>,
    /// The environment to read and build (`--env`); `prod` when `None`.
    pub env: Option<String>,
    /// Whether a command that commits waits for another writer (`--no-wait`: fails).
    pub wait: crate::lock::Wait,
    /// `--start` / `--end` / `--restate`: the intervals incremental products compute.
    pub intervals: IntervalRequest,
}

/// Which intervals of the selected incremental products a build (re)computes: by default
/// the ones it must (kiln_control::incremental::decide); `range` limits the build to the
/// intervals holding those days (inclusive, days since 1970-01-01); `restate` recomputes
/// every interval in the range (or in the product) even when already computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalRequest {
    pub range: Option<(i32, i32)>,
    pub restate: bool,
}

impl BuildOptions {
    /// The environment these options name (`prod` by default).
    pub fn env(&self) -> &str {
        self.env.as_deref().unwrap_or(kiln_data::warehouse::PROD)
    }
}

/// Progress of a run, for whoever draws it.
#[derive(Debug)]
pub enum Event {
    /// Example data is being generated (first build only).
    Generating {
        scale_factor: f64,
    },
    Generated {
        rows: u64,
        seconds: f64,
    },
    /// The products to build, in order.
    Planned {
        products: Vec<String>,
    },
    ProductStarted {
        product: String,
        progress: Arc<WriteProgress>,
    },
    ProductFinished(ProductRun),
    /// An incremental product starts computing batch `batch` of `of`: `intervals`
    /// intervals from `start` to `end` (exclusive).
    IntervalBatch {
        product: String,
        batch: usize,
        of: usize,
        start: String,
        end: String,
        intervals: u64,
    },
    /// Something the user should know that does not fail the build.
    Warning(String),
    /// `kiln stream`: each view's progress, about once a second.
    StreamProgress(Vec<ViewStatus>),
}

/// Receives events; implemented by the CLI's progress display.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// Forwards every event to `inner` and keeps the warnings, for a run's summary.
pub(crate) struct KeepWarnings<'a> {
    inner: &'a dyn Observer,
    warnings: std::sync::Mutex<Vec<String>>,
}

impl<'a> KeepWarnings<'a> {
    pub(crate) fn new(inner: &'a dyn Observer) -> Self {
        Self { inner, warnings: std::sync::Mutex::default() }
    }

    /// The warnings so far, in the order they were given.
    pub(crate) fn take(&self) -> Vec<String> {
        self.warnings.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}

impl Observer for KeepWarnings<'_> {
    fn event(&self, event: Event) {
        if let Event::Warning(message) = &event
            && let Ok(mut w) = self.warnings.lock()
        {
            w.push(message.clone());
        }
        self.inner.event(event);
    }
}

/// An observer that ignores everything (library use, tests).
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

/// The outcome of a build.
#[derive(Debug)]
pub struct BuildReport {
    pub summary: RunSummary,
    /// Problems outside any one product (files that do not parse, duplicate definitions);
    /// also in `summary.errors` as text.
    pub problems: Vec<ControlError>,
}

impl BuildReport {
    pub fn failed(&self) -> impl Iterator<Item = &ProductRun> {
        self.summary.products.iter().filter(|p| p.action.is_failure())
    }
}
