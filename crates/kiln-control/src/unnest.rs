//! Kiln's `UNNEST`: lateral explode with offsets, ordinality, keep-empty, zip and maps.
//!
//! DataFusion 55 rejects `WITH OFFSET` and `WITH ORDINALITY`, drops empty and NULL lists
//! and gives no element index. Kiln plans every *lateral* UNNEST itself:
//!
//! ```sql
//! FROM t CROSS JOIN UNNEST(t.items) WITH OFFSET AS u(item, idx)      -- idx 0-based
//! FROM t CROSS JOIN UNNEST(t.items) WITH ORDINALITY AS u(item, n)    -- n 1-based (SQL)
//! FROM t, UNNEST(t.items) AS item WITH OFFSET AS idx                 -- BigQuery form
//! FROM t LEFT JOIN UNNEST(t.items) WITH OFFSET AS u(item, idx) ON TRUE  -- keep empty
//! FROM t CROSS JOIN UNNEST(t.a, t.b) AS u(x, y)                      -- zip, NULL-padded
//! FROM t CROSS JOIN UNNEST(t.m) AS u(k, v)                           -- a map: key, value
//! FROM t JOIN UNNEST(t.items) AS u(item) ON item > 3                 -- explode, then filter
//! FROM UNNEST([10, 20]) WITH ORDINALITY AS u(v, n)                   -- no left side
//! ```
//!
//! How (the decision, recorded in ARCHITECTURE.md):
//! 1. [`normalize_tokens`] moves `WITH OFFSET` behind a following column alias list, so the
//!    form `UNNEST(x) WITH OFFSET AS u(v, idx)` parses (sqlparser only knows
//!    `UNNEST(x) AS u(v) WITH OFFSET [AS idx]`). Token spans are kept, so errors still
//!    point into the file.
//! 2. [`nest_unnest_joins`] rewrites each `FROM` so that every lateral UNNEST is the last
//!    join of a parenthesized join: `(left JOIN UNNEST(...))`. A comma before an UNNEST
//!    becomes a CROSS JOIN.
//! 3. [`UnnestPlanner`], a DataFusion `RelationPlanner`, plans such a nested join: the left
//!    side through DataFusion, the UNNEST arguments against the left side's schema, and an
//!    [`ExplodeNode`] on top (a Filter above it for `JOIN ... ON condition`).
//! 4. [`KilnQueryPlanner`] turns an `ExplodeNode` into kiln-data's `ExplodeExec`.
//!
//! Output columns: the left side's columns, then one per list argument (two, key and value,
//! per map argument), then the index. Names come from the alias column list; without one,
//! a single value column takes the alias name (`AS item`), otherwise `value` / `key`,
//! `value` (numbered `value1`, ... when several arguments), and the index is `idx`
//! (WITH OFFSET) or `ordinality`. A BigQuery `WITH OFFSET AS name` names the index.
//! The new columns are qualified by the alias.
//!
//! Plain DataFusion keeps working where users write it: the `unnest()` function in a select
//! list, and a leading `FROM UNNEST(...)` without OFFSET/ORDINALITY.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Column, DFSchema, DFSchemaRef, Diagnostic, Span, TableReference};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::planner::{PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, LogicalPlanBuilder, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, JoinConstraint, JoinOperator, Query, SetExpr, Spanned, Statement as SqlStatement, TableAlias,
    TableFactor, TableWithJoins, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};
use kiln_data::{ExplodeExec, ExplodeMode};

// ---------------------------------------------------------------------------------------
// 1. Tokens

