//! Records of the control plane's decisions: canonical plans, semantic diffs, column
//! lineage, build fingerprints, and the `kiln plan --json` report (docs/json.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ArtifactError;

/// Version of the canonical plan encoding hashed into `query_fp` (see [`CanonicalPlan::encode`]).
pub const CANONICAL_PLAN_VERSION: u32 = 1;
/// Version of the `kiln plan --json` and `kiln lineage --json` shapes.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// A query's optimized logical plan in canonical form: alias-free, with every column named
/// by its identity (a base `table.column`, or the canonical expression that computes it),
/// and with order-insensitive item lists sorted. Built by kiln-control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalPlan {
    pub format_version: u32,
    pub root: PlanNode,
}

/// One node: its kind (`Output`, `Projection`, `Filter`, `Join`, ...), its items, its inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanNode {
    pub kind: String,
    pub items: Vec<PlanItem>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<PlanNode>,
}

/// A labelled part of a node: `role` says what it is (`column`, `predicate`, `on`, `group`,
/// `aggregate`, `key`, `table`, `type`, ...), `text` is its canonical rendering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PlanItem {
    pub role: String,
    pub text: String,
}

impl PlanItem {
    pub fn new(role: &str, text: impl Into<String>) -> Self {
        Self { role: role.to_owned(), text: text.into() }
    }
}

impl CanonicalPlan {
    /// The canonical encoding hashed into `query_fp`:
    ///
    /// ```text
    /// kiln.query.v1\n
    /// <depth*2 spaces><kind>\n
    /// <depth*2+2 spaces><role>: <text>\n      (each item, in order)
    /// ...children, depth first
    /// ```
    ///
    /// Item texts never contain a newline (they are escaped as `\n`).
    pub fn encode(&self) -> String {
        let mut out = format!("kiln.query.v{}\n", self.format_version);
        fn walk(node: &PlanNode, depth: usize, out: &mut String) {
            let pad = "  ".repeat(depth);
            out.push_str(&format!("{pad}{}\n", node.kind));
            for item in &node.items {
                out.push_str(&format!("{pad}  {}: {}\n", item.role, item.text.replace('\n', "\\n")));
            }
            for child in &node.children {
                walk(child, depth + 1, out);
            }
        }
        walk(&self.root, 0, &mut out);
        out
    }

    /// `query_fp`: sha256 of [`Self::encode`] (crate::identity lists it with every other
    /// scheme).
    pub fn fingerprint(&self) -> String {
        sha256_hex(self.encode().as_bytes())
    }

    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec(self).map_err(|source| ArtifactError::Encode { what: "canonical plan", source })
    }

    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self, ArtifactError> {
        serde_json::from_slice(bytes).map_err(|source| ArtifactError::Decode {
            what: "canonical plan",
            path: path.to_owned(),
            source,
        })
    }
}

impl PlanNode {
    /// Number of nodes in this subtree.
    pub fn size(&self) -> usize {
        1 + self.children.iter().map(PlanNode::size).sum::<usize>()
    }
}

/// sha256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    kiln_contracts::fingerprint::hex(&Sha256::digest(bytes))
}

/// What one edit of a semantic diff does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditOp {
    Insert,
    Remove,
    Update,
}

/// One edit: at `path` (node kinds from the root, `Join[1]` for a second input), an item of
/// `role` was inserted, removed or updated; or (`role` = `node`) a whole node was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    pub op: EditOp,
    pub path: String,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// How a change affects consumers of a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCategory {
    /// The canonical plans are equal: formatting, comments, alias names, CTE vs subquery.
    MetadataOnly,
    /// Only output columns were added; every existing row and column is unchanged.
    NonBreaking,
    /// Anything that can change existing rows or columns.
    Breaking,
}

/// The semantic diff of two canonical plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDiff {
    pub category: ChangeCategory,
    pub inserted: usize,
    pub removed: usize,
    pub updated: usize,
    pub edits: Vec<Edit>,
}

impl PlanDiff {
    /// `breaking: 1 inserted, 0 removed, 2 updated`.
    pub fn summary(&self) -> String {
        let category = match self.category {
            ChangeCategory::MetadataOnly => "metadata-only",
            ChangeCategory::NonBreaking => "non-breaking",
            ChangeCategory::Breaking => "breaking",
        };
        format!("{category}: {} inserted, {} removed, {} updated", self.inserted, self.removed, self.updated)
    }
}

