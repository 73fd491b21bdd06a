//! The warehouse layout before Delta tables, and its conversion.
//!
//! A dataset used to be `<name>/_current.json` (a pointer) naming
//! `<name>/builds/<run>/_manifest.json` (the committed build's files). Readers refuse such
//! a dataset ([`DataError::OldLayout`]); `kiln build` converts it with
//! [`Warehouse::convert`]: the pointed-to build becomes version 0 of a new Delta table over
//! the same files (nothing is copied), then the pointer is deleted. A conversion killed
//! midway leaves either the old layout (converted again next time) or the table (the
//! leftover pointer is ignored, and deleted by `kiln gc`).

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use kiln_artifact::{CurrentPointer, Manifest};
use object_store::ObjectStoreExt;

use super::Warehouse;
use crate::{DataError, Result};

fn pointer_path(name: &str) -> String {
    format!("{name}/_current.json")
}

/// Fails with [`DataError::OldLayout`] when dataset `name` (which has no Delta table) is
/// in the old layout.
pub(super) async fn refuse_old_layout(warehouse: &Warehouse, name: &str) -> Result<()> {
    match super::get_optional(&warehouse.store, &warehouse.path(&pointer_path(name))).await? {
        Some(_) => Err(DataError::OldLayout(name.to_owned())),
        None => Ok(()),
    }
}

impl Warehouse {
    /// [`Warehouse::current`], converting a dataset still in the old layout first (see
    /// [`Warehouse::convert`]): what commands that build read.
    pub async fn current_or_convert(&self, name: &str, schema: Option<&Schema>) -> Result<Option<Manifest>> {
        match self.current(name).await {
            Err(DataError::OldLayout(_)) => self.convert(name, schema).await,
            other => other,
        }
    }

    /// Converts dataset `name` from the old layout into a Delta table whose version 0 is
    /// its committed build; then its committed manifest. The table's schema is the
    /// build's files' (their footers'), its partition columns typed as in `schema` (the
    /// dataset's logical schema, when known) or as strings. A materialized view's side
    /// datasets whose own pointer lagged behind the view's checkpoint (a run killed in
    /// between) are converted from the view's copy of their manifest.
    pub async fn convert(&self, name: &str, schema: Option<&Schema>) -> Result<Option<Manifest>> {
        let Some((old, sides)) = self.old_manifest(name).await? else { return self.current(name).await };
        for (side, copy) in sides {
            if !self.log_versions(&side).await?.is_empty() {
                continue;
            }
            let lagging = match self.old_manifest(&side).await? {
                Some((own, _)) => own.build_id != copy.build_id,
                None => true,
            };
            if lagging {
                self.move_escaped(&copy).await?;
                let side_schema = self.build_schema(&copy, None).await?;
                self.commit(&copy, None, &side_schema).await?;
                self.delete(&pointer_path(&side)).await?;
            }
        }
        self.move_escaped(&old).await?;
        let table_schema = self.build_schema(&old, schema).await?;
        let committed = self.commit(&old, None, &table_schema).await?;
        self.delete(&pointer_path(name)).await?;
        Ok(Some(committed))
    }

    /// Files whose object names the old layout escaped once more than a Hive directory
    /// is (`k=a%253Ab` for `k=a%3Ab`, every `%` escaped again) are copied to their
    /// names, where Delta readers look.
    async fn move_escaped(&self, manifest: &Manifest) -> Result<()> {
        for file in &manifest.files {
            let old = file.path.split('/').filter(|s| !s.is_empty()).fold(self.root.clone(), |p, s| p.join(s));
            let new = self.path(&file.path);
            if old != new {
                match self.store.copy_if_not_exists(&old, &new).await {
                    Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
                    Err(e) => return Err(DataError::store(format!("cannot copy {old} to {new}"))(e)),
                }
            }
        }
        Ok(())
    }

    /// The schema of an old build: its first file's columns, then its partition columns.
    async fn build_schema(&self, manifest: &Manifest, logical: Option<&Schema>) -> Result<Schema> {
        let mut fields: Vec<Field> = match self.file_schema(manifest).await? {
            Some(s) => s.fields().iter().map(|f| f.as_ref().clone()).collect(),
            None => match logical {
                Some(s) => return Ok(s.clone()),
                None => {
                    return Err(DataError::Config(format!(
                        "dataset `{}` has no files to read its schema from; delete its directory and build it again",
                        manifest.product
                    )));
                }
            },
        };
        for column in &manifest.partition_by {
            let field = logical
                .and_then(|s| s.field_with_name(column).ok().cloned())
                .unwrap_or_else(|| Field::new(column, DataType::Utf8, true));
            fields.push(field);
        }
        Ok(Schema::new(fields))
    }

    /// The old layout's committed manifest of `name` and the side manifests it carries.
    async fn old_manifest(&self, name: &str) -> Result<Option<(Manifest, Vec<(String, Manifest)>)>> {
        let rel = pointer_path(name);
        let Some(bytes) = super::get_optional(&self.store, &self.path(&rel)).await? else { return Ok(None) };
        let pointer = CurrentPointer::from_json(&bytes, &rel)?;
        let bytes = super::get_optional(&self.store, &self.path(&pointer.manifest))
            .await?
            .ok_or_else(|| DataError::Config(format!("pointer {rel} names a missing manifest {}", pointer.manifest)))?;
        let mut value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::Config(format!("{}: not a manifest: {e}", pointer.manifest)))?;
        // Its side datasets' manifests were whole manifests then.
        let sides = value.as_object_mut().and_then(|o| o.remove("side"));
        let mut side = Vec::new();
        if let Some(serde_json::Value::Object(map)) = sides {
            for (name, m) in map {
                let text = serde_json::to_vec(&m).map_err(|e| DataError::Internal(e.to_string()))?;
                side.push((name, Manifest::from_json(&text, &pointer.manifest)?));
            }
        }
        let text = serde_json::to_vec(&value).map_err(|e| DataError::Internal(e.to_string()))?;
        Ok(Some((Manifest::from_json(&text, &pointer.manifest)?, side)))
    }

    /// The schema of a manifest's first data file (its footer's), if it has files.
    async fn file_schema(&self, manifest: &Manifest) -> Result<Option<Schema>> {
        let Some(file) = manifest.files.first() else { return Ok(None) };
        let context = || format!("cannot read the footer of {}", file.path);
        let meta = crate::writer::files::read_back_metadata(self, file).await.map_err(DataError::parquet(context()))?;
        let schema = datafusion::parquet::arrow::parquet_to_arrow_schema(
            meta.file_metadata().schema_descr(),
            meta.file_metadata().key_value_metadata(),
        )
        .map_err(DataError::parquet(context()))?;
        Ok(Some(schema))
    }
}
