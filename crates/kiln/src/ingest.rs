//! Building a product over a micro-batch (HTTP) source: one commit per micro-batch.
//!
//! Such a product's build id would depend on records nobody has read yet, so it is not
//! decided from fingerprints: every build polls its source (kiln_data::ingest). What the
//! fingerprints still decide is whether the committed data can be continued: if the
//! product's definition (query, schema, functions, runtime settings, the source's
//! definition) is the one its manifest records, ingest resumes from the manifest's
//! position and appends; otherwise it starts again from the source's first page and the
//! first batch replaces the committed data.
//!
//! Each micro-batch: read records from the position, bind them to the source's table,
//! run the product's plan, write into `builds/<run_id>.<batch>`, commit rejected records
//! (if any) to `<product>__rejected`, then commit the product's manifest (the previous
//! files, the new ones, and the position after the batch). The product's manifest is the
//! commit point of the batch; the rejected dataset records the same position, so a batch
//! replayed after a crash between the two commits does not add its rejects twice.

use std::sync::Arc;
use std::time::Instant;

use kiln_artifact::identity::ingest_batch_id;
use kiln_artifact::{Action, BuildFingerprints, ContentVersions, Manifest, ProductPlan, ProductRun, Reason};
use kiln_control::CompiledProduct;
use kiln_data::{BuildIds, ExistingData, MicroBatch, WriteProgress, merge_existing};

use crate::KilnError;
use crate::decide::Decided;
use crate::events::{Event, Observer};
use crate::execute::{compact_product, execute_into, product_run, write_rejects};
use crate::record::{Built, Recorded, built, record_build};
use crate::session::Session;

/// What an ingest run did.
struct Ingested {
    /// The committed manifest after the run (the previous one if nothing was new).
    manifest: Option<Manifest>,
    records: u64,
    batches: u64,
    /// The last batch's execution, for the build record.
    last: Option<Built>,
}

impl Session {
    /// Builds ingest product `i` (see the module docs) and returns its line in the
    /// summary. Its content versions (for downstream build ids) are its last commit's.
    pub(crate) async fn ingest(
        &mut self,
        i: usize,
        feed: &str,
        current: Option<Manifest>,
        run_id: &str,
        observer: &dyn Observer,
    ) -> ProductRun {
        let t = Instant::now();
        let name = self.graph.nodes[i].name.clone();
        let fail = |session: &mut Session, e: String| {
            session.nodes[i].failed = Some(e.clone());
            product_run(&name, Action::Failed, Some(e), t)
        };
        if let Err(e) = self.ensure_compiled(i).await {
            return fail(self, e.to_string());
        }
        let Some((fps, definition)) = self.identity(i) else { return fail(self, "not compiled".into()) };
        // Continue the committed data, or start again (and say why).
        let continues = current.as_ref().is_some_and(|m| m.fingerprints.as_ref() == Some(&fps));
        let mut reasons = Vec::new();
        if !continues {
            let previous = current.clone();
            match self.decide(i, current.clone()).await {
                Ok(Decided::Build { reasons: r, .. }) => reasons = r,
                Ok(_) => {}
                Err(e) => return fail(self, e.to_string()),
            }
            if previous.is_some() && reasons.is_empty() {
                reasons.push(Reason::NoRecord);
            }
        }
        let Some(product) = &self.nodes[i].compiled else { return fail(self, "not compiled".into()) };
        let outcome = ingest_batches(
            self,
            product,
            feed,
            (&fps, &definition),
            continues.then_some(current).flatten(),
            run_id,
            observer,
        )
        .await;
        match outcome {
            Err(e) => fail(self, e.to_string()),
            Ok(Ingested { manifest: None, .. }) => fail(self, format!("source `{feed}` has no records yet")),
            Ok(Ingested { manifest: Some(manifest), records, batches, last }) => {
                if let Some(table) = self.substrate.product_table(&name)
                    && let Err(e) = table.bind(&self.warehouse, &manifest)
                {
                    return fail(self, e.to_string());
                }
                self.record_committed(i, &manifest);
                if batches > 0 {
                    reasons.push(Reason::Ingested { source: feed.to_owned(), records, batches });
                }
                let mut phases = Default::default();
                if let (Some(built), Some(product)) = (last, &self.nodes[i].compiled) {
                    let recorded = Recorded {
                        id: &manifest.build_id,
                        fps: &fps,
                        compile_seconds: self.nodes[i].compile_seconds.unwrap_or(0.0),
                    };
                    match record_build(self, product, recorded, run_id, built).await {
                        Ok((_, p)) => phases = p,
                        Err(e) => return fail(self, e.to_string()),
                    }
                }
                ProductRun {
                    build_id: Some(manifest.build_id.clone()),
                    rows: manifest.totals.rows_written,
                    files: manifest.totals.files,
                    bytes: manifest.totals.bytes,
                    reasons,
                    phases,
                    ..product_run(&name, if batches > 0 || !continues { Action::Built } else { Action::Fresh }, None, t)
                }
            }
        }
    }
}