/// A column of a source or product that lineage points at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BaseColumn {
    pub table: String,
    pub column: String,
}

impl std::fmt::Display for BaseColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.table, self.column)
    }
}

/// Where one output column comes from. `value`: the columns its values are computed from.
/// The others: columns that decide which rows exist or how they group and order, without
/// flowing into the value (`filter`: WHERE/HAVING/pushed-down predicates; `join`: join keys
/// and join conditions; `group`: GROUP BY, DISTINCT and window partitions; `order`: ORDER BY
/// and window ordering).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnLineage {
    pub column: String,
    pub value: Vec<BaseColumn>,
    pub filter: Vec<BaseColumn>,
    pub join: Vec<BaseColumn>,
    pub group: Vec<BaseColumn>,
    pub order: Vec<BaseColumn>,
}

impl ColumnLineage {
    /// Every base column this output column depends on in any way, sorted and distinct.
    pub fn all(&self) -> Vec<&BaseColumn> {
        let mut all: Vec<&BaseColumn> =
            self.value.iter().chain(&self.filter).chain(&self.join).chain(&self.group).chain(&self.order).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// `kiln lineage --json`: the lineage of each output column of a product, in output order.
/// Tables are the product's direct inputs (sources and products), not transitive ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub format_version: u32,
    pub product: String,
    pub columns: Vec<ColumnLineage>,
}

impl Lineage {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "lineage", source })
    }
}

/// The inputs of a build id (brief §4), recorded in the manifest of every build so the next
/// run can say what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildFingerprints {
    pub schema_fp: String,
    pub query_fp: String,
    pub runtime_fp: String,
    pub func_fp: String,
    /// Upstream name -> its version (a source's data version, a product's build id).
    pub upstream: BTreeMap<String, String>,
}

/// What a product's data depends on, column by column (computed by kiln-control from its
/// canonical plan and lineage; kept in the compile cache so a no-op run needs no plan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductShape {
    /// sha256 of the canonical plan without its column-level items (output columns,
    /// projections, scanned columns, aggregate and window expressions): what decides the
    /// product's rows.
    pub rows_fp: String,
    /// The direct inputs (sources and products), sorted.
    pub tables: Vec<String>,
    pub columns: Vec<ColumnShape>,
}

/// One output column: the fingerprint of its definition (identity and type), the columns
/// its values come from, and the columns that shape its rows (filter, join, group, order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnShape {
    pub name: String,
    pub fp: String,
    pub values: Vec<BaseColumn>,
    pub others: Vec<BaseColumn>,
}

