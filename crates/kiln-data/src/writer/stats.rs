//! A data file's statistics in the Delta protocol's form, for its `add` action: the
//! number of records, and per top-level scalar column its NULL count and its exact
//! minimum and maximum, so Delta readers skip files a filter excludes.
//!
//! Values are JSON as the protocol writes them: numbers as numbers (decimals with their
//! scale), strings as strings, dates `YYYY-MM-DD`, timestamps in ISO 8601 with their full
//! precision (`Z` for UTC-adjusted ones). A column whose minimum or maximum is not exact
//! in every row group (truncated strings), or of a type the protocol keeps no statistics
//! for (binary, nested), has no min/max: a reader then reads the file, which is always
//! correct; a wrong bound never is.
//!
//! Our own because delta-rs's equivalent (`writer::stats`) is crate-private in 1.1, and
//! takes the footer of a file it wrote itself.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, make_comparator};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Schema,
    TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::file::metadata::ParquetMetaData;

/// The Delta statistics JSON of a file with footer `meta` holding `rows` rows of
/// `schema` (the file's columns, partition columns excluded).
pub(crate) fn delta_stats(meta: &ParquetMetaData, schema: &Schema, rows: u64) -> String {
    let parquet = meta.file_metadata().schema_descr();
    let groups = meta.row_groups();
    let mut mins = Vec::new();
    let mut maxes = Vec::new();
    let mut nulls = Vec::new();
    for field in schema.fields() {
        if field.data_type().is_nested() {
            continue;
        }
        let Ok(converter) = StatisticsConverter::try_new(field.name(), schema, parquet) else { continue };
        if let Ok(counts) = converter.row_group_null_counts(groups.iter())
            && counts.null_count() == 0
        {
            let total: u64 = counts.values().iter().sum();
            nulls.push(format!("{}:{total}", json_string(field.name())));
        }
        let exact = |e: datafusion::parquet::errors::Result<datafusion::arrow::array::BooleanArray>| {
            e.is_ok_and(|a| a.null_count() == 0 && a.true_count() == a.len())
        };
        if !exact(converter.row_group_is_min_value_exact(groups.iter()))
            || !exact(converter.row_group_is_max_value_exact(groups.iter()))
        {
            continue;
        }
        let (Ok(lo), Ok(hi)) = (converter.row_group_mins(groups.iter()), converter.row_group_maxes(groups.iter()))
        else {
            continue;
        };
        // Every row group must have both bounds (an all-NULL group has none: its values
        // then do not narrow the file's range, and the others still bound it).
        let (Some(lo), Some(hi)) = (extreme(&lo, std::cmp::Ordering::Less), extreme(&hi, std::cmp::Ordering::Greater))
        else {
            continue;
        };
        if let (Some(lo), Some(hi)) = (json_value(&lo.0, lo.1), json_value(&hi.0, hi.1)) {
            mins.push(format!("{}:{lo}", json_string(field.name())));
            maxes.push(format!("{}:{hi}", json_string(field.name())));
        }
    }
    format!(
        "{{\"numRecords\":{rows},\"minValues\":{{{}}},\"maxValues\":{{{}}},\"nullCount\":{{{}}}}}",
        mins.join(","),
        maxes.join(","),
        nulls.join(",")
    )
}

/// The smallest (`Less`) or greatest (`Greater`) non-NULL value of `values`: the array and
/// its index.
pub(crate) fn extreme(values: &ArrayRef, want: std::cmp::Ordering) -> Option<(ArrayRef, usize)> {
    let compare = make_comparator(values.as_ref(), values.as_ref(), SortOptions::default()).ok()?;
    let best =
        (0..values.len()).filter(|&i| values.is_valid(i)).reduce(|a, b| if compare(b, a) == want { b } else { a })?;
    Some((std::sync::Arc::clone(values), best))
}

/// Value `i` of `a` as the Delta protocol writes statistics; `None` for types it keeps
/// none for (and non-finite floats).
fn json_value(a: &ArrayRef, i: usize) -> Option<String> {
    Some(match a.data_type() {
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float32 => finite(f64::from(a.as_primitive::<Float32Type>().value(i)))?,
        DataType::Float64 => finite(a.as_primitive::<Float64Type>().value(i))?,
        DataType::Decimal128(_, scale) => decimal(a.as_primitive::<Decimal128Type>().value(i), *scale),
        DataType::Utf8 => json_string(a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => json_string(a.as_string::<i64>().value(i)),
        DataType::Utf8View => json_string(a.as_string_view().value(i)),
        DataType::Date32 => {
            let (y, m, d) = kiln_artifact::time::civil_from_days(i64::from(a.as_primitive::<Date32Type>().value(i)));
            if !(0..=9999).contains(&y) {
                return None;
            }
            format!("\"{y:04}-{m:02}-{d:02}\"")
        }
        DataType::Timestamp(unit, tz) => {
            let (value, per_second, digits) = match unit {
                TimeUnit::Second => (a.as_primitive::<TimestampSecondType>().value(i), 1, 0),
                TimeUnit::Millisecond => (a.as_primitive::<TimestampMillisecondType>().value(i), 1_000, 3),
                TimeUnit::Microsecond => (a.as_primitive::<TimestampMicrosecondType>().value(i), 1_000_000, 6),
                TimeUnit::Nanosecond => (a.as_primitive::<TimestampNanosecondType>().value(i), 1_000_000_000, 9),
            };
            timestamp(value, per_second, digits, tz.is_some())?
        }
        _ => return None,
    })
}

fn finite(v: f64) -> Option<String> {
    v.is_finite().then(|| {
        let s = v.to_string();
        // JSON numbers need a digit before any exponent; Rust writes `1e300` as digits.
        if s.contains(['.', 'e', 'E']) { s } else { format!("{s}.0") }
    })
}

/// An unscaled decimal with `scale` as a JSON number: `-12345`, 2 -> `-123.45`.
fn decimal(v: i128, scale: i8) -> String {
    let digits = v.unsigned_abs().to_string();
    let sign = if v < 0 { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat(scale.unsigned_abs() as usize));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (whole, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{whole}.{frac}")
}

/// `"2024-01-05T10:00:00.123456Z"` for `value` units since the epoch.
fn timestamp(value: i64, per_second: i64, digits: usize, utc: bool) -> Option<String> {
    let secs = value.div_euclid(per_second);
    let frac = value.rem_euclid(per_second);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = kiln_artifact::time::civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let mut out = format!("\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60);
    if digits > 0 {
        let _ = write!(out, ".{frac:0>digits$}");
    }
    if utc {
        out.push('Z');
    }
    out.push('"');
    Some(out)
}

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_written_as_the_protocol_does() {
        assert_eq!(decimal(-12345, 2), "-123.45");
        assert_eq!(decimal(5, 3), "0.005");
        assert_eq!(decimal(-5, 3), "-0.005");
        assert_eq!(decimal(7, 0), "7");
        assert_eq!(decimal(7, -2), "700");
        assert_eq!(finite(1.5).as_deref(), Some("1.5"));
        assert_eq!(finite(3.0).as_deref(), Some("3.0"));
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(
            timestamp(1_704_448_800_123_456, 1_000_000, 6, true).as_deref(),
            Some("\"2024-01-05T10:00:00.123456Z\"")
        );
        assert_eq!(timestamp(-1, 1_000, 3, false).as_deref(), Some("\"1969-12-31T23:59:59.999\""));
        assert_eq!(json_string("a\"b"), "\"a\\\"b\"");
    }
}
