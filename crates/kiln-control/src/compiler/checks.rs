//! Compiling a product's checks and tests.
//!
//! A *check* is a query whose rows are failures, planned and type-checked like a product:
//!
//! | definition | failing rows |
//! |---|---|
//! | `PRIMARY KEY (k)`, `UNIQUE (k)` | one row per duplicated key (its columns and `kiln_rows`, how many rows share it); NULL keys are not compared |
//! | `REFERENCES t (r)` | every row whose non-NULL `k` has no match in `t` |
//! | `CHECK (e)` | every row where `e` is false (true and NULL pass, as in SQL) |
//! | `CREATE AUDIT ... AS q` | the rows of `q` |
//! | `CREATE AUDIT ... WITH (min_rows = m, max_rows = n)` | one row (`kiln_rows`) when the row count is outside `[m, n]` |
//!
//! The engine runs them on a product's *staged* build before it commits, by swapping the
//! product's scans for the staged files ([`rebind_scans`]); other tables are read as
//! committed. [`Thresholds`] turn a failing-row count into pass, warn or error.
//!
//! A *test* ([`CompiledTest`]) is a product's own plan with every table it reads swapped
//! for fixture rows, compared with expected rows: nothing reads the warehouse.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::{TableProvider, provider_as_source};
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, cast};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Query, SetExpr, Statement as SqlStatement, UnaryOperator};
use datafusion::sql::sqlparser::parser::Parser;
use kiln_artifact::CheckStatus;
use kiln_contracts::dialect::KilnDialect;

use super::schema::planning_error;
use super::substrate::Substrate;
use crate::dialect::{AuditDef, ConstraintDef, ConstraintKind, FixtureRows, ProductDef, TestDef};
use crate::error::{ControlError, Location};
use crate::surface::Surface;

/// How many failing rows of each check are kept in `<product>__failures`.
pub const FAILURES_KEPT: usize = 100;

/// Options an audit accepts.
const AUDIT_OPTIONS: [&str; 5] = ["severity", "warn_after", "error_after", "min_rows", "max_rows"];

/// What a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    PrimaryKey,
    Unique,
    References,
    Check,
    Audit,
    RowCount,
}

impl CheckKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::PrimaryKey => "primary_key",
            CheckKind::Unique => "unique",
            CheckKind::References => "references",
            CheckKind::Check => "check",
            CheckKind::Audit => "audit",
            CheckKind::RowCount => "row_count",
        }
    }
}

/// When failing rows make a check warn or fail: more than `warn_after` warns, more than
/// `error_after` fails (blocks the commit). Constraints fail on any row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_after: Option<u64>,
    pub error_after: Option<u64>,
}

impl Thresholds {
    /// Any failing row fails the check.
    pub const STRICT: Thresholds = Thresholds { warn_after: None, error_after: Some(0) };

    pub fn status(&self, failing: u64) -> CheckStatus {
        if self.error_after.is_some_and(|n| failing > n) {
            CheckStatus::Error
        } else if self.warn_after.is_some_and(|n| failing > n) {
            CheckStatus::Warn
        } else {
            CheckStatus::Pass
        }
    }

    /// `error` when the check can block a commit, else `warn`.
    pub fn severity(&self) -> &'static str {
        if self.error_after.is_some() { "error" } else { "warn" }
    }
}

/// A check ready to run (see the module docs).
#[derive(Debug, Clone)]
pub struct CompiledCheck {
    /// The constraint's name (`CONSTRAINT name`, or its definition such as
    /// `primary_key(o_orderkey)`), or the audit's name.
    pub name: String,
    pub product: String,
    pub kind: CheckKind,
    pub at: Location,
    pub thresholds: Thresholds,
    /// The failing-rows query as planned (not optimized: the engine swaps scans first).
    pub plan: LogicalPlan,
    /// The tables it reads besides its product.
    pub reads: BTreeSet<String>,
}

