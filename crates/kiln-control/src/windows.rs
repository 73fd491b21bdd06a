//! Window syntax, rewritten on the AST before planning (the same for products, which
//! window a batch, and materialized views, which window a stream):
//!
//! ```sql
//! SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS w, TUMBLE_END(ts, INTERVAL '10' SECOND), ...
//!   FROM t GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user
//! SELECT HOP_START(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND), HOP_END(...), ...
//!   FROM t GROUP BY HOP(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction
//! ```
//!
//! - `TUMBLE(ts, size)` groups by `kiln_tumble_start(ts, size)`; `TUMBLE_START` is that,
//!   `TUMBLE_END` that plus `size` (windows aligned to the Unix epoch, half-open
//!   `[start, end)`).
//! - `HOP(ts, slide, size)` puts each row in every window that contains it: the SELECT's
//!   first relation gets `CROSS JOIN UNNEST(kiln_hop_starts(ts, slide, size)) AS
//!   __kiln_hop(__kiln_hop_start)` (Kiln's own explode), the group is that start,
//!   `HOP_START` is it and `HOP_END` is it plus `size`.
//! - `*_START` / `*_END` must repeat the GROUP BY window's arguments; one window per
//!   SELECT. Interval checks (positive, slide <= size) and the timestamp type are the
//!   window functions' own, reported at their position.
//! - The table-valued form (Flink's), rewritten on the tokens before parsing:
//!   `FROM TUMBLE(TABLE t, DESCRIPTOR(ts), size)` is
//!   `FROM (SELECT *, kiln_tumble_start(ts, size) AS window_start,
//!   kiln_tumble_start(ts, size) + size AS window_end FROM t)`, and
//!   `FROM HOP(TABLE t, DESCRIPTOR(ts), slide, size)` the same over
//!   `t CROSS JOIN UNNEST(kiln_hop_starts(ts, slide, size))`; the query then groups by
//!   `window_start, window_end`.
//!
//! [`rewrite_windows`] returns every window the query ends up with, whichever form
//! made it: each distinct `kiln_tumble_start` / `kiln_hop_starts` call.

use std::ops::ControlFlow;

use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, Select, SetExpr, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use kiln_contracts::dialect::KilnDialect;

use crate::unnest::located;

/// The column a HOP window's start is exploded into.
pub const HOP_START: &str = "__kiln_hop_start";

/// A window a SELECT groups by, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowDef {
    /// `true` for HOP.
    pub hop: bool,
    /// The time argument, as written (a column name for stream windows).
    pub time: SqlExpr,
    /// The window length and (HOP) the slide, in milliseconds, when they are literals.
    pub size_ms: Option<i64>,
    pub slide_ms: Option<i64>,
    /// Where the window is written.
    pub span: datafusion::sql::sqlparser::tokenizer::Span,
}

/// Rewrites every SELECT's window syntax in `query` (see the module docs) and returns the
/// windows found, innermost first.
pub fn rewrite_windows(query: &mut Query) -> Result<Vec<WindowDef>, DataFusionError> {
    let mut rewriter = Rewriter { error: None };
    let _ = query.visit(&mut rewriter);
    if let Some(e) = rewriter.error {
        return Err(e);
    }
    let mut calls = WindowCalls(Vec::new());
    let _ = query.visit(&mut calls);
    Ok(calls.0)
}

/// Collects the distinct window-function calls of a query.
struct WindowCalls(Vec<WindowDef>);

impl VisitorMut for WindowCalls {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let SqlExpr::Function(f) = expr else { return ControlFlow::Continue(()) };
        let [ObjectNamePart::Identifier(name)] = f.name.0.as_slice() else { return ControlFlow::Continue(()) };
        let a = args(f);
        let def = match (name.value.to_ascii_lowercase().as_str(), a.as_slice()) {
            ("kiln_tumble_start", [time, size]) => WindowDef {
                hop: false,
                time: time.clone(),
                size_ms: interval_ms(size),
                slide_ms: interval_ms(size),
                span: span_of(f),
            },
            ("kiln_hop_starts", [time, slide, size]) => WindowDef {
                hop: true,
                time: time.clone(),
                size_ms: interval_ms(size),
                slide_ms: interval_ms(slide),
                span: span_of(f),
            },
            _ => return ControlFlow::Continue(()),
        };
        let same = |w: &WindowDef| {
            w.hop == def.hop
                && w.time.to_string() == def.time.to_string()
                && w.size_ms == def.size_ms
                && w.slide_ms == def.slide_ms
        };
        if !self.0.iter().any(same) {
            self.0.push(def);
        }
        ControlFlow::Continue(())
    }
}

