//! Incremental products by time interval (`incremental = 'by_time'`).
//!
//! ```sql
//! CREATE PRODUCT daily_revenue PARTITIONED BY (order_day)
//! WITH (incremental = 'by_time', time_column = 'order_day', grain = 'day',
//!       start = '1992-01-01', lookback = '2 days', batch_size = '30 days')
//! AS SELECT o_orderdate AS order_day, sum(o_totalprice) AS revenue FROM orders GROUP BY 1;
//! ```
//!
//! The time column is a `DATE` partition column, so an interval's rows are whole Delta
//! partitions and replacing intervals is one commit that removes their files and adds the
//! new ones. A build computes a set of intervals ([`decide`]); each batch of them runs the
//! product's plan narrowed to its days ([`batch_plan`]):
//!
//! - **Derived filter.** [`derive`] follows the time column down the optimized plan (through
//!   projections, filters, sorts, joins, aliases, explodes and aggregates that group by it)
//!   to the one scan it comes from, accepting only monotone steps (the column itself, casts
//!   between dates and timestamps, `date_trunc`, `date_bin`, `+`/`- INTERVAL`). The batch's
//!   days are mapped back through those steps to a range of the source column, with a
//!   margin of one step's unit, and filtered on the scan, where Parquet pruning and
//!   partition pruning use it. The margin only reads more rows; the output filter below
//!   makes the result exact.
//! - **Written filter.** Where the walk stops (a window function, LIMIT, UNION, the source
//!   read twice), the user narrows the scan with `kiln_interval_start()` and
//!   `kiln_interval_end()` (the batch's first day and the day after its last), replaced by
//!   literals in each batch's plan. Without either, each batch scans everything.
//! - **Output filter.** Every batch keeps only rows whose time column lies in its days:
//!   an incremental product holds the rows of its intervals, and a row whose time column
//!   is NULL belongs to none (the build fails on it rather than dropping it).
//!
//! A product's rows for an interval therefore equal a full rebuild's when its query
//! computes each interval from that interval's rows (what the derived filter checks; a
//! written filter is the user's promise).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Operator, binary_expr, lit};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use kiln_artifact::intervals::{
    DaySet, ForwardOnly, Grain, InputFile, IntervalReason, IntervalRun, IntervalState, format_day, parse_day,
};

use crate::dialect::ProductDef;
use crate::error::{ControlError, Location};

/// The options of an incremental product.
pub const OPTIONS: [&str; 8] =
    ["incremental", "time_column", "grain", "start", "lookback", "batch_size", "on_change", "unique_key"];

/// The options of `incremental = 'by_time'` only.
const BY_TIME: [&str; 6] = ["time_column", "grain", "start", "lookback", "batch_size", "on_change"];

/// The names of the functions a written interval filter uses.
pub const INTERVAL_START: &str = "kiln_interval_start";
pub const INTERVAL_END: &str = "kiln_interval_end";

/// A count of intervals, or a span of days (`'3'`, `'2 days'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Intervals(u32),
    Days(u32),
}

/// What a query change does to the intervals already computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnChange {
    /// Recompute every interval (the default): the product equals a full rebuild.
    #[default]
    Rebuild,
    /// Keep them; the new query computes new (and recomputed) intervals only.
    ForwardOnly,
}

/// A product's `incremental = 'by_time'` program.
#[derive(Debug, Clone)]
pub struct Incremental {
    pub column: String,
    /// Its position among the product's partition columns.
    pub partition: usize,
    pub grain: Grain,
    /// The first day of the first interval.
    pub start: i32,
    pub lookback: Span,
    /// `None`: all intervals of a build in one commit.
    pub batch: Option<Span>,
    pub on_change: OnChange,
    pub filter: IntervalFilter,
    pub at: Location,
}

/// How a batch's scan is narrowed to its days.
#[derive(Debug, Clone)]
pub enum IntervalFilter {
    /// From the time column's lineage: `forward` computes the time column from
    /// `table.column` (the only column it references).
    Derived { table: String, column: String, forward: Expr, source_type: DataType },
    /// The query calls `kiln_interval_start()` / `kiln_interval_end()`.
    Written,
    /// Neither: each batch reads everything (why the lineage walk stopped).
    Unfiltered { why: String },
}

impl IntervalFilter {
    /// `kiln plan`'s line for it.
    pub fn describe(&self) -> String {
        match self {
            IntervalFilter::Derived { table, column, .. } => format!("derived from {table}.{column}"),
            IntervalFilter::Written => format!("written ({INTERVAL_START}/{INTERVAL_END})"),
            IntervalFilter::Unfiltered { why } => format!(
                "none: {why}; every batch reads all rows (narrow it with WHERE ... >= {INTERVAL_START}() AND ... < {INTERVAL_END}())"
            ),
        }
    }

