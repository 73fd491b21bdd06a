//! The functions whose output can be far larger than their input, bounded: `repeat`,
//! `lpad`, `rpad`, `array_repeat`, `array_resize` and the array forms of
//! `generate_series` and `range`. DataFusion's memory pool does not see what they
//! allocate, and constant folding runs them while planning, so `repeat('x', 2147483647)`
//! allocated 2 GiB before a query began. [`bounded`] wraps each so that a call whose
//! result would pass `max_bytes` in one batch fails first, with the function, the size
//! it asked for and the limit. The untrusted surface (`kiln query`) registers them in
//! place of DataFusion's; its resident-memory bound stays the backstop for the rest.
//!
//! Sizes are computed from the arguments before anything is allocated: string length
//! times count, target length, element size times count, and the number of steps from
//! start to stop (dates and timestamps by their days or units, a month as 28 days).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::cast::cast;
use datafusion::arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::common::{Result, resources_err};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// How a function's output grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: length of text × n.
    Repeat,
    /// `lpad(text, n [, fill])`, `rpad`: n characters.
    Pad,
    /// `array_repeat(element, n)`: element × n.
    ArrayRepeat,
    /// `array_resize(array, n [, value])`: n elements.
    Resize,
    /// `generate_series(start, stop [, step])`, `range`: the steps from start to stop.
    Series,
}

/// The function names [`bounded`] wraps.
pub const BOUNDED_FUNCTIONS: [&str; 7] =
    ["repeat", "lpad", "rpad", "array_repeat", "array_resize", "generate_series", "range"];

fn growth(name: &str) -> Option<Growth> {
    Some(match name {
        "repeat" => Growth::Repeat,
        "lpad" | "rpad" => Growth::Pad,
        "array_repeat" => Growth::ArrayRepeat,
        "array_resize" => Growth::Resize,
        "generate_series" | "range" => Growth::Series,
        _ => return None,
    })
}

/// `udf` bounded to `max_bytes` per call, when it is one of [`BOUNDED_FUNCTIONS`].
pub fn bounded(udf: &ScalarUDF, max_bytes: u64) -> Option<ScalarUDF> {
    let growth = growth(udf.name())?;
    Some(ScalarUDF::new_from_impl(Bounded { inner: Arc::new(udf.clone()), growth, max_bytes }))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    growth: Growth,
    max_bytes: u64,
}

impl Bounded {
    /// The bytes the call asks for, over all rows of the batch.
    fn requested(&self, args: &[ColumnarValue], rows: usize) -> Result<u128> {
        let arg = |i: usize| args.get(i);
        let counts = |i: usize| -> Result<Vec<i64>> { arg(i).map_or(Ok(vec![0; 1]), int_values) };
        Ok(match self.growth {
            Growth::Repeat => {
                let lengths = arg(0).map_or(Ok(vec![0]), byte_lengths)?;
                pairwise(&lengths, &counts(1)?, rows)
            }
            Growth::Pad => counts(1)?.iter().map(|&n| n.max(0) as u128).sum::<u128>() * repeat_rows(args, rows),
            Growth::ArrayRepeat => {
                let sizes = arg(0).map_or(Ok(vec![0]), |a| element_sizes(a, rows))?;
                pairwise(&sizes, &counts(1)?, rows)
            }
            Growth::Resize => {
                let n = counts(1)?;
                n.iter().map(|&n| n.max(0) as u128 * 8).sum::<u128>() * repeat_rows(args.get(1..).unwrap_or(&[]), rows)
            }
            Growth::Series => {
                let (Some(start), Some(stop)) = (arg(0), arg(1)) else { return Ok(0) };
                series_len(start, stop, arg(2), rows)? * 8
            }
        })
    }
}

/// The rows a scalar-only call stands for (a scalar is one value for every row).
fn repeat_rows(args: &[ColumnarValue], rows: usize) -> u128 {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) { rows.max(1) as u128 } else { 1 }
}

/// Σ a[i] × b[i] over the batch, a scalar side standing for every row.
fn pairwise(a: &[u128], b: &[i64], rows: usize) -> u128 {
    let rows = rows.max(1).max(a.len()).max(b.len());
    let at = |v: &[u128], i: usize| if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(0) };
    let bt = |i: usize| if b.len() == 1 { b[0] } else { b.get(i).copied().unwrap_or(0) };
    (0..rows).map(|i| at(a, i).saturating_mul(bt(i).max(0) as u128)).fold(0u128, u128::saturating_add)
}

/// An argument's values: a scalar as one value (it stands for every row).
fn to_array(value: &ColumnarValue) -> Result<ArrayRef> {
    match value {
        ColumnarValue::Array(a) => Ok(Arc::clone(a)),
        ColumnarValue::Scalar(s) => s.to_array_of_size(1),
    }
}

