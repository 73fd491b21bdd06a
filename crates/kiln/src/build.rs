//! `kiln build` and `kiln plan`.
//!
//! `build` runs in two phases. Phase 1, in dependency order: decide each selected product
//! ([`Session::step`]); a fresh product is bound to its committed build, a failed one
//! recorded, a product over a micro-batch source ingested now (its batches commit one by
//! one, so downstream decisions see what landed), and any other compiled, its canonical
//! plan stored and queued as a job. Phase 2: jobs execute (crate::execute), up to
//! `kiln.max_parallel_products` at once, each after the jobs it reads from have committed;
//! a job whose upstream job failed is skipped.
//!
//! A job is heavy when its inputs hold at least `kiln.heavy_product_bytes`: the files of
//! the sources it reads plus what the products it reads wrote in this run (a product
//! not built in this run counts 0). Decision: two heavy jobs never run at once, since
//! each spreads over every core (`target_partitions`) and takes the larger share of the
//! memory pool; side by side each ran slower and the peak RSS was the sum of both
//! (`revenue_by_nation_year` took 2.4 s beside `orders_nested`, 1.05 s alone). Light jobs
//! still fill the other slots. `plan` is phase 1 without acting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{
    Action, BuildFingerprints, ContentVersions, Decision, PlanReport, ProductPlan, ProductRun, Reason, RunSummary,
    TelemetryEvent,
};

use crate::KilnError;
use crate::decide::Step;
use crate::events::{BuildOptions, BuildReport, Event, Observer, Quiet};
use crate::execute::{Stamp, product_run, run_product};
use crate::record::{Events, Recorded, record_build};
use crate::session::{Need, Session};

/// A product to execute in this build, or (`recheck`) a fresh product whose changed
/// checks run on its committed build.
pub(crate) struct Job {
    pub(crate) i: usize,
    pub(crate) id: String,
    pub(crate) fps: BuildFingerprints,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) content: Option<ContentVersions>,
    /// Its checks (constraints and audits), run before the commit.
    pub(crate) checks: Vec<kiln_control::CompiledCheck>,
    /// The committed build a recheck runs on (nothing is executed or committed).
    pub(crate) recheck: Option<kiln_artifact::Manifest>,
}

/// Whether the checks of a product with build `id` must run again: they exist and did
/// not all pass on this build with these definitions.
async fn checks_stale(session: &Session, i: usize, id: &str) -> Result<bool, KilnError> {
    let fp = session.checks_fp(i);
    if fp.is_empty() {
        return Ok(false);
    }
    let record = session.store.checks(&session.graph.nodes[i].name).await?;
    Ok(!record.is_some_and(|r| {
        r.build_id == id && r.checks_fp == fp && r.checks.iter().all(|c| c.status != kiln_artifact::CheckStatus::Error)
    }))
}

/// An already committed build of product `i` with its new build id `id` (this
/// environment's earlier version, prod's, another environment's) whose files are all
/// there, with where it was found. Only for products that replace their data: an
/// appending product's build holds what earlier builds appended.
async fn reusable(
    session: &Session,
    i: usize,
    id: &str,
) -> Result<Option<(kiln_artifact::Manifest, String)>, KilnError> {
    let Some(product) = &session.nodes[i].compiled else { return Ok(None) };
    // An incremental product's build with an id may hold only some of its intervals.
    // A product merged by key holds what its merges brought.
    if product.layout.existing != kiln_data::ExistingData::Replace
        || product.incremental.is_some()
        || product.merge.is_some()
    {
        return Ok(None);
    }
    Ok(session.warehouse.find_build(&product.name, id).await?)
}

