//! The Substrate and the product compiler.
//!
//! The [`Substrate`] owns the one `SessionContext` of a run, configured by the runtime
//! profile, with every source registered as a file table and every product as a
//! [`ProductTable`] (schema known at compile time, files bound at commit time), the
//! installed function registry, and the SQL surfaces ([`crate::surface`]).
//!
//! Compiling a product: AST -> DataFusion `LogicalPlan` (planned from our own AST, so
//! DataFusion's diagnostics carry file positions) -> verified read-only -> contract gate
//! against the declared columns -> canonical `ORDER BY` sort appended -> optimized ->
//! canonical form and lineage ([`crate::canonical`]) -> fingerprints. Build identity
//! (version [`BUILD_ID_VERSION`]):
//!
//! ```text
//! build_id = sha256("kiln.build.v1\n" product "\n" schema_fp "\n" query_fp "\n"
//!                   runtime_fp "\n" func_fp "\n"
//!                   ("upstream " name " " version "\n")* sorted by name)
//! ```
//!
//! where an upstream's version is a source's data version or a product's build id,
//! `schema_fp` is kiln-contracts' canonical schema fingerprint, `query_fp` the sha256 of the
//! canonical plan's encoding (kiln-artifact), `runtime_fp` the profile's semantic settings
//! ([`crate::profile`]), and `func_fp` the Kiln functions the plan calls with keyed digests
//! of the secrets it uses (kiln-functions).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, SortExpr};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{ColumnDef, ColumnOption, Statement as SqlStatement};
use datafusion::sql::sqlparser::tokenizer::Tokenizer;
use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{BuildFingerprints, CanonicalPlan, ColumnLineage, ProductShape};
use kiln_contracts::compat::{CheckOptions, check};
use kiln_contracts::{Contract, EvolutionPolicy, schema_fingerprint, sql_to_arrow};
use kiln_data::{
    FileFormat, FileSource, HttpFormat, HttpSource, KafkaSource, MicroBatchSource, MicroBatchTable, Pagination,
    ProductTable, Warehouse,
};
use kiln_functions::Registry;

use crate::canonical::analyze;
use crate::dialect::{ProductDef, SourceDef, StreamDef, ViewDef, Watermark, normalize};
use crate::error::{ControlError, Location};
use crate::profile::RuntimeProfile;
use crate::surface::Surface;
use kiln_contracts::dialect::KilnDialect;

/// A record source's (Kafka, log) `format`, which must be `json` (or, for log topics,
/// `csv`: one record per line in the declared column order), and its `batch_records`
/// (default 10,000).
fn record_options(def: &SourceDef, connector: &str) -> Result<usize, ControlError> {
    let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
    if let Some((f, at)) = def.options.get("format")
        && f != "json"
        && !(connector == "log" && f == "csv")
    {
        let valid = if connector == "log" {
            "json, one object per record; csv, one line per record in column order"
        } else {
            "json, one object per record"
        };
        return Err(option_error(at, format!("format `{f}` (valid for {connector}: {valid})")));
    }
    match def.options.get("batch_records") {
        None => Ok(10_000),
        Some((v, at)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| option_error(at, format!("batch_records = '{v}': expected an integer >= 1"))),
    }
}

/// A micro-batch source's `on_error`: whether malformed records are rejected.
fn on_error_reject(def: &SourceDef) -> Result<bool, ControlError> {
    match def.options.get("on_error") {
        None | Some(("fail", _)) => Ok(false),
        Some(("reject", _)) => Ok(true),
        Some((v, at)) => {
            Err(ControlError::Option { at: at.clone(), message: format!("on_error = '{v}' (valid: 'fail', 'reject')") })
        }
    }
}

/// A micro-batch source's declared schema, which must be scalar (records are read as JSON
/// objects of scalar values).
fn scalar_columns(def: &SourceDef, what: &str) -> Result<SchemaRef, ControlError> {
    let schema = columns_schema(&def.columns, &def.at)?;
    if let Some(nested) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
        return Err(ControlError::Option {
            at: def.at.clone(),
            message: format!("{what} reads scalar columns; `{}` is {}", nested.name(), nested.data_type()),
        });
    }
    Ok(schema)
}

/// `250ms`, `5s`, `2m`, `1h` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

/// Version of the build-id encoding (see the module docs).
pub const BUILD_ID_VERSION: u32 = 1;

/// Options a `files` source accepts.
const SOURCE_OPTIONS: [&str; 6] = ["connector", "path", "format", "schema_evolution", "on_error", "partitioned_by"];
/// Options an `http` source accepts (kiln_data::ingest documents the protocol).
const HTTP_SOURCE_OPTIONS: [&str; 13] = [
    "connector",
    "url",
    "format",
    "records_field",
    "pagination",
    "next_field",
    "cursor_param",
    "cursor_field",
    "batch_records",
    "max_retries",
    "retry_backoff",
    "timeout",
    "on_error",
];

/// Options a `kafka` source accepts (kiln_data::kafka documents how it is read).
const KAFKA_SOURCE_OPTIONS: [&str; 7] =
    ["connector", "brokers", "topic", "start", "format", "batch_records", "on_error"];

/// A compiled source: files read whole, or a micro-batch (HTTP, Kafka) feed.
#[derive(Debug, Clone)]
pub enum CompiledSource {
    Files(FileSource),
    MicroBatch(MicroBatchSource),
}

impl CompiledSource {
    pub fn schema(&self) -> &SchemaRef {
        match self {
            Self::Files(f) => &f.schema,
            Self::MicroBatch(m) => m.schema(),
        }
    }

    /// The version products' build ids take from this source: a hash of the file
    /// listing, or (micro-batch sources, whose data is known only by reading it) of the
    /// definition; products over those ingest on every build (kiln::engine).
    pub fn data_version(&self) -> Result<String, kiln_data::DataError> {
        match self {
            Self::Files(f) => f.data_version(),
            Self::MicroBatch(m) => Ok(m.version()),
        }
    }
}
/// Options of a `log` source.
const LOG_SOURCE_OPTIONS: [&str; 5] = ["connector", "topic", "format", "batch_records", "on_error"];
/// Stream connectors (each takes its source's options, plus `idle_timeout` and
/// `poll_interval`).
pub const STREAM_CONNECTORS: [&str; 4] = ["log", "files", "http", "kafka"];
/// Options of a `files` stream (besides `idle_timeout`).
const FILES_STREAM_OPTIONS: [&str; 5] = ["connector", "path", "format", "batch_records", "on_error"];
/// How long a stream partition without new records may hold the watermark back, unless a
/// stream sets `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `kiln stream` needs to know of a stream besides how to read it.
#[derive(Debug, Clone)]
pub struct CompiledStream {
    pub name: String,
    /// The event-time column (`WATERMARK FOR`) and the allowed lateness in milliseconds.
    pub event_time: Option<(String, i64)>,
    /// A partition without new records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Malformed records go to `<stream>__rejected` (else they fail the run).
    pub reject: bool,
    /// How long to wait before polling the source again after it had nothing new.
    pub poll_interval: Duration,
}

