//! The explode kernels.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericListArray, Int64Array, OffsetSizeTrait, RecordBatch, UInt32Array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// What [`explode`] should produce. A config struct rather than boolean parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplodeOptions {
    /// Keep empty and NULL lists as one row with a NULL value and NULL idx.
    pub keep_empty: bool,
    /// Produce the element index.
    pub with_idx: bool,
    /// 0 for WITH OFFSET (Kiln's default), 1 for WITH ORDINALITY.
    pub idx_base: i64,
    /// Produce the is_empty_parent / is_null_parent flags.
    pub with_flags: bool,
}

impl Default for ExplodeOptions {
    fn default() -> Self {
        Self { keep_empty: false, with_idx: true, idx_base: 0, with_flags: false }
    }
}

/// The result of exploding one list-like array.
#[derive(Debug, Clone)]
pub struct Exploded {
    /// For each output row, the index of its parent row.
    pub parents: UInt32Array,
    /// For each output row, its element index (NULL on keep-empty rows).
    pub idx: Option<Int64Array>,
    /// The element values (for maps: the `entries` struct; see [`Exploded::map_columns`]).
    pub values: ArrayRef,
    /// Whether the row stands for an empty (non-NULL) parent list (keep-empty only).
    pub is_empty_parent: Option<BooleanArray>,
    /// Whether the row stands for a NULL parent list (keep-empty only).
    pub is_null_parent: Option<BooleanArray>,
}