/// Binds product `i` to its [`reusable`] build: nothing is executed and no data written.
/// Its side datasets (`__rejected`, `__failures`, and the `<source>__rejected` of the
/// rejecting sources it reads, at their files' version) are bound to that build's too,
/// first, as a build commits them: rejects or failures of another build would describe
/// rows that are not there. When a side dataset holds rows of another build and the reused
/// build's is not found (it had none there, or it was collected), the product is not
/// reused but built.
async fn reuse(
    session: &Session,
    i: usize,
    id: &str,
    current: Option<&kiln_artifact::Manifest>,
) -> Result<Option<(kiln_artifact::Manifest, String)>, KilnError> {
    let Some((found, from)) = reusable(session, i, id).await? else { return Ok(None) };
    let name = &session.graph.nodes[i].name;
    let mut sides = Vec::new();
    for side in [format!("{name}__rejected"), crate::session::failures_name(name)] {
        let now = session.warehouse.current(&side).await?;
        if now.as_ref().is_some_and(|m| m.build_id == id) {
            continue;
        }
        match session.warehouse.find_build(&side, id).await? {
            Some((build, _)) => sides.push((side, build, now)),
            None if now.as_ref().is_none_or(|m| m.totals.rows_written == 0) => {}
            None => return Ok(None),
        }
    }
    // The rejects of the sources it reads: their build (by the files' version) exists
    // where the reused build was built, unless gc took it.
    for &d in &session.graph.nodes[i].deps {
        let Some(version) = &session.nodes[d].rejects_version else { continue };
        let side = format!("{}__rejected", session.graph.nodes[d].name);
        let now = session.warehouse.current(&side).await?;
        if now.as_ref().is_some_and(|m| &m.build_id == version) {
            continue;
        }
        match session.warehouse.find_build(&side, version).await? {
            Some((build, _)) => sides.push((side, build, now)),
            None => return Ok(None),
        }
    }
    for (side, build, now) in sides {
        let manifest = session.warehouse.adopt(&build, now.as_ref()).await?;
        if let Some(table) = session.substrate.product_table(&side) {
            table.bind(&session.warehouse, &manifest)?;
        }
    }
    let manifest = session.warehouse.adopt(&found, current).await?;
    Ok(Some((manifest, from)))
}

