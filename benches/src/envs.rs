//! Suite `envs`: what environments cost on a 1,000-product project (the `plan` suite's
//! generator), built once in prod (untimed).
//!
//! - `kiln env create dev` (a copy of prod's bindings): wall time, median over runs
//!   (the environment is dropped between runs, untimed). Target (issue 19): <= 0.3 s.
//! - A no-op `kiln build --env dev` right after: wall time, and the Parquet files in the
//!   warehouse before and after (must be equal: 0 bytes written). Target: <= 0.3 s.
//! - `kiln promote` of 1,000 changed products: `dev` rebuilt once under another Parquet
//!   compression (a semantic setting: every build id changes; untimed), `old` an
//!   environment holding prod's original builds; each run promotes `dev` then `old` into
//!   prod (1,000 changed each) and the median of both is reported. Target: <= 1 s.
//!
//! No peer can run this work here (SQLMesh's virtual environments need its own state
//! database and Python models); the rows compare with the targets.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use kiln::lock::Wait;
use serde_json::{Value, json};

fn parquet_files(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                n += 1;
            }
        }
    }
    Ok(n)
}

pub async fn suite(out: &Path, runs: usize) -> Result<Value> {
    let dir = std::path::absolute(out.join("envs-project-1000"))?;
    crate::plan::generate(&dir, 1000)?;
    let prod = kiln::build(&dir, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
    ensure!(prod.failed().next().is_none(), "generated products failed");
    let dev = kiln::BuildOptions { env: Some("dev".into()), ..Default::default() };
    let (mut creates, mut noops) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let _ = kiln::envs::env_drop(&dir, "dev", Wait::Block, &kiln::Quiet).await;
        let t = Instant::now();
        let created = kiln::envs::env_create(&dir, "dev", "prod", Wait::Block, &kiln::Quiet).await?;
        let create = t.elapsed().as_secs_f64();
        ensure!(created.products == 1000, "dev has {} products", created.products);
        let before = parquet_files(&dir.join("warehouse"))?;
        let t = Instant::now();
        let report = kiln::build(&dir, &dev, &kiln::Quiet).await?;
        let noop = t.elapsed().as_secs_f64();
        let fresh = report.summary.products.iter().filter(|p| p.action == kiln::artifact::Action::Fresh).count();
        ensure!(fresh == 1000, "no-op build in dev: {fresh} fresh");
        ensure!(parquet_files(&dir.join("warehouse"))? == before, "the no-op build wrote files");
        eprintln!("envs run {run}: env create {create:.3} s, no-op build --env dev {noop:.3} s");
        creates.push(create);
        noops.push(noop);
    }

    kiln::envs::env_create(&dir, "old", "prod", Wait::Block, &kiln::Quiet).await?;
    let changed = kiln::BuildOptions {
        env: Some("dev".into()),
        settings: vec![("datafusion.execution.parquet.compression".into(), "snappy".into())],
        ..Default::default()
    };
    let rebuilt = kiln::build(&dir, &changed, &kiln::Quiet).await?;
    let built = rebuilt.summary.products.iter().filter(|p| p.action == kiln::artifact::Action::Built).count();
    ensure!(built == 1000, "dev rebuilt {built} products");
    let mut promotes = Vec::new();
    for run in 0..runs {
        for from in ["dev", "old"] {
            let r = kiln::envs::promote(&dir, from, "prod", Wait::Block, &kiln::Quiet).await?;
            ensure!(r.changed.len() == 1000, "promote {from}: {} changed", r.changed.len());
            eprintln!("envs run {run}: promote {from} (1000 changed) {:.3} s", r.seconds);
            promotes.push(r.seconds);
        }
    }
    let row = |case: &str, v: Vec<f64>, target: f64| {
        let m = crate::median(v);
        json!({"case": case, "kiln_median": m, "peer": "target", "peer_median": target, "ratio": m / target,
               "target": format!("<= {target} s")})
    };
    Ok(json!({"rows": [
        row("env create from a 1000-product prod", creates, 0.3),
        row("no-op build --env dev, 1000 products (0 files written)", noops, 0.3),
        row("promote 1000 changed products", promotes, 1.0),
    ]}))
}
