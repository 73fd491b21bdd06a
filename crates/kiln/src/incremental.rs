//! Incremental products (`incremental = 'by_time'`) in the engine: which intervals a
//! build computes, and computing them batch by batch.
//!
//! The control plane decides from facts ([`kiln_control::incremental::decide`]); this
//! module gathers them: the committed build's [`IntervalState`], the time input's files
//! now with the days each covers, and which of the product's fingerprints and inputs
//! changed. A file's days are known from its Hive partition value of the source column,
//! a product's file statistics, or else one `min`/`max` query over that file alone (each
//! file once: the state keeps the answer by path, size and modification time). Each
//! source value is mapped to the product's time column by the derived filter's steps.
//!
//! Each batch is one commit: the batch's plan is written into the build directory (its
//! files named by batch), merged with the committed files of every other interval, checked
//! and committed with the state after it, whose `pending` lists the batches still to come.
//! A killed backfill leaves its committed batches complete; the next build computes the
//! pending rest first.

use std::sync::Arc;
use std::time::Instant;

use datafusion::common::{Column, ScalarValue};
use datafusion::functions_aggregate::expr_fn::{max, min};
use datafusion::logical_expr::Expr;
use kiln_artifact::intervals::{DaySet, ForwardOnly, InputFile, IntervalPlan, IntervalState, format_day, parse_day};
use kiln_artifact::{BuildFingerprints, Manifest};
use kiln_control::dag::NodeKind;
use kiln_control::incremental::{Computation, Incremental, IntervalFilter, OnChange, decide, forward_day};
use kiln_control::{CompiledProduct, Substrate};
use kiln_data::{BuildIds, WriteProgress};

use crate::KilnError;
use crate::events::{Event, IntervalRequest, Observer};
use crate::execute::{Stamp, execute_plan, publish_source_rejects};
use crate::record::{Built, built};
use crate::session::Session;

/// What one build of an incremental product computes.
pub(crate) struct Work {
    pub(crate) plan: IntervalPlan,
    computation: Computation,
    batches: Vec<DaySet>,
    /// The intervals the committed build holds that this build keeps.
    done: DaySet,
    files: Option<Vec<InputFile>>,
    forward_only: Option<ForwardOnly>,
}

/// Today as a day number (UTC), plus one: the exclusive end of the intervals of a product
/// whose time input's files say nothing.
fn tomorrow() -> i32 {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    (secs / 86_400) as i32 + 1
}

/// The first and last day of the time column for a file whose source column ranges over
/// `lo..=hi`: `(None, None)` for a file without values; a range that does not map to days
/// is unknown (`(None, Some(""))`: every interval, see `InputFile`).
fn covered(
    filter: &IntervalFilter,
    lo: Option<ScalarValue>,
    hi: Option<ScalarValue>,
) -> (Option<String>, Option<String>) {
    match (lo, hi) {
        (None, None) => (None, None),
        (lo, hi) => match (lo.and_then(|v| forward_day(filter, v)), hi.and_then(|v| forward_day(filter, v))) {
            (Some(a), Some(b)) => (Some(format_day(a)), Some(format_day(b))),
            _ => (None, Some(String::new())),
        },
    }
}

/// How many intervals a committed build of an incremental product lacks, from its state
/// alone (its input's extent, else today): the gaps and the pending batches.
pub(crate) fn incomplete(state: &IntervalState, range: Option<(i32, i32)>) -> u64 {
    let Some(start) = parse_day(&state.start) else { return 0 };
    let grain = state.grain;
    let held = state.done_days().ranges().last().map_or(start, |r| r.1);
    let end = match (&state.input, state.extent()) {
        (Some(_), Some((_, b))) => grain.next(b - 1).max(start),
        (Some(_), None) => start,
        (None, _) => grain.next(tomorrow() - 1),
    }
    .max(held);
    let mut missing = DaySet::range(start, end).minus(&state.done_days()).union(&state.pending_days());
    if let Some((a, b)) = range {
        missing = missing.intersect(&DaySet::range(grain.floor(a), grain.next(b)));
    }
    missing.ranges().iter().map(|&(a, b)| grain.count(a, b)).sum()
}

