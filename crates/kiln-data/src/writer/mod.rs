//! The dataset writer: plan output partitions -> Parquet files -> a manifest to commit.
//!
//! Each output partition of the plan is consumed by its own task, so the writer runs as
//! parallel as the plan. Memory is bounded by one open row group per partition (the
//! `max_row_group_size` of the Parquet properties) plus the object_store upload buffer;
//! nothing is collected. Files are named by the layout's [`Basename`]
//! (`part-<partition>-<seq>.parquet` by default) inside the build's private directory,
//! rolled at `max_rows_per_file` (and `max_bytes_per_file`). Files carry
//! `created_by = "kiln"` and no timestamps, so the same batches produce the same bytes.
//!
//! - [`spec`]: the [`WriteSpec`] of one build, and batch conformance;
//! - [`route`]: partition values, Hive directories, routing and pipelining;
//! - [`order`]: tier 3's order check;
//! - [`files`]: one file's life, the read-back contract gate and the sidecars.
//!
//! [`Basename`]: crate::layout::Basename

pub(crate) mod files;
mod order;
mod route;
pub mod spec;
mod stats;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::take_record_batch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use kiln_artifact::{FileEntry, MANIFEST_FORMAT_VERSION, Manifest, ManifestTotals};

use self::files::{OpenFile, WRITE_CHUNK_ROWS, finish_file, open_file, read_footers, verify_files, write_sidecars};
use self::order::{OrderCheck, OrderState};
use self::route::{group_rows, hive_segment, pipelined, route_by_key};
use self::spec::Target;
pub use self::spec::{BuildIds, WriteSpec, conform};
use crate::layout::{ExistingData, Ordering};
use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// The manifest to commit for a build that wrote `new`, given the committed `previous`:
/// under `Append` and `DeleteMatching` it also lists the committed files that stay (they
/// remain in their own build directories, which `gc` keeps while a current manifest names
/// them). Totals are recomputed over all listed files; an appended dataset no longer
/// has one canonical order, so its ordering tier drops to 1.
pub fn merge_existing(new: Manifest, previous: Option<&Manifest>, mode: ExistingData) -> Result<Manifest> {
    let Some(previous) = previous else { return Ok(new) };
    let kept: Vec<FileEntry> = match mode {
        ExistingData::Replace | ExistingData::Error => return Ok(new),
        ExistingData::Append => previous.files.clone(),
        ExistingData::DeleteMatching => {
            let written: std::collections::BTreeSet<&Vec<Option<String>>> =
                new.files.iter().filter(|f| f.rows > 0).map(|f| &f.partition).collect();
            previous.files.iter().filter(|f| f.rows > 0 && !written.contains(&f.partition)).cloned().collect()
        }
    };
    let what =
        if mode == ExistingData::Append { "existing_data = 'append'" } else { "existing_data = 'delete_matching'" };
    merge_kept(
        new,
        previous,
        kept,
        mode == ExistingData::Append,
        what,
        "rebuild it with existing_data = 'replace' once",
    )
}

/// The manifest to commit for a build that wrote `new` over the committed `previous`,
/// keeping the committed files `replaced` does not select (an incremental product's
/// intervals: the files of the intervals it recomputed are replaced).
pub fn merge_replacing(
    new: Manifest,
    previous: Option<&Manifest>,
    replaced: impl Fn(&FileEntry) -> bool,
) -> Result<Manifest> {
    let Some(previous) = previous else { return Ok(new) };
    let kept = previous.files.iter().filter(|f| f.rows > 0 && !replaced(f)).cloned().collect();
    merge_kept(new, previous, kept, false, "an incremental product", "build all its intervals (without --start/--end)")
}

