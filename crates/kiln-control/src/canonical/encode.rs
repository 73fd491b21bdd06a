//! The canonical text of expressions, scalar values and data types, written out here
//! explicitly so that nothing hashed into `query_fp` comes from DataFusion's or Arrow's
//! own `Display` or `Debug`: an upgrade that changes how they print cannot change a build
//! id.
//!
//! The forms are those DataFusion 55 and Arrow 59 print, so fingerprints computed before
//! this encoder existed stay valid:
//!
//! - expressions: `a + b * c` (parentheses where precedence needs them), `f(a, b)`,
//!   `CAST(a AS Int64)`, `CASE WHEN .. THEN .. ELSE .. END`, `a IN ([1, 2])`,
//!   `sum(DISTINCT a) FILTER (WHERE b) ORDER BY [c ASC NULLS LAST]`, window functions with
//!   `PARTITION BY [..] ORDER BY [..] ROWS BETWEEN .. AND ..`; columns as the walker names
//!   them (their identities);
//! - literals: `Int64(5)`, `Float64(1.5)`, `Utf8("text")`, `Decimal128(0.00,15,2)`,
//!   `Date32("2024-01-05")`, `TimestampNanosecond(0, Some("UTC"))`, `Boolean(true)`,
//!   `Int32(NULL)`, `IntervalMonthDayNano("IntervalMonthDayNano { months: 0, days: 1,
//!   nanoseconds: 0 }")`, `List([1, 2])`, `Struct({a:1,b:x})`;
//! - data types: `Int64`, `Utf8View`, `Decimal128(15, 2)`, `Timestamp(ns, "UTC")`,
//!   `List(Int64)`, `Struct("a": Int64, "b": non-null Utf8)`.
//!
//! Two forms are Kiln's own: a subquery inside an expression is `(<subquery>)` (its plan
//! is a `Subquery` child of the node, canonical like any other; DataFusion printed its
//! `Debug` dump), and metadata maps are written with sorted keys.

use std::fmt::Write as _;

use datafusion::common::Column;
use datafusion::logical_expr::expr::{
    AggregateFunction, AggregateFunctionParams, Alias, Between, BinaryExpr, Case, Cast, InList, Like, Placeholder,
    ScalarFunction, TryCast, WindowFunction, WindowFunctionParams,
};
use datafusion::logical_expr::{
    Expr, GroupingSet, Operator, SortExpr, WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};

use super::values::metadata_text;
pub use super::values::{data_type, scalar_debug, scalar_display};

/// How columns are written (the walker's identities).
pub type ColumnText<'a> = &'a dyn Fn(&Column) -> String;

/// The canonical text of `expr`, aliases left out, columns written by `column`.
pub fn expr(e: &Expr, column: ColumnText<'_>) -> String {
    let mut out = String::new();
    Encoder { column }.expr(&mut out, e);
    out
}

/// The canonical text of a sort key: `<expr> ASC|DESC NULLS FIRST|LAST`.
pub fn sort(s: &SortExpr, column: ColumnText<'_>) -> String {
    let mut out = String::new();
    Encoder { column }.sort(&mut out, s);
    out
}

struct Encoder<'a> {
    column: ColumnText<'a>,
}

