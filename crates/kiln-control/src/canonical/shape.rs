//! What a product's data depends on, column by column ([`ProductShape`]), read from its
//! canonical plan and lineage: the plan without its column-level items decides the rows;
//! each column's identity, type and sources decide its values.

use std::collections::BTreeSet;

use kiln_artifact::identity::{column_def_fp, row_shape_fp};
use kiln_artifact::{BaseColumn, ColumnShape, PlanNode, ProductShape};

use super::Analysis;

impl Analysis {
    /// What the product's data depends on, column by column (see [`ProductShape`]).
    /// `schema` is the schema of the product's files (its contract, or the plan's).
    pub fn shape(&self, schema: &datafusion::arrow::datatypes::Schema) -> ProductShape {
        let mut skeleton = self.plan.clone();
        strip_column_items(&mut skeleton.root);
        let rows_fp = row_shape_fp(&skeleton.encode());
        let mut tables = BTreeSet::new();
        collect_tables(&self.plan.root, &mut tables);
        let identities: Vec<&str> = self
            .plan
            .root
            .items
            .iter()
            .filter(|i| i.role == "column")
            .map(|i| i.text.split_once(" := ").map_or(i.text.as_str(), |(_, id)| id))
            .collect();
        let columns = self
            .lineage
            .iter()
            .enumerate()
            .map(|(k, l)| {
                let data_type = schema
                    .fields()
                    .get(k)
                    .map(|f| kiln_contracts::fingerprint::canonical_type(f.data_type()))
                    .unwrap_or_default();
                let identity = identities.get(k).copied().unwrap_or_default();
                let mut others: Vec<BaseColumn> =
                    l.filter.iter().chain(&l.join).chain(&l.group).chain(&l.order).cloned().collect();
                others.sort();
                others.dedup();
                ColumnShape {
                    name: l.column.clone(),
                    fp: column_def_fp(identity, &data_type),
                    values: l.value.clone(),
                    others,
                }
            })
            .collect();
        ProductShape { rows_fp, tables: tables.into_iter().collect(), columns }
    }
}

/// Removes the items that only define columns (never rows): output columns, projection
/// expressions (and so projection nodes), scanned columns, aggregate and window
/// expressions.
fn strip_column_items(node: &mut PlanNode) {
    let column_role = match node.kind.as_str() {
        "Output" | "TableScan" => Some("column"),
        "Projection" => Some("expr"),
        "Aggregate" => Some("aggregate"),
        "Window" => Some("window"),
        _ => None,
    };
    if let Some(role) = column_role {
        node.items.retain(|i| i.role != role);
    }
    for child in &mut node.children {
        strip_column_items(child);
        // A projection never changes rows: it disappears (its input takes its place).
        while child.kind == "Projection" && child.children.len() == 1 {
            let inner = child.children.remove(0);
            *child = inner;
        }
    }
}

fn collect_tables(node: &PlanNode, out: &mut BTreeSet<String>) {
    if node.kind == "TableScan" {
        for item in node.items.iter().filter(|i| i.role == "table") {
            out.insert(item.text.split('#').next().unwrap_or_default().to_owned());
        }
    }
    for child in &node.children {
        collect_tables(child, out);
    }
}