    /// The input whose files say which intervals changed.
    pub fn input(&self) -> Option<&str> {
        match self {
            IntervalFilter::Derived { table, .. } => Some(table),
            _ => None,
        }
    }
}

/// Whether a product is incremental (its options name `incremental`).
pub fn is_incremental(def: &ProductDef) -> bool {
    def.options.get("incremental").is_some()
}

/// The options of an incremental product before planning: every error at its option.
pub(crate) fn parse(def: &ProductDef) -> Result<Option<Incremental>, ControlError> {
    let option = |key: &str| def.options.get(key);
    let bad = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
    let Some((mode, mode_at)) = option("incremental") else {
        if let Some((_, at)) = BY_TIME.iter().find_map(|k| option(k)) {
            return Err(bad(at, "an interval option without incremental = 'by_time'".into()));
        }
        if let Some((_, at)) = option("unique_key") {
            return Err(bad(at, "unique_key without incremental = 'by_unique_key'".into()));
        }
        return Ok(None);
    };
    match mode {
        "by_time" => {
            if let Some((_, at)) = option("unique_key") {
                return Err(bad(at, "unique_key is an option of incremental = 'by_unique_key', not 'by_time'".into()));
            }
        }
        "by_unique_key" => {
            if let Some((key, at)) = BY_TIME.iter().find_map(|k| option(k).map(|o| (k, o.1))) {
                return Err(bad(at, format!("{key} is an option of incremental = 'by_time', not 'by_unique_key'")));
            }
            return Ok(None);
        }
        other => return Err(bad(mode_at, format!("incremental = '{other}': expected 'by_time' or 'by_unique_key'"))),
    }
    let Some((column, column_at)) = option("time_column") else {
        return Err(bad(mode_at, "incremental = 'by_time' needs time_column = '<a DATE output column>'".into()));
    };
    let column = column.to_owned();
    let Some(partition) = def.partition_by.iter().position(|c| *c == column) else {
        return Err(bad(
            column_at,
            format!(
                "time_column `{column}` must be a partition column: intervals are replaced as partitions (PARTITIONED BY ({column}))"
            ),
        ));
    };
    let grain = match option("grain") {
        None => Grain::Day,
        Some((g, at)) => Grain::parse(g).ok_or_else(|| {
            let hint = if matches!(g, "hour" | "minute" | "second") {
                format!("; a DATE time column holds whole days, so the finest grain is 'day' (`{column}` is a DATE)")
            } else {
                String::new()
            };
            bad(at, format!("grain = '{g}': expected 'day', 'week', 'month', 'quarter' or 'year'{hint}"))
        })?,
    };
    let Some((start_text, start_at)) = option("start") else {
        return Err(bad(mode_at, "incremental = 'by_time' needs start = 'YYYY-MM-DD' (its first interval)".into()));
    };
    let start = parse_day(start_text)
        .ok_or_else(|| bad(start_at, format!("start = '{start_text}' is not a date (YYYY-MM-DD)")))?;
    if !grain.aligned(start) {
        return Err(bad(
            start_at,
            format!(
                "start = '{start_text}' is not the first day of a {grain} (that {grain} starts on {})",
                format_day(grain.floor(start))
            ),
        ));
    }
    let span = |key: &str, zero: bool| -> Result<Option<Span>, ControlError> {
        let Some((v, at)) = option(key) else { return Ok(None) };
        if let Ok(n) = v.trim().parse::<u32>() {
            return if n == 0 && !zero {
                Err(bad(at, format!("{key} = '{v}' must be positive")))
            } else {
                Ok(Some(Span::Intervals(n)))
            };
        }
        let ms = crate::units::parse_duration_ms(v).filter(|ms| *ms >= 0);
        match ms {
            Some(ms) if ms % 86_400_000 == 0 && (zero || ms > 0) => Ok(Some(Span::Days((ms / 86_400_000) as u32))),
            _ => Err(bad(at, format!("{key} = '{v}': expected a number of intervals ('3') or of days ('30 days')"))),
        }
    };
    let lookback = span("lookback", true)?.unwrap_or(Span::Intervals(0));
    let batch = span("batch_size", false)?;
    let on_change = match option("on_change") {
        None | Some(("rebuild", _)) => OnChange::Rebuild,
        Some(("forward_only", _)) => OnChange::ForwardOnly,
        Some((v, at)) => return Err(bad(at, format!("on_change = '{v}': expected 'rebuild' or 'forward_only'"))),
    };
    Ok(Some(Incremental {
        column,
        partition,
        grain,
        start,
        lookback,
        batch,
        on_change,
        filter: IntervalFilter::Unfiltered { why: "not planned yet".into() },
        at: column_at.clone(),
    }))
}

