//! A directory of arriving files read as a stream (`connector = 'files'` on a stream):
//! every file that appears under `path` is read once, whole, in name order.
//!
//! The position (kiln_artifact::SourcePosition::files) is the set of file names already
//! read, committed with what was made of them, so a file is read exactly once however
//! its name sorts. A producer must make each file appear complete (write it elsewhere,
//! then rename it into the directory); files whose names start with `.` or `_` are not
//! read (temporary names). A micro-batch is whole files, at least one, until
//! `batch_records` records.
//!
//! Formats: `json` (NDJSON) and `csv` (with a header) are read with the checked reader's
//! rules (crate::checked: malformed records rejected or failing the run with file and
//! line); `arrow` files (Arrow IPC) are read by column name and cast to the declared
//! types, rows that do not conform (a value that does not cast, NULL in a NOT NULL
//! column) set aside with their values rendered as JSON.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result as DfResult};
use kiln_artifact::SourcePosition;

use crate::checked::{CheckedFormat, EVENT_TIME_KEY, Rejected, parse_file_records};
use kiln_artifact::identity::SourceKind;

use super::batch::{MicroBatch, definition_version};
use crate::{DataError, Result};

/// The format of a file stream's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
    Arrow,
}

/// A stream over the files arriving in a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct FilesSource {
    pub name: String,
    pub dir: PathBuf,
    pub schema: SchemaRef,
    pub format: FileFormat,
    pub batch_records: usize,
    pub reject: bool,
}

impl FilesSource {
    pub fn start(&self) -> SourcePosition {
        SourcePosition { url: format!("file://{}", self.dir.display()), ..Default::default() }
    }

    /// The definition version: directory, format, schema and error policy.
    pub fn version(&self) -> String {
        let format = match self.format {
            FileFormat::Json => "Json",
            FileFormat::Csv => "Csv",
            FileFormat::Arrow => "Arrow",
        };
        let text = format!("{}\n{format}\n{}\n", self.dir.display(), self.reject);
        definition_version(SourceKind::FilesStream, &self.schema, &text)
    }

    fn error(&self, message: String) -> DataError {
        DataError::Source { name: self.name.clone(), message }
    }

    /// The next micro-batch: unread files in name order until `batch_records` records;
    /// `None` when no file is new.
    pub async fn next_batch(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        let source = self.clone();
        let from = from.clone();
        tokio::task::spawn_blocking(move || source.next_batch_blocking(&from, batch_size))
            .await
            .map_err(|e| self.error(format!("the read task failed: {e}")))?
    }