/// Options a materialized view accepts.
const VIEW_OPTIONS: [&str; 2] = ["late_events", "max_rows_per_file"];
/// Field metadata marking a stream's event-time column: the record reader names a record
/// without it as such (kiln_data::checked).
pub const EVENT_TIME_KEY: &str = kiln_data::checked::EVENT_TIME_KEY;
/// Options a product accepts.
const PRODUCT_OPTIONS: [&str; 11] = [
    "max_bytes_per_file",
    "existing_data",
    "ordering_tier",
    "max_rows_per_file",
    "basename_template",
    "compression",
    "max_rows_per_row_group",
    "bloom_filter_columns",
    "dictionary",
    "statistics",
    "metadata_sidecars",
];

/// One SessionContext with a project's tables.
pub struct Substrate {
    ctx: SessionContext,
    functions: Registry,
    warehouse: Warehouse,
    root: PathBuf,
    products: HashMap<String, Arc<ProductTable>>,
    sources: BTreeSet<String>,
    /// Micro-batch sources and the tables their batches are bound to.
    micro_batch: HashMap<String, (MicroBatchSource, Arc<MicroBatchTable>)>,
    streams: HashMap<String, CompiledStream>,
    runtime_fp: String,
    /// Hash of every explicit setting (semantic or not: optimizer switches change plans).
    settings_fp: String,
    functions_fp: String,
}

