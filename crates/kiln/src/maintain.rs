//! `kiln rollback` and `kiln gc`: moving a product's pointer back, and deleting what no
//! pointer names.
//!
//! Both list the warehouse (the only commands that do; readers never list). Rollback
//! commits an earlier manifest again, so it is as atomic as any commit. Gc deletes a build
//! directory manifest first, so a gc killed midway leaves an uncommitted directory, never
//! a committed build with missing files.

use std::collections::BTreeSet;
use std::path::Path;

use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{ArtifactStore, DeletedBuild, GcReport, RollbackReport};
use kiln_control::Project;
use kiln_data::Warehouse;

use crate::KilnError;

fn open(dir: &Path) -> Result<(Project, Warehouse, ArtifactStore), KilnError> {
    let project = Project::load(dir)?;
    let warehouse = Warehouse::open(&project.config.storage.warehouse, &project.root)?;
    let store = ArtifactStore::open(&project.config.storage.artifacts, &project.root)?;
    Ok((project, warehouse, store))
}

/// Makes the committed build before the current one visible again. The next `kiln build`
/// sees the rolled-back build id and rebuilds the product (and what reads it) unless its
/// definition and inputs match that build again.
pub async fn rollback(dir: &Path, product: &str) -> Result<RollbackReport, KilnError> {
    let (_, warehouse, _) = open(dir)?;
    let Some(current) = warehouse.current(product).await? else {
        return Err(KilnError::Product { product: product.to_owned(), message: "no committed build".into() });
    };
    let previous = warehouse
        .builds(product)
        .await?
        .into_iter()
        .filter_map(|(_, manifest)| manifest)
        .rfind(|m| m.run_id < current.run_id);
    let Some(previous) = previous else {
        return Err(KilnError::Product {
            product: product.to_owned(),
            message: format!("no committed build before run {} (gc deletes superseded builds)", current.run_id),
        });
    };
    warehouse.commit(&previous).await?;
    Ok(RollbackReport {
        format_version: REPORT_FORMAT_VERSION,
        product: product.to_owned(),
        from_build_id: current.build_id,
        from_run_id: current.run_id,
        to_build_id: previous.build_id,
        to_run_id: previous.run_id,
    })
}

/// Deletes every build directory no current manifest uses (superseded builds, and leftovers of
/// failed or killed builds), the build records of builds that are no longer current, the
/// canonical plans no current build uses, and the blobs no remaining record names.
pub async fn gc(dir: &Path) -> Result<GcReport, KilnError> {
    let (_, warehouse, store) = open(dir)?;
    let mut report = GcReport { format_version: REPORT_FORMAT_VERSION, ..GcReport::default() };
    let mut plans_in_use = BTreeSet::new();
    let mut current_builds = BTreeSet::new();
    let products = warehouse.products().await?;
    let mut currents = std::collections::BTreeMap::new();
    for product in &products {
        currents.insert(product.clone(), warehouse.current(product).await?);
    }
    // Manifests whose directories and files stay, per dataset: its current one, and the
    // side datasets' manifests a materialized view's checkpoint commits (their own
    // pointers may not have been switched yet when a run was killed).
    let mut keep: std::collections::BTreeMap<String, Vec<kiln_artifact::Manifest>> = Default::default();
    for (product, current) in &currents {
        let Some(m) = current else { continue };
        keep.entry(product.clone()).or_default().push(m.clone());
        for (name, side) in &m.side {
            keep.entry(name.clone()).or_default().push(side.clone());
        }
    }
    for product in products {
        let current = currents.get(&product).cloned().flatten();
        if let Some(m) = &current {
            report.kept += 1;
            current_builds.insert((product.clone(), m.build_id.clone()));
            if let Some(f) = &m.fingerprints {
                plans_in_use.insert(f.query_fp.clone());
            }
        }
        let kept = keep.get(&product).map(Vec::as_slice).unwrap_or_default();
        for (build_dir, manifest) in warehouse.builds(&product).await? {
            // The current build's directory, and earlier ones whose files it still lists
            // (existing_data = 'append' / 'delete_matching', streams), stay.
            let prefix = format!("{build_dir}/");
            if kept.iter().any(|c| c.build_dir == build_dir || c.files.iter().any(|f| f.path.starts_with(&prefix))) {
                continue;
            }
            let (files, bytes) = warehouse.delete_dir(&build_dir).await?;
            report.files += files;
            report.bytes += bytes;
            report.deleted.push(DeletedBuild {
                product: product.clone(),
                build_dir,
                committed: manifest.is_some(),
                files,
                bytes,
            });
        }
    }
    report.plans = store.retain_plans(&plans_in_use).await?;
    let mut blobs_in_use = BTreeSet::new();
    for (product, build_id) in store.build_records().await? {
        if current_builds.contains(&(product.clone(), build_id.clone())) {
            if let Some(record) = store.build_record(&product, &build_id).await? {
                blobs_in_use.extend(record.substrait);
            }
        } else {
            store.delete_build_record(&product, &build_id).await?;
            report.records += 1;
        }
    }
    report.blobs = store.retain_blobs(&blobs_in_use).await?;
    Ok(report)
}
