//! Suite `incremental`: a no-op `kiln build` (nothing changed since the last build) on the
//! example project and on a generated 1,000-product project (the `plan` suite's
//! generator): wall time and bytes written.
//!
//! Targets (issue 8): <= 0.5 s on the example and <= 1.5 s at 1,000 products, 0 bytes
//! written. The first (cold) build of each project is reported too, for scale.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::{Value, json};

/// Builds `dir` once; returns (seconds, products built, bytes written).
async fn build(dir: &Path) -> Result<(f64, usize, u64)> {
    let t = Instant::now();
    let report = kiln::build(dir, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
    let seconds = t.elapsed().as_secs_f64();
    let failed: Vec<_> = report.failed().take(3).collect();
    ensure!(failed.is_empty(), "products failed: {failed:?}");
    let built = report.summary.products.iter().filter(|p| p.action == kiln::artifact::Action::Built).count();
    let bytes =
        report.summary.products.iter().filter(|p| p.action == kiln::artifact::Action::Built).map(|p| p.bytes).sum();
    Ok((seconds, built, bytes))
}

pub async fn suite(out: &Path, sf: f64, runs: usize) -> Result<Value> {
    let example = crate::example_project(&out.join("incremental-example"), sf)?;
    let generated = std::path::absolute(out.join("incremental-project-1000"))?;
    crate::plan::generate(&generated, 1000)?;

    let mut rows = Vec::new();
    for (case, dir, target) in
        [(format!("example sf {sf}"), &example, 0.5), ("1000 products".to_owned(), &generated, 1.5)]
    {
        let (cold, built, _) = build(dir).await?;
        eprintln!("incremental {case}: cold build {cold:.2} s ({built} products)");
        let mut noop = Vec::new();
        let mut written = 0;
        for _ in 0..runs {
            let (s, built, bytes) = build(dir).await?;
            ensure!(built == 0, "a no-op build rebuilt {built} products");
            written += bytes;
            noop.push(s);
        }
        let noop = crate::median(noop);
        eprintln!("incremental {case}: no-op build {noop:.3} s, {written} bytes written");
        rows.push(json!({
            "case": format!("{case}, no-op build"),
            "kiln_median": noop,
            "peer": "target",
            "peer_median": target,
            "ratio": noop / target,
            "target": format!("<= {target} s, 0 bytes (wrote {written})"),
        }));
        rows.push(json!({
            "case": format!("{case}, cold build (for scale)"),
            "kiln_median": cold,
            "peer": "",
            "peer_median": f64::NAN,
            "ratio": f64::NAN,
            "target": "",
        }));
    }
    Ok(json!({ "runs": runs, "rows": rows }))
}