impl Session {
    /// The time input's files now, each with the days of the product's time column it
    /// covers (`None` without a derived filter). Files the committed state lists with the
    /// same version keep their days.
    async fn time_files(
        &self,
        spec: &Incremental,
        previous: Option<&IntervalState>,
    ) -> Result<Option<Vec<InputFile>>, KilnError> {
        let IntervalFilter::Derived { table, column, source_type, .. } = &spec.filter else { return Ok(None) };
        let Some(d) = self.graph.get(table) else { return Ok(None) };
        let known = |path: &str, version: &str| {
            previous
                .filter(|s| s.input.as_deref() == Some(table.as_str()))
                .and_then(|s| s.files.iter().find(|f| f.path == path && f.version == version))
                .cloned()
        };
        let parse =
            |text: Option<&str>| text.and_then(|t| ScalarValue::try_from_string(t.to_owned(), source_type).ok());
        let mut out = Vec::new();
        match self.graph.nodes[d].kind {
            NodeKind::Source => {
                let Some(source) = &self.nodes[d].files else { return Ok(None) };
                let part = source.partition_by.iter().position(|c| c == column);
                for f in source.files()? {
                    let version = format!("{}:{}", f.size, f.mtime_ns);
                    if let Some(known) = known(&f.rel, &version) {
                        out.push(known);
                        continue;
                    }
                    let (lo, hi) = match (part, &f.partition) {
                        (Some(k), Some(values)) => {
                            let v = parse(values.get(k).and_then(Option::as_deref));
                            (v.clone(), v)
                        }
                        _ => self.file_range(source, &f.rel, column).await?,
                    };
                    let (first, last) = covered(&spec.filter, lo, hi);
                    out.push(InputFile { path: f.rel, version, first, last });
                }
            }
            NodeKind::Product => {
                let Some(manifest) = self.warehouse.current(table).await? else { return Ok(Some(out)) };
                let part = manifest.partition_by.iter().position(|c| c == column);
                for f in &manifest.files {
                    if f.rows == 0 {
                        continue;
                    }
                    let (lo, hi) = match part {
                        Some(k) => {
                            let v = parse(f.partition.get(k).and_then(Option::as_deref));
                            (v.clone(), v)
                        }
                        None => {
                            let stats = f.columns.get(column);
                            (parse(stats.and_then(|s| s.min.as_deref())), parse(stats.and_then(|s| s.max.as_deref())))
                        }
                    };
                    let (first, last) = match (&lo, &hi) {
                        (None, None) => (None, Some(String::new())), // no statistics: every interval
                        _ => covered(&spec.filter, lo, hi),
                    };
                    out.push(InputFile { path: f.path.clone(), version: String::new(), first, last });
                }
            }
            _ => return Ok(None),
        }
        Ok(Some(out))
    }