/// The manifest to commit for a build of a product merged by key (`by_unique_key`) over
/// the committed `previous`: the new rows (`new`), the committed files `replaced` selects
/// rewritten without the rows the new ones replace (`rewritten`), and the other committed
/// files as they are. Which file holds a row depends on the order the rows arrived in, so
/// the dataset has no canonical order: ordering tier 1.
pub fn merge_rewriting(
    mut new: Manifest,
    rewritten: Option<Manifest>,
    previous: &Manifest,
    replaced: impl Fn(&FileEntry) -> bool,
) -> Result<Manifest> {
    if let Some(rewritten) = rewritten {
        new.files.extend(rewritten.files.into_iter().filter(|f| f.rows > 0));
        new.totals.rows_rejected += rewritten.totals.rows_rejected;
    }
    let kept = previous.files.iter().filter(|f| f.rows > 0 && !replaced(f)).cloned().collect();
    let mut merged = merge_kept(
        new,
        previous,
        kept,
        false,
        "a product merged by key (incremental = 'by_unique_key')",
        "rebuild it (kiln build --restate)",
    )?;
    merged.ordering_tier = merged.ordering_tier.min(1);
    Ok(merged)
}

/// `new`'s files after the committed files `kept` (`appended`: the totals keep the
/// previous rejects, and the dataset no longer has one canonical order).
fn merge_kept(
    mut new: Manifest,
    previous: &Manifest,
    kept: Vec<FileEntry>,
    appended: bool,
    what: &str,
    hint: &str,
) -> Result<Manifest> {
    if previous.schema_fp != new.schema_fp || previous.partition_by != new.partition_by {
        return Err(DataError::Config(format!(
            "product `{}`: {what} keeps committed files, but their schema or partitioning differs from this build's; {hint}",
            new.product,
        )));
    }
    // Empty files of the new build only carry the schema; committed files already do.
    new.files.retain(|f| f.rows > 0 || kept.is_empty());
    if !kept.is_empty() {
        // The sidecars describe this build's files only: not the dataset any more.
        new.sidecars.clear();
    }
    let mut files = kept;
    files.append(&mut new.files);
    let previous_rejected = if appended { previous.totals.rows_rejected } else { 0 };
    let rows_written: u64 = files.iter().map(|f| f.rows).sum();
    let rows_rejected = new.totals.rows_rejected + previous_rejected;
    new.totals = ManifestTotals {
        files: files.len() as u64,
        rows_written,
        bytes: files.iter().map(|f| f.bytes).sum(),
        rows_read: rows_written + rows_rejected,
        rows_rejected,
    };
    new.files = files;
    if appended {
        new.ordering_tier = new.ordering_tier.min(1);
    }
    Ok(new)
}

/// Live counters a caller can poll to draw progress of one product's build.
#[derive(Debug, Default)]
pub struct WriteProgress {
    /// Rows written so far (0 while operators such as a sort or an aggregate still read).
    pub rows: AtomicU64,
    pub files: AtomicU64,
    /// Bytes of the files finished so far.
    pub bytes: AtomicU64,
    /// The rows the physical plan expects to produce, from its inputs' statistics (exact or
    /// estimated); 0 when it cannot say.
    pub estimated_rows: AtomicU64,
    /// Where the build is: one of the `PHASE_*` values.
    pub phase: std::sync::atomic::AtomicU8,
}

/// Phases of [`WriteProgress::phase`]: planning; executing, waiting on the plan's
/// scans, on a sort or on an aggregate (what the operator nearest the output blocks on)
/// until the first row is written; checks; commit.
pub const PHASE_PLAN: u8 = 0;
pub const PHASE_SCAN: u8 = 1;
pub const PHASE_SORT: u8 = 2;
pub const PHASE_AGGREGATE: u8 = 3;
pub const PHASE_CHECKS: u8 = 4;
pub const PHASE_COMMIT: u8 = 5;

impl WriteProgress {
    pub fn set_phase(&self, phase: u8) {
        self.phase.store(phase, AtomicOrdering::Relaxed);
    }

