//! `kiln build`, `kiln plan`, `kiln lineage`: compile and decide (control) -> execute and
//! write (data) -> record (artifact).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use datafusion::common::config::TableParquetOptions;
use datafusion::parquet::file::properties::WriterPropertiesBuilder;
use datafusion::physical_plan::display::DisplayableExecutionPlan;
use kiln_artifact::plan::{BUILD_RECORD_VERSION, REPORT_FORMAT_VERSION};
use kiln_artifact::{
    Action, ArtifactStore, BuildFingerprints, BuildPlans, BuildRecord, CachedCompile, CompileCache, ContentVersions,
    Decision, Lineage, Manifest, PlanReport, ProductPlan, ProductRun, Reason, RunSummary, TelemetryEvent,
};
use kiln_control::compiler::{CompiledProduct, build_id};
use kiln_control::dag::{Graph, NodeKind};
use kiln_control::decision::{content_versions, decide, scoped_version};
use kiln_control::dialect::Statement;
use kiln_control::{ControlError, Project, RuntimeProfile, Substrate};
use kiln_data::{Warehouse, WriteProgress, WriteSpec, write_dataset};

use crate::KilnError;

/// What to build and how.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// A selection (`name`, `+name`, `name+`); all products when `None`.
    pub select: Option<String>,
    /// A profile name; kiln.toml's `[profile] default` when `None`.
    pub profile: Option<String>,
    /// `--set key=value` overrides, applied last.
    pub settings: Vec<(String, String)>,
}

/// Progress of a build, for whoever draws it.
#[derive(Debug)]
pub enum Event {
    /// Example data is being generated (first build only).
    Generating {
        scale_factor: f64,
    },
    Generated {
        rows: u64,
        seconds: f64,
    },
    /// The products to build, in order.
    Planned {
        products: Vec<String>,
    },
    ProductStarted {
        product: String,
        progress: Arc<WriteProgress>,
    },
    ProductFinished(ProductRun),
    /// Something the user should know that does not fail the build.
    Warning(String),
    /// `kiln stream`: each view's progress, about once a second.
    StreamProgress(Vec<crate::stream::ViewStatus>),
}

/// Receives build events; implemented by the CLI's progress display.
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
}

/// An observer that ignores everything (library use, tests).
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&self, _: Event) {}
}

/// The outcome of a build.
#[derive(Debug)]
pub struct BuildReport {
    pub summary: RunSummary,
    /// Problems outside any one product (files that do not parse, duplicate definitions);
    /// also in `summary.errors` as text.
    pub problems: Vec<ControlError>,
}

impl BuildReport {
    pub fn failed(&self) -> impl Iterator<Item = &ProductRun> {
        self.summary.products.iter().filter(|p| p.action == Action::Failed)
    }
}

/// A compiled project: everything `build`, `plan` and `lineage` share.
pub(crate) struct Session {
    pub(crate) project: Project,
    /// The project's graph (moved out of `project`, shared with the command loops).
    pub(crate) graph: Arc<Graph>,
    /// Problems outside any one product (files that do not parse, duplicates).
    pub(crate) problems: Vec<ControlError>,
    pub(crate) profile: RuntimeProfile,
    pub(crate) warehouse: Warehouse,
    pub(crate) substrate: Substrate,
    pub(crate) store: ArtifactStore,
    pub(crate) order: Vec<usize>,
    pub(crate) selected: BTreeSet<usize>,
    /// Products and views compiled in this run.
    pub(crate) compiled: HashMap<usize, CompiledProduct>,
    /// Products and views whose compile result came from the compile cache (compiled on
    /// demand when a decision or an execution needs the plan).
    pub(crate) cached: HashMap<usize, CachedCompile>,
    /// Cached products whose table is not registered yet (see `ensure_registered`).
    pub(crate) unregistered: BTreeSet<usize>,
    /// Whether tables of cached products are registered only on demand (nothing executes).
    pub(crate) lazy: bool,
    /// Node -> its version as an upstream: a source's data version, an unselected product's
    /// committed build id, and (filled in as they are decided) selected products' build ids.
    pub(crate) versions: HashMap<usize, String>,
    /// Product -> the content versions of its build (fresh, built, or as planned; for an
    /// unselected product, its committed build's).
    pub(crate) content: HashMap<usize, ContentVersions>,
    /// Product -> seconds spent compiling it in this run (absent for cache hits).
    pub(crate) compile_seconds: HashMap<usize, f64>,
    /// Node -> why it cannot be built.
    pub(crate) failed: HashMap<usize, String>,
    /// Source columns read with a wider type than declared (permissive evolution).
    pub(crate) promotions: Vec<kiln_artifact::SchemaPromotion>,
}

/// What a session needs beyond compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Compile only (lineage).
    Plans,
    /// Also data versions and committed upstream builds (plan).
    Versions,
    /// Also generated example data (build).
    Data,
}

impl Session {
    /// Loads and compiles a project. Project-level problems (no project, syntax errors,
    /// unknown tables, cycles, bad profiles) are an `Err`; a product or source that does
    /// not compile is recorded in `failed` with its dependents, and the rest go on.
    pub(crate) async fn open(
        dir: &Path,
        options: &BuildOptions,
        need: Need,
        observer: &dyn Observer,
    ) -> Result<Self, KilnError> {
        let mut project = Project::load(dir)?;
        let problems = std::mem::take(&mut project.problems);
        let config = &project.config;
        let profile_name = options.profile.clone().unwrap_or_else(|| config.profile.default.clone());
        let profile = RuntimeProfile::resolve(&profile_name, &config.profiles, &options.settings)?;
        if need == Need::Data
            && let Some(tpch) = &config.generate.tpch
        {
            let out = project.root.join(&tpch.out);
            if !kiln_data::tpch::is_generated(&out, tpch.scale_factor) {
                observer.event(Event::Generating { scale_factor: tpch.scale_factor });
                let t = Instant::now();
                let sf = tpch.scale_factor;
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
                let rows = tokio::task::spawn_blocking(move || kiln_data::tpch::generate(&out, sf, &[], threads))
                    .await
                    .map_err(|e| KilnError::Usage(format!("tpch generation failed: {e}")))??;
                observer.event(Event::Generated { rows, seconds: t.elapsed().as_secs_f64() });
            }
        }

        let warehouse = Warehouse::open(&config.storage.warehouse, &project.root)?;
        let secrets = config.resolve_secrets();
        if need == Need::Data {
            for name in secrets.fallbacks() {
                observer.event(Event::Warning(format!(
                    "secret `{name}` uses its fallback value from kiln.toml; set its environment variable outside development"
                )));
            }
        }
        let functions = kiln_functions::Registry::builtin(secrets);
        let substrate = Substrate::new(&profile, warehouse.clone(), &project.root, functions)?;
        let store = ArtifactStore::open(&config.storage.artifacts, &project.root)?;
        let graph = Arc::new(std::mem::take(&mut project.graph));
        let order = graph.order()?;
        let selected: BTreeSet<usize> = match &options.select {
            Some(s) => graph.select(s)?,
            None => (0..graph.nodes.len()).collect(),
        };
        let mut session = Self {
            project,
            graph,
            problems,
            profile,
            warehouse,
            substrate,
            store,
            order,
            selected,
            compiled: HashMap::new(),
            cached: HashMap::new(),
            unregistered: BTreeSet::new(),
            lazy: need != Need::Data,
            versions: HashMap::new(),
            content: HashMap::new(),
            compile_seconds: HashMap::new(),
            failed: HashMap::new(),
            promotions: Vec::new(),
        };
        session.compile_all(need).await;
        if need == Need::Data {
            for p in &session.promotions {
                observer.event(Event::Warning(format!(
                    "source `{}`: column `{}` declared {} is read as {}, the type {} holds (schema_evolution = 'permissive')",
                    p.source, p.column, p.declared, p.promoted, p.file
                )));
            }
        }
        if need != Need::Plans {
            session.bind_unselected().await?;
        }
        Ok(session)
    }