pub(crate) fn is_ws(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

pub(crate) fn is_keyword(t: &TokenWithSpan, k: Keyword) -> bool {
    matches!(&t.token, Token::Word(w) if w.keyword == k)
}

pub(crate) fn next_solid(tokens: &[TokenWithSpan], mut i: usize) -> usize {
    while i < tokens.len() && is_ws(&tokens[i]) {
        i += 1;
    }
    i
}

/// The index just past the parenthesis that closes the one at `open`.
pub(crate) fn close_paren(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites `UNNEST(...) WITH OFFSET [AS] name(c1, ..., cn)` to sqlparser's BigQuery
/// order `UNNEST(...) AS name(c1, ..., cn-1) WITH OFFSET AS cn`: the last column names the
/// offset. A bare `WITH OFFSET` gets an explicit `AS idx`, so that sqlparser does not take
/// a following keyword (`ON`, `CROSS`) for the offset's alias. Everything else is left as
/// it is; spans are kept.
pub fn normalize_tokens(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len() + 8);
    let mut i = 0;
    while i < tokens.len() {
        if !is_keyword(&tokens[i], Keyword::UNNEST) {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let open = next_solid(&tokens, i + 1);
        let args_end =
            (open < tokens.len() && tokens[open].token == Token::LParen).then(|| close_paren(&tokens, open)).flatten();
        let Some(args_end) = args_end else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        out.extend_from_slice(&tokens[i..args_end]);
        i = args_end;
        let with = next_solid(&tokens, i);
        let offset = next_solid(&tokens, with + 1);
        if !(offset < tokens.len()
            && is_keyword(&tokens[with], Keyword::WITH)
            && is_keyword(&tokens[offset], Keyword::OFFSET))
        {
            continue;
        }
        let mut name = next_solid(&tokens, offset + 1);
        let explicit_as = name < tokens.len() && is_keyword(&tokens[name], Keyword::AS);
        if explicit_as {
            name = next_solid(&tokens, name + 1);
        }
        let is_name = name < tokens.len() && matches!(tokens[name].token, Token::Word(_));
        let open_cols = next_solid(&tokens, name + 1);
        let cols_end = (is_name && open_cols < tokens.len() && tokens[open_cols].token == Token::LParen)
            .then(|| close_paren(&tokens, open_cols))
            .flatten();
        let span = tokens[with].span;
        let word = |w: &str| TokenWithSpan::new(Token::make_keyword(w), span);
        let space = || TokenWithSpan::new(Token::Whitespace(Whitespace::Space), span);
        match cols_end {
            Some(cols_end) => {
                // The last top-level comma of the column list splits off the offset's name.
                let inner = &tokens[open_cols + 1..cols_end - 1];
                let mut depth = 0i32;
                let mut split = None;
                for (k, t) in inner.iter().enumerate() {
                    match t.token {
                        Token::LParen => depth += 1,
                        Token::RParen => depth -= 1,
                        Token::Comma if depth == 0 => split = Some(k),
                        _ => {}
                    }
                }
                out.extend([space(), word("AS"), space(), tokens[name].clone(), tokens[open_cols].clone()]);
                match split {
                    Some(k) => {
                        out.extend_from_slice(&inner[..k]);
                        out.push(tokens[cols_end - 1].clone());
                        out.extend([space(), word("WITH"), space(), word("OFFSET"), space(), word("AS"), space()]);
                        out.extend(inner[k + 1..].iter().filter(|t| !is_ws(t)).cloned());
                    }
                    None => {
                        out.extend_from_slice(inner);
                        out.push(tokens[cols_end - 1].clone());
                        out.extend([space(), word("WITH"), space(), word("OFFSET"), space(), word("AS"), space()]);
                        out.push(TokenWithSpan::new(Token::make_word("idx", None), span));
                    }
                }
                i = cols_end;
            }
            None if !explicit_as => {
                // A bare `WITH OFFSET`, or `WITH OFFSET name` (BigQuery allows no AS).
                out.extend([space(), word("WITH"), space(), word("OFFSET"), space(), word("AS"), space()]);
                let keyword_follows =
                    !is_name || matches!(&tokens[name].token, Token::Word(w) if w.keyword != Keyword::NoKeyword);
                if keyword_follows {
                    out.push(TokenWithSpan::new(Token::make_word("idx", None), span));
                    i = offset + 1;
                } else {
                    out.push(tokens[name].clone());
                    i = name + 1;
                }
            }
            None => {}
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 2. The AST rewrite

/// Nests every lateral UNNEST of `statement` (see the module docs, step 2).
pub fn nest_unnest_joins(statement: &mut SqlStatement) {
    let _ = statement.visit(&mut Nester);
}

/// The same for a bare query.
pub fn nest_unnest_joins_in_query(query: &mut Query) {
    let _ = query.visit(&mut Nester);
}

struct Nester;

impl VisitorMut for Nester {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        nest_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn nest_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let from = std::mem::take(&mut select.from);
            select.from = nest_from(from);
        }
        SetExpr::SetOperation { left, right, .. } => {
            nest_set_expr(left);
            nest_set_expr(right);
        }
        _ => {}
    }
}

fn is_unnest(factor: &TableFactor) -> bool {
    matches!(factor, TableFactor::UNNEST { .. })
}

fn nest_from(from: Vec<TableWithJoins>) -> Vec<TableWithJoins> {
    let mut out: Vec<TableWithJoins> = Vec::with_capacity(from.len());
    for item in from {
        match out.last_mut() {
            // `left, UNNEST(...)` is `left CROSS JOIN UNNEST(...)`.
            Some(previous) if is_unnest(&item.relation) => {
                previous.joins.push(datafusion::sql::sqlparser::ast::Join {
                    relation: item.relation,
                    global: false,
                    join_operator: JoinOperator::CrossJoin(JoinConstraint::None),
                });
                previous.joins.extend(item.joins);
            }
            _ => out.push(item),
        }
    }
    out.into_iter().map(nest_table_with_joins).collect()
}

fn nest_factor(factor: TableFactor) -> TableFactor {
    match factor {
        TableFactor::NestedJoin { table_with_joins, alias } => {
            TableFactor::NestedJoin { table_with_joins: Box::new(nest_table_with_joins(*table_with_joins)), alias }
        }
        other => other,
    }
}

fn nest_table_with_joins(twj: TableWithJoins) -> TableWithJoins {
    let mut relation = nest_factor(twj.relation);
    let mut joins = Vec::new();
    for mut join in twj.joins {
        join.relation = nest_factor(join.relation);
        let lateral = is_unnest(&join.relation);
        joins.push(join);
        if lateral {
            relation = TableFactor::NestedJoin {
                table_with_joins: Box::new(TableWithJoins { relation, joins: std::mem::take(&mut joins) }),
                alias: None,
            };
        }
    }
    TableWithJoins { relation, joins }
}

// ---------------------------------------------------------------------------------------
// 3. Planning

/// Plans the nested UNNEST joins of step 2 (and a leading UNNEST WITH OFFSET/ORDINALITY).
#[derive(Debug, Default)]
pub struct UnnestPlanner;

pub(crate) fn located(span: datafusion::sql::sqlparser::tokenizer::Span, message: String) -> DataFusionError {
    let diagnostic = Diagnostic::new_error(message.clone(), Span::try_from_sqlparser_span(span));
    DataFusionError::Plan(message).with_diagnostic(diagnostic)
}

fn is_true(expr: &SqlExpr) -> bool {
    matches!(expr, SqlExpr::Value(v) if v.value == Value::Boolean(true))
}

impl RelationPlanner for UnnestPlanner {
    fn plan_relation(&self, relation: TableFactor, ctx: &mut dyn RelationPlannerContext) -> Result<RelationPlanning> {
        match relation {
            TableFactor::NestedJoin { table_with_joins, alias: None }
                if table_with_joins.joins.last().is_some_and(|j| is_unnest(&j.relation)) =>
            {
                let mut twj = *table_with_joins;
                let Some(join) = twj.joins.pop() else {
                    return Err(DataFusionError::Internal("nested UNNEST join without a join".into()));
                };
                let span = join.relation.span();
                let left = if twj.joins.is_empty() {
                    ctx.plan(twj.relation)?
                } else {
                    ctx.plan(TableFactor::NestedJoin { table_with_joins: Box::new(twj), alias: None })?
                };
                let (keep_empty, condition) = match join.join_operator {
                    JoinOperator::CrossJoin(JoinConstraint::None) => (false, None),
                    JoinOperator::Join(JoinConstraint::On(e)) | JoinOperator::Inner(JoinConstraint::On(e)) => {
                        (false, (!is_true(&e)).then_some(e))
                    }
                    JoinOperator::Left(JoinConstraint::On(e)) | JoinOperator::LeftOuter(JoinConstraint::On(e))
                        if is_true(&e) =>
                    {
                        (true, None)
                    }
                    JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => {
                        return Err(located(
                            span,
                            "LEFT JOIN UNNEST(...) supports only ON TRUE (keep rows whose list is empty or \
                             NULL); filter the elements in WHERE instead"
                                .into(),
                        ));
                    }
                    other => {
                        return Err(located(
                            span,
                            format!(
                                "UNNEST can be joined with CROSS JOIN, a comma, JOIN ... ON or LEFT JOIN ... ON \
                                 TRUE, not {}",
                                join_name(&other)
                            ),
                        ));
                    }
                };
                let plan = explode_relation(ctx, left, join.relation, keep_empty)?;
                let plan = match condition {
                    None => plan,
                    Some(condition) => {
                        let predicate = ctx.sql_to_expr(condition, plan.schema())?;
                        LogicalPlanBuilder::from(plan).filter(predicate)?.build()?
                    }
                };
                Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, None))))
            }
            TableFactor::UNNEST { with_offset, with_ordinality, .. } if with_offset || with_ordinality => {
                let one_row = LogicalPlanBuilder::empty(true).build()?;
                let plan = explode_relation(ctx, one_row, relation, false)?;
                Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(plan, None))))
            }
            other => Ok(RelationPlanning::Original(Box::new(other))),
        }
    }
}

