//! `kiln stream`: runs a project's materialized views over their streams until stopped
//! (or, with `--until-idle`, until no stream has anything new), checkpointing each every
//! `--checkpoint-interval`. The runtime is the data plane's (kiln_data::stream); this
//! module decides which views run, whether each takes up its committed checkpoint (only
//! one its own definition made), when to checkpoint and report, and records the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_artifact::{BuildFingerprints, STREAM_REPORT_VERSION};
pub use kiln_artifact::{Stopped, StreamReport, ViewStatus};
use kiln_control::dag::NodeKind;
use kiln_data::stream::{ViewDataset, ViewRunner, ViewSetup};

use crate::KilnError;
use crate::events::{BuildOptions, Event, Observer};
use crate::session::{Need, Session};

/// What `kiln stream` is asked to do.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub build: BuildOptions,
    /// Stop (after a final checkpoint) once no stream has new records.
    pub until_idle: bool,
    /// How often a checkpoint is taken; zero: after every micro-batch.
    pub checkpoint_interval: Duration,
    /// How long the loop sleeps when no stream had new records (each stream's own
    /// `poll_interval` decides when its source is polled again).
    pub poll_interval: Duration,
    /// How often progress is reported.
    pub progress_interval: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            build: BuildOptions::default(),
            until_idle: false,
            checkpoint_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(50),
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// Runs every selected materialized view until `stop` is set (or, with `until_idle`,
/// until no stream has new records), then takes a final checkpoint.
pub async fn stream(
    dir: &std::path::Path,
    options: &StreamOptions,
    observer: &dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<StreamReport, KilnError> {
    let mut session = Session::open(dir, &options.build, Need::Stream, observer).await?;
    // Problems elsewhere in the project (a product's source not generated yet, a file
    // that does not parse) do not stop views that compiled; a view that did not is an
    // error below.
    for problem in &session.problems {
        observer.event(Event::Warning(problem.to_string()));
    }
    let run_id = kiln_artifact::time::new_run_id();
    let mut runs = start_views(&mut session, &run_id).await?;
    let mut events_seq = 0u64;

    let mut last_checkpoint = Instant::now();
    let mut last_progress = Instant::now();
    let stopped = loop {
        if stop.load(Ordering::Relaxed) {
            break Stopped::Signal;
        }
        let mut any = false;
        for run in &mut runs {
            any |= run.step().await?;
        }
        let due = options.checkpoint_interval.is_zero() || last_checkpoint.elapsed() >= options.checkpoint_interval;
        if due {
            for run in &mut runs {
                checkpoint(&session, run, &run_id, &mut events_seq).await?;
            }
            last_checkpoint = Instant::now();
        }
        if last_progress.elapsed() >= options.progress_interval {
            let elapsed = last_progress.elapsed().as_secs_f64();
            let mut statuses = Vec::new();
            for run in &mut runs {
                statuses.push(run.status(elapsed).await);
            }
            observer.event(Event::StreamProgress(statuses));
            last_progress = Instant::now();
        }
        if !any {
            if options.until_idle {
                break Stopped::Idle;
            }
            let until = Instant::now() + options.poll_interval;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20).min(options.poll_interval)).await;
            }
        }
    };
    let mut views = Vec::new();
    let elapsed = last_progress.elapsed().as_secs_f64();
    for run in &mut runs {
        checkpoint(&session, run, &run_id, &mut events_seq).await?;
        views.push(run.status(elapsed).await);
    }
    let report = StreamReport { format_version: STREAM_REPORT_VERSION, run_id, views, stopped };
    // The run's record: its report, and one event per checkpoint (written as they commit).
    session.store.put_run_file(&report.run_id, "stream_summary.json", report.to_json()?).await?;
    session.store.finish_events(&report.run_id).await?;
    Ok(report)
}

/// Takes `run`'s checkpoint and records its event as the run's next event part.
async fn checkpoint(session: &Session, run: &mut ViewRunner, run_id: &str, seq: &mut u64) -> Result<(), KilnError> {
    if let Some(event) = run.checkpoint(&session.warehouse).await? {
        session.store.put_event_part(run_id, *seq, event.to_line()?).await?;
        *seq += 1;
    }
    Ok(())
}