/// A product's `incremental = 'by_unique_key'` program: each build merges the rows its
/// query computes from the new files of its one file source into the committed rows,
/// replacing those with the same key and inserting the others (the engine's `merge`).
#[derive(Debug, Clone)]
pub struct MergeKey {
    pub columns: Vec<String>,
    pub at: Location,
}

impl MergeKey {
    /// What enters the product's identity (its `schema_fp` layout lines).
    pub fn identity_line(&self) -> String {
        format!("incremental by_unique_key {}\n", self.columns.join(","))
    }
}

/// The key of a `by_unique_key` product, checked against its output `schema`.
pub(crate) fn parse_key(def: &ProductDef, schema: &Schema) -> Result<Option<MergeKey>, ControlError> {
    let Some(("by_unique_key", mode_at)) = def.options.get("incremental") else { return Ok(None) };
    let bad = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
    let Some((text, at)) = def.options.get("unique_key") else {
        return Err(bad(mode_at, "incremental = 'by_unique_key' needs unique_key = '<column>, ...'".into()));
    };
    let mut columns: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(bad(at, format!("unique_key = '{text}': expected output columns separated by commas")));
        }
        let Ok(field) = schema.field_with_name(name) else {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(bad(
                at,
                format!("unique_key `{name}` is not an output column (they are {})", names.join(", ")),
            ));
        };
        if field.data_type().is_nested() {
            return Err(bad(
                at,
                format!("unique_key `{name}` has type {}; a key is made of scalar columns", field.data_type()),
            ));
        }
        if columns.iter().any(|c| c == name) {
            return Err(bad(at, format!("unique_key names `{name}` twice")));
        }
        columns.push(name.to_owned());
    }
    Ok(Some(MergeKey { columns, at: at.clone() }))
}

impl Incremental {
    /// What enters the product's identity (its `schema_fp` layout lines): what the
    /// product holds depends on the column, the grain and the start; lookback, batch size
    /// and on_change only say how it is computed.
    pub fn identity_line(&self) -> String {
        format!("incremental by_time {} {} {}\n", self.column, self.grain, format_day(self.start))
    }

    /// Every interval from the start on (to 9999-01-01): what a unit test computes.
    pub fn whole(&self) -> DaySet {
        DaySet::range(self.start, parse_day("9999-01-01").unwrap_or(i32::MAX / 2).max(self.start))
    }

    /// The last intervals a build recomputes, of `[from, to)`.
    fn lookback_days(&self, from: i32, to: i32) -> DaySet {
        let first = match self.lookback {
            Span::Intervals(0) | Span::Days(0) => return DaySet::new(),
            Span::Intervals(n) => {
                let mut d = to;
                for _ in 0..n {
                    if d <= from {
                        break;
                    }
                    d = self.grain.floor(d - 1);
                }
                d
            }
            Span::Days(n) => self.grain.floor((to - n as i32).max(from)),
        };
        DaySet::range(first.max(from), to)
    }