    /// Compiles every node in order (unselected products too: downstream plans need their
    /// tables). A node that fails fails its dependents. A product whose compile key is in
    /// the compile cache is not compiled (nor even parsed); when nothing will execute
    /// (`lazy`), its table is not registered either until a compile downstream needs it.
    async fn compile_all(&mut self, need: Need) {
        let mut old_cache = self.store.compile_cache();
        let old_len = old_cache.entries.len();
        let mut new_cache = CompileCache { format_version: old_cache.format_version, entries: Default::default() };
        // Hits are moved out of the old cache into `cached`; their keys are kept here and
        // the entries cloned back only if the cache must be rewritten.
        let mut used_keys: Vec<(String, usize)> = Vec::new();
        let mut cache_changed = false;
        // Every registered node's schema fingerprint: the inputs' part of compile keys.
        let mut schema_fps: HashMap<usize, String> = HashMap::new();
        let graph = Arc::clone(&self.graph);
        let order = self.order.clone();
        for i in order {
            let node = &graph.nodes[i];
            if let Some(&d) = node.deps.iter().find(|d| self.failed.contains_key(d)) {
                // A source's problem is the root cause the user needs to see.
                let up = &graph.nodes[d];
                let reason = match up.kind {
                    NodeKind::Source | NodeKind::Stream => format!("source `{}`: {}", up.name, self.failed[&d]),
                    NodeKind::Product | NodeKind::View => format!("upstream `{}` failed", up.name),
                };
                self.failed.insert(i, reason);
                continue;
            }
            if let Some(message) = &node.broken {
                self.failed.insert(i, message.clone());
                continue;
            }
            let (fi, si) = node.def;
            let mut key = None;
            if node.kind == NodeKind::Product {
                // A batch product cannot read an unbounded input.
                let streaming = node
                    .deps
                    .iter()
                    .map(|&d| &graph.nodes[d])
                    .find(|d| matches!(d.kind, NodeKind::Stream | NodeKind::View));
                if let Some(up) = streaming {
                    let kind = if up.kind == NodeKind::Stream { "stream" } else { "materialized view" };
                    self.failed.insert(
                        i,
                        format!(
                            "{}: product `{}` reads {kind} `{}`; products read sources and products, and `kiln stream` runs streams and materialized views",
                            node.at, node.name, up.name
                        ),
                    );
                    continue;
                }
                // The compile cache, before the statement is even parsed.
                let statement_fp = format!("{}:{si}", self.project.files[fi].fp);
                let inputs: Vec<(String, String)> = node
                    .deps
                    .iter()
                    .map(|&d| (graph.nodes[d].name.clone(), schema_fps.get(&d).cloned().unwrap_or_default()))
                    .collect();
                let k = self.substrate.compile_key(&statement_fp, &inputs);
                if let Some(entry) = old_cache.entries.remove(&k) {
                    schema_fps.insert(i, entry.schema_fp.clone());
                    used_keys.push((k, i));
                    self.cached.insert(i, entry);
                    self.unregistered.insert(i);
                    if !self.lazy
                        && let Err(e) = self.ensure_registered(i).await
                    {
                        self.failed.insert(i, e);
                    }
                    continue;
                }
                key = Some(k);
            }
            if matches!(node.kind, NodeKind::Product | NodeKind::View) {
                for &d in &node.deps {
                    if let Err(e) = self.ensure_registered(d).await {
                        self.failed.insert(d, e);
                    }
                }
            }
            let statement = match self.project.files[fi].statement(si) {
                Ok(statement) => statement,
                Err(e) => {
                    self.failed.insert(i, e.to_string());
                    continue;
                }
            };
            let result: Result<(), String> = match statement {
                Statement::Source(def) => match self.substrate.register_source(def) {
                    Ok(source) => {
                        if let kiln_control::CompiledSource::Files(f) = &source {
                            self.promotions.extend(f.promotions.iter().map(|p| kiln_artifact::SchemaPromotion {
                                source: f.name.clone(),
                                column: p.column.clone(),
                                declared: p.declared.clone(),
                                promoted: p.promoted.clone(),
                                file: p.file.clone(),
                            }));
                        }
                        schema_fps.insert(i, kiln_contracts::schema_fingerprint(source.schema()));
                        match source.data_version() {
                            _ if need == Need::Plans => Ok(()),
                            Ok(version) => {
                                let content = ContentVersions { rows: version.clone(), columns: Default::default() };
                                self.content.insert(i, content);
                                self.versions.insert(i, version);
                                Ok(())
                            }
                            Err(e) => {
                                let hint = if self.project.config.generate.tpch.is_some() && need != Need::Data {
                                    " (`kiln build` generates the example data)"
                                } else {
                                    ""
                                };
                                let message = format!("{e}{hint}");
                                self.problems.push(ControlError::Source {
                                    at: def.at.clone(),
                                    source_name: def.name.clone(),
                                    message: message.clone(),
                                });
                                Err(message)
                            }
                        }
                    }
                    Err(e) => {
                        // A source is not a product line of the summary: its error is a
                        // project problem (printed with its location; exit 1), and the
                        // products reading it are skipped.
                        let message = e.to_string();
                        self.problems.push(e);
                        Err(message)
                    }
                },
                Statement::Product(def) => match timed(self.substrate.compile_product(def), |s| {
                    self.compile_seconds.insert(i, s);
                })
                .await
                {
                    Ok(c) => {
                        schema_fps.insert(i, c.schema_fp.clone());
                        if let Some(key) = key.take() {
                            cache_changed = true;
                            new_cache.entries.insert(key, cache_entry(&c));
                        }
                        self.compiled.insert(i, c);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
                Statement::Stream(def) => match self.substrate.register_stream(def) {
                    Ok(stream) => {
                        if let Some((source, _)) = self.substrate.micro_batch_source(&stream.name) {
                            schema_fps.insert(i, kiln_contracts::schema_fingerprint(source.schema()));
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let message = e.to_string();
                        self.problems.push(e);
                        Err(message)
                    }
                },
                Statement::View(def) => match self.substrate.compile_view(def).await {
                    Ok(c) => {
                        schema_fps.insert(i, c.schema_fp.clone());
                        self.compiled.insert(i, c);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(e) = result {
                self.failed.insert(i, e);
            }
        }
        if cache_changed || used_keys.len() != old_len {
            for (key, i) in used_keys {
                if let Some(entry) = self.cached.get(&i) {
                    new_cache.entries.insert(key, entry.clone());
                }
            }
            // A cache is an optimization: failing to write it must not fail the run.
            let _ = self.store.put_compile_cache(&new_cache);
        }
    }

    /// Unselected upstream products are read from their committed builds.
    async fn bind_unselected(&mut self) -> Result<(), KilnError> {
        for i in self.order.clone() {
            let node = &self.graph.nodes[i];
            let known = self.compiled.contains_key(&i) || self.cached.contains_key(&i);
            if node.kind != NodeKind::Product || self.selected.contains(&i) || !known {
                continue;
            }
            match self.warehouse.current(&node.name).await? {
                Some(manifest) => {
                    if let Some(table) = self.substrate.product_table(&node.name) {
                        table.bind(&self.warehouse, &manifest)?;
                    }
                    self.record_committed(i, &manifest);
                }
                None => {
                    let message =
                        format!("`{}` is not selected and has no committed build (select it with +)", node.name);
                    self.failed.insert(i, message);
                }
            }
        }
        Ok(())
    }

    /// Records product `i`'s committed build as what downstream build ids read: its
    /// content versions (a build recorded before they were kept stands for its build id)
    /// and its build id.
    pub(crate) fn record_committed(&mut self, i: usize, manifest: &Manifest) {
        let content = manifest
            .content
            .clone()
            .unwrap_or_else(|| ContentVersions { rows: manifest.build_id.clone(), columns: Default::default() });
        self.content.insert(i, content);
        self.versions.insert(i, manifest.build_id.clone());
    }

    /// Registers the table of cached product `i` if it is not yet (its schema decoded from
    /// the cache entry, or, if that fails, by compiling it).
    pub(crate) async fn ensure_registered(&mut self, i: usize) -> Result<(), String> {
        if !self.unregistered.remove(&i) {
            return Ok(());
        }
        let Some(entry) = self.cached.get(&i) else { return Ok(()) };
        let schema = serde_json::from_str::<serde_json::Value>(&entry.schema)
            .ok()
            .and_then(|v| kiln_contracts::Contract::from_json(&v).ok())
            .map(|c| c.schema)
            .filter(|s| kiln_contracts::schema_fingerprint(s) == entry.schema_fp);
        match schema {
            Some(schema) => {
                self.substrate.register_product_schema(&self.graph.nodes[i].name, schema).map_err(|e| e.to_string())
            }
            None => Box::pin(self.ensure_compiled(i)).await,
        }
    }

    /// The index of product (or view) `name`, or a usage error listing the products.
    pub(crate) fn product_index(&self, name: &str) -> Result<usize, KilnError> {
        let queries = |n: &&kiln_control::dag::Node| matches!(n.kind, NodeKind::Product | NodeKind::View);
        match self.graph.nodes.iter().position(|n| n.name == name && queries(&n)) {
            Some(i) => Ok(i),
            None => {
                let known: Vec<&str> = self.graph.nodes.iter().filter(queries).map(|n| n.name.as_str()).collect();
                Err(KilnError::Usage(format!("no product `{name}` (products: {})", known.join(", "))))
            }
        }
    }

    /// Compiles product `i` for inspection, or says why it cannot be.
    pub(crate) async fn compiled_product(&mut self, i: usize) -> Result<&CompiledProduct, KilnError> {
        let name = self.graph.nodes[i].name.clone();
        if let Some(reason) = self.failed.get(&i) {
            return Err(KilnError::Product { product: name, message: reason.clone() });
        }
        self.ensure_compiled(i).await.map_err(|message| KilnError::Product { product: name.clone(), message })?;
        self.compiled.get(&i).ok_or(KilnError::Product { product: name, message: "not compiled".into() })
    }

    /// Binds every product's table to its committed build (for reading: `query`,
    /// `explain --analyze`); products never built stay unreadable.
    pub(crate) async fn bind_all_committed(&mut self) -> Result<(), KilnError> {
        let products: Vec<usize> = self
            .order
            .iter()
            .copied()
            .filter(|&i| matches!(self.graph.nodes[i].kind, NodeKind::Product | NodeKind::View))
            .collect();
        let currents = self.currents(&products).await?;
        for &i in &products {
            let Some(Some(manifest)) = currents.get(&i) else { continue };
            if self.ensure_registered(i).await.is_err() {
                continue;
            }
            if let Some(table) = self.substrate.product_table(&self.graph.nodes[i].name) {
                table.bind(&self.warehouse, manifest)?;
            }
        }
        self.bind_side_datasets().await
    }

    /// Registers and binds the committed side datasets: `<product>__rejected`,
    /// `<stream>__rejected` and `<view>__late` (their schemas are Kiln's, not declared).
    async fn bind_side_datasets(&mut self) -> Result<(), KilnError> {
        let exec = |e: datafusion::error::DataFusionError| {
            KilnError::Data(kiln_data::DataError::Execution { context: "side datasets".into(), source: e })
        };
        let rejects = kiln_data::checked::rejects_batch(&[]).map_err(exec)?.schema();
        let mut side = Vec::new();
        for node in &self.graph.nodes {
            match node.kind {
                NodeKind::Product | NodeKind::Stream => {
                    side.push((format!("{}__rejected", node.name), Arc::clone(&rejects)));
                }
                NodeKind::View => {
                    let stream = self
                        .compiled
                        .get(&self.graph.get(&node.name).unwrap_or(usize::MAX))
                        .and_then(|c| c.ingests.clone());
                    if let Some((source, _)) = stream.as_deref().and_then(|s| self.substrate.micro_batch_source(s)) {
                        side.push((format!("{}__late", node.name), crate::stream::late_schema(source.schema())));
                    }
                }
                NodeKind::Source => {}
            }
        }
        let reads = side.into_iter().map(|(name, schema)| {
            let warehouse = self.warehouse.clone();
            async move { warehouse.current(&name).await.map(|m| (name, schema, m)) }
        });
        let found: Vec<_> = futures::stream::iter(reads).buffer_unordered(32).try_collect().await?;
        for (name, schema, manifest) in found {
            let Some(manifest) = manifest else { continue };
            if self.graph.get(&name).is_some() {
                continue; // a user's own product of that name wins
            }
            self.substrate.register_product_schema(&name, schema)?;
            if let Some(table) = self.substrate.product_table(&name) {
                table.bind(&self.warehouse, &manifest)?;
            }
        }
        Ok(())
    }

    /// The selected products, in dependency order.
    fn products(&self) -> Vec<usize> {
        let graph = &self.graph;
        self.order
            .iter()
            .copied()
            .filter(|i| graph.nodes[*i].kind == NodeKind::Product && self.selected.contains(i))
            .collect()
    }

    /// Why product `i` cannot be built now, if it cannot: its own failure or an upstream's.
    fn blocked(&mut self, i: usize) -> Option<(Action, String)> {
        let graph = &self.graph;
        let upstream =
            graph.nodes[i].deps.iter().find(|d| self.failed.contains_key(d)).map(|&d| graph.nodes[d].name.clone());
        if let Some(reason) = self.failed.get(&i) {
            let skipped = upstream.is_some() && !self.compiled.contains_key(&i) && !self.cached.contains_key(&i);
            return Some((if skipped { Action::Skipped } else { Action::Failed }, reason.clone()));
        }
        if let Some(up) = upstream {
            let reason = format!("upstream `{up}` failed");
            self.failed.insert(i, reason.clone());
            return Some((Action::Skipped, reason));
        }
        None
    }

    /// The fingerprints and build id of product `i` (compiled or cached) from its
    /// upstreams' versions: a source's data version, or the version of exactly the columns
    /// it reads from an upstream product (kiln_control::decision::scoped_version).
    pub(crate) fn identity(&self, i: usize) -> Option<(BuildFingerprints, String)> {
        let (name, schema_fp, query_fp, func_fp, shape) = match (self.compiled.get(&i), self.cached.get(&i)) {
            (Some(c), _) => (&c.name, &c.schema_fp, &c.query_fp, &c.func_fp, &c.shape),
            (None, Some(c)) => (&c.product, &c.schema_fp, &c.query_fp, &c.func_fp, &c.shape),
            (None, None) => return None,
        };
        let graph = &self.graph;
        let upstream = graph.nodes[i]
            .deps
            .iter()
            .filter_map(|&d| {
                let up = &graph.nodes[d];
                let version = match up.kind {
                    NodeKind::Product | NodeKind::View => {
                        self.content.get(&d).map(|c| scoped_version(c, &shape.uses(&up.name)))
                    }
                    NodeKind::Source | NodeKind::Stream => self.versions.get(&d).cloned(),
                }?;
                Some((up.name.clone(), version))
            })
            .collect();
        let fps = BuildFingerprints {
            schema_fp: schema_fp.clone(),
            query_fp: query_fp.clone(),
            runtime_fp: self.substrate.runtime_fp().to_owned(),
            func_fp: func_fp.clone(),
            upstream,
        };
        let id = build_id(name, &fps);
        Some((fps, id))
    }

    /// Computes and records the content versions of product `i` as of its inputs now (what
    /// its committed build holds once it is fresh or built).
    fn record_content(&mut self, i: usize) -> Option<ContentVersions> {
        let (func_fp, shape) = match (self.compiled.get(&i), self.cached.get(&i)) {
            (Some(c), _) => (&c.func_fp, &c.shape),
            (None, Some(c)) => (&c.func_fp, &c.shape),
            (None, None) => return None,
        };
        let lookup = |table: &str| self.graph.get(table).and_then(|d| self.content.get(&d));
        let content = content_versions(shape, self.substrate.runtime_fp(), func_fp, &lookup);
        self.content.insert(i, content.clone());
        Some(content)
    }

    /// Compiles product or view `i` if its result came from the cache (a decision or an
    /// execution needs its plan, canonical form or lineage).
    pub(crate) async fn ensure_compiled(&mut self, i: usize) -> Result<(), String> {
        if self.compiled.contains_key(&i) {
            return Ok(());
        }
        let graph = Arc::clone(&self.graph);
        for &d in &graph.nodes[i].deps {
            Box::pin(self.ensure_registered(d)).await?;
        }
        let (fi, si) = graph.nodes[i].def;
        let statement = self.project.files[fi].statement(si).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let compiled = match statement {
            Statement::Product(def) => self.substrate.compile_product(def).await,
            Statement::View(def) => self.substrate.compile_view(def).await,
            _ => return Err("not a product".into()),
        };
        let compiled = compiled.map_err(|e| e.to_string())?;
        self.compile_seconds.insert(i, t.elapsed().as_secs_f64());
        self.cached.remove(&i);
        self.unregistered.remove(&i);
        self.compiled.insert(i, compiled);
        Ok(())
    }

    /// The committed builds of `products`, read concurrently (a manifest changes only when
    /// its own product is built, so reading them up front is exact).
    async fn currents(&self, products: &[usize]) -> Result<HashMap<usize, Option<Manifest>>, KilnError> {
        let reads = products.iter().map(|&i| {
            let (warehouse, name) = (self.warehouse.clone(), self.graph.nodes[i].name.clone());
            async move { warehouse.current(&name).await.map(|m| (i, m)) }
        });
        let all: Vec<_> = futures::stream::iter(reads).buffer_unordered(32).try_collect().await?;
        Ok(all.into_iter().collect())
    }

    /// The decision for product `i` with committed build `current`, compiling it only when
    /// the answer needs its plan (never-built and fresh products are decided from
    /// fingerprints alone).
    pub(crate) async fn decide(&mut self, i: usize, current: Option<Manifest>) -> Result<Decided, KilnError> {
        let Some((fps, id)) = self.identity(i) else { return Ok(Decided::Failed("not compiled".into())) };
        match &current {
            None => return Ok(Decided::Build { fps, id, reasons: vec![Reason::NeverBuilt], current }),
            Some(m) if m.build_id == id => return Ok(Decided::Fresh { fps, id, manifest: m.clone() }),
            Some(_) => {}
        }
        if let Err(e) = self.ensure_compiled(i).await {
            return Ok(Decided::Failed(e));
        }
        let Some((fps, id)) = self.identity(i) else { return Ok(Decided::Failed("not compiled".into())) };
        let Some(product) = self.compiled.get(&i) else { return Ok(Decided::Failed("not compiled".into())) };
        // A changed query is explained by a diff against the committed build's plan.
        let old_fp = current.as_ref().and_then(|m| m.fingerprints.as_ref()).map(|f| f.query_fp.clone());
        let previous = match old_fp {
            Some(old) if old != fps.query_fp => self.store.plan(&old).await.ok().flatten(),
            _ => None,
        };
        let (decision, reasons) = decide(product, &fps, &id, current.as_ref(), previous.as_ref());
        Ok(match (decision, current) {
            (Decision::Fresh, Some(manifest)) => Decided::Fresh { fps, id, manifest },
            (_, current) => Decided::Build { fps, id, reasons, current },
        })
    }
}

/// A product's decision with what the caller needs to act on it.
pub(crate) enum Decided {
    Fresh { fps: BuildFingerprints, id: String, manifest: Manifest },
    Build { fps: BuildFingerprints, id: String, reasons: Vec<Reason>, current: Option<Manifest> },
    Failed(String),
}

fn cache_entry(c: &CompiledProduct) -> CachedCompile {
    let contract = kiln_contracts::Contract::try_new(
        c.name.clone(),
        Arc::clone(&c.schema),
        Vec::new(),
        Vec::new(),
        kiln_contracts::EvolutionPolicy::Strict,
    );
    CachedCompile {
        product: c.name.clone(),
        schema: contract.map(|c| c.to_json().to_string()).unwrap_or_default(),
        schema_fp: c.schema_fp.clone(),
        query_fp: c.query_fp.clone(),
        func_fp: c.func_fp.clone(),
        shape: c.shape.clone(),
    }
}

/// Builds a project: every selected product whose build id differs from its committed
/// build is executed and committed; the others are reported fresh. Project-level problems
/// (no project, syntax errors, unknown tables, cycles) are an `Err`; per-product failures
/// are reported in the summary, with every independent product still built.
pub async fn build(dir: &Path, options: &BuildOptions, observer: &dyn Observer) -> Result<BuildReport, KilnError> {
    let started = Instant::now();
    let mut session = Session::open(dir, options, Need::Data, observer).await?;
    let run_id = new_run_id();
    let products = session.products();
    let graph = Arc::clone(&session.graph);
    observer.event(Event::Planned { products: products.iter().map(|&i| graph.nodes[i].name.clone()).collect() });

    let event = |kind: &str| TelemetryEvent {
        format_version: BUILD_RECORD_VERSION,
        ts_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        run_id: run_id.clone(),
        kind: kind.to_owned(),
        product: None,
        action: None,
        build_id: None,
        fingerprints: None,
        ordering_tier: None,
        rows: None,
        seconds: None,
        error: None,
    };
    // Events go to a writer task (the store is async, emitting is not): it writes what
    // has queued up as one numbered part, and joins the parts into events.jsonl at the end.
    let (events, queue) = tokio::sync::mpsc::unbounded_channel::<TelemetryEvent>();
    let writer = tokio::spawn(write_events(session.store.clone(), run_id.clone(), queue));
    let emit = |e: TelemetryEvent| {
        // The writer only stops when `events` is dropped, below.
        let _ = events.send(e);
    };
    emit(event("run_started"));
    let finished = |i: usize, run: &ProductRun, session: &Session| {
        emit(TelemetryEvent {
            product: Some(run.product.clone()),
            action: Some(format!("{:?}", run.action).to_lowercase()),
            build_id: run.build_id.clone(),
            fingerprints: session.identity(i).map(|(fps, _)| fps),
            ordering_tier: session.compiled.get(&i).map(|c| c.ordering_tier),
            rows: Some(run.rows),
            seconds: Some(run.seconds),
            error: run.error.clone(),
            ..event("product_finished")
        });
        observer.event(Event::ProductFinished(run.clone()));
    };

    // Phase 1, in dependency order: decide every product; fresh and failed ones are done,
    // the others become jobs (compiled, with their content versions recorded).
    let mut currents = session.currents(&products).await?;
    let mut results: HashMap<usize, ProductRun> = HashMap::new();
    let mut jobs: Vec<Job> = Vec::new();
    for &i in &products {
        let node = &graph.nodes[i];
        let t = Instant::now();
        let done = if let Some((action, reason)) = session.blocked(i) {
            Some(product_run(&node.name, action, Some(reason), t))
        } else if let Some(feed) = session.ingest_feed(i) {
            // Ingest commits batch by batch, now, so downstream decisions see its data.
            Some(session.ingest(i, &feed, currents.remove(&i).flatten(), &run_id, observer).await)
        } else {
            match session.decide(i, currents.remove(&i).flatten()).await? {
                Decided::Failed(e) => {
                    session.failed.insert(i, e.clone());
                    Some(product_run(&node.name, Action::Failed, Some(e), t))
                }
                Decided::Fresh { id, manifest, .. } => {
                    if let Some(table) = session.substrate.product_table(&node.name) {
                        table.bind(&session.warehouse, &manifest)?;
                    }
                    session.versions.insert(i, id.clone());
                    session.record_content(i);
                    Some(ProductRun {
                        build_id: Some(id),
                        rows: manifest.totals.rows_written,
                        files: manifest.totals.files,
                        bytes: manifest.totals.bytes,
                        ..product_run(&node.name, Action::Fresh, None, t)
                    })
                }
                Decided::Build { fps, id, reasons, .. } => match session.ensure_compiled(i).await {
                    Err(e) => {
                        session.failed.insert(i, e.clone());
                        Some(product_run(&node.name, Action::Failed, Some(e), t))
                    }
                    Ok(()) => {
                        session.versions.insert(i, id.clone());
                        let content = session.record_content(i);
                        if let Some(product) = session.compiled.get(&i) {
                            session.store.put_plan(&product.canonical).await?;
                        }
                        jobs.push(Job { i, id, fps, reasons, content });
                        None
                    }
                },
            }
        };
        if let Some(run) = done {
            finished(i, &run, &session);
            results.insert(i, run);
        }
    }

    // Phase 2: execute the jobs, independent ones concurrently (up to the profile's
    // kiln.max_parallel_products), each after the jobs it reads from have committed; a job
    // whose upstream job failed is skipped.
    let limit = session.profile.max_parallel_products()?;
    let in_jobs: BTreeSet<usize> = jobs.iter().map(|j| j.i).collect();
    let mut ok: HashMap<usize, bool> = HashMap::new();
    let mut pending: std::collections::VecDeque<Job> = jobs.into();
    let mut running = futures::stream::FuturesUnordered::new();
    let session_ref = &session;
    loop {
        // Start every job whose upstream jobs are done, in dependency order.
        let mut k = 0;
        while k < pending.len() && running.len() < limit {
            let deps: Vec<usize> =
                graph.nodes[pending[k].i].deps.iter().copied().filter(|d| in_jobs.contains(d)).collect();
            if let Some(&bad) = deps.iter().find(|d| ok.get(d) == Some(&false)) {
                let Some(job) = pending.remove(k) else { break };
                let reason = format!("upstream `{}` failed", graph.nodes[bad].name);
                let run = product_run(&graph.nodes[job.i].name, Action::Skipped, Some(reason), Instant::now());
                ok.insert(job.i, false);
                finished(job.i, &run, session_ref);
                results.insert(job.i, run);
                continue;
            }
            if deps.iter().all(|d| ok.get(d) == Some(&true)) {
                let Some(job) = pending.remove(k) else { break };
                running.push(execute(session_ref, job, &run_id, observer));
                continue;
            }
            k += 1;
        }
        let Some((i, run)) = running.next().await else { break };
        ok.insert(i, run.action == Action::Built);
        finished(i, &run, session_ref);
        results.insert(i, run);
    }
    drop(running);
    let runs: Vec<ProductRun> = products.iter().filter_map(|i| results.remove(i)).collect();
    emit(TelemetryEvent { seconds: Some(started.elapsed().as_secs_f64()), ..event("run_finished") });

    let config = &session.project.config;
    let summary = RunSummary {
        format_version: 1,
        run_id: run_id.clone(),
        project: config.project.name.clone(),
        profile: session.profile.name.clone(),
        runtime_fp: session.substrate.runtime_fp().to_owned(),
        errors: session.problems.iter().map(ToString::to_string).collect(),
        products: runs,
        seconds: started.elapsed().as_secs_f64(),
        promotions: session.promotions.clone(),
    };
    drop(events);
    match writer.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => observer.event(Event::Warning(format!("cannot record telemetry events: {e}"))),
        Err(e) => observer.event(Event::Warning(format!("the telemetry writer failed: {e}"))),
    }
    let settings = serde_json::to_vec_pretty(&session.profile.effective()?)
        .map_err(|e| KilnError::Usage(format!("cannot encode settings: {e}")))?;
    session.store.put_run_file(&run_id, "settings.json", settings).await?;
    session.store.put_run_file(&run_id, "run_summary.json", summary.to_json()?).await?;
    Ok(BuildReport { summary, problems: session.problems })
}

/// Writes a run's events as they arrive: everything queued at once becomes one part; when
/// the queue closes, the parts are joined into `events.jsonl`. Returns the first error.
async fn write_events(
    store: ArtifactStore,
    run_id: String,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<TelemetryEvent>,
) -> Result<(), kiln_artifact::ArtifactError> {
    let mut seq = 0u64;
    let mut first_error = None;
    while let Some(event) = queue.recv().await {
        let mut lines = Vec::new();
        let mut push = |e: &TelemetryEvent| {
            if let Ok(line) = serde_json::to_vec(e) {
                lines.extend(line);
                lines.push(b'\n');
            }
        };
        push(&event);
        while let Ok(more) = queue.try_recv() {
            push(&more);
        }
        if let Err(e) = store.put_event_part(&run_id, seq, lines).await {
            first_error.get_or_insert(e);
        }
        seq += 1;
    }
    store.finish_events(&run_id).await?;
    first_error.map_or(Ok(()), Err)
}

/// A product to execute in this build.
pub(crate) struct Job {
    pub(crate) i: usize,
    pub(crate) id: String,
    pub(crate) fps: BuildFingerprints,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) content: Option<ContentVersions>,
}

/// Executes and commits one job, records its build, and returns its line in the summary.
async fn execute(session: &Session, job: Job, run_id: &str, observer: &dyn Observer) -> (usize, ProductRun) {
    let t = Instant::now();
    let name = &session.graph.nodes[job.i].name;
    let Some(product) = session.compiled.get(&job.i) else {
        return (job.i, product_run(name, Action::Failed, Some("not compiled".into()), t));
    };
    let stamp = (job.id.as_str(), &job.fps, job.content.as_ref());
    let outcome = match run_product(&session.substrate, product, stamp, run_id, observer).await {
        Ok(built) => record_build(session, product, &job, run_id, built).await,
        Err(e) => Err(e),
    };
    let run = match outcome {
        Ok((manifest, phases)) => ProductRun {
            build_id: Some(job.id),
            rows: manifest.totals.rows_written,
            files: manifest.totals.files,
            bytes: manifest.totals.bytes,
            phases,
            reasons: job.reasons,
            ..product_run(name, Action::Built, None, t)
        },
        Err(e) => product_run(name, Action::Failed, Some(e.to_string()), t),
    };
    (job.i, run)
}

/// Writes the build record of a committed build; returns its manifest and phase timings.
pub(crate) async fn record_build(
    session: &Session,
    product: &CompiledProduct,
    job: &Job,
    run_id: &str,
    built: Built,
) -> Result<(Manifest, std::collections::BTreeMap<String, f64>), KilnError> {
    let mut phases = built.phases;
    phases.insert("compile".into(), session.compile_seconds.get(&job.i).copied().unwrap_or(0.0));
    let record = BuildRecord {
        format_version: BUILD_RECORD_VERSION,
        product: product.name.clone(),
        build_id: job.id.clone(),
        run_id: run_id.to_owned(),
        status: "committed".into(),
        fingerprints: job.fps.clone(),
        content: built.manifest.content.clone(),
        lineage: product.lineage.clone(),
        manifest: format!("{}/_manifest.json", built.manifest.build_dir),
        ordering_tier: built.manifest.ordering_tier,
        plans: BuildPlans {
            logical: product.logical.display_indent().to_string(),
            optimized: product.plan.display_indent().to_string(),
            physical: built.physical,
            optimized_sql: datafusion::sql::unparser::plan_to_sql(&product.plan).ok().map(|s| s.to_string()),
            query_fp: product.query_fp.clone(),
        },
        operators: built.operators,
        substrait: substrait_blob(session, product).await?,
        phases: phases.clone(),
    };
    session.store.put_build_record(&record).await?;
    Ok((built.manifest, phases))
}

/// With the `substrait` feature, stores the optimized plan as Substrait protobuf bytes, a
/// blob named by its sha256 (a plan the producer cannot express records none).
#[cfg(feature = "substrait")]
async fn substrait_blob(session: &Session, product: &CompiledProduct) -> Result<Option<String>, KilnError> {
    let state = session.substrate.context().state();
    let Ok(plan) = datafusion_substrait::logical_plan::producer::to_substrait_plan(&product.plan, &state) else {
        return Ok(None);
    };
    let bytes = prost::Message::encode_to_vec(plan.as_ref());
    Ok(Some(session.store.put_blob(&bytes).await?))
}

#[cfg(not(feature = "substrait"))]
async fn substrait_blob(_: &Session, _: &CompiledProduct) -> Result<Option<String>, KilnError> {
    Ok(None)
}

/// `kiln plan`: the decisions `build` would take, without executing or writing anything.
pub async fn plan(dir: &Path, options: &BuildOptions) -> Result<PlanReport, KilnError> {
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    let graph = Arc::clone(&session.graph);
    let selected = session.products();
    let mut currents = session.currents(&selected).await?;
    let mut products = Vec::new();
    for i in selected {
        let name = graph.nodes[i].name.clone();
        let failed = |error: String| ProductPlan {
            product: name.clone(),
            decision: Decision::Failed,
            build_id: None,
            fingerprints: None,
            current_build_id: None,
            reasons: Vec::new(),
            error: Some(error),
        };
        let entry = if let Some((_, reason)) = session.blocked(i) {
            failed(reason)
        } else if let Some(feed) = session.ingest_feed(i) {
            match session.plan_ingest(i, &feed, currents.remove(&i).flatten()).await {
                Ok(plan) => plan,
                Err(e) => {
                    session.failed.insert(i, e.clone());
                    failed(e)
                }
            }
        } else {
            match session.decide(i, currents.remove(&i).flatten()).await? {
                Decided::Failed(e) => {
                    session.failed.insert(i, e.clone());
                    failed(e)
                }
                Decided::Fresh { fps, id, manifest } => {
                    session.versions.insert(i, id.clone());
                    session.record_content(i);
                    ProductPlan {
                        product: name.clone(),
                        decision: Decision::Fresh,
                        build_id: Some(id),
                        fingerprints: Some(fps),
                        current_build_id: Some(manifest.build_id),
                        reasons: Vec::new(),
                        error: None,
                    }
                }
                Decided::Build { fps, id, reasons, current } => {
                    session.versions.insert(i, id.clone());
                    session.record_content(i);
                    ProductPlan {
                        product: name.clone(),
                        decision: Decision::Build,
                        build_id: Some(id),
                        fingerprints: Some(fps),
                        current_build_id: current.map(|m| m.build_id),
                        reasons,
                        error: None,
                    }
                }
            }
        };
        products.push(entry);
    }
    Ok(PlanReport {
        format_version: REPORT_FORMAT_VERSION,
        project: session.project.config.project.name.clone(),
        profile: session.profile.name.clone(),
        runtime_fp: session.substrate.runtime_fp().to_owned(),
        settings: session.profile.effective()?,
        errors: session.problems.iter().map(ToString::to_string).collect(),
        products,
    })
}

/// `kiln lineage PRODUCT[.COLUMN]`: the column lineage of a product (one column of it when
/// `target` names one). Compiles the project; reads no data.
pub async fn lineage(dir: &Path, target: &str, options: &BuildOptions) -> Result<Lineage, KilnError> {
    let mut session = Session::open(dir, options, Need::Plans, &Quiet).await?;
    // `a.b` is product a, column b (product names contain no dots).
    let (name, column) = match target.split_once('.') {
        Some((p, c)) => (p, Some(c)),
        None => (target, None),
    };
    let i = session.product_index(name)?;
    let product = session.compiled_product(i).await?;
    let mut columns = product.lineage.clone();
    if let Some(column) = column {
        columns.retain(|c| c.column == column);
        if columns.is_empty() {
            let known: Vec<&str> = product.lineage.iter().map(|c| c.column.as_str()).collect();
            return Err(KilnError::Usage(format!(
                "product `{name}` has no column `{column}` (columns: {})",
                known.join(", ")
            )));
        }
    }
    Ok(Lineage { format_version: REPORT_FORMAT_VERSION, product: name.to_owned(), columns })
}

pub(crate) fn product_run(name: &str, action: Action, error: Option<String>, t: Instant) -> ProductRun {
    ProductRun {
        product: name.to_owned(),
        action,
        build_id: None,
        rows: 0,
        files: 0,
        bytes: 0,
        seconds: t.elapsed().as_secs_f64(),
        error,
        phases: Default::default(),
        reasons: Vec::new(),
    }
}

/// Executes one compiled product into a new build and commits it.
async fn run_product(
    substrate: &Substrate,
    product: &CompiledProduct,
    (build_id, fingerprints, content): (&str, &BuildFingerprints, Option<&ContentVersions>),
    run_id: &str,
    observer: &dyn Observer,
) -> Result<Built, KilnError> {
    let warehouse = substrate.warehouse();
    let previous = warehouse.current(&product.name).await?;
    if product.existing_data == kiln_data::ExistingData::Error && previous.is_some() {
        return Err(ControlError::Compile {
            at: product.at.clone(),
            product: product.name.clone(),
            message: "existing_data = 'error' and a committed build exists".into(),
        }
        .into());
    }
    let progress = Arc::new(WriteProgress::default());
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });
    let t = Instant::now();
    let (mut manifest, physical, mut phases) =
        execute_into(substrate, product, build_id, run_id, None, progress).await?;
    // Records the sources set aside (on_error = 'reject') go to `<product>__rejected`,
    // written and committed before the product so the product's accounting never points
    // at rejects that are not there; a build reading checked sources always rewrites it.
    if let Some(rejects) = kiln_data::checked::collect_rejects(&physical) {
        let rejected = write_rejects(substrate, product, &rejects, (build_id, run_id, None)).await?;
        warehouse.commit(&rejected).await?;
        let n = rejects.len() as u64;
        manifest.totals.rows_rejected += n;
        manifest.totals.rows_read += n;
    }
    let mut manifest = kiln_data::merge_existing(manifest, previous.as_ref(), product.existing_data)?;
    phases.insert("execute_write".to_owned(), t.elapsed().as_secs_f64() - phases.get("plan").copied().unwrap_or(0.0));
    let t = Instant::now();
    manifest.fingerprints = Some(fingerprints.clone());
    manifest.content = content.cloned();
    warehouse.commit(&manifest).await?;
    if let Some(table) = substrate.product_table(&product.name) {
        table.bind(warehouse, &manifest)?;
    }
    phases.insert("commit".to_owned(), t.elapsed().as_secs_f64());
    Ok(built(manifest, &physical, phases))
}

/// The record of a committed build: its manifest, the drained physical plan (whose
/// metrics are final) and phase timings.
pub(crate) fn built(
    manifest: Manifest,
    physical: &Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    phases: std::collections::BTreeMap<String, f64>,
) -> Built {
    let mut operators = Vec::new();
    crate::inspect::operator_metrics(physical, 0, &mut operators);
    let physical = DisplayableExecutionPlan::new(physical.as_ref()).indent(true).to_string();
    Built { manifest, physical, operators, phases }
}

/// Plans and executes `product` and writes its output into a new build directory (of
/// micro-batch `batch`, when ingesting): the manifest to commit (nothing is visible yet),
/// the drained physical plan, and the `plan` phase's seconds.
pub(crate) async fn execute_into(
    substrate: &Substrate,
    product: &CompiledProduct,
    build_id: &str,
    run_id: &str,
    batch: Option<u64>,
    progress: Arc<WriteProgress>,
) -> Result<
    (Manifest, Arc<dyn datafusion::physical_plan::ExecutionPlan>, std::collections::BTreeMap<String, f64>),
    KilnError,
> {
    let ctx = substrate.context();
    let state = ctx.state();
    let exec_err = |e: datafusion::error::DataFusionError| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("product `{}`", product.name), source: e })
    };
    let t = Instant::now();
    let physical = state.query_planner().create_physical_plan(&product.plan, &state).await.map_err(exec_err)?;
    let mut phases = std::collections::BTreeMap::new();
    phases.insert("plan".to_owned(), t.elapsed().as_secs_f64());
    let task = ctx.task_ctx();
    let partitions = physical.properties().output_partitioning().partition_count();
    let streams = (0..partitions)
        .map(|p| physical.execute(p, Arc::clone(&task)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(exec_err)?;
    let spec = Arc::new(write_spec(substrate, product, build_id, run_id, batch)?);
    let manifest = write_dataset(substrate.warehouse(), streams, spec, progress).await?;
    Ok((manifest, physical, phases))
}

/// How `product`'s rows are written into build `build_id` (micro-batch `batch`).
pub(crate) fn write_spec(
    substrate: &Substrate,
    product: &CompiledProduct,
    build_id: &str,
    run_id: &str,
    batch: Option<u64>,
) -> Result<WriteSpec, KilnError> {
    let tier = product.ordering_tier;
    Ok(WriteSpec {
        product: product.name.clone(),
        build_id: build_id.to_owned(),
        run_id: run_id.to_owned(),
        schema: Arc::clone(&product.schema),
        schema_fp: product.schema_fp.clone(),
        max_rows_per_file: product.max_rows_per_file,
        properties: writer_properties(substrate, &product.write_options, &product.schema)?,
        ordering_tier: tier,
        // Every product: its declared contract, or the planned schema it promised downstream.
        verify_contract: true,
        sort_keys: product
            .order_by
            .iter()
            .map(|(c, asc)| format!("{c} {}", if *asc { "ASC" } else { "DESC" }))
            .collect(),
        verify_order: product.order_by.clone(),
        partition_by: product.partition_by.clone(),
        write_options: product.write_options.clone(),
        basename: product.basename.clone(),
        batch,
    })
}

/// The session's Parquet writer properties with a product's write options applied.
pub(crate) fn writer_properties(
    substrate: &Substrate,
    options: &std::collections::BTreeMap<String, String>,
    schema: &datafusion::arrow::datatypes::Schema,
) -> Result<datafusion::parquet::file::properties::WriterProperties, KilnError> {
    // The Arrow writer embeds ARROW:schema itself; DataFusion's properties builder must not
    // insist on finding it in the key-value metadata.
    let mut global = substrate.context().state().config().options().execution.parquet.clone();
    global.skip_arrow_metadata = true;
    let parquet = TableParquetOptions { global, ..Default::default() };
    let builder = WriterPropertiesBuilder::try_from(&parquet).map_err(|e| {
        KilnError::Data(kiln_data::DataError::Execution { context: "parquet writer settings".into(), source: e })
    })?;
    // Checked when the product compiled: an error here means the options changed since.
    let builder = kiln_data::write_options::apply(builder.set_created_by("kiln".into()), options, schema)
        .map_err(|(_, message)| KilnError::Usage(message))?;
    Ok(builder.build())
}

/// Writes records set aside by sources into a new (uncommitted) build of
/// `<product>__rejected`: source, file, line, raw text and reason.
pub(crate) async fn write_rejects(
    substrate: &Substrate,
    product: &CompiledProduct,
    rejects: &[kiln_data::checked::Rejected],
    (build_id, run_id, batch): (&str, &str, Option<u64>),
) -> Result<Manifest, KilnError> {
    let batch_of_rejects = kiln_data::checked::rejects_batch(rejects).map_err(|e| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("product `{}`", product.name), source: e })
    })?;
    let schema = batch_of_rejects.schema();
    let name = format!("{}__rejected", product.name);
    let spec =
        Arc::new(side_write_spec(substrate, &name, &schema, (build_id, run_id, batch), product.max_rows_per_file)?);
    let stream: datafusion::execution::SendableRecordBatchStream =
        Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
            schema,
            futures::stream::iter([Ok(batch_of_rejects)]),
        ));
    Ok(write_dataset(substrate.warehouse(), vec![stream], spec, Arc::default()).await?)
}