/// Builds a project: every selected product whose build id differs from its committed
/// build is executed and committed; the others are reported fresh. Project-level problems
/// (no project, syntax errors, unknown tables, cycles) are an `Err`; per-product failures
/// are reported in the summary, with every independent product still built.
pub async fn build(dir: &Path, options: &BuildOptions, observer: &dyn Observer) -> Result<BuildReport, KilnError> {
    let started = Instant::now();
    let kept = crate::events::KeepWarnings::new(observer);
    let observer: &dyn Observer = &kept;
    let mut session = Session::open(dir, options, Need::Data, observer).await?;
    for s in crate::testing::source_freshness(&session).await {
        if s.status != kiln_artifact::CheckStatus::Pass {
            let age = s
                .age_seconds
                .map_or_else(|| s.error.clone().unwrap_or_default(), |a| format!("newest data is {a:.0}s old"));
            observer.event(Event::Warning(format!("source `{}` is stale ({}): {age}", s.source, s.status.as_str())));
        }
    }
    let run_id = kiln_artifact::time::new_run_id();
    let products = session.products();
    let graph = Arc::clone(&session.graph);
    observer.event(Event::Planned { products: products.iter().map(|&i| graph.nodes[i].name.clone()).collect() });
    let events = Events::start(session.store.clone(), &run_id);
    events.emit(events.event("run_started"));
    let finished = |i: usize, run: &ProductRun, session: &Session| {
        events.emit(TelemetryEvent {
            product: Some(run.product.clone()),
            action: Some(run.action.as_str().to_owned()),
            build_id: run.build_id.clone(),
            fingerprints: session.identity(i).map(|(fps, _)| fps),
            ordering_tier: session.nodes[i].compiled.as_ref().map(|c| c.layout.ordering.tier()),
            rows: Some(run.rows),
            seconds: Some(run.seconds),
            error: run.error.clone(),
            ..events.event("product_finished")
        });
        observer.event(Event::ProductFinished(run.clone()));
    };

    // Phase 1, in dependency order.
    let mut currents = session.currents(&products).await?;
    let mut results: HashMap<usize, ProductRun> = HashMap::new();
    let mut jobs: Vec<Job> = Vec::new();
    for &i in &products {
        let name = graph.nodes[i].name.clone();
        let t = Instant::now();
        let current = currents.remove(&i).flatten();
        let done = match session.step(i, current.clone()).await? {
            Step::Blocked { action, reason } => Some(product_run(&name, action, Some(reason), t)),
            Step::Failed(e) => Some(product_run(&name, Action::Failed, Some(e), t)),
            // Ingest commits batch by batch, now, so downstream decisions see its data.
            Step::Ingest { feed } => Some(session.ingest(i, &feed, current, &run_id, observer).await),
            Step::Fresh { id, manifest, fps } => {
                if let Some(table) = session.substrate.product_table(&name) {
                    table.bind(&session.warehouse, &manifest)?;
                }
                if checks_stale(&session, i, &id).await? {
                    match session.product_checks(i).await {
                        Ok(checks) => {
                            let content = session.nodes[i].content.clone();
                            let reasons = Vec::new();
                            jobs.push(Job { i, id, fps, reasons, content, checks, recheck: Some(manifest) });
                            continue;
                        }
                        Err(e) => {
                            session.nodes[i].failed = Some(e.to_string());
                            let run = product_run(&name, Action::Failed, Some(e.to_string()), t);
                            finished(i, &run, &session);
                            results.insert(i, run);
                            continue;
                        }
                    }
                }
                Some(ProductRun {
                    build_id: Some(id),
                    rows: manifest.totals.rows_written,
                    files: manifest.totals.files,
                    bytes: manifest.totals.bytes,
                    ..product_run(&name, Action::Fresh, None, t)
                })
            }
            Step::Build { fps, id, mut reasons, current } => {
                let compiled = session.ensure_compiled(i).await;
                let reused = match compiled {
                    Ok(()) => reuse(&session, i, &id, current.as_ref()).await?,
                    Err(_) => None,
                };
                if let Some((manifest, from)) = reused {
                    reasons.push(Reason::Reused { build_id: id.clone(), from });
                    if let Some(table) = session.substrate.product_table(&name) {
                        table.bind(&session.warehouse, &manifest)?;
                    }
                    if checks_stale(&session, i, &id).await? {
                        let checks = session.product_checks(i).await;
                        if let Ok(checks) = checks {
                            let content = session.nodes[i].content.clone();
                            jobs.push(Job { i, id, fps, reasons, content, checks, recheck: Some(manifest) });
                            continue;
                        }
                    }
                    let run = ProductRun {
                        build_id: Some(id),
                        rows: manifest.totals.rows_written,
                        files: manifest.totals.files,
                        reasons,
                        ..product_run(&name, Action::Reused, None, t)
                    };
                    finished(i, &run, &session);
                    results.insert(i, run);
                    continue;
                }
                let checks = match compiled {
                    Ok(()) => session.product_checks(i).await,
                    Err(e) => Err(e),
                };
                match checks {
                    Err(e) => {
                        session.nodes[i].failed = Some(e.to_string());
                        Some(product_run(&name, Action::Failed, Some(e.to_string()), t))
                    }
                    Ok(checks) => {
                        if let Some(product) = &session.nodes[i].compiled {
                            session.store.put_plan(&product.canonical).await?;
                        }
                        let content = session.nodes[i].content.clone();
                        jobs.push(Job { i, id, fps, reasons, content, checks, recheck: None });
                        None
                    }
                }
            }
        };
        if let Some(run) = done {
            finished(i, &run, &session);
            results.insert(i, run);
        }
    }

    // A development fallback of a secret is worth a warning only when a product about to
    // be computed is keyed by it.
    for name in session.substrate.secret_fallbacks() {
        let users: Vec<&str> = jobs
            .iter()
            .filter_map(|j| session.nodes[j.i].compiled.as_ref())
            .filter(|p| p.secrets.contains(name))
            .map(|p| p.name.as_str())
            .collect();
        if !users.is_empty() {
            observer.event(Event::Warning(format!(
                "secret `{name}` uses its fallback value from kiln.toml (for {}); set its environment variable outside development",
                users.join(", ")
            )));
        }
    }

    // Phase 2: execute the jobs, independent ones concurrently, each after the jobs it
    // reads from have committed; a job whose upstream job failed is skipped. A job's
    // checks read other products as committed, so it also waits for the jobs of the
    // products its checks read (unless those are downstream of it).
    let limit = session.profile.max_parallel_products()?;
    let in_jobs: BTreeSet<usize> = jobs.iter().map(|j| j.i).collect();
    let mut waits: HashMap<usize, Vec<usize>> = HashMap::new();
    for job in &jobs {
        let mut deps: Vec<usize> = graph.nodes[job.i].deps.iter().copied().filter(|d| in_jobs.contains(d)).collect();
        let reads: Vec<usize> = session
            .check_reads(&job.checks)
            .into_iter()
            .filter(|d| *d != job.i && in_jobs.contains(d) && !deps.contains(d))
            .collect();
        // Only a job whose checks read another job's product walks its downstream (waiting
        // for a product downstream of it would never end).
        if !reads.is_empty() {
            let downstream = graph.select(&format!("{}+", graph.nodes[job.i].name)).unwrap_or_default();
            deps.extend(reads.into_iter().filter(|d| !downstream.contains(d)));
        }
        waits.insert(job.i, deps);
    }
    // Bytes of each source's files the jobs read, listed once (heavy jobs: module docs).
    let heavy_bytes = session.profile.heavy_product_bytes()?;
    let mut source_bytes: HashMap<usize, u64> = HashMap::new();
    for job in &jobs {
        for &d in &graph.nodes[job.i].deps {
            if let Some(files) = &session.nodes[d].files {
                let bytes = files.files().map_or(0, |f| f.iter().map(|f| f.size).sum());
                source_bytes.insert(d, bytes);
            }
        }
    }
    let mut ok: HashMap<usize, bool> = HashMap::new();
    let mut pending: VecDeque<Job> = jobs.into();
    let mut running = FuturesUnordered::new();
    let mut heavy_running: BTreeSet<usize> = BTreeSet::new();
    let session_ref = &session;
    loop {
        // Start every job whose upstream jobs are done, in dependency order; a heavy job
        // only while no other heavy one runs, light ones fill the other slots.
        let mut k = 0;
        while k < pending.len() && running.len() < limit {
            let deps = waits.get(&pending[k].i).cloned().unwrap_or_default();
            if let Some(&bad) = deps.iter().find(|d| ok.get(d) == Some(&false)) {
                let Some(job) = pending.remove(k) else { break };
                let audit = results.get(&bad).is_some_and(|r| r.action == Action::AuditFailed);
                let reason = if audit {
                    format!("upstream `{}` failed its checks", graph.nodes[bad].name)
                } else {
                    format!("upstream `{}` failed", graph.nodes[bad].name)
                };
                let run = product_run(&graph.nodes[job.i].name, Action::Skipped, Some(reason), Instant::now());
                ok.insert(job.i, false);
                finished(job.i, &run, session_ref);
                results.insert(job.i, run);
                continue;
            }
            if deps.iter().all(|d| ok.get(d) == Some(&true)) {
                let i = pending[k].i;
                let reads: u64 = graph.nodes[i]
                    .deps
                    .iter()
                    .map(|d| source_bytes.get(d).or(results.get(d).map(|r| &r.bytes)).copied().unwrap_or(0))
                    .sum();
                let heavy = reads >= heavy_bytes;
                if heavy && !heavy_running.is_empty() {
                    k += 1;
                    continue;
                }
                let Some(job) = pending.remove(k) else { break };
                if heavy {
                    heavy_running.insert(i);
                }
                running.push(execute(session_ref, job, &run_id, observer));
                continue;
            }
            k += 1;
        }
        let Some((i, run)) = running.next().await else { break };
        heavy_running.remove(&i);
        ok.insert(i, matches!(run.action, Action::Built | Action::Fresh | Action::Reused));
        finished(i, &run, session_ref);
        results.insert(i, run);
    }
    drop(running);
    let runs: Vec<ProductRun> = products.iter().filter_map(|i| results.remove(i)).collect();
    events.emit(TelemetryEvent { seconds: Some(started.elapsed().as_secs_f64()), ..events.event("run_finished") });

    let mut summary = RunSummary {
        format_version: 1,
        run_id: run_id.clone(),
        project: session.project.config.project.name.clone(),
        env: options.env().to_owned(),
        profile: session.profile.name.clone(),
        runtime_fp: session.substrate.runtime_fp().to_owned(),
        errors: session.problems.iter().map(ToString::to_string).collect(),
        products: runs,
        seconds: started.elapsed().as_secs_f64(),
        promotions: session.promotions.clone(),
        warnings: Vec::new(),
    };
    events.finish(observer).await;
    summary.warnings = kept.take();
    let settings = serde_json::to_vec_pretty(&session.profile.effective()?)
        .map_err(|e| KilnError::Internal(format!("cannot encode the run's settings: {e}")))?;
    session.store.put_run_file(&run_id, "settings.json", settings).await?;
    session.store.put_run_file(&run_id, "run_summary.json", summary.to_json()?).await?;
    Ok(BuildReport { summary, problems: session.problems })
}

