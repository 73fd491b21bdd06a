//! The control plane: it reads a project, decides what each product is, and programs the
//! data plane. It never moves data itself.
//!
//! Loading a project:
//! - [`project`]: `kiln.toml` (serde, unknown keys rejected with line:column) and SQL
//!   discovery; [`sqlfile`]: one SQL file, parsed on first use, and the [`sqlfile::Summary`]
//!   of each statement the graph needs (cached so unchanged files are not parsed);
//! - [`dialect`]: the Kiln SQL dialect on sqlparser (`CREATE SOURCE`, `CREATE PRODUCT`
//!   with constraints, `CREATE STREAM`, `CREATE MATERIALIZED VIEW`, `CREATE AUDIT`,
//!   `CREATE TEST`); errors carry file, line:column and a caret snippet;
//! - [`dag`]: resolving table references to sources and products, cycle detection,
//!   topological order, selection (`name`, `+name`, `name+`).
//!
//! Compiling:
//! - [`profile`]: runtime profiles (dev, prod_fast, prod_safe, memory_limited) and
//!   validated overrides, yielding DataFusion's `SessionConfig` and `RuntimeEnv`, with
//!   every setting classified semantic or performance;
//! - [`compiler`]: the [`Substrate`] (one SessionContext with sources and product tables
//!   registered) and the compilation of sources, streams, products and views into the
//!   data plane's programs;
//! - [`layout`]: a product's file layout from its options (kiln-data's `WriteLayout`);
//! - [`units`]: the one parser of sizes and durations;
//! - [`surface`]: the SQL surfaces (project, untrusted, admin), enforced on the plan;
//! - [`unnest`] and [`windows`]: Kiln's SQL beyond DataFusion's (lateral UNNEST with
//!   OFFSET/ORDINALITY, TUMBLE/HOP windows), rewritten and planned;
//! - [`canonical`]: the canonical plan (hashed into `query_fp`, with its explicit
//!   encoders in [`canonical::encode`]) and column lineage, from one walk;
//! - [`diff`]: the semantic diff of two canonical plans;
//! - [`distinct`]: `COUNT(DISTINCT x)` beside sums as two groupings in batch plans, so it spills;
//! - [`sqltext`]: statements as written with their comment blocks, and highlighting;
//! - [`decision`]: fresh or build, with reasons.
//!
//! Every identity (build ids, fingerprints, versions) is computed by
//! `kiln_artifact::identity` from what this crate compiles.
//!
//! Architecture invariants:
//! - Depends on the data plane to *describe* work (typed programs: `WriteLayout`,
//!   `FileSource`, `MicroBatchSource`, `ViewProgram`, plans) and calls it only to register
//!   tables; executing and writing is the engine's and the data plane's job.
//! - Every user-facing error names a file and line:column, or the products involved.
//!
//! Compiling a product and reading its fingerprints:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kiln_control::dialect::{Statement, parse_file};
//! use kiln_control::{RuntimeProfile, Substrate};
//!
//! let profile = RuntimeProfile::resolve("dev", &Default::default(), &[])?;
//! let functions = kiln_functions::Registry::builtin(Default::default());
//! let mut substrate = Substrate::new(&profile, kiln_data::Warehouse::memory(), std::path::Path::new("."), functions)?;
//! let sql = "CREATE PRODUCT evens AS SELECT v FROM (VALUES (1), (2), (4)) t(v) WHERE v % 2 = 0;";
//! let Statement::Product(def) = &parse_file("evens.sql", sql)?[0] else { unreachable!() };
//! let product = substrate.compile_product(def).await?;
//! assert_eq!(product.query_fp.len(), 64);
//! assert_eq!(product.lineage[0].column, "v");
//! assert!(product.canonical.encode().contains("Filter"));
//! # Ok(()) }
//! ```

pub mod canonical;
pub mod compiler;
pub mod dag;
pub mod decision;
pub mod dialect;
pub mod diff;
pub mod distinct;
pub mod error;
pub mod incremental;
pub mod layout;
pub mod profile;
pub mod project;
pub mod query_limits;
pub mod sqlfile;
pub mod sqltext;
mod statement_limits;
pub mod surface;
pub mod units;
pub mod unnest;
pub mod vars;
pub mod windows;

pub use compiler::{CompiledCheck, CompiledProduct, CompiledSource, CompiledTest, Substrate};
pub use dag::{Graph, NodeKind};
pub use error::{ControlError, Location};
pub use kiln_data::stream::StreamProgram;
pub use profile::RuntimeProfile;
pub use project::{Project, ProjectConfig};
pub use units::parse_duration;