/// How a dataset Kiln derives (`<product>__rejected`, `<view>__late`, ...) is written:
/// its own schema, producer order, no options.
pub(crate) fn side_write_spec(
    substrate: &Substrate,
    name: &str,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    (build_id, run_id, batch): (&str, &str, Option<u64>),
    max_rows_per_file: usize,
) -> Result<WriteSpec, KilnError> {
    Ok(WriteSpec {
        product: name.to_owned(),
        build_id: build_id.to_owned(),
        run_id: run_id.to_owned(),
        schema_fp: kiln_contracts::schema_fingerprint(schema),
        schema: Arc::clone(schema),
        max_rows_per_file,
        properties: writer_properties(substrate, &Default::default(), schema)?,
        ordering_tier: 2,
        verify_contract: true,
        sort_keys: Vec::new(),
        verify_order: Vec::new(),
        partition_by: Vec::new(),
        write_options: Default::default(),
        basename: kiln_data::DEFAULT_BASENAME.into(),
        batch,
    })
}

/// What executing a product produced besides its data.
pub(crate) struct Built {
    manifest: Manifest,
    physical: String,
    operators: Vec<kiln_artifact::OperatorMetrics>,
    phases: std::collections::BTreeMap<String, f64>,
}

/// Awaits `future` and reports how long it took.
async fn timed<T>(future: impl std::future::Future<Output = T>, report: impl FnOnce(f64)) -> T {
    let t = Instant::now();
    let out = future.await;
    report(t.elapsed().as_secs_f64());
    out
}

/// `YYYYMMDDTHHMMSS-<pid>-<nanos>`: sortable by time, unique per process and run.
pub(crate) fn new_run_id() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}-{}-{:09}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        std::process::id(),
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}
