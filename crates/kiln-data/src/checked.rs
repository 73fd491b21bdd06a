//! CSV and NDJSON sources with `on_error = 'reject'`: malformed records are set aside with
//! their reason instead of failing the run.
//!
//! Each CSV file is split into records with the `csv` crate (quotes, embedded newlines);
//! each NDJSON line is parsed as one JSON object (scalar columns: a nested value, invalid
//! JSON or a non-object line is rejected). Each field is collected as text, and every column cast to its declared type in one vectorized
//! `cast` per batch (with `safe` casting, a value that does not parse becomes NULL, which
//! is how it is found). A record is rejected when it has the wrong number of fields, when
//! a non-empty field does not parse as its column's type, or when a NOT NULL column is
//! empty; the first reason found is kept. Rejected records keep their raw text, file and
//! line, in the scan's [`RejectSink`], which the engine drains after the product's
//! execution into `<product>__rejected`.
//!
//! One partition, one file at a time, batches of at most the session's batch size; a
//! file's bytes are read whole (one file is the memory bound).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringBuilder};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// One record set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub source: String,
    pub file: String,
    /// 1-based line where the record starts.
    pub line: u64,
    pub raw: String,
    pub reason: String,
}

/// Where a scan puts its rejected records.
pub type RejectSink = Arc<Mutex<Vec<Rejected>>>;

/// The record formats a checked source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedFormat {
    Csv,
    Json,
}

/// One file of a checked source, with the values of its Hive partition directories (the
/// schema's last columns; NULL for `__HIVE_DEFAULT_PARTITION__`). They are read like a
/// record's fields: a value that does not parse as its column's type rejects the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    pub path: PathBuf,
    pub partition: Vec<Option<String>>,
    /// How the file is compressed; it is decoded whole before it is split into records.
    pub codec: crate::codec::Codec,
}

/// The version of the rules above, part of every `<source>__rejected` build id: bump it
/// when what is rejected, or how it is described, changes.
pub const READER_VERSION: u32 = 1;

/// A CSV or NDJSON source read with rejection (see the module docs).
#[derive(Debug)]
pub struct CheckedCsvTable {
    pub name: String,
    pub schema: SchemaRef,
    /// The source's files, in a stable order.
    pub files: Vec<CheckedFile>,
    pub format: CheckedFormat,
    /// The build id of `<source>__rejected` for these files
    /// (`FileSource::rejects_version`).
    pub rejects_version: String,
}

/// What one source's scans in a product's plan set aside: the records, and whether a
/// scan read every file to the end (a plan may stop early, e.g. under a LIMIT; then
/// [`SourceRejects::all`] reads the source again).
#[derive(Debug, Clone)]
pub struct SourceRejects {
    pub source: String,
    /// `<source>__rejected`'s build id for the files read.
    pub version: String,
    pub rejects: Vec<Rejected>,
    pub complete: bool,
    schema: SchemaRef,
    files: Vec<CheckedFile>,
    format: CheckedFormat,
}

impl SourceRejects {
    /// Every record of the source set aside: those the scan found when it read every
    /// file, else those of a pass over all files that keeps no rows.
    pub fn all(&self) -> DfResult<Vec<Rejected>> {
        if self.complete {
            return Ok(self.rejects.clone());
        }
        let reader = Reader::standalone(&self.source, &self.schema, self.format, 8192);
        for file in &self.files {
            drop(reader.read_file(file)?);
        }
        Ok(reader.take_rejects())
    }
}

#[async_trait]
impl TableProvider for CheckedCsvTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CheckedScanExec::new(
            self.name.clone(),
            Arc::clone(&self.schema),
            self.files.clone(),
            self.format,
            projection.cloned(),
            self.rejects_version.clone(),
        )?))
    }
}

/// The scan of a [`CheckedCsvTable`]; its rejects are in [`CheckedScanExec::rejects`].
#[derive(Debug)]
pub struct CheckedScanExec {
    name: String,
    schema: SchemaRef,
    files: Vec<CheckedFile>,
    format: CheckedFormat,
    projection: Option<Vec<usize>>,
    output: SchemaRef,
    rejects: RejectSink,
    /// `<source>__rejected`'s build id for these files.
    rejects_version: String,
    /// Set when a stream of it has read every file to the end.
    complete: Arc<std::sync::atomic::AtomicBool>,
    properties: Arc<PlanProperties>,
}

