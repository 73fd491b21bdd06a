//! Environments (kiln_data::warehouse's `env` module has the layout and the commit
//! protocol): listing, creating, dropping, showing and diffing them, promoting one into
//! another, and comparing two builds of a product row by row (`kiln table-diff`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use kiln_artifact::env::{
    ColumnDiff, EnvDiffEntry, EnvDiffReport, EnvList, EnvSummary, EnvTable, EnvTables, PromoteReport, PromotedDataset,
    RowDiff, TableDiffReport, TableSide,
};
use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{Manifest, Reason};
use kiln_data::Warehouse;
use kiln_data::warehouse::PROD;

use crate::lock::{Wait, WriterLock};
use crate::{KilnError, Observer};

/// The project's warehouse (as prod).
fn warehouse(dir: &Path) -> Result<Warehouse, KilnError> {
    let project = kiln_control::Project::load(dir)?;
    Ok(Warehouse::open(&project.config.storage.warehouse, &project.root)?)
}

/// The project's warehouse (as prod) with its writer lock held for `command`.
async fn writing(
    dir: &Path,
    command: &str,
    wait: Wait,
    observer: &dyn Observer,
) -> Result<(Warehouse, WriterLock), KilnError> {
    let project = kiln_control::Project::load(dir)?;
    let base = Warehouse::open(&project.config.storage.warehouse, &project.root)?;
    let lock = crate::lock::hold(&base, command, wait, observer).await?;
    Ok((base, lock))
}

/// Side datasets (`__rejected`, `__failures`, `__late`) travel with their product and are
/// not listed as products.
fn is_side(name: &str) -> bool {
    ["__rejected", "__failures", "__late"].iter().any(|s| name.ends_with(s))
}

/// `kiln envs`: prod and every other environment, with the products whose build differs
/// from prod's.
pub async fn envs(dir: &Path) -> Result<EnvList, KilnError> {
    let base = warehouse(dir)?;
    let prod = base.open_env(PROD, false).await?;
    // Prod's build of each product, read once for every environment's comparison.
    let mut prod_builds = BTreeMap::new();
    for d in prod.datasets().await?.into_iter().filter(|d| !is_side(d)) {
        if let Some(m) = prod.current(&d).await? {
            prod_builds.insert(d, m.build_id);
        }
    }
    let mut environments = vec![EnvSummary {
        name: PROD.to_owned(),
        from: PROD.to_owned(),
        created: None,
        products: prod_builds.len() as u64,
        differs: Vec::new(),
    }];
    for doc in base.environments().await? {
        let env = base.open_env(&doc.name, false).await?;
        let mut products = 0;
        let mut differs = Vec::new();
        for d in env.datasets().await?.into_iter().filter(|d| !is_side(d)) {
            let Some(mine) = env.current(&d).await? else { continue };
            products += 1;
            if prod_builds.get(&d) != Some(&mine.build_id) {
                differs.push(d);
            }
        }
        environments.push(EnvSummary { name: doc.name, from: doc.from, created: Some(doc.created), products, differs });
    }
    Ok(EnvList { format_version: REPORT_FORMAT_VERSION, environments })
}

/// `kiln env create NAME [--from ENV]`: a new environment bound to `from`'s builds (no
/// data copied).
pub async fn env_create(
    dir: &Path,
    name: &str,
    from: &str,
    wait: Wait,
    observer: &dyn Observer,
) -> Result<EnvSummary, KilnError> {
    let (base, _writer) = writing(dir, "env create", wait, observer).await?;
    let source = base.open_env(from, false).await?;
    let doc = base.create_env(name, &source).await?;
    let products = doc.bindings.keys().filter(|d| !is_side(d)).count() as u64;
    Ok(EnvSummary { name: doc.name, from: doc.from, created: Some(doc.created), products, differs: Vec::new() })
}

/// `kiln env drop NAME`: the environment and its own tables; how many objects went.
pub async fn env_drop(dir: &Path, name: &str, wait: Wait, observer: &dyn Observer) -> Result<u64, KilnError> {
    let (base, _writer) = writing(dir, "env drop", wait, observer).await?;
    Ok(base.drop_env(name).await?)
}

