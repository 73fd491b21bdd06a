//! The canonical text of scalar values and data types (see [`super::encode`]): literals as
//! DataFusion 55 writes them in expressions (`Int64(5)`, `Utf8("x")`,
//! `Decimal128(0.00,15,2)`), values alone as window frame bounds write them, and types as
//! Arrow 59 names them (`Timestamp(ns, "UTC")`, `List(non-null Utf8)`), all written out
//! here rather than taken from their `Debug` or `Display`.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit, UnionMode};
use datafusion::common::ScalarValue;

/// A literal as expressions write it: its type and value, `Int64(5)`, `Utf8("x")`,
/// `Int64(NULL)` (see the module docs).
pub fn scalar_debug(v: &ScalarValue) -> String {
    use ScalarValue as S;
    let value = || scalar_display(v);
    let decimal = |name: &str, raw: Option<String>, p: u8, s: i8| match raw {
        Some(raw) => format!("{name}({},{p},{s})", decimal_text(&raw, s)),
        None => format!("{name}(NULL,{p},{s})"),
    };
    match v {
        S::Null => "NULL".to_owned(),
        S::Boolean(_) => format!("Boolean({})", value()),
        S::Float16(_) => format!("Float16({})", value()),
        S::Float32(_) => format!("Float32({})", value()),
        S::Float64(_) => format!("Float64({})", value()),
        S::Int8(_) => format!("Int8({})", value()),
        S::Int16(_) => format!("Int16({})", value()),
        S::Int32(_) => format!("Int32({})", value()),
        S::Int64(_) => format!("Int64({})", value()),
        S::UInt8(_) => format!("UInt8({})", value()),
        S::UInt16(_) => format!("UInt16({})", value()),
        S::UInt32(_) => format!("UInt32({})", value()),
        S::UInt64(_) => format!("UInt64({})", value()),
        S::Decimal32(x, p, s) => decimal("Decimal32", x.map(|x| x.to_string()), *p, *s),
        S::Decimal64(x, p, s) => decimal("Decimal64", x.map(|x| x.to_string()), *p, *s),
        S::Decimal128(x, p, s) => decimal("Decimal128", x.map(|x| x.to_string()), *p, *s),
        S::Decimal256(x, p, s) => decimal("Decimal256", x.map(|x| x.to_string()), *p, *s),
        S::TimestampSecond(_, tz) => format!("TimestampSecond({}, {})", value(), time_zone(tz.as_deref())),
        S::TimestampMillisecond(_, tz) => format!("TimestampMillisecond({}, {})", value(), time_zone(tz.as_deref())),
        S::TimestampMicrosecond(_, tz) => format!("TimestampMicrosecond({}, {})", value(), time_zone(tz.as_deref())),
        S::TimestampNanosecond(_, tz) => format!("TimestampNanosecond({}, {})", value(), time_zone(tz.as_deref())),
        S::Utf8(None) => "Utf8(NULL)".to_owned(),
        S::Utf8(Some(s)) => format!("Utf8(\"{s}\")"),
        S::Utf8View(None) => "Utf8View(NULL)".to_owned(),
        S::Utf8View(Some(s)) => format!("Utf8View(\"{s}\")"),
        S::LargeUtf8(None) => "LargeUtf8(NULL)".to_owned(),
        S::LargeUtf8(Some(s)) => format!("LargeUtf8(\"{s}\")"),
        S::Binary(b) => binary_debug("Binary", None, b.as_deref()),
        S::BinaryView(b) => binary_debug("BinaryView", None, b.as_deref()),
        S::LargeBinary(b) => binary_debug("LargeBinary", None, b.as_deref()),
        S::FixedSizeBinary(n, b) => binary_debug("FixedSizeBinary", Some(*n), b.as_deref()),
        S::List(_) => format!("List({})", value()),
        S::LargeList(_) => format!("LargeList({})", value()),
        S::FixedSizeList(_) => format!("FixedSizeList({})", value()),
        S::ListView(_) => format!("ListView({})", value()),
        S::LargeListView(_) => format!("LargeListView({})", value()),
        S::Struct(a) => {
            let fields: Vec<String> = a
                .fields()
                .iter()
                .zip(a.columns())
                .map(|(f, c)| format!("{}:{}", f.name(), array_value(c.as_ref(), 0)))
                .collect();
            format!("Struct({{{}}})", fields.join(","))
        }
        S::Map(a) => format!("Map([{}])", map_text(a, true)),
        S::Date32(_) => format!("Date32(\"{}\")", value()),
        S::Date64(_) => format!("Date64(\"{}\")", value()),
        S::Time32Second(_) => format!("Time32Second(\"{}\")", value()),
        S::Time32Millisecond(_) => format!("Time32Millisecond(\"{}\")", value()),
        S::Time64Microsecond(_) => format!("Time64Microsecond(\"{}\")", value()),
        S::Time64Nanosecond(_) => format!("Time64Nanosecond(\"{}\")", value()),
        S::IntervalDayTime(_) => format!("IntervalDayTime(\"{}\")", value()),
        S::IntervalYearMonth(_) => format!("IntervalYearMonth(\"{}\")", value()),
        S::IntervalMonthDayNano(_) => format!("IntervalMonthDayNano(\"{}\")", value()),
        S::DurationSecond(_) => format!("DurationSecond(\"{}\")", value()),
        S::DurationMillisecond(_) => format!("DurationMillisecond(\"{}\")", value()),
        S::DurationMicrosecond(_) => format!("DurationMicrosecond(\"{}\")", value()),
        S::DurationNanosecond(_) => format!("DurationNanosecond(\"{}\")", value()),
        S::Union(None, _, _) => "Union(NULL)".to_owned(),
        S::Union(Some((id, v)), _, _) => format!("Union {id}:{}", scalar_display(v)),
        S::Dictionary(k, v) => format!("Dictionary({}, {})", data_type(k), scalar_debug(v)),
        S::RunEndEncoded(run_ends, values, v) => {
            format!("RunEndEncoded({}, {}, {})", field_text(run_ends), field_text(values), scalar_debug(v))
        }
    }
}

