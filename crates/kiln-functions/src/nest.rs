//! The nest operator: `array_agg(value ORDER BY key, ...)` grouped, columnar.
//!
//! DataFusion 55 runs an ordered `array_agg` with a row accumulator per group that keeps
//! one `ScalarValue` per element and re-sorts in the final stage (about 2 KB of state per
//! group, 17x DuckDB on the example's `orders_nested`). Its own `GroupsAccumulator` covers
//! only the unordered case. Kiln installs an `array_agg` that is DataFusion's in every
//! respect (name, signature, types, state fields, the row accumulator used without GROUP
//! BY, DISTINCT) except that grouped aggregation, ordered or not, runs
//! [`NestAccumulator`]:
//!
//! - `update_batch` / `merge_batch` keep a reference to each input batch's value array
//!   and order-key arrays plus a `(group, row)` pair per row, nothing per element;
//! - `evaluate` / `state` bucket the pairs by group (a counting sort), sort each group's
//!   few entries by the order keys in Arrow's row format, and gather the values with
//!   `interleave` into one `ListArray`;
//! - `EmitTo::First(n)` (DataFusion's memory-pressure path) compacts what stays, so
//!   emitted batches are released; `size()` reports the retained arrays to the pool, and
//!   the final stage spills through DataFusion's sort-based spilling of the state.
//!
//! The state is DataFusion's: `[list<value>, list<struct<order keys>>]`, each list sorted,
//! so either accumulator can merge the other's. Name and arguments are unchanged, so
//! canonical plans and build ids do not move.
//!
//! Ties (equal order keys) are broken by the value itself (Arrow's row order), so a list
//! is the same whatever the partitioning, batch size or arrival order: DataFusion leaves
//! their order unspecified, which made a product's bytes depend on its parallelism. A
//! value type the row format cannot order (maps) keeps arrival order among ties.

use std::mem::{size_of, take};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, ListArray, StructArray, UInt32Array, new_empty_array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::compute::{SortOptions, interleave};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{Result, internal_err};
use datafusion::functions_aggregate::array_agg::ArrayAgg;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, ReversedUDAF, Signature,
};

/// Kiln's `array_agg` (module docs).
pub fn array_agg() -> AggregateUDF {
    AggregateUDF::new_from_impl(KilnArrayAgg::default())
}

/// DataFusion's `ArrayAgg` with a grouped, ordered accumulator.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub struct KilnArrayAgg {
    inner: ArrayAgg,
    /// The input arrives sorted by the ORDER BY (DataFusion's row accumulator uses it).
    pre_ordered: bool,
}

