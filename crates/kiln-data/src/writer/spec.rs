//! What one build of a dataset is written as: the [`WriteSpec`] (the dataset's
//! [`WriteLayout`] plus this build's ids and schema), how its rows map to files
//! ([`Target`]), and the conformance of batches to its schema.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampNanosecondType};
use datafusion::common::config::TableParquetOptions;
use datafusion::parquet::file::properties::WriterProperties;

use crate::layout::WriteLayout;
use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// Everything the writer needs to know about one build of a dataset.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    /// The dataset (a product, a view, or a side dataset such as `<product>__rejected`).
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    /// The schema of the files: the product's contract (or the plan's schema when the
    /// product declares no columns). Batches are conformed to it, and every written
    /// file's footer is read back and checked against it (ARROW:schema round trip
    /// included) before the manifest exists: the write-time contract gate.
    pub schema: SchemaRef,
    pub schema_fp: String,
    pub layout: WriteLayout,
    /// The Parquet writer properties: the session's options with the layout's on top.
    pub properties: WriterProperties,
    /// Micro-batch writes (ingest, stream checkpoints): the batch number. Each batch is
    /// committed on its own, so it gets its own build directory, `builds/<run_id>.<batch>`.
    pub batch: Option<u64>,
}

/// The ids of one build: its build id, the run writing it, and the micro-batch (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildIds {
    pub build_id: String,
    pub run_id: String,
    pub batch: Option<u64>,
}

impl WriteSpec {
    /// The spec of build `ids` of `product` with `layout`, writing Parquet with the
    /// session's options (`session`) and the layout's on top.
    pub fn new(
        product: &str,
        ids: BuildIds,
        (schema, schema_fp): (SchemaRef, String),
        layout: WriteLayout,
        session: &TableParquetOptions,
    ) -> Result<Self> {
        let properties = layout.parquet.writer_properties(session)?;
        Ok(Self {
            product: product.to_owned(),
            build_id: ids.build_id,
            run_id: ids.run_id,
            schema,
            schema_fp,
            layout,
            properties,
            batch: ids.batch,
        })
    }

    /// The spec of a dataset Kiln derives (`<product>__rejected`, `<view>__late`): its own
    /// schema, [`WriteLayout::derived`].
    pub fn derived(
        dataset: &str,
        ids: BuildIds,
        schema: &SchemaRef,
        max_rows_per_file: usize,
        session: &TableParquetOptions,
    ) -> Result<Self> {
        let schema_fp = kiln_contracts::schema_fingerprint(schema);
        Self::new(dataset, ids, (Arc::clone(schema), schema_fp), WriteLayout::derived(max_rows_per_file), session)
    }

    /// The build directory, relative to the warehouse root.
    pub fn build_dir(&self) -> String {
        match self.batch {
            Some(b) => Warehouse::build_dir(&self.product, &format!("{}.{b:06}", self.run_id)),
            None => Warehouse::build_dir(&self.product, &self.run_id),
        }
    }

    /// The name (without `.parquet`) of file `seq` of output partition `partition`.
    pub(crate) fn file_name(&self, partition: usize, seq: usize) -> String {
        self.layout.basename.render(partition, seq, &self.build_id, &self.run_id, self.batch)
    }
}

/// How rows map to files: the partition columns (by index in the product schema) and the
/// schema of the files, which lacks them and holds each column as its Delta table stores
/// it (kiln_contracts::storage).
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) partition_cols: Vec<usize>,
    pub(crate) keep: Vec<usize>,
    pub(crate) file_schema: SchemaRef,
    /// Whether some column is stored as another type than the product's.
    pub(crate) cast: bool,
}

