//! Compiling sources and streams: every connector's options checked with their
//! locations, into kiln-data's source types, registered in the [`Substrate`].

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use kiln_contracts::EvolutionPolicy;
use kiln_data::stream::{EventTime, StreamProgram};
use kiln_data::{
    Codec, FileFormat, FileSource, HttpFormat, HttpSource, KafkaSource, MicroBatchSource, MicroBatchTable, Pagination,
    SourceCompression,
};

use super::schema::columns_schema;
use super::substrate::Substrate;
use crate::dialect::{SourceDef, StreamDef, Watermark, normalize};
use crate::error::{ControlError, Location};

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

/// Options a `files` source accepts.
const SOURCE_OPTIONS: [&str; 11] = [
    "connector",
    "path",
    "allow_empty",
    "format",
    "compression",
    "schema_evolution",
    "on_error",
    "partitioned_by",
    "freshness_warn",
    "freshness_error",
    "freshness_column",
];
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
const KAFKA_SOURCE_OPTIONS: [&str; 8] =
    ["connector", "brokers", "topic", "start", "format", "batch_records", "timeout", "on_error"];

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
    /// definition; products over those ingest on every build (the kiln crate's ingest).
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

/// Field metadata marking a stream's event-time column: the record reader names a record
/// without it as such (kiln_data::checked).
pub const EVENT_TIME_KEY: &str = kiln_data::checked::EVENT_TIME_KEY;
impl Substrate {
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
        let freshness = freshness(def, &schema)?;
        let allow_empty = match def.options.get("allow_empty") {
            None | Some(("false", _)) => false,
            Some(("true", _)) => true,
            Some((v, at)) => return Err(option_error(at, format!("allow_empty = '{v}' (valid: 'true', 'false')"))),
        };
        let compression = match def.options.get("compression") {
            None | Some(("auto", _)) => SourceCompression::Auto,
            Some((_, at)) if matches!(format, FileFormat::Parquet | FileFormat::Arrow) => {
                return Err(option_error(
                    at,
                    "compression is for csv and json sources (parquet and arrow files compress inside)".into(),
                ));
            }
            Some((v, at)) => SourceCompression::Fixed(Codec::parse(v).ok_or_else(|| {
                option_error(at, format!("compression = '{v}' (valid: 'auto', 'none', 'gzip', 'zstd', 'bzip2', 'xz')"))
            })?),
        };
        let mut source = FileSource {
            compression,
            allow_empty,
            freshness,
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
        if !kiln_data::feed::kafka::ENABLED {
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
            None | Some(("earliest", _)) => kiln_data::feed::kafka::StartAt::Earliest,
            Some(("latest", _)) => kiln_data::feed::kafka::StartAt::Latest,
            Some((v, at)) => return Err(option_error(at, format!("start = '{v}' (valid: 'earliest', 'latest')"))),
        };
        let batch_records = record_options(def, "kafka")?;
        let timeout = match def.options.get("timeout") {
            None => Duration::from_secs(30),
            Some((v, at)) => crate::units::parse_duration(v).filter(|d| !d.is_zero()).ok_or_else(|| {
                option_error(at, format!("timeout = '{v}': expected a duration such as '500ms', '5s' or '2m'"))
            })?,
        };
        let reject = on_error_reject(def)?;
        let schema = scalar_columns(def, "a kafka source")?;
        Ok(KafkaSource { name: def.name.clone(), brokers, topic, schema, start, batch_records, timeout, reject })
    }