fn join_name(op: &JoinOperator) -> String {
    let text = format!("{op:?}");
    text.split(['(', ' ', '{']).next().unwrap_or("this join").to_owned()
}

fn explode_relation(
    ctx: &mut dyn RelationPlannerContext,
    left: LogicalPlan,
    unnest: TableFactor,
    keep_empty: bool,
) -> Result<LogicalPlan> {
    let span = unnest.span();
    let TableFactor::UNNEST { alias, array_exprs, with_offset, with_offset_alias, with_ordinality } = unnest else {
        return Err(DataFusionError::Internal("expected an UNNEST table factor".into()));
    };
    if with_offset && with_ordinality {
        return Err(located(span, "UNNEST takes WITH OFFSET or WITH ORDINALITY, not both".into()));
    }
    if array_exprs.is_empty() {
        return Err(located(span, "UNNEST needs at least one argument".into()));
    }
    let spans: Vec<_> = array_exprs.iter().map(Spanned::span).collect();
    let mut args = Vec::with_capacity(array_exprs.len());
    for e in array_exprs {
        args.push(ctx.sql_to_expr(e, left.schema())?);
    }
    let idx_base = if with_ordinality {
        Some(1)
    } else if with_offset {
        Some(0)
    } else {
        None
    };
    let mode = ExplodeMode { keep_empty, idx_base };
    let kinds = arg_kinds(&args, left.schema()).map_err(|(i, m)| located(spans[i], m))?;
    let names = column_names(ctx, &kinds, mode, alias.as_ref(), with_offset_alias.map(|i| ctx.normalize_ident(i)))
        .map_err(|m| located(span, m.to_string()))?;
    let qualifier = alias.map(|a| ctx.normalize_ident(a.name));
    // The arguments are computed by a projection below the node, so the node carries
    // only the left side's columns and the optimizer can drop those nobody reads (the
    // list itself, usually).
    let mut exprs: Vec<Expr> = left.schema().columns().into_iter().map(Expr::Column).collect();
    let mut arg_columns = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        let name = format!("{ARG_PREFIX}{i}");
        exprs.push(arg.alias(&name));
        arg_columns.push(Expr::Column(Column::new_unqualified(name)));
    }
    let input = LogicalPlanBuilder::from(left).project(exprs)?.build()?;
    let node = ExplodeNode::try_new(input, arg_columns, mode, qualifier, names).map_err(|e| match e {
        DataFusionError::SchemaError(..) => located(span, e.strip_backtrace()),
        other => other,
    })?;
    Ok(LogicalPlan::Extension(Extension { node: Arc::new(node) }))
}