impl ProductShape {
    /// The columns of `table` any output column depends on, sorted and distinct.
    pub fn uses(&self, table: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .columns
            .iter()
            .flat_map(|c| c.values.iter().chain(&c.others))
            .filter(|b| b.table == table)
            .map(|b| b.column.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Versions of a committed build's content: of its rows, and of each output column's
/// values. A downstream product's build id uses the versions of exactly the upstream
/// columns it reads, so an upstream change confined to other columns (an added column, a
/// changed expression nobody reads) leaves it fresh.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentVersions {
    pub rows: String,
    pub columns: BTreeMap<String, String>,
}

/// What `kiln plan` decided for a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The committed build has this build id: nothing to do.
    Fresh,
    /// A build is needed; `reasons` say why.
    Build,
    /// The product does not compile, or an upstream of it does not.
    Failed,
}

/// Why a product needs a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// No committed build exists.
    NeverBuilt,
    /// The committed build predates recorded fingerprints (or another build-id version).
    NoRecord,
    SchemaChanged {
        old: String,
        new: String,
    },
    QueryChanged {
        old: String,
        new: String,
        /// The semantic diff, when the previous canonical plan is in the artifact store.
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<PlanDiff>,
    },
    RuntimeChanged {
        old: String,
        new: String,
    },
    FunctionsChanged {
        old: String,
        new: String,
    },
    UpstreamChanged {
        upstream: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        old: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        new: Option<String>,
        /// The upstream's columns this product reads (value, filter, join, group or order).
        columns: Vec<String>,
    },
    /// A micro-batch source had new records: they were appended in `batches` commits.
    Ingested {
        source: String,
        records: u64,
        batches: u64,
    },
    /// `kiln plan`: a product over a micro-batch source polls it on every build (what is
    /// new is known only by reading it).
    Polls {
        source: String,
    },
    /// Its new build id is already committed (`from`: `prod v3`, `dev v0`): that build is
    /// bound again instead of executing.
    Reused {
        build_id: String,
        from: String,
    },
    /// An incremental product's build has its build id but not all its intervals (a
    /// backfill limited by `--start`/`--end`, or one that did not finish).
    IntervalsMissing {
        intervals: u64,
    },
    /// `--restate`: an incremental product's intervals are recomputed though its build is
    /// current.
    Restated,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |s: &str| s.get(..12).unwrap_or(s).to_owned();
        match self {
            Reason::NeverBuilt => write!(f, "never built"),
            Reason::NoRecord => write!(f, "the committed build has no fingerprint record"),
            Reason::SchemaChanged { old, new } => write!(f, "schema changed ({} -> {})", short(old), short(new)),
            Reason::QueryChanged { old, new, diff } => match diff {
                Some(d) => write!(f, "query changed, {}", d.summary()),
                None => write!(f, "query changed ({} -> {})", short(old), short(new)),
            },
            Reason::RuntimeChanged { old, new } => {
                write!(f, "runtime settings changed ({} -> {})", short(old), short(new))
            }
            Reason::FunctionsChanged { old, new } => write!(f, "functions changed ({} -> {})", short(old), short(new)),
            Reason::UpstreamChanged { upstream, columns, new, .. } => {
                let what = if new.is_none() { "removed" } else { "changed" };
                if columns.is_empty() {
                    write!(f, "upstream `{upstream}` {what}")
                } else {
                    write!(f, "upstream `{upstream}` {what} (uses {})", columns.join(", "))
                }
            }
            Reason::Ingested { source, records, batches } => {
                write!(f, "{records} new record(s) from `{source}` in {batches} micro-batch(es)")
            }
            Reason::Polls { source } => write!(f, "polls `{source}` for new records"),
            Reason::Reused { build_id, from } => write!(f, "reused build {} from {from}", short(build_id)),
            Reason::IntervalsMissing { intervals } => write!(f, "{intervals} intervals not computed yet"),
            Reason::Restated => write!(f, "restated (--restate)"),
        }
    }
}

/// One product in `kiln plan --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPlan {
    pub product: String,
    pub decision: Decision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<BuildFingerprints>,
    /// The committed build's id, when one exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_build_id: Option<String>,
    pub reasons: Vec<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The checks (constraints and audits) a build would run before committing, or that
    /// re-run on the committed build because their definitions changed; empty when none
    /// would run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// An incremental product's build: the intervals it computes and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<crate::intervals::IntervalPlan>,
    /// A product merged by key: the files it merges, or why it rebuilds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<crate::merge::MergePlan>,
}

/// `kiln plan --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanReport {
    pub format_version: u32,
    pub project: String,
    pub profile: String,
    pub runtime_fp: String,
    /// Effective settings that enter `runtime_fp` (semantic) and those that do not
    /// (performance), each sorted by key.
    pub settings: EffectiveSettings,
    /// Problems outside any one product: files that do not parse, duplicate definitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    pub products: Vec<ProductPlan>,
}

/// The effective settings of a run, split by classification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveSettings {
    pub semantic: BTreeMap<String, String>,
    pub performance: BTreeMap<String, String>,
}

impl PlanReport {
    pub fn to_json(&self) -> Result<Vec<u8>, ArtifactError> {
        serde_json::to_vec_pretty(self).map_err(|source| ArtifactError::Encode { what: "plan report", source })
    }
}

/// Version of the compile cache (`.kiln/cache/compile.json`); a cache of another version
/// is ignored.
pub const COMPILE_CACHE_VERSION: u32 = 3;

/// Compile results keyed by everything compiling depends on (kiln-control documents the
/// key), so a run where nothing changed fingerprints a project without planning a query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompileCache {
    pub format_version: u32,
    pub entries: BTreeMap<String, CachedCompile>,
}

