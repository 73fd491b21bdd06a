//! An HTTP polling source, read in micro-batches.
//!
//! A product over an HTTP source is built batch by batch: [`HttpSource::next_batch`] reads
//! pages from the source's committed [`SourcePosition`] until it has `batch_records`
//! records (or the feed has no more), the product's SQL runs over exactly those records
//! (bound to the source's [`MicroBatchTable`]), the output is appended, and the manifest
//! that lists it also records the position after it. The manifest is the commit point, so
//! a process killed anywhere re-reads at most the one uncommitted batch: nothing is lost
//! and nothing is committed twice.
//!
//! Protocol, decided here (docs/project.md documents the options):
//! - GET with `Accept` for the format; 2xx is a page. 429, 5xx, timeouts and connection
//!   failures are retried `max_retries` times with exponential backoff from
//!   `retry_backoff` (capped at 30 s; a `Retry-After` of whole seconds is honoured). Any
//!   other status fails the run with the URL, status and the start of the body.
//! - Bodies: `format = 'json'`, an array of objects or an object holding the array in
//!   `records_field` (default `data`); `format = 'ndjson'`, one object per line.
//! - Pages: `pagination = 'link'` follows a `Link: <...>; rel="next"` header, else the
//!   body's `next_field` (default `next`), resolved against the request URL;
//!   `pagination = 'cursor'` sends the body's `cursor_field` (default `next_cursor`) as the
//!   query parameter `cursor_param` (default `cursor`); `pagination = 'none'` reads one
//!   URL. A page without a next page (or one pointing back at itself) is the end of the
//!   feed *for now*: the position stays on it with `skip` = its record count, so the next
//!   poll fetches it again and takes only records appended since (append-only feeds).
//! - Records are parsed like NDJSON files with `on_error = 'reject'` (crate::checked):
//!   scalar columns cast from JSON text; a record that does not conform fails the run
//!   (URL, record number, reason) or, with `on_error = 'reject'`, goes to
//!   `<product>__rejected` with the page URL as its file and its 1-based index as its line.

use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use kiln_artifact::SourcePosition;
use kiln_artifact::identity::SourceKind;

use super::batch::{MicroBatch, definition_version, quoted};
use crate::checked::parse_json_records;
use crate::{DataError, Result};

/// The body format of an HTTP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpFormat {
    /// A JSON array of objects, or an object with the array under this field.
    Json { records_field: String },
    /// One JSON object per line.
    Ndjson,
}

impl HttpFormat {
    /// The format in the source's definition text: `Json { records_field: "data" }`, `Ndjson`.
    pub fn canonical(&self) -> String {
        match self {
            HttpFormat::Json { records_field } => format!("Json {{ records_field: {} }}", quoted(records_field)),
            HttpFormat::Ndjson => "Ndjson".to_owned(),
        }
    }
}

/// How an HTTP source finds its next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pagination {
    /// One URL, no pages.
    None,
    /// A `Link: <url>; rel="next"` header, else this field of a JSON object body.
    Link { next_field: String },
    /// This field of the body is sent back as query parameter `param`.
    Cursor { param: String, field: String },
}

impl Pagination {
    /// The paging in the source's definition text: `None`, `Link { next_field: "next" }`,
    /// `Cursor { param: "cursor", field: "next_cursor" }`.
    pub fn canonical(&self) -> String {
        match self {
            Pagination::None => "None".to_owned(),
            Pagination::Link { next_field } => format!("Link {{ next_field: {} }}", quoted(next_field)),
            Pagination::Cursor { param, field } => {
                format!("Cursor {{ param: {}, field: {} }}", quoted(param), quoted(field))
            }
        }
    }
}

/// A compiled HTTP polling source (see the module docs).
#[derive(Debug, Clone)]
pub struct HttpSource {
    pub name: String,
    pub url: String,
    /// The declared schema (scalar columns).
    pub schema: SchemaRef,
    pub format: HttpFormat,
    pub pagination: Pagination,
    /// Records per micro-batch (a batch ends at a page boundary once it has this many).
    pub batch_records: usize,
    pub max_retries: u32,
    pub retry_backoff: Duration,
    /// Per request, body included.
    pub timeout: Duration,
    /// `on_error = 'reject'`.
    pub reject: bool,
}

