//! The canonical form of an optimized logical plan (hashed into `query_fp`) and the column
//! lineage read from the same walk.
//!
//! # Canonical form
//!
//! Every column is named by its *identity* instead of its alias or position:
//! - a column read from a source or product is `table.column` (`table#k.column` when the
//!   plan reads the same table more than once: the k-th scan, depth first);
//! - a computed column is the canonical rendering of the expression that computes it, with
//!   its inputs replaced by their identities (`sum(orders.o_totalprice)`), shortened to
//!   `$<16 hex>` (a sha256 prefix) when longer than [`MAX_IDENTITY`] characters;
//! - a passed-through column keeps its input's identity.
//!
//! So alias names (tables, subqueries, CTEs, intermediate columns) never appear, a CTE and
//! the same subquery written inline give the same form, and adding a column does not shift
//! the names of the others (which keeps the semantic diff small). On top of that:
//! - `SubqueryAlias` and `Repartition` nodes are transparent (names and parallelism), and
//!   so is a `Projection` that only selects, reorders or renames columns;
//! - order-insensitive lists are sorted: projection and aggregate expressions (the final
//!   column order is kept once, by the `Output` root), conjuncts of filters and join
//!   conditions, join keys, union inputs and `VALUES` rows;
//! - a RIGHT join is written as the LEFT join with its inputs swapped, and the inputs of
//!   INNER and FULL joins are ordered by their canonical encoding, with each key pair
//!   written in a fixed order;
//! - the root is an `Output` node listing `name := identity` for every output column in
//!   order, so a renamed or reordered output column is a change.
//!
//! What stays in: every expression with its literal values and types (`Int64(5)` differs
//! from `Float64(5)`), functions by name, join types, grouping, ordering, limits, and the
//! tables read by their catalog name (the identity of a source or product, never a path).
//! Correlated subqueries the optimizer could not decorrelate keep their outer reference
//! names; that is the one place an alias name can reach the encoding.
//!
//! # Lineage
//!
//! For every output column: `value` (base columns its values are computed from) and the
//! columns that decide which rows exist and how they are grouped or ordered (`filter`,
//! `join`, `group`, `order`). A row-level influence applies to every column of the node
//! that introduces it and of every node above. Unknown node kinds (extensions) are
//! conservative: each output column depends on every input column.

use std::collections::{BTreeSet, HashMap};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, JoinType, NullEquality};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Distinct, Expr, ExprSchemable, LogicalPlan, SortExpr};

pub mod encode;
mod shape;
mod values;

use crate::unnest::ExplodeNode;
use kiln_artifact::plan::{CANONICAL_PLAN_VERSION, REPORT_FORMAT_VERSION, sha256_hex};
use kiln_artifact::{BaseColumn, CanonicalPlan, ColumnLineage, Lineage, PlanItem, PlanNode};

/// Longer identities are replaced by `$` + the first 16 hex digits of their sha256.
pub const MAX_IDENTITY: usize = 64;

/// A plan's canonical form and its output columns' lineage.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub plan: CanonicalPlan,
    pub lineage: Vec<ColumnLineage>,
    /// The base columns whose values reach an argument of `kiln_pii_hash`: what the
    /// project hashes before publishing, which the untrusted surface must not read raw.
    pub hashed: BTreeSet<BaseColumn>,
}

impl Analysis {
    /// `query_fp`.
    pub fn query_fp(&self) -> String {
        self.plan.fingerprint()
    }

    pub fn lineage_record(&self, product: &str) -> Lineage {
        Lineage { format_version: REPORT_FORMAT_VERSION, product: product.to_owned(), columns: self.lineage.clone() }
    }
}

/// Canonicalizes an optimized plan and reads its lineage.
pub fn analyze(plan: &LogicalPlan) -> Analysis {
    let mut scans: HashMap<String, usize> = HashMap::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            *scans.entry(scan.table_name.to_string()).or_default() += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut walker = Walker { scan_counts: scans, scan_seen: HashMap::new(), hashed: BTreeSet::new() };
    let out = walker.walk(plan);
    let items = plan
        .schema()
        .fields()
        .iter()
        .zip(&out.ids)
        .map(|(f, id)| PlanItem::new("column", format!("{} := {id}", f.name())))
        .collect();
    let lineage = plan.schema().fields().iter().zip(&out.lins).map(|(f, lin)| lin.record(f.name())).collect();
    Analysis {
        plan: CanonicalPlan {
            format_version: CANONICAL_PLAN_VERSION,
            root: PlanNode { kind: "Output".into(), items, children: vec![out.node] },
        },
        lineage,
        hashed: walker.hashed,
    }
}