    /// The phase's name: `plan`, `scan`, `sort` or `aggregate` (operators still reading,
    /// nothing written yet), `write` (rows are being written), `checks`, `commit`.
    pub fn phase_name(&self) -> &'static str {
        let executing = |name| if self.rows.load(AtomicOrdering::Relaxed) == 0 { name } else { "write" };
        match self.phase.load(AtomicOrdering::Relaxed) {
            PHASE_PLAN => "plan",
            PHASE_SCAN => executing("scan"),
            PHASE_SORT => executing("sort"),
            PHASE_AGGREGATE => executing("aggregate"),
            PHASE_CHECKS => "checks",
            _ => "commit",
        }
    }

    /// The executing phase of `plan`: what its operator nearest the output that holds
    /// rows back (a sort or an aggregate) waits on, else the scans.
    pub fn executing_phase(plan: &dyn datafusion::physical_plan::ExecutionPlan) -> u8 {
        let name = plan.name();
        if name == "SortExec" {
            return PHASE_SORT;
        }
        if name == "AggregateExec" {
            return PHASE_AGGREGATE;
        }
        plan.children().first().map_or(PHASE_SCAN, |child| Self::executing_phase(child.as_ref()))
    }

    fn finished(&self, file: &FileEntry) {
        self.files.fetch_add(1, AtomicOrdering::Relaxed);
        self.bytes.fetch_add(file.bytes, AtomicOrdering::Relaxed);
    }
}

/// Writes every stream into the build directory of `spec` and returns the manifest to
/// commit with [`Warehouse::commit`]. Nothing is visible to readers until that commit.
pub async fn write_dataset(
    warehouse: &Warehouse,
    streams: Vec<SendableRecordBatchStream>,
    spec: Arc<WriteSpec>,
    progress: Arc<WriteProgress>,
) -> Result<Manifest> {
    let dir = warehouse.scoped(&spec.build_dir());
    let order = OrderCheck::keys(&spec)?;
    let target = Arc::new(Target::of(&spec)?);
    // Without an order to keep, encoding is spread so that every core stays busy to the
    // end: an unpartitioned stream is encoded by `lanes` writers (a stream that ends up
    // with more rows than the others, as scans split files by bytes, not rows, then still
    // keeps more than one core encoding; lane j of stream i takes its batches j, j +
    // lanes, ...: deterministic); a partitioned product's rows are routed so that each
    // directory has one writer fed by every stream (one file per directory until it
    // rolls, as few dictionaries and row groups as the data allows). Which rows land in
    // which file then depends on timing, which tier 1 allows.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let unordered = order.is_none() && spec.layout.ordering == Ordering::Unordered;
    let streams: Vec<SendableRecordBatchStream> = if unordered && !target.partition_cols.is_empty() {
        route_by_key(streams, &spec, &target, 2 * cores)
    } else {
        let lanes = if unordered && streams.len() < 2 * cores { 2 } else { 1 };
        streams.into_iter().flat_map(|stream| pipelined(stream, lanes)).collect()
    };
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let (wh, spec, progress, dir) = (warehouse.clone(), Arc::clone(&spec), Arc::clone(&progress), dir.clone());
            let (order, target) = (order.clone(), Arc::clone(&target));
            tokio::spawn(async move { write_partition(&wh, stream, i, &dir, &spec, &target, order, &progress).await })
        })
        .collect();
    let mut files = Vec::new();
    let mut previous: Option<(RecordBatch, String)> = None;
    for task in tasks {
        let (written, bounds) = task
            .await
            .map_err(|e| DataError::Internal(format!("product `{}`: writer task failed: {e}", spec.product)))??;
        // Files are read in path order, so partition p's first row follows p-1's last.
        if let (Some(keys), Some((first, last))) = (&order, bounds) {
            if let Some((before, file)) = &previous {
                keys.check_pair(before, &first, &spec, written.first().map_or(file.as_str(), |f| f.path.as_str()))?;
            }
            previous = Some((last, written.last().map(|f| f.path.clone()).unwrap_or_default()));
        }
        files.extend(written);
    }
    if files.is_empty() {
        // An empty result still gets one (empty) file so readers know its schema.
        let empty = open_file(warehouse, &dir, 0, 0, &target.file_schema, &spec)?;
        let entry = finish_file(warehouse, empty, Vec::new(), &target.file_schema, &spec).await?;
        files.push(entry);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    // The write-time contract gate: every footer, read back as a reader would.
    let footers = read_footers(warehouse, &files, &spec).await?;
    verify_files(&files, &footers, &spec, &target.file_schema)?;
    let sidecars = match spec.layout.parquet.sidecars {
        true => write_sidecars(warehouse, &dir, &files, &footers, &spec).await?,
        false => Vec::new(),
    };
    let rows_written = files.iter().map(|f| f.rows).sum();
    let totals = ManifestTotals {
        files: files.len() as u64,
        rows_written,
        bytes: files.iter().map(|f| f.bytes).sum(),
        rows_read: rows_written,
        rows_rejected: 0,
    };
    Ok(Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        product: spec.product.clone(),
        build_id: spec.build_id.clone(),
        run_id: spec.run_id.clone(),
        build_dir: dir,
        schema_fp: spec.schema_fp.clone(),
        ordering_tier: spec.layout.ordering.tier(),
        sort_keys: spec.layout.ordering.keys_text(),
        partition_by: spec.layout.partition_by.clone(),
        write_options: spec.layout.recorded.clone(),
        files,
        totals,
        fingerprints: None,
        content: None,
        positions: Default::default(),
        stream: None,
        intervals: None,
        merge: None,
        side: Default::default(),
        sidecars,
        version: None,
        table_log: None,
    })
}