/// Largest response body read (a page larger than this fails the run).
const MAX_BODY_BYTES: u64 = 256 << 20;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One fetched page: its records as raw JSON text and the URL of the next page, if any.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    records: Vec<String>,
    next: Option<String>,
}

impl HttpSource {
    /// Where a never-ingested product starts.
    pub fn start(&self) -> SourcePosition {
        SourcePosition { url: self.url.clone(), skip: 0, records: 0, batches: 0, ..Default::default() }
    }

    /// The source's definition version: what its records mean (URL, format, paging,
    /// schema, error policy), not how fast they are read (batch size, retries, timeout).
    /// Products over it start again from the beginning when it changes.
    pub fn version(&self) -> String {
        let text =
            format!("{}\n{}\n{}\n{}\n", self.url, self.format.canonical(), self.pagination.canonical(), self.reject);
        definition_version(SourceKind::Http, &self.schema, &text)
    }

    /// Reads the next micro-batch after `from`; `None` when the feed has no new records.
    /// `batch_size` bounds the rows of each returned `RecordBatch`.
    pub async fn next_batch(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .user_agent("kiln")
            .build()
            .into();
        let mut position = from.clone();
        let mut batches = Vec::new();
        let mut rejects = Vec::new();
        let mut records = 0u64;
        let mut exhausted = false;
        loop {
            let (source, agent, url) = (self.clone(), agent.clone(), position.url.clone());
            let page = tokio::task::spawn_blocking(move || source.fetch_page(&agent, &url))
                .await
                .map_err(|e| self.error(format!("the fetch task failed: {e}")))??;
            let skip = (position.skip as usize).min(page.records.len());
            let fresh = page.records.len() - skip;
            if fresh > 0 {
                let numbered = page.records.into_iter().enumerate().skip(skip).map(|(k, r)| (k as u64 + 1, r));
                let (b, r) = parse_json_records(&self.name, &self.schema, &position.url, numbered, batch_size)
                    .map_err(DataError::exec(format!("source `{}`", self.name)))?;
                if let (false, Some(first)) = (self.reject, r.first()) {
                    return Err(self.error(format!("{} record {}: {}", first.file, first.line, first.reason)));
                }
                batches.extend(b);
                rejects.extend(r);
                records += fresh as u64;
            }
            match page.next {
                Some(next) if next != position.url => {
                    position.url = next;
                    position.skip = 0;
                }
                _ => {
                    position.skip = (skip + fresh) as u64;
                    exhausted = true;
                    break;
                }
            }
            if records >= self.batch_records as u64 {
                break;
            }
        }
        if records == 0 {
            return Ok(None);
        }
        position.records += records;
        position.batches += 1;
        let partitions = vec![0; batches.len()];
        Ok(Some(MicroBatch { batches, partitions, rejects, records, position, exhausted }))
    }

    fn error(&self, message: String) -> DataError {
        DataError::Source { name: self.name.clone(), message }
    }

