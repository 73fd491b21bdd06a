//! A product's file layout, compiled once from its definition into kiln-data's typed
//! [`WriteLayout`]: the one place option text about files is read, each error with the
//! option's location.
//!
//! - `ORDER BY (...)` is tier 3 (a canonical sort, verified on write);
//!   `ordering_tier = '1' | '2'` chooses between the other two for products without it.
//! - `PARTITIONED BY (...)`: Hive directories.
//! - `max_rows_per_file` (default 1,000,000) and `max_bytes_per_file = '256MiB'`: a file
//!   ends at whichever comes first.
//! - `existing_data = 'replace' | 'error' | 'append' | 'delete_matching'`.
//! - `basename_template`: `{partition}` then `{seq}` (required), `{build_id}`,
//!   `{run_id}`, `{batch}`; no `/`, no leading `.` or `_`.
//! - Parquet: `compression`, `dictionary`, `statistics` take a default for every column
//!   and/or per-column values, `'<default>; <col>: <value>, <col>: <value>'` (either part
//!   may be left out): `compression = 'zstd(3); l_comment: snappy'`, `dictionary =
//!   'false; l_shipmode: true'`, `statistics = 'l_comment: none'`. A column is a
//!   top-level output column or a dotted path to a leaf inside a struct.
//!   `statistics = 'page'` (DataFusion's default) also writes the page index; `'chunk'`
//!   keeps statistics per column chunk only; `'none'` neither. `max_rows_per_row_group`
//!   cuts row groups (there is no minimum: holding rows back to reach one would move file
//!   boundaries, which `max_rows_per_file` owns). `bloom_filter_columns = 'a, b'`.
//!   `metadata_sidecars = 'true'` writes `_metadata` / `_common_metadata`.
//!
//! The options that shape the bytes of the files ([`WRITE_OPTIONS`]) are recorded in the
//! manifest and enter `schema_fp` with the partitioning (kiln_artifact::identity::layout_fp).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::EnabledStatistics;
use datafusion::parquet::schema::types::ColumnPath;
use kiln_data::{
    Basename, ColumnSetting, ExistingData, FileSizing, NamePart, Ordering, ParquetOptions, SortKey, WriteLayout,
};

use crate::dialect::ProductDef;
use crate::error::{ControlError, Location};

/// The options that decide how a product's files are encoded: recorded in its manifest,
/// part of its `schema_fp`.
pub const WRITE_OPTIONS: [&str; 7] = [
    "compression",
    "max_rows_per_row_group",
    "bloom_filter_columns",
    "dictionary",
    "statistics",
    "metadata_sidecars",
    "max_bytes_per_file",
];

/// Default `max_rows_per_file`.
pub const DEFAULT_MAX_ROWS_PER_FILE: usize = 1_000_000;

/// The layout of product `def` whose files have `schema` (see the module docs).
pub fn product_layout(def: &ProductDef, schema: &Schema) -> Result<WriteLayout, ControlError> {
    with_parquet(base_layout(def)?, def, schema)
}

/// The part of a product's layout that does not depend on its output schema (checked
/// before its query is planned, so these errors come first): everything but the Parquet
/// options.
pub fn base_layout(def: &ProductDef) -> Result<WriteLayout, ControlError> {
    let option = |key: &str| def.options.get(key);
    let bad = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
    let fail = |message: String| ControlError::Compile { at: def.at.clone(), product: def.name.clone(), message };

    let max_rows = match option("max_rows_per_file") {
        None => DEFAULT_MAX_ROWS_PER_FILE,
        Some((v, at)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(at, format!("max_rows_per_file must be a positive integer, got `{v}`")))?,
    };
    let existing = match option("existing_data") {
        None => ExistingData::Replace,
        Some((v, at)) => parse_existing(v).ok_or_else(|| {
            bad(at, format!("existing_data = '{v}' is not one of 'replace', 'error', 'append', 'delete_matching'"))
        })?,
    };
    if existing == ExistingData::DeleteMatching && def.partition_by.is_empty() {
        return Err(fail(
            "existing_data = 'delete_matching' overwrites the partitions a build writes: it needs PARTITIONED BY"
                .into(),
        ));
    }
    let ordering = match (option("ordering_tier"), def.order_by.is_empty()) {
        (None, true) => Ordering::Unordered,
        (None, false) => Ordering::Sorted(
            def.order_by.iter().map(|(c, asc)| SortKey { column: c.clone(), ascending: *asc }).collect(),
        ),
        (Some(("1" | "2", at)), false) => {
            return Err(bad(at, "ORDER BY makes a product tier 3; ordering_tier is for products without it".into()));
        }
        (Some(("1", _)), true) => Ordering::Unordered,
        (Some(("2", _)), true) => Ordering::Producer,
        (Some((v, at)), _) => {
            return Err(bad(at, format!("ordering_tier = '{v}': expected '1' or '2' (tier 3 is ORDER BY)")));
        }
    };
    let basename = match option("basename_template") {
        None => Basename::default(),
        Some((v, at)) => parse_basename(v).map_err(|why| bad(at, format!("basename_template = '{v}': {why}")))?,
    };
    let compact_after = match option("compact_after") {
        None => None,
        Some((v, at)) => Some(
            v.parse::<usize>()
                .ok()
                .filter(|n| *n >= 2)
                .ok_or_else(|| bad(at, format!("compact_after must be a number of files of at least 2, got `{v}`")))?,
        ),
    };
    let mut recorded = BTreeMap::new();
    for key in WRITE_OPTIONS {
        if let Some((value, _)) = option(key) {
            recorded.insert(key.to_owned(), value.to_owned());
        }
    }
    Ok(WriteLayout {
        ordering,
        partition_by: def.partition_by.clone(),
        files: FileSizing { max_rows, max_bytes: None },
        parquet: ParquetOptions::default(),
        existing,
        basename,
        recorded,
        compact_after,
    })
}

