//! Every identity Kiln computes: build ids and the versions and fingerprints they are made
//! of, each a sha256 over a documented text that starts with its own domain tag
//! `kiln.<scheme>.v<version>`, so no two schemes can ever produce the same digest from the
//! same bytes, and a change to one encoding is a visible version bump.
//!
//! | scheme | tag | what it identifies |
//! | --- | --- | --- |
//! | [`build_id`] | `kiln.build.v1` | one build of a product: its fingerprints and upstream versions |
//! | [`query_fp`] | `kiln.query.v1` (in the canonical text itself) | what a query computes (kiln-control's canonical plan) |
//! | [`runtime_fp`] | `kiln.runtime.v1` | the semantic settings of a profile |
//! | [`layout_fp`] | `kiln.layout.v1` | a dataset's schema plus how its files are laid out (its `schema_fp` when it has a layout) |
//! | [`row_shape_fp`] | `kiln.row_shape.v1` | what decides a product's rows (its canonical plan without column-level items) |
//! | [`column_def_fp`] | `kiln.column_def.v1` | one output column's definition: its identity and canonical type |
//! | [`content_rows`] | `kiln.rows.v1` | the version of a build's rows |
//! | [`content_column`] | `kiln.column.v1` | the version of one column's values in a build |
//! | [`scoped_upstream`] | `kiln.upstream.v1` | the version of exactly what a downstream product reads from an upstream |
//! | [`compile_key`] | `kiln.compile.v1` | a compile-cache entry |
//! | [`settings_fp`] | `kiln.settings.v1` | every explicit setting of a profile (compile-cache keys only) |
//! | [`ingest_batch_id`] | `kiln.ingest.v1` | one committed micro-batch of an ingest product |
//! | [`checkpoint_id`] | `kiln.stream.v1` | one checkpoint of a materialized view |
//! | [`side_build_id`] | `kiln.side.v1` | a side dataset's build (`<view>__late`, `<stream>__rejected`) at a checkpoint |
//! | [`source_definition`] | `kiln.http_source.v1`, `kiln.kafka_source.v1`, `kiln.log_source.v1`, `kiln.files_stream.v1` | what a micro-batch source's records mean |
//! | [`listing_version`] | `kiln.source_version.v1` | a file source's data: its listing |
//! | [`source_rejects`] | `kiln.source_rejects.v1` | the build of a file source's rejected records (`<source>__rejected`) |
//!
//! Two fingerprints live in the crates that own their inputs, with the same discipline
//! (tag, version, pinned golden test): `schema_fp` in kiln-contracts (`kiln.schema.v1`,
//! the canonical schema encoding) and `func_fp` in kiln-functions (`kiln.functions.v1`).
//!
//! Every text is a sequence of lines; fields that could contain a newline (names, paths,
//! option text) are length-prefixed or come from encodings that escape it. Each function
//! documents its exact text, and `tests/it/identity.rs` pins each against that text hashed
//! independently.

use std::collections::BTreeMap;

use crate::plan::{BuildFingerprints, ContentVersions, ProductShape, sha256_hex};

/// A domain-separated text under construction: the tag line, then the scheme's lines.
struct Text(String);

impl Text {
    fn new(tag: &str) -> Self {
        let mut s = String::with_capacity(256);
        s.push_str(tag);
        s.push('\n');
        Self(s)
    }

    /// Appends one line made of `parts`.
    fn line(&mut self, parts: &[&str]) -> &mut Self {
        for p in parts {
            self.0.push_str(p);
        }
        self.0.push('\n');
        self
    }

    fn digest(&self) -> String {
        sha256_hex(self.0.as_bytes())
    }
}

/// Version of the build-id encoding.
pub const BUILD_ID_VERSION: u32 = 1;