    fn next_batch_blocking(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        let listed =
            std::fs::read_dir(&self.dir).map_err(|e| self.error(format!("cannot list {}: {e}", self.dir.display())))?;
        let mut names: BTreeSet<String> = BTreeSet::new();
        for entry in listed {
            let entry = entry.map_err(|e| self.error(format!("cannot list {}: {e}", self.dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && !name.starts_with('.') && !name.starts_with('_') && !from.files.contains(&name) {
                names.insert(name);
            }
        }
        let mut position = from.clone();
        let (mut batches, mut rejects, mut records) = (Vec::new(), Vec::new(), 0u64);
        for name in names {
            if records >= self.batch_records as u64 {
                break;
            }
            let path = self.dir.join(&name);
            let shown = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|e| self.error(format!("cannot read {shown}: {e}")))?;
            let exec = DataError::exec(format!("source `{}`", self.name));
            let (b, r) = match self.format {
                FileFormat::Json => {
                    parse_file_records(&self.name, &self.schema, CheckedFormat::Json, &bytes, &shown, batch_size)
                }
                FileFormat::Csv => {
                    parse_file_records(&self.name, &self.schema, CheckedFormat::Csv, &bytes, &shown, batch_size)
                }
                FileFormat::Arrow => self.read_arrow(bytes, &shown),
            }
            .map_err(exec)?;
            records += b.iter().map(|b| b.num_rows() as u64).sum::<u64>() + r.len() as u64;
            batches.extend(b);
            rejects.extend(r);
            position.files.insert(name);
        }
        if let (false, Some(first)) = (self.reject, rejects.first()) {
            return Err(self.error(format!("{} record {}: {}", first.file, first.line, first.reason)));
        }
        if position.files.len() == from.files.len() {
            return Ok(None);
        }
        position.records += records;
        position.batches += 1;
        let exhausted = records < self.batch_records as u64;
        let partitions = vec![0; batches.len()];
        Ok(Some(MicroBatch { batches, partitions, rejects, records, position, exhausted }))
    }

    /// An Arrow IPC file's rows, by column name, cast to the declared types.
    fn read_arrow(&self, bytes: Vec<u8>, shown: &str) -> DfResult<(Vec<RecordBatch>, Vec<Rejected>)> {
        let reader = datafusion::arrow::ipc::reader::FileReader::try_new(std::io::Cursor::new(bytes), None)?;
        let mut out = Vec::new();
        let mut rejects = Vec::new();
        let mut row_base = 0u64;
        for batch in reader {
            let batch = batch?;
            let (kept, bad) = self.conform(&batch, shown, row_base)?;
            row_base += batch.num_rows() as u64;
            out.push(kept);
            rejects.extend(bad);
        }
        Ok((out, rejects))
    }

    /// `batch` cast to the declared schema, and its rows that do not conform.
    fn conform(&self, batch: &RecordBatch, shown: &str, row_base: u64) -> DfResult<(RecordBatch, Vec<Rejected>)> {
        let options = CastOptions { safe: true, ..Default::default() };
        let n = batch.num_rows();
        let mut reasons: Vec<Option<String>> = vec![None; n];
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            let Some(column) = batch.column_by_name(field.name()) else {
                return Err(DataFusionError::Plan(format!("{shown}: no column `{}`", field.name())));
            };
            let typed = cast_with_options(column, field.data_type(), &options)?;
            if typed.null_count() > column.null_count() || (!field.is_nullable() && typed.null_count() > 0) {
                for (row, reason) in reasons.iter_mut().enumerate() {
                    if reason.is_some() || !typed.is_null(row) {
                        continue;
                    }
                    if column.is_valid(row) {
                        *reason = Some(format!(
                            "column `{}`: cannot read a {} as {}",
                            field.name(),
                            column.data_type(),
                            field.data_type()
                        ));
                    } else if !field.is_nullable() {
                        *reason = Some(if field.metadata().contains_key(EVENT_TIME_KEY) {
                            format!("no event time: `{}` is missing or null", field.name())
                        } else {
                            format!("column `{}` is NOT NULL but the value is null", field.name())
                        });
                    }
                }
            }
            columns.push(typed);
        }
        let nullable = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
        ));
        let all = RecordBatch::try_new(nullable, columns)?;
        let mut rejects = Vec::new();
        if reasons.iter().any(Option::is_some) {
            for (row, reason) in reasons.iter().enumerate() {
                if let Some(reason) = reason {
                    rejects.push(Rejected {
                        source: self.name.clone(),
                        file: shown.to_owned(),
                        line: row_base + row as u64 + 1,
                        raw: row_json(batch, row),
                        reason: reason.clone(),
                    });
                }
            }
        }
        let keep = BooleanArray::from(reasons.iter().map(Option::is_none).collect::<Vec<_>>());
        let kept = if rejects.is_empty() { all } else { filter_record_batch(&all, &keep)? };
        Ok((RecordBatch::try_new(Arc::clone(&self.schema), kept.columns().to_vec())?, rejects))
    }
}

/// A row's values as a JSON object (rejected Arrow rows keep their values this way).
fn row_json(batch: &RecordBatch, row: usize) -> String {
    let mut object = serde_json::Map::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let value = if column.is_null(row) {
            serde_json::Value::Null
        } else {
            datafusion::arrow::util::display::array_value_to_string(column, row)
                .map_or(serde_json::Value::Null, serde_json::Value::String)
        };
        object.insert(field.name().clone(), value);
    }
    serde_json::Value::Object(object).to_string()
}
