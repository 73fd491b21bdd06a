//! Declared columns as Arrow schemas, and DataFusion planning errors as located errors.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::{ColumnDef, ColumnOption};
use kiln_contracts::sql_to_arrow;

use crate::dialect::normalize;
use crate::error::{ControlError, Location};

/// A declared column list as an Arrow schema (`NOT NULL` -> non-nullable).
pub(crate) fn columns_schema(columns: &[ColumnDef], at: &Location) -> Result<SchemaRef, ControlError> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let name = normalize(&c.name);
        let data_type = sql_to_arrow(&c.data_type).map_err(|e| ControlError::Syntax {
            at: Location {
                file: at.file.clone(),
                line: c.name.span.start.line.max(1),
                column: c.name.span.start.column.max(1),
            },
            message: format!("column `{name}`: {e}"),
            snippet: String::new(),
        })?;
        let not_null = c.options.iter().any(|o| matches!(o.option, ColumnOption::NotNull));
        // `COMMENT '...'` travels with the contract as field metadata.
        let metadata = c
            .options
            .iter()
            .filter_map(|o| match &o.option {
                ColumnOption::Comment(text) => Some(("comment".to_owned(), text.clone())),
                _ => None,
            })
            .collect();
        fields.push(Field::new(name, data_type, !not_null).with_metadata(metadata));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Maps a DataFusion planning error to a located error (DataFusion's diagnostic span is a
/// position in the file, because we planned from the file's own AST).
pub(crate) fn planning_error(e: DataFusionError, fallback: &Location, product: &str) -> ControlError {
    let span = e.diagnostic().and_then(|d| d.span);
    let at = match span {
        Some(s) if s.start.line > 0 => {
            Location { file: fallback.file.clone(), line: s.start.line, column: s.start.column }
        }
        _ => fallback.clone(),
    };
    let message = e.strip_backtrace();
    let message = message.strip_prefix("Error during planning: ").unwrap_or(&message).to_owned();
    ControlError::Compile { at, product: product.to_owned(), message }
}
