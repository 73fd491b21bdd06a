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
}

impl CliProgress {
    pub fn new(enabled: bool) -> Self {
        let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Self { multi: MultiProgress::with_draw_target(target), bars: Mutex::new(HashMap::new()) }
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
            Event::ProductFinished(run) => {
                let Some(bar) = self.bar(&run.product) else { return };
                let msg = match run.action {
                    Action::Built => format!("built: {} rows, {} files in {:.2}s", run.rows, run.files, run.seconds),
                    Action::Fresh => "fresh".to_owned(),
                    Action::Failed => "FAILED".to_owned(),
                    Action::Skipped => "skipped".to_owned(),
                };
                bar.finish_with_message(msg);
            }
        }
    }
}