impl CheckedScanExec {
    fn new(
        name: String,
        schema: SchemaRef,
        files: Vec<CheckedFile>,
        format: CheckedFormat,
        projection: Option<Vec<usize>>,
        rejects_version: String,
    ) -> DfResult<Self> {
        let output = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => Arc::clone(&schema),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&output)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            name,
            schema,
            files,
            format,
            projection,
            output,
            rejects: Arc::default(),
            rejects_version,
            complete: Arc::default(),
            properties: Arc::new(properties),
        })
    }

    /// The records rejected so far (complete once the scan's stream has ended).
    pub fn rejects(&self) -> Vec<Rejected> {
        self.rejects.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl DisplayAs for CheckedScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "CheckedScan: source={}, format={:?}, files={}, on_error=reject",
            self.name,
            self.format,
            self.files.len()
        )
    }
}

impl ExecutionPlan for CheckedScanExec {
    fn name(&self) -> &str {
        "CheckedScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("CheckedScanExec has no children".into()));
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("CheckedScanExec has one partition, not {partition}")));
        }
        let batch_size = context.session_config().batch_size().max(1);
        let nullable = nullable_twin(&self.schema);
        let reader = Reader {
            format: self.format,
            name: self.name.clone(),
            schema: Arc::clone(&self.schema),
            nullable,
            projection: self.projection.clone(),
            rejects: Arc::clone(&self.rejects),
            batch_size,
            first_only: false,
        };
        let files = self.files.clone();
        let complete = Arc::clone(&self.complete);
        let stream = futures::stream::iter(files)
            .flat_map(move |file| {
                let batches = reader.read_file(&file);
                futures::stream::iter(match batches {
                    Ok(b) => b.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            })
            // Polled past the last batch: every file was read.
            .chain(futures::stream::poll_fn(move |_| {
                complete.store(true, std::sync::atomic::Ordering::Relaxed);
                std::task::Poll::Ready(None)
            }));
        Ok(Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&self.output), stream)))
    }
}

struct Reader {
    format: CheckedFormat,
    name: String,
    schema: SchemaRef,
    /// `schema` with every column nullable: what the cast columns are before filtering.
    nullable: SchemaRef,
    projection: Option<Vec<usize>>,
    rejects: RejectSink,
    batch_size: usize,
    /// Locating a bad record ([`first_rejected`]): stop at the first, keep no batches.
    first_only: bool,
}

/// Records of one batch, as text, with where they came from.
struct Pending {
    fields: Vec<StringBuilder>,
    raw: Vec<(u64, String)>,
}

impl Reader {
    /// A reader outside a scan (micro-batch sources): its own reject list, no projection.
    fn standalone(source: &str, schema: &SchemaRef, format: CheckedFormat, batch_size: usize) -> Self {
        Reader {
            format,
            name: source.to_owned(),
            schema: Arc::clone(schema),
            nullable: nullable_twin(schema),
            projection: None,
            rejects: Arc::default(),
            batch_size: batch_size.max(1),
            first_only: false,
        }
    }

    /// Whether a locating reader is done: it has its first rejected record (and it
    /// drops the batches read so far).
    fn located(&self, out: &mut Vec<RecordBatch>) -> bool {
        if !self.first_only {
            return false;
        }
        out.clear();
        self.rejects.lock().map(|r| !r.is_empty()).unwrap_or(true)
    }

    fn take_rejects(&self) -> Vec<Rejected> {
        self.rejects.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    fn read_file(&self, file: &CheckedFile) -> DfResult<Vec<RecordBatch>> {
        let external = |e: std::io::Error| {
            DataFusionError::External(Box::new(std::io::Error::new(e.kind(), format!("{}: {e}", file.path.display()))))
        };
        let opened = std::fs::File::open(&file.path).map_err(external)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut file.codec.file_compression_type().convert_read(std::io::BufReader::new(opened))?,
            &mut bytes,
        )
        .map_err(|e| external(std::io::Error::new(e.kind(), format!("cannot decode {}: {e}", file.codec.name()))))?;
        let shown = file.path.display().to_string();
        self.read_bytes(&bytes, &shown, file.partition.as_slice())
    }