    /// The batches of `days` (aligned), in order: at most `batch_size` intervals (or
    /// intervals within that many days) each.
    pub fn batches(&self, days: &DaySet) -> Vec<DaySet> {
        let mut out = Vec::new();
        let mut current = DaySet::new();
        let (mut count, mut first) = (0u32, None::<i32>);
        for &(a, b) in days.ranges() {
            for s in self.grain.starts(a, b) {
                let e = self.grain.next(s);
                let full = match self.batch {
                    None => false,
                    Some(Span::Intervals(n)) => count >= n,
                    Some(Span::Days(n)) => first.is_some_and(|f| e - f > n as i32),
                };
                if full && !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                    (count, first) = (0, None);
                }
                current.insert(s, e);
                count += 1;
                first.get_or_insert(s);
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }
}

/// Follows the time column of a product's optimized `plan` to the scan it comes from
/// (see the module docs); `Written` when the query calls the interval functions.
pub fn derive(plan: &LogicalPlan, column: &str) -> IntervalFilter {
    if calls_interval_functions(plan) {
        return IntervalFilter::Written;
    }
    match walk(plan, column) {
        Ok(filter) => filter,
        Err(why) => IntervalFilter::Unfiltered { why },
    }
}

fn calls_interval_functions(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && matches!(f.name(), INTERVAL_START | INTERVAL_END)
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// The walk of [`derive`]: `Err` says where it stopped.
fn walk(plan: &LogicalPlan, column: &str) -> Result<IntervalFilter, String> {
    let root = plan.schema();
    let index = root
        .fields()
        .iter()
        .position(|f| f.name() == column)
        .ok_or_else(|| format!("`{column}` is not an output column"))?;
    let (qualifier, _) = root.qualified_field(index);
    let mut col = Column::new(qualifier.cloned(), column);
    // The time column as an expression of `col` (the column it is at in the current node).
    let mut forward = Expr::Column(col.clone());
    let mut node = plan;
    loop {
        match node {
            LogicalPlan::Projection(p) => {
                let i = p.schema.index_of_column(&col).map_err(|_| format!("`{col}` is lost in a projection"))?;
                let expr = p.expr[i].clone().unalias_nested().data;
                col = single_column(&expr, &col)?;
                forward = substitute(
                    forward,
                    &Column::new(p.schema.qualified_field(i).0.cloned(), p.schema.field(i).name()),
                    &expr,
                );
                node = &p.input;
            }
            LogicalPlan::Aggregate(a) => {
                let i = a.schema.index_of_column(&col).map_err(|_| format!("`{col}` is lost in an aggregate"))?;
                let Some(group) = a.group_expr.get(i) else {
                    return Err(format!("`{col}` is an aggregate's result, not one of its GROUP BY keys"));
                };
                if a.group_expr.iter().any(|g| matches!(g, Expr::GroupingSet(_))) {
                    return Err("GROUPING SETS / ROLLUP / CUBE".into());
                }
                let expr = group.clone().unalias_nested().data;
                let out = Column::new(a.schema.qualified_field(i).0.cloned(), a.schema.field(i).name());
                col = single_column(&expr, &col)?;
                forward = substitute(forward, &out, &expr);
                node = &a.input;
            }
            LogicalPlan::SubqueryAlias(s) => {
                let i = s.schema.index_of_column(&col).map_err(|_| format!("`{col}` is lost in an alias"))?;
                let (q, f) = s.input.schema().qualified_field(i);
                let inner = Column::new(q.cloned(), f.name());
                forward = substitute(forward, &col, &Expr::Column(inner.clone()));
                col = inner;
                node = &s.input;
            }
            LogicalPlan::Filter(f) => node = &f.input,
            LogicalPlan::Sort(s) if s.fetch.is_none() => node = &s.input,
            LogicalPlan::Repartition(r) => node = &r.input,
            LogicalPlan::Distinct(datafusion::logical_expr::Distinct::All(input)) => node = input,
            LogicalPlan::Join(j) => {
                if j.left.schema().has_column(&col) {
                    node = &j.left;
                } else if j.right.schema().has_column(&col) {
                    node = &j.right;
                } else {
                    return Err(format!("`{col}` is not found below a join"));
                }
            }
            LogicalPlan::Extension(e) if e.node.name() == "Explode" => {
                let inputs = e.node.inputs();
                match inputs.first() {
                    Some(input) if input.schema().has_column(&col) => node = input,
                    _ => return Err(format!("`{col}` comes from an UNNEST")),
                }
            }
            LogicalPlan::TableScan(scan) => {
                let table = scan.table_name.table().to_owned();
                if scans_of(plan, &table) > 1 {
                    return Err(format!("`{table}` is read more than once"));
                }
                let schema = scan.projected_schema.as_ref();
                let source_type = schema
                    .field_with_name(col.relation.as_ref(), &col.name)
                    .map_err(|_| format!("`{col}` is not a column of `{table}`"))?
                    .data_type()
                    .clone();
                if !is_time(&source_type) {
                    return Err(format!("`{table}.{}` is a {source_type}, not a date or timestamp", col.name));
                }
                monotone(&forward, schema)?;
                return Ok(IntervalFilter::Derived { table, column: col.name.clone(), forward, source_type });
            }
            LogicalPlan::Window(_) => return Err("a window function reads rows of other intervals".into()),
            LogicalPlan::Limit(_) | LogicalPlan::Sort(_) => {
                return Err("LIMIT keeps rows by their rank among all intervals".into());
            }
            LogicalPlan::Union(_) => return Err("a UNION: the time column comes from several inputs".into()),
            other => return Err(format!("the time column passes a {} node", other.display())),
        }
    }
}

/// The one column `expr` reads.
fn single_column(expr: &Expr, at: &Column) -> Result<Column, String> {
    let refs = expr.column_refs();
    let mut refs = refs.into_iter();
    match (refs.next(), refs.next()) {
        (Some(c), None) => Ok(c.clone()),
        (None, _) => Err(format!("`{at}` is a constant")),
        (Some(_), Some(_)) => Err(format!("`{at}` is computed from several columns ({expr})")),
    }
}

fn substitute(forward: Expr, column: &Column, with: &Expr) -> Expr {
    forward
        .transform(|e| match &e {
            Expr::Column(c) if c == column || (c.relation.is_none() && c.name == column.name) => {
                Ok(Transformed::yes(with.clone()))
            }
            _ => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| with.clone())
}

fn scans_of(plan: &LogicalPlan, table: &str) -> usize {
    let mut n = 0;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(s) = node
            && s.table_name.table() == table
        {
            n += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    n
}

fn is_time(t: &DataType) -> bool {
    matches!(t, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
}

/// Checks that `forward` is built of monotone steps only (see the module docs).
fn monotone(forward: &Expr, schema: &DFSchema) -> Result<(), String> {
    match forward {
        Expr::Column(_) => Ok(()),
        Expr::Alias(a) => monotone(&a.expr, schema),
        Expr::Cast(c) => {
            let from = c.expr.get_type(schema).map_err(|e| e.strip_backtrace())?;
            if !is_time(&from) || !is_time(c.field.data_type()) {
                return Err(format!("the time column is a cast from {from} to {}", c.field.data_type()));
            }
            monotone(&c.expr, schema)
        }
        Expr::TryCast(c) => {
            let from = c.expr.get_type(schema).map_err(|e| e.strip_backtrace())?;
            if !is_time(&from) || !is_time(c.field.data_type()) {
                return Err(format!("the time column is a cast from {from} to {}", c.field.data_type()));
            }
            monotone(&c.expr, schema)
        }
        Expr::ScalarFunction(f) => match (f.name(), f.args.as_slice()) {
            ("date_trunc", [Expr::Literal(..), x]) => monotone(x, schema),
            ("date_bin", [Expr::Literal(..), x, ..]) => monotone(x, schema),
            (name, _) => Err(format!("the time column is computed by {name}(), which Kiln cannot invert")),
        },
        Expr::BinaryExpr(b) => match (&*b.left, b.op, &*b.right) {
            (x, Operator::Plus | Operator::Minus, Expr::Literal(v, _)) if is_interval(v) => monotone(x, schema),
            (Expr::Literal(v, _), Operator::Plus, x) if is_interval(v) => monotone(x, schema),
            _ => Err(format!("the time column is computed by `{forward}`, which Kiln cannot invert")),
        },
        other => Err(format!("the time column is computed by `{other}`, which Kiln cannot invert")),
    }
}

fn is_interval(v: &ScalarValue) -> bool {
    matches!(
        v,
        ScalarValue::IntervalDayTime(Some(_))
            | ScalarValue::IntervalMonthDayNano(Some(_))
            | ScalarValue::IntervalYearMonth(Some(_))
    )
}

/// Bounds `[lo, hi)` of the source column that hold every row whose time column lies in
/// `[lo, hi)` of `forward`'s output (a superset: see the module docs), as expressions the
/// optimizer folds into literals.
fn inverse(forward: &Expr, lo: Expr, hi: Expr, schema: &DFSchema) -> Option<(Expr, Expr)> {
    let day = lit(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 1, 0))));
    match forward {
        Expr::Column(_) => Some((lo, hi)),
        Expr::Alias(a) => inverse(&a.expr, lo, hi, schema),
        Expr::Cast(datafusion::logical_expr::Cast { expr, .. })
        | Expr::TryCast(datafusion::logical_expr::TryCast { expr, .. }) => {
            let inner = expr.get_type(schema).ok()?;
            let lo = binary_expr(lo.cast_to(&inner, schema).ok()?, Operator::Minus, day.clone());
            let hi = binary_expr(hi.cast_to(&inner, schema).ok()?, Operator::Plus, day);
            inverse(expr, lo, hi, schema)
        }
        Expr::ScalarFunction(ScalarFunction { func, args }) => match (func.name(), args.as_slice()) {
            ("date_trunc", [Expr::Literal(unit, _), x]) => {
                let unit = unit.try_as_str().flatten().unwrap_or("day").to_ascii_lowercase();
                let step = match unit.as_str() {
                    "year" => IntervalMonthDayNano::new(12, 0, 0),
                    "quarter" => IntervalMonthDayNano::new(3, 0, 0),
                    "month" => IntervalMonthDayNano::new(1, 0, 0),
                    "week" => IntervalMonthDayNano::new(0, 7, 0),
                    _ => IntervalMonthDayNano::new(0, 1, 0),
                };
                inverse(
                    x,
                    lo,
                    binary_expr(hi, Operator::Plus, lit(ScalarValue::IntervalMonthDayNano(Some(step)))),
                    schema,
                )
            }
            ("date_bin", [stride @ Expr::Literal(..), x, ..]) => {
                inverse(x, lo, binary_expr(hi, Operator::Plus, stride.clone()), schema)
            }
            _ => None,
        },
        Expr::BinaryExpr(b) => match (&*b.left, b.op, &*b.right) {
            (x, Operator::Plus, k @ Expr::Literal(..)) | (k @ Expr::Literal(..), Operator::Plus, x) => inverse(
                x,
                binary_expr(lo, Operator::Minus, k.clone()),
                binary_expr(hi, Operator::Minus, k.clone()),
                schema,
            ),
            (x, Operator::Minus, k @ Expr::Literal(..)) => inverse(
                x,
                binary_expr(lo, Operator::Plus, k.clone()),
                binary_expr(hi, Operator::Plus, k.clone()),
                schema,
            ),
            _ => None,
        },
        _ => None,
    }
}

fn date(day: i32) -> Expr {
    lit(ScalarValue::Date32(Some(day)))
}

/// A product's plan narrowed to the days of one batch (see the module docs), to optimize
/// again (the filters move into the scans) and execute.
pub fn batch_plan(plan: &LogicalPlan, spec: &Incremental, days: &DaySet) -> datafusion::error::Result<LogicalPlan> {
    // An empty batch (nothing to compute) reads and keeps nothing: the commit that records
    // a new input state writes an empty build.
    let first = days.ranges().first().map_or(spec.start, |r| r.0);
    let last = days.ranges().last().map_or(spec.start, |r| r.1);
    let plan = plan.clone().transform_up_with_subqueries(|node| {
        let node = node.map_expressions(|e| {
            e.transform(|e| match &e {
                Expr::ScalarFunction(f) if f.name() == INTERVAL_START => Ok(Transformed::yes(date(first))),
                Expr::ScalarFunction(f) if f.name() == INTERVAL_END => Ok(Transformed::yes(date(last))),
                _ => Ok(Transformed::no(e)),
            })
        })?;
        let IntervalFilter::Derived { table, column, forward, .. } = &spec.filter else { return Ok(node) };
        match &node.data {
            LogicalPlan::TableScan(scan) if scan.table_name.table() == table => {
                let schema = Arc::clone(&scan.projected_schema);
                let col = Expr::Column(Column::new(Some(scan.table_name.clone()), column.clone()));
                let forward = substitute(forward.clone(), &Column::new_unqualified(column.clone()), &col);
                let ranges: Option<Vec<Expr>> = days
                    .ranges()
                    .iter()
                    .map(|&(a, b)| {
                        let (lo, hi) = inverse(&forward, date(a), date(b), &schema)?;
                        Some(col.clone().gt_eq(lo).and(col.clone().lt(hi)))
                    })
                    .collect();
                // Without bounds the scan reads everything; the output filter is exact.
                let Some(ranges) = ranges else { return Ok(node) };
                let predicate = ranges.into_iter().reduce(Expr::or).unwrap_or(lit(false));
                let filtered =
                    datafusion::logical_expr::LogicalPlanBuilder::from(node.data).filter(predicate)?.build()?;
                Ok(Transformed::new(filtered, true, TreeNodeRecursion::Jump))
            }
            _ => Ok(node),
        }
    })?;
    let plan = plan.data;
    let out = plan.schema();
    let index = out.fields().iter().position(|f| f.name() == &spec.column);
    let Some(index) = index else { return datafusion::common::plan_err!("`{}` is not an output column", spec.column) };
    let (q, f) = out.qualified_field(index);
    let time = Expr::Column(Column::new(q.cloned(), f.name()));
    let within = days
        .ranges()
        .iter()
        .map(|&(a, b)| time.clone().gt_eq(date(a)).and(time.clone().lt(date(b))))
        .reduce(Expr::or)
        .unwrap_or(lit(false));
    datafusion::logical_expr::LogicalPlanBuilder::from(plan).filter(time.is_null().or(within))?.build()
}

/// The day of the time column for a value of the derived filter's source column
/// (`forward` evaluated on it); `None` for NULL or what does not evaluate to a date.
pub fn forward_day(filter: &IntervalFilter, value: ScalarValue) -> Option<i32> {
    let IntervalFilter::Derived { column, forward, source_type, .. } = filter else { return None };
    if value.is_null() {
        return None;
    }
    let value = value.cast_to(source_type).ok()?;
    let schema = DFSchema::try_from(Schema::new(vec![datafusion::arrow::datatypes::Field::new(
        column,
        source_type.clone(),
        true,
    )]))
    .ok()?;
    let expr = forward
        .clone()
        .transform(|e| match &e {
            Expr::Column(c) if c.name == *column => Ok(Transformed::yes(lit(value.clone()))),
            _ => Ok(Transformed::no(e)),
        })
        .ok()?
        .data
        .cast_to(&DataType::Date32, &schema)
        .ok()?;
    let simplifier = ExprSimplifier::new(SimplifyContext::builder().with_schema(Arc::new(schema)).build());
    match simplifier.simplify(expr).ok()? {
        Expr::Literal(ScalarValue::Date32(Some(d)), _) => Some(d),
        _ => None,
    }
}

/// What a build of an incremental product must consider (see [`decide`]).
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// The committed build's state, when it is one of this product's definition (column,
    /// grain and start); else every interval is missing.
    pub state: Option<&'a IntervalState>,
    /// The time input's files now (`None` without a derived filter).
    pub files: Option<&'a [InputFile]>,
    /// The day after the last day of data (exclusive), when no file says it: today + 1.
    pub today: i32,
    /// Every interval is recomputed: the definition changed (its schema, or its query,
    /// functions or semantic settings under `on_change = 'rebuild'`).
    pub rebuild: bool,
    /// Inputs other than the time input that changed.
    pub other_changed: Vec<String>,
    /// `--start` / `--end` (days, inclusive).
    pub range: Option<(i32, i32)>,
    pub restate: bool,
}

/// The intervals one build computes, in order, each with the first reason that applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Computation {
    pub runs: Vec<(i32, i32, IntervalReason)>,
    /// Every interval of the product after it: `[start, end)`.
    pub full: (i32, i32),
    /// The first batch replaces every committed file (a rebuild of the whole product).
    pub replace_all: bool,
}