/// The build id of `product` from its fingerprints:
///
/// ```text
/// kiln.build.v1\n product\n schema_fp\n query_fp\n runtime_fp\n func_fp\n
/// ("upstream " name " " version "\n")*        sorted by name
/// ```
///
/// where an upstream's version is a source's data version, a stream's definition version,
/// or the version of exactly the columns the product reads from an upstream product
/// ([`scoped_upstream`]).
pub fn build_id(product: &str, fps: &BuildFingerprints) -> String {
    let mut t = Text::new("kiln.build.v1");
    t.line(&[product]).line(&[&fps.schema_fp]).line(&[&fps.query_fp]).line(&[&fps.runtime_fp]).line(&[&fps.func_fp]);
    for (name, version) in &fps.upstream {
        t.line(&["upstream ", name, " ", version]);
    }
    t.digest()
}

/// `query_fp`: sha256 of a canonical plan's encoding ([`crate::CanonicalPlan::encode`]),
/// which starts with its own tag line `kiln.query.v<CANONICAL_PLAN_VERSION>`.
pub fn query_fp(canonical_encoding: &str) -> String {
    sha256_hex(canonical_encoding.as_bytes())
}

/// Version of the runtime fingerprint encoding.
pub const RUNTIME_FP_VERSION: u32 = 1;

/// `runtime_fp` over the semantic settings of a profile (defaults included):
///
/// ```text
/// kiln.runtime.v1\n ("key=value\n")*      in key order
/// ```
pub fn runtime_fp(semantic: &BTreeMap<String, String>) -> String {
    let mut t = Text::new("kiln.runtime.v1");
    for (key, value) in semantic {
        t.line(&[key, "=", value]);
    }
    t.digest()
}

/// The `schema_fp` of a dataset whose files have a layout besides their columns (Hive
/// partitioning, Parquet write options, producer order): its layout lines (`partition c`,
/// `write key=value`, `tier 2`, in that order, each ending with a newline) after the
/// schema's canonical fingerprint:
///
/// ```text
/// kiln.layout.v1\n schema_fp\n layout
/// ```
///
/// A dataset without a layout keeps its plain schema fingerprint.
pub fn layout_fp(schema_fp: &str, layout: &str) -> String {
    if layout.is_empty() {
        return schema_fp.to_owned();
    }
    let mut t = Text::new("kiln.layout.v1");
    t.line(&[schema_fp]);
    t.0.push_str(layout);
    t.digest()
}

/// What decides a product's rows: its canonical plan's encoding with the column-level
/// items removed (kiln-control's `Analysis::shape`):
///
/// ```text
/// kiln.row_shape.v1\n skeleton_encoding
/// ```
pub fn row_shape_fp(skeleton_encoding: &str) -> String {
    let mut t = Text::new("kiln.row_shape.v1");
    t.0.push_str(skeleton_encoding);
    t.digest()
}

/// One output column's definition: its identity in the canonical plan and its type in
/// kiln-contracts' canonical encoding (`kiln_contracts::fingerprint::canonical_type`):
///
/// ```text
/// kiln.column_def.v1\n identity\n type
/// ```
pub fn column_def_fp(identity: &str, canonical_type: &str) -> String {
    let mut t = Text::new("kiln.column_def.v1");
    t.line(&[identity]).line(&[canonical_type]);
    t.digest()
}