/// A unit test ready to run: the product's plan, the fixture for each table it reads, the
/// expected rows.
#[derive(Debug, Clone)]
pub struct CompiledTest {
    pub name: String,
    pub product: String,
    pub at: Location,
    /// The product's plan (unoptimized, with its canonical sort) whose scans the fixtures
    /// replace.
    pub plan: LogicalPlan,
    /// The product's schema (what the expected rows are cast to).
    pub schema: SchemaRef,
    pub given: Vec<(String, CompiledFixture)>,
    pub expect: CompiledFixture,
}

/// Fixture rows, typed as the table they stand for.
#[derive(Debug, Clone)]
pub enum CompiledFixture {
    /// A query over literals, projected and cast to the table's columns.
    Rows(LogicalPlan),
    /// A file read with the table's schema.
    File { path: PathBuf, format: FixtureFormat, schema: SchemaRef, at: Location },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixtureFormat {
    /// With a header line.
    Csv,
    /// Newline-delimited JSON.
    Json,
    Parquet,
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn check_error(at: &Location, check: &str, message: impl Into<String>) -> ControlError {
    ControlError::Check { at: at.clone(), check: check.to_owned(), message: message.into() }
}

impl Substrate {
    /// The checks a product's constraints define. The product's table must be registered
    /// (it is once the product compiled, or was registered from the compile cache).
    pub async fn compile_constraints(&self, def: &ProductDef) -> Result<Vec<CompiledCheck>, ControlError> {
        let mut out = Vec::with_capacity(def.constraints.len());
        for c in &def.constraints {
            out.push(self.compile_constraint(&def.name, c).await?);
        }
        Ok(out)
    }

    async fn compile_constraint(&self, product: &str, c: &ConstraintDef) -> Result<CompiledCheck, ControlError> {
        let name = c.name.clone().unwrap_or_else(|| c.kind.to_string());
        let fail = |m: String| check_error(&c.at, &name, m);
        let schema =
            self.table_schema(product).await.ok_or_else(|| fail(format!("product `{product}` is not compiled")))?;
        let has = |column: &str, schema: &SchemaRef, table: &str| {
            schema.field_with_name(column).map(|_| ()).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                fail(format!("`{table}` has no column `{column}` (columns: {})", names.join(", ")))
            })
        };
        let p = quote(product);
        let (kind, sql, reads) = match &c.kind {
            ConstraintKind::Unique { columns, primary } => {
                for col in columns {
                    has(col, &schema, product)?;
                }
                let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
                let not_null: Vec<String> = cols.iter().map(|c| format!("{c} IS NOT NULL")).collect();
                let sql = format!(
                    "SELECT {0}, count(*) AS kiln_rows FROM {p} WHERE {1} GROUP BY {0} HAVING count(*) > 1",
                    cols.join(", "),
                    not_null.join(" AND ")
                );
                (if *primary { CheckKind::PrimaryKey } else { CheckKind::Unique }, sql, BTreeSet::new())
            }
            ConstraintKind::References { columns, table, referred } => {
                if columns.len() != referred.len() {
                    return Err(fail(format!(
                        "{} column(s) reference {} column(s) of `{table}`",
                        columns.len(),
                        referred.len()
                    )));
                }
                let target = self
                    .table_schema(table)
                    .await
                    .ok_or_else(|| fail(format!("REFERENCES `{table}`: no such source or product")))?;
                for col in columns {
                    has(col, &schema, product)?;
                }
                for col in referred {
                    has(col, &target, table)?;
                }
                let not_null: Vec<String> =
                    columns.iter().map(|c| format!("kiln_child.{} IS NOT NULL", quote(c))).collect();
                let on: Vec<String> = columns
                    .iter()
                    .zip(referred)
                    .map(|(c, r)| format!("kiln_parent.{} = kiln_child.{}", quote(r), quote(c)))
                    .collect();
                let sql = format!(
                    "SELECT kiln_child.* FROM {p} AS kiln_child WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS kiln_parent WHERE {})",
                    not_null.join(" AND "),
                    quote(table),
                    on.join(" AND ")
                );
                (CheckKind::References, sql, BTreeSet::from([table.clone()]))
            }
            ConstraintKind::Check(expr) => {
                let mut query = template(&format!("SELECT * FROM {p} WHERE NOT (TRUE)"))?;
                // The user's expression keeps its own positions in the file.
                if let SetExpr::Select(select) = query.body.as_mut() {
                    select.selection = Some(SqlExpr::UnaryOp {
                        op: UnaryOperator::Not,
                        expr: Box::new(SqlExpr::Nested(expr.clone())),
                    });
                }
                let plan = self.plan_check_query(query, &c.at, &name).await?;
                let reads = tables_read(&plan, product);
                return Ok(CompiledCheck {
                    name,
                    product: product.to_owned(),
                    kind: CheckKind::Check,
                    at: c.at.clone(),
                    thresholds: Thresholds::STRICT,
                    plan,
                    reads,
                });
            }
        };
        let plan = self.plan_check_query(template(&sql)?, &c.at, &name).await?;
        Ok(CompiledCheck {
            name,
            product: product.to_owned(),
            kind,
            at: c.at.clone(),
            thresholds: Thresholds::STRICT,
            plan,
            reads,
        })
    }

