//! The limits of the untrusted surface (`kiln query`): `[query]` in kiln.toml, each
//! overridden by its `kiln query` flag (`--timeout`, `--max-rows`, `--max-bytes`,
//! `--memory`), where `none` lifts it.
//!
//! | key | default | a breach |
//! |---|---|---|
//! | `timeout` | `10m` | the query is cancelled (the process ends 1.5 s later regardless) |
//! | `max_rows` | none | the result fails once it has more rows |
//! | `max_bytes` | none | the output fails before it would pass that many bytes |
//! | `memory` | `2GiB` | the process ends once its resident memory passes it |
//!
//! `sources = ["orders", ...]`: the sources and streams a query may read (and their
//! `<source>__rejected` datasets). None by default: the untrusted surface reads the
//! committed products and views, whose columns the project chose to publish (hashed,
//! filtered), not the raw input they were made from.
//!
//! Every breach is exit 1 with a message naming the limit. `memory` holds for the whole
//! process, not only for what DataFusion's memory pool accounts: half of it is the pool
//! (a fair spill pool: sorts and aggregates spill, other operators fail cleanly), and the
//! rest is for what allocates outside the pool (`repeat`, scalar `generate_series`,
//! string concatenation, the held table of `--format table`), which the resident-memory
//! check bounds. The functions whose output outgrows their input refuse a call past a
//! quarter of `memory` before allocating (kiln_functions::bounded), and so does a
//! constant a projection would copy into every row of a batch.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};

/// `[query] timeout`'s default: a query that runs for hours is a mistake or an attack; one
/// that follows a stream longer says so with `--timeout none`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// `[query] memory`'s default.
pub const DEFAULT_MEMORY: u64 = 2 << 30;

/// The limits of one `kiln query` (`None`: no limit), and the sources it may read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLimits {
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "count")]
    pub max_rows: Option<u64>,
    #[serde(default, deserialize_with = "bytes")]
    pub max_bytes: Option<u64>,
    #[serde(default = "default_memory", deserialize_with = "bytes")]
    pub memory: Option<u64>,
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            max_rows: None,
            max_bytes: None,
            memory: default_memory(),
            sources: Vec::new(),
        }
    }
}

/// Command-line overrides of [`QueryLimits`]: `Some(None)` is `none` (no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryOverrides {
    pub timeout: Option<Option<Duration>>,
    pub max_rows: Option<Option<u64>>,
    pub max_bytes: Option<Option<u64>>,
    pub memory: Option<Option<u64>>,
}

impl QueryLimits {
    /// These limits with `overrides` applied.
    pub fn with(self, overrides: &QueryOverrides) -> Self {
        Self {
            timeout: overrides.timeout.unwrap_or(self.timeout),
            max_rows: overrides.max_rows.unwrap_or(self.max_rows),
            max_bytes: overrides.max_bytes.unwrap_or(self.max_bytes),
            memory: overrides.memory.unwrap_or(self.memory),
            sources: self.sources,
        }
    }

    /// The share of `memory` DataFusion's pool gets (half; see the module docs).
    pub fn pool_bytes(&self) -> Option<u64> {
        self.memory.map(|m| (m / 2).max(1))
    }
}

/// Parses a limit as written on the command line: `none`, or what `parse` accepts.
pub fn parse_limit<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> Option<Option<T>> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Some(None);
    }
    parse(text).map(Some)
}

/// A positive duration (`30s`, `5 minutes`).
pub fn positive_duration(text: &str) -> Option<Duration> {
    crate::units::parse_duration(text).filter(|d| !d.is_zero())
}

/// A positive count.
pub fn positive_count(text: &str) -> Option<u64> {
    text.trim().replace('_', "").parse::<u64>().ok().filter(|n| *n > 0)
}

fn default_timeout() -> Option<Duration> {
    Some(DEFAULT_TIMEOUT)
}

fn default_memory() -> Option<u64> {
    Some(DEFAULT_MEMORY)
}

/// A kiln.toml value: text (`"30s"`, `"2GiB"`, `"none"`) or a whole number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(u64),
    Text(String),
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = match Raw::deserialize(d)? {
        Raw::Text(t) => t,
        Raw::Number(n) => return Err(D::Error::custom(format!("`{n}`: a duration has a unit, e.g. \"30s\""))),
    };
    parse_limit(&text, positive_duration).ok_or_else(|| {
        D::Error::custom(format!("`{text}` is not a positive duration (\"30s\", \"5 minutes\") or \"none\""))
    })
}

fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Number(0) => Err(D::Error::custom("a row limit is at least 1 (\"none\" for no limit)")),
        Raw::Number(n) => Ok(Some(n)),
        Raw::Text(t) => parse_limit(&t, positive_count)
            .ok_or_else(|| D::Error::custom(format!("`{t}` is not a positive number of rows or \"none\""))),
    }
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(t) => t,
    };
    parse_limit(&text, crate::units::parse_bytes)
        .ok_or_else(|| D::Error::custom(format!("`{text}` is not a size (\"512MiB\", \"2GiB\") or \"none\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        query: QueryLimits,
    }

    fn parse(text: &str) -> Result<QueryLimits, String> {
        toml::from_str::<Doc>(text).map(|d| d.query).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn kiln_toml_sets_and_lifts_each_limit() {
        assert_eq!(parse("").unwrap(), QueryLimits::default());
        assert_eq!(
            parse("[query]\ntimeout = \"30s\"\nmax_rows = 1_000\nmax_bytes = \"1MiB\"\nmemory = \"none\"\n").unwrap(),
            QueryLimits {
                timeout: Some(Duration::from_secs(30)),
                max_rows: Some(1000),
                max_bytes: Some(1 << 20),
                memory: None,
                sources: Vec::new(),
            }
        );
        let lifted = parse("[query]\ntimeout = \"none\"\n").unwrap();
        assert_eq!((lifted.timeout, lifted.memory), (None, Some(DEFAULT_MEMORY)));
        for (bad, says) in [
            ("timeout = 30", "has a unit"),
            ("timeout = \"0s\"", "positive duration"),
            ("max_rows = 0", "at least 1"),
            ("max_bytes = \"lots\"", "not a size"),
            ("memroy = \"1GiB\"", "unknown field"),
        ] {
            let err = parse(&format!("[query]\n{bad}\n")).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn the_command_line_overrides_and_none_lifts() {
        let limits = QueryLimits::default().with(&QueryOverrides {
            timeout: parse_limit("none", positive_duration),
            max_rows: parse_limit("5", positive_count),
            ..Default::default()
        });
        assert_eq!((limits.timeout, limits.max_rows, limits.memory), (None, Some(5), Some(DEFAULT_MEMORY)));
        assert_eq!(limits.pool_bytes(), Some(DEFAULT_MEMORY / 2));
        assert_eq!(parse_limit("0", positive_count), None);
    }
}
