//! How a dataset's rows become files: the typed program the control plane compiles from a
//! product's definition (`ORDER BY`, `PARTITIONED BY`, `WITH (...)`) and the writer
//! follows. Nothing here parses option text: kiln-control validates the user's options
//! (with their locations) and builds these values; the writer only reads them.

use std::collections::BTreeMap;

use datafusion::common::config::TableParquetOptions;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use datafusion::parquet::schema::types::ColumnPath;

use crate::{DataError, Result};

/// Everything about a dataset's files that is fixed by its definition.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteLayout {
    pub ordering: Ordering,
    /// Hive partition columns (`PARTITIONED BY`), in directory order: rows go to
    /// `col=value/...` directories and the columns are not stored in the files.
    pub partition_by: Vec<String>,
    pub files: FileSizing,
    pub parquet: ParquetOptions,
    /// What a build does with the dataset's committed data.
    pub existing: ExistingData,
    pub basename: Basename,
    /// The write options as the definition gave them, normalized, for the manifest's
    /// record (`Manifest::write_options`); never read back by the writer.
    pub recorded: BTreeMap<String, String>,
    /// `compact_after`: once an appended dataset has this many files, its small ones are
    /// compacted after the commit that reached it (crate::compact).
    pub compact_after: Option<usize>,
}

impl WriteLayout {
    /// The layout of a dataset Kiln derives itself (`<product>__rejected`, `<view>__late`):
    /// producer order, no partitions, default Parquet options.
    pub fn derived(max_rows_per_file: usize) -> Self {
        Self {
            ordering: Ordering::Producer,
            partition_by: Vec::new(),
            files: FileSizing { max_rows: max_rows_per_file, max_bytes: None },
            parquet: ParquetOptions::default(),
            existing: ExistingData::Replace,
            basename: Basename::default(),
            recorded: BTreeMap::new(),
            compact_after: None,
        }
    }
}

/// The order promise of a dataset (the brief's determinism tiers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordering {
    /// Tier 1: no promise; the writer spreads encoding over every core.
    Unordered,
    /// Tier 2: each output partition's rows in the order the plan produces them, files in
    /// partition order.
    Producer,
    /// Tier 3: the canonical sort by these keys, verified row by row on write.
    Sorted(Vec<SortKey>),
}

impl Ordering {
    /// The tier the manifest records: 1, 2 or 3.
    pub fn tier(&self) -> u8 {
        match self {
            Ordering::Unordered => 1,
            Ordering::Producer => 2,
            Ordering::Sorted(_) => 3,
        }
    }

    /// The sort keys (tier 3), empty otherwise.
    pub fn keys(&self) -> &[SortKey] {
        match self {
            Ordering::Sorted(keys) => keys,
            _ => &[],
        }
    }

    /// The keys as the manifest records them: `c_custkey ASC`.
    pub fn keys_text(&self) -> Vec<String> {
        self.keys().iter().map(|k| format!("{} {}", k.column, if k.ascending { "ASC" } else { "DESC" })).collect()
    }
}

/// One key of the canonical sort. NULLs sort last ascending and first descending, as the
/// compiled sort puts them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub ascending: bool,
}

/// When a data file is finished and the next one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSizing {
    /// `max_rows_per_file`.
    pub max_rows: usize,
    /// `max_bytes_per_file`: a file ends once its written bytes plus its open row group's
    /// encoded size reach this (checked after each batch); whichever of the two comes
    /// first.
    pub max_bytes: Option<u64>,
}

/// A Parquet setting for every column (`default`, else the session's) with per-column
/// exceptions (leaf column paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSetting<T> {
    pub default: Option<T>,
    pub columns: Vec<(ColumnPath, T)>,
}

impl<T> Default for ColumnSetting<T> {
    fn default() -> Self {
        Self { default: None, columns: Vec::new() }
    }
}

/// A product's Parquet write options, on top of the session's
/// `datafusion.execution.parquet.*` settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParquetOptions {
    pub compression: ColumnSetting<Compression>,
    pub dictionary: ColumnSetting<bool>,
    pub statistics: ColumnSetting<EnabledStatistics>,
    pub max_rows_per_row_group: Option<usize>,
    pub bloom_filter_columns: Vec<ColumnPath>,
    /// Write `_common_metadata` / `_metadata` sidecars (crate::writer).
    pub sidecars: bool,
}