    /// Compiles `CREATE AUDIT`.
    pub async fn compile_audit(&self, def: &AuditDef) -> Result<CompiledCheck, ControlError> {
        def.options.check_known("an audit", &AUDIT_OPTIONS)?;
        let fail = |at: &Location, m: String| check_error(at, &def.name, m);
        let count = |key: &str| -> Result<Option<u64>, ControlError> {
            match def.options.get(key) {
                None => Ok(None),
                Some((v, at)) => v.parse::<u64>().map(Some).map_err(|_| ControlError::Option {
                    at: at.clone(),
                    message: format!("{key} = '{v}': a number of rows"),
                }),
            }
        };
        let (warn_after, error_after) = (count("warn_after")?, count("error_after")?);
        let thresholds = match def.options.get("severity") {
            None | Some(("error", _)) => Thresholds { warn_after, error_after: error_after.or(Some(0)) },
            Some(("warn", at)) => {
                if error_after.is_some() {
                    return Err(ControlError::Option {
                        at: at.clone(),
                        message: "severity = 'warn' never blocks a commit; drop error_after or the severity".into(),
                    });
                }
                Thresholds { warn_after: warn_after.or(Some(0)), error_after: None }
            }
            Some((v, at)) => {
                return Err(ControlError::Option {
                    at: at.clone(),
                    message: format!("severity = '{v}' (valid: 'error', 'warn')"),
                });
            }
        };
        let (min, max) = (count("min_rows")?, count("max_rows")?);
        let (kind, query) = match (&def.query, min.is_some() || max.is_some()) {
            (Some(_), true) => {
                return Err(fail(&def.at, "an audit has a query (AS ...) or min_rows / max_rows, not both".into()));
            }
            (None, false) => {
                return Err(fail(
                    &def.at,
                    "an audit needs a query (AS SELECT ... failing rows) or min_rows / max_rows".into(),
                ));
            }
            (Some(q), false) => (CheckKind::Audit, q.clone()),
            (None, true) => {
                let mut bounds = Vec::new();
                if let Some(m) = min {
                    bounds.push(format!("count(*) < {m}"));
                }
                if let Some(m) = max {
                    bounds.push(format!("count(*) > {m}"));
                }
                let sql =
                    format!("SELECT count(*) AS kiln_rows FROM {} HAVING {}", quote(&def.product), bounds.join(" OR "));
                (CheckKind::RowCount, template(&sql)?)
            }
        };
        let plan = self.plan_check_query(query, &def.at, &def.name).await?;
        let mut scanned = BTreeSet::new();
        scans(&plan, &mut scanned);
        if !scanned.contains(&def.product) {
            return Err(fail(
                &def.product_at,
                format!("the audit's query does not read `{}`, the product it is ON", def.product),
            ));
        }
        let reads = tables_read(&plan, &def.product);
        Ok(CompiledCheck {
            name: def.name.clone(),
            product: def.product.clone(),
            kind,
            at: def.at.clone(),
            thresholds,
            plan,
            reads,
        })
    }

