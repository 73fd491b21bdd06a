//! The control plane: it reads a project, decides what each product is, and programs the
//! data plane. It never moves data itself.
//!
//! - [`project`]: `kiln.toml`, SQL file discovery, and the parsed project.
//! - [`dialect`]: the Kiln SQL dialect on sqlparser (`CREATE SOURCE`, `CREATE PRODUCT`);
//!   errors carry file, line:column and a caret snippet.
//! - [`dag`]: resolving table references to sources and products, cycle detection,
//!   topological order, selection (`name`, `+name`, `name+`).
//! - [`profile`]: runtime profiles (dev, prod_fast, prod_safe, memory_limited) and validated
//!   overrides, yielding DataFusion's `SessionConfig` and `RuntimeEnv`.
//! - [`compiler`]: the [`Substrate`] (one SessionContext with sources and product tables
//!   registered) and the compilation of a product into an optimized logical plan, its
//!   contract (checked against the plan: the compile-time contract gate), fingerprints and
//!   the build id.
//!
//! Architecture invariants:
//! - Depends on the data plane to *describe* work (FileSource, ProductTable, WriteSpec), and
//!   calls it only to register tables; executing and writing is the engine's job (crate kiln).
//! - Every user-facing error names a file and line:column, or the products involved.

pub mod canonical;
pub mod compiler;
pub mod dag;
pub mod decision;
pub mod dialect;
pub mod diff;
pub mod error;
pub mod profile;
pub mod project;
pub mod surface;
pub mod unnest;
pub mod windows;

pub use compiler::{BUILD_ID_VERSION, CompiledProduct, CompiledSource, CompiledStream, Substrate, parse_duration};
pub use dag::{Graph, NodeKind};
pub use error::{ControlError, Location};
pub use profile::RuntimeProfile;
pub use project::{Project, ProjectConfig};
