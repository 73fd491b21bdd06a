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
//! exactly what it reads from it ([`scoped_version`]): the upstream's row version and the
//! versions of the columns it uses. Versions are computed per build ([`content_versions`],
//! version 1, recorded in each manifest):
//!
//! ```text
//! rows(P)    = sha256("kiln.rows.v1\n" rows_fp "\n" runtime_fp "\n" func_fp "\n"
//!                     ("table " t " " rows(t) "\n")* ("ref " t.c " " col(t.c) "\n")*)
//! col(P, c)  = sha256("kiln.column.v1\n" rows(P) "\n" fp(c) "\n" ("ref " t.c " " col(t.c) "\n")*)
//! scoped(P)  = sha256("kiln.upstream.v1\n" rows(P) "\n" (c " " col(P, c) "\n")*)   for the columns used
//! ```
//!
//! where `rows_fp` hashes the canonical plan without its column-level items, the first
//! `ref` list is every column that shapes rows (filter, join, group, order), the second the
//! columns `c` is computed from or shaped by, `fp(c)` hashes `c`'s identity and type, and
//! for a source both `rows` and `col` are its data version. So adding a column, or
//! changing one nobody downstream reads, leaves the downstream build ids unchanged (their
//! committed data is still exactly right); anything that can change a row or a read value
//! changes them.
use std::collections::BTreeSet;

use kiln_artifact::plan::sha256_hex;
use kiln_artifact::{BuildFingerprints, CanonicalPlan, ContentVersions, Decision, Manifest, ProductShape, Reason};

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
    let mut reasons = Vec::new();
    if old.schema_fp != fps.schema_fp {
        reasons.push(Reason::SchemaChanged { old: old.schema_fp.clone(), new: fps.schema_fp.clone() });
    }
    if old.query_fp != fps.query_fp {
        reasons.push(Reason::QueryChanged {
            old: old.query_fp.clone(),
            new: fps.query_fp.clone(),
            diff: previous.map(|p| diff(p, &product.canonical)),
        });
    }
    if old.runtime_fp != fps.runtime_fp {
        reasons.push(Reason::RuntimeChanged { old: old.runtime_fp.clone(), new: fps.runtime_fp.clone() });
    }
    if old.func_fp != fps.func_fp {
        reasons.push(Reason::FunctionsChanged { old: old.func_fp.clone(), new: fps.func_fp.clone() });
    }
    let names: BTreeSet<&String> = old.upstream.keys().chain(fps.upstream.keys()).collect();
    for name in names {
        let (was, now) = (old.upstream.get(name), fps.upstream.get(name));
        if was != now {
            reasons.push(Reason::UpstreamChanged {
                upstream: name.clone(),
                old: was.cloned(),
                new: now.cloned(),
                columns: columns_read(product, name),
            });
        }
    }
    if reasons.is_empty() {
        // Same inputs, different id: the build-id encoding itself changed.
        reasons.push(Reason::NoRecord);
    }
    (Decision::Build, reasons)
}

/// The columns of `table` that any output column of `product` depends on, sorted.
pub fn columns_read(product: &CompiledProduct, table: &str) -> Vec<String> {
    let mut columns: BTreeSet<String> = BTreeSet::new();
    for c in &product.lineage {
        columns.extend(c.all().into_iter().filter(|b| b.table == table).map(|b| b.column.clone()));
    }
    columns.into_iter().collect()
}

/// The content versions of a build of a product with `shape` (see the module docs).
/// `upstream` gives each input table's versions (a source's: its data version as `rows`).
pub fn content_versions<'a>(
    shape: &ProductShape,
    runtime_fp: &str,
    func_fp: &str,
    upstream: &dyn Fn(&str) -> Option<&'a ContentVersions>,
) -> ContentVersions {
    let col = |b: &kiln_artifact::BaseColumn| -> &'a str {
        upstream(&b.table).map_or("", |v| v.columns.get(&b.column).unwrap_or(&v.rows).as_str())
    };
    let line = |text: &mut String, parts: &[&str]| {
        for p in parts {
            text.push_str(p);
        }
        text.push('\n');
    };
    let mut rows = String::with_capacity(256);
    line(&mut rows, &["kiln.rows.v1"]);
    line(&mut rows, &[&shape.rows_fp]);
    line(&mut rows, &[runtime_fp]);
    line(&mut rows, &[func_fp]);
    for t in &shape.tables {
        line(&mut rows, &["table ", t, " ", upstream(t).map_or("", |v| v.rows.as_str())]);
    }
    let mut row_refs: Vec<&kiln_artifact::BaseColumn> = shape.columns.iter().flat_map(|c| &c.others).collect();
    row_refs.sort();
    row_refs.dedup();
    for b in row_refs {
        line(&mut rows, &["ref ", &b.table, ".", &b.column, " ", col(b)]);
    }
    let rows = sha256_hex(rows.as_bytes());
    let columns = shape
        .columns
        .iter()
        .map(|c| {
            let mut text = String::with_capacity(256);
            line(&mut text, &["kiln.column.v1"]);
            line(&mut text, &[&rows]);
            line(&mut text, &[&c.fp]);
            let mut refs: Vec<&kiln_artifact::BaseColumn> = c.values.iter().chain(&c.others).collect();
            refs.sort();
            refs.dedup();
            for b in refs {
                line(&mut text, &["ref ", &b.table, ".", &b.column, " ", col(b)]);
            }
            (c.name.clone(), sha256_hex(text.as_bytes()))
        })
        .collect();
    ContentVersions { rows, columns }
}

/// The version of what a downstream product reads from an upstream product with content
/// `upstream`: its rows and the `used` columns (see the module docs).
pub fn scoped_version(upstream: &ContentVersions, used: &[String]) -> String {
    let mut text = String::with_capacity(64 + used.len() * 96);
    text.push_str("kiln.upstream.v1\n");
    text.push_str(&upstream.rows);
    text.push('\n');
    for c in used {
        text.push_str(c);
        text.push(' ');
        text.push_str(upstream.columns.get(c).unwrap_or(&upstream.rows));
        text.push('\n');
    }
    sha256_hex(text.as_bytes())
}
