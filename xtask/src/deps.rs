//! `cargo xtask deps`: the brief's layering table, enforced on `cargo metadata`; an
//! internal dependency no code of the crate uses; one version of the arrow family; and
//! no circles among a library crate's modules (crate::modules).

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
    manifest_path: String,
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
        let dir = std::path::Path::new(&p.manifest_path).parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        for d in p.dependencies.iter().filter(|d| members.contains(d.name.as_str())) {
            let kind = d.kind.as_deref().unwrap_or("normal");
            let places: &[&str] = if kind == "dev" { &["src", "tests", "benches"] } else { &["src"] };
            let rust_name = d.name.replace('-', "_");
            if !places.iter().any(|place| mentions(&dir.join(place), &rust_name)) {
                out.push(format!(
                    "{} -> {} ({kind} dependency) is declared but no code in {} uses `{rust_name}`",
                    p.name,
                    d.name,
                    places.join(", ")
                ));
            }
            if !ok.contains(&d.name.as_str()) {
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
    for p in
        meta.packages.iter().filter(|p| meta.workspace_members.contains(&p.id) && allowed.contains_key(p.name.as_str()))
    {
        let src = std::path::Path::new(&p.manifest_path).parent().map(|d| d.join("src")).unwrap_or_default();
        for circle in crate::modules::circles(&src)? {
            out.push(format!("{}: modules refer to each other: {circle}", p.name));
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

/// Whether any `.rs` file under `dir` names `ident` (as a whole word).
fn mentions(dir: &std::path::Path, ident: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            return mentions(&path, ident);
        }
        let Ok(text) = std::fs::read_to_string(&path) else { return false };
        path.extension().is_some_and(|x| x == "rs")
            && text.match_indices(ident).any(|(i, _)| {
                let before = text[..i].chars().next_back();
                let after = text[i + ident.len()..].chars().next();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            })
    })
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

/// The L0 crates downstream users take alone: their normal dependencies must hold no
/// part of DataFusion, object_store or tokio (arrow and sqlparser are what they build
/// on), checked on `cargo tree`.
pub const STANDALONE: [&str; 2] = ["kiln-explode", "kiln-contracts"];

/// Crates an L0 crate must not pull in.
const HEAVY: [&str; 4] = ["datafusion", "object_store", "tokio", "parquet"];

/// Checks that each [`STANDALONE`] crate's normal dependency tree has none of [`HEAVY`].
pub fn standalone() -> Result<()> {
    for krate in STANDALONE {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["tree", "--locked", "-p", krate, "-e", "normal", "--prefix", "none"])
            .output()
            .context("cannot run cargo tree")?;
        if !out.status.success() {
            bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let heavy: BTreeSet<&str> = tree
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| HEAVY.iter().any(|h| name == h || name.starts_with(&format!("{h}-"))))
            .collect();
        if !heavy.is_empty() {
            bail!(
                "{krate} must build with arrow and sqlparser alone, but depends on {}",
                heavy.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
    eprintln!("deps: {} build alone", STANDALONE.join(" and "));
    Ok(())
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

    #[test]
    fn rejects_a_dependency_no_code_uses() {
        let bad = violations(&metadata_of("unused")).unwrap();
        assert_eq!(
            bad,
            ["kiln-data -> kiln-contracts (normal dependency) is declared but no code in src uses `kiln_contracts`"]
        );
    }

    #[test]
    fn rejects_modules_that_refer_to_each_other() {
        let bad = violations(&metadata_of("circle")).unwrap();
        assert_eq!(bad, ["kiln-contracts: modules refer to each other: a <-> b"]);
    }
}