/// Executes and commits one job, records its build, and returns its line in the summary.
async fn execute(session: &Session, job: Job, run_id: &str, observer: &dyn Observer) -> (usize, ProductRun) {
    let t = Instant::now();
    let name = &session.graph.nodes[job.i].name;
    if let Some(manifest) = &job.recheck {
        return (job.i, recheck(session, &job, manifest, run_id, t).await);
    }
    let Some(product) = &session.nodes[job.i].compiled else {
        return (job.i, product_run(name, Action::Failed, Some("not compiled".into()), t));
    };
    let stamp = Stamp { build_id: &job.id, fps: &job.fps, content: job.content.as_ref() };
    let recorded =
        Recorded { id: &job.id, fps: &job.fps, compile_seconds: session.nodes[job.i].compile_seconds.unwrap_or(0.0) };
    // The last-resort boundary: a panic while building one product (Kiln's or a
    // dependency's bug, e.g. inside DataFusion) fails that product, exit 3, and the
    // rest of the run goes on. Nothing of it was committed: the commit is its last step.
    let mut intervals = None;
    let merged = std::sync::Mutex::new(None);
    let running: std::pin::Pin<Box<dyn std::future::Future<Output = Result<crate::record::Built, KilnError>> + '_>> =
        if product.merge.is_some() {
            let (merged, job) = (&merged, &job);
            Box::pin(async move {
                let current = session.warehouse.current_or_convert(name, Some(&product.schema)).await?;
                let Some(work) = session.merge_work(job.i, &job.fps, current.as_ref()).await? else {
                    return Err(KilnError::Internal(format!("product `{name}`: no merge")));
                };
                let (built, report) =
                    crate::merge::run_merge(&session.substrate, product, &job.checks, stamp, run_id, observer, work)
                        .await?;
                if let Ok(mut slot) = merged.lock() {
                    *slot = Some(Box::new(report));
                }
                Ok(built)
            })
        } else if product.incremental.is_some() {
            let work = async {
                let current = session.warehouse.current_or_convert(name, Some(&product.schema)).await?;
                session.interval_work(job.i, &job.fps, current.as_ref()).await
            };
            match work.await {
                Ok(Some(work)) => {
                    intervals = Some(Box::new(work.plan.clone()));
                    Box::pin(crate::incremental::run_incremental(
                        &session.substrate,
                        product,
                        &job.checks,
                        stamp,
                        run_id,
                        observer,
                        work,
                    ))
                }
                Ok(None) => Box::pin(run_product(&session.substrate, product, &job.checks, stamp, run_id, observer)),
                Err(e) => Box::pin(async move { Err(e) }),
            }
        } else {
            Box::pin(run_product(&session.substrate, product, &job.checks, stamp, run_id, observer))
        };
    let outcome = match futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(running)).await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            let error = format!(
                "product `{name}`: internal error: panicked: {message} (nothing of it was committed; this is a bug, please report it)"
            );
            return (job.i, ProductRun { internal: true, ..product_run(name, Action::Failed, Some(error), t) });
        }
    };
    let outcome = match outcome {
        Ok(built) => {
            let checks = built.checks.clone();
            record_build(session, product, recorded, run_id, built).await.map(|(m, p)| (m, p, checks))
        }
        Err(e) => Err(e),
    };
    let run = match outcome {
        Ok((manifest, phases, checks)) => {
            if !checks.is_empty() {
                record_checks(session, job.i, &job.id, &checks).await;
            }
            ProductRun {
                build_id: Some(job.id),
                rows: manifest.totals.rows_written,
                files: manifest.totals.files,
                bytes: manifest.totals.bytes,
                phases,
                reasons: job.reasons,
                checks,
                intervals,
                merge: merged.lock().ok().and_then(|mut m| m.take()),
                ..product_run(name, Action::Built, None, t)
            }
        }
        Err(KilnError::Audit { product, runs }) => {
            let error = KilnError::Audit { product, runs: runs.clone() }.to_string();
            ProductRun { checks: runs, ..product_run(name, Action::AuditFailed, Some(error), t) }
        }
        Err(e) => {
            let internal = matches!(e, KilnError::Internal(_));
            ProductRun {
                internal,
                ..product_run(name, Action::Failed, Some(locate_record_error(session, job.i, e)), t)
            }
        }
    };
    (job.i, run)
}