    /// Compiles `CREATE TEST` for `product` (compiled): every table the product reads needs
    /// a fixture, and every fixture stands for a table it reads, with the table's columns
    /// in order and types it can be cast to.
    pub async fn compile_test(
        &self,
        def: &TestDef,
        product: &crate::CompiledProduct,
        root: &std::path::Path,
    ) -> Result<CompiledTest, ControlError> {
        let mut read = BTreeSet::new();
        scans(&product.logical, &mut read);
        let mut given = Vec::with_capacity(def.given.len());
        for fixture in &def.given {
            if given.iter().any(|(t, _)| t == &fixture.table) {
                return Err(check_error(&fixture.at, &def.name, format!("two fixtures for `{}`", fixture.table)));
            }
            if !read.contains(&fixture.table) {
                let list: Vec<&str> = read.iter().map(String::as_str).collect();
                return Err(check_error(
                    &fixture.at,
                    &def.name,
                    format!("`{}` does not read `{}` (it reads: {})", def.product, fixture.table, list.join(", ")),
                ));
            }
            let schema = self
                .table_schema(&fixture.table)
                .await
                .ok_or_else(|| check_error(&fixture.at, &def.name, format!("no table `{}`", fixture.table)))?;
            let compiled =
                self.compile_fixture(&fixture.rows, &schema, &fixture.at, &def.name, &fixture.table, root).await?;
            given.push((fixture.table.clone(), compiled));
        }
        if let Some(missing) = read.iter().find(|t| !given.iter().any(|(g, _)| g == *t)) {
            return Err(check_error(
                &def.at,
                &def.name,
                format!("`{}` reads `{missing}`: give it rows (GIVEN ({missing} AS (VALUES ...)))", def.product),
            ));
        }
        let expect =
            self.compile_fixture(&def.expect, &product.schema, &def.expect_at, &def.name, &def.product, root).await?;
        // An incremental product's test computes every interval from its start on, as a
        // build holding them all does: the interval functions become those bounds, and
        // rows before the start are not the product's.
        let plan = match &product.incremental {
            Some(spec) => crate::incremental::batch_plan(&product.logical, spec, &spec.whole())
                .map_err(|e| check_error(&def.at, &def.name, e.strip_backtrace()))?,
            None => product.logical.clone(),
        };
        Ok(CompiledTest {
            name: def.name.clone(),
            product: def.product.clone(),
            at: def.at.clone(),
            plan,
            schema: Arc::clone(&product.schema),
            given,
            expect,
        })
    }