/// At most this many files are open per output partition; the least recently written is
/// finished to make room (its key continues in a new file). Bounds memory to this many
/// open row groups per partition.
const MAX_OPEN_FILES: usize = 64;

/// The files of one partition key (one directory) within one output partition.
struct KeyFiles {
    values: Vec<Option<String>>,
    dir: String,
    open: Option<OpenFile>,
    seq: usize,
    order: Option<OrderState>,
    last_used: u64,
}

/// A partition's files and, under an order check of an unpartitioned product, its first
/// and last rows.
type Written = (Vec<FileEntry>, Option<(RecordBatch, RecordBatch)>);

#[allow(clippy::too_many_arguments)]
async fn write_partition(
    wh: &Warehouse,
    mut stream: SendableRecordBatchStream,
    partition: usize,
    dir: &str,
    spec: &WriteSpec,
    target: &Target,
    order: Option<OrderCheck>,
    progress: &WriteProgress,
) -> Result<Written> {
    let mut done = Vec::new();
    let mut keys: Vec<KeyFiles> = Vec::new();
    let mut by_values: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    let mut clock = 0u64;
    let max = spec.layout.files.max_rows.max(1);
    let max_bytes = spec.layout.files.max_bytes.unwrap_or(u64::MAX);
    let partitioned = !target.partition_cols.is_empty();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(DataError::exec(format!("product `{}`", spec.product)))?;
        let batch = conform(batch, spec)?;
        let groups = if partitioned {
            group_rows(&batch, target)?.into_iter().map(|(k, rows)| (k, Some(rows))).collect()
        } else {
            vec![(Vec::new(), None)]
        };
        for (values, rows) in groups {
            let rows_batch = match rows {
                None => batch.clone(),
                Some(rows) => take_record_batch(&batch, &rows)
                    .map_err(|e| DataError::Internal(format!("product `{}`: {e}", spec.product)))?,
            };
            let k = match by_values.get(&values) {
                Some(&k) => k,
                None => {
                    let mut key_dir = dir.to_owned();
                    for (name, v) in spec.layout.partition_by.iter().zip(&values) {
                        key_dir = format!("{key_dir}/{}", hive_segment(name, v.as_deref()));
                    }
                    let order = match &order {
                        Some(keys) => Some(OrderState::new(keys.clone())?),
                        None => None,
                    };
                    keys.push(KeyFiles {
                        values: values.clone(),
                        dir: key_dir,
                        open: None,
                        seq: 0,
                        order,
                        last_used: 0,
                    });
                    by_values.insert(values, keys.len() - 1);
                    keys.len() - 1
                }
            };
            let mut offset = 0;
            while offset < rows_batch.num_rows() {
                clock += 1;
                if keys[k].open.is_none() {
                    // Make room: finish the least recently written open file.
                    let open: Vec<usize> = (0..keys.len()).filter(|&j| keys[j].open.is_some()).collect();
                    if open.len() >= MAX_OPEN_FILES
                        && let Some(&lru) = open.iter().min_by_key(|&&j| keys[j].last_used)
                        && let Some(file) = keys[lru].open.take()
                    {
                        let values = keys[lru].values.clone();
                        let entry = finish_file(wh, file, values, &target.file_schema, spec).await?;
                        progress.finished(&entry);
                        done.push(entry);
                    }
                    let key = &mut keys[k];
                    key.open = Some(open_file(wh, &key.dir, partition, key.seq, &target.file_schema, spec)?);
                    key.seq += 1;
                }
                let key = &mut keys[k];
                key.last_used = clock;
                let Some(file) = key.open.as_mut() else { continue };
                // Slices end at the writer's chunk boundaries, where the byte limit is checked.
                let to_chunk_end = WRITE_CHUNK_ROWS - file.rows as usize % WRITE_CHUNK_ROWS;
                let take = (max - file.rows as usize).min(rows_batch.num_rows() - offset).min(to_chunk_end);
                let slice = rows_batch.slice(offset, take);
                if let Some(order) = key.order.as_mut() {
                    order.check(&slice, spec, &file.relative, file.rows)?;
                }
                let slice = slice.project(&target.keep).map_err(|e| DataError::Internal(e.to_string()))?;
                let slice = target.stored(slice, &spec.product)?;
                file.write(&slice).await.map_err(DataError::parquet(format!(
                    "product `{}`: cannot write {}",
                    spec.product, file.relative
                )))?;
                offset += take;
                progress.rows.fetch_add(take as u64, AtomicOrdering::Relaxed);
                let bytes = (file.writer.bytes_written() + file.writer.in_progress_size()) as u64;
                let chunk_written = (file.rows as usize).is_multiple_of(WRITE_CHUNK_ROWS);
                if (file.rows as usize >= max || (chunk_written && bytes >= max_bytes))
                    && let Some(full) = key.open.take()
                {
                    let entry = finish_file(wh, full, key.values.clone(), &target.file_schema, spec).await?;
                    progress.finished(&entry);
                    done.push(entry);
                }
            }
        }
    }
    for key in &mut keys {
        if let Some(last) = key.open.take() {
            let entry = finish_file(wh, last, key.values.clone(), &target.file_schema, spec).await?;
            progress.finished(&entry);
            done.push(entry);
        }
    }
    // Cross-partition order only holds for unpartitioned products (one key).
    let bounds = match keys.pop() {
        Some(key) if !partitioned => key.order.and_then(|o| o.first_batch.zip(o.last_batch)),
        _ => None,
    };
    Ok((done, bounds))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;
    use crate::layout::WriteLayout;
    use datafusion::arrow::array::ArrayRef;
    use datafusion::arrow::datatypes::{Schema, SchemaRef};
    use datafusion::parquet::file::properties::WriterProperties;
    use kiln_artifact::ColumnStats;
    use object_store::ObjectStoreExt;
    use std::collections::BTreeMap;

    fn schema(nullable: bool) -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, nullable)]))
    }

    fn spec(schema: SchemaRef, max_rows_per_file: usize) -> WriteSpec {
        WriteSpec {
            product: "p".into(),
            build_id: "b".into(),
            run_id: "r".into(),
            schema_fp: kiln_contracts::schema_fingerprint(&schema),
            schema,
            layout: WriteLayout::derived(max_rows_per_file),
            properties: WriterProperties::builder().set_created_by("kiln".into()).build(),
            batch: None,
        }
    }

    #[test]
    fn file_names_follow_the_template_and_the_batch() {
        use crate::layout::{Basename, NamePart};
        let mut s = spec(schema(true), 10);
        s.layout.basename = Basename(vec![
            NamePart::BuildId,
            NamePart::Text("-".into()),
            NamePart::RunId,
            NamePart::Text("-".into()),
            NamePart::Partition,
            NamePart::Text("-".into()),
            NamePart::Seq,
        ]);
        assert_eq!(s.file_name(3, 12), "b-r-00003-00012");
        s.batch = Some(7);
        assert_eq!(s.build_dir(), "p/builds/r.000007");
        assert_eq!(s.file_name(0, 1), "b000007-b-r-00000-00001");
        s.layout.basename.0.push(NamePart::Batch);
        assert_eq!(s.file_name(0, 1), "b-r-00000-00001000007");
    }

    fn stream(values: Vec<Option<i64>>, chunk: usize) -> SendableRecordBatchStream {
        let schema = schema(true);
        let batches: Vec<_> = values
            .chunks(chunk)
            .map(|c| {
                Ok(RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(c.to_vec()))]).unwrap())
            })
            .collect();
        Box::pin(RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches)))
    }

    #[tokio::test]
    async fn rolls_files_per_partition_and_accounts_every_row() {
        let wh = Warehouse::memory();
        let streams = vec![stream((0..2500).map(Some).collect(), 300), stream((0..700).map(Some).collect(), 700)];
        let m = write_dataset(&wh, streams, Arc::new(spec(schema(false), 1000)), Arc::default()).await.unwrap();
        let layout: Vec<(String, u64)> = m.files.iter().map(|f| (f.path.clone(), f.rows)).collect();
        assert_eq!(
            layout,
            [
                ("p/builds/r/part-00000-00000.parquet".to_owned(), 1000),
                ("p/builds/r/part-00000-00001.parquet".to_owned(), 1000),
                ("p/builds/r/part-00000-00002.parquet".to_owned(), 500),
                ("p/builds/r/part-00001-00000.parquet".to_owned(), 700),
            ]
        );
        assert_eq!((m.totals.rows_written, m.totals.rows_read, m.totals.files), (3200, 3200, 4));
        assert!(wh.current("p").await.unwrap().is_none(), "nothing is visible before commit");
        let committed = wh.commit(&m, None, &schema(false)).await.unwrap();
        assert_eq!(committed.version, Some(0));
        assert_eq!(wh.current("p").await.unwrap().unwrap(), committed);
    }

    /// `max_bytes_per_file`: files end once their bytes reach the limit, checked on the
    /// writer's chunk grid (every `WRITE_CHUNK_ROWS` rows of a file, whatever the batches),
    /// whichever of rows and bytes comes first.
    #[tokio::test]
    async fn rolls_files_by_bytes() {
        let wh = Warehouse::memory();
        let mut s = spec(schema(false), 1_000_000);
        s.layout.parquet.compression.default = Some(datafusion::parquet::basic::Compression::UNCOMPRESSED);
        s.layout.parquet.dictionary.default = Some(false);
        s.layout.files.max_bytes = Some(16 << 10);
        s.properties = s.layout.parquet.apply(WriterProperties::builder()).build();
        // 40,000 distinct int64s = 320 KB of plain values, in batches of 500 (4 KB); one
        // chunk (8,192 rows, 64 KiB) is past the limit.
        let m = write_dataset(&wh, vec![stream((0..40_000).map(Some).collect(), 500)], Arc::new(s), Arc::default())
            .await
            .unwrap();
        assert_eq!(m.totals.rows_written, 40_000);
        let rows: Vec<u64> = m.files.iter().map(|f| f.rows).collect();
        assert_eq!(rows, [8_192, 8_192, 8_192, 8_192, 7_232]);
    }

    #[tokio::test]
    async fn manifests_carry_column_statistics_and_footer_sizes() {
        let wh = Warehouse::memory();
        let values: Vec<Option<i64>> = (0..2500).map(|v| (v % 7 != 0).then_some(v - 100)).collect();
        let m =
            write_dataset(&wh, vec![stream(values.clone(), 300)], Arc::new(spec(schema(true), 1000)), Arc::default())
                .await
                .unwrap();
        // Per file, computed here from the values each file holds.
        for (k, file) in m.files.iter().enumerate() {
            let held: Vec<Option<i64>> = values[k * 1000..((k + 1) * 1000).min(2500)].to_vec();
            let present: Vec<i64> = held.iter().flatten().copied().collect();
            let want = ColumnStats {
                nulls: held.iter().filter(|v| v.is_none()).count() as u64,
                min: present.iter().min().map(ToString::to_string),
                max: present.iter().max().map(ToString::to_string),
            };
            assert_eq!(file.columns["v"], want, "{}", file.path);
            let size = file.bytes;
            let tail = wh.store().get_range(&wh.path(&file.path), size - 8..size).await.unwrap();
            assert_eq!(&tail[4..], b"PAR1");
            assert!(file.footer_bytes > 0 && file.footer_bytes < size, "{}", file.footer_bytes);
            assert_eq!(file.footer_bytes, u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]])));
        }
    }

    fn tier3(mut s: WriteSpec) -> WriteSpec {
        s.layout.ordering = Ordering::Sorted(vec![crate::layout::SortKey { column: "v".into(), ascending: true }]);
        s
    }

    #[tokio::test]
    async fn tier_three_verifies_the_order_in_and_across_partitions() {
        let wh = Warehouse::memory();
        // Sorted, NULLs last, across batches and files: accepted.
        let mut sorted: Vec<Option<i64>> = (0..900).map(Some).collect();
        sorted.extend([None, None]);
        write_dataset(&wh, vec![stream(sorted, 250)], Arc::new(tier3(spec(schema(true), 400))), Arc::default())
            .await
            .unwrap();
        // One row out of order in the second batch: the row is named.
        let mut bad: Vec<Option<i64>> = (0..20).map(Some).collect();
        bad.swap(13, 14);
        let e = write_dataset(&wh, vec![stream(bad, 10)], Arc::new(tier3(spec(schema(true), 100))), Arc::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "product `p`: p/builds/r/part-00000-00000.parquet: row 14 breaks the ORDER BY (v ASC) of ordering tier 3"
        );
        // Each partition sorted, but the second starts below the first's end.
        let streams = vec![stream((0..10).map(Some).collect(), 5), stream((5..15).map(Some).collect(), 5)];
        let e =
            write_dataset(&wh, streams, Arc::new(tier3(spec(schema(true), 100))), Arc::default()).await.unwrap_err();
        assert!(e.to_string().contains("part-00001-00000.parquet: row 0 breaks the ORDER BY"), "{e}");
    }

    #[tokio::test]
    async fn partitioned_writes_hive_directories_without_the_partition_columns() {
        use datafusion::arrow::array::StringArray;
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("g", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        // g in {0, 1, NULL}, s in {"a/b", "x"}: 6 keys; 60 rows, 10 per key.
        let rows = 60i64;
        let g: Vec<Option<i64>> = (0..rows).map(|v| [Some(0), Some(1), None][(v % 3) as usize]).collect();
        let strings: Vec<&str> = (0..rows).map(|v| if (v / 3) % 2 == 0 { "a/b" } else { "x" }).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(Int64Array::from(g.clone())),
                Arc::new(StringArray::from(strings.clone())),
            ],
        )
        .unwrap();
        let halves = vec![Ok(batch.slice(0, 25)), Ok(batch.slice(25, 35))];
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), futures::stream::iter(halves)));
        let mut s = spec(Arc::clone(&schema), 4);
        s.layout.partition_by = vec!["g".into(), "s".into()];
        let wh = Warehouse::memory();
        let m = write_dataset(&wh, vec![stream], Arc::new(s), Arc::default()).await.unwrap();
        assert_eq!(m.partition_by, ["g", "s"]);
        assert_eq!(m.totals.rows_written, 60);
        // 10 rows per key in files of at most 4: 3 files per key, 18 in all.
        assert_eq!(m.files.len(), 18);
        let mut per_key: BTreeMap<Vec<Option<String>>, u64> = BTreeMap::new();
        for f in &m.files {
            *per_key.entry(f.partition.clone()).or_default() += f.rows;
            let dir = match (&f.partition[0], &f.partition[1]) {
                (g, Some(s)) => format!(
                    "p/builds/r/g={}/s={}/",
                    g.as_deref().unwrap_or("__HIVE_DEFAULT_PARTITION__"),
                    s.replace('/', "%2F")
                ),
                other => panic!("{other:?}"),
            };
            assert!(f.path.starts_with(&dir), "{} not under {dir}", f.path);
            assert!(f.columns.contains_key("v") && !f.columns.contains_key("g"), "{:?}", f.columns);
        }
        let want: BTreeMap<Vec<Option<String>>, u64> =
            g.iter().zip(&strings).fold(BTreeMap::new(), |mut acc, (g, s)| {
                *acc.entry(vec![g.map(|v| v.to_string()), Some((*s).to_owned())]).or_default() += 1;
                acc
            });
        assert_eq!(per_key, want);
    }

    #[test]
    fn hive_segments_escape_what_hive_escapes() {
        assert_eq!(hive_segment("c", Some("2024-01-05")), "c=2024-01-05");
        assert_eq!(hive_segment("c", Some("a/b=c%d:e")), "c=a%2Fb%3Dc%25d%3Ae");
        assert_eq!(hive_segment("c", Some("United States")), "c=United States");
        assert_eq!(hive_segment("c", None), "c=__HIVE_DEFAULT_PARTITION__");
    }

    /// Tier 1: a partitioned product's directories each get one writer fed by every input
    /// stream (one file per key here), an unpartitioned stream is split over lanes, and
    /// every row is accounted for either way; a contract break still names the column.
    #[tokio::test]
    async fn tier_one_spreads_encoding_and_keeps_every_row() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, false),
            Field::new("g", DataType::Int64, true),
        ]));
        // Four batches of ten rows from `from`, g = v % 5.
        let batches = |from: i64| -> SendableRecordBatchStream {
            let parts: Vec<_> = (0..4)
                .map(|b| {
                    let v: Vec<i64> = (from + b * 10..from + b * 10 + 10).collect();
                    let g: Vec<Option<i64>> = v.iter().map(|v| Some(v % 5)).collect();
                    let columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(v)), Arc::new(Int64Array::from(g))];
                    Ok(RecordBatch::try_new(Arc::clone(&schema), columns).unwrap())
                })
                .collect();
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), futures::stream::iter(parts)))
        };
        let mut s = spec(Arc::clone(&schema), 1000);
        s.layout.ordering = Ordering::Unordered;
        s.layout.partition_by = vec!["g".into()];
        let wh = Warehouse::memory();
        let m = write_dataset(&wh, vec![batches(0), batches(40)], Arc::new(s.clone()), Arc::default()).await.unwrap();
        assert_eq!(m.totals.rows_written, 80);
        assert_eq!(m.files.len(), 5, "one file per key: {:?}", m.files.iter().map(|f| &f.path).collect::<Vec<_>>());
        assert!(m.files.iter().all(|f| f.rows == 16), "80 rows over g = v % 5");

        s.layout.partition_by = Vec::new();
        let m = write_dataset(&wh, vec![batches(0)], Arc::new(s.clone()), Arc::default()).await.unwrap();
        assert_eq!(m.totals.rows_written, 40);
        assert_eq!(m.files.len(), 2, "two lanes, batches 0, 2 and 1, 3");
        assert!(m.files.iter().all(|f| f.rows == 20));

        // A NULL in NOT NULL `v`, routed by the partitioned path, fails with its column.
        s.layout.partition_by = vec!["g".into()];
        let loose =
            Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true), Field::new("g", DataType::Int64, true)]));
        let bad = RecordBatch::try_new(
            Arc::clone(&loose),
            vec![Arc::new(Int64Array::from(vec![Some(1), None])), Arc::new(Int64Array::from(vec![Some(1), Some(2)]))],
        )
        .unwrap();
        let stream: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(loose, futures::stream::iter(vec![Ok(bad)])));
        let e = write_dataset(&wh, vec![stream], Arc::new(s), Arc::default()).await.unwrap_err();
        assert!(matches!(e, DataError::NullInNotNull { ref column, nulls: 1, .. } if column == "v"), "{e}");
    }

    #[tokio::test]
    async fn not_null_is_enforced_on_the_data() {
        let wh = Warehouse::memory();
        let err = write_dataset(
            &wh,
            vec![stream(vec![Some(1), None, None], 3)],
            Arc::new(spec(schema(false), 10)),
            Arc::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "product `p`: column `v` is declared NOT NULL but the query produced 2 NULL value(s)"
        );
    }

    #[tokio::test]
    async fn read_back_gate_compares_the_footer_schema_with_the_contract() {
        let wh = Warehouse::memory();
        let written =
            write_dataset(&wh, vec![stream(vec![Some(1), None], 2)], Arc::new(spec(schema(true), 10)), Arc::default())
                .await
                .unwrap();
        let stricter = spec(schema(false), 10);
        let footers = read_footers(&wh, &written.files, &stricter).await.unwrap();
        let err = verify_files(&written.files, &footers, &stricter, &stricter.schema).unwrap_err();
        assert_eq!(
            err.to_string(),
            "product `p`: p/builds/r/part-00000-00000.parquet breaks the declared columns:\n  - v: nullable where NOT NULL was promised"
        );
        let lenient = spec(schema(true), 10);
        verify_files(&written.files, &footers, &lenient, &lenient.schema).unwrap();
    }
}
