//! `kiln build`: plan (control) -> execute and write (data) -> record (artifact).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use datafusion::common::config::TableParquetOptions;
use datafusion::parquet::file::properties::WriterPropertiesBuilder;
use kiln_artifact::{Action, ProductRun, RunSummary};
use kiln_control::compiler::{CompiledProduct, build_id};
use kiln_control::dag::NodeKind;
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
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub summary: RunSummary,
}

impl BuildReport {
    pub fn failed(&self) -> impl Iterator<Item = &ProductRun> {
        self.summary.products.iter().filter(|p| p.action == Action::Failed)
    }
}

/// Builds a project. Project-level problems (no project, syntax errors, unknown tables,
/// cycles) are an `Err`; per-product failures are reported in the summary, with every
/// independent product still built.
pub async fn build(dir: &Path, options: &BuildOptions, observer: &dyn Observer) -> Result<BuildReport, KilnError> {
    let started = Instant::now();
    let project = Project::load(dir)?;
    let config = &project.config;
    let profile_name = options.profile.clone().unwrap_or_else(|| config.profile.default.clone());
    let profile = RuntimeProfile::resolve(&profile_name, &config.profiles, &options.settings)?;

    if let Some(tpch) = &config.generate.tpch {
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
    for name in secrets.fallbacks() {
        observer.event(Event::Warning(format!(
            "secret `{name}` uses its fallback value from kiln.toml; set its environment variable outside development"
        )));
    }
    let functions = kiln_functions::Registry::builtin(secrets);
    let mut substrate = Substrate::new(&profile, warehouse.clone(), &project.root, functions)?;
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
            failed.insert(i, format!("upstream `{}` failed", graph.nodes[d].name));
            continue;
        }
        let (fi, si) = node.def;
        match &project.files[fi].statements[si] {
            Statement::Source(def) => match substrate.register_source(def).and_then(|s| Ok(s.data_version()?)) {
                Ok(version) => {
                    versions.insert(i, version);
                }
                Err(e) => {
                    failed.insert(i, e.to_string());
                }
            },
            Statement::Product(def) => match substrate.compile_product(def).await {
                Ok(c) => {
                    compiled.insert(i, c);
                }
                Err(e) => {
                    failed.insert(i, e.to_string());
                }
            },
        }
    }

    let run_id = new_run_id();
    let products: Vec<usize> =
        order.iter().copied().filter(|i| graph.nodes[*i].kind == NodeKind::Product && selected.contains(i)).collect();
    observer.event(Event::Planned { products: products.iter().map(|&i| graph.nodes[i].name.clone()).collect() });

    // Unselected upstream products are read from their committed builds.
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
                    failed.insert(i, format!("`{name}` is not selected and has no committed build (select it with +)"));
                }
            }
        }
    }

    let mut runs = Vec::new();
    for &i in &products {
        let node = &graph.nodes[i];
        let t = Instant::now();
        let upstream_failure = node.deps.iter().find(|d| failed.contains_key(d)).map(|&d| graph.nodes[d].name.clone());
        let run = if let Some(reason) = failed.get(&i) {
            let skipped = upstream_failure.is_some() && !compiled.contains_key(&i);
            product_run(&node.name, if skipped { Action::Skipped } else { Action::Failed }, Some(reason.clone()), t)
        } else if let Some(up) = upstream_failure {
            failed.insert(i, format!("upstream `{up}` failed"));
            product_run(&node.name, Action::Skipped, Some(format!("upstream `{up}` failed")), t)
        } else if let Some(product) = compiled.get(&i) {
            let upstream: Vec<(String, String)> = node
                .deps
                .iter()
                .filter_map(|d| versions.get(d).map(|v| (graph.nodes[*d].name.clone(), v.clone())))
                .collect();
            let id = build_id(&product.name, &product.schema_fp, &product.query_fp, &product.func_fp, &upstream);
            match run_product(&substrate, product, &id, &run_id, observer).await {
                Ok(manifest) => {
                    versions.insert(i, id.clone());
                    ProductRun {
                        product: node.name.clone(),
                        action: Action::Built,
                        build_id: Some(id),
                        rows: manifest.totals.rows_written,
                        files: manifest.totals.files,
                        bytes: manifest.totals.bytes,
                        seconds: t.elapsed().as_secs_f64(),
                        error: None,
                    }
                }
                Err(e) => {
                    failed.insert(i, e.to_string());
                    product_run(&node.name, Action::Failed, Some(e.to_string()), t)
                }
            }
        } else {
            product_run(&node.name, Action::Failed, Some("not compiled".into()), t)
        };
        observer.event(Event::ProductFinished(run.clone()));
        runs.push(run);
    }

    let summary = RunSummary {
        format_version: 1,
        run_id: run_id.clone(),
        project: config.project.name.clone(),
        products: runs,
        seconds: started.elapsed().as_secs_f64(),
    };
    let runs_dir = project.root.join(&config.storage.artifacts).join("runs").join(&run_id);
    std::fs::create_dir_all(&runs_dir)
        .map_err(|source| KilnError::Io { context: format!("cannot create {}", runs_dir.display()), source })?;
    std::fs::write(runs_dir.join("run_summary.json"), summary.to_json()?)
        .map_err(|source| KilnError::Io { context: format!("cannot write {}", runs_dir.display()), source })?;
    Ok(BuildReport { summary })
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
    }
}

/// Executes one compiled product into a new build and commits it.
async fn run_product(
    substrate: &Substrate,
    product: &CompiledProduct,
    build_id: &str,
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
    let manifest = write_dataset(warehouse, streams, spec, progress).await?;
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
