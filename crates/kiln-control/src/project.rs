//! A Kiln project: `kiln.toml` plus the `.sql` files below it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{ArtifactStore, ParseCache};

use crate::dag::Graph;
pub use crate::sqlfile::SqlFile;
use crate::sqlfile::Summary;

use crate::error::ControlError;

/// `kiln.toml`, as documented in docs/project.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub project: ProjectSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub profile: ProfileSection,
    /// `[profiles.NAME]`: DataFusion or Kiln setting overrides per profile.
    #[serde(default)]
    pub profiles: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// Data generators run before the first build (`[generate.tpch]`).
    #[serde(default)]
    pub generate: GenerateSection,
    /// `[secrets]`: `name = { env = "VAR" }` (optionally `fallback = "..."` for examples).
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretDecl>,
    /// `[tags]`: `"marts/" = ["finance"]`: tags of every statement in files under a path.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// `[vars]`: typed project variables, `$name` in SQL (crate::vars).
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
    /// `[query]`: the limits of `kiln query` (crate::query_limits).
    #[serde(default)]
    pub query: crate::query_limits::QueryLimits,
}

/// One declared secret. Only where its value comes from is configured; the value itself is
/// read at run time.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretDecl {
    pub env: String,
    /// A development value used when the variable is unset (reported on every run).
    pub fallback: Option<String>,
}

impl std::fmt::Debug for SecretDecl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretDecl").field("env", &self.env).finish_non_exhaustive()
    }
}

impl ProjectConfig {
    /// Resolves `[secrets]` now, from the environment.
    pub fn resolve_secrets(&self) -> kiln_functions::Secrets {
        let declared = self
            .secrets
            .iter()
            .map(|(name, d)| {
                (name.clone(), kiln_functions::SecretSource::Env { var: d.env.clone(), fallback: d.fallback.clone() })
            })
            .collect();
        kiln_functions::Secrets::resolve(&declared)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectSection {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    #[serde(default = "default_artifacts")]
    pub artifacts: String,
    /// How many of each dataset's latest Kiln versions `kiln gc` keeps the files of (at
    /// least 1, the current one): `kiln rollback` and Delta time travel reach that far
    /// back after a gc.
    #[serde(default = "default_retain_versions")]
    pub retain_versions: std::num::NonZeroU32,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            warehouse: default_warehouse(),
            artifacts: default_artifacts(),
            retain_versions: default_retain_versions(),
        }
    }
}

fn default_retain_versions() -> std::num::NonZeroU32 {
    std::num::NonZeroU32::MIN
}

