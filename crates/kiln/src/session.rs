//! A compiled project: load it, generate example data when asked, compile every node in
//! dependency order (a compile-cache hit stands in for compiling until a plan is needed),
//! take the sources' data versions, and bind products that are not being built to their
//! committed builds. `build`, `plan`, `lineage`, `stream` and the inspection commands all
//! start here.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use kiln_artifact::{ArtifactStore, CachedCompile, CompileCache, ContentVersions, Manifest, SchemaPromotion};
use kiln_control::dag::{Graph, Node, NodeKind};
use kiln_control::dialect::{ProductDef, SourceDef, Statement, StreamDef, ViewDef};
use kiln_control::{CompiledProduct, CompiledSource, ControlError, Project, RuntimeProfile, Substrate};
use kiln_data::Warehouse;

use crate::KilnError;
use crate::events::{BuildOptions, Event, Observer};

/// What a session needs beyond compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Compile only (lineage).
    Plans,
    /// Also data versions and committed upstream builds (plan).
    Versions,
    /// What `Versions` reads, for a command that commits (stream): a missing environment
    /// is made.
    Stream,
    /// Also generated example data (build).
    Data,
}

/// Everything a session knows about one node of the graph.
#[derive(Debug, Default)]
pub(crate) struct NodeState {
    /// The product or view, compiled in this run.
    pub(crate) compiled: Option<CompiledProduct>,
    /// Its compile result from the compile cache, when it was not compiled (compiled on
    /// demand when a decision or an execution needs the plan).
    pub(crate) cached: Option<CachedCompile>,
    /// A cached product whose table is not registered yet (see `ensure_registered`).
    pub(crate) unregistered: bool,
    /// Its version as an upstream: a source's data version, a stream's definition, a
    /// product's build id (committed, or as decided in this run).
    pub(crate) version: Option<String>,
    /// A product's content versions (its build's: fresh, built, or as planned).
    pub(crate) content: Option<ContentVersions>,
    /// Seconds spent compiling it in this run (absent for cache hits).
    pub(crate) compile_seconds: Option<f64>,
    /// Why it cannot be built.
    pub(crate) failed: Option<String>,
    /// A files source with a freshness expectation (`kiln freshness`).
    pub(crate) freshness: Option<kiln_data::FileSource>,
    /// A CSV or JSON files source read in fail mode: a build over it that fails on a
    /// record re-reads it to name the file and line (`build::locate_record_error`).
    pub(crate) records: Option<kiln_data::FileSource>,
    /// A files source read with `on_error = 'reject'`: the build id `<source>__rejected`
    /// takes from its files now.
    pub(crate) rejects_version: Option<String>,
    /// A files source: what an incremental product over it lists (crate::incremental).
    pub(crate) files: Option<kiln_data::FileSource>,
}

impl NodeState {
    /// Whether the node has a compile result (compiled or from the cache).
    pub(crate) fn known(&self) -> bool {
        self.compiled.is_some() || self.cached.is_some()
    }
}

/// A compiled project (see the module docs).
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
    /// One state per graph node, by node index.
    pub(crate) nodes: Vec<NodeState>,
    /// Whether tables of cached products are registered only on demand (nothing executes).
    lazy: bool,
    /// Source columns read with a wider type than declared (permissive evolution).
    pub(crate) promotions: Vec<SchemaPromotion>,
    /// `allow_empty` sources that have no files: a warning each.
    empty_sources: Vec<String>,
    /// `--start` / `--end` / `--restate` for incremental products.
    pub(crate) intervals: crate::events::IntervalRequest,
    /// The writer lock of a command that commits, held while the session lives.
    _writer: Option<crate::lock::WriterLock>,
}

/// What compiling needs to carry from one node to the next.
struct CompileCtx {
    need: Need,
    /// Every registered node's schema fingerprint: the inputs' part of compile keys.
    schema_fps: HashMap<usize, String>,
    old_cache: CompileCache,
    new_cache: CompileCache,
    /// Cache hits (their keys; entries are cloned back only if the cache is rewritten).
    used_keys: Vec<(String, usize)>,
    changed: bool,
}

