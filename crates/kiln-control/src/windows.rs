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

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, Select, SetExpr, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;
use kiln_contracts::dialect::KilnDialect;

use crate::unnest::located;

/// The column a HOP window's start is exploded into.
const HOP_START: &str = kiln_data::window::HOP_START_COLUMN;

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
    let mut rewriter = Rewriter { error: None, found: Vec::new() };
    let _ = query.visit(&mut rewriter);
    rewriter.error.map_or(Ok(rewriter.found), Err)
}

struct Rewriter {
    error: Option<DataFusionError>,
    found: Vec<WindowDef>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        if let SetExpr::Select(select) = query.body.as_mut() {
            match rewrite_select(select) {
                Ok(found) => self.found.extend(found),
                Err(e) => {
                    self.error = Some(e);
                    return ControlFlow::Break(());
                }
            }
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

/// The length of a literal `INTERVAL 'n' UNIT`, `INTERVAL 'n unit'` or `INTERVAL 'n'`
/// (seconds) in milliseconds, units from MILLISECOND to DAY; `None` for anything else
/// (windows leave that to the window functions' own checks; watermarks reject it).
pub(crate) fn interval_ms(expr: &SqlExpr) -> Option<i64> {
    let SqlExpr::Interval(interval) = expr else { return None };
    let text = interval.value.to_string();
    let text = text.trim_matches('\'').trim();
    let (amount, unit) = match &interval.leading_field {
        Some(field) => (text, field.to_string()),
        None => {
            text.split_once(char::is_whitespace).map_or((text, "SECOND".to_owned()), |(a, u)| (a, u.trim().to_owned()))
        }
    };
    let amount: i64 = amount.trim().parse().ok()?;
    let unit = unit.to_ascii_uppercase();
    let ms = match unit.trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        _ => return None,
    };
    amount.checked_mul(ms)
}

fn rewrite_select(select: &mut Select) -> Result<Option<WindowDef>, DataFusionError> {
    let GroupByExpr::Expressions(groups, _) = &mut select.group_by else { return Ok(None) };
    let mut window: Option<(Kind, Vec<SqlExpr>)> = None;
    let mut found = None;
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
        found = Some(WindowDef {
            hop: kind == Kind::Hop,
            time: a[0].clone(),
            size_ms: *sizes.last().unwrap_or(&None),
            slide_ms: if kind == Kind::Hop { sizes[0] } else { *sizes.last().unwrap_or(&None) },
            span: span_of(f),
        });
        *group = match kind {
            Kind::Tumble => renamed(f, "kiln_tumble_start"),
            Kind::Hop => SqlExpr::Identifier(Ident::new(HOP_START)),
        };
        window = Some((kind, a));
    }
    let Some((kind, window_args)) = window else { return Ok(None) };
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
    bounds.error.map_or(Ok(found), Err)
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
