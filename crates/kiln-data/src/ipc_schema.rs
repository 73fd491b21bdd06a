//! Arrow schemas in IPC form, checked before arrow-rs converts them. arrow-ipc 59's
//! `fb_to_schema` panics (`panic!`, `unimplemented!`, `unwrap`) on a schema flatbuffer
//! that verifies but holds an unknown type, bit width, unit or child count, and every
//! Parquet reader converts the schema a file embeds (`ARROW:schema`) that way: found by
//! `cargo xtask fuzz` (10 of 17,000 mutated Parquet files). Kiln checks each file's
//! embedded schema when it reads its footer and refuses a bad one with the file's name,
//! so no reader is handed it; likewise the schema in an Arrow IPC file's footer. Written here because arrow-rs has no checked conversion;
//! the checks mirror `arrow_ipc::convert::get_data_type` case by case.

use base64::Engine;
use datafusion::arrow::ipc::{self, Field, Type};

/// What makes the Arrow schema embedded in Parquet key-value metadata unreadable, when
/// something does. A value that does not decode or verify is left to parquet, which
/// reports it as an error of its own.
pub fn embedded_schema_problem(
    metadata: Option<&Vec<datafusion::parquet::file::metadata::KeyValue>>,
) -> Option<String> {
    let encoded = metadata?.iter().find(|kv| kv.key == "ARROW:schema")?.value.as_ref()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    // As parquet reads it: an optional continuation marker and length first.
    let slice = if bytes.len() > 8 && bytes[0..4] == [255u8; 4] { &bytes[8..] } else { bytes.as_slice() };
    let schema = ipc::root_as_message(slice).ok()?.header_as_schema()?;
    schema_problem(schema)
}

/// What makes an IPC schema unconvertible, when something does.
pub fn schema_problem(schema: ipc::Schema) -> Option<String> {
    let Some(fields) = schema.fields() else { return Some("the schema has no field list".into()) };
    for (i, field) in fields.iter().enumerate() {
        let problem = if field.type_type() == Type::Decimal && schema.endianness() == ipc::Endianness::Big {
            Some("a big-endian decimal".into())
        } else {
            field_problem(field, true)
        };
        if let Some(problem) = problem {
            return Some(match field.name().filter(|n| !n.is_empty()) {
                Some(name) => format!("column `{name}`: {problem}"),
                None => format!("column {}: {problem}", i + 1),
            });
        }
    }
    None
}

/// What makes the schema in an Arrow IPC file's footer unconvertible, when something
/// does (the footer is read alone; a file without one is left to the IPC reader, which
/// reports it as an error of its own).
pub fn ipc_file_problem(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    // ... footer, its length (i32 LE), "ARROW1".
    let mut tail = [0u8; 10];
    file.seek(SeekFrom::Start(len.checked_sub(10)?)).ok()?;
    file.read_exact(&mut tail).ok()?;
    if &tail[4..] != b"ARROW1" {
        return None;
    }
    let footer_len = u64::try_from(i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]])).ok()?;
    let start = len.checked_sub(10)?.checked_sub(footer_len)?;
    let mut footer = vec![0u8; usize::try_from(footer_len).ok()?];
    file.seek(SeekFrom::Start(start)).ok()?;
    file.read_exact(&mut footer).ok()?;
    let schema = ipc::root_as_footer(&footer).ok()?.schema()?;
    schema_problem(schema)
}

fn children_problem(field: Field, count: Option<usize>) -> Option<String> {
    let Some(children) = field.children() else { return Some("a nested type without children".into()) };
    if let Some(n) = count
        && children.len() != n
    {
        return Some(format!("{:?} with {} children (expected {n})", field.type_type(), children.len()));
    }
    children.iter().find_map(|c| field_problem(c, true))
}

