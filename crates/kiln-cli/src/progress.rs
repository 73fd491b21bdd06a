//! Progress of `kiln build` (indicatif). On a terminal: one line per product with its
//! phase (`plan`; `scan`, `sort` or `aggregate` while operators still read and nothing is
//! written; `write`, `checks`, `commit`), a bar of rows against the plan's estimate from
//! its inputs' statistics (when they have one), bytes, files, elapsed time and an ETA,
//! under an overall line `products 3/6, 1 failed`. Elsewhere (CI logs): a line when a
//! product starts and when it finishes, and one every 10 s while it runs
//! (`KILN_PROGRESS_INTERVAL` = seconds sets how often).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::Event;
use kiln::artifact::Action;
use kiln::data::WriteProgress;

/// How often a non-terminal log says how a running product is doing: every 10 s, or
/// `KILN_PROGRESS_INTERVAL` seconds.
fn log_every() -> Duration {
    std::env::var("KILN_PROGRESS_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs(10), Duration::from_secs_f64)
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    done: usize,
    failed: usize,
}

pub struct CliProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    overall: Mutex<Option<ProgressBar>>,
    counts: Arc<Mutex<Counts>>,
    /// Whether progress is shown at all (`--json` hides it).
    enabled: bool,
}

impl CliProgress {
    pub fn new(enabled: bool) -> Self {
        let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            overall: Mutex::new(None),
            counts: Arc::default(),
            enabled,
        }
    }

    pub fn finish(&self) {
        let _ = self.multi.clear();
    }

    /// Clears the display and says what an interrupted build leaves behind.
    pub fn interrupted(&self) {
        let _ = self.multi.clear();
        let (done, total) = self.counts.lock().map(|c| (c.done, c.total)).unwrap_or_default();
        eprintln!(
            "interrupted: nothing of the running builds was committed ({done} of {total} products had finished; \
             what they committed stays)"
        );
    }

    fn bar(&self, product: &str) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(product).cloned()
    }

    /// Whether to write log lines instead of drawing (progress on, stderr not a terminal).
    fn logs(&self) -> bool {
        self.enabled && self.multi.is_hidden()
    }

    fn update_overall(&self) {
        let Ok(counts) = self.counts.lock() else { return };
        if let Ok(overall) = self.overall.lock()
            && let Some(bar) = overall.as_ref()
        {
            bar.set_message(overall_line(&counts));
        }
    }
}

fn overall_line(c: &Counts) -> String {
    let failed = if c.failed > 0 { format!(", {} failed", c.failed) } else { String::new() };
    format!("products {}/{}{failed}", c.done, c.total)
}

/// `1.2 MB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// One running product: `write 120000/600572 rows, 4.1 MB, 1 files, 3.2s, ETA 12s`.
fn running_line(progress: &WriteProgress, started: Instant, first_row: &mut Option<(Instant, u64)>) -> String {
    let rows = progress.rows.load(Ordering::Relaxed);
    let estimate = progress.estimated_rows.load(Ordering::Relaxed);
    let files = progress.files.load(Ordering::Relaxed);
    let bytes = progress.bytes.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    if rows > 0 && first_row.is_none() {
        *first_row = Some((Instant::now(), rows));
    }
    let rows_text = if estimate > 0 { format!("{rows}/~{estimate} rows") } else { format!("{rows} rows") };
    // The ETA: the rows still expected at the rate since the first row was written.
    let eta = match first_row {
        Some((at, first)) if estimate > rows && rows > *first => {
            let rate = (rows - *first) as f64 / at.elapsed().as_secs_f64().max(1e-3);
            format!(", ETA {:.0}s", (estimate - rows) as f64 / rate)
        }
        _ => String::new(),
    };
    format!(
        "{} {rows_text}, {}, {files} {}, {elapsed:.1}s{eta}",
        progress.phase_name(),
        human_bytes(bytes),
        if files == 1 { "file" } else { "files" }
    )
}