impl Encoder<'_> {
    fn expr(&self, out: &mut String, e: &Expr) {
        match e {
            Expr::Alias(Alias { expr, .. }) => self.expr(out, expr),
            Expr::Column(c) => out.push_str(&(self.column)(c)),
            // A correlated reference keeps its outer name (the one place an alias can
            // reach the canonical text: module docs of crate::canonical).
            Expr::OuterReferenceColumn(_, c) => {
                let _ = write!(out, "outer_ref({})", c.flat_name());
            }
            Expr::ScalarVariable(_, names) => out.push_str(&names.join(".")),
            Expr::Literal(v, metadata) => {
                out.push_str(&scalar_debug(v));
                if let Some(m) = metadata.as_ref().filter(|m| !m.is_empty()) {
                    let _ = write!(out, " FieldMetadata {{ inner: {} }}", metadata_text(m.inner().iter()));
                }
            }
            Expr::Case(Case { expr, when_then_expr, else_expr }) => {
                out.push_str("CASE ");
                if let Some(e) = expr {
                    self.expr(out, e);
                    out.push(' ');
                }
                for (w, t) in when_then_expr {
                    out.push_str("WHEN ");
                    self.expr(out, w);
                    out.push_str(" THEN ");
                    self.expr(out, t);
                    out.push(' ');
                }
                if let Some(e) = else_expr {
                    out.push_str("ELSE ");
                    self.expr(out, e);
                    out.push(' ');
                }
                out.push_str("END");
            }
            Expr::Cast(Cast { expr, field }) | Expr::TryCast(TryCast { expr, field }) => {
                out.push_str(if matches!(e, Expr::Cast(_)) { "CAST(" } else { "TRY_CAST(" });
                self.expr(out, expr);
                out.push_str(" AS ");
                out.push_str(&data_type(field.data_type()));
                if !field.metadata().is_empty() {
                    out.push('<');
                    out.push_str(&metadata_text(field.metadata().iter()));
                    out.push('>');
                }
                out.push(')');
            }
            Expr::Not(e) => self.prefixed(out, "NOT ", e),
            Expr::Negative(e) => {
                out.push_str("(- ");
                self.expr(out, e);
                out.push(')');
            }
            Expr::IsNull(e) => self.suffixed(out, e, " IS NULL"),
            Expr::IsNotNull(e) => self.suffixed(out, e, " IS NOT NULL"),
            Expr::IsTrue(e) => self.suffixed(out, e, " IS TRUE"),
            Expr::IsFalse(e) => self.suffixed(out, e, " IS FALSE"),
            Expr::IsUnknown(e) => self.suffixed(out, e, " IS UNKNOWN"),
            Expr::IsNotTrue(e) => self.suffixed(out, e, " IS NOT TRUE"),
            Expr::IsNotFalse(e) => self.suffixed(out, e, " IS NOT FALSE"),
            Expr::IsNotUnknown(e) => self.suffixed(out, e, " IS NOT UNKNOWN"),
            Expr::Exists(x) => out.push_str(if x.negated { "NOT EXISTS (<subquery>)" } else { "EXISTS (<subquery>)" }),
            Expr::InSubquery(x) => {
                self.expr(out, &x.expr);
                out.push_str(if x.negated { " NOT IN (<subquery>)" } else { " IN (<subquery>)" });
            }
            Expr::SetComparison(x) => {
                self.expr(out, &x.expr);
                let _ = write!(out, " {} {} (<subquery>)", operator(&x.op), x.quantifier);
            }
            Expr::ScalarSubquery(_) => out.push_str("(<subquery>)"),
            Expr::BinaryExpr(b) => self.binary(out, b),
            Expr::ScalarFunction(ScalarFunction { func, args }) => self.call(out, func.name(), false, args),
            Expr::AggregateFunction(AggregateFunction { func, params }) => self.aggregate(out, func.name(), params),
            Expr::WindowFunction(w) => self.window(out, w),
            Expr::Between(Between { expr, negated, low, high }) => {
                self.expr(out, expr);
                out.push_str(if *negated { " NOT BETWEEN " } else { " BETWEEN " });
                self.expr(out, low);
                out.push_str(" AND ");
                self.expr(out, high);
            }
            Expr::Like(l) => self.like(out, l, if l.case_insensitive { "ILIKE" } else { "LIKE" }),
            Expr::SimilarTo(l) => self.like(out, l, "SIMILAR TO"),
            Expr::InList(InList { expr, list, negated }) => {
                self.expr(out, expr);
                out.push_str(if *negated { " NOT IN ([" } else { " IN ([" });
                self.list(out, list);
                out.push_str("])");
            }
            #[expect(deprecated)]
            Expr::Wildcard { qualifier, .. } => match qualifier {
                Some(q) => {
                    let _ = write!(out, "{q}.*");
                }
                None => out.push('*'),
            },
            Expr::GroupingSet(set) => match set {
                GroupingSet::Rollup(exprs) | GroupingSet::Cube(exprs) => {
                    out.push_str(if matches!(set, GroupingSet::Rollup(_)) { "ROLLUP (" } else { "CUBE (" });
                    self.list(out, exprs);
                    out.push(')');
                }
                GroupingSet::GroupingSets(sets) => {
                    out.push_str("GROUPING SETS (");
                    for (i, exprs) in sets.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        out.push('(');
                        self.list(out, exprs);
                        out.push(')');
                    }
                    out.push(')');
                }
            },
            Expr::Placeholder(Placeholder { id, .. }) => out.push_str(id),
            Expr::Unnest(u) => {
                out.push_str("UNNEST(");
                self.expr(out, &u.expr);
                out.push(')');
            }
            Expr::HigherOrderFunction(f) => self.call(out, f.name(), false, &f.args),
            Expr::Lambda(l) => {
                let _ = write!(out, "({}) -> ", l.params.join(", "));
                self.expr(out, &l.body);
            }
            Expr::LambdaVariable(v) => out.push_str(&v.name),
        }
    }

    fn prefixed(&self, out: &mut String, prefix: &str, e: &Expr) {
        out.push_str(prefix);
        self.expr(out, e);
    }

    fn suffixed(&self, out: &mut String, e: &Expr, suffix: &str) {
        self.expr(out, e);
        out.push_str(suffix);
    }

    /// Both sides, parenthesized when a child binds less tightly.
    fn binary(&self, out: &mut String, b: &BinaryExpr) {
        let precedence = precedence(&b.op);
        let child = |out: &mut String, e: &Expr| match e {
            Expr::BinaryExpr(c) if precedence_is_lower(&c.op, precedence) => {
                out.push('(');
                self.binary(out, c);
                out.push(')');
            }
            other => self.expr(out, other),
        };
        child(out, &b.left);
        out.push(' ');
        out.push_str(operator(&b.op));
        out.push(' ');
        child(out, &b.right);
    }

    fn list(&self, out: &mut String, exprs: &[Expr]) {
        for (i, e) in exprs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.expr(out, e);
        }
    }

    fn call(&self, out: &mut String, name: &str, distinct: bool, args: &[Expr]) {
        out.push_str(name);
        out.push('(');
        if distinct {
            out.push_str("DISTINCT ");
        }
        self.list(out, args);
        out.push(')');
    }

    fn sort(&self, out: &mut String, s: &SortExpr) {
        self.expr(out, &s.expr);
        out.push_str(if s.asc { " ASC" } else { " DESC" });
        out.push_str(if s.nulls_first { " NULLS FIRST" } else { " NULLS LAST" });
    }

    fn sorts(&self, out: &mut String, sorts: &[SortExpr]) {
        for (i, s) in sorts.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.sort(out, s);
        }
    }

    fn aggregate(&self, out: &mut String, name: &str, p: &AggregateFunctionParams) {
        self.call(out, name, p.distinct, &p.args);
        if let Some(nt) = &p.null_treatment {
            out.push(' ');
            out.push_str(null_treatment(nt));
        }
        if let Some(f) = &p.filter {
            out.push_str(" FILTER (WHERE ");
            self.expr(out, f);
            out.push(')');
        }
        if !p.order_by.is_empty() {
            out.push_str(" ORDER BY [");
            self.sorts(out, &p.order_by);
            out.push(']');
        }
    }

    fn window(&self, out: &mut String, w: &WindowFunction) {
        let WindowFunction { fun, params } = w;
        let WindowFunctionParams { args, partition_by, order_by, window_frame, filter, null_treatment: nt, distinct } =
            params;
        // The two kinds differ only in where the null treatment goes (as DataFusion
        // writes them).
        let aggregate = matches!(fun, WindowFunctionDefinition::AggregateUDF(_));
        let name = match fun {
            WindowFunctionDefinition::AggregateUDF(f) => f.name(),
            WindowFunctionDefinition::WindowUDF(f) => f.name(),
        };
        self.call(out, name, *distinct, args);
        if let Some(nt) = nt {
            if aggregate {
                out.push(' ');
            }
            out.push_str(null_treatment(nt));
        }
        if let Some(f) = filter {
            out.push_str(" FILTER (WHERE ");
            self.expr(out, f);
            out.push(')');
        }
        if !partition_by.is_empty() {
            out.push_str(" PARTITION BY [");
            self.list(out, partition_by);
            out.push(']');
        }
        if !order_by.is_empty() {
            out.push_str(" ORDER BY [");
            self.sorts(out, order_by);
            out.push(']');
        }
        out.push(' ');
        out.push_str(&frame(window_frame));
    }

    fn like(&self, out: &mut String, l: &Like, op: &str) {
        self.expr(out, &l.expr);
        if l.negated {
            out.push_str(" NOT");
        }
        out.push(' ');
        out.push_str(op);
        out.push(' ');
        self.expr(out, &l.pattern);
        if let Some(c) = l.escape_char {
            let _ = write!(out, " ESCAPE '{c}'");
        }
    }
}

