//! Kiln's function registry: versioned, documented functions whose identity is part of
//! every build that uses them.
//!
//! A function changes what a product computes, so each has a [`FunctionSpec`] (stable id
//! with major version such as `kiln.pii_hash.v1`, engine name `kiln_*`, kind, arguments,
//! types, volatility, null semantics, docs, example) and an implementation version. The
//! [`Registry`] looks functions up by id or name, renders the catalog (Markdown and JSON),
//! installs them into a DataFusion `SessionContext` (idempotent; it refuses to shadow a
//! builtin or a name registered by someone else) and computes the function fingerprint of
//! a set of used functions and secrets.
//!
//! Builtins ([`builtins`]): `kiln_sha256_hex`, `kiln_pii_hash` (HMAC-SHA256 keyed by a
//! project secret), `kiln_stable_id` (128-bit typed id), `kiln_tumble_start`,
//! `kiln_tumble_end`, `kiln_hop_starts`.
//!
//! [`json`]: datafusion-functions-json's typed functions over JSON text (`json_get_str`,
//! `json_get_int`, `json_contains`, ...), with specs like Kiln's own.
//!
//! [`nest`]: `array_agg` grouped and ordered without a value per element (installed in
//! place of DataFusion's, same name and semantics; ties in the ORDER BY broken by value).
//!
//! [`bounded`]: `repeat`, `lpad`, `array_repeat`, scalar `generate_series` and the other
//! functions whose output outgrows their input, refusing a call past a size (the
//! untrusted surface installs them in place of DataFusion's).
//!
//! Secrets ([`Secrets`]) are resolved at run time and never printed: their `Debug` is
//! redacted, plans carry only the secret's *name*, and fingerprints carry a keyed digest.
//!
//! Architecture invariant: depends on DataFusion's function traits and kiln-contracts
//! only; never on the data or control planes.
//!
//! Looking functions up, installing them, and calling one from SQL:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use datafusion::prelude::SessionContext;
//! use kiln_functions::{Registry, Secrets};
//!
//! let registry = Registry::builtin(Secrets::from_values([("pii_key", "s3cr3t")]));
//! let spec = registry.by_name("kiln_pii_hash").ok_or("no kiln_pii_hash")?;
//! assert_eq!(spec.id, "kiln.pii_hash.v1");
//! let ctx = SessionContext::new();
//! registry.install(&ctx)?;
//! let batches = ctx.sql("SELECT kiln_pii_hash('555-0100', key => 'pii_key') AS h").await?.collect().await?;
//! assert_eq!(batches[0].num_rows(), 1);
//! // A product's func_fp covers the functions it calls and a keyed digest of its secrets.
//! let used = ["kiln_pii_hash".to_owned()].into();
//! let fp = registry.fingerprint(&used, &["pii_key".to_owned()].into())?;
//! assert_eq!(fp.len(), 64);
//! # Ok(()) }
//! ```

pub mod bounded;
pub mod builtins;
pub mod hex;
pub mod json;
pub mod nest;
pub mod nest_plan;
pub mod registry;
pub mod secrets;
pub mod spec;

pub use registry::Registry;
pub use secrets::{SecretError, SecretSource, Secrets};
pub use spec::{FunctionKind, FunctionSpec};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// Installing would replace a function Kiln does not own (the user's configuration
    /// or another library registered it, or it is a DataFusion builtin).
    #[error("cannot install `{name}`: a different function with that name is already registered")]
    Shadow { name: String },
    /// A registration inside DataFusion failed (internal).
    #[error("cannot install `{name}`: {reason}")]
    Install { name: String, reason: String },
    /// A secret a function is keyed with has no value (the user's configuration).
    #[error(transparent)]
    Secret(#[from] SecretError),
}
