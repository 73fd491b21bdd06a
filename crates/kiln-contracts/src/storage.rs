//! How a dataset's columns are stored in its Delta Lake table, so that every Delta reader
//! gets exactly the values Kiln computed.
//!
//! A product's *logical* schema (what its query produces, what Kiln's own readers see) can
//! hold Arrow types the Delta protocol has no place for. Each column is stored as the
//! nearest Delta type that holds every value exactly, and read back by Kiln as its logical
//! type (a lossless cast):
//!
//! | logical | stored (Delta type) |
//! |---|---|
//! | `UInt8` / `UInt16` / `UInt32` | `Int16` / `Int32` / `Int64` (`short` / `integer` / `long`) |
//! | `UInt64` | `Int64`; a value above 2^63-1 fails the write |
//! | `Float16` | `Float32` |
//! | `Timestamp(s/ms/us/ns, tz)` | `Timestamp(us, "UTC")` with a zone (`timestamp`), `Timestamp(us)` without (`timestamp_ntz`); a nanosecond value that is not a whole microsecond fails the write |
//! | `Decimal32/64(p, s)`, `Decimal256(p <= 38, s)` | `Decimal128(p, s)` |
//! | `Date64` | `Date32` |
//! | `FixedSizeBinary` | `Binary` |
//! | `Dictionary(k, v)` | `v`, stored |
//! | lists, structs, maps | the same shape, their children stored |
//!
//! Refused, at compile time with a cast that fixes it: `TIME`, `INTERVAL`, durations,
//! `DECIMAL` wider than 38 digits, unions, NULL-typed columns; and column names the protocol
//! reserves (`space , ; { } ( ) \n \t =`) — a Delta table without column mapping cannot
//! hold them.
//!
//! A time zone is not part of a Delta timestamp: a zoned column is stored as UTC instants
//! (the same instants; its zone is the product's logical type, which Kiln keeps).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};

/// Why a column cannot be stored in a Delta table, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` ({data_type}) cannot be stored in a Delta table: {reason}")]
pub struct StorageError {
    /// The column's path (`a`, `s.inner`, `l[]`).
    pub column: String,
    pub data_type: String,
    pub reason: String,
}