/// The content versions of a build of a product with `shape`, given each input's content
/// versions (`upstream`; a source's are its data version as `rows` and no columns):
///
/// ```text
/// rows(P)   = sha256(kiln.rows.v1\n rows_fp\n runtime_fp\n func_fp\n
///                    ("table " t " " rows(t) "\n")*  ("ref " t.c " " col(t.c) "\n")*)
/// col(P, c) = sha256(kiln.column.v1\n rows(P)\n fp(c)\n ("ref " t.c " " col(t.c) "\n")*)
/// ```
///
/// The first `ref` list is every column that shapes rows (filter, join, group, order),
/// sorted and distinct; the second the columns `c` is computed from or shaped by;
/// `col(t.c)` is the upstream's column version (its rows version when it has none).
pub fn content_versions<'a>(
    shape: &ProductShape,
    runtime_fp: &str,
    func_fp: &str,
    upstream: &dyn Fn(&str) -> Option<&'a ContentVersions>,
) -> ContentVersions {
    let col = |b: &crate::BaseColumn| -> &'a str {
        upstream(&b.table).map_or("", |v| v.columns.get(&b.column).unwrap_or(&v.rows).as_str())
    };
    let tables: Vec<(&str, &str)> =
        shape.tables.iter().map(|t| (t.as_str(), upstream(t).map_or("", |v| v.rows.as_str()))).collect();
    let mut row_refs: Vec<&crate::BaseColumn> = shape.columns.iter().flat_map(|c| &c.others).collect();
    row_refs.sort();
    row_refs.dedup();
    let row_refs: Vec<(String, &str)> =
        row_refs.into_iter().map(|b| (format!("{}.{}", b.table, b.column), col(b))).collect();
    let rows = content_rows(&shape.rows_fp, runtime_fp, func_fp, &tables, &row_refs);
    let columns = shape
        .columns
        .iter()
        .map(|c| {
            let mut refs: Vec<&crate::BaseColumn> = c.values.iter().chain(&c.others).collect();
            refs.sort();
            refs.dedup();
            let refs: Vec<(String, &str)> =
                refs.into_iter().map(|b| (format!("{}.{}", b.table, b.column), col(b))).collect();
            (c.name.clone(), content_column(&rows, &c.fp, &refs))
        })
        .collect();
    ContentVersions { rows, columns }
}

/// `rows(P)` of [`content_versions`]: `tables` are (input, its rows version), `refs`
/// (`table.column`, its column version), each in the order given.
pub fn content_rows(
    rows_fp: &str,
    runtime_fp: &str,
    func_fp: &str,
    tables: &[(&str, &str)],
    refs: &[(String, &str)],
) -> String {
    let mut t = Text::new("kiln.rows.v1");
    t.line(&[rows_fp]).line(&[runtime_fp]).line(&[func_fp]);
    for (table, version) in tables {
        t.line(&["table ", table, " ", version]);
    }
    for (column, version) in refs {
        t.line(&["ref ", column, " ", version]);
    }
    t.digest()
}

/// `col(P, c)` of [`content_versions`].
pub fn content_column(rows: &str, column_fp: &str, refs: &[(String, &str)]) -> String {
    let mut t = Text::new("kiln.column.v1");
    t.line(&[rows]).line(&[column_fp]);
    for (column, version) in refs {
        t.line(&["ref ", column, " ", version]);
    }
    t.digest()
}

/// The version of what a downstream product reads from an upstream product with content
/// `upstream`: its rows and the `used` columns, in the order given (sorted by the caller):
///
/// ```text
/// kiln.upstream.v1\n rows\n (c " " col(c) "\n")*
/// ```
pub fn scoped_upstream(upstream: &ContentVersions, used: &[String]) -> String {
    let mut t = Text::new("kiln.upstream.v1");
    t.line(&[&upstream.rows]);
    for c in used {
        t.line(&[c, " ", upstream.columns.get(c).unwrap_or(&upstream.rows)]);
    }
    t.digest()
}

/// The key of a compile result in the compile cache:
///
/// ```text
/// kiln.compile.v1\n kiln_version\n settings_fp\n functions_fp\n statement_fp\n
/// ("input " name " " schema_fp "\n")*       sorted by name
/// ```
///
/// Compiling is a function of exactly these, so a hit can stand in for planning.
pub fn compile_key(
    kiln_version: &str,
    settings_fp: &str,
    functions_fp: &str,
    statement_fp: &str,
    inputs: &[(String, String)],
) -> String {
    let mut sorted = inputs.to_vec();
    sorted.sort();
    let mut t = Text::new("kiln.compile.v1");
    t.line(&[kiln_version]).line(&[settings_fp]).line(&[functions_fp]).line(&[statement_fp]);
    for (name, fp) in &sorted {
        t.line(&["input ", name, " ", fp]);
    }
    t.digest()
}

