//! `kiln rollback` and `kiln gc`: restoring a product's previous build, and deleting
//! the files no retained version of any table needs.
//!
//! Both read tables' histories (the only commands that do besides conversion; readers only
//! read the latest version). Rollback is a Delta RESTORE commit, as atomic as any commit.
//! Gc vacuums each table (delta-rs, keeping the files of its `[storage] retain_versions`
//! latest Kiln versions), then deletes the build directories no retained version and no
//! pending side-dataset commit uses (superseded builds' state files and sidecars,
//! leftovers of failed or killed builds), so a gc killed midway leaves every retained
//! version whole.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{ArtifactStore, DeletedBuild, GcReport, Manifest, RollbackReport};
use kiln_control::Project;
use kiln_data::Warehouse;

use crate::lock::Wait;
use crate::{KilnError, Observer};

fn open(dir: &Path) -> Result<(Project, Warehouse, ArtifactStore), KilnError> {
    let project = Project::load(dir)?;
    let warehouse = Warehouse::open(&project.config.storage.warehouse, &project.root)?;
    let store = ArtifactStore::open(&project.config.storage.artifacts, &project.root)?;
    Ok((project, warehouse, store))
}

/// Restores the product's committed build before the current one (the latest earlier
/// version Kiln recorded whose run came before the current build's) as a new version of
/// its table. The next `kiln build` sees the restored build id and rebuilds the product
/// (and what reads it) unless its definition and inputs match that build again.
pub async fn rollback(
    dir: &Path,
    product: &str,
    env: &str,
    wait: Wait,
    observer: &dyn Observer,
) -> Result<RollbackReport, KilnError> {
    let (_, warehouse, _) = open(dir)?;
    let _writer = crate::lock::hold(&warehouse, "rollback", wait, observer).await?;
    let warehouse = warehouse.open_env(env, false).await?;
    let product_error = |message: String| KilnError::Product { product: product.to_owned(), message };
    let Some(current) = warehouse.current(product).await? else {
        return Err(product_error("no committed build".into()));
    };
    let from = current.version.unwrap_or_default();
    let history = warehouse.history(product).await?;
    let earlier = history
        .iter()
        .rev()
        .filter(|v| v.version < from)
        .find(|v| v.record.as_ref().is_some_and(|r| r.run_id < current.run_id));
    let Some(earlier) = earlier else {
        return Err(product_error(format!(
            "no committed build before run {} (its table has no earlier Kiln version)",
            current.run_id
        )));
    };
    let target = warehouse.version(product, earlier.version).await?;
    let restored = warehouse.restore(&current, &target).await?;
    Ok(RollbackReport {
        format_version: REPORT_FORMAT_VERSION,
        product: product.to_owned(),
        from_build_id: current.build_id,
        from_run_id: current.run_id,
        to_build_id: target.build_id,
        to_run_id: target.run_id,
        from_version: from,
        to_version: earlier.version,
        version: restored.version.unwrap_or_default(),
    })
}

/// What gc keeps of one dataset.
struct Retained {
    /// The versions whose files stay, and their manifests (the latest first).
    versions: Vec<u64>,
    manifests: Vec<Manifest>,
    /// Build directories some version of the table was committed from.
    committed_dirs: BTreeSet<String>,
}