impl Session {
    /// Loads and compiles a project. Project-level problems (no project, unknown tables,
    /// cycles, bad profiles) are an `Err`; a product or source that does not compile is
    /// recorded as failed with its dependents, and the rest go on.
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
        let base = Warehouse::open(&config.storage.warehouse, &project.root)?;
        // A command that commits holds the writer lock from before its first write
        // (example data, a new environment) to its end (crate::lock).
        let writer = match need {
            Need::Data | Need::Stream => {
                let command = if need == Need::Data { "build" } else { "stream" };
                let path = crate::lock::lock_path(&base);
                Some(crate::lock::WriterLock::acquire(path, command, options.wait, observer).await?)
            }
            Need::Plans | Need::Versions => None,
        };
        if need == Need::Data {
            generate_example_data(&project, observer).await?;
        }
        // Building makes a missing environment (from prod's bindings); reading names it.
        let warehouse = base.open_env(options.env(), matches!(need, Need::Data | Need::Stream)).await?;
        let secrets = config.resolve_secrets();
        let functions = kiln_functions::Registry::builtin(secrets);
        let mut substrate = Substrate::new(&profile, warehouse.clone(), &project.root, functions)?;
        substrate.set_vars(kiln_control::vars::Vars::resolve(&config.vars, &options.vars)?);
        let store = ArtifactStore::open(&config.storage.artifacts, &project.root)?;
        let graph = Arc::new(std::mem::take(&mut project.graph));
        let mut problems = problems;
        // An audit or test without its product is checked by nothing: a project problem.
        problems.extend(
            graph
                .nodes
                .iter()
                .filter(|n| n.kind.is_check() && n.target.is_none())
                .filter_map(|n| n.broken.clone())
                .map(ControlError::Node),
        );
        let order = graph.order()?;
        let selected = graph.select_excluding(options.select.as_deref(), options.exclude.as_deref())?;
        let nodes = (0..graph.nodes.len()).map(|_| NodeState::default()).collect();
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
            nodes,
            lazy: need != Need::Data,
            promotions: Vec::new(),
            empty_sources: Vec::new(),
            intervals: options.intervals,
            _writer: writer,
        };
        session.compile_all(need).await;
        if need == Need::Data {
            for warning in &session.empty_sources {
                observer.event(Event::Warning(warning.clone()));
            }
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

    /// Why node `i` cannot be built, if a node it reads failed or it is broken itself.
    fn upstream_failure(&self, i: usize) -> Option<String> {
        let node = &self.graph.nodes[i];
        if let Some(&d) = node.deps.iter().find(|&&d| self.nodes[d].failed.is_some()) {
            // A source's problem is the root cause the user needs to see.
            let up = &self.graph.nodes[d];
            let reason = self.nodes[d].failed.clone().unwrap_or_default();
            return Some(match up.kind {
                NodeKind::Source | NodeKind::Stream => format!("source `{}`: {reason}", up.name),
                NodeKind::Product | NodeKind::View | NodeKind::Audit | NodeKind::Test => {
                    format!("upstream `{}` failed", up.name)
                }
            });
        }
        node.broken.clone()
    }

    /// Compiles every node in order (unselected products too: downstream plans need their
    /// tables). A node that fails fails its dependents. A product whose compile key is in
    /// the compile cache is not compiled (nor even parsed); when nothing will execute
    /// (`lazy`), its table is not registered either until a compile downstream needs it.
    async fn compile_all(&mut self, need: Need) {
        let old_cache = self.store.compile_cache();
        let new_cache = CompileCache { format_version: old_cache.format_version, entries: Default::default() };
        let old_len = old_cache.entries.len();
        let mut ctx = CompileCtx {
            need,
            schema_fps: HashMap::new(),
            old_cache,
            new_cache,
            used_keys: Vec::new(),
            changed: false,
        };
        let graph = Arc::clone(&self.graph);
        for i in self.order.clone() {
            if let Some(reason) = self.upstream_failure(i) {
                self.nodes[i].failed = Some(reason);
                continue;
            }
            self.compile_node(i, &graph.nodes[i], &mut ctx).await;
        }
        if ctx.changed || ctx.used_keys.len() != old_len {
            for (key, i) in ctx.used_keys {
                if let Some(entry) = &self.nodes[i].cached {
                    ctx.new_cache.entries.insert(key, entry.clone());
                }
            }
            // A cache is an optimization: failing to write it must not fail the run.
            let _ = self.store.put_compile_cache(&ctx.new_cache);
        }
    }

    /// Compiles node `i` (or takes its result from the cache); a failure is recorded on
    /// the node (and, for sources and streams, as a project problem).
    async fn compile_node(&mut self, i: usize, node: &Node, ctx: &mut CompileCtx) {
        let (fi, si) = node.def;
        let mut key = None;
        if node.kind == NodeKind::Product {
            if let Err(e) = self.check_batch_inputs(node) {
                self.nodes[i].failed = Some(e.to_string());
                return;
            }
            // The compile cache, before the statement is even parsed.
            let statement_fp = format!("{}:{si}", self.project.files[fi].fp);
            let inputs: Vec<(String, String)> = node
                .deps
                .iter()
                .map(|&d| (self.graph.nodes[d].name.clone(), ctx.schema_fps.get(&d).cloned().unwrap_or_default()))
                .collect();
            let k = self.substrate.compile_key(&statement_fp, &inputs);
            if let Some(entry) = ctx.old_cache.entries.remove(&k) {
                ctx.schema_fps.insert(i, entry.schema_fp.clone());
                ctx.used_keys.push((k, i));
                self.nodes[i].cached = Some(entry);
                self.nodes[i].unregistered = true;
                if !self.lazy
                    && let Err(e) = self.ensure_registered(i).await
                {
                    self.nodes[i].failed = Some(e.to_string());
                }
                return;
            }
            key = Some(k);
        }
        if matches!(node.kind, NodeKind::Product | NodeKind::View) {
            for &d in &node.deps {
                if let Err(e) = self.ensure_registered(d).await {
                    self.nodes[d].failed = Some(e.to_string());
                }
            }
        }
        let statement = match self.project.files[fi].statement(si) {
            Ok(statement) => statement.clone(),
            Err(e) => {
                self.nodes[i].failed = Some(e.to_string());
                return;
            }
        };
        let compiled = match &statement {
            Statement::Source(def) => {
                self.compile_source(i, def, ctx);
                return;
            }
            Statement::Stream(def) => {
                self.compile_stream(i, def, ctx);
                return;
            }
            Statement::Product(def) => self.compile_product(i, def, key, ctx).await,
            Statement::View(def) => self.compile_view(i, def, ctx).await,
            // Compiled when their product's checks run (crate::checks) or by `kiln test`.
            Statement::Audit(_) | Statement::Test(_) => return,
        };
        if let Err(e) = compiled {
            self.nodes[i].failed = Some(e.to_string());
        }
    }

    /// A batch product cannot read an unbounded input.
    fn check_batch_inputs(&self, node: &Node) -> Result<(), ControlError> {
        let streaming = node
            .deps
            .iter()
            .map(|&d| &self.graph.nodes[d])
            .find(|d| matches!(d.kind, NodeKind::Stream | NodeKind::View));
        match streaming {
            None => Ok(()),
            Some(up) => {
                let kind = if up.kind == NodeKind::Stream { "stream" } else { "materialized view" };
                Err(ControlError::Compile {
                    at: node.at.clone(),
                    product: node.name.clone(),
                    message: format!(
                        "reads {kind} `{}`; products read sources and products, and `kiln stream` runs streams and materialized views",
                        up.name
                    ),
                })
            }
        }
    }

    /// Registers a source and takes its data version. A source is not a line of the
    /// summary: its error is a project problem (printed with its location; exit 1), and
    /// the products reading it are skipped.
    fn compile_source(&mut self, i: usize, def: &SourceDef, ctx: &mut CompileCtx) {
        let source = match self.substrate.register_source(def) {
            Ok(source) => source,
            Err(e) => {
                self.nodes[i].failed = Some(e.to_string());
                self.problems.push(e);
                return;
            }
        };
        if let CompiledSource::Files(f) = &source {
            self.nodes[i].files = Some(f.clone());
        }
        if let CompiledSource::Files(f) = &source
            && f.freshness.is_some()
        {
            self.nodes[i].freshness = Some(f.clone());
        }
        if let CompiledSource::Files(f) = &source
            && f.reject
        {
            // (A listing that fails fails the source's data version, which says so.)
            self.nodes[i].rejects_version = f.rejects_version().ok();
        }
        if let CompiledSource::Files(f) = &source
            && !f.reject
            && matches!(f.format, kiln_data::FileFormat::Csv | kiln_data::FileFormat::Json)
        {
            self.nodes[i].records = Some(f.clone());
        }
        if let CompiledSource::Files(f) = &source
            && f.allow_empty
            && f.is_empty().unwrap_or(false)
        {
            self.empty_sources.push(format!(
                "source `{}` has no {} files under {} (allow_empty = 'true'): it reads as empty",
                f.name,
                f.format.extensions().join(" or "),
                f.path.strip_prefix(&self.project.root).unwrap_or(&f.path).display()
            ));
        }
        if let CompiledSource::Files(f) = &source {
            self.promotions.extend(f.promotions.iter().map(|p| SchemaPromotion {
                source: f.name.clone(),
                column: p.column.clone(),
                declared: p.declared.clone(),
                promoted: p.promoted.clone(),
                file: p.file.clone(),
            }));
        }
        ctx.schema_fps.insert(i, kiln_contracts::schema_fingerprint(source.schema()));
        if ctx.need == Need::Plans {
            return;
        }
        match source.data_version() {
            Ok(version) => {
                self.nodes[i].content = Some(ContentVersions { rows: version.clone(), columns: Default::default() });
                self.nodes[i].version = Some(version);
            }
            Err(e) => {
                let hint = if self.project.config.generate.tpch.is_some() && ctx.need != Need::Data {
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
                self.nodes[i].failed = Some(message);
            }
        }
    }

    async fn compile_product(
        &mut self,
        i: usize,
        def: &ProductDef,
        key: Option<String>,
        ctx: &mut CompileCtx,
    ) -> Result<(), ControlError> {
        let t = Instant::now();
        let compiled = self.substrate.compile_product(def).await;
        self.nodes[i].compile_seconds = Some(t.elapsed().as_secs_f64());
        let c = compiled?;
        ctx.schema_fps.insert(i, c.schema_fp.clone());
        if let Some(key) = key {
            ctx.changed = true;
            ctx.new_cache.entries.insert(key, cache_entry(&c));
        }
        self.nodes[i].compiled = Some(c);
        Ok(())
    }

    fn compile_stream(&mut self, i: usize, def: &StreamDef, ctx: &mut CompileCtx) {
        match self.substrate.register_stream(def) {
            Ok(stream) => {
                if let Some((source, _)) = self.substrate.micro_batch_source(&stream.name) {
                    ctx.schema_fps.insert(i, kiln_contracts::schema_fingerprint(source.schema()));
                }
            }
            Err(e) => {
                self.nodes[i].failed = Some(e.to_string());
                self.problems.push(e);
            }
        }
    }

    async fn compile_view(&mut self, i: usize, def: &ViewDef, ctx: &mut CompileCtx) -> Result<(), ControlError> {
        let c = self.substrate.compile_view(def).await?;
        ctx.schema_fps.insert(i, c.schema_fp.clone());
        self.nodes[i].compiled = Some(c);
        Ok(())
    }

    /// Unselected upstream products are read from their committed builds.
    async fn bind_unselected(&mut self) -> Result<(), KilnError> {
        for i in self.order.clone() {
            let node = &self.graph.nodes[i];
            if node.kind != NodeKind::Product || self.selected.contains(&i) || !self.nodes[i].known() {
                continue;
            }
            let schema = self.nodes[i].compiled.as_ref().map(|c| Arc::clone(&c.schema));
            match committed(&self.warehouse, &node.name, schema, !self.lazy).await? {
                Some(manifest) => {
                    if let Some(table) = self.substrate.product_table(&node.name) {
                        table.bind(&self.warehouse, &manifest)?;
                    }
                    self.record_committed(i, &manifest);
                }
                None => {
                    let message =
                        format!("`{}` is not selected and has no committed build (select it with +)", node.name);
                    self.nodes[i].failed = Some(message);
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
        self.nodes[i].content = Some(content);
        self.nodes[i].version = Some(manifest.build_id.clone());
    }

    /// Registers the table of cached product `i` if it is not yet (its schema decoded from
    /// the cache entry, or, if that fails, by compiling it).
    pub(crate) async fn ensure_registered(&mut self, i: usize) -> Result<(), KilnError> {
        if !std::mem::take(&mut self.nodes[i].unregistered) {
            return Ok(());
        }
        let Some(entry) = &self.nodes[i].cached else { return Ok(()) };
        let schema = serde_json::from_str::<serde_json::Value>(&entry.schema)
            .ok()
            .and_then(|v| kiln_contracts::Contract::from_json(&v).ok())
            .and_then(|c| exact_types(&c.schema, &entry.arrow_types))
            .filter(|s| kiln_contracts::schema_fingerprint(s) == entry.schema_fp);
        match schema {
            Some(schema) => Ok(self.substrate.register_product_schema(&self.graph.nodes[i].name, schema)?),
            None => Box::pin(self.ensure_compiled(i)).await,
        }
    }

    /// Compiles product or view `i` if its result came from the cache (a decision or an
    /// execution needs its plan, canonical form or lineage).
    pub(crate) async fn ensure_compiled(&mut self, i: usize) -> Result<(), KilnError> {
        if self.nodes[i].compiled.is_some() {
            return Ok(());
        }
        let graph = Arc::clone(&self.graph);
        for &d in &graph.nodes[i].deps {
            Box::pin(self.ensure_registered(d)).await?;
        }
        let (fi, si) = graph.nodes[i].def;
        let statement = self.project.files[fi].statement(si)?;
        let t = Instant::now();
        let compiled = match statement {
            Statement::Product(def) => self.substrate.compile_product(def).await?,
            Statement::View(def) => self.substrate.compile_view(def).await?,
            _ => return Err(KilnError::Internal(format!("`{}` is not a product", graph.nodes[i].name))),
        };
        let state = &mut self.nodes[i];
        state.compile_seconds = Some(t.elapsed().as_secs_f64());
        state.cached = None;
        state.unregistered = false;
        state.compiled = Some(compiled);
        Ok(())
    }

    /// The index of product (or view) `name`, or a usage error listing the products.
    pub(crate) fn product_index(&self, name: &str) -> Result<usize, KilnError> {
        let queries = |n: &&Node| matches!(n.kind, NodeKind::Product | NodeKind::View);
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
        let product = self.graph.nodes[i].name.clone();
        if let Some(reason) = &self.nodes[i].failed {
            return Err(KilnError::Product { product, message: reason.clone() });
        }
        if let Err(e) = self.ensure_compiled(i).await {
            return Err(KilnError::Product { product, message: e.to_string() });
        }
        self.nodes[i].compiled.as_ref().ok_or_else(|| KilnError::Internal(format!("`{product}` did not compile")))
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

    /// Registers and binds the committed side datasets: `<source>__rejected`,
    /// `<product>__rejected` (micro-batch products), `<product>__failures`,
    /// `<stream>__rejected` and `<view>__late` (their schemas are Kiln's, not declared).
    async fn bind_side_datasets(&mut self) -> Result<(), KilnError> {
        let rejects = kiln_data::checked::rejects_batch(&[])
            .map_err(|e| KilnError::Internal(format!("the rejected-records schema: {e}")))?
            .schema();
        let mut side = Vec::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            match node.kind {
                NodeKind::Product => {
                    side.push((format!("{}__rejected", node.name), Arc::clone(&rejects)));
                    side.push((failures_name(&node.name), failures_schema()));
                }
                NodeKind::Stream => {
                    side.push((format!("{}__rejected", node.name), Arc::clone(&rejects)));
                }
                NodeKind::View => {
                    let stream = self.nodes[i].compiled.as_ref().and_then(|c| c.ingests.clone());
                    if let Some((source, _)) = stream.as_deref().and_then(|s| self.substrate.micro_batch_source(s)) {
                        side.push((format!("{}__late", node.name), kiln_data::stream::late_schema(source.schema())));
                    }
                }
                NodeKind::Source => {
                    side.push((format!("{}__rejected", node.name), Arc::clone(&rejects)));
                }
                NodeKind::Audit | NodeKind::Test => {}
            }
        }
        let convert = !self.lazy;
        let reads =
            side.into_iter().map(|(name, schema)| {
                let warehouse = self.warehouse.clone();
                async move {
                    committed(&warehouse, &name, Some(Arc::clone(&schema)), convert).await.map(|m| (name, schema, m))
                }
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
    pub(crate) fn products(&self) -> Vec<usize> {
        let graph = &self.graph;
        self.order
            .iter()
            .copied()
            .filter(|i| graph.nodes[*i].kind == NodeKind::Product && self.selected.contains(i))
            .collect()
    }

    /// The committed builds of `products`, read concurrently (a manifest changes only when
    /// its own product is built, so reading them up front is exact).
    pub(crate) async fn currents(&self, products: &[usize]) -> Result<HashMap<usize, Option<Manifest>>, KilnError> {
        let convert = !self.lazy;
        let reads = products.iter().map(|&i| {
            let (warehouse, name) = (self.warehouse.clone(), self.graph.nodes[i].name.clone());
            let schema = self.nodes[i].compiled.as_ref().map(|c| Arc::clone(&c.schema));
            async move { committed(&warehouse, &name, schema, convert).await.map(|m| (i, m)) }
        });
        let all: Vec<_> = futures::stream::iter(reads).buffer_unordered(32).try_collect().await?;
        Ok(all.into_iter().collect())
    }

    /// The micro-batch source product `i` ingests, if any.
    pub(crate) fn ingest_feed(&self, i: usize) -> Option<String> {
        let graph = &self.graph;
        graph.nodes[i]
            .deps
            .iter()
            .map(|&d| &graph.nodes[d].name)
            .find(|name| self.substrate.micro_batch_source(name).is_some())
            .cloned()
    }
}

/// Generates the example data when `[generate.tpch]` asks and its marker is missing.
async fn generate_example_data(project: &Project, observer: &dyn Observer) -> Result<(), KilnError> {
    let Some(tpch) = &project.config.generate.tpch else { return Ok(()) };
    let out = project.root.join(&tpch.out);
    if kiln_data::tpch::is_generated(&out, tpch.scale_factor) {
        return Ok(());
    }
    observer.event(Event::Generating { scale_factor: tpch.scale_factor });
    let t = Instant::now();
    let sf = tpch.scale_factor;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rows = tokio::task::spawn_blocking(move || kiln_data::tpch::generate(&out, sf, &[], threads))
        .await
        .map_err(|e| KilnError::Internal(format!("tpch generation failed: {e}")))??;
    observer.event(Event::Generated { rows, seconds: t.elapsed().as_secs_f64() });
    Ok(())
}

/// `schema` (decoded from a contract, whose SQL types name several Arrow types) with each
/// column's exact Arrow type as the cache entry recorded it (`None`: not recorded, or not
/// readable: the product is compiled instead). The table must have the schema compiling
/// gives, or registering the compiled product over it later fails.
fn exact_types(schema: &Schema, types: &[String]) -> Option<SchemaRef> {
    if types.len() != schema.fields().len() {
        return None;
    }
    let fields = schema
        .fields()
        .iter()
        .zip(types)
        .map(|(f, t)| t.parse::<DataType>().ok().map(|t| Field::clone(f).with_data_type(t)))
        .collect::<Option<Vec<Field>>>()?;
    Some(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())))
}

/// A compile-cache entry for a compiled product.
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
        arrow_types: c.schema.fields().iter().map(|f| f.data_type().to_string()).collect(),
        schema_fp: c.schema_fp.clone(),
        query_fp: c.query_fp.clone(),
        func_fp: c.func_fp.clone(),
        shape: c.shape.clone(),
        lineage: c.lineage.clone(),
        sensitive: c.sensitive.clone(),
        hashed: c.hashed.clone(),
    }
}

/// The committed manifest of dataset `name` ([`Warehouse::current`]); a session that
/// builds (`convert`) first converts a dataset still in the pre-Delta layout, read as
/// `schema` when known ([`Warehouse::convert`]).
async fn committed(
    warehouse: &Warehouse,
    name: &str,
    schema: Option<datafusion::arrow::datatypes::SchemaRef>,
    convert: bool,
) -> Result<Option<Manifest>, kiln_data::DataError> {
    if convert { warehouse.current_or_convert(name, schema.as_deref()).await } else { warehouse.current(name).await }
}

/// The failing-rows dataset of `product`.
pub(crate) fn failures_name(product: &str) -> String {
    format!("{product}__failures")
}

/// The schema of `<product>__failures`.
pub(crate) fn failures_schema() -> SchemaRef {
    Arc::new(Schema::new(
        ["check", "kind", "severity", "status", "row"].map(|name| Field::new(name, DataType::Utf8, false)).to_vec(),
    ))
}
