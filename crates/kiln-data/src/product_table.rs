//! A product as a DataFusion table: reads the files its committed manifest lists.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use kiln_artifact::Manifest;

use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// A product table. It is registered (with its schema) when the project compiles, so
/// downstream queries can be planned before anything runs, and bound to a manifest when a
/// build of the product is committed; scanning it before then is an error.
#[derive(Debug)]
pub struct ProductTable {
    name: String,
    schema: SchemaRef,
    bound: RwLock<Option<Arc<ListingTable>>>,
}

impl ProductTable {
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        Self { name: name.into(), schema, bound: RwLock::new(None) }
    }

    /// The product's schema.
    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    /// Points the table at the files of a committed manifest.
    pub fn bind(&self, warehouse: &Warehouse, manifest: &Manifest) -> Result<()> {
        let urls = manifest.files.iter().map(|f| warehouse.url(&f.path)).collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.schema));
        let table = ListingTable::try_new(config).map_err(DataError::exec(format!("product `{}`", self.name)))?;
        let mut slot = self.bound.write().map_err(|_| DataError::Config("product table lock poisoned".into()))?;
        *slot = Some(Arc::new(table));
        Ok(())
    }

    fn listing(&self) -> DfResult<Arc<ListingTable>> {
        let slot = self.bound.read().map_err(|_| DataFusionError::Internal("product table lock poisoned".into()))?;
        slot.clone().ok_or_else(|| DataFusionError::External(Box::new(DataError::NotBuilt(self.name.clone()))))
    }
}

#[async_trait]
impl TableProvider for ProductTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// Filters are offered to the Parquet scan for pruning but kept above it (Inexact), so
    /// the answer is the same whether or not the table is bound when the plan is optimized.
    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.listing()?.scan(state, projection, filters, limit).await
    }
}