/// Vacuums every table, keeping the files of its latest `[storage] retain_versions` Kiln
/// versions; deletes the build directories nothing retained uses, the build records of
/// builds no retained version holds, the canonical plans no retained build uses, and the
/// blobs no remaining record names.
///
/// Every environment is collected the same way (its own tables and build directories),
/// and a version some environment's binding reads (warehouse::env) is retained as if it
/// were one of its table's latest. A directory of an environment whose document is
/// missing (a creation or drop killed midway) is deleted.
///
/// Tables of products the project no longer defines are reported in `removed` and kept,
/// or, with `drop_removed`, deleted whole (`dropped`) — unless an environment binds one
/// (it stays, reported), or a project file does not parse (its products are unknown, so
/// nothing is dropped: an error).
pub async fn gc(dir: &Path, drop_removed: bool, wait: Wait, observer: &dyn Observer) -> Result<GcReport, KilnError> {
    let (project, base, store) = open(dir)?;
    if drop_removed && let Some(problem) = project.problems.first() {
        return Err(KilnError::Usage(format!(
            "gc --drop-removed: the project's products are not all known ({problem}); fix it first"
        )));
    }
    let _writer = crate::lock::hold(&base, "gc", wait, observer).await?;
    let retain = project.config.storage.retain_versions.get() as usize;
    let mut report = GcReport { format_version: REPORT_FORMAT_VERSION, ..GcReport::default() };
    let docs = base.environments().await?;
    let mut bound: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for doc in &docs {
        for b in doc.bindings.values() {
            bound.entry(b.table.clone()).or_default().push(b.version);
        }
    }
    let known: BTreeSet<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    for (path, _) in base.objects("__env/").await? {
        let Some(env) = path.strip_prefix("__env/").and_then(|r| r.split_once('/')).map(|(e, _)| e) else { continue };
        if !known.contains(env) {
            base.delete(&path).await?;
        }
    }
    let mut plans_in_use = BTreeSet::new();
    let mut builds_in_use = BTreeSet::new();
    let mut envs = vec![base.open_env(kiln_data::warehouse::PROD, true).await?];
    for doc in &docs {
        envs.push(base.open_env(&doc.name, false).await?);
    }
    // Datasets of products no longer defined: a dataset is its product's, or a derived
    // one (`<p>__rejected`, `<p>__failures`, `<v>__late`) of a product.
    let defined: BTreeSet<&str> = project.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    let owner = |dataset: &str| {
        ["__rejected", "__failures", "__late"]
            .iter()
            .find_map(|s| dataset.strip_suffix(s))
            .unwrap_or(dataset)
            .to_owned()
    };
    for dataset in envs[0].products().await? {
        let product = owner(&dataset);
        if defined.contains(product.as_str()) || defined.contains(dataset.as_str()) {
            continue;
        }
        if drop_removed && !bound.contains_key(&dataset) {
            for (path, _) in base.objects(&format!("{dataset}/")).await? {
                base.delete(&path).await?;
            }
            report.dropped.push(dataset);
        } else {
            report.removed.push(dataset);
        }
    }
    for warehouse in &envs {
        gc_env(warehouse, retain, &bound, &mut report, &mut plans_in_use, &mut builds_in_use).await?;
    }
    report.plans = store.retain_plans(&plans_in_use).await?;
    // Results of unit tests no longer defined (only when every file parsed: the tests of
    // a file that does not are unknown).
    if project.problems.is_empty() {
        let tests: BTreeSet<String> = project
            .graph
            .nodes
            .iter()
            .filter(|n| n.kind == kiln_control::NodeKind::Test)
            .map(|n| n.name.clone())
            .collect();
        report.test_results = store.retain_test_runs(&tests).await?;
    }
    let mut blobs_in_use = BTreeSet::new();
    for (product, build_id) in store.build_records().await? {
        if builds_in_use.contains(&(product.clone(), build_id.clone())) {
            if let Some(record) = store.build_record(&product, &build_id).await? {
                blobs_in_use.extend(record.substrait);
            }
        } else {
            store.delete_build_record(&product, &build_id).await?;
            report.records += 1;
        }
    }
    report.blobs = store.retain_blobs(&blobs_in_use).await?;
    report.empty_dirs = base.prune_empty_dirs()?;
    Ok(report)
}