/// Per argument: the fields it produces (one per list, key and value per map).
/// An error names the argument's position.
fn arg_kinds(args: &[Expr], schema: &DFSchema) -> Result<Vec<Vec<FieldRef>>, (usize, String)> {
    args.iter()
        .enumerate()
        .map(|(i, arg)| {
            let t = arg.get_type(schema).map_err(|e| (i, e.strip_backtrace()))?;
            produced_fields(&t)
                .ok_or_else(|| (i, format!("UNNEST argument `{arg}` has type {t}; expected an array (list) or a map")))
        })
        .collect()
}

fn produced_fields(t: &DataType) -> Option<Vec<FieldRef>> {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => Some(vec![Arc::clone(f)]),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => Some(fields.iter().cloned().collect()),
            _ => None,
        },
        _ => None,
    }
}

/// An UNNEST alias that names a different number of columns than UNNEST produces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "UNNEST produces {total} column(s) ({values} element column(s){}) but its alias names {named}",
    if *with_index { " and the index" } else { "" }
)]
struct AliasMismatch {
    total: usize,
    values: usize,
    with_index: bool,
    named: usize,
}

fn column_names(
    ctx: &dyn RelationPlannerContext,
    kinds: &[Vec<FieldRef>],
    mode: ExplodeMode,
    alias: Option<&TableAlias>,
    offset_alias: Option<String>,
) -> Result<Vec<String>, AliasMismatch> {
    let values: usize = kinds.iter().map(Vec::len).sum();
    let idx_name = match mode.idx_base {
        None => None,
        Some(0) => Some(offset_alias.clone().unwrap_or_else(|| "idx".into())),
        Some(_) => Some(offset_alias.clone().unwrap_or_else(|| "ordinality".into())),
    };
    let given: Vec<String> =
        alias.map(|a| a.columns.iter().map(|c| ctx.normalize_ident(c.name.clone())).collect()).unwrap_or_default();
    let total = values + usize::from(idx_name.is_some());
    if !given.is_empty() {
        if given.len() == values {
            return Ok(given.into_iter().chain(idx_name).collect());
        }
        if given.len() == total && offset_alias.is_none() {
            return Ok(given);
        }
        return Err(AliasMismatch {
            total,
            values,
            with_index: idx_name.is_some(),
            named: given.len() + usize::from(offset_alias.is_some()),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(total);
    if values == 1
        && let Some(a) = alias
    {
        names.push(ctx.normalize_ident(a.name.clone()));
    } else {
        let numbered = kinds.len() > 1;
        for (i, k) in kinds.iter().enumerate() {
            let suffix = if numbered { (i + 1).to_string() } else { String::new() };
            if k.len() == 2 {
                names.extend([format!("key{suffix}"), format!("value{suffix}")]);
            } else {
                names.push(format!("value{suffix}"));
            }
        }
    }
    names.extend(idx_name);
    Ok(names)
}

/// Name prefix of the projected UNNEST arguments below an [`ExplodeNode`].
const ARG_PREFIX: &str = "__kiln_unnest_arg";

/// The logical explode: `input`'s columns except those the arguments read (the
/// `carried` columns), then the exploded element columns of `args`, then the index.
/// Executed by kiln-data's `ExplodeExec`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExplodeNode {
    pub input: LogicalPlan,
    pub args: Vec<Expr>,
    pub mode: ExplodeMode,
    /// The UNNEST alias, qualifying the new columns.
    pub qualifier: Option<String>,
    /// Names of the new columns (elements, then the index).
    pub names: Vec<String>,
    /// Input columns passed through, in order: all but the argument columns.
    pub carried: Vec<usize>,
    schema: DFSchemaRef,
}

impl PartialOrd for ExplodeNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.input.partial_cmp(&other.input)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        match self.args.partial_cmp(&other.args)? {
            Ordering::Equal => {}
            o => return Some(o),
        }
        (self.mode, &self.qualifier, &self.names).partial_cmp(&(other.mode, &other.qualifier, &other.names))
    }
}

