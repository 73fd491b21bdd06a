//! Kafka sources, read in micro-batches like HTTP sources (crate::feed), with rskafka
//! (a pure-Rust client) behind the `kafka` cargo feature.
//!
//! Kiln does not use consumer groups: the offsets it has committed are the ones in the
//! product's manifest (`SourcePosition::offsets`, next offset per partition), written in
//! the same commit as the rows, which is what makes ingest exactly-once. A partition
//! without a committed offset starts at the earliest retained record (`start =
//! 'earliest'`, the default) or at the end (`'latest'`). Partitions are read in order, each
//! up to the high watermark seen when the batch starts, until the batch holds
//! `batch_records` records. Each record's value is one JSON object, parsed by the rules of
//! crate::checked; a record without a value (a tombstone) or with a value that is not
//! UTF-8 is malformed. Rejected records name `kafka://<topic>/<partition>` as their file
//! and the offset as their line.

use datafusion::arrow::datatypes::SchemaRef;
use kiln_artifact::SourcePosition;

use kiln_artifact::identity::SourceKind;

use super::batch::{MicroBatch, definition_version, quoted};
use crate::{DataError, Result};

/// Whether this build can read Kafka sources.
pub const ENABLED: bool = cfg!(feature = "kafka");

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// A compiled Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub name: String,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// The declared schema (scalar columns).
    pub schema: SchemaRef,
    pub start: StartAt,
    pub batch_records: usize,
    pub reject: bool,
}

impl KafkaSource {
    pub fn start(&self) -> SourcePosition {
        SourcePosition { url: format!("kafka://{}/{}", self.brokers.join(","), self.topic), ..Default::default() }
    }

    /// The definition version: brokers, topic, schema, start and error policy.
    pub fn version(&self) -> String {
        let brokers: Vec<String> = self.brokers.iter().map(|b| quoted(b)).collect();
        let start = match self.start {
            StartAt::Earliest => "Earliest",
            StartAt::Latest => "Latest",
        };
        let text = format!("[{}]\n{}\n{start}\n{}\n", brokers.join(", "), self.topic, self.reject);
        definition_version(SourceKind::Kafka, &self.schema, &text)
    }

    fn error(&self, message: String) -> DataError {
        DataError::Source { name: self.name.clone(), message }
    }

    #[cfg(not(feature = "kafka"))]
    pub async fn next_batch(&self, _from: &SourcePosition, _batch_size: usize) -> Result<Option<MicroBatch>> {
        Err(self.error("this kiln was built without the `kafka` cargo feature".into()))
    }

    /// Reads the next micro-batch after `from` (see the module docs).
    #[cfg(feature = "kafka")]
    pub async fn next_batch(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        use rskafka::client::ClientBuilder;
        use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

        use crate::checked::{Rejected, parse_json_records};

        /// Bytes asked for per fetch.
        const FETCH_BYTES: i32 = 8 << 20;
        let kafka = |e: rskafka::client::error::Error| self.error(format!("topic `{}`: {e}", self.topic));
        let client = ClientBuilder::new(self.brokers.clone()).build().await.map_err(kafka)?;
        let topics = client.list_topics().await.map_err(kafka)?;
        let topic = topics
            .into_iter()
            .find(|t| t.name == self.topic)
            .ok_or_else(|| self.error(format!("no topic `{}` on {}", self.topic, self.brokers.join(","))))?;
        let mut position = from.clone();
        let (mut batches, mut rejects, mut records) = (Vec::new(), Vec::new(), 0u64);
        let mut partitions = Vec::new();
        for partition in topic.partitions {
            if records >= self.batch_records as u64 {
                break;
            }
            let client = client
                .partition_client(self.topic.clone(), partition, UnknownTopicHandling::Retry)
                .await
                .map_err(kafka)?;
            let mut offset = match position.offsets.get(&partition) {
                Some(o) => *o,
                None => client
                    .get_offset(match self.start {
                        StartAt::Earliest => OffsetAt::Earliest,
                        StartAt::Latest => OffsetAt::Latest,
                    })
                    .await
                    .map_err(kafka)?,
            };
            let high = client.get_offset(OffsetAt::Latest).await.map_err(kafka)?;
            let origin = format!("kafka://{}/{partition}", self.topic);
            let mut lines = Vec::new();
            let full = |records: u64| records >= self.batch_records as u64;
            while offset < high && !full(records) {
                let (fetched, _) = client.fetch_records(offset, 1..FETCH_BYTES, 1_000).await.map_err(kafka)?;
                if fetched.is_empty() {
                    break;
                }
                let from = offset;
                for r in fetched.into_iter().filter(|r| r.offset >= from) {
                    offset = r.offset + 1;
                    let line = r.offset.max(0) as u64;
                    records += 1;
                    match r.record.value.map(String::from_utf8) {
                        Some(Ok(text)) => lines.push((line, text)),
                        bad => rejects.push(Rejected {
                            source: self.name.clone(),
                            file: origin.clone(),
                            line,
                            raw: String::new(),
                            reason: match bad {
                                None => "the record has no value".into(),
                                _ => "the value is not UTF-8".into(),
                            },
                        }),
                    }
                    if full(records) {
                        break;
                    }
                }
            }
            position.offsets.insert(partition, offset);
            let (b, r) = parse_json_records(&self.name, &self.schema, &origin, lines, batch_size)
                .map_err(DataError::exec(format!("source `{}`", self.name)))?;
            partitions.extend(std::iter::repeat_n(partition, b.len()));
            batches.extend(b);
            rejects.extend(r);
        }
        if let (false, Some(first)) = (self.reject, rejects.first()) {
            return Err(self.error(format!("{} offset {}: {}", first.file, first.line, first.reason)));
        }
        if records == 0 {
            return Ok(None);
        }
        position.records += records;
        position.batches += 1;
        let exhausted = records < self.batch_records as u64;
        Ok(Some(MicroBatch { batches, partitions, rejects, records, position, exhausted }))
    }
}