/// Gc of one environment's tables and build directories (see [`gc`]); `bound`: the
/// versions environments' bindings read, by table root.
async fn gc_env(
    warehouse: &Warehouse,
    retain: usize,
    bound: &BTreeMap<String, Vec<u64>>,
    report: &mut GcReport,
    plans_in_use: &mut BTreeSet<String>,
    builds_in_use: &mut BTreeSet<(String, String)>,
) -> Result<(), KilnError> {
    let products = warehouse.products().await?;

    // First what every table keeps, and the side-dataset commits a view's latest
    // checkpoint carries (their own tables may not have them yet when a run was killed).
    let mut retained: BTreeMap<String, Retained> = BTreeMap::new();
    let mut pending: BTreeMap<String, Vec<kiln_artifact::KilnCommit>> = BTreeMap::new();
    for product in &products {
        let history = warehouse.history(product).await?;
        let Some(latest) = history.last().map(|v| v.version) else { continue };
        let mut versions = vec![latest];
        versions.extend(history.iter().rev().filter(|v| v.record.is_some()).take(retain).map(|v| v.version));
        let binds = bound.get(&warehouse.scoped(product)).map(Vec::as_slice).unwrap_or_default();
        versions.extend(binds.iter().filter(|v| history.iter().any(|h| h.version == **v)));
        versions.dedup();
        versions[1..].sort_unstable_by(|a, b| b.cmp(a));
        versions.dedup();
        let mut manifests = Vec::with_capacity(versions.len());
        for &v in &versions {
            manifests.push(warehouse.version(product, v).await?);
        }
        if let Some(current) = manifests.first() {
            for (name, side) in &current.side {
                pending.entry(name.clone()).or_default().push(side.clone());
            }
        }
        let committed_dirs = history.iter().filter_map(|v| v.record.as_ref().map(|r| r.build_dir.clone())).collect();
        retained.insert(product.clone(), Retained { versions, manifests, committed_dirs });
    }

    for product in products {
        let sides = pending.get(&product).map(Vec::as_slice).unwrap_or_default();
        let pending_use = |dir: &str| {
            let prefix = format!("{dir}/");
            sides.iter().any(|s| s.build_dir == dir || s.added.iter().any(|f| f.path.starts_with(&prefix)))
        };
        let Some(kept) = retained.get(&product) else {
            // No table: a dataset whose every build failed or was killed (leftovers), a
            // side dataset whose first commit a view's checkpoint still carries, or one in
            // the pre-Delta layout (left alone until `kiln build` converts it).
            if warehouse.current(&product).await.is_err() {
                continue;
            }
            let objects = warehouse.objects(&warehouse.scoped(&format!("{product}/builds/"))).await?;
            sweep(warehouse, &product, &objects, &BTreeSet::new(), pending_use, &BTreeSet::new(), report).await?;
            continue;
        };
        report.kept += 1;
        report.versions_kept += kept.versions.len() as u64;
        for m in &kept.manifests {
            builds_in_use.insert((product.clone(), m.build_id.clone()));
            if let Some(f) = &m.fingerprints {
                plans_in_use.insert(f.query_fp.clone());
            }
        }
        let in_use = |dir: &str| {
            let prefix = format!("{dir}/");
            pending_use(dir)
                || kept
                    .manifests
                    .iter()
                    .any(|m| m.build_dir == dir || m.files.iter().any(|f| f.path.starts_with(&prefix)))
        };
        // Before the vacuum: what the build directories hold, for the report.
        let objects = warehouse.objects(&warehouse.scoped(&format!("{product}/builds/"))).await?;
        let sizes: BTreeMap<&str, u64> = objects.iter().map(|(p, size)| (p.as_str(), *size)).collect();
        let vacuumed: BTreeSet<String> = warehouse.vacuum(&product, &kept.versions).await?.into_iter().collect();
        for path in &vacuumed {
            // Files of directories that stay (replaced partitions); the rest are counted
            // with their directories below.
            if build_dir_of(path).is_some_and(&in_use) {
                report.files += 1;
                report.bytes += sizes.get(path.as_str()).copied().unwrap_or(0);
            }
        }
        sweep(warehouse, &product, &objects, &vacuumed, in_use, &kept.committed_dirs, report).await?;
        // A conversion from the pre-Delta layout killed before it removed the pointer.
        warehouse.delete(&warehouse.scoped(&format!("{product}/_current.json"))).await?;
    }
    Ok(())
}

/// `[__env/<env>/]<product>/builds/<run>` of a warehouse-relative file path.
fn build_dir_of(path: &str) -> Option<&str> {
    let start = path.len() - kiln_data::warehouse::unscoped(path).len();
    let rest = &path[start..];
    let mut slashes = rest.match_indices('/').map(|(i, _)| i);
    let end = slashes.nth(2)?;
    rest.get(..end).filter(|d| d.split('/').nth(1) == Some("builds")).map(|d| &path[..start + d.len()])
}

