//! What every micro-batch source returns: the records of one micro-batch and the position
//! after them, and the definition version every source's identity is made of.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use kiln_artifact::SourcePosition;
use kiln_artifact::identity::{SourceKind, source_definition};

use crate::checked::Rejected;

/// The records of one micro-batch and the position after them.
#[derive(Debug)]
pub struct MicroBatch {
    /// The records that conform, in feed order.
    pub batches: Vec<RecordBatch>,
    /// The source partition each of `batches` came from (0 for unpartitioned sources),
    /// for per-partition watermarks.
    pub partitions: Vec<i32>,
    pub rejects: Vec<Rejected>,
    /// Records read in this batch (conforming and rejected).
    pub records: u64,
    pub position: SourcePosition,
    /// The batch ended because the feed has no next page (polling again now would
    /// only fetch the last page again).
    pub exhausted: bool,
}

/// A micro-batch source's definition version ([`kiln_artifact::identity::source_definition`]
/// over its schema fingerprint and `text`, the options that give its records their
/// meaning, one per line).
pub(crate) fn definition_version(kind: SourceKind, schema: &SchemaRef, text: &str) -> String {
    source_definition(kind, &kiln_contracts::schema_fingerprint(schema), text)
}

/// `s` as Rust writes a string literal (double quotes, `\"` and `\\` escaped, other
/// control characters as escapes): the form source definitions write names in.
pub(crate) fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\'' => out.push(c),
            c => out.extend(c.escape_debug()),
        }
    }
    out.push('"');
    out
}
