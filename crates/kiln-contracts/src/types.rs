//! SQL type <-> Arrow type mapping.
//!
//! Policy (mirrors DataFusion 55's SQL planner so declared and planned types agree):
//! - `VARCHAR`, `CHAR`, `TEXT`, `STRING` map to `Utf8View` (DataFusion's
//!   `map_string_types_to_utf8view = true`). `Utf8`, `LargeUtf8` and `Utf8View` are three
//!   encodings of one logical type; [`crate::compat`] and [`crate::fingerprint`] treat them
//!   as equal, so switching encodings never breaks a contract or changes a build id.
//! - `BYTEA`, `BLOB`, `BINARY`, `VARBINARY`, `BYTES` map to `Binary` (same family rule).
//! - `FLOAT`/`REAL`/`FLOAT4` are `Float32`; `DOUBLE`/`FLOAT8`/`DOUBLE PRECISION` are `Float64`.
//! - `DECIMAL(p,s)`: `Decimal128` up to precision 38, `Decimal256` up to 76; bare `DECIMAL`
//!   is `Decimal128(38, 10)` like DataFusion.
//! - `TIME` is `Time64(ns)`; `TIMESTAMP[(0|3|6|9)]` is `Timestamp(s|ms|us|ns)`, default ns;
//!   `WITH TIME ZONE` pins the zone to `UTC` (a contract must not depend on a session zone).
//! - `INTERVAL` is `Interval(MonthDayNano)`.
//! - `ARRAY<T>` and `T[]` are `List` with a nullable `item` field; `STRUCT<a T, ...>` is a
//!   `Struct` of nullable fields; `MAP<K, V>` is a `Map` with a non-null key.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, TimeUnit};
use sqlparser::ast::{self as sql, ArrayElemTypeDef, ExactNumberInfo, TimezoneInfo};

/// A SQL type Kiln cannot map to Arrow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported type `{sql_type}`: {reason}")]
pub struct TypeError {
    pub sql_type: String,
    pub reason: String,
}

fn unsupported(ty: &sql::DataType, reason: &str) -> TypeError {
    TypeError { sql_type: ty.to_string(), reason: reason.to_owned() }
}

/// Parses SQL type text (`DECIMAL(15, 2)`, `MAP<VARCHAR, ARRAY<INT>>`) with Kiln's dialect
/// and maps it to Arrow.
pub fn parse_sql_type(text: &str) -> Result<DataType, TypeError> {
    let dialect = crate::dialect::KilnDialect::default();
    let fail = |reason: String| TypeError { sql_type: text.to_owned(), reason };
    let mut parser = sqlparser::parser::Parser::new(&dialect).try_with_sql(text).map_err(|e| fail(e.to_string()))?;
    let ty = parser.parse_data_type().map_err(|e| fail(e.to_string()))?;
    if parser.peek_token().token != sqlparser::tokenizer::Token::EOF {
        return Err(fail("unexpected text after the type".into()));
    }
    sql_to_arrow(&ty)
}

