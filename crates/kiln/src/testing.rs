//! `kiln test` and `kiln freshness`.
//!
//! `kiln test` runs, without building, every constraint and audit of the selected
//! products on their committed builds (for CI over an existing warehouse), and every unit
//! test (`CREATE TEST ... FOR product`): the product's own compiled plan with each table
//! it reads swapped for its fixture rows, run in memory and compared with the expected
//! rows as multisets. Unit tests read and write nothing in the warehouse.
//!
//! `kiln freshness` measures how old each source's newest data is (the largest value of
//! its `freshness_column`, or its newest file's modification time) against its
//! `freshness_warn` / `freshness_error`; `kiln build` warns about the same.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use kiln_artifact::plan::REPORT_FORMAT_VERSION;
use kiln_artifact::{CheckStatus, FreshnessReport, SourceFreshness, TestReport, TestStatus, UnitTestRun};
use kiln_control::compiler::checks::rebind_scans;
use kiln_control::compiler::{CompiledFixture, FixtureFormat};
use kiln_control::dialect::Statement;
use kiln_control::{CompiledTest, NodeKind, Substrate};

use crate::KilnError;
use crate::events::{BuildOptions, Quiet};
use crate::session::{Need, Session};

/// `kiln test` (see the module docs). Selection (`options.select`) picks products; their
/// checks and the unit tests of them run.
pub async fn test(dir: &Path, options: &BuildOptions) -> Result<TestReport, KilnError> {
    let started = Instant::now();
    let mut session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    session.bind_all_committed().await?;
    let graph = Arc::clone(&session.graph);
    let products: Vec<usize> = session.products();
    let currents = session.currents(&products).await?;
    let mut checks = Vec::new();
    let mut not_built = Vec::new();
    for &i in &products {
        let name = graph.nodes[i].name.clone();
        if session.checks_fp(i).is_empty() {
            continue;
        }
        if !matches!(currents.get(&i), Some(Some(_))) {
            not_built.push(name);
            continue;
        }
        let outcome = match session.product_checks(i).await {
            Ok(compiled) => {
                let schema = session.substrate.product_table(&name).map(|t| Arc::clone(t.schema_ref()));
                match schema {
                    Some(schema) => crate::checks::run_checks(&session.substrate, &name, &schema, &compiled, None)
                        .await
                        .map(|r| r.runs),
                    None => Err(KilnError::Internal(format!("product `{name}` is not registered"))),
                }
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(runs) => checks.extend(runs),
            Err(e) => checks.push(kiln_artifact::CheckRun {
                name: "(compile)".into(),
                product: name,
                kind: "definition".into(),
                severity: "error".into(),
                status: CheckStatus::Error,
                failing_rows: 0,
                seconds: 0.0,
                error: Some(e.to_string()),
            }),
        }
    }
    let mut tests = Vec::new();
    let selected: Vec<usize> = (0..graph.nodes.len())
        .filter(|&n| graph.nodes[n].kind == NodeKind::Test)
        .filter(|&n| graph.nodes[n].target.is_some_and(|t| products.contains(&t)))
        .collect();
    for n in selected {
        let t = Instant::now();
        let node = &graph.nodes[n];
        let product = graph.nodes[n].target.map(|p| graph.nodes[p].name.clone()).unwrap_or_default();
        let run = match unit_test(&mut session, n).await {
            Ok(run) => run,
            Err(e) => UnitTestRun {
                name: node.name.clone(),
                product,
                status: TestStatus::Error,
                seconds: 0.0,
                missing: Vec::new(),
                unexpected: Vec::new(),
                mismatches: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        let run = UnitTestRun { seconds: t.elapsed().as_secs_f64(), ..run };
        let at = kiln_artifact::time::now_rfc3339();
        session.store.put_test_run(&kiln_artifact::LastTestRun { at, run: run.clone() }).await?;
        tests.push(run);
    }
    Ok(TestReport {
        format_version: REPORT_FORMAT_VERSION,
        project: session.project.config.project.name.clone(),
        checks,
        not_built,
        tests,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Compiles and runs unit test node `n`.
async fn unit_test(session: &mut Session, n: usize) -> Result<UnitTestRun, KilnError> {
    let graph = Arc::clone(&session.graph);
    let node = &graph.nodes[n];
    if let Some(broken) = &node.broken {
        return Err(KilnError::Product { product: node.name.clone(), message: broken.clone() });
    }
    let target = node.target.ok_or_else(|| KilnError::Internal(format!("test `{}` has no product", node.name)))?;
    let (fi, si) = node.def;
    let Statement::Test(def) = session.project.files[fi].statement(si)?.clone() else {
        return Err(KilnError::Internal(format!("`{}` is not a test", node.name)));
    };
    // The fixture tables' schemas: the tables the product reads, registered.
    for &d in &graph.nodes[target].deps {
        session.ensure_registered(d).await?;
    }
    let root = session.project.root.clone();
    let product = session.compiled_product(target).await?.clone();
    let test = session.substrate.compile_test(&def, &product, &root).await?;
    run_unit_test(&session.substrate, &test).await
}

/// Runs a compiled unit test (see the module docs).
async fn run_unit_test(substrate: &Substrate, test: &CompiledTest) -> Result<UnitTestRun, KilnError> {
    let mut tables: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    for (table, fixture) in &test.given {
        let schema =
            substrate.table_schema(table).await.ok_or_else(|| KilnError::Internal(format!("no table `{table}`")))?;
        let batches = fixture_rows(substrate, fixture, &schema, &test.name, table).await?;
        let mem = MemTable::try_new(Arc::clone(&schema), vec![batches]).map_err(exec(&test.name))?;
        tables.insert(table.clone(), Arc::new(mem));
    }
    let plan = rebind_scans(test.plan.clone(), &tables)?;
    let state = substrate.context().state();
    let plan = state.optimize(&plan).map_err(exec(&test.name))?;
    let physical = substrate.physical_plan(&plan).await?;
    // Unit-test results are fixture-sized: collected (a documented boundary).
    let actual = datafusion::physical_plan::collect(physical, state.task_ctx()).await.map_err(exec(&test.name))?;
    let expected = fixture_rows(substrate, &test.expect, &test.schema, &test.name, &test.product).await?;
    let (actual, expected) = (rows(&actual)?, rows(&expected)?);
    let (missing, unexpected) = multiset_diff(&expected, &actual);
    let columns: Vec<String> = test.schema.fields().iter().map(|f| f.name().clone()).collect();
    let mismatches = mismatches(&missing, &unexpected, &columns);
    let status = if missing.is_empty() && unexpected.is_empty() { TestStatus::Pass } else { TestStatus::Fail };
    let show = |rows: &[Vec<String>]| rows.iter().map(|r| format!("({})", r.join(", "))).collect();
    Ok(UnitTestRun {
        name: test.name.clone(),
        product: test.product.clone(),
        status,
        seconds: 0.0,
        missing: show(&missing),
        unexpected: show(&unexpected),
        mismatches,
        error: None,
    })
}

fn exec(context: &str) -> impl Fn(datafusion::error::DataFusionError) -> KilnError + '_ {
    move |e| KilnError::Data(kiln_data::DataError::Execution { context: format!("test `{context}`"), source: e })
}

/// A fixture's rows with exactly `schema` (a NULL in a NOT NULL column is an error).
async fn fixture_rows(
    substrate: &Substrate,
    fixture: &CompiledFixture,
    schema: &SchemaRef,
    test: &str,
    table: &str,
) -> Result<Vec<RecordBatch>, KilnError> {
    let ctx = substrate.context();
    let batches = match fixture {
        CompiledFixture::Rows(plan) => {
            let state = ctx.state();
            let plan = state.optimize(plan).map_err(exec(test))?;
            let physical = substrate.physical_plan(&plan).await?;
            datafusion::physical_plan::collect(physical, state.task_ctx()).await.map_err(exec(test))?
        }
        CompiledFixture::File { path, format, at, .. } => {
            let nullable = Arc::new(Schema::new(
                schema.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)).collect::<Vec<_>>(),
            ));
            let file = path.to_string_lossy().into_owned();
            let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
            let frame = match format {
                FixtureFormat::Csv => {
                    ctx.read_csv(&file, CsvReadOptions::new().schema(&nullable).has_header(true).file_extension(&ext))
                        .await
                }
                FixtureFormat::Json => {
                    ctx.read_json(&file, JsonReadOptions::default().schema(&nullable).file_extension(&ext)).await
                }
                FixtureFormat::Parquet => {
                    ctx.read_parquet(&file, ParquetReadOptions::default().schema(&nullable).file_extension(&ext)).await
                }
            }
            .map_err(|e| {
                KilnError::Query(format!("{at}: test `{test}`: fixture {}: {}", path.display(), e.strip_backtrace()))
            })?;
            frame.collect().await.map_err(|e| {
                KilnError::Query(format!("{at}: test `{test}`: fixture {}: {}", path.display(), e.strip_backtrace()))
            })?
        }
    };
    batches
        .into_iter()
        .map(|b| {
            RecordBatch::try_new(Arc::clone(schema), b.columns().to_vec()).map_err(|e| {
                KilnError::Query(format!("test `{test}`: the rows for `{table}` do not fit its columns: {e}"))
            })
        })
        .collect()
}

/// Every row as its columns' display text.
fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, KilnError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KilnError::Internal(format!("formatting rows: {e}")))?;
        for r in 0..batch.num_rows() {
            out.push(formatters.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    Ok(out)
}

/// (expected rows not produced, produced rows not expected), counting duplicates.
fn multiset_diff(expected: &[Vec<String>], actual: &[Vec<String>]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut counts: BTreeMap<&Vec<String>, i64> = BTreeMap::new();
    for r in expected {
        *counts.entry(r).or_default() += 1;
    }
    for r in actual {
        *counts.entry(r).or_default() -= 1;
    }
    let mut missing = Vec::new();
    let mut unexpected = Vec::new();
    for (row, n) in counts {
        for _ in 0..n.max(0) {
            missing.push(row.clone());
        }
        for _ in 0..(-n).max(0) {
            unexpected.push(row.clone());
        }
    }
    (missing, unexpected)
}

/// A missing and an unexpected row that share their first column (and are the only ones
/// with it) differ in the other columns: one line per differing column.
fn mismatches(missing: &[Vec<String>], unexpected: &[Vec<String>], columns: &[String]) -> Vec<String> {
    let key_count =
        |rows: &[Vec<String>], key: &str| rows.iter().filter(|r| r.first().map(String::as_str) == Some(key)).count();
    let mut out = Vec::new();
    for want in missing {
        let Some(key) = want.first() else { continue };
        if key_count(missing, key) != 1 || key_count(unexpected, key) != 1 {
            continue;
        }
        let Some(got) = unexpected.iter().find(|r| r.first() == Some(key)) else { continue };
        for (c, (w, g)) in want.iter().zip(got).enumerate().skip(1) {
            if w != g {
                let column = columns.get(c).map_or("?", String::as_str);
                out.push(format!("row ({key}, ...): column `{column}`: expected {w}, got {g}"));
            }
        }
    }
    out
}

/// `kiln freshness` (see the module docs).
pub async fn freshness(dir: &Path, options: &BuildOptions) -> Result<FreshnessReport, KilnError> {
    let session = Session::open(dir, options, Need::Versions, &Quiet).await?;
    Ok(FreshnessReport {
        format_version: REPORT_FORMAT_VERSION,
        project: session.project.config.project.name.clone(),
        sources: source_freshness(&session).await,
    })
}

/// The freshness of every files source that declares an expectation.
pub(crate) async fn source_freshness(session: &Session) -> Vec<SourceFreshness> {
    let mut out = Vec::new();
    for (i, node) in session.graph.nodes.iter().enumerate() {
        let Some(source) = &session.nodes[i].freshness else { continue };
        let Some(expect) = &source.freshness else { continue };
        let newest = newest_ms(&session.substrate, source, expect.column.as_deref()).await;
        let now = kiln_artifact::time::now_ms() as i64;
        let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
        let (status, age, error) = match &newest {
            Ok(Some(ms)) => {
                let age = (now - ms) as f64 / 1000.0;
                let over = |limit: Option<std::time::Duration>| limit.is_some_and(|l| age > l.as_secs_f64());
                let status = if over(expect.error) {
                    CheckStatus::Error
                } else if over(expect.warn) {
                    CheckStatus::Warn
                } else {
                    CheckStatus::Pass
                };
                (status, Some(age), None)
            }
            Ok(None) => (CheckStatus::Error, None, Some("the source holds no data".to_owned())),
            Err(e) => (CheckStatus::Error, None, Some(e.to_string())),
        };
        out.push(SourceFreshness {
            source: node.name.clone(),
            column: expect.column.clone(),
            newest: newest.ok().flatten().map(kiln_artifact::time::rfc3339_ms),
            age_seconds: age,
            warn_after_seconds: secs(expect.warn),
            error_after_seconds: secs(expect.error),
            status,
            error,
        });
    }
    out
}

/// The newest data of `source`, in milliseconds since the epoch (UTC).
async fn newest_ms(
    substrate: &Substrate,
    source: &kiln_data::FileSource,
    column: Option<&str>,
) -> Result<Option<i64>, KilnError> {
    let Some(column) = column else { return Ok(source.newest_modified_ms()?) };
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let sql = format!(
        "SELECT CAST(to_unixtime(CAST(max({}) AS TIMESTAMP)) AS BIGINT) * 1000 AS ms FROM {}",
        quote(column),
        quote(&source.name)
    );
    let plan = substrate.plan_sql(kiln_control::surface::Surface::Internal, &sql).await?;
    let state = substrate.context().state();
    let plan = state.optimize(&plan).map_err(exec(&source.name))?;
    let physical = substrate.physical_plan(&plan).await?;
    let batches = datafusion::physical_plan::collect(physical, state.task_ctx()).await.map_err(exec(&source.name))?;
    let value = batches.first().filter(|b| b.num_rows() > 0).and_then(|b| {
        b.column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .and_then(|a| (!a.is_null(0)).then(|| a.value(0)))
    });
    Ok(value)
}