    /// The smallest and largest value of `column` in one file of `source` (a one-row
    /// aggregate: the only result collected here).
    async fn file_range(
        &self,
        source: &kiln_data::FileSource,
        rel: &str,
        column: &str,
    ) -> Result<(Option<ScalarValue>, Option<ScalarValue>), KilnError> {
        let fail = |e: datafusion::error::DataFusionError| {
            KilnError::Data(kiln_data::DataError::Execution {
                context: format!("source `{}`: {rel}: the range of `{column}`", source.name),
                source: e,
            })
        };
        let table = source.file_table(rel)?;
        let c = Expr::Column(Column::new_unqualified(column));
        let batches = self
            .substrate
            .context()
            .read_table(table)
            .and_then(|df| df.aggregate(Vec::new(), vec![min(c.clone()), max(c)]))
            .map_err(fail)?
            .collect()
            .await
            .map_err(fail)?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok((None, None)) };
        let value = |k: usize| ScalarValue::try_from_array(batch.column(k), 0).ok().filter(|v| !v.is_null());
        Ok((value(0), value(1)))
    }

    /// What a build of incremental product `i` with fingerprints `fps` computes over its
    /// committed build `current`.
    pub(crate) async fn interval_work(
        &self,
        i: usize,
        fps: &BuildFingerprints,
        current: Option<&Manifest>,
    ) -> Result<Option<Work>, KilnError> {
        let Some(product) = &self.nodes[i].compiled else { return Ok(None) };
        let Some(spec) = &product.incremental else { return Ok(None) };
        let state = current.and_then(|m| m.intervals.as_ref());
        let files = self.time_files(spec, state).await?;
        let old = current.and_then(|m| m.fingerprints.as_ref());
        let schema_changed = current.is_some() && (state.is_none() || old.is_none_or(|o| o.schema_fp != fps.schema_fp));
        let query_changed = old
            .is_some_and(|o| o.query_fp != fps.query_fp || o.func_fp != fps.func_fp || o.runtime_fp != fps.runtime_fp);
        let rebuild = schema_changed || (query_changed && spec.on_change == OnChange::Rebuild);
        let input = spec.filter.input();
        let other_changed = fps
            .upstream
            .iter()
            .filter(|(name, version)| {
                Some(name.as_str()) != input && old.is_some_and(|o| o.upstream.get(*name) != Some(*version))
            })
            .map(|(name, _)| name.clone())
            .collect();
        let request: IntervalRequest =
            if self.selected.contains(&i) { self.intervals } else { IntervalRequest::default() };
        let inputs = kiln_control::incremental::Inputs {
            state,
            files: files.as_deref(),
            today: tomorrow(),
            rebuild,
            other_changed,
            range: request.range,
            restate: request.restate,
        };
        let computation = decide(spec, &inputs);
        let days = computation.days();
        let batches = spec.batches(&days);
        let same = state
            .filter(|s| s.column == spec.column && s.grain == spec.grain && parse_day(&s.start) == Some(spec.start));
        let done = if computation.replace_all {
            DaySet::new()
        } else {
            same.map(IntervalState::done_days).unwrap_or_default()
        };
        let forward_only = (query_changed && !rebuild).then(|| ForwardOnly {
            query_fp: fps.query_fp.clone(),
            from: format_day(days.ranges().first().map_or(computation.full.1, |r| r.0)),
        });
        let compute = computation.report(spec.grain);
        let plan = IntervalPlan {
            column: spec.column.clone(),
            grain: spec.grain,
            filter: spec.filter.describe(),
            intervals: compute.iter().map(|r| r.intervals).sum(),
            compute,
            batches: batches.len() as u64,
            held: spec.grain.count(computation.full.0, computation.full.1),
            forward_only: forward_only.as_ref().map(|f| {
                format!("the query changed: intervals before {} keep the previous query's rows (on_change = 'forward_only')", f.from)
            }),
            after: None,
        };
        Ok(Some(Work { plan, computation, batches, done, files, forward_only }))
    }
}