/// Maps a parsed SQL type to its Arrow type (see the module docs for the policy).
pub fn sql_to_arrow(ty: &sql::DataType) -> Result<DataType, TypeError> {
    use sql::DataType as S;
    Ok(match ty {
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) | S::Int32 => DataType::Int32,
        S::BigInt(_) | S::Int8(_) | S::Int64 => DataType::Int64,
        S::TinyIntUnsigned(_) | S::UTinyInt | S::UInt8 => DataType::UInt8,
        S::SmallIntUnsigned(_) | S::Int2Unsigned(_) | S::USmallInt | S::UInt16 => DataType::UInt16,
        S::IntUnsigned(_) | S::IntegerUnsigned(_) | S::Int4Unsigned(_) | S::UInt32 => DataType::UInt32,
        S::BigIntUnsigned(_) | S::Int8Unsigned(_) | S::UBigInt | S::UInt64 => DataType::UInt64,
        S::Real | S::Float4 | S::Float32 | S::Float(_) => DataType::Float32,
        S::Double(ExactNumberInfo::None) | S::DoublePrecision | S::Float8 | S::Float64 => DataType::Float64,
        S::Decimal(info) | S::Numeric(info) | S::Dec(info) => decimal(ty, info)?,
        S::Varchar(_)
        | S::Nvarchar(_)
        | S::CharacterVarying(_)
        | S::CharVarying(_)
        | S::Character(_)
        | S::Char(_)
        | S::Text
        | S::String(_) => DataType::Utf8View,
        S::Bytea | S::Blob(_) | S::Binary(_) | S::Varbinary(_) | S::Bytes(_) => DataType::Binary,
        S::Date => DataType::Date32,
        S::Time(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => DataType::Time64(TimeUnit::Nanosecond),
        S::Timestamp(precision, tz) => {
            let unit = match precision {
                Some(0) => TimeUnit::Second,
                Some(3) => TimeUnit::Millisecond,
                Some(6) => TimeUnit::Microsecond,
                None | Some(9) => TimeUnit::Nanosecond,
                Some(_) => return Err(unsupported(ty, "timestamp precision must be 0, 3, 6 or 9")),
            };
            let zone = match tz {
                TimezoneInfo::None | TimezoneInfo::WithoutTimeZone => None,
                TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => Some(Arc::from("UTC")),
            };
            DataType::Timestamp(unit, zone)
        }
        S::Interval { fields: None, precision: None } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::Array(ArrayElemTypeDef::AngleBracket(inner))
        | S::Array(ArrayElemTypeDef::SquareBracket(inner, None))
        | S::Array(ArrayElemTypeDef::Parenthesis(inner)) => {
            DataType::List(Arc::new(Field::new("item", sql_to_arrow(inner)?, true)))
        }
        S::Array(ArrayElemTypeDef::SquareBracket(inner, Some(n))) => {
            let size = i32::try_from(*n).map_err(|_| unsupported(ty, "array size is too large"))?;
            DataType::FixedSizeList(Arc::new(Field::new("item", sql_to_arrow(inner)?, true)), size)
        }
        S::Struct(fields, _) => {
            let mut out = Vec::with_capacity(fields.len());
            for (i, f) in fields.iter().enumerate() {
                let name = f.field_name.as_ref().map_or_else(|| format!("c{i}"), |n| n.value.clone());
                out.push(Field::new(name, sql_to_arrow(&f.field_type)?, true));
            }
            DataType::Struct(Fields::from(out))
        }
        S::Map(key, value) => map_type(sql_to_arrow(key)?, sql_to_arrow(value)?),
        _ => return Err(unsupported(ty, "no Arrow mapping; see the type table in docs/contracts.md")),
    })
}

fn decimal(ty: &sql::DataType, info: &ExactNumberInfo) -> Result<DataType, TypeError> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => (38, 10),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    let p = u8::try_from(precision).map_err(|_| unsupported(ty, "precision must be 1..=76"))?;
    let s = i8::try_from(scale).map_err(|_| unsupported(ty, "scale out of range"))?;
    if p == 0 || i16::from(s) > i16::from(p) {
        return Err(unsupported(ty, "need 1 <= precision and scale <= precision"));
    }
    match p {
        1..=38 => Ok(DataType::Decimal128(p, s)),
        39..=76 => Ok(DataType::Decimal256(p, s)),
        _ => Err(unsupported(ty, "precision must be 1..=76")),
    }
}

