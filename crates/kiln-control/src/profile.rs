//! Runtime profiles: named bundles of settings that yield DataFusion's `SessionConfig` and
//! `RuntimeEnv`.
//!
//! A setting is either a DataFusion config key (`datafusion.execution.batch_size`), checked
//! with DataFusion's own parser so an unknown key or bad value is an error naming the key,
//! or a Kiln runtime key:
//! - `kiln.memory_limit`: `512MiB`, `2GiB`, or bytes; no limit when absent;
//! - `kiln.memory_pool`: `fair` (spilling operators share the limit fairly) or `greedy`;
//! - `kiln.spill_dir`: a directory for spill files (the OS temp dir when absent).
//!
//! Built-in profiles (docs/profiles.md): `dev`, `prod_fast` (the default), `prod_safe`,
//! `memory_limited`. `[profiles.NAME]` in kiln.toml overrides a built-in or defines a new
//! profile on top of `prod_fast`.

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
            "dev" => &[("datafusion.execution.batch_size", "8192"), ("kiln.memory_pool", "greedy")],
            "prod_fast" => &[("kiln.memory_pool", "greedy")],
            "prod_safe" => &[("kiln.memory_pool", "fair"), ("kiln.memory_limit", "8GiB")],
            "memory_limited" => &[
                ("kiln.memory_pool", "fair"),
                ("kiln.memory_limit", "1GiB"),
                ("datafusion.execution.batch_size", "4096"),
                ("datafusion.execution.target_partitions", "2"),
            ],
            other if from_config.contains_key(other) => &[("kiln.memory_pool", "greedy")],
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
        Ok(profile)
    }

    /// The DataFusion session configuration; every DataFusion key is validated.
    pub fn session_config(&self) -> Result<SessionConfig, ControlError> {
        let mut config = SessionConfig::new();
        for (key, value) in &self.settings {
            if key.starts_with("kiln.") {
                if !["kiln.memory_limit", "kiln.memory_pool", "kiln.spill_dir"].contains(&key.as_str()) {
                    return Err(ControlError::Profile(format!(
                        "unknown setting `{key}` in profile `{}` (Kiln keys: kiln.memory_limit, kiln.memory_pool, kiln.spill_dir)",
                        self.name
                    )));
                }
                continue;
            }
            config.options_mut().set(key, value).map_err(|e| {
                ControlError::Profile(format!("setting `{key}` = `{value}` in profile `{}`: {e}", self.name))
            })?;
        }
        Ok(config)
    }

    fn memory_limit(&self) -> Result<Option<usize>, ControlError> {
        let Some(text) = self.settings.get("kiln.memory_limit") else { return Ok(None) };
        parse_bytes(text).map(Some).ok_or_else(|| {
            ControlError::Profile(format!("setting `kiln.memory_limit` = `{text}`: expected bytes like 512MiB or 2GiB"))
        })
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

/// `123`, `512KiB`, `512MiB`, `2GiB` (also KB/MB/GB as powers of 1024).
pub fn parse_bytes(text: &str) -> Option<usize> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as usize)
}
