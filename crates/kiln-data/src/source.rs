//! File sources: a directory (or file) of parquet, csv, ndjson or Arrow IPC files read with the
//! explicit schema of `CREATE SOURCE`, and the source's data version.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};

use crate::codec::Codec;
use crate::{DataError, Result};

/// File formats a source can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Parquet,
    Csv,
    Json,
    /// Arrow IPC files (`.arrow`).
    Arrow,
}

impl FileFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "parquet" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "json" | "ndjson" => Some(Self::Json),
            "arrow" | "ipc" => Some(Self::Arrow),
            _ => None,
        }
    }

    /// The format's main extension (how a directory of a partitioned source is listed).
    fn extension(self) -> &'static str {
        self.extensions()[0]
    }

    /// Every standard extension of the format: the files of a directory that are read.
    /// A path naming one file reads it whatever its name.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Parquet => &[".parquet"],
            Self::Csv => &[".csv"],
            Self::Json => &[".json", ".ndjson", ".jsonl"],
            Self::Arrow => &[".arrow", ".ipc", ".feather"],
        }
    }
}

/// How a CSV or JSON source's files are compressed (`compression`): the codec of the
/// files, or [`SourceCompression::Auto`] (the default), each file's from its name's last
/// extension (`.gz`/`.gzip`, `.zst`/`.zstd`, `.bz2`, `.xz`; none: uncompressed). Parquet
/// and Arrow files compress inside, and take no such option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCompression {
    Auto,
    Fixed(Codec),
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
    /// How Parquet files whose columns differ from the declared ones are read
    /// ([`FileSource::reconcile`]).
    pub evolution: kiln_contracts::EvolutionPolicy,
    /// Declared columns [`FileSource::reconcile`] read with a wider type.
    pub promotions: Vec<Promotion>,
    /// How old its newest data may be (`kiln freshness`).
    pub freshness: Option<Freshness>,
    /// `allow_empty = 'true'`: a path with no data files (or none yet) reads 0 rows,
    /// with a warning, instead of failing the source.
    pub allow_empty: bool,
    /// How its CSV or JSON files are compressed (`Auto` for Parquet and Arrow).
    pub compression: SourceCompression,
}

/// One data file of a [`FileSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub rel: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub partition: Option<Vec<Option<String>>>,
}

/// A source's freshness expectation: its newest data is the largest value of `column`
/// (a timestamp or date), or without one the newest file's modification time; older than
/// `warn` warns, older than `error` fails `kiln freshness`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub warn: Option<std::time::Duration>,
    pub error: Option<std::time::Duration>,
    pub column: Option<String>,
}

/// What [`FileSource::reconcile`] changed: a declared column read with the wider type the
/// files hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub column: String,
    pub declared: String,
    pub promoted: String,
    /// A file holding the wider type.
    pub file: String,
}

impl std::fmt::Display for Promotion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column `{}` declared {} is read as {} ({} holds it)",
            self.column, self.declared, self.promoted, self.file
        )
    }
}

impl FileSource {
    /// The files as Kiln's checked reader reads them, with their partition values.
    fn checked_files(&self) -> Result<Vec<crate::checked::CheckedFile>> {
        self.listing()?
            .into_iter()
            .map(|(rel, _, _)| {
                let partition = hive_values(&rel, &self.partition_by).ok_or_else(|| DataError::Source {
                    name: self.name.clone(),
                    message: format!(
                        "{rel} is not under `{}=<value>/` directories (partitioned_by)",
                        self.partition_by.join("=<value>/")
                    ),
                })?;
                let path = self.file_path(&rel);
                let codec = self.codec_of(&path);
                Ok(crate::checked::CheckedFile { path, partition, codec })
            })
            .collect()
    }

