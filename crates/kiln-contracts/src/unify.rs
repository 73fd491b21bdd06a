//! Schema unification across files (the semantics of pyarrow's `unify_schemas`).
//!
//! Fields are merged by name; the result lists them in order of first appearance. A field
//! absent from some input, or nullable in any input, is nullable in the result. Field
//! types and nullability do not depend on the order of the inputs; field order follows it.
//!
//! - [`UnifyMode::Strict`]: every occurrence of a name must have the same logical type
//!   (string and binary encodings are one type); otherwise the error names both files and
//!   the column.
//! - [`UnifyMode::Permissive`]: types are promoted along the widening lattice of
//!   [`promote`]; a pair with no common type is an error naming both files.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema};

use crate::compat::same_logical_type;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnifyMode {
    Strict,
    Permissive,
}

/// Two files disagree on a column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}`: {first_file} has {first_type}, {second_file} has {second_type}{hint}")]
pub struct UnifyError {
    pub column: String,
    pub first_file: String,
    pub first_type: String,
    pub second_file: String,
    pub second_type: String,
    pub hint: &'static str,
}

/// Unifies `(file, schema)` pairs into one schema.
pub fn unify(inputs: &[(&str, &Schema)], mode: UnifyMode) -> Result<Schema, Box<UnifyError>> {
    // (field, file it first appeared in, how many inputs had it)
    let mut merged: Vec<(Field, String, usize)> = Vec::new();
    for (file, schema) in inputs {
        for field in schema.fields() {
            match merged.iter_mut().find(|(f, _, _)| f.name() == field.name()) {
                None => merged.push((field.as_ref().clone(), (*file).to_owned(), 1)),
                Some((current, first_file, seen)) => {
                    let data_type = match mode {
                        UnifyMode::Strict if same_logical_type(current.data_type(), field.data_type()) => {
                            canonical(current.data_type())
                        }
                        UnifyMode::Permissive => promote(current.data_type(), field.data_type()),
                        UnifyMode::Strict => None,
                    }
                    .ok_or_else(|| {
                        Box::new(UnifyError {
                            column: field.name().clone(),
                            first_file: first_file.clone(),
                            first_type: current.data_type().to_string(),
                            second_file: (*file).to_owned(),
                            second_type: field.data_type().to_string(),
                            hint: if mode == UnifyMode::Strict {
                                " (schema_evolution = 'strict'; 'permissive' unifies widenings)"
                            } else {
                                " (no common type)"
                            },
                        })
                    })?;
                    let nullable = current.is_nullable() || field.is_nullable();
                    let mut metadata = current.metadata().clone();
                    metadata.extend(field.metadata().iter().map(|(k, v)| (k.clone(), v.clone())));
                    *current = Field::new(current.name(), data_type, nullable).with_metadata(metadata);
                    *seen += 1;
                }
            }
        }
    }
    let fields: Vec<Field> = merged
        .into_iter()
        .map(|(f, _, seen)| if seen < inputs.len() { f.with_nullable(true) } else { f })
        .map(|f| {
            let t = canonical(f.data_type()).unwrap_or_else(|| f.data_type().clone());
            f.with_data_type(t)
        })
        .collect();
    Ok(Schema::new(fields))
}

/// One representative per encoding family, so the result is order independent.
fn canonical(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8View,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, v) => return canonical(v),
        other => other.clone(),
    })
}

fn int_bits(t: &DataType) -> Option<(bool, u8)> {
    use DataType as D;
    Some(match t {
        D::Int8 => (true, 8),
        D::Int16 => (true, 16),
        D::Int32 => (true, 32),
        D::Int64 => (true, 64),
        D::UInt8 => (false, 8),
        D::UInt16 => (false, 16),
        D::UInt32 => (false, 32),
        D::UInt64 => (false, 64),
        _ => return None,
    })
}

fn int_type(signed: bool, bits: u8) -> DataType {
    match (signed, bits) {
        (true, 8) => DataType::Int8,
        (true, 16) => DataType::Int16,
        (true, 32) => DataType::Int32,
        (true, _) => DataType::Int64,
        (false, 8) => DataType::UInt8,
        (false, 16) => DataType::UInt16,
        (false, 32) => DataType::UInt32,
        (false, _) => DataType::UInt64,
    }
}