impl AggregateUDFImpl for KilnArrayAgg {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        self.inner.order_sensitivity()
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Some(Arc::new(Self { inner: ArrayAgg::default(), pre_ordered: beneficial_ordering })))
    }

    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        match Arc::new(ArrayAgg::default()).with_beneficial_ordering(self.pre_ordered)? {
            Some(inner) => inner.accumulator(acc_args),
            None => self.inner.accumulator(acc_args),
        }
    }

    /// Not reversible: the nest accumulator sorts by itself, so a reversed ordering of
    /// the input gains nothing, and one direction keeps tie-breaking one rule.
    fn reverse_expr(&self) -> ReversedUDAF {
        ReversedUDAF::NotSupported
    }

    fn groups_accumulator_supported(&self, args: AccumulatorArgs) -> bool {
        !args.is_distinct
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        let value = args.expr_fields[0].data_type().clone();
        let mut orderings = Vec::with_capacity(args.order_bys.len());
        for order in args.order_bys {
            let ty = order.expr.data_type(args.schema)?;
            orderings.push(Field::new(order.expr.to_string(), ty, true));
        }
        Ok(Box::new(NestAccumulator::new(
            value,
            args.order_bys.iter().map(|o| o.options).collect(),
            orderings.into(),
            args.ignore_nulls && args.expr_fields[0].is_nullable(),
        )))
    }

    fn supports_null_handling_clause(&self) -> bool {
        self.inner.supports_null_handling_clause()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// One retained input: the values, their order keys, and which group each row is in.
#[derive(Debug)]
struct Source {
    values: ArrayRef,
    keys: Vec<ArrayRef>,
    /// `(group, row)` for every row that is an element of a list.
    entries: Vec<(u32, u32)>,
}

impl Source {
    /// The memory this source keeps alive.
    fn size(&self) -> usize {
        std::iter::once(&self.values)
            .chain(&self.keys)
            .map(|a| a.to_data().get_slice_memory_size().unwrap_or_default())
            .sum::<usize>()
            + self.entries.capacity() * size_of::<(u32, u32)>()
    }
}

/// Grouped `array_agg [ORDER BY]` (module docs).
#[derive(Debug)]
pub struct NestAccumulator {
    value_type: DataType,
    options: Vec<SortOptions>,
    /// The order keys' fields, as DataFusion names them in the state.
    key_fields: Fields,
    ignore_nulls: bool,
    sources: Vec<Source>,
    groups: usize,
    /// What `sources` hold, kept as they change (`size()` runs once per batch).
    bytes: usize,
}

impl NestAccumulator {
    fn new(value_type: DataType, options: Vec<SortOptions>, key_fields: Fields, ignore_nulls: bool) -> Self {
        Self { value_type, options, key_fields, ignore_nulls, sources: Vec::new(), groups: 0, bytes: 0 }
    }

    fn push(&mut self, source: Source) {
        self.bytes += source.size();
        self.sources.push(source);
    }

    fn converter(&self) -> Result<RowConverter> {
        let fields = self.key_fields.iter().zip(&self.options);
        let sort = fields.map(|(f, o)| SortField::new_with_options(f.data_type().clone(), *o)).collect();
        Ok(RowConverter::new(sort)?)
    }

    /// The `(source, row)` of every element of groups `0..emit`, grouped by group and
    /// sorted within each, with the list offsets.
    fn arrange(&self, emit: usize) -> Result<Arranged> {
        let mut counts = vec![0u32; emit];
        for s in &self.sources {
            for &(g, _) in &s.entries {
                if let Some(c) = counts.get_mut(g as usize) {
                    *c += 1;
                }
            }
        }
        let mut offsets = Vec::with_capacity(emit + 1);
        offsets.push(0i32);
        let mut at = Vec::with_capacity(emit);
        let mut total = 0usize;
        for &c in &counts {
            at.push(total);
            total += c as usize;
            offsets.push(i32::try_from(total).map_err(|_| {
                datafusion::common::DataFusionError::Execution(
                    "array_agg: more than 2^31 elements in one output batch".into(),
                )
            })?);
        }
        let mut order = vec![(0usize, 0usize); total];
        for (i, s) in self.sources.iter().enumerate() {
            for &(g, r) in &s.entries {
                if let Some(p) = at.get_mut(g as usize) {
                    order[*p] = (i, r as usize);
                    *p += 1;
                }
            }
        }
        if !self.key_fields.is_empty() && total > 0 {
            self.sort_groups(&mut order, &offsets)?;
        }
        Ok((order, offsets))
    }

    /// Sorts each group's range of `order` by the order keys, ties by the value.
    fn sort_groups(&self, order: &mut [(usize, usize)], offsets: &[i32]) -> Result<()> {
        let converter = self.converter()?;
        let rows: Vec<Rows> =
            self.sources.iter().map(|s| converter.convert_columns(&s.keys)).collect::<Result<_, _>>()?;
        let mut ties: Vec<(usize, usize)> = Vec::new();
        for w in offsets.windows(2) {
            let group = &mut order[w[0] as usize..w[1] as usize];
            if group.len() < 2 {
                continue;
            }
            group.sort_by(|a, b| rows[a.0].row(a.1).cmp(&rows[b.0].row(b.1)));
            let mut start = 0;
            for i in 1..=group.len() {
                let (s, r) = group[start];
                if i == group.len() || rows[s].row(r) != rows[group[i].0].row(group[i].1) {
                    if i - start > 1 {
                        ties.push((w[0] as usize + start, i - start));
                    }
                    start = i;
                }
            }
        }
        if ties.is_empty() {
            return Ok(());
        }
        let values = SortField::new(self.value_type.clone());
        if !RowConverter::supports_fields(std::slice::from_ref(&values)) {
            return Ok(());
        }
        let sources: Vec<&dyn Array> = self.sources.iter().map(|s| s.values.as_ref()).collect();
        let tied: Vec<(usize, usize)> = ties.iter().flat_map(|&(at, n)| order[at..at + n].iter().copied()).collect();
        let gathered = interleave(&sources, &tied)?;
        let by_value = RowConverter::new(vec![values])?.convert_columns(&[gathered])?;
        let mut k = 0;
        for &(at, n) in &ties {
            let mut run: Vec<usize> = (k..k + n).collect();
            run.sort_by(|a, b| by_value.row(*a).cmp(&by_value.row(*b)));
            for (slot, &i) in order[at..at + n].iter_mut().zip(&run) {
                *slot = tied[i];
            }
            k += n;
        }
        Ok(())
    }

    /// Forgets groups `0..emit` and renumbers the rest from 0, keeping only arrays some
    /// remaining entry needs (DataFusion's unordered accumulator does the same).
    fn release(&mut self, emit: usize) -> Result<()> {
        if emit >= self.groups {
            self.sources = Vec::new();
            self.groups = 0;
            self.bytes = 0;
            return Ok(());
        }
        let emit32 = emit as u32;
        let mut kept = Vec::new();
        for mut s in take(&mut self.sources) {
            let left = s.entries.iter().filter(|(g, _)| *g >= emit32).count();
            if left == 0 {
                continue;
            }
            if left == s.entries.len() {
                s.entries.iter_mut().for_each(|(g, _)| *g -= emit32);
                kept.push(s);
                continue;
            }
            let mut entries = Vec::with_capacity(left);
            let mut rows = Vec::with_capacity(left);
            for &(g, r) in s.entries.iter().filter(|(g, _)| *g >= emit32) {
                entries.push((g - emit32, rows.len() as u32));
                rows.push(r);
            }
            let rows = UInt32Array::from(rows);
            let take_rows = |a: &ArrayRef| datafusion::arrow::compute::take(a.as_ref(), &rows, None);
            kept.push(Source {
                values: take_rows(&s.values)?,
                keys: s.keys.iter().map(take_rows).collect::<Result<_, _>>()?,
                entries,
            });
        }
        self.bytes = kept.iter().map(Source::size).sum();
        self.sources = kept;
        self.groups -= emit;
        Ok(())
    }

    fn emit_count(&self, emit_to: EmitTo) -> usize {
        match emit_to {
            EmitTo::All => self.groups,
            EmitTo::First(n) => n.min(self.groups),
        }
    }

    fn value_list(&self, order: &[(usize, usize)], offsets: Vec<i32>, nulls: Option<NullBuffer>) -> Result<ArrayRef> {
        let sources: Vec<&dyn Array> = self.sources.iter().map(|s| s.values.as_ref()).collect();
        let values = if order.is_empty() { new_empty_array(&self.value_type) } else { interleave(&sources, order)? };
        let field = Arc::new(Field::new_list_field(self.value_type.clone(), true));
        Ok(Arc::new(ListArray::try_new(field, OffsetBuffer::new(ScalarBuffer::from(offsets)), values, nulls)?))
    }

    fn key_list(&self, order: &[(usize, usize)], offsets: Vec<i32>) -> Result<ArrayRef> {
        let mut columns = Vec::with_capacity(self.key_fields.len());
        for (k, field) in self.key_fields.iter().enumerate() {
            let sources: Vec<&dyn Array> = self.sources.iter().map(|s| s.keys[k].as_ref()).collect();
            columns.push(if order.is_empty() {
                new_empty_array(field.data_type())
            } else {
                interleave(&sources, order)?
            });
        }
        let keys = StructArray::try_new(self.key_fields.clone(), columns, None)?;
        let field = Arc::new(Field::new_list_field(DataType::Struct(self.key_fields.clone()), true));
        Ok(Arc::new(ListArray::try_new(field, OffsetBuffer::new(ScalarBuffer::from(offsets)), Arc::new(keys), None)?))
    }
}

/// Where each element of the emitted lists comes from (`(source, row)`, in list order),
/// and the lists' offsets.
type Arranged = (Vec<(usize, usize)>, Vec<i32>);

/// An empty group's list is NULL (as DataFusion's `array_agg`).
fn empty_as_null(offsets: &[i32]) -> Option<NullBuffer> {
    let valid: Vec<bool> = offsets.windows(2).map(|w| w[1] > w[0]).collect();
    valid.iter().any(|v| !v).then(|| NullBuffer::from(valid))
}

impl GroupsAccumulator for NestAccumulator {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let Some((value, keys)) = values.split_first() else {
            return internal_err!("array_agg: no argument");
        };
        if keys.len() != self.key_fields.len() {
            return internal_err!("array_agg: {} order keys, expected {}", keys.len(), self.key_fields.len());
        }
        self.groups = self.groups.max(total_num_groups);
        let nulls = if self.ignore_nulls { value.logical_nulls() } else { None };
        let mut entries = Vec::with_capacity(group_indices.len());
        for (row, &group) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(row) || !f.value(row)) {
                continue;
            }
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                continue;
            }
            entries.push((group as u32, row as u32));
        }
        if !entries.is_empty() {
            self.push(Source { values: Arc::clone(value), keys: keys.to_vec(), entries });
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let emit = self.emit_count(emit_to);
        let (order, offsets) = self.arrange(emit)?;
        let nulls = empty_as_null(&offsets);
        let out = self.value_list(&order, offsets, nulls)?;
        self.release(emit)?;
        Ok(out)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let emit = self.emit_count(emit_to);
        let (order, offsets) = self.arrange(emit)?;
        let nulls = empty_as_null(&offsets);
        let mut out = vec![self.value_list(&order, offsets.clone(), nulls)?];
        if !self.key_fields.is_empty() {
            out.push(self.key_list(&order, offsets)?);
        }
        self.release(emit)?;
        Ok(out)
    }

    fn merge_batch(&mut self, values: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        let Some(lists) = values.first().and_then(|v| v.as_list_opt::<i32>()) else {
            return internal_err!("array_agg: the state is not a list");
        };
        let keys: Vec<ArrayRef> = match values.get(1) {
            None if self.key_fields.is_empty() => Vec::new(),
            Some(k) => {
                let Some(key_lists) = k.as_list_opt::<i32>() else {
                    return internal_err!("array_agg: the ordering state is not a list");
                };
                if lists.offsets() != key_lists.offsets() {
                    return internal_err!("array_agg: the state's values and order keys differ in length");
                }
                match key_lists.values().as_struct_opt() {
                    Some(s) => s.columns().to_vec(),
                    None => return internal_err!("array_agg: the ordering state is not a struct"),
                }
            }
            None => return internal_err!("array_agg: the state has no order keys"),
        };
        self.groups = self.groups.max(total_num_groups);
        let offsets = lists.offsets();
        // The state arrives as slices of one large emitted array: keep (and account for)
        // only the range of the values these lists cover, not the whole buffer.
        let (start, end) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
        let mut entries = Vec::new();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            for pos in offsets[row]..offsets[row + 1] {
                entries.push((group as u32, (pos as usize - start) as u32));
            }
        }
        if !entries.is_empty() {
            let keys = keys.iter().map(|k| k.slice(start, end - start)).collect();
            self.push(Source { values: lists.values().slice(start, end - start), keys, entries });
        }
        Ok(())
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let Some((value, keys)) = values.split_first() else {
            return internal_err!("array_agg: no argument");
        };
        let n = value.len();
        let mut valid: Vec<bool> = (0..n).map(|r| opt_filter.is_none_or(|f| f.is_valid(r) && f.value(r))).collect();
        if self.ignore_nulls
            && let Some(nulls) = value.logical_nulls()
        {
            valid.iter_mut().enumerate().for_each(|(r, v)| *v &= nulls.is_valid(r));
        }
        // A row that is no element is an empty list (NULL for the values): merging skips it.
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0i32);
        let mut rows = Vec::with_capacity(n);
        for (r, &v) in valid.iter().enumerate() {
            if v {
                rows.push(r as u32);
            }
            offsets.push(rows.len() as i32);
        }
        let rows = UInt32Array::from(rows);
        let take_rows = |a: &ArrayRef| datafusion::arrow::compute::take(a.as_ref(), &rows, None);
        let field = Arc::new(Field::new_list_field(self.value_type.clone(), true));
        let nulls = valid.iter().any(|v| !v).then(|| NullBuffer::from(valid.clone()));
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let mut out: Vec<ArrayRef> =
            vec![Arc::new(ListArray::try_new(field, offsets.clone(), take_rows(value)?, nulls)?)];
        if !self.key_fields.is_empty() {
            let columns = keys.iter().map(take_rows).collect::<Result<Vec<_>, _>>()?;
            let keys = StructArray::try_new(self.key_fields.clone(), columns, None)?;
            let field = Arc::new(Field::new_list_field(DataType::Struct(self.key_fields.clone()), true));
            out.push(Arc::new(ListArray::try_new(field, offsets, Arc::new(keys), None)?));
        }
        Ok(out)
    }

    fn size(&self) -> usize {
        self.bytes + self.sources.capacity() * size_of::<Source>()
    }
}