fn field_problem(field: Field, may_be_dictionary: bool) -> Option<String> {
    if let Some(dictionary) = field.dictionary()
        && may_be_dictionary
    {
        let Some(index) = dictionary.indexType() else { return Some("a dictionary without index type".into()) };
        if !matches!(index.bitWidth(), 8 | 16 | 32 | 64) {
            return Some(format!("a dictionary index of {} bits", index.bitWidth()));
        }
        return field_problem(field, false);
    }
    let missing = || Some(format!("a {:?} type without its parameters", field.type_type()));
    match field.type_type() {
        Type::Null | Type::Bool | Type::Binary | Type::BinaryView | Type::LargeBinary => None,
        Type::Utf8 | Type::Utf8View | Type::LargeUtf8 => None,
        Type::Int => match field.type_as_int() {
            None => missing(),
            Some(int) if matches!(int.bitWidth(), 8 | 16 | 32 | 64) => None,
            Some(int) => Some(format!("an integer of {} bits", int.bitWidth())),
        },
        Type::FixedSizeBinary => field.type_as_fixed_size_binary().map_or_else(missing, |_| None),
        Type::FloatingPoint => match field.type_as_floating_point() {
            None => missing(),
            Some(f)
                if matches!(f.precision(), ipc::Precision::HALF | ipc::Precision::SINGLE | ipc::Precision::DOUBLE) =>
            {
                None
            }
            Some(f) => Some(format!("a floating point precision {:?}", f.precision())),
        },
        Type::Date => match field.type_as_date() {
            None => missing(),
            Some(d) if matches!(d.unit(), ipc::DateUnit::DAY | ipc::DateUnit::MILLISECOND) => None,
            Some(d) => Some(format!("a date unit {:?}", d.unit())),
        },
        Type::Time => match field.type_as_time() {
            None => missing(),
            Some(t) => match (t.bitWidth(), t.unit()) {
                (32, ipc::TimeUnit::SECOND | ipc::TimeUnit::MILLISECOND) => None,
                (64, ipc::TimeUnit::MICROSECOND | ipc::TimeUnit::NANOSECOND) => None,
                (bits, unit) => Some(format!("a time of {bits} bits in {unit:?}")),
            },
        },
        Type::Timestamp => match field.type_as_timestamp() {
            None => missing(),
            Some(t) => time_unit_problem(t.unit()),
        },
        Type::Duration => match field.type_as_duration() {
            None => missing(),
            Some(d) => time_unit_problem(d.unit()),
        },
        Type::Interval => match field.type_as_interval() {
            None => missing(),
            Some(i)
                if matches!(
                    i.unit(),
                    ipc::IntervalUnit::YEAR_MONTH | ipc::IntervalUnit::DAY_TIME | ipc::IntervalUnit::MONTH_DAY_NANO
                ) =>
            {
                None
            }
            Some(i) => Some(format!("an interval unit {:?}", i.unit())),
        },
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => children_problem(field, Some(1)),
        Type::FixedSizeList => {
            field.type_as_fixed_size_list().map_or_else(missing, |_| children_problem(field, Some(1)))
        }
        Type::Map => field.type_as_map().map_or_else(missing, |_| children_problem(field, Some(1))),
        Type::RunEndEncoded => children_problem(field, Some(2)),
        Type::Struct_ => field.children().and_then(|c| c.iter().find_map(|c| field_problem(c, true))),
        Type::Decimal => match field.type_as_decimal() {
            None => missing(),
            Some(d) if u8::try_from(d.precision()).is_err() || i8::try_from(d.scale()).is_err() => {
                Some(format!("a decimal of precision {} and scale {}", d.precision(), d.scale()))
            }
            Some(d) if matches!(d.bitWidth(), 32 | 64 | 128 | 256) => None,
            Some(d) => Some(format!("a decimal of {} bits", d.bitWidth())),
        },
        Type::Union => {
            let Some(union) = field.type_as_union() else { return missing() };
            if !matches!(union.mode(), ipc::UnionMode::Dense | ipc::UnionMode::Sparse) {
                return Some(format!("a union mode {:?}", union.mode()));
            }
            let children = field.children().map_or(0, |c| c.len());
            if let Some(ids) = union.typeIds() {
                let mut seen = std::collections::BTreeSet::new();
                let ok = ids.len() == children && ids.iter().all(|id| i8::try_from(id).is_ok_and(|id| seen.insert(id)));
                if !ok {
                    return Some("a union whose type ids do not match its children".into());
                }
            }
            field.children().and_then(|c| c.iter().find_map(|c| field_problem(c, true)))
        }
        other => Some(format!("type {other:?}")),
    }
}

fn time_unit_problem(unit: ipc::TimeUnit) -> Option<String> {
    match unit {
        ipc::TimeUnit::SECOND | ipc::TimeUnit::MILLISECOND | ipc::TimeUnit::MICROSECOND | ipc::TimeUnit::NANOSECOND => {
            None
        }
        other => Some(format!("a time unit {other:?}")),
    }
}
