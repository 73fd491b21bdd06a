//! Kafka sources, read in micro-batches like HTTP sources (crate::feed), with rskafka
//! (a pure-Rust client) behind the `kafka` cargo feature.
//!
//! Kiln does not use consumer groups: the offsets it has committed are the ones in the
//! product's manifest (`SourcePosition::offsets`, next offset per partition), written in
//! the same commit as the rows, which is what makes ingest exactly-once. A partition
//! without a committed offset starts at the earliest retained record (`start =
//! 'earliest'`, the default) or at the end (`'latest'`). Each partition is read up to the
//! high watermark its first fetch of the batch saw, an equal share of `batch_records` each
//! and then what is left from those that had more; partitions first seen empty have their starting offsets
//! committed by an empty batch. Each record's value is one JSON object, parsed by the rules of
//! crate::checked; a record without a value (a tombstone) or with a value that is not
//! UTF-8 is malformed. Rejected records name `kafka://<topic>/<partition>` as their file
//! and the offset as their line.
//!
//! Every call to the brokers is bounded by the source's `timeout`: rskafka retries a
//! broker it cannot reach with backoff and, by default, forever; Kiln gives it `timeout`
//! as the backoff deadline and bounds each call with it too, so an unreachable or
//! restarted broker fails the batch with the broker and topic named (what the batch read
//! is not committed; the next run starts from the committed offsets).

use std::time::Duration;

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
    /// The bound on each call to the brokers (connecting with retries included).
    pub timeout: Duration,
    pub reject: bool,
}

impl KafkaSource {
    pub fn start(&self) -> SourcePosition {
        SourcePosition { url: format!("kafka://{}/{}", self.brokers.join(","), self.topic), ..Default::default() }
    }

    /// The definition version: brokers, topic, schema, start and error policy (not the
    /// batch size or timeout, which change how it is read, not what).
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