impl Exploded {
    /// For an exploded map: the (key, value) columns of its entries.
    pub fn map_columns(&self) -> Option<(ArrayRef, ArrayRef)> {
        let entries = self.values.as_struct_opt()?;
        Some((Arc::clone(entries.column(0)), Arc::clone(entries.column(1))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExplodeError {
    /// The column is not a List, LargeList, FixedSizeList or Map (the caller's input).
    #[error("cannot explode a column of type {0} (expected a list or map)")]
    NotAList(DataType),
    /// Zipped columns must have the same number of rows.
    #[error("zipped explode needs columns of equal length, got {0} and {1}")]
    Lengths(usize, usize),
    /// More output rows than a u32 parent index can address in one call.
    #[error("explode of {0} rows exceeds u32 parent indices; split the batch")]
    TooLarge(usize),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// (start, end) child ranges per parent, NULL parents as empty, plus the child values.
struct Ranges {
    starts: Vec<usize>,
    lens: Vec<usize>,
    nulls: Option<NullBuffer>,
    child: ArrayRef,
}

fn ranges_of<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Ranges {
    let offsets = list.value_offsets();
    let nulls = list.nulls().cloned();
    let mut starts = Vec::with_capacity(list.len());
    let mut lens = Vec::with_capacity(list.len());
    for (i, w) in offsets.windows(2).enumerate() {
        let (s, e) = (w[0].as_usize(), w[1].as_usize());
        starts.push(s);
        lens.push(if nulls.as_ref().is_some_and(|n| n.is_null(i)) { 0 } else { e - s });
    }
    Ranges { starts, lens, nulls, child: Arc::clone(list.values()) }
}

fn ranges(array: &dyn Array) -> Result<Ranges, ExplodeError> {
    Ok(match array.data_type() {
        DataType::List(_) => ranges_of(array.as_list::<i32>()),
        DataType::LargeList(_) => ranges_of(array.as_list::<i64>()),
        DataType::FixedSizeList(_, size) => {
            let fsl = array.as_fixed_size_list();
            let size = usize::try_from(*size).unwrap_or(0);
            let nulls = fsl.nulls().cloned();
            // `values()` of a sliced FixedSizeList is the whole child; the slice is
            // reflected by `value_offset`.
            let starts: Vec<usize> = (0..fsl.len()).map(|i| fsl.value_offset(i) as usize).collect();
            let lens =
                (0..fsl.len()).map(|i| if nulls.as_ref().is_some_and(|n| n.is_null(i)) { 0 } else { size }).collect();
            Ranges { starts, lens, nulls, child: Arc::clone(fsl.values()) }
        }
        DataType::Map(_, _) => {
            let map = array.as_map();
            let offsets = map.value_offsets();
            let nulls = map.nulls().cloned();
            let mut starts = Vec::with_capacity(map.len());
            let mut lens = Vec::with_capacity(map.len());
            for (i, w) in offsets.windows(2).enumerate() {
                let (s, e) = (w[0] as usize, w[1] as usize);
                starts.push(s);
                lens.push(if nulls.as_ref().is_some_and(|n| n.is_null(i)) { 0 } else { e - s });
            }
            Ranges { starts, lens, nulls, child: Arc::new(map.entries().clone()) }
        }
        other => return Err(ExplodeError::NotAList(other.clone())),
    })
}

/// Explodes one List / LargeList / FixedSizeList / Map array (see the crate docs).
pub fn explode(array: &dyn Array, options: &ExplodeOptions) -> Result<Exploded, ExplodeError> {
    let r = ranges(array)?;
    explode_ranges(&[r], options).map(|mut v| {
        let values = v.values.remove(0);
        Exploded { parents: v.parents, idx: v.idx, values, is_empty_parent: v.empty, is_null_parent: v.null }
    })
}

struct Multi {
    parents: UInt32Array,
    idx: Option<Int64Array>,
    values: Vec<ArrayRef>,
    empty: Option<BooleanArray>,
    null: Option<BooleanArray>,
}

fn explode_ranges(lists: &[Ranges], options: &ExplodeOptions) -> Result<Multi, ExplodeError> {
    let n = lists.first().map_or(0, |l| l.lens.len());
    for l in lists {
        if l.lens.len() != n {
            return Err(ExplodeError::Lengths(n, l.lens.len()));
        }
    }
    // Output rows per parent: the longest list (zip), or one padding row if kept empty.
    let width: Vec<usize> = (0..n)
        .map(|i| {
            let w = lists.iter().map(|l| l.lens[i]).max().unwrap_or(0);
            if w == 0 && options.keep_empty { 1 } else { w }
        })
        .collect();
    let total: usize = width.iter().sum();
    if u32::try_from(total).is_err() || u32::try_from(n).is_err() {
        return Err(ExplodeError::TooLarge(total));
    }
    let mut parents = Vec::with_capacity(total);
    for (i, &w) in width.iter().enumerate() {
        parents.extend(std::iter::repeat_n(i as u32, w));
    }
    let padded: Vec<bool> = (0..n).map(|i| width[i] > 0 && lists.iter().all(|l| l.lens[i] == 0)).collect();
    let idx = options.with_idx.then(|| {
        let mut values = Vec::with_capacity(total);
        let mut valid = Vec::with_capacity(total);
        for (i, &w) in width.iter().enumerate() {
            values.extend((0..w as i64).map(|j| j + options.idx_base));
            valid.extend(std::iter::repeat_n(!padded[i], w));
        }
        Int64Array::new(values.into(), Some(NullBuffer::from(valid)))
    });
    let (empty, null) = if options.with_flags {
        let mut e = Vec::with_capacity(total);
        let mut z = Vec::with_capacity(total);
        for (i, &w) in width.iter().enumerate() {
            let is_null = padded[i] && lists.iter().all(|l| l.nulls.as_ref().is_some_and(|b| b.is_null(i)));
            e.extend(std::iter::repeat_n(padded[i] && !is_null, w));
            z.extend(std::iter::repeat_n(is_null, w));
        }
        (Some(BooleanArray::from(e)), Some(BooleanArray::from(z)))
    } else {
        (None, None)
    };
    let mut values = Vec::with_capacity(lists.len());
    for l in lists {
        values.push(gather(l, &width)?);
    }
    Ok(Multi { parents: UInt32Array::from(parents), idx, values, empty, null })
}

/// The values of one list for the given per-parent output widths: a zero-copy slice when
/// the ranges are contiguous and need no padding, else one `take`.
fn gather(l: &Ranges, width: &[usize]) -> Result<ArrayRef, ExplodeError> {
    let n = l.lens.len();
    let contiguous =
        (0..n).all(|i| width[i] == l.lens[i]) && (1..n).all(|i| l.starts[i] == l.starts[i - 1] + l.lens[i - 1]);
    if contiguous {
        let start = l.starts.first().copied().unwrap_or(0);
        let len: usize = l.lens.iter().sum();
        return Ok(l.child.slice(start, len));
    }
    let total: usize = width.iter().sum();
    let mut indices = Vec::with_capacity(total);
    let mut valid = Vec::with_capacity(total);
    for ((&s, &len), &w) in l.starts.iter().zip(&l.lens).zip(width) {
        indices.extend((s..s + len).map(|v| v as u32));
        valid.extend(std::iter::repeat_n(true, len));
        indices.extend(std::iter::repeat_n(0u32, w - len));
        valid.extend(std::iter::repeat_n(false, w - len));
    }
    if l.child.len() > u32::MAX as usize {
        return Err(ExplodeError::TooLarge(l.child.len()));
    }
    let indices = UInt32Array::new(indices.into(), Some(NullBuffer::from(valid)));
    Ok(take(l.child.as_ref(), &indices, None)?)
}

/// Explodes several list columns of the same rows together: row j of a parent takes
/// element j of each list, shorter lists padded with NULL. Returns one values array per
/// input, in order, sharing `parents` and `idx`.
pub fn explode_zipped(
    arrays: &[&dyn Array],
    options: &ExplodeOptions,
) -> Result<(UInt32Array, Option<Int64Array>, Vec<ArrayRef>), ExplodeError> {
    let lists = arrays.iter().map(|a| ranges(*a)).collect::<Result<Vec<_>, _>>()?;
    let m = explode_ranges(&lists, options)?;
    Ok((m.parents, m.idx, m.values))
}

/// A struct column's fields as `name.field` columns.
pub fn unpack_struct(name: &str, array: &dyn Array) -> Option<Vec<(String, ArrayRef)>> {
    let s = array.as_struct_opt()?;
    let fields = match s.data_type() {
        DataType::Struct(f) => f.clone(),
        _ => return None,
    };
    Some(
        fields
            .iter()
            .zip(s.columns())
            .map(|(f, c)| {
                // A NULL struct row makes its fields NULL too.
                let nulls = NullBuffer::union(s.nulls(), c.nulls());
                let data = c.to_data().into_builder().nulls(nulls).build();
                let column = data.map(arrow::array::make_array).unwrap_or_else(|_| Arc::clone(c));
                (format!("{name}.{}", f.name()), column)
            })
            .collect(),
    )
}

/// Explodes `column` of `batch`: output batches carry every other column of the parent row
/// (via `take`), then `value_name` (or `key`/`value` for a map) and, when asked, `idx`.
/// Batches hold at most `target_rows` rows each.
pub fn explode_batch(
    batch: &RecordBatch,
    column: usize,
    value_name: &str,
    options: &ExplodeOptions,
    target_rows: usize,
) -> Result<Vec<RecordBatch>, ExplodeError> {
    let list = batch.column(column);
    let exploded = explode(list.as_ref(), options)?;
    let is_map = matches!(list.data_type(), DataType::Map(..));
    let mut fields: Vec<Field> = Vec::new();
    let parent_cols: Vec<usize> = (0..batch.num_columns()).filter(|&c| c != column).collect();
    for &c in &parent_cols {
        fields.push(batch.schema().field(c).clone());
    }
    let mut values: Vec<ArrayRef> = Vec::new();
    if is_map {
        if let Some((k, v)) = exploded.map_columns() {
            fields.push(Field::new("key", k.data_type().clone(), true));
            fields.push(Field::new("value", v.data_type().clone(), true));
            values.extend([k, v]);
        }
    } else {
        fields.push(Field::new(value_name, exploded.values.data_type().clone(), true));
        values.push(Arc::clone(&exploded.values));
    }
    if let Some(idx) = &exploded.idx {
        fields.push(Field::new("idx", DataType::Int64, true));
        values.push(Arc::new(idx.clone()));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    let total = exploded.parents.len();
    let step = target_rows.max(1);
    let mut out = Vec::with_capacity(total.div_ceil(step));
    let mut start = 0;
    while start < total {
        let len = step.min(total - start);
        let parents = exploded.parents.slice(start, len);
        let mut columns = Vec::with_capacity(schema.fields().len());
        for &c in &parent_cols {
            columns.push(take(batch.column(c).as_ref(), &parents, None)?);
        }
        columns.extend(values.iter().map(|v| v.slice(start, len)));
        out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
        start += len;
    }
    Ok(out)
}
