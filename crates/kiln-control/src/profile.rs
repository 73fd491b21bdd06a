//! Runtime profiles: named bundles of settings that yield DataFusion's `SessionConfig` and
//! `RuntimeEnv`.
//!
//! A setting is either a DataFusion config key (`datafusion.execution.batch_size`), checked
//! with DataFusion's own parser so an unknown key or bad value is an error naming the key,
//! or a Kiln runtime key:
//! - `kiln.memory_limit`: `512MiB`, `2GiB`, or bytes; `auto` (the default of `dev`,
//!   `prod_fast` and profiles defined in kiln.toml): half the machine's or cgroup's memory
//!   ([`auto_memory_limit`]); `none` or absent: no limit. (`auto` became the default once
//!   aggregate output was compacted before sorts, kiln_functions::nest_plan: the pool
//!   had seen each slice of one emitted array as the whole buffer, 11.7 GB for a process
//!   at 3.4 GiB RSS, and refused the example at SF 1);
//! - `kiln.memory_pool`: `fair` (spilling operators share the limit fairly) or `greedy`;
//! - `kiln.spill_dir`: a directory for spill files (the OS temp dir when absent);
//! - `kiln.max_parallel_products`: how many independent products a build executes at
//!   once (default 2; 1 in `memory_limited`). They share the one memory pool;
//! - `kiln.heavy_product_bytes`: a product whose inputs (the files of the sources it
//!   reads, what the products it reads wrote in this run) hold at least this many bytes is
//!   heavy, and two heavy products never run at once; light ones fill the other slots
//!   (default `64MiB`).
//!
//! Built-in profiles (docs/profiles.md): `dev`, `prod_fast` (the default), `prod_safe`,
//! `memory_limited`. `[profiles.NAME]` in kiln.toml overrides a built-in or defines a new
//! profile on top of `prod_fast`.
//!
//! # Semantic and performance settings
//!
//! Every setting is classified by [`classify`]. *Performance* settings change speed,
//! memory, parallelism or how things are displayed, never the rows or bytes a product
//! writes: batch size, target partitions, memory limit and pool, spill directory and
//! compression, Parquet read-side pruning and pushdown, optimizer and explain switches,
//! display formats, span collection. Everything else is *semantic* (time zone, identifier
//! normalization, parser dialect, Parquet read typing such as `schema_force_view_types`,
//! every Parquet writer setting, catalog defaults, ANSI mode), and so is any key this table
//! does not know: an unclassified key costs a rebuild, never a wrong cache hit.
//!
//! `runtime_fp` (kiln_artifact::identity::runtime_fp) is sha256 over `kiln.runtime.v1\n`
//! and `key=value\n` for every semantic
//! setting, defaults included (so a DataFusion upgrade that changes a semantic default
//! changes it), sorted by key. Performance settings are recorded in each run's artifacts
//! but stay out of the build identity, so a 2-core laptop and a 64-core server agree on
//! build ids. Optimizer switches are performance settings: when one changes the shape of
//! the optimized plan, `query_fp` changes with it (a rebuild, never a wrong hit).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;

use crate::error::ControlError;

/// The built-in profile names.
pub const BUILTIN: [&str; 4] = ["dev", "prod_fast", "prod_safe", "memory_limited"];

/// Settings every profile starts from: spans for error locations, zstd Parquet.
const BASE: [(&str, &str); 2] =
    [("datafusion.sql_parser.collect_spans", "true"), ("datafusion.execution.parquet.compression", "zstd(3)")];

/// How a setting relates to build identity (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    /// Can change what a product contains: part of `runtime_fp`.
    Semantic,
    /// Only changes speed, memory or display: recorded, not fingerprinted.
    Performance,
}