/// Every explicit setting of a profile, semantic or not (optimizer switches change plans):
///
/// ```text
/// kiln.settings.v1\n ("key=value\n")*       in key order
/// ```
pub fn settings_fp(settings: &BTreeMap<String, String>) -> String {
    let mut t = Text::new("kiln.settings.v1");
    for (key, value) in settings {
        t.line(&[key, "=", value]);
    }
    t.digest()
}

/// The build id of one committed micro-batch of an ingest product whose definition (its
/// own build id as of its inputs' definitions) is `definition`, read up to `url`/`skip`,
/// batch number `batch`:
///
/// ```text
/// kiln.ingest.v1\n definition\n url\n skip\n batch\n
/// ```
pub fn ingest_batch_id(definition: &str, url: &str, skip: u64, batch: u64) -> String {
    let mut t = Text::new("kiln.ingest.v1");
    t.line(&[definition]).line(&[url]).line(&[&skip.to_string()]).line(&[&batch.to_string()]);
    t.digest()
}

/// The build id of a materialized view's checkpoint: its definition and the source
/// position the checkpoint commits (the position's JSON, as serialized in the manifest):
///
/// ```text
/// kiln.stream.v1\n definition\n position_json\n
/// ```
pub fn checkpoint_id(definition: &str, position_json: &str) -> String {
    let mut t = Text::new("kiln.stream.v1");
    t.line(&[definition]).line(&[position_json]);
    t.digest()
}

/// The build id of side dataset `dataset` written by the checkpoint `checkpoint_id`:
///
/// ```text
/// kiln.side.v1\n checkpoint_id\n dataset\n
/// ```
pub fn side_build_id(checkpoint_id: &str, dataset: &str) -> String {
    let mut t = Text::new("kiln.side.v1");
    t.line(&[checkpoint_id]).line(&[dataset]);
    t.digest()
}

/// The connector of a micro-batch source, which names its definition scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Http,
    Kafka,
    Log,
    FilesStream,
}

impl SourceKind {
    /// The scheme's tag.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Http => "kiln.http_source.v1",
            Self::Kafka => "kiln.kafka_source.v1",
            Self::Log => "kiln.log_source.v1",
            Self::FilesStream => "kiln.files_stream.v1",
        }
    }
}

/// A micro-batch source's definition version: what its records mean, not how fast they
/// are read. `text` is the source's own canonical description (each source documents it;
/// every line ends with a newline):
///
/// ```text
/// <kind tag>\n schema_fp\n text
/// ```
pub fn source_definition(kind: SourceKind, schema_fp: &str, text: &str) -> String {
    let mut t = Text::new(kind.tag());
    t.line(&[schema_fp]);
    t.0.push_str(text);
    t.digest()
}

/// A file source's data version from its listing: (relative path, size, modification time
/// in ns), sorted by the caller; paths are length-prefixed:
///
/// ```text
/// kiln.source_version.v1\n (len ":" path " " size " " mtime_ns "\n")*
/// ```
pub fn listing_version(entries: &[(String, u64, u128)]) -> String {
    let mut t = Text::new("kiln.source_version.v1");
    for (path, size, mtime) in entries {
        t.line(&[&path.len().to_string(), ":", path, " ", &size.to_string(), " ", &mtime.to_string()]);
    }
    t.digest()
}

/// The build id of a file source's rejected records (`<source>__rejected`): what the
/// checked reader set aside depends on the declared schema, the files (the data
/// version), how they are read (format, codec) and the reader's rules (`reader`, bumped
/// when they change):
///
/// ```text
/// kiln.source_rejects.v1\n schema_fp\n data_version\n read\n reader\n
/// ```
pub fn source_rejects(schema_fp: &str, data_version: &str, read: &str, reader: u32) -> String {
    let mut t = Text::new("kiln.source_rejects.v1");
    t.line(&[schema_fp]);
    t.line(&[data_version]);
    t.line(&[read]);
    t.line(&[&reader.to_string()]);
    t.digest()
}