/// The Arrow `Map` type Kiln uses for `MAP<K, V>`: entries struct, non-null key, unsorted.
pub fn map_type(key: DataType, value: DataType) -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![Field::new("key", key, false), Field::new("value", value, true)])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// Renders an Arrow type as the canonical SQL spelling Kiln parses back to the same type
/// (up to the encoding families of the module docs). `None` for types SQL cannot name.
pub fn arrow_to_sql(ty: &DataType) -> Option<String> {
    Some(match ty {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTEA".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Time64(TimeUnit::Nanosecond) => "TIME".into(),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            match tz {
                None => format!("TIMESTAMP({p})"),
                Some(z) if z.as_ref() == "UTC" => format!("TIMESTAMP({p}) WITH TIME ZONE"),
                Some(_) => return None,
            }
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => "INTERVAL".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("ARRAY<{}>", arrow_to_sql(f.data_type())?),
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", arrow_to_sql(f.data_type())?),
        DataType::Struct(fields) => {
            let parts: Option<Vec<String>> = fields
                .iter()
                .map(|f| Some(format!("{} {}", quote_ident(f.name()), arrow_to_sql(f.data_type())?)))
                .collect();
            format!("STRUCT<{}>", parts?.join(", "))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => {
                format!("MAP<{}, {}>", arrow_to_sql(kv[0].data_type())?, arrow_to_sql(kv[1].data_type())?)
            }
            _ => return None,
        },
        _ => return None,
    })
}

fn quote_ident(name: &str) -> String {
    let plain = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain { name.to_owned() } else { format!("\"{}\"", name.replace('"', "\"\"")) }
}

#[cfg(test)]
mod tests {
    use sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> sql::DataType {
        let dialect = crate::dialect::KilnDialect::default();
        Parser::new(&dialect).try_with_sql(sql).unwrap().parse_data_type().unwrap()
    }

    #[test]
    fn maps_the_types_users_write() {
        let cases = [
            ("BOOLEAN", DataType::Boolean),
            ("SMALLINT", DataType::Int16),
            ("INT", DataType::Int32),
            ("BIGINT", DataType::Int64),
            ("BIGINT UNSIGNED", DataType::UInt64),
            ("REAL", DataType::Float32),
            ("DOUBLE", DataType::Float64),
            ("DECIMAL(15, 2)", DataType::Decimal128(15, 2)),
            ("DECIMAL(40, 2)", DataType::Decimal256(40, 2)),
            ("VARCHAR", DataType::Utf8View),
            ("TEXT", DataType::Utf8View),
            ("BYTEA", DataType::Binary),
            ("DATE", DataType::Date32),
            ("TIME", DataType::Time64(TimeUnit::Nanosecond)),
            ("TIMESTAMP", DataType::Timestamp(TimeUnit::Nanosecond, None)),
            ("TIMESTAMP(3) WITH TIME ZONE", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))),
            ("INTERVAL", DataType::Interval(IntervalUnit::MonthDayNano)),
            ("INT[]", DataType::List(Arc::new(Field::new("item", DataType::Int32, true)))),
            ("MAP<VARCHAR, BIGINT>", map_type(DataType::Utf8View, DataType::Int64)),
            (
                "STRUCT<a INT, b ARRAY<DATE>>",
                DataType::Struct(Fields::from(vec![
                    Field::new("a", DataType::Int32, true),
                    Field::new("b", DataType::List(Arc::new(Field::new("item", DataType::Date32, true))), true),
                ])),
            ),
        ];
        for (sql, arrow) in cases {
            assert_eq!(sql_to_arrow(&parse(sql)).unwrap(), arrow, "{sql}");
        }
    }

    #[test]
    fn rejects_what_has_no_mapping_with_the_type_in_the_message() {
        let err = sql_to_arrow(&parse("TIMESTAMP(4)")).unwrap_err();
        assert_eq!(err.sql_type, "TIMESTAMP(4)");
        assert!(sql_to_arrow(&parse("DECIMAL(80, 2)")).is_err());
        assert!(sql_to_arrow(&parse("DECIMAL(5, 6)")).is_err());
    }

    #[test]
    fn arrow_to_sql_round_trips() {
        for sql in ["BIGINT", "DECIMAL(15, 2)", "VARCHAR", "TIMESTAMP(6) WITH TIME ZONE", "ARRAY<BIGINT>", "DATE"] {
            let arrow = sql_to_arrow(&parse(sql)).unwrap();
            let back = arrow_to_sql(&arrow).unwrap();
            assert_eq!(sql_to_arrow(&parse(&back)).unwrap(), arrow, "{sql} -> {back}");
        }
    }
}
