//! A product as a DataFusion table: reads the files its committed manifest lists.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, PartitionedFile};
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
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
    bound: RwLock<Option<Bound>>,
}

/// What a product table reads once bound.
#[derive(Debug, Clone)]
enum Bound {
    /// Unpartitioned: the manifest's files as a listing table over exactly those paths.
    Files(Arc<ListingTable>),
    /// Hive-partitioned: the manifest's files with their partition values (from the
    /// manifest, not parsed from paths).
    Partitioned(Arc<PartitionedFiles>),
}

#[derive(Debug)]
struct PartitionedFiles {
    store_url: ObjectStoreUrl,
    table_schema: TableSchema,
    /// For each product column, its index in the table schema (file columns, then the
    /// partition columns).
    mapping: Vec<usize>,
    files: Vec<PartitionedFile>,
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
        let bound = if manifest.partition_by.is_empty() {
            let urls = manifest.files.iter().map(|f| warehouse.url(&f.path)).collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(Arc::clone(&self.schema));
            let table = ListingTable::try_new(config).map_err(DataError::exec(format!("product `{}`", self.name)))?;
            Bound::Files(Arc::new(table))
        } else {
            Bound::Partitioned(Arc::new(self.partitioned(warehouse, manifest)?))
        };
        let mut slot = self.bound.write().map_err(|_| DataError::Internal("product table lock poisoned".into()))?;
        *slot = Some(bound);
        Ok(())
    }

    fn partitioned(&self, warehouse: &Warehouse, manifest: &Manifest) -> Result<PartitionedFiles> {
        let fail = |m: String| DataError::Config(format!("product `{}`: {m}", self.name));
        let mut partition_fields = Vec::with_capacity(manifest.partition_by.len());
        for name in &manifest.partition_by {
            let field = self.schema.field_with_name(name).map_err(|_| fail(format!("no partition column `{name}`")))?;
            partition_fields.push(Arc::new(field.clone()));
        }
        let file_fields: Vec<_> =
            self.schema.fields().iter().filter(|f| !manifest.partition_by.contains(f.name())).cloned().collect();
        let file_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(file_fields));
        let table_schema =
            TableSchema::builder(Arc::clone(&file_schema)).with_table_partition_cols(partition_fields.clone()).build();
        let mapping = self
            .schema
            .fields()
            .iter()
            .map(|f| match manifest.partition_by.iter().position(|p| p == f.name()) {
                Some(k) => Ok(file_schema.fields().len() + k),
                None => file_schema.index_of(f.name()).map_err(|e| fail(e.to_string())),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for entry in &manifest.files {
            // From the object path itself: a path string would be encoded a second time.
            let mut file = PartitionedFile::new_from_meta(object_store::ObjectMeta {
                location: warehouse.path(&entry.path),
                last_modified: Default::default(),
                size: entry.bytes,
                e_tag: None,
                version: None,
            });
            for (k, field) in partition_fields.iter().enumerate() {
                let value = match entry.partition.get(k).cloned().flatten() {
                    None => ScalarValue::try_from(field.data_type()),
                    Some(text) => ScalarValue::try_from_string(text, field.data_type()),
                }
                .map_err(|e| fail(format!("{}: partition value of `{}`: {e}", entry.path, field.name())))?;
                file.partition_values.push(value);
            }
            files.push(file);
        }
        let store_url = ObjectStoreUrl::parse(warehouse.store_url()).map_err(|e| fail(e.to_string()))?;
        Ok(PartitionedFiles { store_url, table_schema, mapping, files })
    }

    fn bound(&self) -> DfResult<Bound> {
        let slot = self.bound.read().map_err(|_| DataFusionError::Internal("product table lock poisoned".into()))?;
        slot.clone().ok_or_else(|| DataFusionError::External(Box::new(DataError::NotBuilt(self.name.clone()))))
    }
}

impl PartitionedFiles {
    /// The files whose partition values can satisfy every filter that reads only partition
    /// columns: each such filter is evaluated on a file's (constant) values, and a file
    /// where one is false or NULL is skipped.
    fn prune(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<PartitionedFile>> {
        let partition_fields = self.table_schema.table_partition_cols();
        let names: Vec<&str> = partition_fields.iter().map(|f| f.name().as_str()).collect();
        let applicable: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                let refs = f.column_refs();
                !refs.is_empty() && refs.iter().all(|c| names.contains(&c.name.as_str()))
            })
            .map(|f| {
                f.clone()
                    .transform(|e| match e {
                        Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
                        other => Ok(Transformed::no(other)),
                    })
                    .map(|t| t.data)
            })
            .collect::<DfResult<_>>()?;
        if applicable.is_empty() {
            return Ok(self.files.clone());
        }
        let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            partition_fields.iter().map(|f| f.as_ref().clone()).collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(Arc::clone(&schema))?;
        let predicates = applicable
            .iter()
            .map(|f| state.create_physical_expr(f.clone(), &df_schema))
            .collect::<DfResult<Vec<_>>>()?;
        let mut kept = Vec::with_capacity(self.files.len());
        for file in &self.files {
            let columns = file.partition_values.iter().map(|v| v.to_array()).collect::<DfResult<Vec<_>>>()?;
            let row = RecordBatch::try_new(Arc::clone(&schema), columns)?;
            let mut keep = true;
            for predicate in &predicates {
                let value = predicate.evaluate(&row)?.into_array(1)?;
                keep &= value.as_boolean_opt().is_some_and(|b| b.is_valid(0) && b.value(0));
            }
            if keep {
                kept.push(file.clone());
            }
        }
        Ok(kept)
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
        match self.bound()? {
            Bound::Files(listing) => listing.scan(state, projection, filters, limit).await,
            Bound::Partitioned(p) => {
                // Filters stay above the scan (Inexact), so pruning only skips files that
                // cannot hold a matching row; the rest are spread over the target
                // partitions round-robin, in manifest order.
                let files = p.prune(state, filters)?;
                let n = state.config().target_partitions().max(1).min(files.len().max(1));
                let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); n];
                for (i, file) in files.into_iter().enumerate() {
                    groups[i % n].push(file);
                }
                let columns: Vec<usize> = match projection {
                    Some(projection) => projection.iter().map(|&i| p.mapping[i]).collect(),
                    None => p.mapping.clone(),
                };
                let source = Arc::new(ParquetSource::new(p.table_schema.clone()));
                let config = FileScanConfigBuilder::new(p.store_url.clone(), source)
                    .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                    .with_limit(limit)
                    .with_projection_indices(Some(columns))?
                    .build();
                Ok(DataSourceExec::from_data_source(config))
            }
        }
    }
}
