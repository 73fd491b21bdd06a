//! `cargo xtask deps`: the brief's layering table, enforced on `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Allowed internal edges (brief §3). Packages not listed (xtask, kiln-tests, kiln-benches)
/// are tools at the top and may depend on anything.
pub const ALLOWED: [(&str, &[&str]); 8] = [
    ("kiln-explode", &[]),
    ("kiln-contracts", &[]),
    ("kiln-functions", &["kiln-explode", "kiln-contracts"]),
    ("kiln-artifact", &["kiln-contracts"]),
    ("kiln-data", &["kiln-explode", "kiln-contracts", "kiln-functions", "kiln-artifact"]),
    ("kiln-control", &["kiln-data", "kiln-functions", "kiln-contracts", "kiln-artifact"]),
    ("kiln", &["kiln-explode", "kiln-contracts", "kiln-functions", "kiln-artifact", "kiln-data", "kiln-control"]),
    ("kiln-cli", &["kiln"]),
];

/// External crates that must resolve to exactly one version (one arrow family).
const SINGLE_VERSION: [&str; 7] =
    ["arrow", "arrow-array", "parquet", "object_store", "sqlparser", "datafusion", "arrow-schema"];

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    version: String,
    dependencies: Vec<Dependency>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    kind: Option<String>,
}

/// Returns the layering violations of a metadata document, one line per offending edge.
pub fn violations(metadata_json: &str) -> Result<Vec<String>> {
    let meta: Metadata = serde_json::from_str(metadata_json).context("cannot parse cargo metadata")?;
    let members: BTreeSet<&str> =
        meta.packages.iter().filter(|p| meta.workspace_members.contains(&p.id)).map(|p| p.name.as_str()).collect();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut out = Vec::new();
    for p in meta.packages.iter().filter(|p| meta.workspace_members.contains(&p.id)) {
        let Some(ok) = allowed.get(p.name.as_str()) else { continue };
        for d in p.dependencies.iter().filter(|d| members.contains(d.name.as_str())) {
            if !ok.contains(&d.name.as_str()) {
                let kind = d.kind.as_deref().unwrap_or("normal");
                out.push(format!(
                    "{} -> {} ({kind} dependency) is not allowed; {} may depend on: {}",
                    p.name,
                    d.name,
                    p.name,
                    if ok.is_empty() { "nothing internal".to_owned() } else { ok.join(", ") }
                ));
            }
        }
    }
    let mut versions: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for p in &meta.packages {
        if SINGLE_VERSION.contains(&p.name.as_str()) {
            versions.entry(p.name.as_str()).or_default().insert(p.version.as_str());
        }
    }
    for (name, v) in versions.into_iter().filter(|(_, v)| v.len() > 1) {
        out.push(format!("{name} resolves to several versions: {}", v.into_iter().collect::<Vec<_>>().join(", ")));
    }
    Ok(out)
}

pub fn check(manifest_path: Option<&str>) -> Result<()> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["metadata", "--format-version", "1"]);
    if let Some(p) = manifest_path {
        cmd.args(["--manifest-path", p, "--no-deps"]);
    }
    let output = cmd.output().context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let bad = violations(&String::from_utf8_lossy(&output.stdout))?;
    if bad.is_empty() {
        eprintln!("deps: layering ok");
        return Ok(());
    }
    for line in &bad {
        eprintln!("deps: {line}");
    }
    bail!("{} layering violation(s)", bad.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata_of(fixture: &str) -> String {
        let path = format!("{}/tests/fixtures/{fixture}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path", &path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn rejects_an_upward_edge_and_names_it() {
        let bad = violations(&metadata_of("upward")).unwrap();
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("kiln-contracts -> kiln-data (normal dependency) is not allowed"), "{}", bad[0]);
    }

    #[test]
    fn accepts_allowed_edges() {
        assert_eq!(violations(&metadata_of("layered")).unwrap(), Vec::<String>::new());
    }
}