    async fn compile_fixture(
        &self,
        rows: &FixtureRows,
        schema: &SchemaRef,
        at: &Location,
        test: &str,
        table: &str,
        root: &std::path::Path,
    ) -> Result<CompiledFixture, ControlError> {
        let fail = |m: String| check_error(at, test, m);
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        match rows {
            FixtureRows::File(path) => {
                let format = match path.rsplit('.').next().map(str::to_ascii_lowercase).as_deref() {
                    Some("csv") => FixtureFormat::Csv,
                    Some("json" | "ndjson" | "jsonl") => FixtureFormat::Json,
                    Some("parquet") => FixtureFormat::Parquet,
                    _ => {
                        return Err(fail(format!(
                            "fixture file '{path}': a .csv (with a header), .json (one object per line) or .parquet file"
                        )));
                    }
                };
                let full = root.join(path);
                if !full.is_file() {
                    return Err(fail(format!("fixture file '{path}' not found (paths are relative to the project)")));
                }
                Ok(CompiledFixture::File { path: full, format, schema: Arc::clone(schema), at: at.clone() })
            }
            FixtureRows::Query(query) => {
                let plan = self.plan_check_query(query.clone(), at, test).await?;
                let mut scanned = BTreeSet::new();
                scans(&plan, &mut scanned);
                if let Some(t) = scanned.first() {
                    return Err(fail(format!("fixture rows are literals (VALUES ...); this one reads `{t}`")));
                }
                let got = plan.schema().fields().len();
                if got != schema.fields().len() {
                    return Err(fail(format!(
                        "the rows for `{table}` have {got} column(s); `{table}` has {} ({})",
                        schema.fields().len(),
                        names.join(", ")
                    )));
                }
                let mut exprs = Vec::with_capacity(got);
                for (k, (field, (qualifier, have))) in schema.fields().iter().zip(plan.schema().iter()).enumerate() {
                    let from = have.data_type();
                    let to = field.data_type();
                    if from != &DataType::Null && !datafusion::arrow::compute::can_cast_types(from, to) {
                        return Err(fail(format!(
                            "column {} of the rows for `{table}` (`{}`) is {from}, which does not cast to {to}",
                            k + 1,
                            field.name()
                        )));
                    }
                    let col = Expr::Column(datafusion::common::Column::from((qualifier, have)));
                    exprs.push(cast(col, to.clone()).alias(field.name()));
                }
                let plan = LogicalPlanBuilder::from(plan)
                    .project(exprs)
                    .and_then(|b| b.build())
                    .map_err(|e| fail(e.strip_backtrace()))?;
                Ok(CompiledFixture::Rows(plan))
            }
        }
    }

    /// Plans a check's query from the project files (DataFusion's positions are the
    /// file's), verified as project SQL.
    async fn plan_check_query(
        &self,
        query: Box<Query>,
        at: &Location,
        check: &str,
    ) -> Result<LogicalPlan, ControlError> {
        let state = self.ctx.state();
        let mut query = query;
        crate::unnest::nest_unnest_joins_in_query(&mut query);
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(query)));
        let plan = state.statement_to_plan(statement).await.map_err(|e| match planning_error(e, at, check) {
            ControlError::Compile { at, message, .. } => ControlError::Check { at, check: check.to_owned(), message },
            other => other,
        })?;
        let plan = self.vars.bind(plan).map_err(|e| check_error(at, check, e.to_string()))?;
        Surface::Internal.verify(&plan, &self.tables()).map_err(|e| check_error(at, check, e.to_string()))?;
        Ok(plan)
    }

    /// The schema of a registered source or product.
    pub async fn table_schema(&self, name: &str) -> Option<SchemaRef> {
        self.ctx.table_provider(name).await.ok().map(|t| t.schema())
    }
}

/// A query Kiln writes (its text is ours: a parse error is a bug).
fn template(sql: &str) -> Result<Box<Query>, ControlError> {
    Parser::new(&KilnDialect::default())
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| ControlError::Internal(format!("check query `{sql}`: {e}")))
}

/// Every table a plan scans (subqueries included).
pub fn scans(plan: &LogicalPlan, out: &mut BTreeSet<String>) {
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            out.insert(scan.table_name.table().to_owned());
        }
        Ok(TreeNodeRecursion::Continue)
    });
}

fn tables_read(plan: &LogicalPlan, product: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    scans(plan, &mut out);
    out.remove(product);
    out
}

/// `plan` with every scan of a table in `tables` reading that provider instead (same
/// schema): a staged build in place of the committed one, fixtures in place of sources.
pub fn rebind_scans(
    plan: LogicalPlan,
    tables: &HashMap<String, Arc<dyn TableProvider>>,
) -> Result<LogicalPlan, ControlError> {
    plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::TableScan(mut scan) => match tables.get(scan.table_name.table()) {
            Some(provider) => {
                scan.source = provider_as_source(Arc::clone(provider));
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        },
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_err(|e| ControlError::Internal(format!("rebinding scans: {e}")))
}
