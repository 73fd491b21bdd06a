//! kiln-control's integration tests: fingerprints over a query corpus, lineage goldens,
//! semantic diffs, SQL surfaces, profiles, and the dialect parser under arbitrary input.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod diff;
mod distinct;
mod fingerprint;
mod incremental;
mod lineage;
mod parser;
mod partitioning;
mod profile;
mod streams;
mod surface;
mod tpch;
mod unnest;
mod versions;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_control::dialect::{Statement, parse_file};
use kiln_control::{CompiledProduct, ControlError, RuntimeProfile, Substrate};
use kiln_data::Warehouse;
use kiln_functions::{Registry, Secrets};

/// The example project's directory (its sources.sql declares the TPC-H tables).
pub fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/tpch")
}

/// A Substrate with the TPC-H sources registered (no data needed: nothing runs).
#[derive(Debug)]
pub struct Tpch {
    pub substrate: Substrate,
    next: usize,
}

impl Default for Tpch {
    fn default() -> Self {
        Self::with_settings(&[])
    }
}

impl Tpch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_settings(settings: &[(&str, &str)]) -> Self {
        let settings: Vec<(String, String)> =
            settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let profile = RuntimeProfile::resolve("prod_fast", &BTreeMap::new(), &settings).unwrap();
        let registry = Registry::builtin(Secrets::from_values([("pii_key", "test-key")]));
        let mut substrate = Substrate::new(&profile, Warehouse::memory(), &example_dir(), registry).unwrap();
        let text = std::fs::read_to_string(example_dir().join("sources.sql")).unwrap();
        for statement in parse_file("sources.sql", &text).unwrap() {
            if let Statement::Source(def) = statement {
                substrate.register_source(&def).unwrap();
            }
        }
        Self { substrate, next: 0 }
    }

    /// Compiles `query` as a new product `pN`.
    pub async fn compile(&mut self, query: &str) -> Result<CompiledProduct, ControlError> {
        self.next += 1;
        let text = format!("CREATE PRODUCT p{} AS {query}", self.next);
        let mut statements = parse_file("test.sql", &text)?;
        match statements.remove(0) {
            Statement::Product(def) => self.substrate.compile_product(&def).await,
            other => panic!("not a product: {other:?}"),
        }
    }

    pub async fn query_fp(&mut self, query: &str) -> String {
        match self.compile(query).await {
            Ok(p) => p.query_fp,
            Err(e) => panic!("{e}\nin: {query}"),
        }
    }
}