/// Plans every selected view and takes up its checkpoint when that was made by the same
/// definition; otherwise it starts from the stream's beginning (and says why).
async fn start_views(session: &mut Session, run_id: &str) -> Result<Vec<ViewRunner>, KilnError> {
    let graph = Arc::clone(&session.graph);
    let views: Vec<usize> = session
        .order
        .iter()
        .copied()
        .filter(|&i| session.selected.contains(&i) && graph.nodes[i].kind == NodeKind::View)
        .collect();
    if views.is_empty() {
        return Err(KilnError::Usage("no materialized views to run (CREATE MATERIALIZED VIEW ... AS ...)".into()));
    }
    let mut runs = Vec::new();
    // Rejected records of a stream read by several views are written by the first of
    // them (by name); the others count them.
    let mut reject_owners = std::collections::BTreeSet::new();
    for i in views {
        let name = graph.nodes[i].name.clone();
        let product_error = |message: String| KilnError::Product { product: name.clone(), message };
        if let Some(e) = &session.nodes[i].failed {
            return Err(product_error(e.clone()));
        }
        session.ensure_compiled(i).await.map_err(|e| product_error(e.to_string()))?;
        let Some(product) = session.nodes[i].compiled.clone() else {
            return Err(product_error("not compiled".into()));
        };
        let Some(program) = product.view.clone() else {
            return Err(KilnError::Internal(format!("view `{name}` has no stream program")));
        };
        let feed = program.stream.name.clone();
        let Some((source, table)) = session.substrate.micro_batch_source(&feed) else {
            return Err(product_error(format!("`{feed}` is not a stream")));
        };
        let (source, table) = (source.clone(), Arc::clone(table));
        if let Some(d) = graph.get(&feed) {
            session.nodes[d].version = Some(source.version());
        }
        let Some((fps, definition)) = session.identity(i) else {
            return Err(product_error("not compiled".into()));
        };
        let (plan, task, batch_size) = session.substrate.view_plan(&product.plan).await?;
        let committed = session.warehouse.current_or_convert(&product.name, Some(&product.schema)).await?;
        let continues = committed.as_ref().is_some_and(|m| m.fingerprints.as_ref() == Some(&fps) && m.stream.is_some());
        let started = match committed.as_ref().and_then(|m| m.fingerprints.as_ref().map(|f| (m, f))) {
            None if committed.is_none() => "first run: from the beginning of the stream".to_owned(),
            None => "no checkpoint: from the beginning of the stream".to_owned(),
            Some((m, _)) if continues => format!("resumed from checkpoint {}", short(&m.build_id)),
            Some((_, old)) => {
                format!("definition changed ({}): from the beginning of the stream, replacing", changed(old, &fps))
            }
        };
        let setup = ViewSetup {
            dataset: ViewDataset {
                name: product.name.clone(),
                schema: Arc::clone(&product.schema),
                schema_fp: product.schema_fp.clone(),
                layout: product.layout.clone(),
            },
            owns_rejects: program.stream.reject && reject_owners.insert(feed.clone()),
            program,
            source,
            table,
            plan,
            task,
            batch_size,
            fps,
            definition,
            run_id: run_id.to_owned(),
            parquet: session.substrate.parquet_options(),
            resume: if continues { committed.clone() } else { None },
            base: committed,
            started,
        };
        runs.push(ViewRunner::start(setup, &session.warehouse).await?);
    }
    Ok(runs)
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// Which fingerprints differ between a committed checkpoint's definition and this one.
fn changed(old: &BuildFingerprints, new: &BuildFingerprints) -> String {
    let mut what = Vec::new();
    for (name, a, b) in [
        ("query", &old.query_fp, &new.query_fp),
        ("schema", &old.schema_fp, &new.schema_fp),
        ("settings", &old.runtime_fp, &new.runtime_fp),
        ("functions", &old.func_fp, &new.func_fp),
    ] {
        if a != b {
            what.push(name.to_owned());
        }
    }
    if old.upstream != new.upstream {
        let streams: Vec<String> = new.upstream.keys().map(|s| format!("stream `{s}`")).collect();
        what.push(streams.join(", "));
    }
    what.join(", ")
}