/// A product's error, and, when a reader refused a record of a CSV or JSON source it
/// reads in fail mode (DataFusion's readers name neither file nor line), where: the first
/// record Kiln's checked reader rejects in the sources, with the way to keep going.
fn locate_record_error(session: &Session, i: usize, e: KilnError) -> String {
    let KilnError::Data(data) = &e else { return e.to_string() };
    if !data.is_record_error() {
        return e.to_string();
    }
    let sources = session.graph.nodes[i].deps.iter().filter_map(|&d| session.nodes[d].records.as_ref());
    for source in sources {
        if let Ok(Some(r)) = source.first_bad_record() {
            let product = &session.graph.nodes[i].name;
            let file = std::path::Path::new(&r.file);
            let file = file.strip_prefix(&session.project.root).unwrap_or(file).display();
            return format!(
                "product `{product}`: source `{s}`: {file}:{}: {} (record: `{}`); on_error = 'reject' keeps such records in `{s}__rejected` instead",
                r.line,
                r.reason,
                r.raw,
                s = r.source
            );
        }
    }
    e.to_string()
}

/// Runs a fresh product's changed checks on its committed build.
async fn recheck(
    session: &Session,
    job: &Job,
    manifest: &kiln_artifact::Manifest,
    run_id: &str,
    t: Instant,
) -> ProductRun {
    let name = &session.graph.nodes[job.i].name;
    let fresh = ProductRun {
        build_id: Some(job.id.clone()),
        rows: manifest.totals.rows_written,
        files: manifest.totals.files,
        bytes: manifest.totals.bytes,
        ..product_run(name, Action::Fresh, None, t)
    };
    let Some(schema) = session.substrate.product_table(name).map(|p| std::sync::Arc::clone(p.schema_ref())) else {
        return product_run(name, Action::Failed, Some("not registered".into()), t);
    };
    let ids = kiln_data::BuildIds { build_id: job.id.clone(), run_id: run_id.to_owned(), batch: None };
    let outcome = async {
        let results = crate::checks::run_checks(&session.substrate, name, &schema, &job.checks, None).await?;
        crate::checks::publish_failures(&session.substrate, name, &results, ids, 1_000_000).await?;
        Ok::<_, KilnError>(results)
    }
    .await;
    match outcome {
        Ok(results) => {
            record_checks(session, job.i, &job.id, &results.runs).await;
            if results.blocks() {
                let error = KilnError::Audit { product: name.clone(), runs: results.runs.clone() }.to_string();
                return ProductRun { checks: results.runs, ..product_run(name, Action::AuditFailed, Some(error), t) };
            }
            ProductRun { checks: results.runs, seconds: t.elapsed().as_secs_f64(), ..fresh }
        }
        Err(e) => product_run(name, Action::Failed, Some(e.to_string()), t),
    }
}

