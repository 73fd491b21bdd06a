//! A product's Parquet write options: one parser, used by the compiler to check them
//! (with the option's location) and by the engine to apply them to the writer.
//!
//! - `compression`, `dictionary`, `statistics`: a default for every column and/or
//!   per-column values, `'<default>; <col>: <value>, <col>: <value>'` (either part may be
//!   left out): `compression = 'zstd(3); l_comment: snappy'`, `dictionary = 'false;
//!   l_shipmode: true'`, `statistics = 'l_comment: none'`. A column is a top-level output
//!   column, or a dotted path to a leaf inside a struct.
//! - `statistics = 'page'` (DataFusion's default) also writes the page index (column and
//!   offset indexes); `'chunk'` keeps statistics per column chunk only; `'none'` neither.
//! - `max_rows_per_row_group`: row groups are cut at this many rows (the last one of a
//!   file holds the rest; there is no minimum: holding rows back to reach one would
//!   change file boundaries, which `max_rows_per_file` owns).
//! - `bloom_filter_columns = 'a, b'`.
//! - `max_bytes_per_file = '256MiB'`: a file is finished once its written bytes plus its
//!   open row group's encoded size reach this (checked after each batch, so files end
//!   near it, not exactly at it); with `max_rows_per_file`, whichever comes first.
//! - `metadata_sidecars = 'true'`: see crate::writer (`_metadata`, `_common_metadata`).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;

/// The write options a product may set.
pub const WRITE_OPTIONS: [&str; 6] =
    ["compression", "max_rows_per_row_group", "bloom_filter_columns", "dictionary", "statistics", "metadata_sidecars"];

/// Applies `options` (keys from [`WRITE_OPTIONS`]) for a product with output `schema`.
/// An error is `(option, message)`.
pub fn apply(
    mut builder: WriterPropertiesBuilder,
    options: &BTreeMap<String, String>,
    schema: &Schema,
) -> Result<WriterPropertiesBuilder, (String, String)> {
    for (key, value) in options {
        let bad = |expected: &str| (key.clone(), format!("{key} = '{value}': expected {expected}"));
        builder = match key.as_str() {
            "compression" => {
                let expected = "a Parquet codec such as 'zstd(3)', 'snappy', 'lz4_raw', 'gzip(6)' or 'uncompressed' (per column: 'zstd(3); col: snappy')";
                let codec = |v: &str| v.parse::<Compression>().map_err(|_| bad(expected));
                per_column(builder, value, schema, &bad, |b, column, v| match column {
                    None => Ok(b.set_compression(codec(v)?)),
                    Some(c) => Ok(b.set_column_compression(c, codec(v)?)),
                })?
            }
            "dictionary" => {
                let flag = |v: &str| match v {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad("'true' or 'false' (per column: 'false; col: true')")),
                };
                per_column(builder, value, schema, &bad, |b, column, v| match column {
                    None => Ok(b.set_dictionary_enabled(flag(v)?)),
                    Some(c) => Ok(b.set_column_dictionary_enabled(c, flag(v)?)),
                })?
            }
            "statistics" => {
                let level = |v: &str| match v {
                    "none" => Ok(EnabledStatistics::None),
                    "chunk" => Ok(EnabledStatistics::Chunk),
                    "page" => Ok(EnabledStatistics::Page),
                    _ => Err(bad("'none', 'chunk' or 'page' (per column: 'chunk; col: none')")),
                };
                per_column(builder, value, schema, &bad, |b, column, v| match column {
                    None => Ok(b.set_statistics_enabled(level(v)?)),
                    Some(c) => Ok(b.set_column_statistics_enabled(c, level(v)?)),
                })?
            }
            "max_rows_per_row_group" => match value.parse::<usize>() {
                Ok(n) if n > 0 => builder.set_max_row_group_row_count(Some(n)),
                _ => return Err(bad("a positive integer")),
            },
            "bloom_filter_columns" => {
                for column in value.split(',').map(str::trim) {
                    let path = leaf(column, schema).ok_or_else(|| bad("a comma-separated list of output columns"))?;
                    builder = builder.set_column_bloom_filter_enabled(path, true);
                }
                builder
            }
            "max_bytes_per_file" => match parse_bytes(value) {
                Some(n) if n > 0 => builder,
                _ => return Err(bad("a size such as '268435456', '256MiB' or '1GiB'")),
            },
            "metadata_sidecars" if matches!(value.as_str(), "true" | "false") => builder,
            "metadata_sidecars" => return Err(bad("'true' or 'false'")),
            _ => return Err((key.clone(), format!("unknown write option `{key}`"))),
        };
    }
    Ok(builder)
}