/// `base` (from [`base_layout`]) with the Parquet options and `max_bytes_per_file` of
/// `def`, checked against the output `schema` (per-column options name its columns).
pub fn with_parquet(mut base: WriteLayout, def: &ProductDef, schema: &Schema) -> Result<WriteLayout, ControlError> {
    let (parquet, max_bytes) = parquet_options(&base.recorded, schema).map_err(|(key, message)| {
        let at = def.options.get(&key).map_or(&def.at, |(_, at)| at).clone();
        ControlError::Option { at, message }
    })?;
    base.parquet = parquet;
    base.files.max_bytes = max_bytes;
    Ok(base)
}

/// An `existing_data` value.
pub fn parse_existing(text: &str) -> Option<ExistingData> {
    Some(match text {
        "replace" => ExistingData::Replace,
        "error" => ExistingData::Error,
        "append" => ExistingData::Append,
        "delete_matching" => ExistingData::DeleteMatching,
        _ => return None,
    })
}

/// Why a `basename_template` cannot name data files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BasenameError {
    #[error("a file name cannot contain `/` or start with `.` or `_` (hidden from readers)")]
    Hidden,
    #[error("an unclosed `{{`")]
    Unclosed,
    #[error("unknown placeholder `{0}` (known: {{partition}}, {{seq}}, {{build_id}}, {{run_id}}, {{batch}})")]
    Unknown(String),
    #[error("it must contain {{partition}} and then {{seq}}, which make file names unique and ordered")]
    Order,
}

/// A `basename_template`, or why it cannot name data files.
pub fn parse_basename(template: &str) -> Result<Basename, BasenameError> {
    if template.contains(['/', '\\']) || template.starts_with(['.', '_']) {
        return Err(BasenameError::Hidden);
    }
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { return Err(BasenameError::Unclosed) };
        if open > 0 {
            parts.push(NamePart::Text(rest[..open].to_owned()));
        }
        let field = &rest[open..open + close + 1];
        parts.push(match field {
            "{partition}" => NamePart::Partition,
            "{seq}" => NamePart::Seq,
            "{build_id}" => NamePart::BuildId,
            "{run_id}" => NamePart::RunId,
            "{batch}" => NamePart::Batch,
            _ => return Err(BasenameError::Unknown(field.to_owned())),
        });
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        parts.push(NamePart::Text(rest.to_owned()));
    }
    let at = |p: &NamePart| parts.iter().position(|q| q == p);
    match (at(&NamePart::Partition), at(&NamePart::Seq)) {
        // Manifests list files by path, which must follow (partition, seq): tier 3's order
        // runs across files in that order.
        (Some(p), Some(q)) if p < q => Ok(Basename(parts)),
        _ => Err(BasenameError::Order),
    }
}

/// The Parquet options and `max_bytes_per_file` of `options` (keys from
/// A Parquet codec, `name` or `name(level)`: checked here first, as parquet's own parser
/// panics on text it does not expect (a non-ASCII character before the closing `)`).
pub(crate) fn parse_codec(text: &str) -> Option<Compression> {
    let well_formed = match text.split_once('(') {
        None => text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        Some((name, rest)) => {
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && rest
                    .strip_suffix(')')
                    .is_some_and(|level| !level.is_empty() && level.chars().all(|c| c.is_ascii_digit()))
        }
    };
    if !well_formed {
        return None;
    }
    text.parse::<Compression>().ok()
}