/// Whole families of performance keys.
const PERFORMANCE_PREFIXES: [&str; 3] = ["datafusion.optimizer.", "datafusion.explain.", "datafusion.format."];
/// Exceptions to [`PERFORMANCE_PREFIXES`]: these change output types.
const SEMANTIC_EXCEPTIONS: [&str; 1] = ["datafusion.optimizer.expand_views_at_output"];
/// Individual performance keys.
const PERFORMANCE_KEYS: [&str; 45] = [
    "kiln.memory_limit",
    "kiln.max_parallel_products",
    "kiln.heavy_product_bytes",
    "kiln.memory_pool",
    "kiln.spill_dir",
    "datafusion.sql_parser.collect_spans",
    "datafusion.sql_parser.recursion_limit",
    "datafusion.execution.batch_size",
    "datafusion.execution.target_partitions",
    "datafusion.execution.planning_concurrency",
    "datafusion.execution.meta_fetch_concurrency",
    "datafusion.execution.coalesce_batches",
    "datafusion.execution.collect_statistics",
    "datafusion.execution.perfect_hash_join_small_build_threshold",
    "datafusion.execution.perfect_hash_join_min_key_density",
    "datafusion.execution.spill_compression",
    "datafusion.execution.sort_spill_reservation_bytes",
    "datafusion.execution.sort_in_place_threshold_bytes",
    "datafusion.execution.sort_pushdown_buffer_capacity",
    "datafusion.execution.max_spill_file_size_bytes",
    "datafusion.execution.minimum_parallel_output_files",
    "datafusion.execution.soft_max_rows_per_output_file",
    "datafusion.execution.max_buffered_batches_per_output_file",
    "datafusion.execution.split_file_groups_by_statistics",
    "datafusion.execution.enable_file_stream_work_stealing",
    "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
    "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
    "datafusion.execution.use_row_number_estimates_to_optimize_partitioning",
    "datafusion.execution.enforce_batch_size_in_joins",
    "datafusion.execution.objectstore_writer_buffer_size",
    "datafusion.execution.hash_join_buffering_capacity",
    "datafusion.execution.skip_physical_aggregate_schema_check",
    "datafusion.execution.enable_migration_aggregate",
    "datafusion.execution.parquet.enable_page_index",
    "datafusion.execution.parquet.pruning",
    "datafusion.execution.parquet.metadata_size_hint",
    "datafusion.execution.parquet.pushdown_filters",
    "datafusion.execution.parquet.reorder_filters",
    "datafusion.execution.parquet.force_filter_selections",
    "datafusion.execution.parquet.bloom_filter_on_read",
    "datafusion.execution.parquet.max_predicate_cache_size",
    "datafusion.execution.parquet.max_in_list_size",
    "datafusion.execution.parquet.allow_single_file_parallelism",
    "datafusion.execution.parquet.maximum_parallel_row_group_writers",
    "datafusion.execution.parquet.maximum_buffered_record_batches_per_stream",
];

/// The class of a setting key.
pub fn classify(key: &str) -> KeyClass {
    if SEMANTIC_EXCEPTIONS.contains(&key) {
        return KeyClass::Semantic;
    }
    if PERFORMANCE_KEYS.contains(&key) || PERFORMANCE_PREFIXES.iter().any(|p| key.starts_with(p)) {
        KeyClass::Performance
    } else {
        KeyClass::Semantic
    }
}

/// The Kiln (non-DataFusion) setting keys.
const KILN_KEYS: [&str; 5] = [
    "kiln.memory_limit",
    "kiln.memory_pool",
    "kiln.spill_dir",
    "kiln.max_parallel_products",
    "kiln.heavy_product_bytes",
];

/// A resolved runtime profile.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeProfile {
    pub name: String,
    /// Every setting, built-in and overridden, sorted by key.
    pub settings: BTreeMap<String, String>,
}

