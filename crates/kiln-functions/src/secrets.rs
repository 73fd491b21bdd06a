//! Project secrets (`[secrets]` in kiln.toml), resolved at run time, never printed.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where a secret's value comes from.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum SecretSource {
    /// An environment variable, with an optional fallback value for examples and local
    /// development (using it is reported as a warning on every run).
    Env { var: String, fallback: Option<String> },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env { var, fallback } => {
                write!(f, "Env({var}{})", if fallback.is_some() { ", fallback: <redacted>" } else { "" })
            }
        }
    }
}

/// A resolved secret value. Its `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Why a secret has no value (the user's configuration or environment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}`: environment variable {var} is not set")]
    Unset { name: String, var: String },
    #[error("secret `{name}`: environment variable {var} is empty")]
    Empty { name: String, var: String },
    #[error("secret `{name}` is not declared in kiln.toml [secrets] (declared: {declared})")]
    Undeclared { name: String, declared: String },
}

/// The project's secrets by name: each resolved, or the reason it could not be.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Secrets {
    entries: BTreeMap<String, Result<SecretValue, SecretError>>,
    /// Names resolved from their fallback value rather than the environment.
    fallbacks: Vec<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

/// Version of the keyed-digest encoding used in fingerprints.
pub const SECRET_DIGEST_VERSION: u32 = 1;

impl Secrets {
    /// Resolves declared secrets now (environment variables are read once per run).
    pub fn resolve(declared: &BTreeMap<String, SecretSource>) -> Self {
        let mut fallbacks = Vec::new();
        let entries = declared
            .iter()
            .map(|(name, source)| {
                let value = match source {
                    SecretSource::Env { var, fallback } => match (std::env::var(var), fallback) {
                        (Ok(v), _) if !v.is_empty() => Ok(SecretValue(v.into_bytes())),
                        (_, Some(f)) if !f.is_empty() => {
                            fallbacks.push(name.clone());
                            Ok(SecretValue(f.clone().into_bytes()))
                        }
                        (Ok(_), _) => Err(SecretError::Empty { name: name.clone(), var: var.clone() }),
                        (Err(_), _) => Err(SecretError::Unset { name: name.clone(), var: var.clone() }),
                    },
                };
                (name.clone(), value)
            })
            .collect();
        Self { entries, fallbacks }
    }

    /// The declared secret names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Secrets that fell back to their configured development value.
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Secrets with literal values (tests, library users).
    pub fn from_values<'a>(values: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let entries = values.into_iter().map(|(k, v)| (k.to_owned(), Ok(SecretValue(v.as_bytes().to_vec())))).collect();
        Self { entries, fallbacks: Vec::new() }
    }

    /// The value of a secret, or an error that names it (and never an empty key).
    pub fn get(&self, name: &str) -> Result<&SecretValue, SecretError> {
        match self.entries.get(name) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.clone()),
            None => Err(SecretError::Undeclared {
                name: name.to_owned(),
                declared: if self.entries.is_empty() {
                    "none".to_owned()
                } else {
                    self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }

    /// A digest keyed by the secret: HMAC-SHA256(key = value, "kiln.secret_digest.v1:" +
    /// name), hex. It changes when the value rotates and reveals nothing usable about it.
    pub fn keyed_digest(&self, name: &str) -> Result<String, SecretError> {
        let value = self.get(name)?;
        // HMAC takes keys of any length: `new_from_slice` cannot fail for SHA-256.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(value.expose()) else {
            return Err(SecretError::Empty { name: name.to_owned(), var: String::new() });
        };
        mac.update(format!("kiln.secret_digest.v{SECRET_DIGEST_VERSION}:{name}").as_bytes());
        Ok(crate::hex::to_hex(&mac.finalize().into_bytes()))
    }
}
