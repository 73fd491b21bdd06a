//! `COUNT(DISTINCT x)` beside `SUM`/`MIN`/`MAX` as two groupings, in batch execution.
//!
//! DataFusion's `single_distinct_aggregation_to_group_by` turns `SELECT a, COUNT(DISTINCT
//! x), SUM(y) ... GROUP BY a` into a grouping by `(a, x)` under a grouping by `a`, whose
//! accumulators spill; without it each group keeps a hash set of its distinct values,
//! which cannot spill (the example's `revenue_by_nation_year` at SF 3 under
//! `memory_limited`: "Resources exhausted ... PartialHashAggregateStream"). The rule
//! skips an aggregate whose expressions carry an alias, and type coercion adds one to any
//! aggregate whose arguments it casts (`SUM(price * (1 - discount))` with decimals), so it
//! rarely fires on real products. [`two_phase_distinct`] moves such aliases into a
//! projection above the aggregate, then runs DataFusion's rule.
//!
//! Applied where batch plans become physical ([`crate::Substrate::physical_plan`]),
//! after fingerprinting: it changes how a product is computed, not what, so build ids do
//! not move. Not for materialized views, whose incremental state keeps the distinct
//! values (compiler::product leaves the rule out for them).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::expr::{AggregateFunction, AggregateFunctionParams};
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, Projection};
use datafusion::optimizer::single_distinct_to_groupby::SingleDistinctToGroupBy;
use datafusion::optimizer::{Optimizer, OptimizerConfig};

/// `plan` with aliased single-distinct aggregates in two groupings; `plan` itself when
/// there are none, or when DataFusion's rule does not apply after all.
pub fn two_phase_distinct(plan: &LogicalPlan, config: &dyn OptimizerConfig) -> LogicalPlan {
    // Every batch plan passes here: look before copying.
    let applies = plan.exists(|node| Ok(matches!(node, LogicalPlan::Aggregate(agg) if unalias_helps(agg))));
    if !applies.unwrap_or(false) {
        return plan.clone();
    }
    let unaliased = plan.clone().transform_up(|node| match node {
        LogicalPlan::Aggregate(agg) if unalias_helps(&agg) => unalias(agg).map(Transformed::yes),
        other => Ok(Transformed::no(other)),
    });
    match unaliased {
        Ok(t) if t.transformed => {
            let rule = Optimizer::with_rules(vec![Arc::new(SingleDistinctToGroupBy::new())]);
            rule.optimize(t.data, config, |_, _| {}).unwrap_or_else(|_| plan.clone())
        }
        _ => plan.clone(),
    }
}

/// Whether some aggregate expression is aliased and, without the aliases, DataFusion's
/// rule would apply: one distinct argument, every other aggregate `sum`, `min` or `max`,
/// no FILTER or ORDER BY, no grouping sets.
fn unalias_helps(agg: &Aggregate) -> bool {
    if agg.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_))) {
        return false;
    }
    let mut distinct_args = Vec::new();
    let mut aliased = false;
    for expr in &agg.aggr_expr {
        let expr = match expr {
            Expr::Alias(a) => {
                aliased = true;
                a.expr.as_ref()
            }
            e => e,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else { return false };
        let AggregateFunctionParams { distinct, args, filter, order_by, .. } = params;
        if filter.is_some() || !order_by.is_empty() {
            return false;
        }
        if *distinct {
            for a in args {
                if !distinct_args.contains(a) {
                    distinct_args.push(a.clone());
                }
            }
        } else if !matches!(func.name().to_ascii_lowercase().as_str(), "sum" | "min" | "max") {
            return false;
        }
    }
    aliased && distinct_args.len() == 1
}

/// The aggregate without aliases on its expressions, under a projection that gives its
/// columns their names back.
fn unalias(agg: Aggregate) -> Result<LogicalPlan> {
    let original = Arc::clone(&agg.schema);
    let aggr = agg.aggr_expr.into_iter().map(|e| if let Expr::Alias(a) = e { *a.expr } else { e }).collect();
    let inner = Aggregate::try_new(agg.input, agg.group_expr, aggr)?;
    let exprs = inner
        .schema
        .iter()
        .zip(original.iter())
        .map(|((q, f), (oq, of))| {
            let column = Expr::Column(Column::new(q.cloned(), f.name()));
            if q == oq && f.name() == of.name() { column } else { column.alias_qualified(oq.cloned(), of.name()) }
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(inner)))?))
}