/// The file size at which the writer rolls to a new file (`max_bytes_per_file`), if set.
pub fn max_bytes_per_file(options: &BTreeMap<String, String>) -> Option<u64> {
    options.get("max_bytes_per_file").and_then(|v| parse_bytes(v))
}

/// `1048576`, `512KiB`, `256MiB`, `1GiB` (also `KB`/`MB`/`GB`, as binary units).
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KIB" | "KB" => 1 << 10,
        "MIB" | "MB" => 1 << 20,
        "GIB" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Whether a product asked for `_metadata` / `_common_metadata` sidecars.
pub fn sidecars(options: &BTreeMap<String, String>) -> bool {
    options.get("metadata_sidecars").is_some_and(|v| v == "true")
}

/// Applies a `'<default>; col: value, ...'` setting through `set` (column `None` is the
/// default).
fn per_column(
    mut builder: WriterPropertiesBuilder,
    value: &str,
    schema: &Schema,
    bad: &dyn Fn(&str) -> (String, String),
    set: impl Fn(WriterPropertiesBuilder, Option<ColumnPath>, &str) -> Result<WriterPropertiesBuilder, (String, String)>,
) -> Result<WriterPropertiesBuilder, (String, String)> {
    let mut defaults = 0;
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Codecs like `zstd(3)` have no colon; a per-column part always has one.
        if !part.contains(':') {
            defaults += 1;
            if defaults > 1 {
                return Err(bad("one default, then `col: value` pairs"));
            }
            builder = set(builder, None, part)?;
            continue;
        }
        for pair in part.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (column, v) = pair.split_once(':').ok_or_else(|| bad("`col: value` pairs"))?;
            let path = leaf(column.trim(), schema)
                .ok_or_else(|| bad(&format!("output columns; there is no leaf column `{}`", column.trim())))?;
            builder = set(builder, Some(path), v.trim())?;
        }
    }
    Ok(builder)
}

/// The Parquet path of a leaf column given as `col` or `col.field.field`, if the schema
/// has it.
fn leaf(name: &str, schema: &Schema) -> Option<ColumnPath> {
    let parts: Vec<&str> = name.split('.').collect();
    let mut field = schema.field_with_name(parts.first()?).ok()?;
    for part in &parts[1..] {
        let DataType::Struct(children) = field.data_type() else { return None };
        field = children.iter().find(|f| f.name() == part)?;
    }
    if field.data_type().is_nested() {
        return None;
    }
    Some(ColumnPath::new(parts.iter().map(|p| (*p).to_owned()).collect()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Fields};
    use datafusion::parquet::file::properties::WriterProperties;

    fn schema() -> Schema {
        let inner = Fields::from(vec![Field::new("x", DataType::Int32, true)]);
        Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int64, true),
            Field::new("s", DataType::Struct(inner), true),
        ])
    }

    fn props(pairs: &[(&str, &str)]) -> Result<WriterProperties, String> {
        let options = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        apply(WriterProperties::builder(), &options, &schema()).map(|b| b.build()).map_err(|(_, m)| m)
    }

    #[test]
    fn defaults_and_per_column_values() {
        let p = props(&[
            ("compression", "zstd(3); a: snappy"),
            ("dictionary", "false; a: true"),
            ("statistics", "s.x: none, b: chunk"),
        ])
        .unwrap();
        let col = |n: &str| ColumnPath::new(n.split('.').map(String::from).collect());
        assert_eq!(p.compression(&col("a")), Compression::SNAPPY);
        assert!(matches!(p.compression(&col("b")), Compression::ZSTD(_)));
        assert!(p.dictionary_enabled(&col("a")));
        assert!(!p.dictionary_enabled(&col("b")));
        assert_eq!(p.statistics_enabled(&col("s.x")), EnabledStatistics::None);
        assert_eq!(p.statistics_enabled(&col("b")), EnabledStatistics::Chunk);
        assert_eq!(p.statistics_enabled(&col("a")), EnabledStatistics::Page);
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        assert!(props(&[("compression", "zip")]).unwrap_err().contains("expected a Parquet codec"));
        assert!(props(&[("dictionary", "nope: true")]).unwrap_err().contains("no leaf column `nope`"));
        assert!(props(&[("statistics", "s: none")]).unwrap_err().contains("no leaf column `s`"));
        assert!(props(&[("dictionary", "true; false")]).unwrap_err().contains("one default"));
        assert!(props(&[("max_rows_per_row_group", "0")]).unwrap_err().contains("a positive integer"));
        assert!(props(&[("metadata_sidecars", "yes")]).unwrap_err().contains("'true' or 'false'"));
        assert!(props(&[("max_bytes_per_file", "1TB")]).unwrap_err().contains("a size such as"));
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
    }
}