impl Computation {
    pub fn days(&self) -> DaySet {
        let mut s = DaySet::new();
        for &(a, b, _) in &self.runs {
            s.insert(a, b);
        }
        s
    }

    pub fn report(&self, grain: Grain) -> Vec<IntervalRun> {
        self.runs
            .iter()
            .map(|&(a, b, reason)| IntervalRun {
                start: format_day(a),
                end: format_day(b),
                intervals: grain.count(a, b),
                reason,
            })
            .collect()
    }
}

/// The minimal set of intervals a build computes: missing ones (gaps, new data past the
/// end), those an earlier run left pending, every one when the definition changed
/// (`on_change = 'rebuild'`) or an input other than the time input changed, those a
/// changed file of the time input covers, the last `lookback` ones, and with `--restate`
/// every one in the range; restricted to `--start`..`--end` when given.
pub fn decide(spec: &Incremental, inputs: &Inputs<'_>) -> Computation {
    let grain = spec.grain;
    let state =
        inputs.state.filter(|s| s.column == spec.column && s.grain == grain && parse_day(&s.start) == Some(spec.start));
    // The data's extent: the time input's files, else today.
    let last = match inputs.files {
        Some(files) => files.iter().filter_map(InputFile::days).map(|(_, b)| b).max(),
        None => Some(inputs.today),
    };
    let done = state.map(IntervalState::done_days).unwrap_or_default();
    // Intervals once computed stay the product's: when the data shrinks, the ones past
    // its new end are recomputed (to no rows) rather than left holding removed rows.
    let held_end = done.ranges().last().map_or(spec.start, |r| r.1);
    let end = last.map_or(spec.start, |b| grain.next(b - 1)).max(spec.start).max(held_end);
    let full = DaySet::range(spec.start, end);
    let mut claimed = DaySet::new();
    let mut runs: Vec<(DaySet, IntervalReason)> = Vec::new();
    let claim =
        |days: DaySet, reason: IntervalReason, claimed: &mut DaySet, runs: &mut Vec<(DaySet, IntervalReason)>| {
            let new = days.intersect(&full).minus(claimed);
            if !new.is_empty() {
                *claimed = claimed.union(&new);
                runs.push((new, reason));
            }
        };
    if let Some(s) = state {
        claim(s.pending_days(), IntervalReason::Pending, &mut claimed, &mut runs);
    }
    claim(full.minus(&done), IntervalReason::Missing, &mut claimed, &mut runs);
    let rebuild = inputs.rebuild;
    if rebuild {
        claim(full.clone(), IntervalReason::Rebuild, &mut claimed, &mut runs);
    }
    if !inputs.other_changed.is_empty() {
        claim(full.clone(), IntervalReason::UpstreamChanged, &mut claimed, &mut runs);
    }
    if let (Some(now), Some(state)) = (inputs.files, state) {
        claim(changed_days(spec, &state.files, now, &full), IntervalReason::InputChanged, &mut claimed, &mut runs);
    }
    let range = inputs.range.map(|(a, b)| DaySet::range(grain.floor(a), grain.next(b)));
    if inputs.restate {
        claim(range.clone().unwrap_or_else(|| full.clone()), IntervalReason::Restated, &mut claimed, &mut runs);
    }
    // Lookback applies to builds that compute something anyway (a fresh product is not
    // built at all), and to the end of the data.
    if !runs.is_empty() || inputs.range.is_some() {
        claim(spec.lookback_days(spec.start, end), IntervalReason::Lookback, &mut claimed, &mut runs);
    }
    let mut flat: Vec<(i32, i32, IntervalReason)> = Vec::new();
    for (days, reason) in runs {
        let days = match &range {
            Some(r) => days.intersect(r),
            None => days,
        };
        flat.extend(days.ranges().iter().map(|&(a, b)| (a, b, reason)));
    }
    flat.sort();
    Computation { runs: flat, full: (spec.start, end), replace_all: rebuild && inputs.range.is_none() }
}

