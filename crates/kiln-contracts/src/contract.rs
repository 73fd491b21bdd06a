//! The [`Contract`] a product declares, and its serde form.
//!
//! JSON form (documented in docs/contracts.md): `{"name", "version", "columns": [{"name",
//! "sql_type", "nullable", "metadata", "extension"}], "metadata", "partition_by", "order_by",
//! "evolution"}`. Arrow types are carried as their canonical SQL spelling so the file is
//! readable and does not depend on arrow's own serde.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::ContractError;

/// How an actual schema may differ from the contract.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvolutionPolicy {
    /// Exactly the declared columns, in order, with the declared types.
    #[default]
    Strict,
    /// Added nullable columns and the safe widenings of docs/contracts.md are accepted and
    /// reported as evolutions.
    Evolve,
}

/// Arrow field metadata key under which Kiln records an extension type name
/// (the Arrow convention for extension types).
pub const EXTENSION_KEY: &str = "ARROW:extension:name";

/// A product's schema contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub name: String,
    pub version: u32,
    pub schema: SchemaRef,
    pub partition_by: Vec<String>,
    pub order_by: Vec<String>,
    pub evolution: EvolutionPolicy,
}

impl Contract {
    /// Builds a contract, checking that names are unique and that partition and ordering
    /// keys are declared columns.
    pub fn try_new(
        name: impl Into<String>,
        schema: SchemaRef,
        partition_by: Vec<String>,
        order_by: Vec<String>,
        evolution: EvolutionPolicy,
    ) -> Result<Self, ContractError> {
        let mut seen = HashSet::new();
        for f in schema.fields() {
            if !seen.insert(f.name().as_str()) {
                return Err(ContractError::DuplicateColumn(f.name().clone()));
            }
        }
        for (role, keys) in [("partition", &partition_by), ("ordering", &order_by)] {
            if let Some(k) = keys.iter().find(|k| !seen.contains(k.as_str())) {
                return Err(ContractError::UnknownKey { role, column: k.clone() });
            }
        }
        Ok(Self { name: name.into(), version: 1, schema, partition_by, order_by, evolution })
    }

    /// The extension type name of a column, if declared.
    pub fn extension(&self, column: &str) -> Option<&str> {
        let field = self.schema.field_with_name(column).ok()?;
        field.metadata().get(EXTENSION_KEY).map(String::as_str)
    }

    /// The documented JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let columns: Vec<ColumnJson> = self
            .schema
            .fields()
            .iter()
            .map(|f| ColumnJson {
                name: f.name().clone(),
                sql_type: crate::arrow_to_sql(f.data_type()).unwrap_or_else(|| f.data_type().to_string()),
                nullable: f.is_nullable(),
                metadata: f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect();
        let json = ContractJson {
            name: self.name.clone(),
            version: self.version,
            columns,
            metadata: self.schema.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            partition_by: self.partition_by.clone(),
            order_by: self.order_by.clone(),
            evolution: self.evolution,
        };
        serde_json::to_value(json).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Serialize, Deserialize)]
struct ColumnJson {
    name: String,
    sql_type: String,
    nullable: bool,
    metadata: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct ContractJson {
    name: String,
    version: u32,
    columns: Vec<ColumnJson>,
    metadata: BTreeMap<String, String>,
    partition_by: Vec<String>,
    order_by: Vec<String>,
    evolution: EvolutionPolicy,
}

/// Builds an Arrow schema from `(name, type, nullable)` triples.
pub fn schema_of(fields: impl IntoIterator<Item = Field>) -> SchemaRef {
    Arc::new(Schema::new(fields.into_iter().collect::<Vec<_>>()))
}