/// `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`.
fn frame(f: &WindowFrame) -> String {
    let units = match f.units {
        WindowFrameUnits::Rows => "ROWS",
        WindowFrameUnits::Range => "RANGE",
        WindowFrameUnits::Groups => "GROUPS",
    };
    let bound = |b: &WindowFrameBound| match b {
        WindowFrameBound::Preceding(n) if n.is_null() => "UNBOUNDED PRECEDING".to_owned(),
        WindowFrameBound::Preceding(n) => format!("{} PRECEDING", scalar_display(n)),
        WindowFrameBound::CurrentRow => "CURRENT ROW".to_owned(),
        WindowFrameBound::Following(n) if n.is_null() => "UNBOUNDED FOLLOWING".to_owned(),
        WindowFrameBound::Following(n) => format!("{} FOLLOWING", scalar_display(n)),
    };
    format!("{units} BETWEEN {} AND {}", bound(&f.start_bound), bound(&f.end_bound))
}

fn null_treatment(nt: &datafusion::logical_expr::expr::NullTreatment) -> &'static str {
    match nt {
        datafusion::logical_expr::expr::NullTreatment::IgnoreNulls => "IGNORE NULLS",
        datafusion::logical_expr::expr::NullTreatment::RespectNulls => "RESPECT NULLS",
    }
}

