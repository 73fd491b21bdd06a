//! `kiln build`, `kiln plan`, `kiln lineage`: compile and decide (control) -> execute and
//! write (data) -> record (artifact).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use datafusion::common::config::TableParquetOptions;
use datafusion::parquet::file::properties::WriterPropertiesBuilder;
use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::store::write_atomic;
use kiln_artifact::{
    Action, ArtifactStore, BuildFingerprints, Decision, Lineage, PlanReport, ProductPlan, ProductRun, RunSummary,
};
use kiln_control::compiler::{CompiledProduct, build_id};
use kiln_control::dag::NodeKind;
use kiln_control::decision::decide;
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
struct Session {
    project: Project,
    /// Problems outside any one product (files that do not parse, duplicates).
    problems: Vec<ControlError>,
    profile: RuntimeProfile,
    warehouse: Warehouse,
    substrate: Substrate,
    store: ArtifactStore,
    order: Vec<usize>,
    selected: BTreeSet<usize>,
    compiled: HashMap<usize, CompiledProduct>,
    /// Node -> its version as an upstream: a source's data version, an unselected product's
    /// committed build id, and (filled in as they are decided) selected products' build ids.
    versions: HashMap<usize, String>,
    /// Node -> why it cannot be built.
    failed: HashMap<usize, String>,
}

