//! `kiln functions --json`: the function catalog as a record.
//!
//! kiln-functions owns the specifications; this is their serialized shape (the facade
//! fills it from the registry), so the catalog's JSON is defined where every other
//! format is.

use serde::{Deserialize, Serialize};

use crate::ArtifactError;

/// Version of [`FunctionCatalog`].
pub const CATALOG_FORMAT_VERSION: u32 = 1;

/// Every Kiln function with its documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCatalog {
    pub format_version: u32,
    pub functions: Vec<FunctionEntry>,
}

/// One function (the fields of kiln-functions' `FunctionSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    /// Stable id with the major version: `kiln.pii_hash.v1`.
    pub id: String,
    /// The SQL name, always prefixed `kiln_`.
    pub name: String,
    /// `scalar`, `aggregate`, `window` or `table`.
    pub kind: String,
    pub args: Vec<FunctionArg>,
    /// Whether the last argument repeats.
    pub variadic: bool,
    pub returns: String,
    /// `immutable`, `stable` or `volatile`.
    pub volatility: String,
    pub deterministic: bool,
    pub null_semantics: String,
    /// Whether the optimizer may see through the call.
    pub optimizer_transparent: bool,
    pub implementation_version: u32,
    pub doc: String,
    pub example: String,
}

/// One argument of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionArg {
    pub name: String,
    pub types: String,
    /// Must be a constant (a literal) in the call.
    pub literal: bool,
}

impl FunctionCatalog {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "function catalog", source })
    }
}
