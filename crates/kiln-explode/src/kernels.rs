//! The explode kernels.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, BooleanBufferBuilder, GenericByteArray,
    GenericListArray, Int64Array, OffsetSizeTrait, PrimitiveArray, RecordBatch, UInt32Array, downcast_primitive_array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::take;
use arrow::datatypes::{ArrowNativeType, ByteArrayType};
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

/// Per parent: how many output rows it yields, and whether that is one padding row.
struct Layout {
    width: Vec<usize>,
    padded: Vec<bool>,
    total: usize,
}

fn layout(lists: &[Ranges], options: &ExplodeOptions) -> Result<Layout, ExplodeError> {
    let n = lists.first().map_or(0, |l| l.lens.len());
    for l in lists {
        if l.lens.len() != n {
            return Err(ExplodeError::Lengths(n, l.lens.len()));
        }
    }
    // Output rows per parent: the longest list (zip), or one padding row if kept empty.
    let mut width: Vec<usize> = match lists {
        [one] => one.lens.clone(),
        _ => (0..n).map(|i| lists.iter().map(|l| l.lens[i]).max().unwrap_or(0)).collect(),
    };
    let mut padded = vec![false; n];
    if options.keep_empty {
        for (w, p) in width.iter_mut().zip(padded.iter_mut()) {
            if *w == 0 {
                *w = 1;
                *p = true;
            }
        }
    }
    let total: usize = width.iter().sum();
    if u32::try_from(total).is_err() || u32::try_from(n).is_err() {
        return Err(ExplodeError::TooLarge(total));
    }
    Ok(Layout { width, padded, total })
}

fn parents_of(l: &Layout) -> UInt32Array {
    let mut parents = Vec::with_capacity(l.total);
    for (i, &w) in l.width.iter().enumerate() {
        parents.extend(std::iter::repeat_n(i as u32, w));
    }
    UInt32Array::from(parents)
}

/// Element indices from `base`; the first parent's start `skip` elements in. Written in
/// fixed blocks like [`repeat_primitive`]'s.
fn idx_of(l: &Layout, base: i64, skip: usize) -> Int64Array {
    const BLOCK: usize = 16;
    const STEPS: [i64; BLOCK] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut values = vec![0i64; l.total + BLOCK];
    let mut pos = 0;
    let mut from = base + skip as i64;
    for &w in &l.width {
        if w <= BLOCK {
            for (out, step) in values[pos..pos + BLOCK].iter_mut().zip(STEPS) {
                *out = from + step;
            }
        } else {
            for (out, i) in values[pos..pos + w].iter_mut().zip(from..) {
                *out = i;
            }
        }
        pos += w;
        from = base;
    }
    values.truncate(l.total);
    let nulls = l.padded.iter().any(|p| *p).then(|| {
        let mut valid = BooleanBufferBuilder::new(l.total);
        for (&w, &p) in l.width.iter().zip(&l.padded) {
            valid.append_n(w, !p);
        }
        NullBuffer::new(valid.finish())
    });
    Int64Array::new(values.into(), nulls)
}

fn flags_of(l: &Layout, lists: &[Ranges]) -> (BooleanArray, BooleanArray) {
    let mut e = BooleanBufferBuilder::new(l.total);
    let mut z = BooleanBufferBuilder::new(l.total);
    for (i, (&w, &p)) in l.width.iter().zip(&l.padded).enumerate() {
        let is_null = p && lists.iter().all(|r| r.nulls.as_ref().is_some_and(|b| b.is_null(i)));
        e.append_n(w, p && !is_null);
        z.append_n(w, is_null);
    }
    (BooleanArray::new(e.finish(), None), BooleanArray::new(z.finish(), None))
}