/// [`WRITE_OPTIONS`]) for a product with output `schema`. An error is `(option, message)`.
fn parquet_options(
    options: &BTreeMap<String, String>,
    schema: &Schema,
) -> Result<(ParquetOptions, Option<u64>), (String, String)> {
    let mut out = ParquetOptions::default();
    let mut max_bytes = None;
    for (key, value) in options {
        let bad = |expected: &str| (key.clone(), format!("{key} = '{value}': expected {expected}"));
        match key.as_str() {
            "compression" => {
                let expected = "a Parquet codec such as 'zstd(3)', 'snappy', 'lz4_raw', 'gzip(6)' or 'uncompressed' (per column: 'zstd(3); col: snappy')";
                out.compression = per_column(value, schema, &bad, |v| parse_codec(v).ok_or_else(|| bad(expected)))?;
            }
            "dictionary" => {
                out.dictionary = per_column(value, schema, &bad, |v| match v {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(bad("'true' or 'false' (per column: 'false; col: true')")),
                })?;
            }
            "statistics" => {
                out.statistics = per_column(value, schema, &bad, |v| match v {
                    "none" => Ok(EnabledStatistics::None),
                    "chunk" => Ok(EnabledStatistics::Chunk),
                    "page" => Ok(EnabledStatistics::Page),
                    _ => Err(bad("'none', 'chunk' or 'page' (per column: 'chunk; col: none')")),
                })?;
            }
            "max_rows_per_row_group" => match value.parse::<usize>() {
                Ok(n) if n > 0 => out.max_rows_per_row_group = Some(n),
                _ => return Err(bad("a positive integer")),
            },
            "bloom_filter_columns" => {
                for column in value.split(',').map(str::trim) {
                    let path = leaf(column, schema).ok_or_else(|| bad("a comma-separated list of output columns"))?;
                    out.bloom_filter_columns.push(path);
                }
            }
            "max_bytes_per_file" => match crate::units::parse_bytes(value) {
                Some(n) => max_bytes = Some(n),
                None => return Err(bad("a size such as '268435456', '256MiB' or '1GiB'")),
            },
            "metadata_sidecars" => match value.as_str() {
                "true" => out.sidecars = true,
                "false" => out.sidecars = false,
                _ => return Err(bad("'true' or 'false'")),
            },
            _ => return Err((key.clone(), format!("unknown write option `{key}`"))),
        }
    }
    Ok((out, max_bytes))
}

/// A `'<default>; col: value, ...'` setting, each value read by `value`.
fn per_column<T>(
    text: &str,
    schema: &Schema,
    bad: &dyn Fn(&str) -> (String, String),
    value: impl Fn(&str) -> Result<T, (String, String)>,
) -> Result<ColumnSetting<T>, (String, String)> {
    let mut setting = ColumnSetting::default();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        // Codecs like `zstd(3)` have no colon; a per-column part always has one.
        if !part.contains(':') {
            if setting.default.is_some() {
                return Err(bad("one default, then `col: value` pairs"));
            }
            setting.default = Some(value(part)?);
            continue;
        }
        for pair in part.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (column, v) = pair.split_once(':').ok_or_else(|| bad("`col: value` pairs"))?;
            let path = leaf(column.trim(), schema)
                .ok_or_else(|| bad(&format!("output columns; there is no leaf column `{}`", column.trim())))?;
            setting.columns.push((path, value(v.trim())?));
        }
    }
    Ok(setting)
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
        parquet_options(&options, &schema())
            .map(|(p, _)| p.apply(WriterProperties::builder()).build())
            .map_err(|(_, m)| m)
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
        // Text parquet's parser panics on is refused before it gets there.
        for bad in ["zstd(3)ß", "zstd(ß)", "zstd(", "zstd()", "gzip(6", "ß", "zstd(3))"] {
            assert!(props(&[("compression", bad)]).unwrap_err().contains("expected a Parquet codec"), "{bad}");
        }
        assert!(props(&[("dictionary", "nope: true")]).unwrap_err().contains("no leaf column `nope`"));
        assert!(props(&[("statistics", "s: none")]).unwrap_err().contains("no leaf column `s`"));
        assert!(props(&[("dictionary", "true; false")]).unwrap_err().contains("one default"));
        assert!(props(&[("max_rows_per_row_group", "0")]).unwrap_err().contains("a positive integer"));
        assert!(props(&[("metadata_sidecars", "yes")]).unwrap_err().contains("'true' or 'false'"));
        assert!(props(&[("max_bytes_per_file", "1TB")]).unwrap_err().contains("a size such as"));
        let options = [("max_bytes_per_file".to_owned(), "256MiB".to_owned())].into();
        assert_eq!(parquet_options(&options, &schema()).unwrap().1, Some(256 << 20));
    }

    #[test]
    fn basename_templates_are_checked() {
        assert_eq!(parse_basename("part-{partition}-{seq}"), Ok(Basename::default()));
        let b = parse_basename("{build_id}-{run_id}-{partition}-{seq}").unwrap();
        assert_eq!(b.render(3, 12, "b", "r", None), "b-r-00003-00012");
        assert_eq!(b.render(0, 1, "b", "r", Some(7)), "b000007-b-r-00000-00001");
        for bad in [
            "part-{seq}-{partition}",
            "part-{seq}",
            "p-{partition}-{seq}-{day}",
            "a/{partition}{seq}",
            "_{partition}{seq}",
            "{partition{seq}",
        ] {
            assert!(parse_basename(bad).is_err(), "{bad}");
        }
    }
}
