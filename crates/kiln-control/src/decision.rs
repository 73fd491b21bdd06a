//! Rebuild decisions: compare a product's new fingerprints with those recorded in its
//! committed manifest, and say why it must be built (brief §4, "Rebuild decisions are
//! explainable").
//!
//! A product is fresh when its committed build has the same build id. Otherwise each
//! fingerprint that differs is a [`Reason`]; a changed query carries the semantic diff when
//! the previous canonical plan is in the artifact store, and a changed upstream names the
//! upstream's columns this product reads (from its lineage), so "orders changed" comes with
//! "uses o_custkey, o_totalprice".
//!
//! # Column-scoped upstream versions
//!
//! A product's build id does not take an upstream product's build id but a version of
//! exactly what it reads from it (kiln_artifact::identity::scoped_upstream): the
//! upstream's row version and the versions of the columns it uses. Versions are computed
//! per build (kiln_artifact::identity::content_versions, recorded in each manifest): the
//! rows' version hashes what shapes rows (the canonical plan without its column-level
//! items, the settings, the functions, the inputs' rows and the columns that filter, join,
//! group or order), each column's version the rows' version, the column's definition and
//! the columns it is computed from; for a source both are its data version. So adding a column, or
//! changing one nobody downstream reads, leaves the downstream build ids unchanged (their
//! committed data is still exactly right); anything that can change a row or a read value
//! changes them.
use std::collections::BTreeSet;

use kiln_artifact::{BuildFingerprints, CanonicalPlan, Decision, Manifest, PlanDiff, Reason};

use crate::compiler::CompiledProduct;
use crate::diff::diff;

/// The decision for `product` whose new identity is (`fps`, `build_id`), given its
/// committed build (if any) and, when the query changed, the canonical plan of the
/// committed build (from the artifact store) to diff against.
pub fn decide(
    product: &CompiledProduct,
    fps: &BuildFingerprints,
    build_id: &str,
    current: Option<&Manifest>,
    previous: Option<&CanonicalPlan>,
) -> (Decision, Vec<Reason>) {
    let Some(current) = current else { return (Decision::Build, vec![Reason::NeverBuilt]) };
    if current.build_id == build_id {
        return (Decision::Fresh, Vec::new());
    }
    let Some(old) = &current.fingerprints else { return (Decision::Build, vec![Reason::NoRecord]) };
    let mut reasons = fingerprint_reasons(
        old,
        fps,
        || previous.map(|p| diff(p, &product.canonical)),
        |name| columns_read(product, name),
    );
    if reasons.is_empty() {
        // Same inputs, different id: the build-id encoding itself changed.
        reasons.push(Reason::NoRecord);
    }
    (Decision::Build, reasons)
}

/// Each fingerprint of `new` that differs from `old` as a [`Reason`] (`query_diff`: the
/// plan diff of a changed query, if known; `columns(upstream)`: the columns of a changed
/// upstream the product reads). Shared by [`decide`] and `kiln env diff`, which compares two committed
/// builds.
pub fn fingerprint_reasons(
    old: &BuildFingerprints,
    new: &BuildFingerprints,
    query_diff: impl FnOnce() -> Option<PlanDiff>,
    columns: impl Fn(&str) -> Vec<String>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    if old.schema_fp != new.schema_fp {
        reasons.push(Reason::SchemaChanged { old: old.schema_fp.clone(), new: new.schema_fp.clone() });
    }
    if old.query_fp != new.query_fp {
        reasons.push(Reason::QueryChanged { old: old.query_fp.clone(), new: new.query_fp.clone(), diff: query_diff() });
    }
    if old.runtime_fp != new.runtime_fp {
        reasons.push(Reason::RuntimeChanged { old: old.runtime_fp.clone(), new: new.runtime_fp.clone() });
    }
    if old.func_fp != new.func_fp {
        reasons.push(Reason::FunctionsChanged { old: old.func_fp.clone(), new: new.func_fp.clone() });
    }
    let names: BTreeSet<&String> = old.upstream.keys().chain(new.upstream.keys()).collect();
    for name in names {
        let (was, now) = (old.upstream.get(name), new.upstream.get(name));
        if was != now {
            reasons.push(Reason::UpstreamChanged {
                upstream: name.clone(),
                old: was.cloned(),
                new: now.cloned(),
                columns: columns(name),
            });
        }
    }
    reasons
}

/// The columns of `table` that any output column of `product` depends on, sorted.
pub fn columns_read(product: &CompiledProduct, table: &str) -> Vec<String> {
    let mut columns: BTreeSet<String> = BTreeSet::new();
    for c in &product.lineage {
        columns.extend(c.all().into_iter().filter(|b| b.table == table).map(|b| b.column.clone()));
    }
    columns.into_iter().collect()
}
