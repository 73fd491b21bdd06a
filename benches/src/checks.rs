//! Suite `checks`: what write–audit–publish costs.
//!
//! - The example project at the given scale factor, built from an empty warehouse (its
//!   TPC-H data generated once, untimed), then its 7 constraints and audits run alone by
//!   `kiln test` on the builds just committed (the same rows the staged checks read): the
//!   checks' seconds as a fraction of the build's wall time, median over runs. Target
//!   (issue 18): <= 10%. The `checks` phases of the build are reported too: inside the
//!   build they share the 2 cores with the products still running (orders_nested), so
//!   their wall time there measures contention more than work.
//! - `kiln test` on a generated project of 1,000 products (the `plan` suite's generator),
//!   each with one constraint (`UNIQUE (k)`), all built once untimed: wall time for the
//!   1,000 checks on the committed builds, median over runs.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let example = crate::example_project(&out.join("checks-example"), sf)?;
    let (mut fractions, mut builds, mut checks, mut phases) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let _ = std::fs::remove_dir_all(example.join("warehouse"));
        let _ = std::fs::remove_dir_all(example.join(".kiln"));
        let t = Instant::now();
        let report = kiln::build(&example, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
        let seconds = t.elapsed().as_secs_f64();
        let failed: Vec<_> = report.failed().take(3).collect();
        ensure!(failed.is_empty(), "example products failed: {failed:?}");
        let ran: usize = report.summary.products.iter().map(|p| p.checks.len()).sum();
        ensure!(ran == 7, "the example ran {ran} checks, not 7");
        let phase: f64 = report.summary.products.iter().filter_map(|p| p.phases.get("checks")).sum();
        let tested = kiln::test(&example, &kiln::BuildOptions::default()).await?;
        ensure!(tested.checks.len() == 7 && !tested.failed(), "kiln test on the example: {:?}", tested.checks);
        let spent: f64 = tested.checks.iter().map(|c| c.seconds).sum();
        eprintln!(
            "checks run {run}: build {seconds:.2} s, checks alone {spent:.3} s ({:.2}%), checks phases in the build {phase:.3} s",
            100.0 * spent / seconds
        );
        fractions.push(spent / seconds);
        builds.push(seconds);
        checks.push(spent);
        phases.push(phase);
    }

    let generated = std::path::absolute(out.join("checks-project-1000"))?;
    crate::plan::generate(&generated, 1000)?;
    with_one_constraint_each(&generated)?;
    let report = kiln::build(&generated, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
    let failed: Vec<_> = report.failed().take(3).collect();
    ensure!(failed.is_empty(), "generated products failed: {failed:?}");
    let mut tests = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let report = kiln::test(&generated, &kiln::BuildOptions::default()).await?;
        let seconds = t.elapsed().as_secs_f64();
        ensure!(report.checks.len() == 1000, "kiln test ran {} checks", report.checks.len());
        ensure!(!report.failed(), "generated checks failed");
        eprintln!("checks run {run}: kiln test on 1000 products {seconds:.2} s");
        tests.push(seconds);
    }
    let fraction = crate::median(fractions);
    Ok(json!({
        "scale_factor": sf,
        "rows": [
            {
                "case": format!("example sf {sf}: checks / build"),
                "kiln_median": crate::median(checks),
                "peer": "build",
                "peer_median": crate::median(builds),
                "ratio": fraction,
                "target": "<= 0.10",
                "checks_phases_in_build_median": crate::median(phases),
            },
            {
                "case": "kiln test, 1000 products x 1 constraint",
                "kiln_median": crate::median(tests.clone()),
                "peer": "target",
                "peer_median": 10.0,
                "ratio": crate::median(tests) / 10.0,
                "target": "<= 10 s (no target in the issue; 1,000 checks must stay interactive)",
            },
        ],
    }))
}

/// Gives every generated product the contract of its columns with `UNIQUE (k)`.
fn with_one_constraint_each(dir: &Path) -> Result<()> {
    let mut done = 0;
    for folder in std::fs::read_dir(dir.join("models"))? {
        for file in std::fs::read_dir(folder?.path())? {
            let path = file?.path();
            let sql = std::fs::read_to_string(&path)?;
            let Some(name) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else { continue };
            let head = format!("CREATE PRODUCT {name} AS\n");
            ensure!(sql.contains(&head), "{}: unexpected shape", path.display());
            let contract = format!("CREATE PRODUCT {name} (k BIGINT, v DOUBLE, d DATE, s VARCHAR, UNIQUE (k)) AS\n");
            std::fs::write(&path, sql.replace(&head, &contract))?;
            done += 1;
        }
    }
    ensure!(done == 1000, "constrained {done} products");
    Ok(())
}