impl std::fmt::Debug for Substrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substrate")
            .field("session_id", &self.ctx.session_id())
            .field("warehouse", &self.warehouse)
            .field("products", &self.products.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A product ready to execute.
#[derive(Debug, Clone)]
pub struct CompiledProduct {
    pub name: String,
    pub at: Location,
    /// The logical plan as planned from the SQL, with the canonical sort (for `explain`).
    pub logical: LogicalPlan,
    /// The optimized logical plan, including the canonical sort when `ORDER BY` is given.
    pub plan: LogicalPlan,
    /// The schema of the product's files: its contract, or the plan's schema.
    pub schema: SchemaRef,
    pub contract: Option<Contract>,
    pub schema_fp: String,
    pub query_fp: String,
    /// The canonical form `query_fp` hashes, kept for semantic diffs.
    pub canonical: CanonicalPlan,
    /// Lineage of every output column, in output order.
    pub lineage: Vec<ColumnLineage>,
    /// What its data depends on, column by column (for downstream build ids).
    pub shape: ProductShape,
    /// Fingerprint of the Kiln functions the plan calls and the secrets it keys them with.
    pub func_fp: String,
    pub order_by: Vec<(String, bool)>,
    /// Hive partition columns (`PARTITIONED BY`), in directory order.
    pub partition_by: Vec<String>,
    /// Parquet write options given in `WITH (...)` (validated; [`WRITE_OPTIONS`]).
    pub write_options: BTreeMap<String, String>,
    pub max_rows_per_file: usize,
    /// What a build does with the committed data (`existing_data`).
    pub existing_data: kiln_data::ExistingData,
    /// File names (`basename_template`, else kiln_data::DEFAULT_BASENAME).
    pub basename: String,
    /// 3 with `ORDER BY`; else 1, or 2 (`ordering_tier = '2'`: every output partition's
    /// rows are written in the order the plan produces them, files in partition order).
    pub ordering_tier: u8,
    /// The micro-batch (HTTP) source this product ingests, if it reads one: it is built
    /// batch by batch and appends (kiln_data::ingest).
    pub ingests: Option<String>,
    /// The windows its SELECTs group by (`GROUP BY TUMBLE/HOP`), innermost first.
    pub windows: Vec<crate::windows::WindowDef>,
}

impl Substrate {
    /// A session configured by `profile`, with `functions` installed and the warehouse's
    /// object store registered.
    pub fn new(
        profile: &RuntimeProfile,
        warehouse: Warehouse,
        root: &Path,
        functions: Registry,
    ) -> Result<Self, ControlError> {
        let state = SessionStateBuilder::new()
            .with_config(profile.session_config()?)
            .with_runtime_env(profile.runtime_env()?)
            .with_default_features()
            .with_relation_planners(vec![Arc::new(crate::unnest::UnnestPlanner)])
            .with_query_planner(Arc::new(crate::unnest::KilnQueryPlanner))
            .build();
        let ctx = SessionContext::new_with_state(state);
        warehouse.register(ctx.runtime_env().as_ref())?;
        functions.install(&ctx).map_err(|e| ControlError::Internal(e.to_string()))?;
        let runtime_fp = profile.runtime_fp()?;
        let settings: String = profile.settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let settings_fp = sha256_hex(settings.as_bytes());
        let functions_fp = functions.fingerprint_all();
        Ok(Self {
            ctx,
            functions,
            warehouse,
            root: root.to_path_buf(),
            products: HashMap::new(),
            sources: BTreeSet::new(),
            micro_batch: HashMap::new(),
            streams: HashMap::new(),
            runtime_fp,
            settings_fp,
            functions_fp,
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The semantic settings' fingerprint of this session's profile.
    pub fn runtime_fp(&self) -> &str {
        &self.runtime_fp
    }

    pub fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    pub fn product_table(&self, name: &str) -> Option<&Arc<ProductTable>> {
        self.products.get(name)
    }

    /// The key of a product's compile result in the compile cache:
    ///
    /// ```text
    /// sha256("kiln.compile.v1\n" kiln_version "\n" settings_fp "\n" functions_fp "\n"
    ///        statement_fp "\n" ("input " name " " schema_fp "\n")* sorted by name)
    /// ```
    ///
    /// `statement_fp` identifies the statement's text (the caller hashes its file and
    /// position), `settings_fp` every explicit setting of the profile, `functions_fp` every
    /// installed function and secret digest, and the inputs are the schemas of the tables
    /// the statement reads. Compiling is a function of exactly these, so a hit can stand in
    /// for planning, optimizing and fingerprinting.
    pub fn compile_key(&self, statement_fp: &str, inputs: &[(String, String)]) -> String {
        let mut sorted = inputs.to_vec();
        sorted.sort();
        let mut text = format!(
            "kiln.compile.v1\n{}\n{}\n{}\n{statement_fp}\n",
            env!("CARGO_PKG_VERSION"),
            self.settings_fp,
            self.functions_fp
        );
        for (name, fp) in sorted {
            text.push_str(&format!("input {name} {fp}\n"));
        }
        sha256_hex(text.as_bytes())
    }

    /// Registers a product's table from a cached compile result, so downstream products
    /// compile against it without compiling it.
    pub fn register_product_schema(&mut self, name: &str, schema: SchemaRef) -> Result<(), ControlError> {
        self.product_table_for(name, schema).map(|_| ())
    }

    /// The registered table of product `name`, reused when its schema is unchanged (plans
    /// compiled against it keep seeing the same table, which the engine binds at commit),
    /// or a new one.
    fn product_table_for(&mut self, name: &str, schema: SchemaRef) -> Result<Arc<ProductTable>, ControlError> {
        if let Some(existing) = self.products.get(name)
            && existing.schema_ref() == &schema
        {
            return Ok(Arc::clone(existing));
        }
        let table = Arc::new(ProductTable::new(name.to_owned(), schema));
        self.ctx
            .register_table(name, Arc::clone(&table) as _)
            .map_err(|e| ControlError::Internal(format!("register product `{name}`: {e}")))?;
        self.products.insert(name.to_owned(), Arc::clone(&table));
        Ok(table)
    }

    /// The schema fingerprint a source declares.
    pub fn source_schema_fp(def: &SourceDef) -> Result<String, ControlError> {
        Ok(schema_fingerprint(columns_schema(&def.columns, &def.at)?.as_ref()))
    }

    /// The names of every registered source and product.
    pub fn tables(&self) -> BTreeSet<String> {
        self.sources.iter().cloned().chain(self.products.keys().cloned()).collect()
    }

    /// Plans one SQL query from outside the project files and verifies it against `surface`
    /// before anything runs ([`crate::surface`]).
    pub async fn plan_sql(&self, surface: Surface, sql: &str) -> Result<LogicalPlan, ControlError> {
        let err = |message: String| ControlError::Query { surface: surface.name(), message };
        let state = self.ctx.state();
        let dialect = KilnDialect::default();
        let tokens = Tokenizer::new(&dialect, sql).tokenize_with_location().map_err(|e| err(e.to_string()))?;
        let mut statements = DFParserBuilder::new(crate::windows::window_tvfs(crate::unnest::normalize_tokens(tokens)))
            .with_dialect(&dialect)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| err(e.strip_backtrace()))?;
        if statements.len() != 1 {
            return Err(err(format!("expected exactly one statement, found {}", statements.len())));
        }
        let mut statement = statements.pop_front().ok_or_else(|| err("no statement".into()))?;
        if let DfStatement::Statement(s) = &mut statement {
            crate::unnest::nest_unnest_joins(s);
        }
        let plan = state.statement_to_plan(statement).await.map_err(|e| err(e.strip_backtrace()))?;
        surface.verify(&plan, &self.tables()).map_err(err)?;
        Ok(plan)
    }

    /// The micro-batch source `name` and the table its batches are bound to.
    pub fn micro_batch_source(&self, name: &str) -> Option<(&MicroBatchSource, &Arc<MicroBatchTable>)> {
        self.micro_batch.get(name).map(|(s, t)| (s, t))
    }

    /// Compiles and registers a source (`connector = 'files'`, the default, or `'http'`).
    pub fn register_source(&mut self, def: &SourceDef) -> Result<CompiledSource, ControlError> {
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        match def.options.get("connector") {
            None | Some(("files", _)) => {}
            Some(("http", _)) => {
                let source = MicroBatchSource::Http(self.http_source(def)?);
                return self.register_micro_batch(source).map(CompiledSource::MicroBatch);
            }
            Some(("kafka", _)) => {
                let source = MicroBatchSource::Kafka(self.kafka_source(def)?);
                return self.register_micro_batch(source).map(CompiledSource::MicroBatch);
            }
            Some(("log", _)) => {
                let source = MicroBatchSource::Log(self.log_source(def)?);
                return self.register_micro_batch(source).map(CompiledSource::MicroBatch);
            }
            Some((connector, at)) => {
                return Err(option_error(
                    at,
                    format!("connector `{connector}` (valid for sources: files, http, kafka, log)"),
                ));
            }
        }
        def.options.check_known("a files source", &SOURCE_OPTIONS)?;
        let (path, _) = def
            .options
            .get("path")
            .ok_or_else(|| option_error(&def.at, format!("source `{}` needs a `path` option", def.name)))?;
        let format = match def.options.get("format") {
            None => FileFormat::Parquet,
            Some((f, at)) => FileFormat::parse(f)
                .ok_or_else(|| option_error(at, format!("format `{f}` (valid: parquet, csv, json, arrow)")))?,
        };
        let reject = match def.options.get("on_error") {
            None | Some(("fail", _)) => false,
            Some(("reject", at)) => {
                if matches!(format, FileFormat::Parquet | FileFormat::Arrow) {
                    return Err(option_error(
                        at,
                        "on_error = 'reject' is for csv and json sources (parquet and arrow files are typed)".into(),
                    ));
                }
                true
            }
            Some((v, at)) => return Err(option_error(at, format!("on_error = '{v}' (valid: 'fail', 'reject')"))),
        };
        let evolution = match def.options.get("schema_evolution") {
            None | Some(("strict", _)) => EvolutionPolicy::Strict,
            Some(("permissive", _)) => EvolutionPolicy::Evolve,
            Some((v, at)) => {
                return Err(option_error(at, format!("schema_evolution = '{v}' (valid: 'strict', 'permissive')")));
            }
        };
        let schema = columns_schema(&def.columns, &def.at)?;
        // Hive partition columns of the files' directories: declared last, in order.
        let partition_by: Vec<String> = match def.options.get("partitioned_by") {
            None => Vec::new(),
            Some((list, at)) => {
                let names: Vec<String> =
                    list.split(',').map(|c| c.trim().to_lowercase()).filter(|c| !c.is_empty()).collect();
                let declared: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let tail = &declared[declared.len().saturating_sub(names.len())..];
                if names.is_empty() || names.len() >= declared.len() || tail != names.as_slice() {
                    return Err(option_error(
                        at,
                        format!(
                            "partitioned_by = '{list}': the partition columns must be the last declared columns, in directory order (declared: {})",
                            declared.join(", ")
                        ),
                    ));
                }
                names
            }
        };
        if reject && let Some(nested) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
            let at = def.options.get("on_error").map_or(&def.at, |(_, at)| at);
            return Err(option_error(
                at,
                format!("on_error = 'reject' reads scalar columns; `{}` is {}", nested.name(), nested.data_type()),
            ));
        }
        let mut source = FileSource {
            name: def.name.clone(),
            path: self.root.join(path),
            format,
            schema,
            partition_by,
            reject,
            evolution,
            promotions: Vec::new(),
        };
        source.reconcile().map_err(|e| ControlError::Source {
            at: def.at.clone(),
            source_name: def.name.clone(),
            message: e.to_string(),
        })?;
        let table = source.table()?;
        self.sources.insert(def.name.clone());
        self.ctx
            .register_table(def.name.as_str(), table)
            .map_err(|e| ControlError::Internal(format!("register source `{}`: {e}", def.name)))?;
        Ok(CompiledSource::Files(source))
    }

    /// Registers a micro-batch source as a [`MicroBatchTable`], which the engine binds to
    /// each micro-batch in turn.
    fn register_micro_batch(&mut self, source: MicroBatchSource) -> Result<MicroBatchSource, ControlError> {
        let name = source.name().to_owned();
        let table = Arc::new(MicroBatchTable::new(name.clone(), Arc::clone(source.schema())));
        self.sources.insert(name.clone());
        self.ctx
            .register_table(name.as_str(), Arc::clone(&table) as Arc<dyn datafusion::datasource::TableProvider>)
            .map_err(|e| ControlError::Internal(format!("register source `{name}`: {e}")))?;
        self.micro_batch.insert(name, (source.clone(), table));
        Ok(source)
    }

    /// Compiles a `kafka` source: options and columns checked with locations.
    fn kafka_source(&self, def: &SourceDef) -> Result<KafkaSource, ControlError> {
        def.options.check_known("a kafka source", &KAFKA_SOURCE_OPTIONS)?;
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        if !kiln_data::kafka::ENABLED {
            let at = def.options.get("connector").map_or(&def.at, |(_, at)| at);
            return Err(option_error(
                at,
                "kafka sources need kiln built with the `kafka` cargo feature (cargo install kiln-cli --features kafka)".into(),
            ));
        }
        let required = |key: &str| {
            def.options
                .get(key)
                .map(|(v, _)| v.to_owned())
                .ok_or_else(|| option_error(&def.at, format!("source `{}` needs a `{key}` option", def.name)))
        };
        let brokers: Vec<String> =
            required("brokers")?.split(',').map(|b| b.trim().to_owned()).filter(|b| !b.is_empty()).collect();
        let topic = required("topic")?;
        let start = match def.options.get("start") {
            None | Some(("earliest", _)) => kiln_data::kafka::StartAt::Earliest,
            Some(("latest", _)) => kiln_data::kafka::StartAt::Latest,
            Some((v, at)) => return Err(option_error(at, format!("start = '{v}' (valid: 'earliest', 'latest')"))),
        };
        let batch_records = record_options(def, "kafka")?;
        let reject = on_error_reject(def)?;
        let schema = scalar_columns(def, "a kafka source")?;
        Ok(KafkaSource { name: def.name.clone(), brokers, topic, schema, start, batch_records, reject })
    }

    /// Compiles a `files` stream: a directory (relative to the project) whose arriving
    /// files are read once each (kiln_data::files_stream).
    fn files_stream(&self, def: &SourceDef) -> Result<kiln_data::files_stream::FilesSource, ControlError> {
        use kiln_data::files_stream::FileFormat;
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        let (path, _) = def
            .options
            .get("path")
            .ok_or_else(|| option_error(&def.at, format!("stream `{}` needs a `path` option", def.name)))?;
        let format = match def.options.get("format") {
            None | Some(("json", _)) => FileFormat::Json,
            Some(("csv", _)) => FileFormat::Csv,
            Some(("arrow", _)) => FileFormat::Arrow,
            Some((f, at)) => {
                return Err(option_error(at, format!("format `{f}` (valid for files streams: json, csv, arrow)")));
            }
        };
        let batch_records = match def.options.get("batch_records") {
            None => 10_000,
            Some((v, at)) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| option_error(at, format!("batch_records = '{v}': expected an integer >= 1")))?,
        };
        Ok(kiln_data::files_stream::FilesSource {
            name: def.name.clone(),
            dir: self.root.join(path),
            schema: scalar_columns(def, "a files stream")?,
            format,
            batch_records,
            reject: on_error_reject(def)?,
        })
    }

    /// Compiles a `log` source (a topic of the embedded log, kiln_data::log).
    fn log_source(&self, def: &SourceDef) -> Result<kiln_data::log::LogSource, ControlError> {
        def.options.check_known("a log source", &LOG_SOURCE_OPTIONS)?;
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        let (topic, _) = def
            .options
            .get("topic")
            .ok_or_else(|| option_error(&def.at, format!("source `{}` needs a `topic` option", def.name)))?;
        let batch_records = record_options(def, "log")?;
        Ok(kiln_data::log::LogSource {
            name: def.name.clone(),
            warehouse: self.warehouse.clone(),
            topic: topic.to_owned(),
            schema: scalar_columns(def, "a log source")?,
            batch_records,
            reject: on_error_reject(def)?,
            csv: def.options.get("format").is_some_and(|(f, _)| f == "csv"),
            cache: Default::default(),
        })
    }

    /// Compiles an `http` source: its options checked with locations.
    fn http_source(&self, def: &SourceDef) -> Result<HttpSource, ControlError> {
        def.options.check_known("an http source", &HTTP_SOURCE_OPTIONS)?;
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        let get = |key: &str| def.options.get(key);
        let text = |key: &str, default: &str| get(key).map_or(default, |(v, _)| v).to_owned();
        let (url, url_at) =
            get("url").ok_or_else(|| option_error(&def.at, format!("source `{}` needs a `url` option", def.name)))?;
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => return Err(option_error(url_at, format!("url scheme `{}` (valid: http, https)", u.scheme()))),
            Err(e) => return Err(option_error(url_at, format!("url `{url}`: {e}"))),
        }
        let format = match get("format") {
            None | Some(("json", _)) => HttpFormat::Json { records_field: text("records_field", "data") },
            Some(("ndjson", _)) => HttpFormat::Ndjson,
            Some((f, at)) => return Err(option_error(at, format!("format `{f}` (valid for http: json, ndjson)"))),
        };
        if let (HttpFormat::Ndjson, Some((_, at))) = (&format, get("records_field")) {
            return Err(option_error(at, "records_field is for format = 'json'".into()));
        }
        let pagination = match get("pagination") {
            None | Some(("link", _)) => Pagination::Link { next_field: text("next_field", "next") },
            Some(("cursor", at)) => {
                if format == HttpFormat::Ndjson {
                    return Err(option_error(at, "cursor pagination reads the cursor from a JSON object body".into()));
                }
                Pagination::Cursor { param: text("cursor_param", "cursor"), field: text("cursor_field", "next_cursor") }
            }
            Some(("none", _)) => Pagination::None,
            Some((p, at)) => return Err(option_error(at, format!("pagination `{p}` (valid: link, cursor, none)"))),
        };
        let number = |key: &str, default: u64, min: u64| -> Result<u64, ControlError> {
            match get(key) {
                None => Ok(default),
                Some((v, at)) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| option_error(at, format!("{key} = '{v}': expected an integer >= {min}"))),
            }
        };
        let duration = |key: &str, default: Duration| -> Result<Duration, ControlError> {
            match get(key) {
                None => Ok(default),
                Some((v, at)) => parse_duration(v).ok_or_else(|| {
                    option_error(at, format!("{key} = '{v}': expected a duration such as '250ms', '5s' or '2m'"))
                }),
            }
        };
        let reject = on_error_reject(def)?;
        let schema = scalar_columns(def, "an http source")?;
        Ok(HttpSource {
            name: def.name.clone(),
            url: url.to_owned(),
            schema: Arc::clone(&schema),
            format,
            pagination,
            batch_records: number("batch_records", 10_000, 1)? as usize,
            max_retries: number("max_retries", 5, 0)?.min(u64::from(u32::MAX)) as u32,
            retry_backoff: duration("retry_backoff", Duration::from_millis(200))?,
            timeout: duration("timeout", Duration::from_secs(30))?,
            reject,
        })
    }

    /// Compiles a stream: its connector (a micro-batch source, like a source's, with the
    /// same options plus `idle_timeout`), column types and watermark; registers it so
    /// materialized views over it compile and `kiln stream` can bind its micro-batches.
    /// The event-time column is NOT NULL for the reader: a record without it is rejected
    /// (or fails the run) as such.
    pub fn register_stream(&mut self, def: &StreamDef) -> Result<CompiledStream, ControlError> {
        let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
        let connector = def.options.get("connector").map_or("log", |(c, _)| c);
        if !STREAM_CONNECTORS.contains(&connector) {
            let at = def.options.get("connector").map_or(&def.at, |(_, at)| at);
            return Err(option_error(
                at,
                format!("stream connector `{connector}` (valid: {})", STREAM_CONNECTORS.join(", ")),
            ));
        }
        let source_options: &[&str] = match connector {
            "files" => &FILES_STREAM_OPTIONS,
            "http" => &HTTP_SOURCE_OPTIONS,
            "kafka" => &KAFKA_SOURCE_OPTIONS,
            _ => &LOG_SOURCE_OPTIONS,
        };
        let valid: Vec<&str> = source_options.iter().copied().chain(["idle_timeout", "poll_interval"]).collect();
        def.options.check_known(&format!("a `{connector}` stream"), &valid)?;
        let idle_timeout = match def.options.get("idle_timeout") {
            None => DEFAULT_IDLE_TIMEOUT,
            Some((v, at)) => parse_duration(v)
                .ok_or_else(|| option_error(at, format!("idle_timeout `{v}` (expected e.g. 500ms, 10s, 1m)")))?,
        };
        let poll_interval = match def.options.get("poll_interval") {
            // An HTTP feed is someone's API: poll it gently by default.
            None if connector == "http" => Duration::from_secs(1),
            None => Duration::from_millis(100),
            Some((v, at)) => parse_duration(v)
                .ok_or_else(|| option_error(at, format!("poll_interval `{v}` (expected e.g. 500ms, 10s, 1m)")))?,
        };
        let mut options = def.options.clone();
        options.0.retain(|(k, _, _)| k != "idle_timeout" && k != "poll_interval");
        if connector == "log" && options.get("connector").is_none() {
            options.0.push(("connector".into(), "log".into(), def.at.clone()));
        }
        let as_source = SourceDef { name: def.name.clone(), at: def.at.clone(), columns: def.columns.clone(), options };
        let mut source = match connector {
            "files" => MicroBatchSource::Files(self.files_stream(&as_source)?),
            "http" => MicroBatchSource::Http(self.http_source(&as_source)?),
            "kafka" => MicroBatchSource::Kafka(self.kafka_source(&as_source)?),
            _ => MicroBatchSource::Log(self.log_source(&as_source)?),
        };
        let mut event_time = None;
        if let Some(wm) = &def.watermark {
            let fail =
                |message: String| ControlError::Compile { at: wm.at.clone(), product: def.name.clone(), message };
            let schema = source.schema();
            let field = schema
                .field_with_name(&wm.column)
                .map_err(|_| fail(format!("WATERMARK FOR `{}`: no such column", wm.column)))?;
            if !matches!(field.data_type(), datafusion::arrow::datatypes::DataType::Timestamp(..)) {
                return Err(fail(format!(
                    "WATERMARK FOR `{}`: the event-time column must be a TIMESTAMP, found {}",
                    wm.column,
                    field.data_type()
                )));
            }
            let delay = watermark_delay(wm).map_err(fail)?;
            event_time = Some((wm.column.clone(), i64::try_from(delay).unwrap_or(i64::MAX)));
            let fields: Vec<datafusion::arrow::datatypes::Field> = schema
                .fields()
                .iter()
                .map(|f| {
                    let f = f.as_ref().clone();
                    if f.name() != &wm.column {
                        return f;
                    }
                    let mut metadata = f.metadata().clone();
                    metadata.insert(EVENT_TIME_KEY.to_owned(), "true".to_owned());
                    f.with_nullable(false).with_metadata(metadata)
                })
                .collect();
            let schema = Arc::new(Schema::new(fields));
            match &mut source {
                MicroBatchSource::Files(s) => s.schema = schema,
                MicroBatchSource::Http(s) => s.schema = schema,
                MicroBatchSource::Kafka(s) => s.schema = schema,
                MicroBatchSource::Log(s) => s.schema = schema,
            }
        }
        let reject = on_error_reject(&as_source)?;
        self.register_micro_batch(source)?;
        let compiled = CompiledStream { name: def.name.clone(), event_time, idle_timeout, reject, poll_interval };
        self.streams.insert(def.name.clone(), compiled.clone());
        Ok(compiled)
    }

    /// Makes every stream an unbounded table (kiln_data::StreamTable) for ad-hoc queries
    /// (`kiln query`), in place of the micro-batch table views are planned over.
    pub fn follow_streams(&mut self) -> Result<(), ControlError> {
        for (name, stream) in &self.streams {
            let Some((source, _)) = self.micro_batch.get(name) else { continue };
            let table = kiln_data::ingest::StreamTable::new(source.clone(), stream.poll_interval);
            let failed =
                |e: datafusion::error::DataFusionError| ControlError::Internal(format!("stream `{name}`: {e}"));
            self.ctx.deregister_table(name.as_str()).map_err(failed)?;
            self.ctx.register_table(name.as_str(), Arc::new(table)).map_err(failed)?;
        }
        Ok(())
    }

    /// Whether `plan` reads a stream.
    pub fn reads_stream(&self, plan: &LogicalPlan) -> bool {
        let mut found = false;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && self.streams.contains_key(scan.table_name.table())
            {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    }

    /// A compiled stream.
    pub fn stream(&self, name: &str) -> Option<&CompiledStream> {
        self.streams.get(name)
    }

    /// Compiles a materialized view's query (like a product's: planned, verified, gated
    /// against its declared columns, fingerprinted) and registers its schema. What
    /// `kiln stream` can run is checked here: a view reads one stream (and nothing else:
    /// each micro-batch runs its query); a view that aggregates groups by one window
    /// (TUMBLE or HOP with literal intervals) over the stream's event-time column, so a
    /// group closes when the watermark passes its end.
    pub async fn compile_view(&mut self, def: &ViewDef) -> Result<CompiledProduct, ControlError> {
        def.options.check_known("a materialized view", &VIEW_OPTIONS)?;
        if let Some((v, at)) = def.options.get("late_events")
            && !matches!(v, "drop" | "table")
        {
            return Err(ControlError::Option {
                at: at.clone(),
                message: format!("late_events = '{v}' (valid: 'drop', 'table': write them to `{}__late`)", def.name),
            });
        }
        let mut options = crate::dialect::Options::default();
        options.0.extend(def.options.0.iter().filter(|(k, _, _)| k == "max_rows_per_file").cloned());
        let as_product = ProductDef {
            name: def.name.clone(),
            at: def.at.clone(),
            columns: def.columns.clone(),
            partition_by: Vec::new(),
            order_by: Vec::new(),
            options,
            query: def.query.clone(),
        };
        let product = self.compile_product(&as_product).await?;
        let fail = |at: Location, message: String| ControlError::Compile { at, product: def.name.clone(), message };
        let Some(stream) = product.ingests.as_ref().and_then(|feed| self.streams.get(feed)) else {
            return Err(fail(def.at.clone(), "a materialized view reads a stream (CREATE STREAM)".into()));
        };
        let mut aggregates = 0;
        let _ = product.plan.apply_with_subqueries(|node| {
            aggregates += usize::from(matches!(node, LogicalPlan::Aggregate(_)));
            Ok(TreeNodeRecursion::Continue)
        });
        if aggregates == 0 {
            return Ok(product);
        }
        let at_window = |w: &crate::windows::WindowDef| Location {
            file: def.at.file.clone(),
            line: w.span.start.line,
            column: w.span.start.column,
        };
        let window = match product.windows.as_slice() {
            [w] if aggregates == 1 => w,
            [] => {
                return Err(fail(
                    def.at.clone(),
                    format!(
                        "a materialized view that aggregates groups by a window, GROUP BY TUMBLE({0}, ...) or HOP({0}, ...): a group over an unbounded stream never closes",
                        stream.event_time.as_ref().map_or("ts", |(c, _)| c.as_str())
                    ),
                ));
            }
            _ => return Err(fail(def.at.clone(), "a materialized view aggregates once, by one window".into())),
        };
        let Some((column, _)) = &stream.event_time else {
            return Err(fail(
                at_window(window),
                format!("stream `{}` has no WATERMARK FOR its event time, so its windows never close", stream.name),
            ));
        };
        let time = match &window.time {
            datafusion::sql::sqlparser::ast::Expr::Identifier(i) => Some(crate::dialect::normalize(i)),
            datafusion::sql::sqlparser::ast::Expr::CompoundIdentifier(parts) => {
                parts.last().map(crate::dialect::normalize)
            }
            _ => None,
        };
        if time.as_deref() != Some(column.as_str()) {
            return Err(fail(
                at_window(window),
                format!(
                    "the window is over `{}`; a stream's windows are over its event-time column `{column}` (WATERMARK FOR)",
                    window.time
                ),
            ));
        }
        if window.size_ms.is_none() || window.slide_ms.is_none() {
            return Err(fail(
                at_window(window),
                "a stream window's intervals are literals (INTERVAL '10' SECOND)".into(),
            ));
        }
        Ok(product)
    }

    /// Compiles a product and registers its table for downstream products.
    pub async fn compile_product(&mut self, def: &ProductDef) -> Result<CompiledProduct, ControlError> {
        def.options.check_known("a product", &PRODUCT_OPTIONS)?;
        let at = def.at.clone();
        let fail = |message: String| ControlError::Compile { at: at.clone(), product: def.name.clone(), message };
        let max_rows_per_file = match def.options.get("max_rows_per_file") {
            None => 1_000_000,
            Some((v, at)) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| ControlError::Option {
                at: at.clone(),
                message: format!("max_rows_per_file must be a positive integer, got `{v}`"),
            })?,
        };
        let existing_data = match def.options.get("existing_data") {
            None => kiln_data::ExistingData::Replace,
            Some((v, at)) => kiln_data::ExistingData::parse(v).ok_or_else(|| ControlError::Option {
                at: at.clone(),
                message: format!("existing_data = '{v}' is not one of 'replace', 'error', 'append', 'delete_matching'"),
            })?,
        };
        if existing_data == kiln_data::ExistingData::DeleteMatching && def.partition_by.is_empty() {
            return Err(fail(
                "existing_data = 'delete_matching' overwrites the partitions a build writes: it needs PARTITIONED BY"
                    .into(),
            ));
        }

        let ordering_tier = match (def.options.get("ordering_tier"), def.order_by.is_empty()) {
            (None, true) => 1,
            (None, false) => 3,
            (Some(("1" | "2", at)), false) => {
                return Err(ControlError::Option {
                    at: at.clone(),
                    message: "ORDER BY makes a product tier 3; ordering_tier is for products without it".into(),
                });
            }
            (Some((v @ ("1" | "2"), _)), true) => {
                if v == "1" {
                    1
                } else {
                    2
                }
            }
            (Some((v, at)), _) => {
                return Err(ControlError::Option {
                    at: at.clone(),
                    message: format!("ordering_tier = '{v}': expected '1' or '2' (tier 3 is ORDER BY)"),
                });
            }
        };
        let basename = match def.options.get("basename_template") {
            None => kiln_data::DEFAULT_BASENAME.to_owned(),
            Some((v, at)) => match kiln_data::check_basename(v) {
                None => v.to_owned(),
                Some(why) => {
                    return Err(ControlError::Option {
                        at: at.clone(),
                        message: format!("basename_template = '{v}': {why}"),
                    });
                }
            },
        };

        let state = self.ctx.state();
        let mut query = def.query.clone();
        let windows = crate::windows::rewrite_windows(&mut query).map_err(|e| planning_error(e, &def.at, &def.name))?;
        crate::unnest::nest_unnest_joins_in_query(&mut query);
        let statement = DfStatement::Statement(Box::new(SqlStatement::Query(query)));
        let plan = state.statement_to_plan(statement).await.map_err(|e| planning_error(e, &def.at, &def.name))?;
        Surface::Internal.verify(&plan, &self.tables()).map_err(fail)?;
        let ingests = self.ingested_source(&plan, existing_data).map_err(fail)?;

        let planned: Schema = plan.schema().as_arrow().clone();
        let contract = match &def.columns {
            None => None,
            Some(columns) => {
                let declared = columns_schema(columns, &def.at)?;
                let contract = Contract::try_new(
                    def.name.clone(),
                    declared,
                    def.partition_by.clone(),
                    def.order_by.iter().map(|(c, _)| c.clone()).collect(),
                    EvolutionPolicy::Strict,
                )
                .map_err(|e| fail(e.to_string()))?;
                let verdict = check(
                    &planned,
                    &contract.schema,
                    CheckOptions { policy: contract.evolution, nullability_is_proven: false },
                );
                if !verdict.is_ok() {
                    return Err(ControlError::Contract {
                        at: def.at.clone(),
                        product: def.name.clone(),
                        violations: verdict.violations.iter().map(ToString::to_string).collect(),
                    });
                }
                Some(contract)
            }
        };
        let schema: SchemaRef = match &contract {
            Some(c) => Arc::clone(&c.schema),
            None => Arc::new(Schema::new(planned.fields().iter().map(|f| Field::clone(f)).collect::<Vec<_>>())),
        };
        for (k, column) in def.partition_by.iter().enumerate() {
            let field = schema
                .field_with_name(column)
                .map_err(|_| fail(format!("PARTITIONED BY column `{column}` is not an output column")))?;
            if def.partition_by[..k].contains(column) {
                return Err(fail(format!("PARTITIONED BY names `{column}` twice")));
            }
            if !partitionable(field.data_type()) {
                return Err(fail(format!(
                    "PARTITIONED BY column `{column}` has type {}; partition by an integer, string, boolean or date column",
                    field.data_type()
                )));
            }
        }
        if !def.partition_by.is_empty() && def.partition_by.len() >= schema.fields().len() {
            return Err(fail("PARTITIONED BY must leave at least one column inside the files".into()));
        }
        for (column, _) in &def.order_by {
            if schema.field_with_name(column).is_err() {
                return Err(fail(format!("ORDER BY column `{column}` is not an output column")));
            }
        }
        let plan = if def.order_by.is_empty() {
            plan
        } else {
            let keys: Vec<SortExpr> = def
                .order_by
                .iter()
                .map(|(c, asc)| Expr::Column(Column::from_name(c.clone())).sort(*asc, !*asc))
                .collect();
            LogicalPlanBuilder::from(plan).sort(keys).and_then(|b| b.build()).map_err(|e| fail(e.strip_backtrace()))?
        };
        let logical = plan.clone();
        // A view's aggregate runs as one windowed aggregation (kiln_data::window): the
        // rewrite of DISTINCT aggregates into two nested GROUP BYs is left out for views
        // (DataFusion's distinct accumulators keep their values as partial state).
        let streaming = ingests.as_ref().is_some_and(|feed| self.streams.contains_key(feed));
        let plan = if streaming {
            let rules: Vec<_> = state
                .optimizers()
                .iter()
                .filter(|r| r.name() != "single_distinct_aggregation_to_group_by")
                .cloned()
                .collect();
            let view_state = SessionStateBuilder::new_from_existing(state.clone()).with_optimizer_rules(rules).build();
            view_state.optimize(&plan)
        } else {
            state.optimize(&plan)
        };
        let plan = plan.map_err(|e| fail(e.strip_backtrace()))?;
        let analysis = analyze(&plan);
        let query_fp = analysis.query_fp();
        let shape = analysis.shape(&schema);
        // The dataset's shape is its columns and its partitioning: a changed PARTITIONED BY
        // is a changed schema (and rebuilds).
        let mut write_options = BTreeMap::new();
        for key in kiln_data::write_options::WRITE_OPTIONS {
            if let Some((value, _)) = def.options.get(key) {
                write_options.insert(key.to_owned(), value.to_owned());
            }
        }
        let builder = datafusion::parquet::file::properties::WriterProperties::builder();
        if let Err((key, message)) = kiln_data::write_options::apply(builder, &write_options, &schema) {
            let at = def.options.get(&key).map_or(&def.at, |(_, at)| at).clone();
            return Err(ControlError::Option { at, message });
        }
        // The dataset's shape is its columns, its partitioning and how its files are
        // written: changing any of them changes schema_fp (and rebuilds).
        let layout: String = def
            .partition_by
            .iter()
            .map(|c| format!("partition {c}\n"))
            .chain(write_options.iter().map(|(k, v)| format!("write {k}={v}\n")))
            .chain((ordering_tier == 2).then(|| "tier 2\n".to_owned()))
            .collect();
        let schema_fp = match layout.as_str() {
            "" => schema_fingerprint(&schema),
            layout => sha256_hex(format!("kiln.layout.v1\n{}\n{layout}", schema_fingerprint(&schema)).as_bytes()),
        };
        let (used, secrets) = functions_used(&plan);
        let func_fp = self.functions.fingerprint(&used, &secrets).map_err(fail)?;

        self.product_table_for(&def.name, Arc::clone(&schema))?;
        Ok(CompiledProduct {
            name: def.name.clone(),
            at: def.at.clone(),
            logical,
            plan,
            schema,
            contract,
            schema_fp,
            query_fp,
            canonical: analysis.plan,
            lineage: analysis.lineage,
            shape,
            func_fp,
            order_by: def.order_by.clone(),
            partition_by: def.partition_by.clone(),
            write_options,
            max_rows_per_file,
            existing_data,
            basename,
            ordering_tier,
            ingests,
            windows,
        })
    }

    /// The micro-batch source a product's plan reads, checked against what ingest can do:
    /// one such source, besides which only sources (each batch runs the whole query, so
    /// a product read alongside would be joined against its version at each batch), and
    /// output that appends.
    fn ingested_source(
        &self,
        plan: &LogicalPlan,
        existing_data: kiln_data::ExistingData,
    ) -> Result<Option<String>, String> {
        let mut tables = BTreeSet::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                tables.insert(scan.table_name.table().to_owned());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        let feeds: Vec<&String> = tables.iter().filter(|t| self.micro_batch.contains_key(*t)).collect();
        let Some(feed) = feeds.first() else { return Ok(None) };
        if let Some(other) = feeds.get(1) {
            return Err(format!(
                "reads micro-batch sources `{feed}` and `{other}`; a product ingests one (land each, then join them downstream)"
            ));
        }
        if let Some(product) = tables.iter().find(|t| self.products.contains_key(*t)) {
            return Err(format!(
                "ingests source `{feed}` and reads product `{product}`; a product over a micro-batch source reads only sources (land the records, then join them downstream)"
            ));
        }
        if !matches!(existing_data, kiln_data::ExistingData::Replace | kiln_data::ExistingData::Append) {
            return Err(format!("ingests source `{feed}`: each micro-batch is appended (existing_data = 'append')"));
        }
        Ok(Some((*feed).clone()))
    }
}

