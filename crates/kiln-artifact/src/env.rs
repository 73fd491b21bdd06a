//! Reports of the environment commands (`kiln envs`, `kiln env ...`, `kiln promote`,
//! `kiln table-diff`); their JSON shapes are in docs/json.md.

use serde::{Deserialize, Serialize};

/// `kiln envs --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvList {
    pub format_version: u32,
    pub environments: Vec<EnvSummary>,
}

/// One environment and the products whose build differs from prod's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvSummary {
    pub name: String,
    /// The environment it started from (`prod` for prod itself).
    pub from: String,
    /// When it was made (absent for prod).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Products with a build in it.
    pub products: u64,
    /// Products whose build differs from prod's (or that prod does not have).
    pub differs: Vec<String>,
}

/// `kiln env show NAME --json`: where an external reader reads each dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvTables {
    pub format_version: u32,
    pub env: String,
    pub datasets: Vec<EnvTable>,
}

/// Dataset `dataset` of the environment is version `version` of the Delta table at
/// `table` (a path relative to the warehouse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvTable {
    pub dataset: String,
    pub table: String,
    pub version: u64,
    pub build_id: String,
}

/// `kiln env diff A B --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDiffReport {
    pub format_version: u32,
    pub a: String,
    pub b: String,
    pub products: Vec<EnvDiffEntry>,
}

/// One product of an environment diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvDiffEntry {
    pub product: String,
    /// `same`, `different`, `only_a`, `only_b`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_build_id: Option<String>,
    /// Why the builds differ (`a` against `b`), as `kiln plan` says it.
    pub reasons: Vec<crate::Reason>,
}

/// `kiln promote --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromoteReport {
    pub format_version: u32,
    pub from: String,
    pub to: String,
    pub changed: Vec<PromotedDataset>,
    pub unchanged: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedDataset {
    pub dataset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    pub now: String,
}

/// `kiln table-diff --json`: two builds of one product compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableDiffReport {
    pub format_version: u32,
    pub product: String,
    pub a: TableSide,
    pub b: TableSide,
    /// Columns only in `a`, only in `b`, and in both with another type (`col: A -> B`).
    pub columns_only_a: Vec<String>,
    pub columns_only_b: Vec<String>,
    pub columns_retyped: Vec<String>,
    /// With `--key`: the key and the row comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowDiff>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSide {
    pub env: String,
    pub build_id: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowDiff {
    pub key: Vec<String>,
    pub only_a: u64,
    pub only_b: u64,
    /// Rows whose key is in both with some column different.
    pub changed: u64,
    /// Per compared column with differences: how many rows and a sample.
    pub columns: Vec<ColumnDiff>,
    /// Up to 5 keys of each kind (`k1=v, k2=w`).
    pub sample_only_a: Vec<String>,
    pub sample_only_b: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDiff {
    pub column: String,
    pub changed: u64,
    /// Up to 3 changed rows: key, value in `a`, value in `b`.
    pub sample: Vec<[String; 3]>,
}