/// Deletes every build directory of `product` that `in_use` does not keep: `objects` is
/// what the directories held before the vacuum, which already deleted `vacuumed`.
async fn sweep(
    warehouse: &Warehouse,
    product: &str,
    objects: &[(String, u64)],
    vacuumed: &BTreeSet<String>,
    in_use: impl Fn(&str) -> bool,
    committed: &BTreeSet<String>,
    report: &mut GcReport,
) -> Result<(), KilnError> {
    let mut dirs: BTreeMap<&str, Vec<&(String, u64)>> = BTreeMap::new();
    for object in objects {
        if let Some(dir) = build_dir_of(&object.0) {
            dirs.entry(dir).or_default().push(object);
        }
    }
    for (dir, objects) in dirs {
        if in_use(dir) {
            continue;
        }
        let (mut files, mut bytes) = (0, 0);
        for (path, size) in objects {
            if !vacuumed.contains(path) {
                warehouse.delete(path).await?;
            }
            files += 1;
            bytes += size;
        }
        report.files += files;
        report.bytes += bytes;
        report.deleted.push(DeletedBuild {
            product: product.to_owned(),
            committed: committed.contains(dir),
            build_dir: dir.to_owned(),
            files,
            bytes,
        });
    }
    Ok(())
}

/// `kiln optimize [SELECTION]`: compacts the small files of every selected product and
/// view (kiln_data::compact), each in one commit that changes no data; a dataset that is
/// not appended to (tier 2 and 3, rewritten whole by each build) or has no small files is
/// left as it is. Run it while nothing writes the dataset: a stream or build committing
/// meanwhile makes one of the two commits fail (nothing is lost; rerun it), which
/// `compact_after` avoids by compacting inside the writing run.
pub async fn optimize(
    dir: &Path,
    options: &crate::BuildOptions,
    observer: &dyn Observer,
) -> Result<kiln_artifact::OptimizeReport, KilnError> {
    use crate::session::{Need, Session};
    let (_, base, _) = open(dir)?;
    let _writer = crate::lock::hold(&base, "optimize", options.wait, observer).await?;
    let mut session = Session::open(dir, options, Need::Versions, observer).await?;
    let run_id = kiln_artifact::time::new_run_id();
    let mut report = kiln_artifact::OptimizeReport {
        format_version: REPORT_FORMAT_VERSION,
        run_id: run_id.clone(),
        datasets: Vec::new(),
    };
    let graph = std::sync::Arc::clone(&session.graph);
    for i in session.order.clone() {
        let node = &graph.nodes[i];
        let kind = node.kind;
        if !session.selected.contains(&i)
            || !matches!(kind, kiln_control::NodeKind::Product | kiln_control::NodeKind::View)
        {
            continue;
        }
        session.ensure_compiled(i).await?;
        let Some(product) = session.nodes[i].compiled.clone() else {
            let message = session.nodes[i].failed.clone().unwrap_or_else(|| "does not compile".into());
            return Err(KilnError::Product { product: node.name.clone(), message });
        };
        let mut entry = kiln_artifact::OptimizedDataset { product: node.name.clone(), ..Default::default() };
        match session.warehouse.current(&node.name).await? {
            None => entry.skipped = Some("no committed build".into()),
            Some(current) => {
                match crate::execute::compact_product(&session.substrate, &product, &current, &run_id, None).await? {
                    Some(done) => {
                        entry.version = done.manifest.version;
                        entry.files_before = done.files_before;
                        entry.files_after = done.files_after;
                    }
                    None if current.ordering_tier > 1 => {
                        entry.skipped =
                            Some(format!("ordering tier {}: each build writes it whole", current.ordering_tier));
                    }
                    None => {
                        entry.skipped = Some(format!("{} files, no two small ones in a partition", current.files.len()))
                    }
                }
            }
        }
        report.datasets.push(entry);
    }
    Ok(report)
}