    fn read_bytes(&self, bytes: &[u8], shown: &str, partition: &[Option<String>]) -> DfResult<Vec<RecordBatch>> {
        if self.format == CheckedFormat::Json {
            return self.read_json(bytes, shown, partition);
        }
        let width = self.schema.fields().len() - partition.len();
        let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes);
        let mut out = Vec::new();
        let mut pending = self.pending();
        let mut record = csv::ByteRecord::new();
        // Lines are counted here: after a CRLF record the reader's position is between the
        // `\r` and the `\n`, so its line number and the next record's start lag by one.
        let (mut counted_to, mut line_at) = (0usize, 1u64);
        // The header first, so the first record's start is after it.
        if let Err(e) = reader.byte_headers() {
            let line = e.position().map_or(1, csv::Position::line);
            self.reject(shown, line, String::new(), format!("unreadable CSV: {e}"));
            return Ok(out);
        }
        loop {
            if self.located(&mut out) {
                return Ok(out);
            }
            let start = reader.position().clone();
            let more = match reader.read_byte_record(&mut record) {
                Ok(more) => more,
                Err(e) => {
                    // A record the CSV grammar cannot read (e.g. an unterminated quote).
                    let line = e.position().map_or(start.line(), csv::Position::line);
                    self.reject(shown, line, String::new(), format!("unreadable CSV: {e}"));
                    break;
                }
            };
            if !more {
                break;
            }
            let end = (reader.position().byte() as usize).min(bytes.len());
            let mut begin = (start.byte() as usize).min(end);
            while begin < end && matches!(bytes[begin], b'\r' | b'\n') {
                begin += 1;
            }
            line_at += bytes[counted_to.min(begin)..begin].iter().filter(|b| **b == b'\n').count() as u64;
            counted_to = begin;
            let raw = String::from_utf8_lossy(&bytes[begin..end]).trim_end_matches(['\r', '\n']).to_owned();
            let line = line_at;
            if record.len() != width {
                self.reject(shown, line, raw, format!("expected {width} fields, found {}", record.len()));
                continue;
            }
            // A field that is not UTF-8 text rejects its record (it was read as NULL).
            let bad = record.iter().position(|field| std::str::from_utf8(field).is_err());
            if let Some(k) = bad {
                let column = self.schema.field(k).name();
                self.reject(shown, line, raw, format!("column `{column}`: not valid UTF-8 text"));
                continue;
            }
            for (builder, field) in pending.fields.iter_mut().zip(record.iter()) {
                match std::str::from_utf8(field) {
                    Ok("") | Err(_) => builder.append_null(),
                    Ok(text) => builder.append_value(text),
                }
            }
            for (builder, value) in pending.fields[width..].iter_mut().zip(partition) {
                builder.append_option(value.as_deref());
            }
            pending.raw.push((line, raw));
            if pending.raw.len() >= self.batch_size {
                out.extend(self.finish(std::mem::replace(&mut pending, self.pending()), shown)?);
            }
        }
        out.extend(self.finish(pending, shown)?);
        Ok(out)
    }

    /// NDJSON: one object per non-empty line; scalar values as text, nested ones rejected.
    fn read_json(&self, bytes: &[u8], shown: &str, partition: &[Option<String>]) -> DfResult<Vec<RecordBatch>> {
        let lines = bytes.split(|b| *b == b'\n').enumerate().filter_map(|(k, line)| {
            let raw = String::from_utf8_lossy(line).trim_end_matches('\r').to_owned();
            if raw.trim().is_empty() {
                return None;
            }
            if std::str::from_utf8(line).is_err() {
                // Read lossily it would parse with U+FFFD in place of the bytes.
                self.reject(shown, k as u64 + 1, raw, "not valid UTF-8 text".into());
                return None;
            }
            Some((k as u64 + 1, raw))
        });
        self.json_records(lines, shown, partition)
    }

    /// JSON object records, each with its line (or position) in `shown`; the schema's last
    /// columns take `partition`'s values.
    fn json_records(
        &self,
        records: impl IntoIterator<Item = (u64, String)>,
        shown: &str,
        partition: &[Option<String>],
    ) -> DfResult<Vec<RecordBatch>> {
        let width = self.schema.fields().len() - partition.len();
        let mut out = Vec::new();
        let mut pending = self.pending();
        for (line_no, raw) in records {
            if self.located(&mut out) {
                return Ok(out);
            }
            let object = match serde_json::from_str::<serde_json::Value>(&raw) {
                Ok(serde_json::Value::Object(map)) => map,
                Ok(_) => {
                    self.reject(shown, line_no, raw, "expected a JSON object".into());
                    continue;
                }
                Err(e) => {
                    self.reject(shown, line_no, raw, format!("invalid JSON: {e}"));
                    continue;
                }
            };
            let mut values: Vec<Option<String>> = Vec::with_capacity(self.schema.fields().len());
            let mut nested = None;
            for field in &self.schema.fields()[..width] {
                values.push(match object.get(field.name()) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Some(v.to_string()),
                    Some(_) => {
                        nested.get_or_insert_with(|| field.name().clone());
                        None
                    }
                });
            }
            if let Some(column) = nested {
                self.reject(shown, line_no, raw, format!("column `{column}`: expected a scalar, found nested JSON"));
                continue;
            }
            values.extend(partition.iter().cloned());
            for (builder, value) in pending.fields.iter_mut().zip(values) {
                builder.append_option(value);
            }
            pending.raw.push((line_no, raw));
            if pending.raw.len() >= self.batch_size {
                out.extend(self.finish(std::mem::replace(&mut pending, self.pending()), shown)?);
            }
        }
        out.extend(self.finish(pending, shown)?);
        Ok(out)
    }

    fn pending(&self) -> Pending {
        Pending { fields: (0..self.schema.fields().len()).map(|_| StringBuilder::new()).collect(), raw: Vec::new() }
    }

    fn reject(&self, file: &str, line: u64, raw: String, reason: String) {
        if let Ok(mut r) = self.rejects.lock() {
            r.push(Rejected { source: self.name.clone(), file: file.to_owned(), line, raw, reason });
        }
    }

    /// Casts a batch of text records to the schema; rows with a field that does not
    /// parse, or NULL in a NOT NULL column, are rejected.
    fn finish(&self, pending: Pending, file: &str) -> DfResult<Option<RecordBatch>> {
        let n = pending.raw.len();
        if n == 0 {
            return Ok(None);
        }
        let mut reasons: Vec<Option<String>> = vec![None; n];
        let options = CastOptions { safe: true, ..Default::default() };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(pending.fields.len());
        for (field, mut builder) in self.schema.fields().iter().zip(pending.fields) {
            let text = builder.finish();
            let typed = cast_with_options(&text, field.data_type(), &options)?;
            for (row, reason) in reasons.iter_mut().enumerate() {
                if reason.is_some() {
                    continue;
                }
                if text.is_valid(row) && typed.is_null(row) {
                    *reason = Some(format!(
                        "column `{}`: cannot read `{}` as {}",
                        field.name(),
                        text.value(row),
                        field.data_type()
                    ));
                } else if typed.is_null(row) && !field.is_nullable() {
                    *reason = Some(if field.metadata().contains_key(EVENT_TIME_KEY) {
                        format!("no event time: `{}` is missing or null", field.name())
                    } else {
                        format!("column `{}` is NOT NULL but the field is empty", field.name())
                    });
                }
            }
            columns.push(typed);
        }
        let keep = BooleanArray::from(reasons.iter().map(Option::is_none).collect::<Vec<_>>());
        for ((line, raw), reason) in pending.raw.into_iter().zip(reasons) {
            if let Some(reason) = reason {
                self.reject(file, line, raw, reason);
            }
        }
        // Casting every column first keeps the vectorized path; the NOT NULL promise is
        // kept by the filter, so the batch is built against a nullable twin of the schema.
        let batch = filter_record_batch(&RecordBatch::try_new(Arc::clone(&self.nullable), columns)?, &keep)?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())?;
        let batch = match &self.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        Ok(Some(batch))
    }
}