impl kiln::Observer for CliProgress {
    fn event(&self, event: Event) {
        match event {
            Event::Generating { scale_factor } => {
                self.multi.suspend(|| eprintln!("generating TPC-H data at scale factor {scale_factor} ..."));
            }
            Event::Warning(message) => {
                self.multi.suspend(|| eprintln!("warning: {message}"));
            }
            Event::Generated { rows, seconds } => {
                self.multi.suspend(|| eprintln!("generated {rows} rows in {seconds:.1}s"));
            }
            Event::Planned { products } => {
                if let Ok(mut counts) = self.counts.lock() {
                    *counts = Counts { total: products.len(), ..Counts::default() };
                }
                if self.multi.is_hidden() {
                    return;
                }
                let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:<30} {bar:16.cyan/blue} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let overall_style = ProgressStyle::with_template("{msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let overall = self.multi.add(ProgressBar::new_spinner().with_style(overall_style));
                overall.enable_steady_tick(Duration::from_millis(500));
                if let Ok(mut slot) = self.overall.lock() {
                    *slot = Some(overall);
                }
                self.update_overall();
                let Ok(mut bars) = self.bars.lock() else { return };
                for p in products {
                    let bar = self.multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    bar.set_prefix(p.clone());
                    bar.set_message("waiting");
                    bars.insert(p, bar);
                }
            }
            Event::ProductStarted { product, progress } => {
                let started = Instant::now();
                if self.logs() {
                    // (Numbered when it finishes: `[done/total]`, fresh products included.)
                    eprintln!("{product}: started");
                    // A thread of its own: the runtime's workers may all be busy executing.
                    std::thread::spawn(move || {
                        let mut first_row = None;
                        let every = log_every();
                        let mut next = started + every;
                        // Ends with the build: the process exits, or the counters are the
                        // last reference.
                        while Arc::strong_count(&progress) > 1 {
                            std::thread::sleep(Duration::from_millis(100));
                            let line = running_line(&progress, started, &mut first_row);
                            if Instant::now() >= next && Arc::strong_count(&progress) > 1 {
                                eprintln!("{product}: {line}");
                                next += every;
                            }
                        }
                    });
                    return;
                }
                let Some(bar) = self.bar(&product) else { return };
                bar.enable_steady_tick(Duration::from_millis(100));
                let watched = bar.clone();
                std::thread::spawn(move || {
                    let mut first_row = None;
                    while !watched.is_finished() {
                        let estimate = progress.estimated_rows.load(Ordering::Relaxed);
                        if estimate > 0 {
                            watched.set_length(estimate);
                            watched.set_position(progress.rows.load(Ordering::Relaxed).min(estimate));
                        }
                        watched.set_message(running_line(&progress, started, &mut first_row));
                        std::thread::sleep(Duration::from_millis(100));
                    }
                });
            }
            Event::StreamProgress(views) => {
                if !self.enabled {
                    return;
                }
                for v in views {
                    let line = stream_line(&v);
                    // On a terminal, one live line per view; otherwise (logs) a line per report.
                    if self.multi.is_hidden() {
                        eprintln!("{}: {line}", v.view);
                        continue;
                    }
                    let bar = self.bar(&v.view).unwrap_or_else(|| {
                        let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:<24} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner());
                        let bar = self.multi.add(ProgressBar::new_spinner().with_style(style));
                        bar.set_prefix(v.view.clone());
                        bar.enable_steady_tick(Duration::from_millis(100));
                        if let Ok(mut bars) = self.bars.lock() {
                            bars.insert(v.view.clone(), bar.clone());
                        }
                        bar
                    });
                    bar.set_message(line);
                }
            }
            Event::IntervalBatch { product, batch, of, start, end, intervals } => {
                let line = format!(
                    "batch {batch}/{of}: {intervals} {} from {start} (before {end})",
                    if intervals == 1 { "interval" } else { "intervals" }
                );
                if self.logs() {
                    eprintln!("{product}: {line}");
                } else if let Some(bar) = self.bar(&product) {
                    bar.set_prefix(format!("{product} [{batch}/{of}]"));
                }
            }
            Event::ProductFinished(run) => {
                let (done, total) = self
                    .counts
                    .lock()
                    .map(|mut c| {
                        c.done += 1;
                        c.failed += usize::from(run.action.is_failure());
                        (c.done, c.total)
                    })
                    .unwrap_or_default();
                self.update_overall();
                let msg = match run.action {
                    Action::Built => format!(
                        "built: {} rows, {}, {} files in {:.2}s",
                        run.rows,
                        human_bytes(run.bytes),
                        run.files,
                        run.seconds
                    ),
                    Action::Fresh => "fresh".to_owned(),
                    Action::Reused => "reused: nothing executed".to_owned(),
                    Action::Failed => "FAILED".to_owned(),
                    Action::AuditFailed => "AUDIT FAILED: nothing committed".to_owned(),
                    Action::Skipped => "skipped".to_owned(),
                };
                if self.logs() {
                    // Fresh products are in the summary; a log lists what ran or failed.
                    if run.action != Action::Fresh {
                        eprintln!("[{done}/{total}] {}: {msg}", run.product);
                    }
                    return;
                }
                let Some(bar) = self.bar(&run.product) else { return };
                if run.action == Action::Built {
                    bar.set_length(run.rows.max(1));
                    bar.set_position(run.rows.max(1));
                }
                bar.finish_with_message(msg);
            }
        }
    }
}

/// One view's progress: rate, watermark, lag, open windows, state, late, emitted.
pub fn stream_line(v: &kiln::artifact::ViewStatus) -> String {
    let lag = v.lag_records.map_or_else(|| "-".to_owned(), |l| l.to_string());
    format!(
        "{} events ({:.0}/s), watermark {}, lag {lag} records, {} open windows, state {} B, {} late, {} rejected, {} rows emitted, {} checkpoints",
        v.events,
        v.events_per_second,
        v.watermark.as_deref().unwrap_or("-"),
        v.open_windows,
        v.state_bytes,
        v.late,
        v.rejected,
        v.emitted,
        v.checkpoints
    )
}