fn explode_ranges(lists: &[Ranges], options: &ExplodeOptions) -> Result<Multi, ExplodeError> {
    let l = layout(lists, options)?;
    let idx = options.with_idx.then(|| idx_of(&l, options.idx_base, 0));
    let (empty, null) = if options.with_flags {
        let (e, z) = flags_of(&l, lists);
        (Some(e), Some(z))
    } else {
        (None, None)
    };
    let values = lists.iter().map(|r| gather(r, &l.width)).collect::<Result<Vec<_>, _>>()?;
    Ok(Multi { parents: parents_of(&l), idx, values, empty, null })
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

/// Explodes `lists` (zipped, as [`explode_zipped`]) and carries the `carry` columns of the
/// same rows along: returns output chunks of at most `target_rows` rows, each holding the
/// carried columns, then one values array per list (a map's `entries` struct), then the
/// idx when asked.
///
/// Carried columns are *repeated* per parent ([`repeat`]): sequential writes with no index
/// array, instead of a gather. The whole input's expansion is built once and chunks are
/// zero-copy slices of it, so memory is bounded by one input batch's expansion.
pub fn explode_columns(
    carry: &[ArrayRef],
    lists: &[&dyn Array],
    options: &ExplodeOptions,
    target_rows: usize,
) -> Result<Vec<Vec<ArrayRef>>, ExplodeError> {
    let ranges = lists.iter().map(|a| ranges(*a)).collect::<Result<Vec<_>, _>>()?;
    if let Some(c) = carry.iter().find(|c| ranges.first().is_some_and(|r| r.lens.len() != c.len())) {
        return Err(ExplodeError::Lengths(ranges[0].lens.len(), c.len()));
    }
    let l = layout(&ranges, options)?;
    let values = ranges.iter().map(|r| gather(r, &l.width)).collect::<Result<Vec<_>, _>>()?;
    let mut ends = Vec::with_capacity(l.width.len());
    let mut end = 0;
    for &w in &l.width {
        end += w;
        ends.push(end);
    }
    // Chunk by chunk, so each chunk's buffers are small, cache-resident and recycled by
    // the allocator (one allocation of the whole expansion costs page faults instead).
    let step = target_rows.max(1);
    let mut out = Vec::with_capacity(l.total.div_ceil(step));
    let mut start = 0;
    while start < l.total {
        let len = step.min(l.total - start);
        let (first, skip, sub) = chunk_layout(&l, &ends, start, len);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(carry.len() + values.len() + 1);
        for c in carry {
            columns.push(repeat_layout(c.slice(first, sub.width.len()).as_ref(), &sub)?);
        }
        columns.extend(values.iter().map(|v| v.slice(start, len)));
        if options.with_idx {
            columns.push(Arc::new(idx_of(&sub, options.idx_base, skip)));
        }
        out.push(columns);
        start += len;
    }
    Ok(out)
}

/// The parents that output rows `start..start + len` come from: the first one's index,
/// how many of its rows precede the chunk, and the chunk's own layout.
fn chunk_layout(l: &Layout, ends: &[usize], start: usize, len: usize) -> (usize, usize, Layout) {
    let end = start + len;
    let first = ends.partition_point(|&e| e <= start);
    let mut width = Vec::new();
    let mut padded = Vec::new();
    let mut p = first;
    while p < ends.len() {
        let begin = ends[p] - l.width[p];
        width.push(ends[p].min(end) - begin.max(start));
        padded.push(l.padded.get(p).copied().unwrap_or(false));
        if ends[p] >= end {
            break;
        }
        p += 1;
    }
    let skip = start - (ends[first] - l.width[first]);
    (first, skip, Layout { width, padded, total: len })
}

/// Repeats row i of `array` `widths[i]` times. Primitive, boolean, string and binary
/// columns are written sequentially; other types go through one `take` (for view types
/// that is the fastest safe way: a gather of 16-byte views, where building a new view
/// array would re-validate every view).
pub fn repeat(array: &dyn Array, widths: &[usize]) -> Result<ArrayRef, ExplodeError> {
    if widths.len() != array.len() {
        return Err(ExplodeError::Lengths(array.len(), widths.len()));
    }
    let total: usize = widths.iter().sum();
    let l = Layout { width: widths.to_vec(), padded: Vec::new(), total };
    repeat_layout(array, &l)
}

fn repeat_nulls(nulls: Option<&NullBuffer>, width: &[usize], total: usize) -> Option<NullBuffer> {
    let nulls = nulls.filter(|n| n.null_count() > 0)?;
    let mut out = BooleanBufferBuilder::new(total);
    for (i, &w) in width.iter().enumerate() {
        out.append_n(w, nulls.is_valid(i));
    }
    Some(NullBuffer::new(out.finish()))
}

fn repeat_primitive<T: ArrowPrimitiveType>(a: &PrimitiveArray<T>, l: &Layout) -> ArrayRef {
    // Most parents repeat a few times: each is written as one fixed-size block (a few
    // vector stores, no length-dependent branch) and the next parent starts `w` further,
    // overwriting the overhang; the slack at the end is cut off.
    const BLOCK: usize = 16;
    let mut values: Vec<T::Native> = vec![T::Native::default(); l.total + BLOCK];
    let mut pos = 0;
    for (v, &w) in a.values().iter().zip(&l.width) {
        if w <= BLOCK {
            values[pos..pos + BLOCK].fill(*v);
        } else {
            values[pos..pos + w].fill(*v);
        }
        pos += w;
    }
    values.truncate(l.total);
    let nulls = repeat_nulls(a.nulls(), &l.width, l.total);
    Arc::new(PrimitiveArray::<T>::new(values.into(), nulls).with_data_type(a.data_type().clone()))
}

fn repeat_bytes<T: ByteArrayType>(a: &GenericByteArray<T>, l: &Layout) -> Result<ArrayRef, ExplodeError> {
    let offsets = a.value_offsets();
    let data = a.value_data();
    let mut bytes = 0usize;
    for (win, &w) in offsets.windows(2).zip(&l.width) {
        bytes += (win[1] - win[0]).as_usize() * w;
    }
    if T::Offset::from_usize(bytes).is_none() {
        return Err(ExplodeError::TooLarge(bytes));
    }
    // Short values (the common case) are appended as one fixed 16-byte store each, which
    // compiles to a single vector move instead of a `memcpy` call, and the overhang is cut
    // off again (a length change only).
    const SHORT: usize = 16;
    let mut out_offsets: Vec<T::Offset> = Vec::with_capacity(l.total + 1);
    let mut out_data: Vec<u8> = Vec::with_capacity(bytes + SHORT);
    out_offsets.push(T::Offset::usize_as(0));
    for (win, &w) in offsets.windows(2).zip(&l.width) {
        let (start, end) = (win[0].as_usize(), win[1].as_usize());
        let len = end - start;
        if len <= SHORT {
            let mut short = [0u8; SHORT];
            short[..len].copy_from_slice(&data[start..end]);
            for _ in 0..w {
                let pos = out_data.len();
                out_data.extend_from_slice(&short);
                out_data.truncate(pos + len);
                out_offsets.push(T::Offset::usize_as(pos + len));
            }
        } else {
            for _ in 0..w {
                out_data.extend_from_slice(&data[start..end]);
                out_offsets.push(T::Offset::usize_as(out_data.len()));
            }
        }
    }
    let nulls = repeat_nulls(a.nulls(), &l.width, l.total);
    // Every value is a copy of a valid value, so the offsets are valid; `try_new` still
    // checks them (and UTF-8 for strings): no unsafe.
    let offsets = OffsetBuffer::new(ScalarBuffer::from(out_offsets));
    Ok(Arc::new(GenericByteArray::<T>::try_new(offsets, Buffer::from_vec(out_data), nulls)?))
}

fn repeat_layout(array: &dyn Array, l: &Layout) -> Result<ArrayRef, ExplodeError> {
    downcast_primitive_array!(
        array => Ok(repeat_primitive(array, l)),
        DataType::Utf8 => repeat_bytes(array.as_string::<i32>(), l),
        DataType::LargeUtf8 => repeat_bytes(array.as_string::<i64>(), l),
        DataType::Binary => repeat_bytes(array.as_binary::<i32>(), l),
        DataType::LargeBinary => repeat_bytes(array.as_binary::<i64>(), l),
        DataType::Boolean => {
            let b = array.as_boolean();
            let mut values = BooleanBufferBuilder::new(l.total);
            for (i, &w) in l.width.iter().enumerate() {
                values.append_n(w, b.value(i));
            }
            Ok(Arc::new(BooleanArray::new(values.finish(), repeat_nulls(b.nulls(), &l.width, l.total))))
        }
        _ => Ok(take(array, &parents_of(l), None)?)
    )
}

/// Explodes `column` of `batch`: output batches carry every other column of the parent row
/// (repeated, see [`explode_columns`]), then `value_name` (or `key`/`value` for a map)
/// and, when asked, `idx`. Batches hold at most `target_rows` rows each.
pub fn explode_batch(
    batch: &RecordBatch,
    column: usize,
    value_name: &str,
    options: &ExplodeOptions,
    target_rows: usize,
) -> Result<Vec<RecordBatch>, ExplodeError> {
    let list = batch.column(column);
    let is_map = matches!(list.data_type(), DataType::Map(..));
    let parent_cols: Vec<usize> = (0..batch.num_columns()).filter(|&c| c != column).collect();
    let carry: Vec<ArrayRef> = parent_cols.iter().map(|&c| Arc::clone(batch.column(c))).collect();
    let chunks = explode_columns(&carry, &[list.as_ref()], options, target_rows)?;
    let mut fields: Vec<Field> = parent_cols.iter().map(|&c| batch.schema().field(c).clone()).collect();
    let value_type = match list.data_type() {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::Map(f, _) => {
            f.data_type().clone()
        }
        other => return Err(ExplodeError::NotAList(other.clone())),
    };
    if is_map {
        let DataType::Struct(kv) = &value_type else { return Err(ExplodeError::NotAList(list.data_type().clone())) };
        for (name, f) in ["key", "value"].iter().zip(kv.iter()) {
            fields.push(Field::new(*name, f.data_type().clone(), true));
        }
    } else {
        fields.push(Field::new(value_name, value_type, true));
    }
    if options.with_idx {
        fields.push(Field::new("idx", DataType::Int64, true));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    chunks
        .into_iter()
        .map(|mut columns| {
            if is_map {
                let entries = columns.remove(carry.len());
                let s = entries.as_struct();
                columns.insert(carry.len(), Arc::clone(s.column(1)));
                columns.insert(carry.len(), Arc::clone(s.column(0)));
            }
            Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
        })
        .collect()
}