/// Whether a child with operator `op` binds less tightly than a parent of `parent`
/// precedence (or has none), and so needs parentheses.
fn precedence_is_lower(op: &Operator, parent: u8) -> bool {
    let p = precedence(op);
    p == 0 || p < parent
}

/// Operator precedence, higher binds tighter.
fn precedence(op: &Operator) -> u8 {
    use Operator::*;
    match op {
        Or => 5,
        And => 10,
        Eq | NotEq | LtEq | GtEq => 15,
        Lt | Gt => 20,
        LikeMatch | NotLikeMatch | ILikeMatch | NotILikeMatch => 25,
        Plus | Minus => 40,
        Multiply | Divide | Modulo => 45,
        IsDistinctFrom | IsNotDistinctFrom | RegexMatch | RegexNotMatch | RegexIMatch | RegexNotIMatch | BitwiseAnd
        | BitwiseOr | BitwiseShiftLeft | BitwiseShiftRight | BitwiseXor | StringConcat | AtArrow | ArrowAt | Arrow
        | LongArrow | HashArrow | HashLongArrow | AtAt | IntegerDivide | HashMinus | AtQuestion | Question
        | QuestionAnd | QuestionPipe | Colon => 30,
    }
}

fn operator(op: &Operator) -> &'static str {
    use Operator::*;
    match op {
        Eq => "=",
        NotEq => "!=",
        Lt => "<",
        LtEq => "<=",
        Gt => ">",
        GtEq => ">=",
        Plus => "+",
        Minus => "-",
        Multiply => "*",
        Divide => "/",
        Modulo => "%",
        And => "AND",
        Or => "OR",
        RegexMatch => "~",
        RegexIMatch => "~*",
        RegexNotMatch => "!~",
        RegexNotIMatch => "!~*",
        LikeMatch => "~~",
        ILikeMatch => "~~*",
        NotLikeMatch => "!~~",
        NotILikeMatch => "!~~*",
        IsDistinctFrom => "IS DISTINCT FROM",
        IsNotDistinctFrom => "IS NOT DISTINCT FROM",
        BitwiseAnd => "&",
        BitwiseOr => "|",
        BitwiseXor => "BIT_XOR",
        BitwiseShiftRight => ">>",
        BitwiseShiftLeft => "<<",
        StringConcat => "||",
        AtArrow => "@>",
        ArrowAt => "<@",
        Arrow => "->",
        LongArrow => "->>",
        HashArrow => "#>",
        HashLongArrow => "#>>",
        AtAt => "@@",
        IntegerDivide => "DIV",
        HashMinus => "#-",
        AtQuestion => "@?",
        Question => "?",
        QuestionAnd => "?&",
        QuestionPipe => "?|",
        Colon => ":",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
    use datafusion::common::ScalarValue;
    use datafusion::prelude::SessionContext;

    /// DataFusion 55's own text is the reference: for every expression a product's plan
    /// can hold (here from real SQL, planned and optimized), the encoder writes the same
    /// text, so `query_fp`s computed before the encoder existed are unchanged.
    #[tokio::test]
    async fn expressions_are_written_as_datafusion_55_wrote_them() {
        let ctx = SessionContext::new();
        ctx.sql(
            "CREATE TABLE t (a BIGINT, b DOUBLE, s VARCHAR, d DATE, ts TIMESTAMP, dec DECIMAL(15, 2), \
             l INT[], flag BOOLEAN) AS VALUES (1, 1.5, 'x', DATE '2024-01-05', TIMESTAMP '2024-01-05 10:00:00', \
             1.25, [1, 2], true)",
        )
        .await
        .unwrap();
        let queries = [
            "SELECT a + b * 2, (a + 1) * 3, -a, NOT flag, a IS NULL, flag IS NOT TRUE FROM t",
            "SELECT CASE WHEN a > 1 THEN 'big' WHEN a = 1 THEN 'one' ELSE s END, CASE a WHEN 1 THEN 2 END FROM t",
            "SELECT CAST(a AS VARCHAR), TRY_CAST(s AS INT), CAST(b AS DECIMAL(10, 3)), CAST(d AS TIMESTAMP) FROM t",
            "SELECT s LIKE 'x%', s NOT ILIKE '%Y' ESCAPE '!', s SIMILAR TO 'x+', a BETWEEN 1 AND 5 FROM t",
            "SELECT a IN (1, 2, 3), s NOT IN ('a', 'b'), a = 1 OR a = 2 AND b > 0.5, (a = 1 OR a = 2) AND flag FROM t",
            "SELECT upper(s), coalesce(s, 'n/a'), date_trunc('month', ts), d + INTERVAL '1 day', \
             ts - INTERVAL '5' SECOND, 1.5e300, 'it''s', NULL AS n1, CAST(NULL AS BIGINT) AS n2, x'0102ff' FROM t",
            "SELECT count(*), count(DISTINCT a), sum(b) FILTER (WHERE a > 1), array_agg(s ORDER BY a DESC NULLS FIRST), \
             max(dec), min(d), avg(ts - ts) FROM t",
            "SELECT a, row_number() OVER (PARTITION BY s ORDER BY a), sum(b) OVER (ORDER BY a ROWS BETWEEN 2 PRECEDING \
             AND CURRENT ROW), lag(a, 1) OVER (ORDER BY d), first_value(a) IGNORE NULLS OVER (ORDER BY a RANGE \
             BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM t",
            "SELECT l[1], array_length(l), make_array(1, 2, 3), struct(a, s), named_struct('k', a), \
             array_has(l, 1), map(['k'], [1]) FROM t",
            "SELECT dec * 2, dec > 0.5, ts > TIMESTAMP '2024-01-01T00:00:00Z', a % 3, a / 2, s || 'y', a & 1, \
             s ~ 'x', a IS DISTINCT FROM 2, d = DATE '2024-01-05', ts AT TIME ZONE 'UTC' FROM t",
            "SELECT a FROM t WHERE a > (SELECT max(a) FROM t) OR EXISTS (SELECT 1 FROM t t2 WHERE t2.a = t.a)",
            "SELECT s, count(*) FROM t GROUP BY ROLLUP (s), a",
            "SELECT sum(a) FROM t GROUP BY CUBE (s, flag)",
        ];
        let mut compared = 0;
        for sql in queries {
            let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
            let mut failures = Vec::new();
            let _ = plan.apply_with_subqueries(|node| {
                node.apply_expressions(|e| {
                    let mut e = e.clone().unalias_nested().data;
                    // Subqueries print a Debug dump in DataFusion: the one form that differs.
                    use datafusion::common::tree_node::TreeNode;
                    if !e
                        .exists(|x| Ok(matches!(x, Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_))))
                        .unwrap()
                    {
                        if let Expr::Alias(a) = e {
                            e = *a.expr;
                        }
                        let ours = expr(&e, &|c| c.flat_name());
                        let theirs = e.to_string();
                        if ours != theirs {
                            failures.push(format!("ours:   {ours}\ntheirs: {theirs}"));
                        }
                        compared += 1;
                    }
                    Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
                })
            });
            assert!(failures.is_empty(), "{sql}\n{}", failures.join("\n"));
        }
        assert!(compared > 60, "{compared} expressions compared");
    }

    /// Every scalar type and data type a product can produce, against DataFusion's and
    /// Arrow's own text (the reference), so the encoder's coverage is complete.
    #[test]
    fn scalars_and_types_match_the_reference() {
        use datafusion::arrow::array::{Int64Array, ListArray};
        use datafusion::arrow::datatypes::{Fields, Int64Type};
        use datafusion::arrow::datatypes::{IntervalDayTime, IntervalMonthDayNano};
        use std::sync::Arc;
        let list = ScalarValue::List(Arc::new(ListArray::from_iter_primitive::<Int64Type, _, _>(vec![Some(vec![
            Some(1),
            None,
            Some(3),
        ])])));
        let strukt = ScalarValue::Struct(Arc::new(datafusion::arrow::array::StructArray::from(vec![(
            Arc::new(Field::new("a", DataType::Int64, true)),
            Arc::new(Int64Array::from(vec![7])) as _,
        )])));
        let scalars = vec![
            ScalarValue::Null,
            ScalarValue::Boolean(Some(true)),
            ScalarValue::Boolean(None),
            ScalarValue::Int8(Some(-8)),
            ScalarValue::Int16(Some(16)),
            ScalarValue::Int32(None),
            ScalarValue::Int64(Some(i64::MIN)),
            ScalarValue::UInt8(Some(8)),
            ScalarValue::UInt16(Some(16)),
            ScalarValue::UInt32(Some(32)),
            ScalarValue::UInt64(Some(u64::MAX)),
            ScalarValue::Float32(Some(1.25)),
            ScalarValue::Float64(Some(5.0)),
            ScalarValue::Float64(Some(f64::NAN)),
            ScalarValue::Float64(Some(-0.0)),
            ScalarValue::Float64(Some(1e300)),
            ScalarValue::Decimal128(Some(-12345), 15, 2),
            ScalarValue::Decimal128(Some(5), 10, 3),
            ScalarValue::Decimal128(Some(-5), 10, 3),
            ScalarValue::Decimal128(Some(5), 10, -2),
            ScalarValue::Decimal128(None, 15, 2),
            ScalarValue::Decimal256(Some(datafusion::arrow::datatypes::i256::from_i128(123)), 40, 1),
            ScalarValue::Decimal32(Some(15), 5, 1),
            ScalarValue::Decimal64(Some(-15), 12, 4),
            ScalarValue::Utf8(Some("a \"b\"".into())),
            ScalarValue::Utf8(None),
            ScalarValue::Utf8View(Some("v".into())),
            ScalarValue::LargeUtf8(Some("l".into())),
            ScalarValue::Binary(Some(vec![1, 2, 255])),
            ScalarValue::Binary(None),
            ScalarValue::BinaryView(Some(vec![0])),
            ScalarValue::LargeBinary(Some(vec![9; 12])),
            ScalarValue::FixedSizeBinary(2, Some(vec![1, 2])),
            ScalarValue::FixedSizeBinary(2, None),
            ScalarValue::Date32(Some(19_727)),
            ScalarValue::Date32(Some(-1)),
            ScalarValue::Date64(Some(1_704_412_800_000)),
            ScalarValue::Time32Second(Some(3600)),
            ScalarValue::Time32Millisecond(Some(1)),
            ScalarValue::Time64Microsecond(Some(2)),
            ScalarValue::Time64Nanosecond(None),
            ScalarValue::TimestampSecond(Some(1), None),
            ScalarValue::TimestampMillisecond(Some(-1), Some("UTC".into())),
            ScalarValue::TimestampMicrosecond(None, Some("+05:00".into())),
            ScalarValue::TimestampNanosecond(Some(1_700_000_000_000_000_000), None),
            ScalarValue::IntervalYearMonth(Some(14)),
            ScalarValue::IntervalDayTime(Some(IntervalDayTime::new(1, 500))),
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 2, 3_000_000_000))),
            ScalarValue::IntervalMonthDayNano(None),
            ScalarValue::DurationSecond(Some(5)),
            ScalarValue::DurationMillisecond(Some(6)),
            ScalarValue::DurationMicrosecond(Some(7)),
            ScalarValue::DurationNanosecond(None),
            ScalarValue::Dictionary(Box::new(DataType::Int32), Box::new(ScalarValue::Utf8(Some("d".into())))),
            list,
            strukt,
        ];
        for v in &scalars {
            assert_eq!(scalar_debug(v), format!("{v:?}"), "{v:?}");
            assert_eq!(scalar_display(v), format!("{v}"), "{v:?}");
        }
        let item = |t: DataType, nullable: bool| Arc::new(Field::new("item", t, nullable));
        let types = vec![
            DataType::Null,
            DataType::Boolean,
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Float16,
            DataType::Float32,
            DataType::Float64,
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("+01:00".into())),
            DataType::Date32,
            DataType::Date64,
            DataType::Time32(TimeUnit::Second),
            DataType::Time64(TimeUnit::Nanosecond),
            DataType::Duration(TimeUnit::Millisecond),
            DataType::Interval(IntervalUnit::YearMonth),
            DataType::Interval(IntervalUnit::DayTime),
            DataType::Interval(IntervalUnit::MonthDayNano),
            DataType::Binary,
            DataType::FixedSizeBinary(16),
            DataType::LargeBinary,
            DataType::BinaryView,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::List(item(DataType::Int64, true)),
            DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
            DataType::LargeList(item(DataType::Float64, false)),
            DataType::FixedSizeList(item(DataType::Int32, true), 3),
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, false)
                    .with_metadata([("k".to_owned(), "v".to_owned())].into_iter().collect()),
            ])),
            DataType::Map(
                Arc::new(Field::new(
                    "entries",
                    DataType::Struct(Fields::from(vec![
                        Field::new("key", DataType::Utf8, false),
                        Field::new("value", DataType::Int64, true),
                    ])),
                    false,
                )),
                false,
            ),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::Decimal32(9, 2),
            DataType::Decimal64(18, 3),
            DataType::Decimal128(15, 2),
            DataType::Decimal256(76, 10),
        ];
        for t in &types {
            assert_eq!(data_type(t), t.to_string(), "{t:?}");
        }
    }
}
