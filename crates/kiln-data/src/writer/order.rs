//! Tier 3's order check: every partition's rows against the sort keys, row by row while
//! writing, and the partitions against each other in file order.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use super::spec::WriteSpec;
use crate::{DataError, Result};

/// The tier-3 order check: the sort key columns as comparable rows.
#[derive(Debug, Clone)]
pub(crate) struct OrderCheck {
    columns: Vec<usize>,
    fields: Vec<SortField>,
    described: String,
}

impl OrderCheck {
    pub(crate) fn keys(spec: &WriteSpec) -> Result<Option<Self>> {
        let keys = spec.layout.ordering.keys();
        if keys.is_empty() {
            return Ok(None);
        }
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        for key in keys {
            let (name, asc) = (&key.column, key.ascending);
            let (i, field) = spec.schema.column_with_name(name).ok_or_else(|| {
                DataError::Config(format!("product `{}`: ORDER BY column `{name}` is not in the schema", spec.product))
            })?;
            columns.push(i);
            let options = SortOptions { descending: !asc, nulls_first: !asc };
            fields.push(SortField::new_with_options(field.data_type().clone(), options));
        }
        Ok(Some(Self { columns, fields, described: spec.layout.ordering.keys_text().join(", ") }))
    }

    fn converter(&self) -> Result<RowConverter> {
        RowConverter::new(self.fields.clone()).map_err(|e| DataError::Internal(format!("order check: {e}")))
    }

    fn rows(&self, converter: &RowConverter, batch: &RecordBatch) -> Result<Rows> {
        let columns: Vec<ArrayRef> = self.columns.iter().map(|&i| Arc::clone(batch.column(i))).collect();
        converter.convert_columns(&columns).map_err(|e| DataError::Internal(format!("order check: {e}")))
    }

    fn broken(&self, spec: &WriteSpec, file: &str, row: u64) -> DataError {
        DataError::OrderBroken {
            product: spec.product.clone(),
            file: file.to_owned(),
            row,
            keys: self.described.clone(),
        }
    }

    /// `later`'s first row must not sort before `earlier`'s last row (1-row batches).
    pub(crate) fn check_pair(
        &self,
        earlier: &RecordBatch,
        later: &RecordBatch,
        spec: &WriteSpec,
        file: &str,
    ) -> Result<()> {
        let converter = self.converter()?;
        let (a, b) = (self.rows(&converter, earlier)?, self.rows(&converter, later)?);
        if a.num_rows() > 0 && b.num_rows() > 0 && a.row(a.num_rows() - 1) > b.row(0) {
            return Err(self.broken(spec, file, 0));
        }
        Ok(())
    }
}

/// The running state of one partition's order check.
pub(crate) struct OrderState {
    keys: OrderCheck,
    converter: RowConverter,
    last: Option<OwnedRow>,
    pub(crate) first_batch: Option<RecordBatch>,
    pub(crate) last_batch: Option<RecordBatch>,
}

impl OrderState {
    pub(crate) fn new(keys: OrderCheck) -> Result<Self> {
        let converter = keys.converter()?;
        Ok(Self { keys, converter, last: None, first_batch: None, last_batch: None })
    }

    /// Checks `batch` (whose first row is row `at` of `file`) against itself and the rows
    /// before it.
    pub(crate) fn check(&mut self, batch: &RecordBatch, spec: &WriteSpec, file: &str, at: u64) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let rows = self.keys.rows(&self.converter, batch)?;
        if let Some(last) = &self.last
            && last.row() > rows.row(0)
        {
            return Err(self.keys.broken(spec, file, at));
        }
        for i in 1..n {
            if rows.row(i - 1) > rows.row(i) {
                return Err(self.keys.broken(spec, file, at + i as u64));
            }
        }
        self.last = Some(rows.row(n - 1).owned());
        if self.first_batch.is_none() {
            self.first_batch = Some(batch.slice(0, 1));
        }
        self.last_batch = Some(batch.slice(n - 1, 1));
        Ok(())
    }
}