impl Target {
    pub(crate) fn of(spec: &WriteSpec) -> Result<Self> {
        let mut partition_cols = Vec::with_capacity(spec.layout.partition_by.len());
        for name in &spec.layout.partition_by {
            let (i, _) = spec.schema.column_with_name(name).ok_or_else(|| {
                DataError::Config(format!("product `{}`: PARTITIONED BY column `{name}` is not a column", spec.product))
            })?;
            partition_cols.push(i);
        }
        let keep: Vec<usize> = (0..spec.schema.fields().len()).filter(|i| !partition_cols.contains(i)).collect();
        let logical = spec.schema.project(&keep).map_err(|e| DataError::Internal(e.to_string()))?;
        let stored = kiln_contracts::storage_schema(&logical)
            .map_err(|source| DataError::Storage { product: spec.product.clone(), source })?;
        let cast = stored.fields() != logical.fields();
        Ok(Self { partition_cols, keep, file_schema: Arc::new(stored), cast })
    }

    /// `batch` (the product's file columns) as the files store it: each column cast to
    /// its stored type, failing (never rounding) where a value does not fit: an unsigned
    /// value above `i64::MAX`, a nanosecond timestamp that is not a whole microsecond.
    pub(crate) fn stored(&self, batch: RecordBatch, product: &str) -> Result<RecordBatch> {
        if !self.cast {
            return Ok(batch);
        }
        let options = CastOptions { safe: false, ..Default::default() };
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (field, column) in self.file_schema.fields().iter().zip(batch.columns()) {
            if column.data_type() == field.data_type() {
                columns.push(Arc::clone(column));
                continue;
            }
            let fail = |reason: String| DataError::Conform {
                product: product.to_owned(),
                column: field.name().clone(),
                from: column.data_type().to_string(),
                to: format!("{} (how a Delta table stores it)", field.data_type()),
                reason,
            };
            if let Some(value) = sub_microsecond(column.as_ref()) {
                return Err(fail(format!(
                    "the value {value} ns has a fraction of a microsecond, which a Delta timestamp cannot hold; \
                     truncate it (date_trunc('microsecond', ...)) or CAST it to TIMESTAMP(6)"
                )));
            }
            columns.push(cast_with_options(column, field.data_type(), &options).map_err(|e| fail(e.to_string()))?);
        }
        RecordBatch::try_new(Arc::clone(&self.file_schema), columns).map_err(|e| DataError::Internal(e.to_string()))
    }
}

/// The first nanosecond timestamp in `array` (at any depth) that is not a whole
/// microsecond.
fn sub_microsecond(array: &dyn Array) -> Option<i64> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let values = array.as_primitive::<TimestampNanosecondType>();
            values.iter().flatten().find(|v| v % 1_000 != 0)
        }
        DataType::Struct(_) => array.as_struct().columns().iter().find_map(|c| sub_microsecond(c.as_ref())),
        DataType::List(_) => sub_microsecond(array.as_list::<i32>().values().as_ref()),
        DataType::LargeList(_) => sub_microsecond(array.as_list::<i64>().values().as_ref()),
        DataType::FixedSizeList(..) => sub_microsecond(array.as_fixed_size_list().values().as_ref()),
        DataType::Map(..) => sub_microsecond(array.as_map().entries()),
        DataType::Dictionary(..) => array.as_any_dictionary_opt().and_then(|d| sub_microsecond(d.values().as_ref())),
        _ => None,
    }
}

/// Conforms a batch to the product schema: casts between physical encodings of the same
/// logical type (e.g. Utf8 -> Utf8View) and enforces NOT NULL on the data. This is the
/// write-time half of the contract gate for nullability.
pub fn conform(batch: RecordBatch, spec: &WriteSpec) -> Result<RecordBatch> {
    let target = &spec.schema;
    if batch.schema().fields() == target.fields() {
        return RecordBatch::try_new(Arc::clone(target), batch.columns().to_vec())
            .map_err(|e| DataError::Internal(format!("product `{}`: {e}", spec.product)));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for (field, column) in target.fields().iter().zip(batch.columns()) {
        let column = if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            cast(column, field.data_type()).map_err(|e| DataError::Conform {
                product: spec.product.clone(),
                column: field.name().clone(),
                from: column.data_type().to_string(),
                to: field.data_type().to_string(),
                reason: e.to_string(),
            })?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(DataError::NullInNotNull {
                product: spec.product.clone(),
                column: field.name().clone(),
                nulls: column.null_count(),
            });
        }
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(target), columns)
        .map_err(|e| DataError::Internal(format!("product `{}`: {e}", spec.product)))
}