/// Rewrites the table-valued window forms on the tokens (see the module docs); spans of
/// the new tokens are the window keyword's, so errors point at it.
pub fn window_tvfs(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    use crate::unnest::{close_paren, is_keyword, is_ws, next_solid};
    use datafusion::sql::sqlparser::keywords::Keyword;
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let kind = match &tokens[i].token {
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("TUMBLE") => Kind::Tumble,
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("HOP") => Kind::Hop,
            _ => {
                out.push(tokens[i].clone());
                i += 1;
                continue;
            }
        };
        let open = next_solid(&tokens, i + 1);
        let table = next_solid(&tokens, open + 1);
        let is_tvf = open < tokens.len()
            && tokens[open].token == Token::LParen
            && table < tokens.len()
            && is_keyword(&tokens[table], Keyword::TABLE);
        let end = if is_tvf { close_paren(&tokens, open) } else { None };
        let Some(end) = end else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        // The arguments, split at top-level commas, as text.
        let mut parts: Vec<String> = vec![String::new()];
        let mut depth = 0i32;
        for t in &tokens[open + 1..end - 1] {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    parts.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = parts.last_mut() {
                last.push_str(&if is_ws(t) { " ".to_owned() } else { t.token.to_string() });
            }
        }
        let parts: Vec<&str> = parts.iter().map(|p| p.trim()).collect();
        let name = parts.first().and_then(|p| p.get(5..)).map(str::trim);
        let time = parts.get(1).and_then(|p| {
            let inner = p.strip_prefix("DESCRIPTOR").or_else(|| p.strip_prefix("descriptor"))?.trim();
            inner.strip_prefix('(')?.strip_suffix(')').map(str::trim)
        });
        let text = match (kind, name, time, parts.get(2..).unwrap_or_default()) {
            (Kind::Tumble, Some(t), Some(ts), [size]) => Some(format!(
                "(SELECT *, kiln_tumble_start({ts}, {size}) AS window_start, kiln_tumble_start({ts}, {size}) + {size} AS window_end FROM {t})"
            )),
            (Kind::Hop, Some(t), Some(ts), [slide, size]) => Some(format!(
                "(SELECT *, {HOP_START} AS window_start, {HOP_START} + {size} AS window_end FROM {t} \
                 CROSS JOIN UNNEST(kiln_hop_starts({ts}, {slide}, {size})) AS __kiln_hop({HOP_START}))"
            )),
            _ => None,
        };
        let replaced = text.and_then(|text| {
            datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&KilnDialect::default(), &text).tokenize().ok()
        });
        match replaced {
            Some(new) => {
                let span = tokens[i].span;
                out.extend(new.into_iter().map(|t| TokenWithSpan::new(t, span)));
                i = end;
            }
            // Not the table-valued form as Kiln knows it: leave it to the parser.
            None => {
                out.push(tokens[i].clone());
                i += 1;
            }
        }
    }
    out
}

struct Rewriter {
    error: Option<DataFusionError>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut()
            && let Err(e) = rewrite_select(select)
        {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tumble,
    Hop,
}

/// The window function a call names, if any.
fn window_call(expr: &SqlExpr) -> Option<(&Function, &'static str)> {
    let SqlExpr::Function(f) = expr else { return None };
    let [ObjectNamePart::Identifier(name)] = f.name.0.as_slice() else { return None };
    let upper = name.value.to_ascii_uppercase();
    let kind =
        ["TUMBLE", "HOP", "TUMBLE_START", "TUMBLE_END", "HOP_START", "HOP_END"].into_iter().find(|k| *k == upper)?;
    Some((f, kind))
}

fn args(f: &Function) -> Vec<SqlExpr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn span_of(f: &Function) -> datafusion::sql::sqlparser::tokenizer::Span {
    match f.name.0.first() {
        Some(ObjectNamePart::Identifier(i)) => i.span,
        _ => datafusion::sql::sqlparser::tokenizer::Span::empty(),
    }
}

fn renamed(f: &Function, name: &str) -> SqlExpr {
    let mut f = f.clone();
    let span = span_of(&f);
    f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident { value: name.into(), quote_style: None, span })]);
    SqlExpr::Function(f)
}

