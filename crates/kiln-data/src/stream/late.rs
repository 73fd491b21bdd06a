//! Late events: an event is late when its earliest window has already been emitted (that
//! window ends at or before the watermark). It is then dropped from all its windows, so
//! every emitted window holds exactly the events that were not late, and kept (with the
//! watermark it was late against) when the view asks for `<view>__late`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::{DataFusionError, Result as DfResult};

/// Event times in ms (floor), NULL kept; `units_per_ms` of the column's timestamp type
/// (crate::stream::window::units_per_ms).
pub fn event_ms(column: &dyn Array, units_per_ms: i64) -> DfResult<Int64Array> {
    let raw = cast(column, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("event time is not a timestamp".into()))?;
    let seconds = matches!(column.data_type(), DataType::Timestamp(TimeUnit::Second, _));
    Ok(raw
        .iter()
        .map(|v| v.map(|v| if seconds { v.saturating_mul(1_000) } else { v.div_euclid(units_per_ms.max(1)) }))
        .collect())
}

/// The end of the earliest window (epoch-aligned, starts at multiples of `slide`, length
/// `size`) that contains `t` (all in ms).
pub fn earliest_end(t: i64, size: i64, slide: i64) -> i64 {
    let first_start = (t - size).div_euclid(slide) * slide + slide;
    first_start + size
}

/// Which events of `ms` are late against `watermark` for windows of `size`/`slide`.
pub fn late_mask(ms: &Int64Array, size: i64, slide: i64, watermark: i64) -> BooleanArray {
    ms.iter().map(|t| Some(t.is_some_and(|t| earliest_end(t, size, slide) <= watermark))).collect()
}

/// The schema of `<view>__late`: the stream's columns and `kiln_watermark`, the
/// watermark the event was late against.
pub fn late_schema(stream: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> =
        stream.fields().iter().map(|f| f.as_ref().clone().with_metadata(Default::default())).collect();
    fields.push(Field::new("kiln_watermark", DataType::Timestamp(TimeUnit::Millisecond, None), false));
    Arc::new(Schema::new(fields))
}

/// The late rows of `batch` with the watermark they were late against.
pub fn late_rows(batch: &RecordBatch, late: &BooleanArray, watermark: i64) -> DfResult<RecordBatch> {
    let rows = filter_record_batch(batch, late)?;
    let mut columns = rows.columns().to_vec();
    columns.push(Arc::new(TimestampMillisecondArray::from(vec![watermark; rows.num_rows()])));
    Ok(RecordBatch::try_new(late_schema(&rows.schema()), columns)?)
}

#[cfg(test)]
mod tests {
    use super::earliest_end;

    #[test]
    fn earliest_window_ends() {
        // TUMBLE 10: [0,10), [10,20), ...
        assert_eq!(earliest_end(0, 10, 10), 10);
        assert_eq!(earliest_end(9, 10, 10), 10);
        assert_eq!(earliest_end(10, 10, 10), 20);
        assert_eq!(earliest_end(-1, 10, 10), 0);
        // HOP slide 2 size 10: 15 is in [6,16) .. [14,24); the earliest ends at 16.
        assert_eq!(earliest_end(15, 10, 2), 16);
        assert_eq!(earliest_end(16, 10, 2), 18);
        // HOP slide 3 size 10: 15 is in [6,16), [9,19), [12,22), [15,25).
        assert_eq!(earliest_end(15, 10, 3), 16);
    }
}