    /// GET `url` with retries (see the module docs), then split the body into records.
    fn fetch_page(&self, agent: &ureq::Agent, url: &str) -> Result<Page> {
        let accept = match self.format {
            HttpFormat::Json { .. } => "application/json",
            HttpFormat::Ndjson => "application/x-ndjson",
        };
        let mut attempt = 0u32;
        loop {
            let mut wait = self.retry_backoff.saturating_mul(1 << attempt.min(16)).min(MAX_BACKOFF);
            let failure = match agent.get(url).header("Accept", accept).call() {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok());
                    let link = header("link").and_then(|v| next_link(v, url));
                    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
                        wait = Duration::from_secs(secs).min(MAX_BACKOFF);
                    }
                    let body = response.body_mut().with_config().limit(MAX_BODY_BYTES).read_to_string();
                    match (status, body) {
                        (200..=299, Ok(body)) => return self.parse_page(&body, link, url),
                        (200..=299, Err(e)) => format!("reading the body: {e}"),
                        (429 | 500..=599, _) => format!("HTTP {status}"),
                        (_, body) => {
                            let body = body.unwrap_or_default();
                            let start: String = body.chars().take(200).collect();
                            return Err(self.error(format!("GET {url}: HTTP {status}: {start}")));
                        }
                    }
                }
                Err(e @ (ureq::Error::Timeout(_) | ureq::Error::Io(_) | ureq::Error::ConnectionFailed)) => {
                    e.to_string()
                }
                Err(e) => return Err(self.error(format!("GET {url}: {e}"))),
            };
            if attempt >= self.max_retries {
                return Err(self.error(format!("GET {url}: {failure} (gave up after {} attempts)", attempt + 1)));
            }
            tracing::warn!(source = %self.name, %url, %failure, attempt, "retrying");
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    /// Splits a page body into records and finds the next page.
    fn parse_page(&self, body: &str, link: Option<String>, url: &str) -> Result<Page> {
        let records_field = match &self.format {
            HttpFormat::Ndjson => {
                let records = body.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty());
                let next = if matches!(self.pagination, Pagination::Link { .. }) { link } else { None };
                return Ok(Page { records: records.map(str::to_owned).collect(), next });
            }
            HttpFormat::Json { records_field } => records_field,
        };
        let value: serde_json::Value =
            serde_json::from_str(body).map_err(|e| self.error(format!("GET {url}: the body is not JSON ({e})")))?;
        let (items, object) = match &value {
            serde_json::Value::Array(items) => (items, None),
            serde_json::Value::Object(object) => match object.get(records_field) {
                Some(serde_json::Value::Array(items)) => (items, Some(object)),
                Some(serde_json::Value::Null) => (&Vec::new(), Some(object)),
                _ => {
                    return Err(self.error(format!(
                        "GET {url}: expected a JSON array, or an object with an array in `{records_field}`"
                    )));
                }
            },
            _ => return Err(self.error(format!("GET {url}: expected a JSON array or object"))),
        };
        let field = |name: &str| match object.and_then(|o| o.get(name)) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(n @ serde_json::Value::Number(_)) => Some(n.to_string()),
            _ => None,
        };
        let next = match &self.pagination {
            Pagination::None => None,
            Pagination::Link { next_field } => link.or_else(|| field(next_field).and_then(|n| resolve(url, &n))),
            Pagination::Cursor { param, field: name } => match field(name) {
                Some(cursor) => Some(
                    with_query(&self.url, param, &cursor)
                        .map_err(|e| self.error(format!("bad url {}: {e}", self.url)))?,
                ),
                None => None,
            },
        };
        Ok(Page { records: items.iter().map(ToString::to_string).collect(), next })
    }
}

/// The `rel="next"` target of a `Link` header, resolved against `base`.
fn next_link(header: &str, base: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let mut parts = link.split(';');
        let target = parts.next()?.trim().strip_prefix('<')?.strip_suffix('>')?;
        let is_next = parts.any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next { resolve(base, target) } else { None }
    })
}

fn resolve(base: &str, target: &str) -> Option<String> {
    url::Url::parse(base).ok()?.join(target).ok().map(String::from)
}