fn parse_expr(text: &str) -> Result<SqlExpr, DataFusionError> {
    Parser::new(&KilnDialect::default())
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| DataFusionError::Internal(format!("window rewrite: {e}")))
}

use crate::units::interval_ms;

fn rewrite_select(select: &mut Select) -> Result<(), DataFusionError> {
    let GroupByExpr::Expressions(groups, _) = &mut select.group_by else { return Ok(()) };
    let mut window: Option<(Kind, Vec<SqlExpr>)> = None;
    for group in groups.iter_mut() {
        let Some((f, name)) = window_call(group) else { continue };
        let kind = match name {
            "TUMBLE" => Kind::Tumble,
            "HOP" => Kind::Hop,
            other => {
                return Err(located(
                    span_of(f),
                    format!("{other} goes in the select list; GROUP BY takes TUMBLE(...) or HOP(...)"),
                ));
            }
        };
        if window.is_some() {
            return Err(located(span_of(f), "one window per SELECT: GROUP BY has two".into()));
        }
        let a = args(f);
        let expected = if kind == Kind::Tumble { 2 } else { 3 };
        if a.len() != expected {
            let shape = if kind == Kind::Tumble { "TUMBLE(ts, size)" } else { "HOP(ts, slide, size)" };
            return Err(located(span_of(f), format!("expected {shape}, found {} argument(s)", a.len())));
        }
        let sizes: Vec<Option<i64>> = a[1..].iter().map(interval_ms).collect();
        if let Some(bad) = a[1..].iter().zip(&sizes).find(|(_, ms)| ms.is_some_and(|ms| ms <= 0)) {
            return Err(located(span_of(f), format!("window interval `{}` must be positive", bad.0)));
        }
        if let [Some(slide), Some(size)] = sizes.as_slice()
            && slide > size
        {
            return Err(located(
                span_of(f),
                format!("HOP slide `{}` exceeds its size `{}` (windows would leave gaps)", a[1], a[2]),
            ));
        }
        *group = match kind {
            Kind::Tumble => renamed(f, "kiln_tumble_start"),
            Kind::Hop => SqlExpr::Identifier(Ident::new(HOP_START)),
        };
        window = Some((kind, a));
    }
    let Some((kind, window_args)) = window else { return Ok(()) };
    if kind == Kind::Hop {
        let Some(first) = select.from.first_mut() else {
            return Err(DataFusionError::Plan("GROUP BY HOP(...) needs a FROM".into()));
        };
        let text = format!(
            "SELECT 1 FROM t CROSS JOIN UNNEST(kiln_hop_starts({}, {}, {})) AS __kiln_hop({HOP_START})",
            window_args[0], window_args[1], window_args[2]
        );
        let parsed = Parser::new(&KilnDialect::default())
            .try_with_sql(&text)
            .and_then(|mut p| p.parse_query())
            .map_err(|e| DataFusionError::Internal(format!("window rewrite: {e}")))?;
        let SetExpr::Select(s) = *parsed.body else {
            return Err(DataFusionError::Internal("window rewrite: not a select".into()));
        };
        let join = s.from.into_iter().next().and_then(|t| t.joins.into_iter().next());
        let Some(join) = join else { return Err(DataFusionError::Internal("window rewrite: no join".into())) };
        first.joins.push(join);
    }
    // Window bounds in the select list, HAVING and QUALIFY.
    let mut bounds = Bounds { kind, args: window_args, error: None };
    for item in &mut select.projection {
        let _ = item.visit(&mut bounds);
    }
    if let Some(having) = &mut select.having {
        let _ = having.visit(&mut bounds);
    }
    bounds.error.map_or(Ok(()), Err)
}

