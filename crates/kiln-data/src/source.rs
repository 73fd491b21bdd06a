//! File sources: a directory (or file) of parquet, csv or ndjson files read with the
//! explicit schema of `CREATE SOURCE`, and the source's data version.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use sha2::{Digest, Sha256};

use crate::{DataError, Result};

/// File formats a source can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    Json,
}

impl FileFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "ndjson" => Some(Self::Json),
            _ => None,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::Parquet => ".parquet",
            Self::Csv => ".csv",
            Self::Json => ".json",
        }
    }
}

/// A compiled file source.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub name: String,
    /// Absolute directory or file.
    pub path: PathBuf,
    pub format: FileFormat,
    /// The declared schema; Hive partition columns (if any) are its last columns.
    pub schema: SchemaRef,
    /// Hive partition columns, read from `col=value` directories (DataFusion's listing
    /// parses them and prunes directories by filters on them).
    pub partition_by: Vec<String>,
    /// `on_error = 'reject'` (CSV, NDJSON): malformed records go to the reading product's
    /// `<product>__rejected` dataset instead of failing it (crate::checked).
    pub reject: bool,
}

impl FileSource {
    /// The DataFusion table that scans this source with its declared schema.
    pub fn table(&self) -> Result<Arc<dyn TableProvider>> {
        if self.reject {
            let mut entries = Vec::new();
            list_files(&self.path, &self.path, self.format.extension(), &mut entries)?;
            entries.sort();
            let files = entries
                .into_iter()
                .map(|(rel, _, _)| if rel.is_empty() { self.path.clone() } else { self.path.join(rel) })
                .collect();
            let format = match self.format {
                FileFormat::Json => crate::checked::CheckedFormat::Json,
                _ => crate::checked::CheckedFormat::Csv,
            };
            return Ok(Arc::new(crate::checked::CheckedCsvTable {
                name: self.name.clone(),
                schema: Arc::clone(&self.schema),
                files,
                format,
            }));
        }
        let mut location = self.path.to_string_lossy().into_owned();
        if self.path.is_dir() && !location.ends_with('/') {
            location.push('/');
        }
        let url = ListingTableUrl::parse(&location)
            .map_err(DataError::exec(format!("source `{}`: bad path {location}", self.name)))?;
        let format: Arc<dyn datafusion::datasource::file_format::FileFormat> = match self.format {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true)),
            FileFormat::Json => Arc::new(JsonFormat::default()),
        };
        let files = self.schema.fields().len() - self.partition_by.len().min(self.schema.fields().len());
        let file_schema = Arc::new(Schema::new(self.schema.fields()[..files].to_vec()));
        let partition_cols =
            self.schema.fields()[files..].iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        let options = ListingOptions::new(format)
            .with_file_extension(self.format.extension())
            .with_table_partition_cols(partition_cols);
        let config = ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema);
        let table = ListingTable::try_new(config).map_err(DataError::exec(format!("source `{}`", self.name)))?;
        Ok(Arc::new(table))
    }

    /// The data version: sha256 over the sorted listing (relative path, size, modification
    /// time in ns). Any added, removed, rewritten or touched file changes it.
    pub fn data_version(&self) -> Result<String> {
        let mut entries = Vec::new();
        list_files(&self.path, &self.path, self.format.extension(), &mut entries)?;
        if entries.is_empty() {
            return Err(DataError::Config(format!(
                "source `{}`: no {} files under {}",
                self.name,
                self.format.extension(),
                self.path.display()
            )));
        }
        entries.sort();
        let mut h = Sha256::new();
        h.update(b"kiln.source_version.v1\n");
        for (path, size, mtime) in entries {
            h.update(format!("{}:{path} {size} {mtime}\n", path.len()).as_bytes());
        }
        Ok(kiln_contracts::fingerprint::hex(&h.finalize()))
    }
}

fn list_files(root: &FsPath, dir: &FsPath, ext: &str, out: &mut Vec<(String, u64, u128)>) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(DataError::io(format!("cannot read {}", dir.display())))?;
    if meta.is_file() {
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let rel = dir.strip_prefix(root).unwrap_or(dir).to_string_lossy().into_owned();
        out.push((rel, meta.len(), mtime.map_or(0, |d| d.as_nanos())));
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(DataError::io(format!("cannot list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(DataError::io(format!("cannot list {}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue; // hidden and staging files are not data (same rule as DataFusion's listing)
        }
        if path.is_dir() || name.ends_with(ext) {
            list_files(root, &path, ext, out)?;
        }
    }
    Ok(())
}