impl RuntimeProfile {
    /// Resolves profile `name` with the overrides from kiln.toml (`[profiles.NAME]`) and the
    /// command line (applied last).
    pub fn resolve(
        name: &str,
        from_config: &BTreeMap<String, BTreeMap<String, toml::Value>>,
        from_cli: &[(String, String)],
    ) -> Result<Self, ControlError> {
        let mut settings: BTreeMap<String, String> =
            BASE.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let builtin: &[(&str, &str)] = match name {
            "dev" => &[
                ("datafusion.execution.batch_size", "8192"),
                ("kiln.memory_pool", "greedy"),
                ("kiln.memory_limit", "auto"),
            ],
            "prod_fast" => &[("kiln.memory_pool", "greedy"), ("kiln.memory_limit", "auto")],
            "prod_safe" => &[("kiln.memory_pool", "fair"), ("kiln.memory_limit", "8GiB")],
            "memory_limited" => &[
                ("kiln.memory_pool", "fair"),
                ("kiln.memory_limit", "1GiB"),
                ("datafusion.execution.batch_size", "4096"),
                ("datafusion.execution.target_partitions", "2"),
                ("kiln.max_parallel_products", "1"),
            ],
            other if from_config.contains_key(other) => {
                &[("kiln.memory_pool", "greedy"), ("kiln.memory_limit", "auto")]
            }
            other => {
                return Err(ControlError::Profile(format!(
                    "unknown profile `{other}` (built-in: {}; or define [profiles.{other}] in kiln.toml)",
                    BUILTIN.join(", ")
                )));
            }
        };
        settings.extend(builtin.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        if let Some(overrides) = from_config.get(name) {
            for (k, v) in overrides {
                let value = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                settings.insert(k.clone(), value);
            }
        }
        settings.extend(from_cli.iter().cloned());
        let profile = Self { name: name.to_owned(), settings };
        profile.session_config()?; // validate every key now, with its name in the error
        profile.memory_limit()?;
        profile.max_parallel_products()?;
        profile.heavy_product_bytes()?;
        Ok(profile)
    }

    /// The DataFusion session configuration; every DataFusion key is validated.
    pub fn session_config(&self) -> Result<SessionConfig, ControlError> {
        let mut config = SessionConfig::new();
        for (key, value) in &self.settings {
            if key.starts_with("kiln.") {
                if !KILN_KEYS.contains(&key.as_str()) {
                    return Err(ControlError::Profile(format!(
                        "unknown setting `{key}` in profile `{}` (Kiln keys: {})",
                        self.name,
                        KILN_KEYS.join(", ")
                    )));
                }
                continue;
            }
            // Parquet's codec parser panics on some malformed text: checked first.
            if key.ends_with(".compression")
                && key.starts_with("datafusion.execution.parquet.")
                && crate::layout::parse_codec(value).is_none()
            {
                return Err(ControlError::Profile(format!(
                    "setting `{key}` = `{value}` in profile `{}`: expected a Parquet codec such as zstd(3), snappy or uncompressed",
                    self.name
                )));
            }
            config.options_mut().set(key, value).map_err(|e| {
                ControlError::Profile(format!("setting `{key}` = `{value}` in profile `{}`: {e}", self.name))
            })?;
        }
        Ok(config)
    }

    /// `kiln.max_parallel_products` (default 2).
    pub fn max_parallel_products(&self) -> Result<usize, ControlError> {
        let Some(text) = self.settings.get("kiln.max_parallel_products") else { return Ok(2) };
        text.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ControlError::Profile(format!(
                "setting `kiln.max_parallel_products` = `{text}`: expected a positive integer"
            ))
        })
    }

    /// `kiln.heavy_product_bytes`: from how many input bytes a product is heavy, so that it
    /// does not run beside another heavy one (default 64 MiB; see the module docs).
    pub fn heavy_product_bytes(&self) -> Result<u64, ControlError> {
        let Some(text) = self.settings.get("kiln.heavy_product_bytes") else { return Ok(64 << 20) };
        crate::units::parse_bytes(text).ok_or_else(|| {
            ControlError::Profile(format!(
                "setting `kiln.heavy_product_bytes` = `{text}`: expected bytes like 64MiB or 1GiB"
            ))
        })
    }

    /// `kiln.memory_limit` in bytes (`None`: no limit).
    pub fn memory_limit(&self) -> Result<Option<usize>, ControlError> {
        let Some(text) = self.settings.get("kiln.memory_limit") else { return Ok(None) };
        match text.trim() {
            "none" => return Ok(None),
            "auto" => return Ok(Some(auto_memory_limit())),
            _ => {}
        }
        let bytes = crate::units::parse_bytes(text).and_then(|n| usize::try_from(n).ok());
        bytes.map(Some).ok_or_else(|| {
            ControlError::Profile(format!(
                "setting `kiln.memory_limit` = `{text}`: expected bytes like 512MiB or 2GiB, `auto` or `none`"
            ))
        })
    }

    /// Every effective setting, DataFusion defaults included, split by [`classify`].
    pub fn effective(&self) -> Result<kiln_artifact::EffectiveSettings, ControlError> {
        let config = self.session_config()?;
        let mut out = kiln_artifact::EffectiveSettings::default();
        let entries = config.options().entries().into_iter().map(|e| (e.key, e.value.unwrap_or_default()));
        let kiln = self.settings.iter().filter(|(k, _)| k.starts_with("kiln.")).map(|(k, v)| (k.clone(), v.clone()));
        for (key, value) in entries.chain(kiln) {
            match classify(&key) {
                KeyClass::Semantic => out.semantic.insert(key, value),
                KeyClass::Performance => out.performance.insert(key, value),
            };
        }
        Ok(out)
    }

    /// `runtime_fp` (see the module docs).
    pub fn runtime_fp(&self) -> Result<String, ControlError> {
        Ok(kiln_artifact::identity::runtime_fp(&self.effective()?.semantic))
    }

    /// The runtime environment: memory pool and spill directory.
    pub fn runtime_env(&self) -> Result<Arc<RuntimeEnv>, ControlError> {
        let mut builder = RuntimeEnvBuilder::new();
        if let Some(limit) = self.memory_limit()? {
            let pool: Arc<dyn MemoryPool> = match self.settings.get("kiln.memory_pool").map(String::as_str) {
                Some("fair") => Arc::new(FairSpillPool::new(limit)),
                Some("greedy") | None => Arc::new(GreedyMemoryPool::new(limit)),
                Some(other) => {
                    return Err(ControlError::Profile(format!(
                        "setting `kiln.memory_pool` = `{other}`: expected fair or greedy"
                    )));
                }
            };
            builder = builder.with_memory_pool(pool);
        }
        if let Some(dir) = self.settings.get("kiln.spill_dir") {
            builder = builder.with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![PathBuf::from(dir)])),
            );
        }
        builder.build_arc().map_err(|e| ControlError::Profile(format!("profile `{}`: {e}", self.name)))
    }
}

/// `kiln.memory_limit = 'auto'`: half the memory this process may use, the lesser of the
/// machine's (`MemTotal` in /proc/meminfo) and its cgroup's limit (`memory.max`, v2, or
/// `memory.limit_in_bytes`, v1). The other half is left to what DataFusion's pool does
/// not account (Parquet buffers, hash-join inputs, the allocator) and to the rest of the
/// machine. Where neither can be read (not Linux), 4 GiB.
pub fn auto_memory_limit() -> usize {
    const FALLBACK: u64 = 4 << 30;
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let machine = read("/proc/meminfo").and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    });
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok());
    let available = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => return FALLBACK as usize,
    };
    usize::try_from(available / 2).unwrap_or(usize::MAX)
}