impl ExplodeNode {
    pub fn try_new(
        input: LogicalPlan,
        args: Vec<Expr>,
        mode: ExplodeMode,
        qualifier: Option<String>,
        names: Vec<String>,
    ) -> Result<Self> {
        let kinds = arg_kinds(&args, input.schema()).map_err(|(_, m)| DataFusionError::Plan(m))?;
        let arg_columns: HashSet<usize> = args
            .iter()
            .filter_map(|a| match a {
                Expr::Column(c) if c.name.starts_with(ARG_PREFIX) => input.schema().index_of_column(c).ok(),
                _ => None,
            })
            .collect();
        let carried: Vec<usize> = (0..input.schema().fields().len()).filter(|i| !arg_columns.contains(i)).collect();
        let mut fields: Vec<(Option<TableReference>, FieldRef)> = carried
            .iter()
            .map(|&i| {
                let (q, f) = input.schema().qualified_field(i);
                (q.cloned(), Arc::clone(f))
            })
            .collect();
        let reference = qualifier.as_ref().map(|q| TableReference::bare(q.as_str()));
        let mut types: Vec<DataType> = kinds.iter().flatten().map(|f| f.data_type().clone()).collect();
        if mode.idx_base.is_some() {
            types.push(DataType::Int64);
        }
        if types.len() != names.len() {
            return Err(DataFusionError::Plan(format!(
                "UNNEST produces {} columns but {} names were given",
                types.len(),
                names.len()
            )));
        }
        let index_nullable = mode.keep_empty;
        for (i, (name, t)) in names.iter().zip(types).enumerate() {
            let is_idx = mode.idx_base.is_some() && i + 1 == names.len();
            let nullable = !is_idx || index_nullable;
            fields.push((reference.clone(), Arc::new(Field::new(name, t, nullable))));
        }
        let schema = DFSchema::new_with_metadata(fields, input.schema().metadata().clone())?;
        Ok(Self { input, args, mode, qualifier, names, carried, schema: Arc::new(schema) })
    }
}