/// One product's compile result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedCompile {
    pub product: String,
    /// The product's schema as a contract (kiln-contracts' JSON shape), as text: decoded
    /// only when a compile downstream needs the table.
    pub schema: String,
    /// Each column's exact Arrow type (`Utf8`, `Utf8View`: one SQL type, `VARCHAR`, in the
    /// contract), as Arrow displays it; an entry without them is not used.
    #[serde(default)]
    pub arrow_types: Vec<String>,
    pub schema_fp: String,
    pub query_fp: String,
    pub func_fp: String,
    pub shape: ProductShape,
    /// Lineage of every output column (`kiln docs` draws it without compiling).
    pub lineage: Vec<ColumnLineage>,
    /// The product's `sensitive` columns and the base columns it hashes with
    /// `kiln_pii_hash`: what `kiln query` may not read (added in version 3).
    pub sensitive: std::collections::BTreeSet<String>,
    pub hashed: std::collections::BTreeSet<BaseColumn>,
}

/// Version of the parse cache (`.kiln/cache/parse.json`).
pub const PARSE_CACHE_VERSION: u32 = 3;

/// What the project graph needs from each SQL file, keyed by the sha256 of the file's
/// text, so unchanged files are not parsed at all on a run that compiles nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseCache {
    pub format_version: u32,
    pub files: BTreeMap<String, Vec<ParsedStatement>>,
}

/// One statement of a file: its kind (`source`, `product`, `stream`, `view`), name,
/// position, the tables it reads with their positions, and a problem resolving them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedStatement {
    pub kind: String,
    pub name: String,
    pub line: u64,
    pub column: u64,
    pub refs: Vec<ParsedRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// The product an audit or test checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ParsedRef>,
    /// sha256 of the statement's check definitions (empty when it has none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checks_fp: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedRef {
    pub name: String,
    pub line: u64,
    pub column: u64,
}

/// `kiln diff PRODUCT --json`: the product's query now against its committed build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDiff {
    pub format_version: u32,
    pub product: String,
    /// `query_fp` of the committed build (absent when it recorded none).
    pub old_query_fp: Option<String>,
    pub new_query_fp: String,
    /// The semantic diff; absent when the committed build's plan is not in the store.
    pub diff: Option<PlanDiff>,
}

/// `kiln explain PRODUCT [--analyze] --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainReport {
    pub format_version: u32,
    pub product: String,
    /// The logical plan as planned from the product's SQL (with its canonical sort).
    pub logical: String,
    pub optimized: String,
    pub physical: String,
    /// The canonical form hashed into `query_fp`.
    pub canonical: String,
    /// With `--analyze`: the physical plan annotated with metrics, and per operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analyzed: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operators: Vec<OperatorMetrics>,
}

/// One physical operator's metrics, summed over its partitions (depth-first order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorMetrics {
    pub depth: usize,
    pub operator: String,
    pub output_rows: Option<u64>,
    #[serde(default)]
    pub output_bytes: Option<u64>,
    pub elapsed_compute_ns: Option<u64>,
    pub spill_count: Option<u64>,
    pub spilled_bytes: Option<u64>,
}

/// `kiln rollback PRODUCT --json`: the product's table restored to its build before the
/// current one, as a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackReport {
    pub format_version: u32,
    pub product: String,
    pub from_build_id: String,
    pub from_run_id: String,
    pub to_build_id: String,
    pub to_run_id: String,
    /// The table versions: the one rolled back from, the one restored, and the new
    /// version that restores it.
    #[serde(default)]
    pub from_version: u64,
    #[serde(default)]
    pub to_version: u64,
    #[serde(default)]
    pub version: u64,
}

/// `kiln optimize --json`: what compaction rewrote, per dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimizeReport {
    pub format_version: u32,
    pub run_id: String,
    pub datasets: Vec<OptimizedDataset>,
}

/// One dataset of [`OptimizeReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptimizedDataset {
    pub product: String,
    /// The version the compaction committed (`None`: nothing to compact).
    pub version: Option<u64>,
    /// Small files rewritten, and the files they became.
    pub files_before: u64,
    pub files_after: u64,
    /// Why nothing was compacted, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// `kiln gc --json`: what was deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub format_version: u32,
    /// Build directories deleted: superseded committed builds and uncommitted leftovers.
    pub deleted: Vec<DeletedBuild>,
    pub files: u64,
    pub bytes: u64,
    /// Canonical plans deleted from the artifact store (no current build uses them).
    pub plans: u64,
    /// Build records deleted (their builds are no longer current).
    #[serde(default)]
    pub records: u64,
    /// Blobs deleted (no remaining build record names them).
    #[serde(default)]
    pub blobs: u64,
    /// Current builds kept, one per product.
    pub kept: u64,
    /// Table versions whose files were kept (`[storage] retain_versions` per dataset).
    #[serde(default)]
    pub versions_kept: u64,
    /// Empty directories removed from a local warehouse (what deleted objects and killed
    /// builds leave; object stores have no directories).
    #[serde(default)]
    pub empty_dirs: u64,
    /// Tables of products the project no longer defines (with their `__rejected`,
    /// `__failures` and `__late` datasets), kept: `kiln gc --drop-removed` deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Tables of removed products deleted by `--drop-removed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
    /// Unit tests no longer defined whose last results (`kiln test`) were deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_results: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedBuild {
    pub product: String,
    pub build_dir: String,
    /// Whether it had been committed (superseded) or never was (a failed or killed build).
    pub committed: bool,
    pub files: u64,
    pub bytes: u64,
}

