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

impl Contract {
    /// Reads the documented JSON form back (types are parsed from their SQL spelling).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ContractError> {
        let json: ContractJson =
            serde_json::from_value(value.clone()).map_err(|e| ContractError::Json(e.to_string()))?;
        let mut fields = Vec::with_capacity(json.columns.len());
        for c in json.columns {
            let data_type = crate::parse_sql_type(&c.sql_type)
                .map_err(|source| ContractError::Type { column: c.name.clone(), source })?;
            fields.push(Field::new(c.name, data_type, c.nullable).with_metadata(c.metadata.into_iter().collect()));
        }
        let schema = Arc::new(Schema::new_with_metadata(fields, json.metadata.into_iter().collect()));
        let mut contract = Self::try_new(json.name, schema, json.partition_by, json.order_by, json.evolution)?;
        contract.version = json.version;
        Ok(contract)
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

#[cfg(test)]
mod tests {
    use arrow::datatypes::DataType;

    use super::*;
    use crate::types::map_type;

    #[test]
    fn json_form_round_trips() {
        let schema = schema_of([
            Field::new("id", DataType::FixedSizeBinary(16), false)
                .with_metadata([(EXTENSION_KEY.to_owned(), "kiln.stable_id".to_owned())].into()),
            Field::new("attrs", map_type(DataType::Utf8View, DataType::Int64), true),
        ]);
        let contract = Contract::try_new("p", schema, vec![], vec!["id".into()], EvolutionPolicy::Evolve);
        // FixedSizeBinary has no SQL spelling: the JSON form must say so rather than lie.
        let json = contract.unwrap().to_json();
        assert_eq!(json["columns"][0]["sql_type"], "FixedSizeBinary(16)");
        assert!(Contract::from_json(&json).is_err());

        let schema = schema_of([
            Field::new("id", DataType::Int64, false),
            Field::new("attrs", map_type(DataType::Utf8View, DataType::Int64), true)
                .with_metadata([(EXTENSION_KEY.to_owned(), "kiln.attrs".to_owned())].into()),
        ]);
        let contract = Contract::try_new("p", schema, vec![], vec!["id".into()], EvolutionPolicy::Evolve).unwrap();
        assert_eq!(contract.extension("attrs"), Some("kiln.attrs"));
        assert_eq!(Contract::from_json(&contract.to_json()).unwrap(), contract);
    }

    #[test]
    fn keys_must_be_declared_columns() {
        let schema = schema_of([Field::new("id", DataType::Int64, false)]);
        let err = Contract::try_new("p", schema, vec!["day".into()], vec![], EvolutionPolicy::Strict).unwrap_err();
        assert_eq!(err.to_string(), "partition column `day` is not declared in the column list");
    }
}