/// Parses a whole file's records (CSV with a header, or NDJSON) of source `source`
/// against `schema` by the rules of the module docs: the batches of the records that
/// conform and the records set aside (`shown` names the file in them).
pub fn parse_file_records(
    source: &str,
    schema: &SchemaRef,
    format: CheckedFormat,
    bytes: &[u8],
    shown: &str,
    batch_size: usize,
) -> DfResult<(Vec<RecordBatch>, Vec<Rejected>)> {
    let reader = Reader::standalone(source, schema, format, batch_size);
    let batches = reader.read_bytes(bytes, shown, &[])?;
    Ok((batches, reader.take_rejects()))
}

/// The first record of `file` that does not conform to `schema` (`None`: all do), read
/// by the rules of the module docs without keeping any rows. A files source in fail mode
/// is read by DataFusion's readers, whose parse errors name neither the file nor the
/// line; a build that fails on one re-reads the source with this to say where.
pub fn first_rejected(
    source: &str,
    schema: &SchemaRef,
    format: CheckedFormat,
    file: &CheckedFile,
) -> DfResult<Option<Rejected>> {
    let mut reader = Reader::standalone(source, schema, format, 1024);
    reader.first_only = true;
    reader.read_file(file)?;
    Ok(reader.take_rejects().into_iter().min_by_key(|r| r.line))
}