fn default_warehouse() -> String {
    "warehouse".into()
}
fn default_artifacts() -> String {
    ".kiln".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSection {
    #[serde(default = "default_profile")]
    pub default: String,
}

impl Default for ProfileSection {
    fn default() -> Self {
        Self { default: default_profile() }
    }
}

fn default_profile() -> String {
    "prod_fast".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateSection {
    pub tpch: Option<TpchSection>,
}

/// `[generate.tpch]`: generate TPC-H tables with tpchgen into `out` at `scale_factor`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpchSection {
    #[serde(default = "default_sf")]
    pub scale_factor: f64,
    #[serde(default = "default_data")]
    pub out: String,
}

fn default_sf() -> f64 {
    0.1
}
fn default_data() -> String {
    "data".into()
}

/// A loaded project: configuration, parsed files and the resolved graph.
#[derive(Debug)]
pub struct Project {
    pub root: PathBuf,
    pub config: ProjectConfig,
    pub files: Vec<SqlFile>,
    pub graph: Graph,
    /// Problems outside any one product: files that do not parse (their statements are
    /// missing from the graph) and duplicate definitions. Products elsewhere still build;
    /// problems inside one product are on its node ([`crate::dag::Node::broken`]).
    pub problems: Vec<ControlError>,
}

/// Directories never searched for SQL (besides hidden ones and the configured storage).
const IGNORED_DIRS: [&str; 4] = ["warehouse", "data", "target", "node_modules"];

impl Project {
    /// Reads `kiln.toml`, discovers and parses every `.sql` file, and resolves the graph.
    /// A missing project or a bad kiln.toml is an error; a file that does not parse is a
    /// [`Project::problems`] entry and the rest of the project loads.
    pub fn load(dir: &Path) -> Result<Self, ControlError> {
        let config = load_config(dir)?;
        let mut paths = Vec::new();
        let skip = [config.storage.warehouse.as_str(), config.storage.artifacts.as_str()];
        discover(dir, dir, &skip, &mut paths)?;
        paths.sort();
        let mut files = Vec::new();
        let mut problems = Vec::new();
        // Files whose content is in the parse cache are not parsed (see SqlFile).
        // An unusable store location is reported by the commands that need the store; here
        // it only means no cache.
        let store = ArtifactStore::open(&config.storage.artifacts, dir).ok();
        let old_cache = store.as_ref().map_or_else(ArtifactStore::empty_parse_cache, ArtifactStore::parse_cache);
        let mut new_cache = ParseCache { format_version: old_cache.format_version, files: Default::default() };
        let mut cache_changed = false;
        for path in paths {
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path)
                .map_err(|source| ControlError::Io { context: format!("cannot read {rel}"), source })?;
            let fp = sha256_hex(text.as_bytes());
            let cached = old_cache
                .files
                .get(&fp)
                .and_then(|records| records.iter().map(|r| Summary::from_record(r, &rel)).collect::<Option<Vec<_>>>());
            let file = match cached {
                Some(summaries) => SqlFile::summarized(&rel, text, fp, summaries),
                None => match SqlFile::parse(&rel, &text) {
                    Ok(file) => {
                        cache_changed = true;
                        file
                    }
                    Err(e) => {
                        // Its definitions stay in the graph, broken by the error.
                        files.push(SqlFile::unparsed(&rel, text, &e));
                        problems.push(e);
                        continue;
                    }
                },
            };
            new_cache.files.insert(file.fp.clone(), file.summaries.iter().map(Summary::to_record).collect());
            files.push(file);
        }
        if cache_changed || new_cache.files.len() != old_cache.files.len() {
            // A cache is an optimization: failing to write it must not fail the load.
            let _ = store.as_ref().map(|s| s.put_parse_cache(&new_cache));
        }
        let (mut graph, errors) = Graph::resolve(&files);
        problems.extend(errors);
        for node in &mut graph.nodes {
            for (prefix, tags) in &config.tags {
                if node.path.starts_with(prefix.trim_start_matches("./")) {
                    for tag in tags.iter().map(|t| t.trim().to_lowercase()) {
                        if !node.tags.contains(&tag) {
                            node.tags.push(tag);
                        }
                    }
                }
            }
        }
        Ok(Self { root: dir.to_path_buf(), config, files, graph, problems })
    }

    /// The text of a project file (for snippets), if loaded.
    pub fn file_text(&self, path: &str) -> Option<&str> {
        self.files.iter().find(|f| f.path == path).map(|f| f.text.as_str())
    }
}

/// Reads and parses the `kiln.toml` of the project at `dir` (only that file).
pub fn load_config(dir: &Path) -> Result<ProjectConfig, ControlError> {
    if !dir.is_dir() {
        return Err(ControlError::NoProject(dir.display().to_string()));
    }
    let config_path = dir.join("kiln.toml");
    let text = match std::fs::read_to_string(&config_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ControlError::NoConfig(dir.display().to_string()));
        }
        Err(source) => {
            return Err(ControlError::Io { context: format!("cannot read {}", config_path.display()), source });
        }
    };
    parse_config(&text, "kiln.toml")
}

/// Parses kiln.toml text; errors name the file and the line:column of the bad key.
pub fn parse_config(text: &str, file: &str) -> Result<ProjectConfig, ControlError> {
    toml::from_str(text).map_err(|e| {
        let position = e.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(":{line}:{column}")
        });
        ControlError::Config {
            file: format!("{file}{}", position.unwrap_or_default()),
            message: e.message().to_owned(),
        }
    })
}

fn discover(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) -> Result<(), ControlError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|source| ControlError::Io { context: format!("cannot list {}", dir.display()), source })?;
    for entry in entries {
        let entry =
            entry.map_err(|source| ControlError::Io { context: format!("cannot list {}", dir.display()), source })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            if IGNORED_DIRS.contains(&rel.as_str()) || skip.iter().any(|s| s.trim_end_matches('/') == rel) {
                continue;
            }
            discover(root, &path, skip, out)?;
        } else if name.ends_with(".sql") {
            out.push(path);
        }
    }
    Ok(())
}
