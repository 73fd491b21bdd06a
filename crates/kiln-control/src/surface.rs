//! SQL surfaces: who may run what through the Substrate.
//!
//! - [`Surface::Internal`]: the project's own files. Queries only (no DDL, DML, COPY or
//!   statements such as SET), over registered tables.
//! - [`Surface::Untrusted`]: anything not from the project files (`kiln query`). Exactly one
//!   query; no DDL, DML, COPY, SET or other statements (also not inside EXPLAIN [ANALYZE]);
//!   every table read must be a registered source or product, or a table function that
//!   reads no files ([`SAFE_TABLE_FUNCTIONS`]): no URL tables, no paths; no function
//!   keyed by a project secret ([`SECRET_KEYED_FUNCTIONS`]).
//! - [`Surface::Admin`]: operators' maintenance; everything DataFusion plans.
//!
//! Enforcement is on the *plan*, after planning and before anything runs, so no spelling of
//! the SQL text can get around it.

use std::collections::BTreeSet;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;

/// Table functions the untrusted surface may call: they generate rows and read nothing.
pub const SAFE_TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Functions keyed by a project secret, which the untrusted surface may not call: with
/// `kiln_pii_hash` anyone who can query could hash candidate values (phone numbers) and
/// join them against the stored hashes, which the key exists to prevent.
pub const SECRET_KEYED_FUNCTIONS: [&str; 1] = ["kiln_pii_hash"];

/// Why a surface refused a plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// DDL, DML, COPY or another statement (DataFusion's own check, its message).
    #[error("{0}")]
    Statement(String),
    #[error("reading `{0}` is not allowed here: only the project's sources and products can be read")]
    Table(String),
    #[error(
        "`{0}` is raw input: `kiln query` reads the committed products and views, not the raw input they are made from (sources, streams, their rejected records, views' late events); list the source or stream in kiln.toml's `[query] sources` to allow it"
    )]
    Source(String),
    #[error("plan node `{0}` is not allowed here")]
    Node(String),
    #[error("`{0}` is keyed by a project secret and cannot be called here: only the project's products may use it")]
    SecretKeyed(String),
}

/// Where a piece of SQL comes from, which decides what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Internal,
    Untrusted,
    Admin,
}

impl Surface {
    pub fn name(self) -> &'static str {
        match self {
            Surface::Internal => "project",
            Surface::Untrusted => "untrusted",
            Surface::Admin => "admin",
        }
    }

    /// Checks a plan against this surface; `tables` are the registered sources and products.
    pub fn verify(self, plan: &LogicalPlan, tables: &BTreeSet<String>) -> Result<(), Refused> {
        if self == Surface::Admin {
            return Ok(());
        }
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(plan)
            .map_err(|e| Refused::Statement(e.strip_backtrace()))?;
        let mut problem: Option<Refused> = None;
        let _ = plan.apply_with_subqueries(|node| {
            match node {
                LogicalPlan::TableScan(scan) => {
                    let name = scan.table_name.table();
                    let qualified = scan.table_name.schema().is_some_and(|s| s != "public")
                        || scan.table_name.catalog().is_some_and(|c| c != "datafusion");
                    let function = name.strip_suffix("()").unwrap_or(name);
                    let allowed = !qualified
                        && (tables.contains(name)
                            || (self == Surface::Untrusted && SAFE_TABLE_FUNCTIONS.contains(&function)));
                    if !allowed {
                        problem = Some(Refused::Table(scan.table_name.to_string()));
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                // Kiln's own nodes only read their input (`Explode`: crate::unnest).
                LogicalPlan::Extension(e) if e.node.as_any().is::<crate::unnest::ExplodeNode>() => {}
                LogicalPlan::Extension(e) => {
                    problem = Some(Refused::Node(e.node.name().to_owned()));
                    return Ok(TreeNodeRecursion::Stop);
                }
                _ => {}
            }
            if self == Surface::Untrusted {
                let _ = node.apply_expressions(|e| {
                    e.apply(|e| {
                        if let datafusion::logical_expr::Expr::ScalarFunction(f) = e
                            && SECRET_KEYED_FUNCTIONS.contains(&f.name())
                        {
                            problem = Some(Refused::SecretKeyed(f.name().to_owned()));
                            return Ok(TreeNodeRecursion::Stop);
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                });
                if problem.is_some() {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        problem.map_or(Ok(()), Err)
    }
}