/// Characters a column name may not contain in a Delta table without column mapping.
pub const RESERVED_NAME_CHARS: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// The schema `schema`'s columns are stored as (see the module docs); metadata is kept.
pub fn storage_schema(schema: &Schema) -> Result<Schema, StorageError> {
    let fields = storage_fields(schema.fields(), "")?;
    Ok(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether `schema` is stored as itself (no column needs a cast on write or read).
pub fn stored_as_is(schema: &Schema) -> bool {
    storage_schema(schema).is_ok_and(|s| s.fields() == schema.fields())
}

fn storage_fields(fields: &Fields, parent: &str) -> Result<Fields, StorageError> {
    fields.iter().map(|f| storage_field(f, parent).map(Arc::new)).collect::<Result<Vec<_>, _>>().map(Fields::from)
}

fn storage_field(field: &Field, parent: &str) -> Result<Field, StorageError> {
    let path = if parent.is_empty() { field.name().clone() } else { format!("{parent}.{}", field.name()) };
    if let Some(c) = field.name().chars().find(|c| RESERVED_NAME_CHARS.contains(c)) {
        return Err(StorageError {
            column: path,
            data_type: field.data_type().to_string(),
            reason: format!("its name contains {c:?}, which Delta reserves; give it a name without it (`AS ...`)"),
        });
    }
    let stored = storage_type(field.data_type(), &path)?;
    Ok(field.clone().with_data_type(stored))
}

/// The type a column of type `t` (at `path`) is stored as.
pub fn storage_type(t: &DataType, path: &str) -> Result<DataType, StorageError> {
    use DataType as D;
    let refuse = |reason: &str| {
        Err(StorageError { column: path.to_owned(), data_type: t.to_string(), reason: reason.to_owned() })
    };
    Ok(match t {
        D::Boolean
        | D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::Float32
        | D::Float64
        | D::Utf8
        | D::LargeUtf8
        | D::Utf8View
        | D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::Date32
        | D::Decimal128(..) => t.clone(),
        D::UInt8 => D::Int16,
        D::UInt16 => D::Int32,
        D::UInt32 | D::UInt64 => D::Int64,
        D::Float16 => D::Float32,
        D::Date64 => D::Date32,
        D::FixedSizeBinary(_) => D::Binary,
        D::Timestamp(_, tz) => D::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into())),
        D::Decimal32(p, s) | D::Decimal64(p, s) => D::Decimal128(*p, *s),
        D::Decimal256(p, s) if *p <= 38 => D::Decimal128(*p, *s),
        D::Decimal256(..) => return refuse("Delta decimals hold at most 38 digits; CAST it to DECIMAL(38, s)"),
        D::Dictionary(_, value) => storage_type(value, path)?,
        D::List(f) => D::List(Arc::new(storage_field(f, &format!("{path}[]"))?)),
        D::LargeList(f) => D::LargeList(Arc::new(storage_field(f, &format!("{path}[]"))?)),
        D::ListView(f) => D::List(Arc::new(storage_field(f, &format!("{path}[]"))?)),
        D::LargeListView(f) => D::LargeList(Arc::new(storage_field(f, &format!("{path}[]"))?)),
        D::FixedSizeList(f, _) => D::List(Arc::new(storage_field(f, &format!("{path}[]"))?)),
        D::Struct(fields) => D::Struct(storage_fields(fields, path)?),
        D::Map(entries, sorted) => D::Map(Arc::new(storage_field(entries, path)?), *sorted),
        D::Time32(_) | D::Time64(_) => {
            return refuse("Delta has no TIME type; CAST it to VARCHAR, or keep it as a TIMESTAMP");
        }
        D::Duration(_) | D::Interval(_) => {
            return refuse("Delta has no interval type; store it as a number (e.g. seconds as BIGINT)");
        }
        D::Null => return refuse("the column is always NULL and has no type; CAST(NULL AS <type>) gives it one"),
        D::Union(..) | D::RunEndEncoded(..) => return refuse("Delta has no union type"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_what_delta_holds() {
        let cases = [
            (DataType::UInt8, DataType::Int16),
            (DataType::UInt64, DataType::Int64),
            (DataType::Timestamp(TimeUnit::Nanosecond, None), DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                DataType::Timestamp(TimeUnit::Millisecond, Some("+01:00".into())),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            (DataType::Decimal256(20, 2), DataType::Decimal128(20, 2)),
            (DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), DataType::Utf8),
        ];
        for (logical, stored) in cases {
            assert_eq!(storage_type(&logical, "c").unwrap(), stored, "{logical}");
        }
        let nested = DataType::List(Arc::new(Field::new("item", DataType::UInt32, true)));
        assert_eq!(
            storage_type(&nested, "l").unwrap(),
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true)))
        );
    }

    #[test]
    fn what_delta_cannot_hold_is_refused_with_the_column() {
        let schema = Schema::new(vec![Field::new(
            "s",
            DataType::Struct(vec![Field::new("t", DataType::Time64(TimeUnit::Microsecond), true)].into()),
            true,
        )]);
        let e = storage_schema(&schema).unwrap_err();
        assert_eq!(e.column, "s.t");
        assert!(e.reason.contains("VARCHAR"), "{e}");
        let e = storage_schema(&Schema::new(vec![Field::new("count(*)", DataType::Int64, false)])).unwrap_err();
        assert!(e.to_string().contains("`count(*)`"), "{e}");
        assert!(storage_schema(&Schema::new(vec![Field::new("n", DataType::Null, true)])).is_err());
    }

    #[test]
    fn plain_schemas_are_stored_as_themselves() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("d", DataType::Date32, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]);
        assert!(stored_as_is(&schema));
        let schema = Schema::new(vec![Field::new("u", DataType::UInt64, false)]);
        assert!(!stored_as_is(&schema));
    }
}