/// What a session needs beyond compiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
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
    async fn open(dir: &Path, options: &BuildOptions, need: Need, observer: &dyn Observer) -> Result<Self, KilnError> {
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
        let mut substrate = Substrate::new(&profile, warehouse.clone(), &project.root, functions)?;
        let store = ArtifactStore::new(project.root.join(&config.storage.artifacts));
        let graph = &project.graph;
        let order = graph.order()?;
        let selected: BTreeSet<usize> = match &options.select {
            Some(s) => graph.select(s)?,
            None => (0..graph.nodes.len()).collect(),
        };

        // Compile everything in order (unselected products too: downstream plans need their
        // tables). A node that fails to compile fails its dependents.
        let mut versions: HashMap<usize, String> = HashMap::new();
        let mut compiled: HashMap<usize, CompiledProduct> = HashMap::new();
        let mut failed: HashMap<usize, String> = HashMap::new();
        for &i in &order {
            let node = &graph.nodes[i];
            if let Some(&d) = node.deps.iter().find(|d| failed.contains_key(d)) {
                // A source's problem is the root cause the user needs to see.
                let up = &graph.nodes[d];
                let reason = match up.kind {
                    NodeKind::Source | NodeKind::Stream => format!("source `{}`: {}", up.name, failed[&d]),
                    NodeKind::Product | NodeKind::View => format!("upstream `{}` failed", up.name),
                };
                failed.insert(i, reason);
                continue;
            }
            if let Some(message) = &node.broken {
                failed.insert(i, message.clone());
                continue;
            }
            let (fi, si) = node.def;
            match &project.files[fi].statements[si] {
                Statement::Source(def) => match substrate.register_source(def) {
                    Ok(source) if need != Need::Plans => match source.data_version() {
                        Ok(version) => {
                            versions.insert(i, version);
                        }
                        Err(e) => {
                            let hint = if config.generate.tpch.is_some() && need != Need::Data {
                                " (`kiln build` generates the example data)"
                            } else {
                                ""
                            };
                            failed.insert(i, format!("{e}{hint}"));
                        }
                    },
                    Ok(_) => {}
                    Err(e) => {
                        failed.insert(i, e.to_string());
                    }
                },
                Statement::Product(def) => {
                    // A batch product cannot read an unbounded input.
                    let streaming = node
                        .deps
                        .iter()
                        .map(|&d| &graph.nodes[d])
                        .find(|d| matches!(d.kind, NodeKind::Stream | NodeKind::View));
                    if let Some(up) = streaming {
                        let kind = if up.kind == NodeKind::Stream { "stream" } else { "materialized view" };
                        failed.insert(
                            i,
                            format!(
                                "{}: product `{}` reads {kind} `{}`; products read sources and products, and `kiln stream` runs streams and materialized views",
                                def.at, def.name, up.name
                            ),
                        );
                        continue;
                    }
                    match substrate.compile_product(def).await {
                        Ok(c) => {
                            compiled.insert(i, c);
                        }
                        Err(e) => {
                            failed.insert(i, e.to_string());
                        }
                    }
                }
                Statement::Stream(def) => {
                    if let Err(e) = substrate.register_stream(def) {
                        failed.insert(i, e.to_string());
                    }
                }
                Statement::View(def) => match substrate.compile_view(def).await {
                    Ok(c) => {
                        compiled.insert(i, c);
                    }
                    Err(e) => {
                        failed.insert(i, e.to_string());
                    }
                },
            }
        }

        // Unselected upstream products are read from their committed builds.
        if need != Need::Plans {
            for &i in &order {
                if graph.nodes[i].kind == NodeKind::Product && !selected.contains(&i) && compiled.contains_key(&i) {
                    let name = &graph.nodes[i].name;
                    match warehouse.current(name).await? {
                        Some(manifest) => {
                            if let Some(table) = substrate.product_table(name) {
                                table.bind(&warehouse, &manifest)?;
                            }
                            versions.insert(i, manifest.build_id);
                        }
                        None => {
                            failed.insert(
                                i,
                                format!("`{name}` is not selected and has no committed build (select it with +)"),
                            );
                        }
                    }
                }
            }
        }
        Ok(Self {
            project,
            problems,
            profile,
            warehouse,
            substrate,
            store,
            order,
            selected,
            compiled,
            versions,
            failed,
        })
    }

    /// The selected products, in dependency order.
    fn products(&self) -> Vec<usize> {
        let graph = &self.project.graph;
        self.order
            .iter()
            .copied()
            .filter(|i| graph.nodes[*i].kind == NodeKind::Product && self.selected.contains(i))
            .collect()
    }

    /// Why product `i` cannot be built now, if it cannot: its own failure or an upstream's.
    fn blocked(&mut self, i: usize) -> Option<(Action, String)> {
        let graph = &self.project.graph;
        let upstream =
            graph.nodes[i].deps.iter().find(|d| self.failed.contains_key(d)).map(|&d| graph.nodes[d].name.clone());
        if let Some(reason) = self.failed.get(&i) {
            let skipped = upstream.is_some() && !self.compiled.contains_key(&i);
            return Some((if skipped { Action::Skipped } else { Action::Failed }, reason.clone()));
        }
        if let Some(up) = upstream {
            let reason = format!("upstream `{up}` failed");
            self.failed.insert(i, reason.clone());
            return Some((Action::Skipped, reason));
        }
        None
    }

    /// The fingerprints and build id of compiled product `i` from its upstreams' versions.
    fn identity(&self, i: usize) -> Option<(BuildFingerprints, String)> {
        let product = self.compiled.get(&i)?;
        let graph = &self.project.graph;
        let upstream = graph.nodes[i]
            .deps
            .iter()
            .filter_map(|d| self.versions.get(d).map(|v| (graph.nodes[*d].name.clone(), v.clone())))
            .collect();
        let fps = BuildFingerprints {
            schema_fp: product.schema_fp.clone(),
            query_fp: product.query_fp.clone(),
            runtime_fp: self.substrate.runtime_fp().to_owned(),
            func_fp: product.func_fp.clone(),
            upstream,
        };
        let id = build_id(&product.name, &fps);
        Some((fps, id))
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
    let graph = session.project.graph.clone();
    observer.event(Event::Planned { products: products.iter().map(|&i| graph.nodes[i].name.clone()).collect() });

    let mut runs = Vec::new();
    for &i in &products {
        let node = &graph.nodes[i];
        let t = Instant::now();
        let run = if let Some((action, reason)) = session.blocked(i) {
            product_run(&node.name, action, Some(reason), t)
        } else if let (Some((fps, id)), Some(product)) = (session.identity(i), session.compiled.get(&i)) {
            let current = session.warehouse.current(&product.name).await?;
            let (decision, reasons) = decide(product, &fps, &id, current.as_ref(), Some(&session.store));
            match (decision, current) {
                (Decision::Fresh, Some(manifest)) => {
                    if let Some(table) = session.substrate.product_table(&product.name) {
                        table.bind(&session.warehouse, &manifest)?;
                    }
                    session.versions.insert(i, id.clone());
                    ProductRun {
                        action: Action::Fresh,
                        build_id: Some(id),
                        rows: manifest.totals.rows_written,
                        files: manifest.totals.files,
                        bytes: manifest.totals.bytes,
                        ..product_run(&node.name, Action::Fresh, None, t)
                    }
                }
                _ => {
                    session.store.put_plan(&product.canonical)?;
                    match run_product(&session.substrate, product, &id, &fps, &run_id, observer).await {
                        Ok(manifest) => {
                            session.versions.insert(i, id.clone());
                            ProductRun {
                                build_id: Some(id),
                                rows: manifest.totals.rows_written,
                                files: manifest.totals.files,
                                bytes: manifest.totals.bytes,
                                reasons,
                                ..product_run(&node.name, Action::Built, None, t)
                            }
                        }
                        Err(e) => {
                            session.failed.insert(i, e.to_string());
                            product_run(&node.name, Action::Failed, Some(e.to_string()), t)
                        }
                    }
                }
            }
        } else {
            product_run(&node.name, Action::Failed, Some("not compiled".into()), t)
        };
        observer.event(Event::ProductFinished(run.clone()));
        runs.push(run);
    }

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
    };
    let runs_dir = session.store.root().join("runs").join(&run_id);
    let settings = serde_json::to_vec_pretty(&session.profile.effective()?)
        .map_err(|e| KilnError::Usage(format!("cannot encode settings: {e}")))?;
    write_atomic(&runs_dir.join("settings.json"), &settings)?;
    write_atomic(&runs_dir.join("run_summary.json"), &summary.to_json()?)?;
    Ok(BuildReport { summary, problems: session.problems })
}

