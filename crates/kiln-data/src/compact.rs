//! Compaction: a dataset that grows by appends (a view's checkpoints, an ingest product's
//! micro-batches, `existing_data = 'append'` builds) gains small files; compacting
//! rewrites them into files of the dataset's target size (its `max_rows_per_file` /
//! `max_bytes_per_file`) and commits the exchange as one Delta `OPTIMIZE` commit that
//! changes no data: every reader sees the same rows before, during and after it, and the
//! build keeps its id (nothing downstream rebuilds).
//!
//! Only unordered datasets (tier 1) are compacted: a tier-2 or tier-3 dataset promises an
//! order across its files, which each build rewrites whole anyway.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::config::TableParquetOptions;
use datafusion::execution::TaskContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_plan::ExecutionPlanProperties;
use kiln_artifact::{FileEntry, Manifest, ManifestTotals};

use crate::layout::{Ordering, WriteLayout};
use crate::product_table::ProductTable;
use crate::warehouse::Warehouse;
use crate::writer::{BuildIds, WriteSpec, write_dataset};
use crate::{DataError, Result};

/// What one compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The committed manifest after it.
    pub manifest: Manifest,
    /// Files rewritten, and the files they became.
    pub files_before: u64,
    pub files_after: u64,
}

/// The files of `manifest` worth rewriting under `layout`: per partition, the files
/// smaller than half the target size, when there are at least two of them.
pub fn small_files<'a>(manifest: &'a Manifest, layout: &WriteLayout) -> Vec<&'a FileEntry> {
    let small = |f: &FileEntry| {
        (f.rows as usize) < layout.files.max_rows / 2 && layout.files.max_bytes.is_none_or(|b| f.bytes < b / 2)
    };
    let mut groups: std::collections::BTreeMap<&Vec<Option<String>>, Vec<&FileEntry>> = Default::default();
    for file in manifest.files.iter().filter(|f| small(f)) {
        groups.entry(&file.partition).or_default().push(file);
    }
    groups.into_values().filter(|g| g.len() >= 2).flatten().collect()
}

/// Whether `current` has reached its layout's `compact_after`.
pub fn due(current: &Manifest, layout: &WriteLayout) -> bool {
    layout.compact_after.is_some_and(|n| current.files.len() >= n)
}

/// Compacts the committed `current` of a dataset of schema `schema` and layout `layout`
/// (a run `run_id` writes the new files into `builds/<run_id>-compact[.<batch>]`); `None`
/// when it has nothing to compact or is not tier 1. `state` runs the read of the small
/// files (with the memory pool and object stores of `task`).
#[allow(clippy::too_many_arguments)]
pub async fn compact(
    warehouse: &Warehouse,
    task: &Arc<TaskContext>,
    current: &Manifest,
    schema: SchemaRef,
    layout: &WriteLayout,
    parquet: &TableParquetOptions,
    run_id: &str,
    batch: Option<u64>,
) -> Result<Option<Compacted>> {
    if layout.ordering != Ordering::Unordered || current.ordering_tier > 1 {
        return Ok(None);
    }
    let small = small_files(current, layout);
    if small.len() < 2 {
        return Ok(None);
    }
    let name = current.product.as_str();
    let fail = DataError::exec(format!("dataset `{name}`: compaction"));
    // Read exactly the small files (as a product table over them), write them anew.
    let input = Manifest { files: small.iter().map(|f| (*f).clone()).collect(), ..current.clone() };
    let table = ProductTable::new(name, Arc::clone(&schema));
    table.bind(warehouse, &input)?;
    let state = SessionStateBuilder::new()
        .with_config(task.session_config().clone())
        .with_runtime_env(task.runtime_env())
        .with_default_features()
        .build();
    let plan = table.scan(&state, None, &[], None).await.map_err(fail)?;
    let streams = (0..plan.output_partitioning().partition_count())
        .map(|i| plan.execute(i, Arc::clone(task)))
        .collect::<datafusion::error::Result<Vec<_>>>()
        .map_err(DataError::exec(format!("dataset `{name}`: compaction")))?;
    let ids = BuildIds { build_id: current.build_id.clone(), run_id: format!("{run_id}-compact"), batch };
    let spec = WriteSpec::new(name, ids, (Arc::clone(&schema), current.schema_fp.clone()), layout.clone(), parquet)?;
    let written = write_dataset(warehouse, streams, Arc::new(spec), Arc::default()).await?;
    let rows_in: u64 = small.iter().map(|f| f.rows).sum();
    let new_files: Vec<FileEntry> = written.files.into_iter().filter(|f| f.rows > 0).collect();
    let rows_out: u64 = new_files.iter().map(|f| f.rows).sum();
    if rows_in != rows_out {
        return Err(DataError::Internal(format!(
            "dataset `{name}`: compaction read {rows_in} rows but wrote {rows_out}; nothing committed"
        )));
    }
    let rewritten: std::collections::BTreeSet<&str> = small.iter().map(|f| f.path.as_str()).collect();
    let mut files: Vec<FileEntry> =
        current.files.iter().filter(|f| !rewritten.contains(f.path.as_str())).cloned().collect();
    let files_after = new_files.len() as u64;
    files.extend(new_files);
    let compacted = Manifest {
        totals: ManifestTotals {
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.bytes).sum(),
            ..current.totals.clone()
        },
        files,
        // The sidecars described the files of a build, not the dataset (appends clear them).
        sidecars: Vec::new(),
        ..current.clone()
    };
    let target = layout.files.max_bytes.unwrap_or(0);
    let manifest = warehouse.commit_compaction(current, &compacted, target).await?;
    Ok(Some(Compacted { manifest, files_before: small.len() as u64, files_after }))
}
