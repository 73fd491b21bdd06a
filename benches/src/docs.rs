//! Suite `docs`: `kiln docs` on a built project of 1,000 generated products (the `plan`
//! suite's generator), and the DAG page loaded by headless Chromium from disk: the wall
//! time of `chromium --headless --dump-dom` until the page's script has drawn every node
//! (checked in the dumped DOM), against the same browser loading an empty page (its
//! start-up, measured alternately, side by side).
//!
//! Targets (issue 23): `kiln docs` <= 5 s and the DAG page rendered in <= 10 s.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

fn chromium_dump(profile: &Path, url: &str) -> Result<(f64, String)> {
    // A fresh profile each time: no cache carries over from one load to the next.
    let _ = std::fs::remove_dir_all(profile);
    let t = Instant::now();
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .context("cannot run chromium (apt-get install chromium)")?;
    let seconds = t.elapsed().as_secs_f64();
    ensure!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok((seconds, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub async fn suite(out: &Path, runs: usize) -> Result<Value> {
    let dir = std::path::absolute(out.join("docs-project-1000"))?;
    crate::plan::generate(&dir, 1000)?;
    let t = Instant::now();
    let report = kiln::build(&dir, &kiln::BuildOptions::default(), &kiln::Quiet).await?;
    ensure!(report.failed().next().is_none(), "the generated project failed to build");
    eprintln!("docs: built 1000 products in {:.1} s (not timed)", t.elapsed().as_secs_f64());
    let site = dir.join(".kiln/docs");
    let blank = std::path::absolute(out.join("docs-blank.html"))?;
    let profile = out.join("docs-chromium-profile");
    std::fs::write(&blank, "<!doctype html><title>blank</title>")?;

    let (mut docs, mut page, mut startup) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = kiln::docs::docs(&dir, &site, &kiln::BuildOptions::default()).await?;
        docs.push(t.elapsed().as_secs_f64());
        bytes = r.bytes;
        let (s, dom) = chromium_dump(&profile, &format!("file://{}", site.join("index.html").display()))?;
        let drawn = dom.matches("<g class=\"node ").count();
        ensure!(drawn == 1002, "the DAG page drew {drawn} nodes, not 1,002 (1,000 products, 2 sources)");
        page.push(s);
        startup.push(chromium_dump(&profile, &format!("file://{}", blank.display()))?.0);
    }
    let (docs, page, startup) = (crate::median(docs), crate::median(page), crate::median(startup));
    eprintln!("docs: kiln docs {docs:.2} s ({bytes} bytes); DAG page {page:.2} s (blank page {startup:.2} s)");
    Ok(json!({
        "runs": runs,
        "rows": [
            {
                "case": "kiln docs, 1000 products",
                "kiln_median": docs,
                "peer": "target",
                "peer_median": 5.0,
                "ratio": docs / 5.0,
                "target": format!("<= 5 s ({bytes} bytes written)"),
            },
            {
                "case": "DAG page of 1000 products in headless Chromium",
                "kiln_median": page,
                "peer": "the same browser, blank page",
                "peer_median": startup,
                "ratio": page / startup,
                "target": "<= 10 s",
            },
        ],
    }))
}