/// `kiln plan`: the decisions `build` would take, without executing or writing anything.
pub async fn plan(dir: &Path, options: &BuildOptions) -> Result<PlanReport, KilnError> {
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    let graph = session.project.graph.clone();
    let mut products = Vec::new();
    for i in session.products() {
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
        } else if let (Some((fps, id)), Some(product)) = (session.identity(i), session.compiled.get(&i)) {
            let current = session.warehouse.current(&name).await?;
            let (decision, reasons) = decide(product, &fps, &id, current.as_ref(), Some(&session.store));
            session.versions.insert(i, id.clone());
            ProductPlan {
                product: name.clone(),
                decision,
                build_id: Some(id),
                fingerprints: Some(fps),
                current_build_id: current.map(|m| m.build_id),
                reasons,
                error: None,
            }
        } else {
            failed("not compiled".into())
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
    let session = Session::open(dir, options, Need::Plans, &Quiet).await?;
    let graph = &session.project.graph;
    // A product name may itself contain no dots; `a.b` is product a, column b.
    let (name, column) = match target.split_once('.') {
        Some((p, c)) => (p, Some(c)),
        None => (target, None),
    };
    let queries = |n: &&kiln_control::dag::Node| matches!(n.kind, NodeKind::Product | NodeKind::View);
    let Some(i) = graph.nodes.iter().position(|n| n.name == name && queries(&n)) else {
        let known: Vec<&str> = graph.nodes.iter().filter(queries).map(|n| n.name.as_str()).collect();
        return Err(KilnError::Usage(format!("no product `{name}` (products: {})", known.join(", "))));
    };
    let Some(product) = session.compiled.get(&i) else {
        let reason = session.failed.get(&i).cloned().unwrap_or_else(|| "not compiled".into());
        return Err(KilnError::Product { product: name.to_owned(), message: reason });
    };
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

fn product_run(name: &str, action: Action, error: Option<String>, t: Instant) -> ProductRun {
    ProductRun {
        product: name.to_owned(),
        action,
        build_id: None,
        rows: 0,
        files: 0,
        bytes: 0,
        seconds: t.elapsed().as_secs_f64(),
        error,
        reasons: Vec::new(),
    }
}

/// Executes one compiled product into a new build and commits it.
async fn run_product(
    substrate: &Substrate,
    product: &CompiledProduct,
    build_id: &str,
    fingerprints: &BuildFingerprints,
    run_id: &str,
    observer: &dyn Observer,
) -> Result<kiln_artifact::Manifest, KilnError> {
    let warehouse = substrate.warehouse();
    if product.fail_if_exists && warehouse.current(&product.name).await?.is_some() {
        return Err(ControlError::Compile {
            at: product.at.clone(),
            product: product.name.clone(),
            message: "existing_data = 'error' and a committed build exists".into(),
        }
        .into());
    }
    let progress = Arc::new(WriteProgress::default());
    observer.event(Event::ProductStarted { product: product.name.clone(), progress: Arc::clone(&progress) });

    let ctx = substrate.context();
    let state = ctx.state();
    let exec_err = |e: datafusion::error::DataFusionError| {
        KilnError::Data(kiln_data::DataError::Execution { context: format!("product `{}`", product.name), source: e })
    };
    let physical = state.query_planner().create_physical_plan(&product.plan, &state).await.map_err(exec_err)?;
    let task = ctx.task_ctx();
    let partitions = physical.properties().output_partitioning().partition_count();
    let streams = (0..partitions)
        .map(|p| physical.execute(p, Arc::clone(&task)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(exec_err)?;

    // The Arrow writer embeds ARROW:schema itself; DataFusion's properties builder must not
    // insist on finding it in the key-value metadata.
    let mut global = state.config().options().execution.parquet.clone();
    global.skip_arrow_metadata = true;
    let parquet = TableParquetOptions { global, ..Default::default() };
    let properties =
        WriterPropertiesBuilder::try_from(&parquet).map_err(exec_err)?.set_created_by("kiln".into()).build();
    let tier = if product.order_by.is_empty() { 1 } else { 3 };
    let spec = Arc::new(WriteSpec {
        product: product.name.clone(),
        build_id: build_id.to_owned(),
        run_id: run_id.to_owned(),
        schema: Arc::clone(&product.schema),
        schema_fp: product.schema_fp.clone(),
        max_rows_per_file: product.max_rows_per_file,
        properties,
        ordering_tier: tier,
        // Every product: its declared contract, or the planned schema it promised downstream.
        verify_contract: true,
        sort_keys: product
            .order_by
            .iter()
            .map(|(c, asc)| format!("{c} {}", if *asc { "ASC" } else { "DESC" }))
            .collect(),
    });
    let mut manifest = write_dataset(warehouse, streams, spec, progress).await?;
    manifest.fingerprints = Some(fingerprints.clone());
    warehouse.commit(&manifest).await?;
    if let Some(table) = substrate.product_table(&product.name) {
        table.bind(warehouse, &manifest)?;
    }
    Ok(manifest)
}

/// `YYYYMMDDTHHMMSS-<pid>-<nanos>`: sortable by time, unique per process and run.
fn new_run_id() -> String {
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
fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