/// Types whose values make readable, reversible Hive directory names.
fn partitionable(t: &datafusion::arrow::datatypes::DataType) -> bool {
    use datafusion::arrow::datatypes::DataType;
    t.is_integer()
        || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean | DataType::Date32)
}

/// Every function name a plan calls, and the secret names passed to `kiln_pii_hash`.
fn functions_used(plan: &LogicalPlan) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    names.insert(f.name().to_owned());
                    if f.name() == "kiln_pii_hash"
                        && let Some(Expr::Literal(value, _)) = f.args.get(1)
                        && let Some(name) = value.try_as_str().flatten()
                    {
                        secrets.insert(name.to_owned());
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    (names, secrets)
}

/// The build id of a product from its fingerprints (see the module docs).
pub fn build_id(product: &str, fps: &BuildFingerprints) -> String {
    let mut text = String::with_capacity(384 + fps.upstream.len() * 96);
    text.push_str("kiln.build.v");
    text.push_str(&BUILD_ID_VERSION.to_string());
    for part in [product, &fps.schema_fp, &fps.query_fp, &fps.runtime_fp, &fps.func_fp] {
        text.push('\n');
        text.push_str(part);
    }
    text.push('\n');
    for (name, version) in &fps.upstream {
        text.push_str("upstream ");
        text.push_str(name);
        text.push(' ');
        text.push_str(version);
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}

/// The allowed lateness of a watermark `column - INTERVAL '...'` (or just `column`: none),
/// in milliseconds.
pub fn watermark_delay(wm: &Watermark) -> Result<u64, String> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr};
    let shape =
        || format!("WATERMARK FOR `{0}` AS `{1}`: expected `{0}` or `{0} - INTERVAL '<n>' <unit>`", wm.column, wm.expr);
    match wm.expr.as_ref() {
        SqlExpr::Identifier(i) if normalize(i) == wm.column => Ok(0),
        SqlExpr::BinaryOp { left, op: BinaryOperator::Minus, right } => {
            let SqlExpr::Identifier(i) = left.as_ref() else { return Err(shape()) };
            if normalize(i) != wm.column {
                return Err(shape());
            }
            let ms = crate::windows::interval_ms(right).ok_or_else(shape)?;
            u64::try_from(ms).map_err(|_| shape())
        }
        _ => Err(shape()),
    }
}