/// `kiln env show NAME`: for every dataset, the Delta table and version an external
/// reader reads.
pub async fn env_show(dir: &Path, name: &str) -> Result<EnvTables, KilnError> {
    let env = warehouse(dir)?.open_env(name, false).await?;
    let mut datasets = Vec::new();
    for d in env.datasets().await? {
        let (Some(binding), Some(current)) = (env.current_binding(&d).await?, env.current(&d).await?) else {
            continue;
        };
        datasets.push(EnvTable {
            dataset: d,
            table: binding.table,
            version: binding.version,
            build_id: current.build_id,
        });
    }
    Ok(EnvTables { format_version: REPORT_FORMAT_VERSION, env: name.to_owned(), datasets })
}

/// `kiln env diff A B`: per product, the same build, a different one (and why), or a
/// build in one environment only.
pub async fn env_diff(dir: &Path, a: &str, b: &str) -> Result<EnvDiffReport, KilnError> {
    let base = warehouse(dir)?;
    let (wa, wb) = (base.open_env(a, false).await?, base.open_env(b, false).await?);
    let names: BTreeSet<String> = wa.datasets().await?.into_iter().chain(wb.datasets().await?).collect();
    let mut products = Vec::new();
    for name in names.into_iter().filter(|d| !is_side(d)) {
        let (ma, mb) = (wa.current(&name).await?, wb.current(&name).await?);
        let (status, reasons) = match (&ma, &mb) {
            (None, None) => continue,
            (Some(_), None) => ("only_a", Vec::new()),
            (None, Some(_)) => ("only_b", Vec::new()),
            (Some(x), Some(y)) if x.build_id == y.build_id => ("same", Vec::new()),
            (Some(x), Some(y)) => ("different", reasons_between(y, x)),
        };
        products.push(EnvDiffEntry {
            product: name,
            status: status.to_owned(),
            a_build_id: ma.map(|m| m.build_id),
            b_build_id: mb.map(|m| m.build_id),
            reasons,
        });
    }
    Ok(EnvDiffReport { format_version: REPORT_FORMAT_VERSION, a: a.to_owned(), b: b.to_owned(), products })
}

/// Why build `new` differs from build `old`, from their fingerprints (the reasons
/// `kiln plan` gives, without the plan diff, which needs the compiled product).
fn reasons_between(old: &Manifest, new: &Manifest) -> Vec<Reason> {
    let (Some(o), Some(n)) = (&old.fingerprints, &new.fingerprints) else { return vec![Reason::NoRecord] };
    kiln_control::decision::fingerprint_reasons(o, n, || None, |_| Vec::new())
}