    /// Awaits one call to the brokers within `timeout` (retries included: rskafka's own
    /// deadline does not cover a connection that hangs).
    #[cfg(feature = "kafka")]
    async fn bounded<T, E: std::fmt::Display>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> Result<T> {
        let place = || format!("topic `{}` on {}: {what}", self.topic, self.brokers.join(","));
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(format!("{}: {e}", place()))),
            Err(_) => {
                Err(self.error(format!("{}: no answer within {:?} (the source's timeout)", place(), self.timeout)))
            }
        }
    }

    #[cfg(not(feature = "kafka"))]
    pub async fn next_batch(&self, _from: &SourcePosition, _batch_size: usize) -> Result<Option<MicroBatch>> {
        Err(self.error("this kiln was built without the `kafka` cargo feature".into()))
    }

    /// Reads the next micro-batch after `from` (see the module docs).
    #[cfg(feature = "kafka")]
    pub async fn next_batch(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        use rskafka::BackoffConfig;
        use rskafka::client::ClientBuilder;
        use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

        use crate::checked::{Rejected, parse_json_records};

        /// Bytes asked for per fetch.
        const FETCH_BYTES: i32 = 8 << 20;
        /// How long the broker may wait for a first byte: what a partition with nothing
        /// new costs each batch. (Tansu answers a fetch with no wait without its topic.)
        const FETCH_WAIT_MS: i32 = 50;
        let brokers = self.brokers.join(",");
        let backoff = BackoffConfig { deadline: Some(self.timeout), max_backoff: self.timeout, ..Default::default() };
        let client =
            self.bounded("connect", ClientBuilder::new(self.brokers.clone()).backoff_config(backoff).build()).await?;
        let topics = self.bounded("list topics", client.list_topics()).await?;
        let topic = topics
            .into_iter()
            .find(|t| t.name == self.topic)
            .ok_or_else(|| self.error(format!("no topic `{}` on {brokers}", self.topic)))?;
        let mut position = from.clone();
        // Each partition: its client, next offset, the high watermark its first fetch of
        // this batch saw (reads stop there) and the records taken so far (offset, value
        // or why it has none). The bound is the fetch response's high watermark, not a
        // ListOffsets answer: Tansu 0.6 answers ListOffsets(latest) with the last record
        // batch's base offset + 1 rather than the log end (1 for a partition holding one
        // batch of 10 records), while its fetch responses carry the right one; Kafka gives
        // the same number both ways.
        struct Part {
            id: i32,
            client: rskafka::client::partition::PartitionClient,
            next: i64,
            high: Option<i64>,
            taken: Vec<(u64, std::result::Result<String, &'static str>)>,
        }
        let mut parts = Vec::new();
        for id in topic.partitions {
            let client = self
                .bounded("partition", client.partition_client(self.topic.clone(), id, UnknownTopicHandling::Error))
                .await?;
            let next = match position.offsets.get(&id) {
                Some(o) => *o,
                None => {
                    let earliest = self.bounded("offsets", client.get_offset(OffsetAt::Earliest)).await?;
                    match self.start {
                        StartAt::Earliest => earliest,
                        StartAt::Latest => {
                            let latest = self.bounded("offsets", client.get_offset(OffsetAt::Latest)).await?;
                            let fetch = client.fetch_records(earliest, 1..2, FETCH_WAIT_MS);
                            let (_, high) = self.bounded("fetch", fetch).await?;
                            latest.max(high)
                        }
                    }
                }
            };
            parts.push(Part { id, client, next, high: None, taken: Vec::new() });
        }
        // An equal share of the batch from each partition, then what is left of it from
        // the partitions that had more (in partition order), as the log source reads: a
        // backlog is read evenly and the partitions' watermarks advance together.
        let share = self.batch_records.div_ceil(parts.len().max(1)).max(1);
        let mut total = 0usize;
        for pass in 0..2 {
            for part in &mut parts {
                let left = self.batch_records.saturating_sub(total);
                if left == 0 || (pass == 1 && part.taken.len() < share) {
                    continue;
                }
                let want = part.taken.len() + if pass == 0 { share.min(left) } else { left };
                while part.high.is_none_or(|high| part.next < high) && part.taken.len() < want {
                    let fetch = part.client.fetch_records(part.next, 1..FETCH_BYTES, FETCH_WAIT_MS);
                    let (fetched, high) = self.bounded("fetch", fetch).await?;
                    let high = *part.high.get_or_insert(high);
                    let from = part.next;
                    let mut fresh = fetched.into_iter().filter(|r| r.offset >= from && r.offset < high).peekable();
                    if fresh.peek().is_none() {
                        break;
                    }
                    for r in fresh {
                        part.next = r.offset + 1;
                        total += 1;
                        part.taken.push((
                            r.offset.max(0) as u64,
                            match r.record.value.map(String::from_utf8) {
                                Some(Ok(text)) => Ok(text),
                                None => Err("the record has no value"),
                                Some(Err(_)) => Err("the value is not UTF-8"),
                            },
                        ));
                        if part.taken.len() >= want {
                            break;
                        }
                    }
                }
            }
        }
        let (mut batches, mut partitions, mut rejects, mut records) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
        for part in parts {
            position.offsets.insert(part.id, part.next);
            if part.taken.is_empty() {
                continue;
            }
            records += part.taken.len() as u64;
            let origin = format!("kafka://{}/{}", self.topic, part.id);
            let (mut lines, mut bad) = (Vec::new(), Vec::new());
            for (line, value) in part.taken {
                match value {
                    Ok(text) => lines.push((line, text)),
                    Err(reason) => bad.push(Rejected {
                        source: self.name.clone(),
                        file: origin.clone(),
                        line,
                        raw: String::new(),
                        reason: reason.into(),
                    }),
                }
            }
            let (b, r) = parse_json_records(&self.name, &self.schema, &origin, lines, batch_size)
                .map_err(DataError::exec(format!("source `{}`", self.name)))?;
            partitions.extend(std::iter::repeat_n(part.id, b.len()));
            batches.extend(b);
            // In offset order (a failing run names the first).
            bad.extend(r);
            bad.sort_by_key(|r| r.line);
            rejects.extend(bad);
        }
        if let (false, Some(first)) = (self.reject, rejects.first()) {
            return Err(self.error(format!("{} offset {}: {}", first.file, first.line, first.reason)));
        }
        if records == 0 {
            if position.offsets == from.offsets {
                return Ok(None);
            }
            // Partitions read for the first time and found empty: their starting offsets
            // are committed (an empty batch), or `start = 'latest'` would resolve the end
            // again on the next run and skip what arrived in between.
            position.batches += 1;
            let (batches, partitions) = (Vec::new(), Vec::new());
            return Ok(Some(MicroBatch { batches, partitions, rejects, records, position, exhausted: true }));
        }
        position.records += records;
        position.batches += 1;
        let exhausted = records < self.batch_records as u64;
        Ok(Some(MicroBatch { batches, partitions, rejects, records, position, exhausted }))
    }
}
