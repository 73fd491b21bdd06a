//! Progress bars for `kiln build` (indicatif; hidden when stderr is not a terminal).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::Event;
use kiln::artifact::Action;

pub struct CliProgress {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    /// Whether progress is shown at all (`--json` hides it).
    enabled: bool,
}

impl CliProgress {
    pub fn new(enabled: bool) -> Self {
        let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self { multi: MultiProgress::with_draw_target(target), bars: Mutex::new(HashMap::new()), enabled }
    }

    pub fn finish(&self) {
        let _ = self.multi.clear();
    }

    fn bar(&self, product: &str) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(product).cloned()
    }
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
                let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:<30} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                let Ok(mut bars) = self.bars.lock() else { return };
                for p in products {
                    let bar = self.multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    bar.set_prefix(p.clone());
                    bar.set_message("waiting");
                    bars.insert(p, bar);
                }
            }
            Event::ProductStarted { product, progress } => {
                let Some(bar) = self.bar(&product) else { return };
                bar.enable_steady_tick(Duration::from_millis(100));
                let watched = bar.clone();
                tokio::spawn(async move {
                    while !watched.is_finished() {
                        let rows = progress.rows.load(Ordering::Relaxed);
                        let files = progress.files.load(Ordering::Relaxed);
                        watched.set_message(format!("{rows} rows, {files} files"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
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
            Event::ProductFinished(run) => {
                let Some(bar) = self.bar(&run.product) else { return };
                let msg = match run.action {
                    Action::Built => format!("built: {} rows, {} files in {:.2}s", run.rows, run.files, run.seconds),
                    Action::Fresh => "fresh".to_owned(),
                    Action::Reused => "reused: nothing executed".to_owned(),
                    Action::Failed => "FAILED".to_owned(),
                    Action::AuditFailed => "AUDIT FAILED: nothing committed".to_owned(),
                    Action::Skipped => "skipped".to_owned(),
                };
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