impl Session {
    /// `kiln plan` for ingest product `i`: always a build (it polls); the reasons say
    /// whether it continues its committed data or starts again. Downstream products are
    /// planned against its committed data.
    pub(crate) async fn plan_ingest(
        &mut self,
        i: usize,
        feed: &str,
        current: Option<Manifest>,
    ) -> Result<ProductPlan, KilnError> {
        self.ensure_compiled(i).await?;
        let (fps, _) =
            self.identity(i).ok_or_else(|| KilnError::Internal("an ingest product did not compile".into()))?;
        let mut reasons = Vec::new();
        if current.as_ref().and_then(|m| m.fingerprints.as_ref()) != Some(&fps)
            && let Decided::Build { reasons: r, .. } = self.decide(i, current.clone()).await?
        {
            reasons = r;
        }
        reasons.push(Reason::Polls { source: feed.to_owned() });
        if let Some(m) = &current {
            self.record_committed(i, m);
        }
        Ok(ProductPlan {
            product: self.graph.nodes[i].name.clone(),
            decision: kiln_artifact::Decision::Build,
            build_id: None,
            fingerprints: Some(fps),
            current_build_id: current.map(|m| m.build_id),
            reasons,
            error: None,
            checks: Vec::new(),
            intervals: None,
            merge: None,
        })
    }
}

/// Reads, runs and commits micro-batches until the source has nothing new. `current` is
/// the manifest to continue (`None`: start from the source's first page and replace).
async fn ingest_batches(
    session: &Session,
    product: &CompiledProduct,
    feed: &str,
    (fps, definition): (&BuildFingerprints, &str),
    mut current: Option<Manifest>,
    run_id: &str,
    observer: &dyn Observer,
) -> Result<Ingested, KilnError> {
    let substrate = &session.substrate;
    let warehouse = substrate.warehouse();
    let Some((source, table)) = substrate.micro_batch_source(feed) else {
        return Err(KilnError::Internal(format!("`{feed}` is not a micro-batch source")));
    };
    let restart = current.is_none();
    let mut position = current.as_ref().and_then(|m| m.positions.get(feed).cloned()).unwrap_or_else(|| source.start());
    let rejected_name = format!("{}__rejected", product.name);
    let committed_rejects = warehouse.current_or_convert(&rejected_name, None).await?;
    // What each commit is made on: the tables' committed versions, continued or not.
    let mut base = match &current {
        Some(m) => Some(m.clone()),
        None => warehouse.current_or_convert(&product.name, Some(&product.schema)).await?,
    };
    let mut rejected_base = committed_rejects.clone();
    // Rejects committed under another definition are replaced by the first batch's.
    let mut stale = committed_rejects.as_ref().is_some_and(|m| m.fingerprints.as_ref() != Some(fps));
    let mut rejected = committed_rejects.filter(|_| !stale);
    let batch_size = substrate.context().state().config().batch_size();
    let progress = Arc::new(WriteProgress::default());
    progress.set_phase(kiln_data::writer::PHASE_SCAN);
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });
    let (mut records, mut batches, mut last) = (0, 0, None);
    loop {
        let batch = match source.next_batch(&position, batch_size).await? {
            Some(batch) => batch,
            // Starting again on an empty feed still commits (an empty build of the new
            // definition), so the product no longer shows the old one's data.
            None if restart && batches == 0 => MicroBatch {
                batches: Vec::new(),
                partitions: Vec::new(),
                rejects: Vec::new(),
                records: 0,
                position: source.start(),
                exhausted: true,
            },
            None => break,
        };
        let number = batch.position.batches;
        let build_id = ingest_batch_id(definition, &batch.position.url, batch.position.skip, number);
        let ids = BuildIds { build_id: build_id.clone(), run_id: run_id.to_owned(), batch: Some(number) };
        table.bind(batch.batches);
        let executed = execute_into(substrate, product, ids.clone(), Arc::clone(&progress)).await;
        table.bind(Vec::new());
        let (manifest, physical, mut phases) = executed?;
        let t = Instant::now();
        let mut manifest = merge_existing(manifest, current.as_ref(), ExistingData::Append)?;
        if !batch.rejects.is_empty() || stale {
            stale = false;
            let done = rejected.as_ref().is_some_and(|m| m.positions.get(feed) == Some(&batch.position));
            if !done {
                let max_rows = product.layout.files.max_rows;
                let new = write_rejects(substrate, &rejected_name, max_rows, &batch.rejects, ids).await?;
                let mut new = merge_existing(new, rejected.as_ref(), ExistingData::Append)?;
                new.fingerprints = Some(fps.clone());
                new.positions.insert(feed.to_owned(), batch.position.clone());
                let new = warehouse.commit(&new, rejected_base.as_ref(), &kiln_data::checked::rejects_schema()).await?;
                rejected_base = Some(new.clone());
                rejected = Some(new);
            }
            let n = batch.rejects.len() as u64;
            manifest.totals.rows_rejected += n;
            manifest.totals.rows_read += n;
        }
        manifest.fingerprints = Some(fps.clone());
        manifest.content = Some(ContentVersions { rows: build_id.clone(), columns: Default::default() });
        manifest.positions.insert(feed.to_owned(), batch.position.clone());
        let mut manifest = warehouse.commit(&manifest, base.as_ref(), &product.schema).await?;
        kiln_data::failpoint("after_batch");
        if kiln_data::compact::due(&manifest, &product.layout)
            && let Some(done) = compact_product(substrate, product, &manifest, run_id, Some(number)).await?
        {
            manifest = done.manifest;
        }
        base = Some(manifest.clone());
        phases.insert("commit".to_owned(), t.elapsed().as_secs_f64());
        last = Some(built(manifest.clone(), &physical, phases, substrate.root()));
        records += batch.records;
        batches += u64::from(batch.records > 0);
        position = batch.position;
        current = Some(manifest);
        if batch.exhausted {
            break;
        }
    }
    Ok(Ingested { manifest: current, records, batches, last })
}