/// Records which checks ran on product `i`'s build `id` (a record that cannot be written
/// only means they run again next time).
async fn record_checks(session: &Session, i: usize, id: &str, checks: &[kiln_artifact::CheckRun]) {
    let record = kiln_artifact::ChecksRecord {
        build_id: id.to_owned(),
        checks_fp: session.checks_fp(i),
        checks: checks.to_vec(),
    };
    let _ = session.store.put_checks(&session.graph.nodes[i].name, &record).await;
}

/// A plan entry with the names of the checks that would run, or the reason they cannot.
fn with_checks(mut plan: ProductPlan, checks: Result<Vec<kiln_control::CompiledCheck>, KilnError>) -> ProductPlan {
    match checks {
        Ok(checks) => plan.checks = checks.into_iter().map(|c| c.name).collect(),
        Err(e) => {
            plan.decision = Decision::Failed;
            plan.error = Some(e.to_string());
        }
    }
    plan
}

/// `kiln plan`: the decisions `build` would take, without executing or writing anything.
pub async fn plan(dir: &Path, options: &BuildOptions) -> Result<PlanReport, KilnError> {
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    let products = plan_products(&mut session).await?;
    Ok(PlanReport {
        format_version: REPORT_FORMAT_VERSION,
        project: session.project.config.project.name.clone(),
        profile: session.profile.name.clone(),
        runtime_fp: session.substrate.runtime_fp().to_owned(),
        settings: session.profile.effective()?,
        errors: session.problems.iter().map(ToString::to_string).collect(),
        products,
    })
}