/// The least common type of `a` and `b` on Kiln's widening lattice, if any:
/// - `Null` widens to anything; equal logical types unify to themselves;
/// - integers: same signedness -> the wider; unsigned k bits with signed -> signed of
///   max(2k, other) bits (UInt64 with a signed type has no common integer: Float64 below);
/// - any integer with a float, or UInt64 with a signed integer -> Float64;
///   Float32 with Float64 -> Float64;
/// - Decimal(p1, s1) with Decimal(p2, s2) -> Decimal(max(p1-s1, p2-s2) + max(s1, s2),
///   max(s1, s2)), Decimal128 up to precision 38, Decimal256 up to 76;
/// - Date32 with Timestamp(u, None) -> Timestamp(u, None); timestamps of different units
///   and the same zone -> the finer unit;
/// - lists unify element-wise, structs field-wise (by name, as for schemas).
pub fn promote(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType as D;
    if same_logical_type(a, b) {
        return canonical(a);
    }
    match (a, b) {
        (D::Null, other) | (other, D::Null) => return canonical(other),
        _ => {}
    }
    if let (Some((sa, ba)), Some((sb, bb))) = (int_bits(a), int_bits(b)) {
        return Some(match (sa, sb) {
            _ if sa == sb => int_type(sa, ba.max(bb)),
            (false, true) if ba < 64 => int_type(true, (ba * 2).max(bb)),
            (true, false) if bb < 64 => int_type(true, (bb * 2).max(ba)),
            _ => D::Float64,
        });
    }
    let float = |t: &DataType| matches!(t, D::Float16 | D::Float32 | D::Float64);
    if (float(a) && (float(b) || int_bits(b).is_some())) || (float(b) && int_bits(a).is_some()) {
        return Some(if matches!((a, b), (D::Float32, D::Float32)) { D::Float32 } else { D::Float64 });
    }
    let dec = |t: &DataType| match t {
        D::Decimal128(p, s) | D::Decimal256(p, s) => Some((i16::from(*p), i16::from(*s))),
        _ => None,
    };
    if let (Some((p1, s1)), Some((p2, s2))) = (dec(a), dec(b)) {
        let scale = s1.max(s2);
        let precision = (p1 - s1).max(p2 - s2) + scale;
        let (p, s) = (u8::try_from(precision).ok()?, i8::try_from(scale).ok()?);
        return match precision {
            1..=38 => Some(D::Decimal128(p, s)),
            39..=76 => Some(D::Decimal256(p, s)),
            _ => None,
        };
    }
    match (a, b) {
        (D::Date32, D::Timestamp(u, None)) | (D::Timestamp(u, None), D::Date32) => Some(D::Timestamp(*u, None)),
        (D::Timestamp(u1, z1), D::Timestamp(u2, z2)) if z1 == z2 => {
            let finer = if unit_rank(u1) >= unit_rank(u2) { *u1 } else { *u2 };
            Some(D::Timestamp(finer, z1.clone()))
        }
        (D::List(f1) | D::LargeList(f1), D::List(f2) | D::LargeList(f2)) => {
            let item = promote(f1.data_type(), f2.data_type())?;
            Some(D::List(Arc::new(Field::new(f1.name(), item, f1.is_nullable() || f2.is_nullable()))))
        }
        (D::Struct(f1), D::Struct(f2)) => {
            let s1 = Schema::new(f1.clone());
            let s2 = Schema::new(f2.clone());
            let merged = unify(&[("", &s1), ("", &s2)], UnifyMode::Permissive).ok()?;
            Some(D::Struct(Fields::from(merged.fields().iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>())))
        }
        _ => None,
    }
}

fn unit_rank(u: &arrow::datatypes::TimeUnit) -> u8 {
    use arrow::datatypes::TimeUnit as T;
    match u {
        T::Second => 0,
        T::Millisecond => 1,
        T::Microsecond => 2,
        T::Nanosecond => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_names_both_files_and_the_column() {
        let a = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
        let b = Schema::new(vec![Field::new("x", DataType::Int64, false)]);
        let err = unify(&[("a.parquet", &a), ("b.parquet", &b)], UnifyMode::Strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `x`: a.parquet has Int32, b.parquet has Int64 (schema_evolution = 'strict'; 'permissive' unifies widenings)"
        );
    }

    #[test]
    fn permissive_promotes_and_marks_partial_columns_nullable() {
        let a = Schema::new(vec![
            Field::new("x", DataType::Int32, false),
            Field::new("d", DataType::Decimal128(10, 2), false),
        ]);
        let b = Schema::new(vec![
            Field::new("x", DataType::UInt32, false),
            Field::new("d", DataType::Decimal128(12, 4), false),
            Field::new("only_b", DataType::Utf8, false),
        ]);
        let u = unify(&[("a", &a), ("b", &b)], UnifyMode::Permissive).unwrap();
        assert_eq!(u.field(0), &Field::new("x", DataType::Int64, false));
        assert_eq!(u.field(1), &Field::new("d", DataType::Decimal128(12, 4), false));
        assert_eq!(u.field(2), &Field::new("only_b", DataType::Utf8View, true));
        assert!(
            unify(
                &[("a", &a), ("c", &Schema::new(vec![Field::new("x", DataType::Date32, true)]))],
                UnifyMode::Permissive
            )
            .is_err()
        );
    }
}