/// `url` with query parameter `param` set to `value` (replacing it if present).
fn with_query(url: &str, param: &str, value: &str) -> std::result::Result<String, url::ParseError> {
    let mut parsed = url::Url::parse(url)?;
    let kept: Vec<(String, String)> =
        parsed.query_pairs().filter(|(k, _)| k != param).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    parsed.query_pairs_mut().clear().extend_pairs(kept).append_pair(param, value);
    Ok(parsed.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn source(format: HttpFormat, pagination: Pagination) -> HttpSource {
        HttpSource {
            name: "s".into(),
            url: "http://h/feed?since=1".into(),
            schema: Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            format,
            pagination,
            batch_records: 10,
            max_retries: 0,
            retry_backoff: Duration::ZERO,
            timeout: Duration::from_secs(1),
            reject: false,
        }
    }

    #[test]
    fn link_headers() {
        let h = r#"<https://h/p?page=3>; rel="last", <?page=2>; rel="next""#;
        assert_eq!(next_link(h, "https://h/p?page=1").as_deref(), Some("https://h/p?page=2"));
        assert_eq!(next_link(r#"<https://h/x>; rel="prev""#, "https://h/"), None);
        assert_eq!(next_link("</b>; rel=next", "http://h/a/c").as_deref(), Some("http://h/b"));
    }

    #[test]
    fn pages() {
        let json = || HttpFormat::Json { records_field: "data".into() };
        let s = source(json(), Pagination::Link { next_field: "next".into() });
        let page =
            s.parse_page(r#"{"data": [{"id": 1}, {"id": 2}], "next": "/feed?p=2"}"#, None, "http://h/feed").unwrap();
        assert_eq!(page.records, vec![r#"{"id":1}"#, r#"{"id":2}"#]);
        assert_eq!(page.next.as_deref(), Some("http://h/feed?p=2"));
        // The Link header wins over the body.
        let page = s.parse_page(r#"[{"id": 1}]"#, Some("http://h/l".into()), "http://h/feed").unwrap();
        assert_eq!(page.next.as_deref(), Some("http://h/l"));
        assert!(s.parse_page(r#"{"items": []}"#, None, "http://h/").is_err());
        assert_eq!(s.parse_page(r#"{"data": null}"#, None, "http://h/").unwrap().records.len(), 0);
        assert!(s.parse_page("not json", None, "http://h/").is_err());

        let s = source(json(), Pagination::Cursor { param: "cursor".into(), field: "next_cursor".into() });
        let page = s.parse_page(r#"{"data": [], "next_cursor": "a b"}"#, None, "http://h/").unwrap();
        assert_eq!(page.next.as_deref(), Some("http://h/feed?since=1&cursor=a+b"));
        let page = s.parse_page(r#"{"data": [], "next_cursor": null}"#, None, "http://h/").unwrap();
        assert_eq!(page.next, None);

        let s = source(HttpFormat::Ndjson, Pagination::Link { next_field: "next".into() });
        let page = s.parse_page("{\"id\": 1}\r\n\n{\"id\": 2}\n", Some("http://h/2".into()), "http://h/").unwrap();
        assert_eq!(page.records.len(), 2);
        assert_eq!(page.next.as_deref(), Some("http://h/2"));
    }

    /// The definition text is written out explicitly (never through `Debug`), in the form
    /// that the first versions of these sources wrote, so their ids stay what they were.
    #[test]
    fn definition_text_is_pinned() {
        let json = HttpFormat::Json { records_field: "da\"ta".into() };
        assert_eq!(json.canonical(), r#"Json { records_field: "da\"ta" }"#);
        assert_eq!(HttpFormat::Ndjson.canonical(), "Ndjson");
        assert_eq!(Pagination::None.canonical(), "None");
        assert_eq!(Pagination::Link { next_field: "next".into() }.canonical(), r#"Link { next_field: "next" }"#);
        let cursor = Pagination::Cursor { param: "cursor".into(), field: "it's".into() };
        assert_eq!(cursor.canonical(), r#"Cursor { param: "cursor", field: "it's" }"#);
        let s = source(HttpFormat::Ndjson, Pagination::None);
        let text = "http://h/feed?since=1\nNdjson\nNone\nfalse\n";
        let expected = kiln_artifact::identity::source_definition(
            SourceKind::Http,
            &kiln_contracts::schema_fingerprint(&s.schema),
            text,
        );
        assert_eq!(s.version(), expected);
    }

    #[test]
    fn version_ignores_speed_settings() {
        let a = source(HttpFormat::Ndjson, Pagination::None);
        let mut b = a.clone();
        b.batch_records = 99;
        b.max_retries = 7;
        assert_eq!(a.version(), b.version());
        b.url.push('2');
        assert_ne!(a.version(), b.version());
    }
}
