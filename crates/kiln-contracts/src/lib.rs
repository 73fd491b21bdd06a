//! Schema contracts for Kiln: the typed promise a product makes about its output.
//!
//! A product's column list (`CREATE PRODUCT p (a BIGINT NOT NULL, ...)`) is a [`Contract`]:
//! an Arrow schema with nullability and metadata, partition columns, ordering keys and an
//! evolution policy. The contract travels with every build and its canonical fingerprint
//! ([`schema_fingerprint`]) is one input of the build identity.
//!
//! Main pieces:
//! - [`types`]: SQL type <-> Arrow type mapping for the types users write (parsed by
//!   sqlparser), following DataFusion 55's own mapping so a declared type and a planned type
//!   agree.
//! - [`fingerprint`]: a documented canonical byte encoding of a schema and its sha256.
//! - [`compat`]: checks an actual schema against a contract and lists *every* violation with
//!   a path (`items[].price`), or the evolutions the `evolve` policy accepts.
//! - [`storage`]: the type each column is stored as in a Delta Lake table, and the types
//!   and names a Delta table cannot hold.
//!
//! Architecture invariant: this crate depends on arrow and sqlparser only. It knows nothing of
//! DataFusion, files or execution; it is pure functions over schemas.
//!
//! Checking a schema against a contract and fingerprinting it:
//!
//! ```
//! use std::sync::Arc;
//! use arrow::datatypes::{DataType, Field, Schema};
//! use kiln_contracts::{CheckOptions, Contract, EvolutionPolicy, check, parse_sql_type, schema_fingerprint};
//!
//! let declared = Schema::new(vec![
//!     Field::new("id", parse_sql_type("BIGINT")?, false),
//!     Field::new("price", parse_sql_type("DECIMAL(15, 2)")?, true),
//! ]);
//! let contract = Contract::try_new("orders", Arc::new(declared), vec![], vec!["id".into()], EvolutionPolicy::Strict)?;
//! // What a query produced: `id` may be NULL there, and `price` is missing.
//! let actual = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
//! let verdict = check(&actual, &contract.schema, CheckOptions { policy: contract.evolution, nullability_is_proven: true });
//! let problems: Vec<String> = verdict.violations.iter().map(ToString::to_string).collect();
//! assert_eq!(problems, ["id: nullable where NOT NULL was promised", "price: missing column"]);
//! // Utf8 and Utf8View are one logical type: the same fingerprint.
//! let a = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
//! let b = Schema::new(vec![Field::new("s", DataType::Utf8View, true)]);
//! assert_eq!(schema_fingerprint(&a), schema_fingerprint(&b));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod compat;
pub mod contract;
pub mod dialect;
pub mod fingerprint;
pub mod storage;
pub mod types;
pub mod unify;

pub use compat::{CheckOptions, Compatibility, Evolution, Violation, check};
pub use contract::{Contract, EvolutionPolicy};
pub use fingerprint::{SCHEMA_FP_VERSION, canonical_schema_bytes, schema_fingerprint};
pub use storage::{StorageError, storage_schema, storage_type};
pub use types::{TypeError, arrow_to_sql, parse_sql_type, sql_to_arrow};
pub use unify::{UnifyError, UnifyMode, unify};

/// The one error type of this crate. Every variant is the user's fault (a type or contract
/// they wrote), never the environment's.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// A column's SQL type has no Arrow mapping.
    #[error("column `{column}`: {source}")]
    Type {
        column: String,
        #[source]
        source: TypeError,
    },
    /// A name appears twice in a column list.
    #[error("column `{0}` is declared twice")]
    DuplicateColumn(String),
    /// A partition or ordering key names a column that is not in the contract.
    #[error("{role} column `{column}` is not declared in the column list")]
    UnknownKey { role: &'static str, column: String },
    /// A contract's JSON form does not parse.
    #[error("contract JSON: {0}")]
    Json(String),
}