    /// Compiles a `files` stream: a directory (relative to the project) whose arriving
    /// files are read once each (kiln_data::files_stream).
    fn files_stream(&self, def: &SourceDef) -> Result<kiln_data::FilesSource, ControlError> {
        use kiln_data::feed::files::FileFormat;
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
        Ok(kiln_data::FilesSource {
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
                Some((v, at)) => crate::units::parse_duration(v).ok_or_else(|| {
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
    pub fn register_stream(&mut self, def: &StreamDef) -> Result<StreamProgram, ControlError> {
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
            Some((v, at)) => crate::units::parse_duration(v)
                .ok_or_else(|| option_error(at, format!("idle_timeout `{v}` (expected e.g. 500ms, 10s, 1m)")))?,
        };
        let poll_interval = match def.options.get("poll_interval") {
            // An HTTP feed is someone's API: poll it gently by default.
            None if connector == "http" => Duration::from_secs(1),
            None => Duration::from_millis(100),
            Some((v, at)) => crate::units::parse_duration(v)
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
            let delay = watermark_delay(wm).map_err(|e| fail(e.to_string()))?;
            event_time =
                Some(EventTime { column: wm.column.clone(), delay_ms: i64::try_from(delay).unwrap_or(i64::MAX) });
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
        let compiled = StreamProgram { name: def.name.clone(), event_time, idle_timeout, reject, poll_interval };
        self.streams.insert(def.name.clone(), compiled.clone());
        Ok(compiled)
    }
}

/// A watermark whose expression Kiln cannot read as the event time minus a literal delay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WATERMARK FOR `{column}` AS `{expr}`: expected `{column}` or `{column} - INTERVAL '<n>' <unit>`")]
pub struct WatermarkShape {
    pub column: String,
    pub expr: String,
}

/// The allowed lateness of a watermark `column - INTERVAL '...'` (or just `column`: none),
/// in milliseconds.
pub fn watermark_delay(wm: &Watermark) -> Result<u64, WatermarkShape> {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr as SqlExpr};
    let shape = || WatermarkShape { column: wm.column.clone(), expr: wm.expr.to_string() };
    match wm.expr.as_ref() {
        SqlExpr::Identifier(i) if normalize(i) == wm.column => Ok(0),
        SqlExpr::BinaryOp { left, op: BinaryOperator::Minus, right } => {
            let SqlExpr::Identifier(i) = left.as_ref() else { return Err(shape()) };
            if normalize(i) != wm.column {
                return Err(shape());
            }
            crate::units::interval_ms(right).and_then(|ms| u64::try_from(ms).ok()).ok_or_else(shape)
        }
        _ => Err(shape()),
    }
}

/// `freshness_warn`, `freshness_error` (durations) and `freshness_column` (a declared
/// timestamp or date column; without it the files' modification times count).
fn freshness(
    def: &SourceDef,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<Option<kiln_data::source::Freshness>, ControlError> {
    let option_error = |at: &Location, message: String| ControlError::Option { at: at.clone(), message };
    let duration = |key: &str| -> Result<Option<std::time::Duration>, ControlError> {
        match def.options.get(key) {
            None => Ok(None),
            Some((v, at)) => crate::units::parse_duration(v)
                .map(Some)
                .ok_or_else(|| option_error(at, format!("{key} = '{v}': a duration such as '6 hours' or '3 days'"))),
        }
    };
    let (warn, error) = (duration("freshness_warn")?, duration("freshness_error")?);
    let column = match def.options.get("freshness_column") {
        None => None,
        Some((c, at)) => {
            let name = c.to_lowercase();
            let field = schema
                .field_with_name(&name)
                .map_err(|_| option_error(at, format!("freshness_column = '{c}': no such declared column")))?;
            use datafusion::arrow::datatypes::DataType;
            if !matches!(field.data_type(), DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64) {
                return Err(option_error(
                    at,
                    format!("freshness_column = '{c}': a timestamp or date column (it is {})", field.data_type()),
                ));
            }
            Some(name)
        }
    };
    if warn.is_none() && error.is_none() {
        if let Some((_, at)) = def.options.get("freshness_column") {
            return Err(option_error(at, "freshness_column needs freshness_warn or freshness_error".into()));
        }
        return Ok(None);
    }
    Ok(Some(kiln_data::source::Freshness { warn, error, column }))
}
