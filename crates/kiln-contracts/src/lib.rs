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
//!
//! Architecture invariant: this crate depends on arrow and sqlparser only. It knows nothing of
//! DataFusion, files or execution; it is pure functions over schemas.

pub mod compat;
pub mod contract;
pub mod dialect;
pub mod fingerprint;
pub mod types;
pub mod unify;

pub use compat::{CheckOptions, Compatibility, Evolution, Violation, check};
pub use contract::{Contract, EvolutionPolicy};
pub use fingerprint::{SCHEMA_FP_VERSION, canonical_schema_bytes, schema_fingerprint};
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