impl UserDefinedLogicalNodeCore for ExplodeNode {
    fn name(&self) -> &str {
        "Explode"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.input]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.args.clone()
    }

    /// Filters on the input's columns may move below the explode; filters on the elements
    /// or the index may not.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.names.iter().cloned().collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let args: Vec<String> = self.args.iter().map(ToString::to_string).collect();
        write!(f, "Explode: args=[{}], columns=[{}]", args.join(", "), self.names.join(", "))?;
        if self.mode.keep_empty {
            write!(f, ", keep_empty")?;
        }
        if let Some(base) = self.mode.idx_base {
            write!(f, ", idx_base={base}")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, mut inputs: Vec<LogicalPlan>) -> Result<Self> {
        if inputs.len() != 1 {
            return Err(DataFusionError::Internal(format!("Explode has one input, got {}", inputs.len())));
        }
        Self::try_new(inputs.swap_remove(0), exprs, self.mode, self.qualifier.clone(), self.names.clone())
    }

    /// The carried columns asked for above; the arguments' columns are added by DataFusion
    /// from [`Self::expressions`].
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        Some(vec![output_columns.iter().filter_map(|&i| self.carried.get(i).copied()).collect()])
    }
}

// ---------------------------------------------------------------------------------------
// 4. Physical planning

/// DataFusion's physical planner plus Kiln's extension nodes.
#[derive(Debug, Default)]
pub struct KilnQueryPlanner;

#[async_trait]
impl QueryPlanner for KilnQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ExplodePlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

#[derive(Debug)]
struct ExplodePlanner;

#[async_trait]
impl ExtensionPlanner for ExplodePlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn datafusion::catalog::Session,
        planning_ctx: &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(explode) = node.as_any().downcast_ref::<ExplodeNode>() else {
            return Ok(None);
        };
        let (Some(logical), Some(physical)) = (logical_inputs.first(), physical_inputs.first()) else {
            return Err(DataFusionError::Internal("Explode without an input".into()));
        };
        let args = explode
            .args
            .iter()
            .map(|e| planner.create_physical_expr(e, logical.schema(), session, planning_ctx))
            .collect::<Result<Vec<_>>>()?;
        let schema = Arc::new(explode.schema.as_arrow().clone());
        Ok(Some(Arc::new(ExplodeExec::try_new(
            Arc::clone(physical),
            explode.carried.clone(),
            args,
            explode.mode,
            schema,
        )?)))
    }
}