struct Bounds {
    kind: Kind,
    args: Vec<SqlExpr>,
    error: Option<DataFusionError>,
}

impl VisitorMut for Bounds {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        let Some((f, name)) = window_call(expr) else { return ControlFlow::Continue(()) };
        let same = |a: &[SqlExpr]| {
            a.len() == self.args.len() && a.iter().zip(&self.args).all(|(x, y)| x.to_string() == y.to_string())
        };
        let result = match (self.kind, name) {
            (_, "TUMBLE" | "HOP") => {
                Err(format!("{name}(...) goes in GROUP BY; select its bounds with {name}_START / {name}_END"))
            }
            (Kind::Tumble, "TUMBLE_START") if same(&args(f)) => Ok(renamed(f, "kiln_tumble_start")),
            // Over the group expression, so the select list stays aggregate-valid.
            (Kind::Tumble, "TUMBLE_END") if same(&args(f)) => {
                parse_expr(&format!("kiln_tumble_start({}, {}) + {}", self.args[0], self.args[1], self.args[1]))
                    .map_err(|e| e.to_string())
            }
            (Kind::Hop, "HOP_START") if same(&args(f)) => Ok(SqlExpr::Identifier(Ident::new(HOP_START))),
            (Kind::Hop, "HOP_END") if same(&args(f)) => {
                parse_expr(&format!("{HOP_START} + {}", self.args[2])).map_err(|e| e.to_string())
            }
            (Kind::Tumble, "TUMBLE_START" | "TUMBLE_END") | (Kind::Hop, "HOP_START" | "HOP_END") => {
                Err(format!("{name} must repeat the arguments of the GROUP BY window"))
            }
            _ => Err(format!(
                "{name} does not match the GROUP BY window ({})",
                if self.kind == Kind::Tumble { "TUMBLE" } else { "HOP" }
            )),
        };
        match result {
            Ok(new) => {
                *expr = new;
                ControlFlow::Continue(())
            }
            Err(message) => {
                self.error = Some(located(span_of(f), message));
                ControlFlow::Break(())
            }
        }
    }
}

/// The index, among the group expressions of `plan`'s (first) aggregate, of the window
/// start this module's rewrite made: a `kiln_tumble_start` call, the HOP start column, or
/// a column that projections (and nodes that keep their input's columns) carry from one
/// of those, as the table-valued forms group by. DataFusion plans the group expressions
/// in this order, which is how kiln-data finds the window (kiln_data::stream::WindowProgram).
pub fn window_group_index(plan: &LogicalPlan) -> Option<usize> {
    let mut found = None;
    let _ = plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            found = a.group_expr.iter().position(|g| is_window_start(g, &a.input));
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether `expr`, over `input`'s output, is a window start (see [`window_group_index`]).
fn is_window_start(expr: &Expr, input: &LogicalPlan) -> bool {
    match expr {
        Expr::Alias(a) => is_window_start(&a.expr, input),
        Expr::ScalarFunction(f) => f.name() == TUMBLE_START_FN,
        Expr::Column(c) if c.name == HOP_START => true,
        Expr::Column(c) => {
            let Some(index) = column_index(input, c) else { return false };
            match input {
                LogicalPlan::Projection(p) => p.expr.get(index).is_some_and(|e| is_window_start(e, &p.input)),
                LogicalPlan::SubqueryAlias(a) => {
                    let inner = Expr::Column(Column::new_unqualified(input.schema().field(index).name()));
                    is_window_start(&inner, &a.input)
                }
                // Filters, sorts, limits and exchanges keep their input's columns.
                LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_) | LogicalPlan::Repartition(_) => {
                    input.inputs().first().is_some_and(|child| is_window_start(expr, child))
                }
                _ => false,
            }
        }
        _ => false,
    }
}

/// The index of column `c` in `plan`'s output (by qualified name, else by name alone).
fn column_index(plan: &LogicalPlan, c: &Column) -> Option<usize> {
    let schema = plan.schema();
    schema.maybe_index_of_column(c).or_else(|| schema.fields().iter().position(|f| f.name() == &c.name))
}

/// The function the TUMBLE rewrite groups by.
const TUMBLE_START_FN: &str = "kiln_tumble_start";