/// Lineage sets of one column (or of a node's rows: `value` empty).
#[derive(Debug, Clone, Default)]
struct Lin {
    value: BTreeSet<BaseColumn>,
    filter: BTreeSet<BaseColumn>,
    join: BTreeSet<BaseColumn>,
    group: BTreeSet<BaseColumn>,
    order: BTreeSet<BaseColumn>,
}

impl Lin {
    fn merge(&mut self, other: &Lin) {
        self.value.extend(other.value.iter().cloned());
        self.merge_rows(other);
    }

    /// Merges everything but the values.
    fn merge_rows(&mut self, other: &Lin) {
        self.filter.extend(other.filter.iter().cloned());
        self.join.extend(other.join.iter().cloned());
        self.group.extend(other.group.iter().cloned());
        self.order.extend(other.order.iter().cloned());
    }

    /// The values of `other` become influences of kind `role`; its own influences carry.
    fn absorb(&mut self, other: &Lin, role: Role) {
        let target = match role {
            Role::Filter => &mut self.filter,
            Role::Join => &mut self.join,
            Role::Group => &mut self.group,
            Role::Order => &mut self.order,
        };
        target.extend(other.value.iter().cloned());
        self.merge_rows(other);
    }

    fn record(&self, column: &str) -> ColumnLineage {
        let v = |s: &BTreeSet<BaseColumn>| s.iter().cloned().collect();
        ColumnLineage {
            column: column.to_owned(),
            value: v(&self.value),
            filter: v(&self.filter),
            join: v(&self.join),
            group: v(&self.group),
            order: v(&self.order),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Filter,
    Join,
    Group,
    Order,
}

/// The result of walking one node: its canonical form, and per output column its identity
/// and lineage; `rows` is the row-level influence on all its columns.
struct Walked {
    node: PlanNode,
    ids: Vec<String>,
    lins: Vec<Lin>,
    rows: Lin,
}

/// The columns an expression of a node can see: the concatenation of its inputs.
struct Scope {
    schema: DFSchema,
    ids: Vec<String>,
    lins: Vec<Lin>,
}

impl Scope {
    fn of(inputs: &[(&LogicalPlan, &Walked)]) -> Self {
        let mut schema = DFSchema::empty();
        let (mut ids, mut lins) = (Vec::new(), Vec::new());
        for (plan, walked) in inputs {
            // Inputs of one node have distinct qualified names (the planner guarantees it).
            schema = schema.join(plan.schema()).unwrap_or(schema);
            ids.extend(walked.ids.iter().cloned());
            lins.extend(walked.lins.iter().cloned());
        }
        Self { schema, ids, lins }
    }

    fn index(&self, column: &Column) -> Option<usize> {
        self.schema.index_of_column(column).ok().filter(|&i| i < self.ids.len())
    }

    /// A column's identity, `?<name>` when the scope does not have it.
    fn column_text(&self, c: &Column) -> String {
        self.index(c).map_or_else(|| format!("?{}", c.flat_name()), |i| self.ids[i].clone())
    }

    /// The expression with aliases removed and columns replaced by their identities
    /// ([`encode::expr`]).
    fn render(&self, expr: &Expr) -> String {
        encode::expr(expr, &|c| self.column_text(c))
    }

    fn render_sort(&self, sort: &SortExpr) -> String {
        encode::sort(sort, &|c| self.column_text(c))
    }

    /// The identity of a column computed by `expr`: its input's when it is one, else its
    /// rendering (shortened when long).
    fn identity(&self, expr: &Expr) -> String {
        if let Expr::Column(c) = expr.clone().unalias_nested().data
            && let Some(i) = self.index(&c)
        {
            return self.ids[i].clone();
        }
        shorten(self.render(expr))
    }

    /// The union of the lineage of every column `expr` reads (subqueries included).
    fn lin(&self, expr: &Expr, walker: &mut Walker) -> Lin {
        let _ = expr.apply(|e| {
            if let Expr::ScalarFunction(f) = e
                && f.name() == "kiln_pii_hash"
            {
                for c in f.args.iter().flat_map(Expr::column_refs) {
                    if let Some(i) = self.index(c) {
                        walker.hashed.extend(self.lins[i].value.iter().cloned());
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let mut lin = Lin::default();
        for c in expr.column_refs() {
            if let Some(i) = self.index(c) {
                lin.merge(&self.lins[i]);
            }
        }
        for sub in subqueries(expr) {
            let walked = walker.walk(&sub);
            for l in &walked.lins {
                lin.merge(l);
            }
            lin.merge_rows(&walked.rows);
        }
        lin
    }
}

fn shorten(text: String) -> String {
    if text.len() <= MAX_IDENTITY { text } else { format!("${}", &sha256_hex(text.as_bytes())[..16]) }
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

fn items(role: &str, texts: Vec<String>) -> impl Iterator<Item = PlanItem> + '_ {
    texts.into_iter().map(move |t| PlanItem::new(role, t))
}

/// The plans of the subqueries inside an expression.
fn subqueries(expr: &Expr) -> Vec<LogicalPlan> {
    let mut out = Vec::new();
    let _ = expr.apply(|e| {
        match e {
            Expr::ScalarSubquery(s) => out.push(s.subquery.as_ref().clone()),
            Expr::InSubquery(s) => out.push(s.subquery.subquery.as_ref().clone()),
            Expr::Exists(s) => out.push(s.subquery.subquery.as_ref().clone()),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out
}

struct Walker {
    scan_counts: HashMap<String, usize>,
    scan_seen: HashMap<String, usize>,
    /// [`Analysis::hashed`], gathered by [`Scope::lin`].
    hashed: BTreeSet<BaseColumn>,
}

impl Walker {
    fn walk(&mut self, plan: &LogicalPlan) -> Walked {
        match plan {
            LogicalPlan::SubqueryAlias(a) => {
                return self.walk(&a.input);
            }
            LogicalPlan::Repartition(r) => {
                return self.walk(&r.input);
            }
            LogicalPlan::Subquery(s) => {
                return self.walk(&s.subquery);
            }
            LogicalPlan::TableScan(scan) => return self.scan(scan),
            _ => {}
        }
        let inputs: Vec<&LogicalPlan> = plan.inputs();
        let walked: Vec<Walked> = inputs.iter().map(|p| self.walk(p)).collect();
        let pairs: Vec<(&LogicalPlan, &Walked)> = inputs.iter().copied().zip(&walked).collect();
        let scope = Scope::of(&pairs);
        let mut rows = Lin::default();
        for w in &walked {
            rows.merge_rows(&w.rows);
        }
        if let LogicalPlan::Projection(p) = plan
            && let Some(indices) = p
                .expr
                .iter()
                .map(|e| match e.clone().unalias_nested().data {
                    Expr::Column(c) => scope.index(&c),
                    _ => None,
                })
                .collect::<Option<Vec<usize>>>()
            && let Some(input) = walked.first()
        {
            // Selecting, reordering and renaming columns changes no row and no value: the
            // node is transparent (the `Output` root keeps the final names and order).
            let ids = indices.iter().map(|&i| scope.ids[i].clone()).collect();
            let lins = indices.iter().map(|&i| scope.lins[i].clone()).collect();
            return Walked { node: input.node.clone(), ids, lins, rows: input.rows.clone() };
        }
        let mut node_items: Vec<PlanItem> = Vec::new();
        let mut expr_subplans: Vec<PlanNode> = Vec::new();
        let mut sub = |walker: &mut Walker, exprs: &[&Expr]| {
            for e in exprs {
                for s in subqueries(e) {
                    let w = walker.walk(&s);
                    expr_subplans.push(PlanNode { kind: "Subquery".into(), items: Vec::new(), children: vec![w.node] });
                }
            }
        };
        // Passed-through columns by default; nodes that compute columns override.
        let mut ids: Option<Vec<String>> = None;
        let mut lins: Option<Vec<Lin>> = None;
        let mut children: Vec<PlanNode> = walked.iter().map(|w| w.node.clone()).collect();
        let kind: String;
        match plan {
            LogicalPlan::Projection(p) => {
                kind = "Projection".into();
                node_items.extend(items("expr", sorted(p.expr.iter().map(|e| scope.render(e)).collect())));
                ids = Some(p.expr.iter().map(|e| scope.identity(e)).collect());
                lins = Some(p.expr.iter().map(|e| scope.lin(e, self)).collect());
                sub(self, &p.expr.iter().collect::<Vec<_>>());
            }
            LogicalPlan::Filter(f) => {
                kind = "Filter".into();
                let conjuncts = split_conjunction(&f.predicate);
                node_items.extend(items("predicate", sorted(conjuncts.iter().map(|e| scope.render(e)).collect())));
                let lin = scope.lin(&f.predicate, self);
                rows.absorb(&lin, Role::Filter);
                sub(self, &[&f.predicate]);
            }
            LogicalPlan::Aggregate(a) => {
                kind = "Aggregate".into();
                node_items.extend(items("group", sorted(a.group_expr.iter().map(|e| scope.render(e)).collect())));
                node_items.extend(items("aggregate", sorted(a.aggr_expr.iter().map(|e| scope.render(e)).collect())));
                for g in &a.group_expr {
                    let lin = scope.lin(g, self);
                    rows.absorb(&lin, Role::Group);
                }
                let all: Vec<&Expr> = a.group_expr.iter().chain(&a.aggr_expr).collect();
                if all.len() == plan.schema().fields().len() {
                    ids = Some(all.iter().map(|e| scope.identity(e)).collect());
                    lins = Some(all.iter().map(|e| scope.lin(e, self)).collect());
                }
                sub(self, &all);
            }
            LogicalPlan::Window(w) => {
                kind = "Window".into();
                node_items.extend(items("window", sorted(w.window_expr.iter().map(|e| scope.render(e)).collect())));
                let mut window_ids = scope.ids.clone();
                let mut window_lins = scope.lins.clone();
                for e in &w.window_expr {
                    window_ids.push(scope.identity(e));
                    let mut lin = Lin::default();
                    if let Expr::WindowFunction(f) = e.clone().unalias_nested().data {
                        for arg in &f.params.args {
                            lin.merge(&scope.lin(arg, self));
                        }
                        for p in &f.params.partition_by {
                            lin.absorb(&scope.lin(p, self), Role::Group);
                        }
                        for o in &f.params.order_by {
                            lin.absorb(&scope.lin(&o.expr, self), Role::Order);
                        }
                        if let Some(filter) = &f.params.filter {
                            lin.absorb(&scope.lin(filter, self), Role::Filter);
                        }
                    } else {
                        lin = scope.lin(e, self);
                    }
                    window_lins.push(lin);
                }
                ids = Some(window_ids);
                lins = Some(window_lins);
            }
            LogicalPlan::Sort(s) => {
                kind = "Sort".into();
                node_items.extend(items("key", s.expr.iter().map(|k| scope.render_sort(k)).collect()));
                if let Some(fetch) = s.fetch {
                    node_items.push(PlanItem::new("fetch", fetch.to_string()));
                }
                for k in &s.expr {
                    let lin = scope.lin(&k.expr, self);
                    rows.absorb(&lin, Role::Order);
                }
            }
            LogicalPlan::Limit(l) => {
                kind = "Limit".into();
                if let Some(skip) = &l.skip {
                    node_items.push(PlanItem::new("skip", scope.render(skip)));
                }
                if let Some(fetch) = &l.fetch {
                    node_items.push(PlanItem::new("fetch", scope.render(fetch)));
                }
            }
            LogicalPlan::Join(j) => {
                kind = "Join".into();
                let (mut join_type, mut swap) = (j.join_type, false);
                if matches!(
                    join_type,
                    JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark
                ) {
                    join_type = join_type.swap();
                    swap = true;
                }
                let symmetric = matches!(join_type, JoinType::Inner | JoinType::Full);
                if symmetric && walked.len() == 2 && walked[1].node_text() < walked[0].node_text() {
                    swap = !swap;
                }
                if swap {
                    children.reverse();
                }
                node_items.push(PlanItem::new("type", join_type_name(join_type)));
                let on: Vec<String> =
                    j.on.iter()
                        .map(|(l, r)| {
                            let (mut a, mut b) = (scope.render(l), scope.render(r));
                            if swap || (symmetric && b < a) {
                                std::mem::swap(&mut a, &mut b);
                            }
                            format!("{a} = {b}")
                        })
                        .collect();
                node_items.extend(items("on", sorted(on)));
                if let Some(filter) = &j.filter {
                    let conjuncts = split_conjunction(filter);
                    node_items.extend(items("filter", sorted(conjuncts.iter().map(|e| scope.render(e)).collect())));
                    let lin = scope.lin(filter, self);
                    rows.absorb(&lin, Role::Join);
                }
                if j.null_equality == NullEquality::NullEqualsNull {
                    node_items.push(PlanItem::new("nulls", "equal"));
                }
                for (l, r) in &j.on {
                    let (ll, rl) = (scope.lin(l, self), scope.lin(r, self));
                    rows.absorb(&ll, Role::Join);
                    rows.absorb(&rl, Role::Join);
                }
            }
            LogicalPlan::Union(_) => {
                kind = "Union".into();
                children.sort_by_key(encode_node);
                let n = plan.schema().fields().len();
                let mut union_ids = Vec::with_capacity(n);
                let mut union_lins = Vec::with_capacity(n);
                for i in 0..n {
                    let parts = sorted(walked.iter().filter_map(|w| w.ids.get(i).cloned()).collect());
                    union_ids.push(shorten(format!("union({})", parts.join(", "))));
                    let mut lin = Lin::default();
                    for w in &walked {
                        if let Some(l) = w.lins.get(i) {
                            lin.merge(l);
                        }
                    }
                    union_lins.push(lin);
                }
                ids = Some(union_ids);
                lins = Some(union_lins);
            }
            LogicalPlan::Distinct(Distinct::All(_)) => {
                kind = "Distinct".into();
                for l in &scope.lins {
                    rows.absorb(l, Role::Group);
                }
            }
            LogicalPlan::Distinct(Distinct::On(d)) => {
                kind = "DistinctOn".into();
                node_items.extend(items("on", d.on_expr.iter().map(|e| scope.render(e)).collect()));
                node_items.extend(items("select", sorted(d.select_expr.iter().map(|e| scope.render(e)).collect())));
                for s in d.sort_expr.iter().flatten() {
                    node_items.push(PlanItem::new("key", scope.render_sort(s)));
                }
                for e in &d.on_expr {
                    let lin = scope.lin(e, self);
                    rows.absorb(&lin, Role::Group);
                }
                ids = Some(d.select_expr.iter().map(|e| scope.identity(e)).collect());
                lins = Some(d.select_expr.iter().map(|e| scope.lin(e, self)).collect());
            }
            LogicalPlan::Values(v) => {
                kind = "Values".into();
                let rendered: Vec<String> = v
                    .values
                    .iter()
                    .map(|row| row.iter().map(|e| scope.render(e)).collect::<Vec<_>>().join(", "))
                    .collect();
                let rendered = {
                    let mut r = rendered;
                    r.sort();
                    r
                };
                let tag = sha256_hex(rendered.join("\n").as_bytes());
                node_items.extend(items("row", rendered));
                ids = Some(
                    plan.schema()
                        .fields()
                        .iter()
                        .enumerate()
                        .map(|(i, _)| format!("values@{}.{i}", &tag[..16]))
                        .collect(),
                );
            }
            LogicalPlan::EmptyRelation(e) => {
                kind = "Empty".into();
                node_items.push(PlanItem::new("produce_one_row", e.produce_one_row.to_string()));
                ids = Some((0..plan.schema().fields().len()).map(|i| format!("empty.{i}")).collect());
            }
            LogicalPlan::Unnest(u) => {
                kind = "Unnest".into();
                node_items.extend(items(
                    "column",
                    u.exec_columns.iter().map(|c| scope.render(&Expr::Column(c.clone()))).collect(),
                ));
                node_items.push(PlanItem::new("options", unnest_options(&u.options, &scope)));
                let unnested: BTreeSet<usize> =
                    u.list_type_columns.iter().map(|(i, _)| *i).chain(u.struct_type_columns.iter().copied()).collect();
                let mut seen: HashMap<usize, usize> = HashMap::new();
                let mut unnest_ids = Vec::new();
                let mut unnest_lins = Vec::new();
                for (out, &dep) in u.dependency_indices.iter().enumerate() {
                    let base = scope.ids.get(dep).cloned().unwrap_or_else(|| format!("?{dep}"));
                    let id = if unnested.contains(&dep) {
                        let k = seen.entry(dep).or_default();
                        let field = plan.schema().field(out).name().rsplit('.').next().unwrap_or_default().to_owned();
                        let id = format!("unnest{k}({base}).{field}");
                        *k += 1;
                        shorten(id)
                    } else {
                        base
                    };
                    unnest_ids.push(id);
                    unnest_lins.push(scope.lins.get(dep).cloned().unwrap_or_default());
                }
                ids = Some(unnest_ids);
                lins = Some(unnest_lins);
            }
            LogicalPlan::Extension(e) if let Some(x) = e.node.as_any().downcast_ref::<ExplodeNode>() => {
                // Kiln's UNNEST: the argument order matters (zip), so it is kept.
                kind = "Explode".into();
                let args: Vec<String> = x.args.iter().map(|a| scope.render(a)).collect();
                node_items.extend(items("arg", args.clone()));
                node_items.push(PlanItem::new("keep_empty", x.mode.keep_empty.to_string()));
                if let Some(base) = x.mode.idx_base {
                    node_items.push(PlanItem::new("idx_base", base.to_string()));
                }
                let arg_lins: Vec<Lin> = x.args.iter().map(|a| scope.lin(a, self)).collect();
                let mut all = Lin::default();
                for l in &arg_lins {
                    all.merge(l);
                }
                // Which parent rows exist, and how often, depends on the lists: a join.
                rows.absorb(&all, Role::Join);
                let source = shorten(format!("explode({})", args.join(", ")));
                let mut out_ids: Vec<String> = x.carried.iter().map(|&i| scope.ids[i].clone()).collect();
                let mut out_lins: Vec<Lin> = x.carried.iter().map(|&i| scope.lins[i].clone()).collect();
                for (i, arg) in x.args.iter().enumerate() {
                    let width = match arg.get_type(x.input.schema()) {
                        Ok(datafusion::arrow::datatypes::DataType::Map(..)) => 2,
                        _ => 1,
                    };
                    for k in 0..width {
                        out_ids.push(format!("{source}.{i}.{k}"));
                        out_lins.push(arg_lins[i].clone());
                    }
                }
                if let Some(base) = x.mode.idx_base {
                    out_ids.push(format!("{source}.idx{base}"));
                    out_lins.push(all);
                }
                ids = Some(out_ids);
                lins = Some(out_lins);
                sub(self, &x.args.iter().collect::<Vec<_>>());
            }
            LogicalPlan::RecursiveQuery(r) => {
                // Its inputs (the static and the recursive term) are its children.
                kind = "RecursiveQuery".into();
                node_items.push(PlanItem::new("distinct", r.is_distinct.to_string()));
                conservative(&scope, plan, &mut ids, &mut lins);
            }
            LogicalPlan::Extension(e) => {
                // Kiln's only extension node is Explode (above); anything else is refused
                // by the surfaces before it gets here, so its name says enough.
                kind = format!("Extension:{}", e.node.name());
                conservative(&scope, plan, &mut ids, &mut lins);
            }
            other => {
                // Statements (DDL, DML, EXPLAIN, ...) never reach a product's plan.
                kind = statement_kind(other).to_owned();
                conservative(&scope, plan, &mut ids, &mut lins);
            }
        }
        children.extend(expr_subplans);
        let node = PlanNode { kind, items: node_items, children };
        let ids = ids.unwrap_or_else(|| passthrough_ids(plan, &scope, &node));
        let lins = lins.unwrap_or_else(|| passthrough_lins(plan, &scope));
        let lins = lins
            .into_iter()
            .map(|mut l| {
                l.merge_rows(&rows);
                l
            })
            .collect();
        Walked { node, ids, lins, rows }
    }

    fn scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Walked {
        let table = scan.table_name.to_string();
        let seen = self.scan_seen.entry(table.clone()).or_default();
        let name = if self.scan_counts.get(&table).copied().unwrap_or(0) > 1 {
            format!("{table}#{seen}")
        } else {
            table.clone()
        };
        *seen += 1;
        let columns: Vec<String> = scan.projected_schema.fields().iter().map(|f| f.name().clone()).collect();
        let base = |c: &str| BaseColumn { table: table.clone(), column: c.to_owned() };
        let mut items = vec![PlanItem::new("table", name.clone())];
        items.extend(self::items("column", sorted(columns.clone())));
        let mut rows = Lin::default();
        let filters: Vec<String> = scan
            .filters
            .iter()
            .flat_map(|f| split_conjunction(f))
            .map(|f| {
                for c in f.column_refs() {
                    rows.filter.insert(base(&c.name));
                }
                encode::expr(f, &|c| format!("{name}.{}", c.name))
            })
            .collect();
        items.extend(self::items("filter", sorted(filters)));
        if let Some(fetch) = scan.fetch {
            items.push(PlanItem::new("fetch", fetch.to_string()));
        }
        let ids = columns.iter().map(|c| format!("{name}.{c}")).collect();
        let lins = columns
            .iter()
            .map(|c| {
                let mut l = Lin::default();
                l.value.insert(base(c));
                l.merge_rows(&rows);
                l
            })
            .collect();
        Walked { node: PlanNode { kind: "TableScan".into(), items, children: Vec::new() }, ids, lins, rows }
    }
}

impl Walked {
    fn node_text(&self) -> String {
        encode_node(&self.node)
    }
}

fn encode_node(node: &PlanNode) -> String {
    CanonicalPlan { format_version: CANONICAL_PLAN_VERSION, root: node.clone() }.encode()
}

/// Output columns that are input columns (by qualified name); others get a node-scoped id.
fn passthrough_ids(plan: &LogicalPlan, scope: &Scope, node: &PlanNode) -> Vec<String> {
    let mut tag: Option<String> = None;
    plan.schema()
        .iter()
        .map(|(q, f)| {
            let column = Column::new(q.cloned(), f.name());
            match scope.index(&column) {
                Some(i) => scope.ids[i].clone(),
                None => {
                    let t = tag.get_or_insert_with(|| sha256_hex(encode_node(node).as_bytes())[..16].to_owned());
                    format!("{}@{t}.{}", node.kind, f.name())
                }
            }
        })
        .collect()
}

fn passthrough_lins(plan: &LogicalPlan, scope: &Scope) -> Vec<Lin> {
    plan.schema()
        .iter()
        .map(|(q, f)| match scope.index(&Column::new(q.cloned(), f.name())) {
            Some(i) => scope.lins[i].clone(),
            None => Lin::default(),
        })
        .collect()
}

/// Every output column depends on every input column.
fn conservative(scope: &Scope, plan: &LogicalPlan, ids: &mut Option<Vec<String>>, lins: &mut Option<Vec<Lin>>) {
    let mut all = Lin::default();
    for l in &scope.lins {
        all.merge(l);
    }
    *lins = Some(vec![all; plan.schema().fields().len()]);
    let _ = ids;
}

/// A join type as the canonical plan writes it.
fn join_type_name(t: JoinType) -> &'static str {
    match t {
        JoinType::Inner => "Inner",
        JoinType::Left => "Left",
        JoinType::Right => "Right",
        JoinType::Full => "Full",
        JoinType::LeftSemi => "LeftSemi",
        JoinType::RightSemi => "RightSemi",
        JoinType::LeftAnti => "LeftAnti",
        JoinType::RightAnti => "RightAnti",
        JoinType::LeftMark => "LeftMark",
        JoinType::RightMark => "RightMark",
    }
}

/// DataFusion's UNNEST options: `UnnestOptions { null_handling: Preserve, recursions: [] }`
/// (recursions with their columns' identities).
fn unnest_options(o: &datafusion::common::UnnestOptions, scope: &Scope) -> String {
    use datafusion::common::NullHandling;
    let nulls = match o.null_handling {
        NullHandling::Drop => "Drop",
        NullHandling::Preserve => "Preserve",
        NullHandling::PreserveAndExpandEmpty => "PreserveAndExpandEmpty",
    };
    let recursions: Vec<String> = o
        .recursions
        .iter()
        .map(|r| {
            format!(
                "RecursionUnnestOption {{ input: {}, output: {}, depth: {} }}",
                scope.column_text(&r.input_column),
                r.output_column.name,
                r.depth
            )
        })
        .collect();
    format!("UnnestOptions {{ null_handling: {nulls}, recursions: [{}] }}", recursions.join(", "))
}

/// The kind of a plan node that is not a query operator.
fn statement_kind(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Statement(_) => "Statement",
        LogicalPlan::Explain(_) => "Explain",
        LogicalPlan::Analyze(_) => "Analyze",
        LogicalPlan::Dml(_) => "Dml",
        LogicalPlan::Ddl(_) => "Ddl",
        LogicalPlan::Copy(_) => "Copy",
        LogicalPlan::DescribeTable(_) => "DescribeTable",
        _ => "Plan",
    }
}