/// A declared column list as an Arrow schema (`NOT NULL` -> non-nullable).
fn columns_schema(columns: &[ColumnDef], at: &Location) -> Result<SchemaRef, ControlError> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let name = normalize(&c.name);
        let data_type = sql_to_arrow(&c.data_type).map_err(|e| ControlError::Syntax {
            at: Location {
                file: at.file.clone(),
                line: c.name.span.start.line.max(1),
                column: c.name.span.start.column.max(1),
            },
            message: format!("column `{name}`: {e}"),
            snippet: String::new(),
        })?;
        let not_null = c.options.iter().any(|o| matches!(o.option, ColumnOption::NotNull));
        // `COMMENT '...'` travels with the contract as field metadata.
        let metadata = c
            .options
            .iter()
            .filter_map(|o| match &o.option {
                ColumnOption::Comment(text) => Some(("comment".to_owned(), text.clone())),
                _ => None,
            })
            .collect();
        fields.push(Field::new(name, data_type, !not_null).with_metadata(metadata));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// Maps a DataFusion planning error to a located error (DataFusion's diagnostic span is a
/// position in the file, because we planned from the file's own AST).
fn planning_error(e: DataFusionError, fallback: &Location, product: &str) -> ControlError {
    let span = e.diagnostic().and_then(|d| d.span);
    let at = match span {
        Some(s) if s.start.line > 0 => {
            Location { file: fallback.file.clone(), line: s.start.line, column: s.start.column }
        }
        _ => fallback.clone(),
    };
    let message = e.strip_backtrace();
    let message = message.strip_prefix("Error during planning: ").unwrap_or(&message).to_owned();
    ControlError::Compile { at, product: product.to_owned(), message }
}