/// Phase 1 for the session's selected products: what each would do, and why.
pub(crate) async fn plan_products(session: &mut Session) -> Result<Vec<ProductPlan>, KilnError> {
    let graph = Arc::clone(&session.graph);
    let selected = session.products();
    let mut currents = session.currents(&selected).await?;
    let mut products = Vec::new();
    let mut building: BTreeSet<String> = BTreeSet::new();
    for i in selected {
        let name = graph.nodes[i].name.clone();
        let failed = |error: String| ProductPlan {
            product: name.clone(),
            decision: Decision::Failed,
            build_id: None,
            fingerprints: None,
            current_build_id: None,
            reasons: Vec::new(),
            error: Some(error),
            checks: Vec::new(),
            intervals: None,
            merge: None,
        };
        let current = currents.remove(&i).flatten();
        let entry = match session.step(i, current.clone()).await? {
            Step::Blocked { reason, .. } | Step::Failed(reason) => failed(reason),
            Step::Ingest { feed } => match session.plan_ingest(i, &feed, current).await {
                Ok(plan) => plan,
                Err(e) => {
                    session.nodes[i].failed = Some(e.to_string());
                    failed(e.to_string())
                }
            },
            Step::Fresh { fps, id, manifest } => {
                let checks =
                    if checks_stale(session, i, &id).await? { session.product_checks(i).await } else { Ok(Vec::new()) };
                let plan = ProductPlan {
                    product: name.clone(),
                    decision: Decision::Fresh,
                    build_id: Some(id),
                    fingerprints: Some(fps),
                    current_build_id: Some(manifest.build_id),
                    reasons: Vec::new(),
                    error: None,
                    checks: Vec::new(),
                    intervals: None,
                    merge: None,
                };
                with_checks(plan, checks)
            }
            Step::Build { fps, id, mut reasons, current } => {
                let compiled = session.ensure_compiled(i).await;
                if compiled.is_ok()
                    && let Some((_, from)) = reusable(session, i, &id).await?
                {
                    reasons.push(Reason::Reused { build_id: id.clone(), from });
                }
                let intervals = match compiled {
                    Ok(()) => session.interval_work(i, &fps, current.as_ref()).await.map(|w| w.map(|w| w.plan)),
                    Err(_) => Ok(None),
                };
                let (mut intervals, mut interval_error) = match intervals {
                    Ok(plan) => (plan, None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let merge = match compiled {
                    Ok(()) => match session.merge_work(i, &fps, current.as_ref()).await {
                        Ok(work) => work.map(|w| w.plan),
                        Err(e) => {
                            interval_error = Some(e.to_string());
                            None
                        }
                    },
                    Err(_) => None,
                };
                // Over a product this build builds first, its new files decide.
                let input = session.nodes[i]
                    .compiled
                    .as_ref()
                    .and_then(|p| p.incremental.as_ref())
                    .and_then(|s| s.filter.input());
                if let (Some(plan), Some(input)) = (&mut intervals, input)
                    && building.contains(input)
                {
                    plan.after = Some(input.to_owned());
                }
                building.insert(name.clone());
                let plan = ProductPlan {
                    product: name.clone(),
                    decision: if interval_error.is_some() { Decision::Failed } else { Decision::Build },
                    build_id: Some(id),
                    fingerprints: Some(fps),
                    current_build_id: current.map(|m| m.build_id),
                    reasons,
                    error: interval_error,
                    checks: Vec::new(),
                    intervals,
                    merge,
                };
                let checks = match compiled {
                    Ok(()) => session.product_checks(i).await,
                    Err(e) => Err(e),
                };
                with_checks(plan, checks)
            }
        };
        products.push(entry);
    }
    Ok(products)
}