/// The days covered by files of the time input added, removed or replaced between
/// `before` and `now`: every day when such a file's range is not known.
fn changed_days(spec: &Incremental, before: &[InputFile], now: &[InputFile], full: &DaySet) -> DaySet {
    let key = |f: &InputFile| (f.path.clone(), f.version.clone());
    let old: std::collections::BTreeSet<_> = before.iter().map(key).collect();
    let new: std::collections::BTreeSet<_> = now.iter().map(key).collect();
    let mut days = DaySet::new();
    let changed = before.iter().filter(|f| !new.contains(&key(f))).chain(now.iter().filter(|f| !old.contains(&key(f))));
    for f in changed {
        match (f.first.is_some(), f.days()) {
            (_, Some((a, b))) => days.insert(spec.grain.floor(a), spec.grain.next(b - 1)),
            (false, None) if f.last.is_none() => {} // a file without rows covers nothing
            _ => return full.clone(),
        }
    }
    days
}

/// The state a commit of `computed` days records: what the table holds after it, and,
/// for the batches still to come, what is pending.
pub fn next_state(
    spec: &Incremental,
    previous: Option<&IntervalState>,
    done_before: &DaySet,
    computed: &DaySet,
    pending: &DaySet,
    files: Option<Vec<InputFile>>,
    forward_only: Option<ForwardOnly>,
) -> IntervalState {
    let mut forward = previous.map(|s| s.forward_only.clone()).unwrap_or_default();
    if let Some(f) = forward_only
        && !forward.contains(&f)
    {
        forward.push(f);
    }
    IntervalState {
        column: spec.column.clone(),
        grain: spec.grain,
        start: format_day(spec.start),
        done: done_before.union(computed).to_ranges(),
        pending: pending.to_ranges(),
        input: spec.filter.input().map(str::to_owned),
        files: files.unwrap_or_default(),
        forward_only: forward,
    }
}

/// Located errors for an incremental product's options that need its output schema.
pub(crate) fn check_schema(spec: &Incremental, schema: &Schema, def: &ProductDef) -> Result<(), ControlError> {
    let field = schema.field_with_name(&spec.column).map_err(|_| ControlError::Option {
        at: spec.at.clone(),
        message: format!("time_column `{}` is not an output column of `{}`", spec.column, def.name),
    })?;
    if field.data_type() != &DataType::Date32 {
        return Err(ControlError::Option {
            at: spec.at.clone(),
            message: format!(
                "time_column `{}` is a {}; intervals are days, so it must be a DATE (CAST({0} AS DATE) or date_trunc)",
                spec.column,
                kiln_contracts::types::arrow_to_sql(field.data_type()).unwrap_or_else(|| field.data_type().to_string())
            ),
        });
    }
    Ok(())
}

/// The partition value of a file's time column as a day.
pub fn partition_day(value: Option<&str>) -> Option<i32> {
    parse_day(value?)
}