/// A scalar's value alone (`5`, `x`, `2024-01-05`, `NULL`), as window frame bounds and
/// the typed forms of [`scalar_debug`] write it.
pub fn scalar_display(v: &ScalarValue) -> String {
    use ScalarValue as S;
    fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
        v.as_ref().map_or_else(|| "NULL".to_owned(), ToString::to_string)
    }
    match v {
        S::Null => "NULL".to_owned(),
        S::Boolean(x) => opt(x),
        S::Float16(x) => opt(&x.map(f32::from)),
        S::Float32(x) => opt(x),
        S::Float64(x) => opt(x),
        S::Int8(x) => opt(x),
        S::Int16(x) => opt(x),
        S::Int32(x) => opt(x),
        S::Int64(x) => opt(x),
        S::UInt8(x) => opt(x),
        S::UInt16(x) => opt(x),
        S::UInt32(x) => opt(x),
        S::UInt64(x) => opt(x),
        S::Decimal32(x, _, s) => x.map_or("NULL".into(), |x| decimal_text(&x.to_string(), *s)),
        S::Decimal64(x, _, s) => x.map_or("NULL".into(), |x| decimal_text(&x.to_string(), *s)),
        S::Decimal128(x, _, s) => x.map_or("NULL".into(), |x| decimal_text(&x.to_string(), *s)),
        S::Decimal256(x, _, s) => x.map_or("NULL".into(), |x| decimal_text(&x.to_string(), *s)),
        S::TimestampSecond(x, _)
        | S::TimestampMillisecond(x, _)
        | S::TimestampMicrosecond(x, _)
        | S::TimestampNanosecond(x, _) => opt(x),
        S::Utf8(x) | S::LargeUtf8(x) | S::Utf8View(x) => opt(x),
        S::Binary(x) | S::FixedSizeBinary(_, x) | S::LargeBinary(x) | S::BinaryView(x) => match x {
            None => "NULL".to_owned(),
            Some(bytes) => {
                let mut s: String = bytes.iter().take(10).map(|b| format!("{b:02X}")).collect();
                if bytes.len() > 10 {
                    s.push_str("...");
                }
                s
            }
        },
        S::List(a) => array_value(a.as_ref(), 0),
        S::LargeList(a) => array_value(a.as_ref(), 0),
        S::FixedSizeList(a) => array_value(a.as_ref(), 0),
        S::ListView(a) => array_value(a.as_ref(), 0),
        S::LargeListView(a) => array_value(a.as_ref(), 0),
        S::Date32(x) => x.map_or("NULL".into(), |d| date_text(i64::from(d))),
        S::Date64(x) => x.map_or("NULL".into(), |ms| date_text(ms / 86_400_000)),
        S::Time32Second(x) => opt(x),
        S::Time32Millisecond(x) => opt(x),
        S::Time64Microsecond(x) => opt(x),
        S::Time64Nanosecond(x) => opt(x),
        S::IntervalYearMonth(x) => opt(x),
        S::IntervalDayTime(x) => x.map_or("NULL".into(), |v| {
            format!("IntervalDayTime {{ days: {}, milliseconds: {} }}", v.days, v.milliseconds)
        }),
        S::IntervalMonthDayNano(x) => x.map_or("NULL".into(), |v| {
            format!("IntervalMonthDayNano {{ months: {}, days: {}, nanoseconds: {} }}", v.months, v.days, v.nanoseconds)
        }),
        S::DurationSecond(x) | S::DurationMillisecond(x) | S::DurationMicrosecond(x) | S::DurationNanosecond(x) => {
            opt(x)
        }
        S::Struct(a) => {
            if a.null_count() == a.len() {
                return "NULL".to_owned();
            }
            let fields: Vec<String> = a
                .fields()
                .iter()
                .zip(a.columns())
                .map(|(f, c)| format!("{}:{}", f.name(), array_value(c.as_ref(), 0)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        S::Map(a) if a.null_count() == a.len() => "NULL".to_owned(),
        S::Map(a) => format!("[{}]", map_text(a, false)),
        S::Union(None, _, _) => "NULL".to_owned(),
        S::Union(Some((id, v)), _, _) => format!("{id}:{}", scalar_display(v)),
        S::Dictionary(_, v) | S::RunEndEncoded(_, _, v) => scalar_display(v),
    }
}

/// A value of an array as Arrow's default formatter writes it inside a list or struct:
/// numbers and text as they are, NULL as nothing, lists `[a, b]`, structs `{a: 1}`.
fn array_value(array: &dyn Array, i: usize) -> String {
    if array.is_null(i) {
        return String::new();
    }
    match array.data_type() {
        DataType::List(_) => list_text(array.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => list_text(array.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(..) => list_text(array.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let parts: Vec<String> = fields
                .iter()
                .zip(s.columns())
                .map(|(f, c)| format!("{}: {}", f.name(), array_value(c.as_ref(), i)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        DataType::Map(..) => {
            let entry = array.as_map().value(i);
            let parts: Vec<String> = (0..entry.len())
                .map(|j| {
                    format!(
                        "{}: {}",
                        array_value(entry.column(0).as_ref(), j),
                        array_value(entry.column(1).as_ref(), j)
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        _ => match ScalarValue::try_from_array(array, i) {
            Ok(v) => scalar_display(&v),
            Err(_) => String::new(),
        },
    }
}

fn list_text(values: &dyn Array) -> String {
    let items: Vec<String> = (0..values.len()).map(|j| array_value(values, j)).collect();
    format!("[{}]", items.join(", "))
}

/// The entries of a map scalar, `{k:v,...}` per row (keys and values quoted in the typed
/// form).
fn map_text(a: &datafusion::arrow::array::MapArray, quote: bool) -> String {
    let entries: Vec<String> = (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                return "NULL".to_owned();
            }
            let entry = a.value(i);
            let pairs: Vec<String> = (0..entry.len())
                .map(|j| {
                    let key = array_value(entry.column(0).as_ref(), j);
                    let value = array_value(entry.column(1).as_ref(), j);
                    if quote { format!("{}:{}", quoted(&key), quoted(&value)) } else { format!("{key}:{value}") }
                })
                .collect();
            format!("{{{}}}", pairs.join(","))
        })
        .collect();
    entries.join(",")
}

/// `Some("UTC")` or `None`.
fn time_zone(tz: Option<&str>) -> String {
    tz.map_or_else(|| "None".to_owned(), |tz| format!("Some({})", quoted(tz)))
}

/// `Binary("1,2,3")`, `FixedSizeBinary(3, "1,2,3")`, `Binary(NULL)`.
fn binary_debug(name: &str, size: Option<i32>, bytes: Option<&[u8]>) -> String {
    let size = size.map_or_else(String::new, |n| format!("{n}, "));
    match bytes {
        None => format!("{name}({size}NULL)"),
        Some(b) => {
            let list: Vec<String> = b.iter().map(ToString::to_string).collect();
            format!("{name}({size}\"{}\")", list.join(","))
        }
    }
}

/// An unscaled decimal (its integer digits as text) with `scale`: `-12345`, 2 ->
/// `-123.45`; 5, 3 -> `0.005`; scale -2 -> `500`.
fn decimal_text(raw: &str, scale: i8) -> String {
    let (sign, digits) = match raw.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", raw),
    };
    if scale == 0 {
        raw.to_owned()
    } else if scale < 0 {
        format!("{raw}{}", "0".repeat(scale.unsigned_abs() as usize))
    } else if digits.len() > scale as usize {
        let (whole, frac) = raw.split_at(raw.len() - scale as usize);
        format!("{whole}.{frac}")
    } else {
        format!("{sign}0.{digits:0>width$}", width = scale as usize)
    }
}

/// `2024-01-05` for days since the epoch (years outside 0..=9999 signed, as chrono writes
/// them).
fn date_text(days: i64) -> String {
    let (y, m, d) = kiln_artifact::time::civil_from_days(days);
    if (0..=9999).contains(&y) { format!("{y:04}-{m:02}-{d:02}") } else { format!("{y:+05}-{m:02}-{d:02}") }
}

/// A data type as Arrow 59 names it: `Int64`, `Decimal128(15, 2)`, `Timestamp(ns, "UTC")`,
/// `List(non-null Utf8)`, `Struct("a": Int64)`.
pub fn data_type(t: &DataType) -> String {
    use DataType as D;
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "µs",
        TimeUnit::Nanosecond => "ns",
    };
    match t {
        D::Null => "Null".into(),
        D::Boolean => "Boolean".into(),
        D::Int8 => "Int8".into(),
        D::Int16 => "Int16".into(),
        D::Int32 => "Int32".into(),
        D::Int64 => "Int64".into(),
        D::UInt8 => "UInt8".into(),
        D::UInt16 => "UInt16".into(),
        D::UInt32 => "UInt32".into(),
        D::UInt64 => "UInt64".into(),
        D::Float16 => "Float16".into(),
        D::Float32 => "Float32".into(),
        D::Float64 => "Float64".into(),
        D::Timestamp(u, None) => format!("Timestamp({})", unit(u)),
        D::Timestamp(u, Some(tz)) => format!("Timestamp({}, {})", unit(u), quoted(tz)),
        D::Date32 => "Date32".into(),
        D::Date64 => "Date64".into(),
        D::Time32(u) => format!("Time32({})", unit(u)),
        D::Time64(u) => format!("Time64({})", unit(u)),
        D::Duration(u) => format!("Duration({})", unit(u)),
        D::Interval(i) => format!(
            "Interval({})",
            match i {
                IntervalUnit::YearMonth => "YearMonth",
                IntervalUnit::DayTime => "DayTime",
                IntervalUnit::MonthDayNano => "MonthDayNano",
            }
        ),
        D::Binary => "Binary".into(),
        D::FixedSizeBinary(n) => format!("FixedSizeBinary({n})"),
        D::LargeBinary => "LargeBinary".into(),
        D::BinaryView => "BinaryView".into(),
        D::Utf8 => "Utf8".into(),
        D::LargeUtf8 => "LargeUtf8".into(),
        D::Utf8View => "Utf8View".into(),
        D::List(f) => list_type("List", f, None),
        D::ListView(f) => list_type("ListView", f, None),
        D::LargeList(f) => list_type("LargeList", f, None),
        D::LargeListView(f) => list_type("LargeListView", f, None),
        D::FixedSizeList(f, n) => list_type("FixedSizeList", f, Some(*n)),
        D::Struct(fields) => {
            let parts: Vec<String> = fields.iter().map(|f| field_text(f)).collect();
            format!("Struct({})", parts.join(", "))
        }
        D::Union(fields, mode) => {
            let mode = match mode {
                UnionMode::Sparse => "Sparse",
                UnionMode::Dense => "Dense",
            };
            let parts: Vec<String> = fields.iter().map(|(id, f)| format!("{id}: ({})", field_text(f))).collect();
            if parts.is_empty() { format!("Union({mode})") } else { format!("Union({mode}, {})", parts.join(", ")) }
        }
        D::Dictionary(k, v) => format!("Dictionary({}, {})", data_type(k), data_type(v)),
        D::Decimal32(p, s) => format!("Decimal32({p}, {s})"),
        D::Decimal64(p, s) => format!("Decimal64({p}, {s})"),
        D::Decimal128(p, s) => format!("Decimal128({p}, {s})"),
        D::Decimal256(p, s) => format!("Decimal256({p}, {s})"),
        D::Map(f, sorted) => format!("Map({}, {})", field_text(f), if *sorted { "sorted" } else { "unsorted" }),
        D::RunEndEncoded(a, b) => format!("RunEndEncoded({}, {})", field_text(a), field_text(b)),
    }
}

/// `List(non-null Int64, field: 'element')`, `FixedSizeList(3 x Int64)`.
fn list_type(name: &str, f: &Field, size: Option<i32>) -> String {
    let size = size.map_or_else(String::new, |n| format!("{n} x "));
    let nullable = if f.is_nullable() { "" } else { "non-null " };
    let field_name = if f.name() == "item" { String::new() } else { format!(", field: '{}'", f.name()) };
    format!("{name}({size}{nullable}{}{field_name}{})", data_type(f.data_type()), field_metadata(f))
}

/// `"name": non-null Type` (with its metadata).
fn field_text(f: &Field) -> String {
    let nullable = if f.is_nullable() { "" } else { "non-null " };
    format!("{}: {nullable}{}{}", quoted(f.name()), data_type(f.data_type()), field_metadata(f))
}

fn field_metadata(f: &Field) -> String {
    if f.metadata().is_empty() { String::new() } else { format!(", metadata: {}", metadata_text(f.metadata().iter())) }
}

/// `{"k": "v", ...}` with keys sorted.
pub(super) fn metadata_text<'a>(entries: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut sorted: Vec<(&String, &String)> = entries.collect();
    sorted.sort();
    let body: Vec<String> = sorted.into_iter().map(|(k, v)| format!("{}: {}", quoted(k), quoted(v))).collect();
    format!("{{{}}}", body.join(", "))
}

/// `s` as a Rust string literal (double quotes; `"` and `\` escaped).
pub(super) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\'' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
    out
}