/// Field metadata marking a stream's event-time column (NOT NULL for the reader): a
/// record without it is rejected as having no event time.
pub const EVENT_TIME_KEY: &str = "kiln.event_time";

/// Parses JSON object records (raw text, with their 1-based position in `origin`) of
/// source `source` against `schema` by the rules of the module docs: the batches of the
/// records that conform (at most `batch_size` rows each) and the records set aside.
pub fn parse_json_records(
    source: &str,
    schema: &SchemaRef,
    origin: &str,
    records: impl IntoIterator<Item = (u64, String)>,
    batch_size: usize,
) -> DfResult<(Vec<RecordBatch>, Vec<Rejected>)> {
    let reader = Reader::standalone(source, schema, CheckedFormat::Json, batch_size);
    let batches = reader.json_records(records, origin, &[])?;
    Ok((batches, reader.take_rejects()))
}

fn nullable_twin(schema: &SchemaRef) -> SchemaRef {
    Arc::new(datafusion::arrow::datatypes::Schema::new(
        schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
    ))
}

/// What the checked scans in `plan` set aside, one entry per source it reads with
/// `on_error = 'reject'` (empty: it reads none).
pub fn collect_rejects(plan: &Arc<dyn ExecutionPlan>) -> Vec<SourceRejects> {
    let mut out: Vec<SourceRejects> = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if let Some(scan) = node.downcast_ref::<CheckedScanExec>() {
            let found = SourceRejects {
                source: scan.name.clone(),
                version: scan.rejects_version.clone(),
                rejects: scan.rejects(),
                complete: scan.complete.load(std::sync::atomic::Ordering::Relaxed),
                schema: Arc::clone(&scan.schema),
                files: scan.files.clone(),
                format: scan.format,
            };
            // A source scanned twice (a self-join): one complete scan says it all.
            match out.iter_mut().find(|s| s.source == found.source) {
                Some(seen) if !seen.complete && found.complete => *seen = found,
                Some(_) => {}
                None => out.push(found),
            }
        }
        stack.extend(node.children().into_iter().cloned());
    }
    out
}

/// The schema of `<source>__rejected` (and of a micro-batch product's `<product>__rejected`).
pub fn rejects_schema() -> SchemaRef {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("source"),
        text("file"),
        Field::new("line", DataType::UInt64, false),
        text("raw"),
        text("reason"),
    ]))
}

/// The rejected records as a batch for `<product>__rejected`: source, file, line, raw,
/// reason.
pub fn rejects_batch(rejects: &[Rejected]) -> DfResult<RecordBatch> {
    use datafusion::arrow::array::{StringArray, UInt64Array};
    let text =
        |f: fn(&Rejected) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(rejects.iter().map(f))) };
    Ok(RecordBatch::try_from_iter([
        ("source", text(|r| r.source.as_str())),
        ("file", text(|r| r.file.as_str())),
        ("line", Arc::new(UInt64Array::from_iter_values(rejects.iter().map(|r| r.line))) as ArrayRef),
        ("raw", text(|r| r.raw.as_str())),
        ("reason", text(|r| r.reason.as_str())),
    ])?)
}