/// Computes `work` for incremental `product`, one commit per batch (see the module docs).
pub(crate) async fn run_incremental(
    substrate: &Substrate,
    product: &CompiledProduct,
    checks: &[kiln_control::CompiledCheck],
    stamp: Stamp<'_>,
    run_id: &str,
    observer: &dyn Observer,
    work: Work,
) -> Result<Built, KilnError> {
    let Some(spec) = &product.incremental else {
        return Err(KilnError::Internal(format!("product `{}` is not incremental", product.name)));
    };
    let warehouse = substrate.warehouse();
    let mut previous = warehouse.current_or_convert(&product.name, Some(&product.schema)).await?;
    let progress = Arc::new(WriteProgress::default());
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });
    let t = Instant::now();
    let mut done = work.done.clone();
    let mut remaining = work.computation.days();
    // Nothing to compute (only the inputs' state is new): one empty batch records it.
    let batches = if work.batches.is_empty() { vec![DaySet::new()] } else { work.batches.clone() };
    let count = batches.len();
    let mut last = None;
    let mut check_runs = Vec::new();
    for (k, days) in batches.iter().enumerate() {
        remaining = remaining.minus(days);
        if let (Some(&(a, _)), Some(&(_, b))) = (days.ranges().first(), days.ranges().last()) {
            observer.event(Event::IntervalBatch {
                product: product.name.clone(),
                batch: k + 1,
                of: count,
                start: format_day(a),
                end: format_day(b),
                intervals: days.ranges().iter().map(|&(x, y)| spec.grain.count(x, y)).sum(),
            });
        }
        let plan = kiln_control::incremental::batch_plan(&product.plan, spec, days).map_err(|e| {
            KilnError::Internal(format!("product `{}`: interval plan: {}", product.name, e.strip_backtrace()))
        })?;
        let plan = substrate.optimize(&plan)?;
        let ids = BuildIds { build_id: stamp.build_id.to_owned(), run_id: run_id.to_owned(), batch: Some(k as u64) };
        let (mut manifest, physical, mut phases) =
            execute_plan(substrate, product, &plan, ids.clone(), Arc::clone(&progress)).await?;
        for found in kiln_data::checked::collect_rejects(&physical) {
            publish_source_rejects(substrate, &found, run_id).await?;
            let n = found.rejects.len() as u64;
            manifest.totals.rows_rejected += n;
            manifest.totals.rows_read += n;
        }
        let nulls: u64 = manifest
            .files
            .iter()
            .filter(|f| f.rows > 0 && f.partition.get(spec.partition).is_some_and(Option::is_none))
            .map(|f| f.rows)
            .sum();
        if nulls > 0 {
            return Err(KilnError::Data(kiln_data::DataError::Config(format!(
                "product `{}`: {nulls} rows have a NULL `{}`, so they belong to no interval (nothing was committed for this batch); give every row a time or filter them out",
                product.name, spec.column
            ))));
        }
        let replace_all = k == 0 && work.computation.replace_all;
        let base = if replace_all { None } else { previous.as_ref() };
        let mut merged = kiln_data::merge_replacing(manifest, base, |f| {
            f.partition
                .get(spec.partition)
                .and_then(|v| kiln_control::incremental::partition_day(v.as_deref()))
                .is_none_or(|d| days.contains(d))
        })?;
        done = done.union(days);
        merged.intervals = Some(kiln_control::incremental::next_state(
            spec,
            previous.as_ref().and_then(|m| m.intervals.as_ref()),
            &done,
            &DaySet::new(),
            &remaining,
            work.files.clone(),
            work.forward_only.clone(),
        ));
        merged.fingerprints = Some(stamp.fps.clone());
        merged.content = stamp.content.cloned();
        if !checks.is_empty() {
            progress.set_phase(kiln_data::writer::PHASE_CHECKS);
            let tc = Instant::now();
            let results =
                crate::checks::run_checks(substrate, &product.name, &product.schema, checks, Some(&merged)).await?;
            crate::checks::publish_failures(substrate, &product.name, &results, ids, product.layout.files.max_rows)
                .await?;
            phases.insert("checks".to_owned(), tc.elapsed().as_secs_f64());
            if results.blocks() {
                return Err(KilnError::Audit { product: product.name.clone(), runs: results.runs });
            }
            check_runs = results.runs;
        }
        progress.set_phase(kiln_data::writer::PHASE_COMMIT);
        kiln_data::failpoint_step("interval_commit");
        let committed = warehouse.commit(&merged, previous.as_ref(), &product.schema).await?;
        if let Some(table) = substrate.product_table(&product.name) {
            table.bind(warehouse, &committed)?;
        }
        previous = Some(committed);
        last = Some((physical, phases));
    }
    let (Some(manifest), Some((physical, mut phases))) = (previous, last) else {
        return Err(KilnError::Internal(format!("product `{}`: no interval batch ran", product.name)));
    };
    phases.insert("execute_write".to_owned(), t.elapsed().as_secs_f64());
    let mut built = built(manifest, &physical, phases, substrate.root());
    built.checks = check_runs;
    Ok(built)
}