    /// The file at `rel` of its listing (empty: `path` names the one file).
    fn file_path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() { self.path.clone() } else { self.path.join(rel) }
    }

    /// The codec a file is decoded with: the declared one, or the one its name says.
    fn codec_of(&self, path: &FsPath) -> Codec {
        match self.compression {
            SourceCompression::Fixed(codec) => codec,
            SourceCompression::Auto if matches!(self.format, FileFormat::Csv | FileFormat::Json) => {
                Codec::of_name(&path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
            }
            SourceCompression::Auto => Codec::None,
        }
    }

    /// The one codec of all its files. DataFusion's listing reads a table with one
    /// compression, so a source whose files mix codecs (under `auto`) is an error naming
    /// two of them: a folder is one source's encoding.
    fn codec(&self) -> Result<Codec> {
        match self.compression {
            SourceCompression::Fixed(codec) => return Ok(codec),
            // (Parquet and Arrow compress inside; a path not there yet has no files, and
            // its data version says so.)
            _ if !matches!(self.format, FileFormat::Csv | FileFormat::Json) || !self.path.exists() => {
                return Ok(Codec::None);
            }
            SourceCompression::Auto => {}
        }
        let mut seen: Option<(Codec, String)> = None;
        for (rel, _, _) in self.listing()? {
            let path = self.file_path(&rel);
            let codec = self.codec_of(&path);
            let shown = if rel.is_empty() { self.path.display().to_string() } else { rel };
            match &seen {
                None => seen = Some((codec, shown)),
                Some((first, at)) if *first != codec => {
                    return Err(DataError::Source {
                        name: self.name.clone(),
                        message: format!(
                            "its files mix compressions: {at} is {}, {shown} is {}; keep one codec per source (or set `compression`)",
                            first.name(),
                            codec.name()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(seen.map_or(Codec::None, |(c, _)| c))
    }

    fn checked_format(&self) -> crate::checked::CheckedFormat {
        match self.format {
            FileFormat::Json => crate::checked::CheckedFormat::Json,
            _ => crate::checked::CheckedFormat::Csv,
        }
    }

    /// Where a CSV or JSON source read in fail mode first holds a record that does not
    /// conform (`None`: nowhere, or another format): the checked reader's verdict
    /// ([`crate::checked::first_rejected`]), for an error that can name file and line.
    pub fn first_bad_record(&self) -> Result<Option<crate::checked::Rejected>> {
        if self.reject || !matches!(self.format, FileFormat::Csv | FileFormat::Json) {
            return Ok(None);
        }
        for file in self.checked_files()? {
            let found = crate::checked::first_rejected(&self.name, &self.schema, self.checked_format(), &file)
                .map_err(DataError::exec(format!("source `{}`", self.name)))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The build id of `<source>__rejected` for the files as they are now
    /// ([`kiln_artifact::identity::source_rejects`]).
    pub fn rejects_version(&self) -> Result<String> {
        let read = format!("{:?} {}", self.format, self.codec()?.name());
        Ok(kiln_artifact::identity::source_rejects(
            &kiln_contracts::schema_fingerprint(&self.schema),
            &self.data_version()?,
            &read,
            crate::checked::READER_VERSION,
        ))
    }

    /// Its data files now: path relative to `path`, size, modification time (ns since the
    /// epoch) and Hive partition values (in `partition_by`'s order; `None` when the
    /// directories do not match).
    pub fn files(&self) -> Result<Vec<SourceFile>> {
        let root_is_file = self.path.is_file();
        Ok(self
            .listing()?
            .into_iter()
            .map(|(rel, size, mtime_ns)| {
                let partition = if root_is_file { None } else { hive_values(&rel, &self.partition_by) };
                SourceFile { rel, size, mtime_ns, partition }
            })
            .collect())
    }

    /// A table that scans one of its files (`rel`, from [`FileSource::files`]) with the
    /// declared columns other than the Hive partition columns.
    pub fn file_table(&self, rel: &str) -> Result<Arc<dyn TableProvider>> {
        let kept = self.schema.fields().len() - self.partition_by.len().min(self.schema.fields().len());
        let one = FileSource {
            path: if self.path.is_file() { self.path.clone() } else { self.path.join(rel) },
            schema: Arc::new(Schema::new(self.schema.fields()[..kept].to_vec())),
            partition_by: Vec::new(),
            allow_empty: false,
            ..self.clone()
        };
        one.table()
    }

    /// A table that scans only the files `rels` (from [`FileSource::files`]) of an
    /// unpartitioned directory, with the declared schema: what a product merged by key
    /// reads of its input's new files. Partitioned and rejecting sources are refused: the
    /// partition values come from listing the whole directory, and a rejecting source's
    /// `__rejected` dataset is versioned by all its files.
    pub fn files_table(&self, rels: &[String]) -> Result<Arc<dyn TableProvider>> {
        let refuse = |why: &str| {
            Err(DataError::Source {
                name: self.name.clone(),
                message: format!("only some of its files cannot be read: {why}"),
            })
        };
        if !self.partition_by.is_empty() {
            return refuse("it is partitioned (partitioned_by)");
        }
        if self.reject {
            return refuse("it sets records aside (on_error = 'reject')");
        }
        if self.path.is_file() || rels.is_empty() {
            return match rels {
                [] => Ok(Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::clone(&self.schema)))),
                _ => self.table(),
            };
        }
        self.listing_table(Some(rels))
    }

    /// The DataFusion table that scans this source with its declared schema.
    pub fn table(&self) -> Result<Arc<dyn TableProvider>> {
        self.listing_table(None)
    }

    /// [`FileSource::table`], of the files `only` of an unpartitioned directory.
    fn listing_table(&self, only: Option<&[String]>) -> Result<Arc<dyn TableProvider>> {
        if only.is_none() && self.allow_empty && self.listing()?.is_empty() {
            // No files (or no directory) yet: no rows, with the declared columns.
            return Ok(Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::clone(&self.schema))));
        }
        if self.reject {
            return Ok(Arc::new(crate::checked::CheckedCsvTable {
                name: self.name.clone(),
                schema: Arc::clone(&self.schema),
                files: self.checked_files()?,
                format: self.checked_format(),
                rejects_version: self.rejects_version()?,
            }));
        }
        let mut location = self.path.to_string_lossy().into_owned();
        if self.path.is_dir() && !location.ends_with('/') {
            location.push('/');
        }
        let url = ListingTableUrl::parse(&location)
            .map_err(DataError::exec(format!("source `{}`: bad path {location}", self.name)))?;
        let codec = self.codec()?;
        let codec_suffix = codec.suffixes().first().copied().unwrap_or("");
        let codec = codec.file_compression_type();
        let format: Arc<dyn datafusion::datasource::file_format::FileFormat> = match self.format {
            FileFormat::Parquet => Arc::new(ParquetFormat::default()),
            FileFormat::Csv => Arc::new(CsvFormat::default().with_has_header(true).with_file_compression_type(codec)),
            FileFormat::Json => Arc::new(JsonFormat::default().with_file_compression_type(codec)),
            FileFormat::Arrow => Arc::new(datafusion::datasource::file_format::arrow::ArrowFormat),
        };
        let files = self.schema.fields().len() - self.partition_by.len().min(self.schema.fields().len());
        let file_schema = Arc::new(Schema::new(self.schema.fields()[..files].to_vec()));
        let partition_cols =
            self.schema.fields()[files..].iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
        // One file is read whatever its name; an unpartitioned directory reads exactly the
        // files of every standard extension that its data version lists.
        // (A partitioned directory is listed by DataFusion, by the main extension and the
        // codec's main suffix: `x.csv.gz`.)
        let extension =
            if self.path.is_file() { String::new() } else { format!("{}{}", self.format.extension(), codec_suffix) };
        let options =
            ListingOptions::new(format).with_file_extension(extension).with_table_partition_cols(partition_cols);
        let config = if self.partition_by.is_empty() && self.path.is_dir() {
            let rels: Vec<String> = match only {
                Some(rels) => rels.to_vec(),
                None => self.listing()?.into_iter().map(|(rel, _, _)| rel).collect(),
            };
            let urls = rels
                .iter()
                .map(|rel| {
                    let file = self.path.join(rel).to_string_lossy().into_owned();
                    ListingTableUrl::parse(&file)
                        .map_err(DataError::exec(format!("source `{}`: bad path {file}", self.name)))
                })
                .collect::<Result<Vec<_>>>()?;
            let options = options.with_file_extension("");
            if urls.is_empty() {
                ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema)
            } else {
                ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(file_schema)
            }
        } else {
            ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema)
        };
        let table = ListingTable::try_new(config).map_err(DataError::exec(format!("source `{}`", self.name)))?;
        Ok(Arc::new(table))
    }

    /// Checks a Parquet source's files (their footers) against the declared columns, by
    /// `schema_evolution`; records the promotions made to `schema` (permissive only) in
    /// `promotions`. A source without files yet passes (its data version reports that).
    ///
    /// - `strict` (default): every file has every declared column, with the declared type
    ///   (up to string and binary encodings). Any other difference is an error naming the
    ///   file and the column. Extra columns in files are not read.
    /// - `permissive`: a file may lack a nullable declared column (read as NULL) or hold a
    ///   narrower type that widens without loss to the declared one (kiln_contracts'
    ///   lattice: Int32 → Int64, Float32 → Float64, Date → Timestamp, ...); when the files
    ///   hold a wider type than declared, the column is promoted to the type the files
    ///   unify to (`kiln_contracts::unify`), and products see that type. Types with no
    ///   common widening, and a NOT NULL column missing from a file, are errors.
    ///
    /// CSV and JSON files carry no types; they are read with the declared schema.
    pub fn reconcile(&mut self) -> Result<()> {
        use kiln_contracts::EvolutionPolicy;
        use kiln_contracts::compat::{is_safe_widening, same_logical_type};
        use kiln_contracts::unify::{UnifyMode, unify};
        if !matches!(self.format, FileFormat::Parquet | FileFormat::Arrow) || !self.path.exists() {
            return Ok(());
        }
        let fail = |message: String| DataError::Source { name: self.name.clone(), message };
        let entries = self.listing()?;
        let mut files: Vec<(String, Schema)> = Vec::with_capacity(entries.len());
        for (rel, _, _) in entries {
            let path = self.file_path(&rel);
            let shown = if rel.is_empty() { self.path.display().to_string() } else { rel };
            let file = std::fs::File::open(&path).map_err(DataError::io(format!("cannot read {}", path.display())))?;
            let schema = if self.format == FileFormat::Arrow {
                if let Some(problem) = crate::ipc_schema::ipc_file_problem(&path) {
                    return Err(fail(format!("{shown}: its Arrow schema is invalid: {problem}")));
                }
                datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
                    .map(|r| r.schema().as_ref().clone())
                    .map_err(|e| fail(format!("{shown}: not a readable Arrow IPC file: {e}")))?
            } else {
                let metadata = datafusion::parquet::file::metadata::ParquetMetaDataReader::new()
                    .parse_and_finish(&file)
                    .map_err(|e| fail(format!("{shown}: not a readable Parquet file: {e}")))?;
                let meta = metadata.file_metadata();
                if let Some(problem) = crate::ipc_schema::embedded_schema_problem(meta.key_value_metadata()) {
                    return Err(fail(format!(
                        "{shown}: its embedded Arrow schema (ARROW:schema) is invalid: {problem}"
                    )));
                }
                datafusion::parquet::arrow::parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
                    .map_err(|e| fail(format!("{shown}: {e}")))?
            };
            files.push((shown, schema));
        }
        // DataFusion's Arrow IPC reader does not cast: such files are read strictly, in
        // the string and binary encodings they hold.
        let mode = match self.evolution {
            EvolutionPolicy::Strict => UnifyMode::Strict,
            _ if self.format == FileFormat::Arrow => UnifyMode::Strict,
            _ => UnifyMode::Permissive,
        };
        let inputs: Vec<(&str, &Schema)> = files.iter().map(|(f, s)| (f.as_str(), s)).collect();
        let unified = unify(&inputs, mode).map_err(|e| fail(e.to_string()))?;
        let strict = mode == UnifyMode::Strict;
        let in_files = self.schema.fields().len() - self.partition_by.len();
        let mut fields: Vec<Field> = self.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut promotions = Vec::new();
        for field in fields.iter_mut().take(in_files) {
            let name = field.name().clone();
            let missing = files.iter().find(|(_, s)| s.field_with_name(&name).is_err());
            if let Some((file, _)) = missing
                && (strict || !field.is_nullable())
            {
                let why = if strict { "schema_evolution = 'strict'" } else { "it is declared NOT NULL" };
                return Err(fail(format!("{file} has no column `{name}` ({why})")));
            }
            let Ok(found) = unified.field_with_name(&name) else { continue };
            let (found, declared) = (found.data_type(), field.data_type().clone());
            let holder = |t: &DataType| {
                files
                    .iter()
                    .find(|(_, s)| s.field_with_name(&name).is_ok_and(|f| !same_logical_type(f.data_type(), t)))
                    .or_else(|| files.iter().find(|(_, s)| s.field_with_name(&name).is_ok()))
                    .map_or(String::new(), |(f, _)| f.clone())
            };
            if same_logical_type(found, &declared) {
                // (Unification canonicalizes encodings; the reader needs the file's own.)
                let held = files.iter().find_map(|(_, s)| s.field_with_name(&name).ok());
                if let (FileFormat::Arrow, Some(held)) = (self.format, held) {
                    *field = field.clone().with_data_type(held.data_type().clone());
                }
                continue;
            }
            if !strict && is_safe_widening(found, &declared) {
                continue;
            }
            if !strict && is_safe_widening(&declared, found) {
                let file = holder(&declared);
                promotions.push(Promotion {
                    column: name.clone(),
                    declared: declared.to_string(),
                    promoted: found.to_string(),
                    file,
                });
                *field = field.clone().with_data_type(found.clone());
                continue;
            }
            let hint = if strict { "; schema_evolution = 'permissive' reads lossless widenings" } else { "" };
            return Err(fail(format!("{}: column `{name}` is {found}, declared {declared}{hint}", holder(&declared))));
        }
        if !promotions.is_empty() || self.format == FileFormat::Arrow {
            self.schema = Arc::new(Schema::new_with_metadata(fields, self.schema.metadata().clone()));
        }
        self.promotions = promotions;
        Ok(())
    }

    /// Its files (path relative to `path`, size, modification time in ns), sorted: every
    /// file with one of the format's extensions, or the one file `path` names.
    fn listing(&self) -> Result<Vec<(String, u64, u128)>> {
        let mut entries = Vec::new();
        if self.allow_empty && !self.path.exists() {
            return Ok(entries);
        }
        let extensions: Vec<String> = match self.format {
            // CSV and JSON files may be compressed whole: `x.csv.gz` is a CSV file.
            FileFormat::Csv | FileFormat::Json => self
                .format
                .extensions()
                .iter()
                .flat_map(|e| {
                    std::iter::once(e.to_string())
                        .chain(Codec::COMPRESSED.iter().flat_map(|c| c.suffixes()).map(move |s| format!("{e}{s}")))
                })
                .collect(),
            _ => self.format.extensions().iter().map(|e| e.to_string()).collect(),
        };
        let extensions: Vec<&str> = extensions.iter().map(String::as_str).collect();
        list_files(&self.path, &self.path, &extensions, &mut entries)?;
        entries.sort();
        Ok(entries)
    }

    /// Whether it has no data files now (an `allow_empty` source read as empty).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.listing()?.is_empty())
    }

    /// The modification time of its newest file (milliseconds since the epoch), `None`
    /// when it has no files.
    pub fn newest_modified_ms(&self) -> Result<Option<i64>> {
        Ok(self.listing()?.iter().map(|(_, _, ns)| (*ns / 1_000_000) as i64).max())
    }

    /// The data version: sha256 over the sorted listing (relative path, size, modification
    /// time in ns). Any added, removed, rewritten or touched file changes it.
    pub fn data_version(&self) -> Result<String> {
        let entries = self.listing()?;
        if entries.is_empty() && !self.allow_empty {
            return Err(DataError::Config(format!(
                "source `{}`: no {} files under {} (allow_empty = 'true' reads it as empty)",
                self.name,
                self.format.extensions().join(" or "),
                self.path.display()
            )));
        }
        Ok(kiln_artifact::identity::listing_version(&entries))
    }
}

/// The Hive partition values of a file at `rel` (its directories `col=value`, in the
/// order of `columns`, Hive-unescaped; `__HIVE_DEFAULT_PARTITION__` is NULL). `None` when
/// the directories do not match.
fn hive_values(rel: &str, columns: &[String]) -> Option<Vec<Option<String>>> {
    let dirs: Vec<&str> = rel.split('/').collect();
    let dirs = &dirs[..dirs.len().saturating_sub(1)];
    if dirs.len() < columns.len() {
        return (columns.is_empty()).then(Vec::new);
    }
    let dirs = &dirs[dirs.len() - columns.len()..];
    columns
        .iter()
        .zip(dirs)
        .map(|(column, dir)| {
            let value = dir.strip_prefix(column.as_str())?.strip_prefix('=')?;
            Some(if value == "__HIVE_DEFAULT_PARTITION__" { None } else { Some(unescape(value)) })
        })
        .collect()
}

/// Undoes Hive's `%XX` escaping of directory values.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut k = 0;
    while k < bytes.len() {
        let hex = bytes
            .get(k + 1..k + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[k], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                k += 3;
            }
            (b, _) => {
                out.push(b);
                k += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn list_files(root: &FsPath, dir: &FsPath, ext: &[&str], out: &mut Vec<(String, u64, u128)>) -> Result<()> {
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
        if path.is_dir() || ext.iter().any(|e| name.ends_with(e)) {
            list_files(root, &path, ext, out)?;
        }
    }
    Ok(())
}

/// The first local Parquet file scanned by `plan` that does not read whole, and why:
/// DataFusion reports a page that fails to decode (a checksum mismatch, a corrupt
/// encoding) without the file it came from, so after such a failure each scanned file is
/// read again, alone, to name it. Only called once a build has failed.
pub async fn unreadable_parquet_file(
    plan: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
) -> Option<(std::path::PathBuf, String)> {
    use datafusion::datasource::physical_plan::FileScanConfig;
    use datafusion::datasource::source::DataSourceExec;
    use futures::StreamExt;
    let mut files = Vec::new();
    let mut stack = vec![Arc::clone(plan)];
    while let Some(node) = stack.pop() {
        if let Some(exec) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>()
            && config.file_source().file_type() == "parquet"
        {
            files.extend(config.file_groups.iter().flat_map(|g| g.files()).map(|f| f.object_meta.location.clone()));
        }
        stack.extend(node.children().into_iter().cloned());
    }
    for location in files {
        let path = std::path::PathBuf::from(format!("/{location}"));
        let Ok(file) = tokio::fs::File::open(&path).await else { continue };
        let stream = match datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder::new(file).await {
            Ok(builder) => builder.build(),
            Err(e) => return Some((path, e.to_string())),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => return Some((path, e.to_string())),
        };
        while let Some(batch) = stream.next().await {
            if let Err(e) = batch {
                return Some((path, e.to_string()));
            }
        }
    }
    None
}