/// `kiln promote FROM --to TO`: every dataset of `from` whose build differs becomes
/// `to`'s, all-or-nothing (kiln_data::warehouse's `env` module).
pub async fn promote(
    dir: &Path,
    from: &str,
    to: &str,
    wait: Wait,
    observer: &dyn Observer,
) -> Result<PromoteReport, KilnError> {
    let (base, _writer) = writing(dir, "promote", wait, observer).await?;
    let t = Instant::now();
    let source = base.open_env(from, false).await?;
    let target = base.open_env(to, false).await?;
    let outcome = target.promote_from(&source).await?;
    Ok(PromoteReport {
        format_version: REPORT_FORMAT_VERSION,
        from: from.to_owned(),
        to: to.to_owned(),
        changed: outcome
            .changed
            .into_iter()
            .map(|(dataset, (was, now))| PromotedDataset { dataset, was, now })
            .collect(),
        unchanged: outcome.unchanged,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// `kiln table-diff PRODUCT --env A --env B [--key K,...]`: the schema, row counts and,
/// with a key, the rows only in one build and the changed rows per column, computed by
/// DataFusion over the two committed builds (aggregates over a streaming full outer join:
/// neither side is materialized; samples are LIMIT queries).
pub async fn table_diff(
    dir: &Path,
    product: &str,
    a: &str,
    b: &str,
    key: &[String],
) -> Result<TableDiffReport, KilnError> {
    let base = warehouse(dir)?;
    let ctx = SessionContext::new();
    base.register(ctx.runtime_env().as_ref())?;
    let mut sides = Vec::new();
    let mut schemas = Vec::new();
    for (env, alias) in [(a, "kiln_a"), (b, "kiln_b")] {
        let wh = base.open_env(env, false).await?;
        let Some(manifest) = wh.current(product).await? else {
            return Err(KilnError::Product {
                product: product.to_owned(),
                message: format!("no committed build in environment `{env}`"),
            });
        };
        let schema = Arc::new(wh.stored_schema(&manifest).await?);
        let table = kiln_data::ProductTable::new(alias, Arc::clone(&schema));
        table.bind(&wh, &manifest)?;
        ctx.register_table(alias, Arc::new(table)).map_err(sql_error)?;
        sides.push(TableSide { env: env.to_owned(), build_id: manifest.build_id.clone(), rows: 0 });
        schemas.push(schema);
    }
    for (side, alias) in sides.iter_mut().zip(["kiln_a", "kiln_b"]) {
        let rows = scalar_u64(&ctx, &format!("SELECT count(*) FROM {alias}")).await?;
        side.rows = rows;
    }
    let (sa, sb) = (&schemas[0], &schemas[1]);
    let names = |s: &Schema| s.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>();
    let columns_only_a: Vec<String> = names(sa).into_iter().filter(|c| sb.field_with_name(c).is_err()).collect();
    let columns_only_b: Vec<String> = names(sb).into_iter().filter(|c| sa.field_with_name(c).is_err()).collect();
    let mut columns_retyped = Vec::new();
    let mut common = Vec::new();
    for f in sa.fields() {
        if let Ok(g) = sb.field_with_name(f.name()) {
            if f.data_type() == g.data_type() {
                common.push(f.name().clone());
            } else {
                columns_retyped.push(format!("{}: {} -> {}", f.name(), f.data_type(), g.data_type()));
            }
        }
    }
    let rows = if key.is_empty() {
        None
    } else {
        for k in key {
            if !common.contains(k) {
                return Err(KilnError::Usage(format!(
                    "key column `{k}` is not a column of both builds of `{product}` with one type (common: {})",
                    common.join(", ")
                )));
            }
        }
        Some(row_diff(&ctx, key, &common).await?)
    };
    let mut it = sides.into_iter();
    let (Some(a), Some(b)) = (it.next(), it.next()) else { return Err(KilnError::Internal("two sides".into())) };
    Ok(TableDiffReport {
        format_version: REPORT_FORMAT_VERSION,
        product: product.to_owned(),
        a,
        b,
        columns_only_a,
        columns_only_b,
        columns_retyped,
        rows,
    })
}

fn quote(c: &str) -> String {
    format!("\"{}\"", c.replace('"', "\"\""))
}

fn sql_error(e: datafusion::error::DataFusionError) -> KilnError {
    KilnError::Query(format!("table-diff: {e}"))
}

/// The full outer join of the two sides on `key` (NULL keys match NULL keys), with
/// `kiln_in_a` / `kiln_in_b` marking where each row came from.
fn joined(key: &[String], common: &[String]) -> String {
    let cols = |table: &str, side: &str| {
        common
            .iter()
            .map(|c| format!("{table}.{} AS {}", quote(c), quote(&format!("{side}_{c}"))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let on: Vec<String> = key
        .iter()
        .map(|k| format!("(a.{} IS NOT DISTINCT FROM b.{})", quote(&format!("a_{k}")), quote(&format!("b_{k}"))))
        .collect();
    format!(
        "(SELECT {}, true AS kiln_in_a FROM kiln_a) a FULL OUTER JOIN (SELECT {}, true AS kiln_in_b FROM kiln_b) b ON {}",
        cols("kiln_a", "a"),
        cols("kiln_b", "b"),
        on.join(" AND ")
    )
}

async fn row_diff(ctx: &SessionContext, key: &[String], common: &[String]) -> Result<RowDiff, KilnError> {
    let compared: Vec<&String> = common.iter().filter(|c| !key.contains(c)).collect();
    let differs = |c: &str| format!("(a.{} IS DISTINCT FROM b.{})", quote(&format!("a_{c}")), quote(&format!("b_{c}")));
    let both = "a.kiln_in_a AND b.kiln_in_b";
    let any = if compared.is_empty() {
        "false".to_owned()
    } else {
        compared.iter().map(|c| differs(c)).collect::<Vec<_>>().join(" OR ")
    };
    let mut select = vec![
        "count(*) FILTER (WHERE b.kiln_in_b IS NULL)".to_owned(),
        "count(*) FILTER (WHERE a.kiln_in_a IS NULL)".to_owned(),
        format!("count(*) FILTER (WHERE {both} AND ({any}))"),
    ];
    select.extend(compared.iter().map(|c| format!("count(*) FILTER (WHERE {both} AND {})", differs(c))));
    let from = joined(key, common);
    let aliased: Vec<String> = select.iter().enumerate().map(|(n, e)| format!("{e} AS kiln_c{n}")).collect();
    let batches = collect(ctx, &format!("SELECT {} FROM {from}", aliased.join(", "))).await?;
    let counts: Vec<u64> = match batches.iter().find(|b| b.num_rows() > 0) {
        Some(batch) => batch.columns().iter().map(|c| count_at(c.as_ref())).collect(),
        None => vec![0; select.len()],
    };
    let key_of =
        |side: &str| key.iter().map(|k| format!("{side}.{}", quote(&format!("{side}_{k}")))).collect::<Vec<_>>();
    let sample_keys = |side: &str, missing: &str| {
        format!("SELECT {} FROM {from} WHERE {missing} IS NULL ORDER BY 1 LIMIT 5", key_of(side).join(", "))
    };
    let sample_only_a = render_keys(key, &collect(ctx, &sample_keys("a", "b.kiln_in_b")).await?);
    let sample_only_b = render_keys(key, &collect(ctx, &sample_keys("b", "a.kiln_in_a")).await?);
    let mut columns = Vec::new();
    for (n, c) in compared.iter().enumerate() {
        let changed = counts.get(3 + n).copied().unwrap_or(0);
        if changed == 0 {
            continue;
        }
        let sql = format!(
            "SELECT {}, a.{}, b.{} FROM {from} WHERE {both} AND {} ORDER BY 1 LIMIT 3",
            key_of("a").join(", "),
            quote(&format!("a_{c}")),
            quote(&format!("b_{c}")),
            differs(c)
        );
        let mut sample = Vec::new();
        for batch in collect(ctx, &sql).await? {
            for row in 0..batch.num_rows() {
                let value = |col: usize| cell(batch.column(col).as_ref(), row);
                let k = (0..key.len()).map(|i| format!("{}={}", key[i], value(i))).collect::<Vec<_>>().join(", ");
                sample.push([k, value(key.len()), value(key.len() + 1)]);
            }
        }
        columns.push(ColumnDiff { column: (*c).clone(), changed, sample });
    }
    Ok(RowDiff {
        key: key.to_vec(),
        only_a: counts.first().copied().unwrap_or(0),
        only_b: counts.get(1).copied().unwrap_or(0),
        changed: counts.get(2).copied().unwrap_or(0),
        columns,
        sample_only_a,
        sample_only_b,
    })
}

/// The rows of a query with a LIMIT or a single aggregate row: small by construction.
async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, KilnError> {
    let df = ctx.sql(sql).await.map_err(sql_error)?;
    df.execute_stream().await.map_err(sql_error)?.try_collect().await.map_err(sql_error)
}

async fn scalar_u64(ctx: &SessionContext, sql: &str) -> Result<u64, KilnError> {
    let batches = collect(ctx, sql).await?;
    Ok(batches.iter().find(|b| b.num_rows() > 0).map_or(0, |b| count_at(b.column(0).as_ref())))
}

fn count_at(array: &dyn Array) -> u64 {
    match array.data_type() {
        DataType::Int64 => array.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0).max(0) as u64,
        DataType::UInt64 => array.as_primitive::<datafusion::arrow::datatypes::UInt64Type>().value(0),
        _ => 0,
    }
}

fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".to_owned();
    }
    array_value_to_string(array, row).unwrap_or_else(|e| format!("<{e}>"))
}

fn render_keys(key: &[String], batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let parts: Vec<String> =
                key.iter().enumerate().map(|(i, k)| format!("{k}={}", cell(batch.column(i).as_ref(), row))).collect();
            out.push(parts.join(", "));
        }
    }
    out
}
