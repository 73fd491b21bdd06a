//! Canonical schema encoding and fingerprint.
//!
//! Encoding, version [`SCHEMA_FP_VERSION`] (any change must bump it; a golden test pins the
//! bytes). Every string is written as `<byte length>:<bytes>` so no name can forge a
//! separator. A schema is
//!
//! ```text
//! kiln.schema.v1\n
//! meta{<k><v>...}\n                      schema metadata, keys sorted
//! field <name> <type> <null|notnull> meta{<k><v>...}\n   one line per field, in order
//! ```
//!
//! Types are encoded *logically*: `Utf8`, `LargeUtf8` and `Utf8View` are all `utf8`;
//! `Binary`, `LargeBinary`, `BinaryView` are `binary`; `List`, `LargeList` are `list`.
//! Precision, scale, time unit, time zone and nested children (with their names,
//! nullability and metadata) are all included. The Arrow extension name is part of field
//! metadata (`ARROW:extension:name`) and therefore included.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit, UnionMode};
use sha2::{Digest, Sha256};

/// Version of the canonical schema encoding.
pub const SCHEMA_FP_VERSION: u32 = 1;

/// The canonical bytes of a schema (see the module docs).
pub fn canonical_schema_bytes(schema: &Schema) -> Vec<u8> {
    let mut out = String::new();
    let _ = writeln!(out, "kiln.schema.v{SCHEMA_FP_VERSION}");
    out.push_str("meta");
    metadata(&mut out, schema.metadata());
    out.push('\n');
    for f in schema.fields() {
        out.push_str("field ");
        field(&mut out, f);
        out.push('\n');
    }
    out.into_bytes()
}

/// sha256 of [`canonical_schema_bytes`], lowercase hex.
pub fn schema_fingerprint(schema: &Schema) -> String {
    hex(&Sha256::digest(canonical_schema_bytes(schema)))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn string(out: &mut String, s: &str) {
    let _ = write!(out, "{}:{s}", s.len());
}

fn metadata(out: &mut String, m: &HashMap<String, String>) {
    let sorted: BTreeMap<_, _> = m.iter().collect();
    out.push('{');
    for (k, v) in sorted {
        string(out, k);
        string(out, v);
    }
    out.push('}');
}

fn field(out: &mut String, f: &Field) {
    string(out, f.name());
    out.push(' ');
    data_type(out, f.data_type());
    out.push_str(if f.is_nullable() { " null " } else { " notnull " });
    out.push_str("meta");
    metadata(out, f.metadata());
}

fn unit(u: &TimeUnit) -> &'static str {
    match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

fn data_type(out: &mut String, t: &DataType) {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => out.push_str("utf8"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => out.push_str("binary"),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => {
            let _ = write!(out, "decimal({p},{s})");
        }
        DataType::Timestamp(u, tz) => {
            let _ = write!(out, "timestamp({},", unit(u));
            string(out, tz.as_deref().unwrap_or(""));
            out.push(')');
        }
        DataType::Time32(u) | DataType::Time64(u) => {
            let _ = write!(out, "time({})", unit(u));
        }
        DataType::Duration(u) => {
            let _ = write!(out, "duration({})", unit(u));
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            out.push_str("list(");
            field(out, f);
            out.push(')');
        }
        DataType::FixedSizeList(f, n) => {
            let _ = write!(out, "fixed_list({n},");
            field(out, f);
            out.push(')');
        }
        DataType::Struct(fields) => {
            out.push_str("struct(");
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                field(out, f);
            }
            out.push(')');
        }
        DataType::Map(entries, sorted) => {
            let _ = write!(out, "map({sorted},");
            field(out, entries);
            out.push(')');
        }
        DataType::Dictionary(_, value) => {
            // A dictionary is an encoding of its value type.
            data_type(out, value);
        }
        DataType::FixedSizeBinary(n) => {
            let _ = write!(out, "FixedSizeBinary({n})");
        }
        DataType::Interval(unit) => out.push_str(match unit {
            IntervalUnit::YearMonth => "Interval(YearMonth)",
            IntervalUnit::DayTime => "Interval(DayTime)",
            IntervalUnit::MonthDayNano => "Interval(MonthDayNano)",
        }),
        DataType::Union(fields, mode) => {
            out.push_str(match mode {
                UnionMode::Sparse => "union(sparse",
                UnionMode::Dense => "union(dense",
            });
            for (id, f) in fields.iter() {
                let _ = write!(out, ",{id}=");
                field(out, f);
            }
            out.push(')');
        }
        DataType::RunEndEncoded(run_ends, values) => {
            out.push_str("run_end_encoded(");
            field(out, run_ends);
            out.push(',');
            field(out, values);
            out.push(')');
        }
        // The rest are named by their Arrow names, written out here so an Arrow upgrade
        // that changes how types print cannot change a fingerprint.
        DataType::Null => out.push_str("Null"),
        DataType::Boolean => out.push_str("Boolean"),
        DataType::Int8 => out.push_str("Int8"),
        DataType::Int16 => out.push_str("Int16"),
        DataType::Int32 => out.push_str("Int32"),
        DataType::Int64 => out.push_str("Int64"),
        DataType::UInt8 => out.push_str("UInt8"),
        DataType::UInt16 => out.push_str("UInt16"),
        DataType::UInt32 => out.push_str("UInt32"),
        DataType::UInt64 => out.push_str("UInt64"),
        DataType::Float16 => out.push_str("Float16"),
        DataType::Float32 => out.push_str("Float32"),
        DataType::Float64 => out.push_str("Float64"),
        DataType::Date32 => out.push_str("Date32"),
        DataType::Date64 => out.push_str("Date64"),
    }
}

/// The canonical encoding of one type (as in [`canonical_schema_bytes`]): logical, with
/// precision, scale, units, time zones and nested fields.
pub fn canonical_type(t: &DataType) -> String {
    let mut out = String::new();
    data_type(&mut out, t);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
        ])
    }

    #[test]
    fn canonical_bytes_are_pinned() {
        // Changing these bytes is a format change: bump SCHEMA_FP_VERSION.
        let expected = "kiln.schema.v1\nmeta{}\n\
            field 2:id Int64 notnull meta{}\n\
            field 5:price decimal(15,2) null meta{}\n\
            field 4:name utf8 null meta{}\n\
            field 2:at timestamp(us,3:UTC) null meta{}\n\
            field 4:tags list(4:item utf8 null meta{}) null meta{}\n";
        assert_eq!(String::from_utf8(canonical_schema_bytes(&schema())).unwrap(), expected);
    }

    #[test]
    fn string_encodings_share_a_fingerprint_and_everything_else_changes_it() {
        let base = schema_fingerprint(&schema());
        let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[2] = Field::new("name", DataType::Utf8, true);
        assert_eq!(schema_fingerprint(&Schema::new(fields.clone())), base);
        let variants = [
            Field::new("name", DataType::Utf8, false),
            Field::new("nam", DataType::Utf8, true),
            Field::new("name", DataType::Binary, true),
            Field::new("name", DataType::Utf8, true)
                .with_metadata([("ARROW:extension:name".to_owned(), "kiln.stable_id".to_owned())].into()),
        ];
        for v in variants {
            let mut changed = fields.clone();
            changed[2] = v.clone();
            assert_ne!(schema_fingerprint(&Schema::new(changed)), base, "{v:?}");
        }
    }
}
