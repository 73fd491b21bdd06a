//! What Kiln may write to a Delta table, and the protocol its columns need: Kiln writes
//! plain Parquet files and `add` / `remove` actions, so it checks a table's writer
//! features itself ([`writable`], stricter than delta-rs's commit check) and upgrades the
//! protocol only for what its columns need ([`protocol_for`]).

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use deltalake_core::kernel::{Metadata, Protocol};

use crate::{DataError, Result};

/// The writer features of `protocol`: those its writer version implies (1 to 6) or
/// lists (7).
fn writer_features(protocol: &Protocol) -> Result<(i64, Vec<String>)> {
    let value = serde_json::to_value(protocol).map_err(|e| DataError::Internal(format!("Delta protocol: {e}")))?;
    let writer = value["minWriterVersion"].as_i64().unwrap_or(0);
    let implied: &[&str] = match writer {
        2 => &["appendOnly", "invariants"],
        3 => &["appendOnly", "invariants", "checkConstraints"],
        4 => &["appendOnly", "invariants", "checkConstraints", "changeDataFeed", "generatedColumns"],
        5 => &["appendOnly", "invariants", "checkConstraints", "changeDataFeed", "generatedColumns", "columnMapping"],
        6 => &[
            "appendOnly",
            "invariants",
            "checkConstraints",
            "changeDataFeed",
            "generatedColumns",
            "columnMapping",
            "identityColumns",
        ],
        _ => &[],
    };
    let mut features: Vec<String> = implied.iter().map(|f| (*f).to_owned()).collect();
    if let Some(listed) = value.get("writerFeatures").and_then(|v| v.as_array()) {
        features.extend(listed.iter().filter_map(|f| f.as_str()).map(str::to_owned));
    }
    Ok((writer, features))
}

/// Refuses a commit to a table that asks writers for what Kiln does not do. Kiln writes
/// plain Parquet files and `add` / `remove` actions, so of the writer features a table's
/// protocol names (or its writer version implies) it can honour appendOnly (checked at
/// commit) and timestampNtz, and the others only while the table does not use them:
/// invariants and CHECK constraints while none is defined (Kiln does not evaluate them),
/// change data feed while off, generated and identity columns while there are none,
/// column mapping while its mode is `none`. Any other feature (deletion vectors, row
/// tracking, in-commit timestamps, ...) refuses the commit. delta-rs's own commit check
/// is looser: for raw actions it accepts tables whose files Kiln's writer would get wrong.
pub(super) fn writable(name: &str, protocol: &Protocol, metadata: &Metadata) -> Result<()> {
    let (writer, features) = writer_features(protocol)?;
    let config = |key: &str| metadata.configuration().get(key).map(String::as_str);
    let mut refused: Vec<String> = Vec::new();
    if !(1..=7).contains(&writer) {
        refused.push(format!("writer version {writer}"));
    }
    for feature in &features {
        let used = match feature.as_str() {
            "appendOnly" | "timestampNtz" => false,
            "invariants" => has_field_metadata(metadata, |k| k == "delta.invariants"),
            "checkConstraints" => metadata.configuration().keys().any(|k| k.starts_with("delta.constraints.")),
            "changeDataFeed" => config("delta.enableChangeDataFeed").is_some_and(|v| v.eq_ignore_ascii_case("true")),
            "generatedColumns" => has_field_metadata(metadata, |k| k == "delta.generationExpression"),
            "identityColumns" => has_field_metadata(metadata, |k| k.starts_with("delta.identity.")),
            "columnMapping" => config("delta.columnMapping.mode").is_some_and(|m| !m.eq_ignore_ascii_case("none")),
            _ => true,
        };
        if used {
            refused.push(format!("`{feature}`"));
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(DataError::TableRefused {
        product: name.to_owned(),
        reason: format!(
            "it uses {} (protocol writer version {writer}), which Kiln does not write: it writes plain Parquet files and add and remove actions",
            refused.join(", ")
        ),
    })
}

/// Whether a table of `meta` refuses commits that remove rows (`delta.appendOnly`, in
/// force from writer version 2, and at 7 with the appendOnly feature).
pub(super) fn append_only(protocol: &Protocol, metadata: &Metadata) -> bool {
    let enabled = metadata.configuration().get("delta.appendOnly").is_some_and(|v| v == "true");
    enabled
        && writer_features(protocol)
            .is_ok_and(|(writer, features)| writer >= 2 && features.iter().any(|f| f == "appendOnly"))
}

/// Whether a field of the table's schema, at any depth, has a metadata key that `key`
/// accepts.
fn has_field_metadata(metadata: &Metadata, key: impl Fn(&str) -> bool + Copy) -> bool {
    fn walk(value: &serde_json::Value, key: impl Fn(&str) -> bool + Copy) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                map.get("metadata").and_then(|m| m.as_object()).is_some_and(|m| m.keys().any(|k| key(k)))
                    || map.values().any(|v| walk(v, key))
            }
            serde_json::Value::Array(items) => items.iter().any(|v| walk(v, key)),
            _ => false,
        }
    }
    // An unparsable schema is the reader's error, raised where the schema is used.
    serde_json::from_str::<serde_json::Value>(metadata.schema_string()).is_ok_and(|v| walk(&v, key))
}

/// The protocol a table of stored schema `stored` needs: `None` when `current` already
/// allows it. Timestamps without a time zone (`timestamp_ntz`) need reader 3 / writer 7
/// with the `timestampNtz` feature; everything else Kiln writes needs no feature.
pub(super) fn protocol_for(stored: &Schema, current: Option<&Protocol>) -> Result<Option<Protocol>> {
    let ntz = stored.fields().iter().any(|f| has_ntz(f));
    let json = |e: serde_json::Error| DataError::Internal(format!("Delta protocol: {e}"));
    let mut value = match current {
        None if !ntz => serde_json::json!({ "minReaderVersion": 1, "minWriterVersion": 2 }),
        None => serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"], "writerFeatures": ["timestampNtz"],
        }),
        Some(p) => {
            let value = serde_json::to_value(p).map_err(json)?;
            let has = |key: &str| {
                value.get(key).and_then(|v| v.as_array()).is_some_and(|a| a.iter().any(|f| f == "timestampNtz"))
            };
            if !ntz || has("readerFeatures") {
                return Ok(None);
            }
            value
        }
    };
    if current.is_some() {
        // An upgrade to table features keeps what the legacy writer version implied.
        let writer = value["minWriterVersion"].as_i64().unwrap_or(2);
        let mut writer_features: Vec<serde_json::Value> =
            value.get("writerFeatures").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        if writer < 7 {
            writer_features.extend(["appendOnly".into(), "invariants".into()]);
        }
        writer_features.push("timestampNtz".into());
        let mut reader_features: Vec<serde_json::Value> =
            value.get("readerFeatures").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        reader_features.push("timestampNtz".into());
        value = serde_json::json!({
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": reader_features, "writerFeatures": writer_features,
        });
    }
    serde_json::from_value(value).map(Some).map_err(json)
}

fn has_ntz(field: &Field) -> bool {
    match field.data_type() {
        DataType::Timestamp(_, None) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => has_ntz(f),
        DataType::Struct(fields) => fields.iter().any(|f| has_ntz(f)),
        _ => false,
    }
}