/// Version of [`BuildRecord`] and [`TelemetryEvent`].
pub const BUILD_RECORD_VERSION: u32 = 1;

/// Everything about one committed build (`.kiln/builds/<product>/<build_id>.json`): its
/// identity and inputs, its content versions, its lineage, its plans, the metrics of every
/// operator that produced it, and where its manifest is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    pub format_version: u32,
    pub product: String,
    pub build_id: String,
    pub run_id: String,
    /// `committed` (only committed builds are recorded).
    pub status: String,
    pub fingerprints: BuildFingerprints,
    pub content: Option<ContentVersions>,
    pub lineage: Vec<ColumnLineage>,
    /// The Delta commit that made the build visible (`<product>/_delta_log/<version>.json`),
    /// relative to the warehouse root: the build's files and Kiln's record of it.
    pub manifest: String,
    pub ordering_tier: u8,
    pub plans: BuildPlans,
    pub operators: Vec<OperatorMetrics>,
    /// With the `substrait` feature: the optimized plan as Substrait protobuf bytes, a blob
    /// of the artifact store (`blobs/<sha256[0..2]>/<sha256>`); its sha256 here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substrait: Option<String>,
    /// Seconds per phase: `compile`, `plan` (physical), `execute_write`, `commit`.
    pub phases: BTreeMap<String, f64>,
}

/// The plans of a build, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlans {
    pub logical: String,
    pub optimized: String,
    pub physical: String,
    /// The optimized plan unparsed back to SQL (DataFusion's unparser; absent for plans
    /// it cannot express).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimized_sql: Option<String>,
    /// The canonical plan is stored once per `query_fp` in `.kiln/plans/`.
    pub query_fp: String,
}

/// One line of `.kiln/runs/<run_id>/events.jsonl` (written in parts as things happen,
/// joined when the run ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    pub format_version: u32,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub run_id: String,
    /// `run_started`, `product_finished`, `run_finished`; `checkpoint` (`kiln stream`).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprints: Option<BuildFingerprints>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering_tier: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `checkpoint` events (`kiln stream`, `product` is the view): what it committed.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStats>,
}

impl TelemetryEvent {
    /// An event of `kind` in run `run_id`, now, with no other field set.
    pub fn new(run_id: &str, kind: &str) -> Self {
        Self {
            format_version: BUILD_RECORD_VERSION,
            ts_ms: crate::time::now_ms(),
            run_id: run_id.to_owned(),
            kind: kind.to_owned(),
            product: None,
            action: None,
            build_id: None,
            fingerprints: None,
            ordering_tier: None,
            rows: None,
            seconds: None,
            error: None,
            checkpoint: None,
        }
    }

    /// The event as one line of `events.jsonl`.
    pub fn to_line(&self) -> Result<Vec<u8>, ArtifactError> {
        let mut line = serde_json::to_vec(self).map_err(|source| ArtifactError::Encode { what: "event", source })?;
        line.push(b'\n');
        Ok(line)
    }
}

/// What a materialized view's checkpoint committed (a `checkpoint` event's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointStats {
    /// The checkpoint's build directory (its state file, its new rows).
    pub build_dir: String,
    /// Records and micro-batches read from the stream so far.
    pub records: u64,
    pub batches: u64,
    pub watermark_ms: Option<i64>,
    /// Rows emitted, and events found late, since the view started.
    pub rows_emitted: u64,
    pub late: u64,
    /// Open (window, key) groups in the checkpointed state.
    pub state_rows: u64,
}