impl ParquetOptions {
    /// The writer properties: the session's Parquet options (`session`), these options on
    /// top, and `created_by = "kiln"` (files carry no timestamps or library versions, so
    /// the same rows give the same bytes).
    pub fn writer_properties(&self, session: &TableParquetOptions) -> Result<WriterProperties> {
        let mut session = session.clone();
        // The Arrow writer embeds ARROW:schema itself; DataFusion's properties builder must
        // not insist on finding it in the key-value metadata.
        session.global.skip_arrow_metadata = true;
        let builder = WriterPropertiesBuilder::try_from(&session)
            .map_err(DataError::exec("parquet writer settings"))?
            .set_created_by("kiln".into());
        Ok(self.apply(builder).build())
    }

    /// Applies these options to `builder`.
    pub fn apply(&self, mut b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
        if let Some(c) = self.compression.default {
            b = b.set_compression(c);
        }
        for (path, c) in &self.compression.columns {
            b = b.set_column_compression(path.clone(), *c);
        }
        if let Some(d) = self.dictionary.default {
            b = b.set_dictionary_enabled(d);
        }
        for (path, d) in &self.dictionary.columns {
            b = b.set_column_dictionary_enabled(path.clone(), *d);
        }
        if let Some(s) = self.statistics.default {
            b = b.set_statistics_enabled(s);
        }
        for (path, s) in &self.statistics.columns {
            b = b.set_column_statistics_enabled(path.clone(), *s);
        }
        if let Some(n) = self.max_rows_per_row_group {
            b = b.set_max_row_group_row_count(Some(n));
        }
        for path in &self.bloom_filter_columns {
            b = b.set_column_bloom_filter_enabled(path.clone(), true);
        }
        b
    }
}

/// What a build does with the dataset's committed data (`existing_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingData {
    /// The new build replaces the committed one (the default).
    #[default]
    Replace,
    /// Fail when a committed build exists.
    Error,
    /// The committed files stay and the new build's files are added: for queries that
    /// select only new rows (re-running a full query appends its rows again).
    Append,
    /// Overwrite the partitions the build writes: committed files of other partitions
    /// stay. Needs `PARTITIONED BY`.
    DeleteMatching,
}

impl ExistingData {
    /// The option value that names it (`replace`, `error`, `append`, `delete_matching`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Error => "error",
            Self::Append => "append",
            Self::DeleteMatching => "delete_matching",
        }
    }
}

/// One part of a file-name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePart {
    Text(String),
    /// The output partition, 5 digits.
    Partition,
    /// The file's sequence number within its partition and directory, 5 digits.
    Seq,
    BuildId,
    RunId,
    /// The micro-batch number, 6 digits (empty outside micro-batch writes).
    Batch,
}

/// How data files are named (`basename_template`), without `.parquet`. The template always
/// holds [`NamePart::Partition`] and then [`NamePart::Seq`] (kiln-control checks it), which
/// make names unique in a build directory and sort them in the order tier 3 relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basename(pub Vec<NamePart>);

impl Default for Basename {
    /// `part-{partition}-{seq}`: `part-00000-00000.parquet`.
    fn default() -> Self {
        Basename(vec![NamePart::Text("part-".into()), NamePart::Partition, NamePart::Text("-".into()), NamePart::Seq])
    }
}

impl Basename {
    /// The file name (without extension) of file `seq` of output partition `partition`. A
    /// micro-batch's files start with `b<batch>-` unless the template places the batch
    /// itself, so basenames stay unique across the batches of a dataset.
    pub fn render(&self, partition: usize, seq: usize, build_id: &str, run_id: &str, batch: Option<u64>) -> String {
        let mut name = String::new();
        for part in &self.0 {
            match part {
                NamePart::Text(t) => name.push_str(t),
                NamePart::Partition => name.push_str(&format!("{partition:05}")),
                NamePart::Seq => name.push_str(&format!("{seq:05}")),
                NamePart::BuildId => name.push_str(build_id),
                NamePart::RunId => name.push_str(run_id),
                NamePart::Batch => {
                    if let Some(b) = batch {
                        name.push_str(&format!("{b:06}"));
                    }
                }
            }
        }
        match batch {
            Some(b) if !self.0.contains(&NamePart::Batch) => format!("b{b:06}-{name}"),
            _ => name,
        }
    }
}