/// The values of an integer argument (NULL and what does not cast: 0).
fn int_values(value: &ColumnarValue) -> Result<Vec<i64>> {
    let array = to_array(value)?;
    let Ok(ints) = cast(&array, &DataType::Int64) else { return Ok(vec![0]) };
    Ok(ints.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0)).collect())
}

/// The byte length of each value of a text argument.
fn byte_lengths(value: &ColumnarValue) -> Result<Vec<u128>> {
    let array = to_array(value)?;
    let Ok(text) = cast(&array, &DataType::Utf8) else { return Ok(vec![0]) };
    Ok(text.as_string::<i32>().iter().map(|v| v.map_or(0, |s| s.len() as u128)).collect())
}

/// The memory one value of an argument takes (at least 8 bytes).
fn element_sizes(value: &ColumnarValue, rows: usize) -> Result<Vec<u128>> {
    Ok(match value {
        ColumnarValue::Scalar(s) => vec![(s.size() as u128).max(8)],
        ColumnarValue::Array(a) => {
            let each = (a.get_array_memory_size() / a.len().max(1)) as u128;
            vec![each.max(8); rows.max(1)]
        }
    })
}

/// How many values `generate_series(start, stop, step)` returns, summed over the batch.
fn series_len(start: &ColumnarValue, stop: &ColumnarValue, step: Option<&ColumnarValue>, rows: usize) -> Result<u128> {
    let start_array = to_array(start)?;
    // Dates count in days, timestamps in their unit; a step interval in the same.
    let unit_per_day: i128 = match start_array.data_type() {
        DataType::Date32 | DataType::Date64 => 1,
        DataType::Timestamp(TimeUnit::Second, _) => 86_400,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 86_400_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 86_400_000_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 86_400_000_000_000,
        _ => 0,
    };
    let as_units = |value: &ColumnarValue| -> Result<Vec<i128>> {
        let array = to_array(value)?;
        let array = match array.data_type() {
            DataType::Date64 => cast(&cast(&array, &DataType::Date32)?, &DataType::Int32)?,
            DataType::Date32 => cast(&array, &DataType::Int32)?,
            DataType::Timestamp(unit, _) => cast(&array, &DataType::Timestamp(*unit, None))?,
            _ => array,
        };
        Ok(match cast(&array, &DataType::Int64) {
            Ok(ints) => ints.as_primitive::<Int64Type>().iter().map(|v| v.map_or(0, i128::from)).collect(),
            Err(_) => vec![0],
        })
    };
    let (starts, stops) = (as_units(start)?, as_units(stop)?);
    let steps: Vec<i128> = match step {
        None => vec![if unit_per_day > 1 { unit_per_day } else { 1 }],
        Some(step) => {
            let array = to_array(step)?;
            if let DataType::Interval(_) = array.data_type() {
                let Ok(mdn) =
                    cast(&array, &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano))
                else {
                    return Ok(0);
                };
                let nanos_per_unit = if unit_per_day > 0 { 86_400_000_000_000 / unit_per_day } else { 1 };
                mdn.as_primitive::<IntervalMonthDayNanoType>()
                    .iter()
                    .map(|v| {
                        v.map_or(0, |v| {
                            (i128::from(v.months) * 28 + i128::from(v.days)) * unit_per_day
                                + i128::from(v.nanoseconds) / nanos_per_unit
                        })
                    })
                    .collect()
            } else {
                as_units(step)?
            }
        }
    };
    let n = starts.len().max(stops.len()).max(steps.len());
    let pick = |v: &[i128], i: usize| if v.len() == 1 { v[0] } else { v.get(i).copied().unwrap_or(0) };
    let mut total = 0u128;
    for i in 0..n {
        let (a, b, s) = (pick(&starts, i), pick(&stops, i), pick(&steps, i));
        // A zero step (or one below the unit) is DataFusion's error to report.
        if s != 0 && (b - a).signum() * s.signum() >= 0 {
            total = total.saturating_add(((b - a) / s).unsigned_abs() + 1);
        }
    }
    let all: Vec<ColumnarValue> = [Some(start), Some(stop), step].into_iter().flatten().cloned().collect();
    Ok(total.saturating_mul(repeat_rows(&all, rows)))
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let requested = self.requested(&args.args, args.number_rows)?;
        if requested > u128::from(self.max_bytes) {
            return resources_err!(
                "{}() would produce {} in one batch, more than the {} a value may take here (--memory, [query] memory)",
                self.name(),
                size_text(requested),
                size_text(u128::from(self.max_bytes))
            );
        }
        self.inner.invoke_with_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// `2.0 GiB`, `1.5 MiB`, `12 bytes`: a size for a message.
pub fn size_text(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} bytes") } else { format!("{value:.1} {}", UNITS[unit]) }
}
