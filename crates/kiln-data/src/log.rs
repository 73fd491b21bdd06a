//! The embedded log: append-only topics of NDJSON records, with partitions and offsets,
//! stored through the warehouse's object store (streams' `connector = 'log'`, and
//! `kiln produce TOPIC`).
//!
//! ```text
//! _topics/<topic>/_topic.json                           {"partitions": N}
//! _topics/<topic>/<partition>/<base:020>-<count>.ndjson  one segment: records base .. base+count
//! ```
//!
//! Object stores cannot append, so a topic grows by immutable segments. A record's offset
//! is its segment's base plus its line index; a partition's end offset is the last
//! segment's base plus count, known from the listing alone. A segment is written with a
//! create-only put: two producers racing for the same base offset cannot both win; the
//! loser lists again and retries with the next base, so offsets are never reused and a
//! committed segment never changes. A reader that holds offsets (a stream's checkpoint)
//! reads exactly the same records again after a restart.
//!
//! Records are kept as raw lines: a malformed one is the reading stream's business
//! (`on_error`), reported with topic, partition and offset.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes as arrow_schema;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions};
use serde::{Deserialize, Serialize};

use crate::warehouse::Warehouse;
use crate::{DataError, Result};

/// The root of the topics in a warehouse.
const TOPICS: &str = "_topics";
/// How many times a producer retries after losing a race for a base offset.
const MAX_RACES: usize = 100;

/// A topic's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub partitions: u32,
}

/// One segment of a partition, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Segment {
    base: u64,
    count: u64,
}

/// The last segment read of each partition (see [`LogTopic::read_cached`]).
#[derive(Debug, Clone, Default)]
pub struct SegmentCache(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u32, (Segment, bytes::Bytes)>>>);

impl SegmentCache {
    fn get(&self, partition: u32, segment: Segment) -> Option<bytes::Bytes> {
        let map = self.0.lock().ok()?;
        map.get(&partition).filter(|(s, _)| *s == segment).map(|(_, b)| b.clone())
    }

    fn put(&self, partition: u32, segment: Segment, bytes: bytes::Bytes) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(partition, (segment, bytes));
        }
    }
}

/// A topic of the embedded log.
#[derive(Debug, Clone)]
pub struct LogTopic {
    warehouse: Warehouse,
    name: String,
    meta: TopicMeta,
}

/// A record read back: its partition, offset and raw text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub partition: u32,
    pub offset: u64,
    pub line: String,
}

impl LogTopic {
    /// Opens topic `name`, creating it with `partitions` partitions when it does not exist
    /// (`None`: 1). An existing topic keeps its partition count; asking for another is an
    /// error.
    pub async fn open_or_create(warehouse: &Warehouse, name: &str, partitions: Option<u32>) -> Result<Self> {
        check_name(name)?;
        if let Some(topic) = Self::open(warehouse, name).await? {
            if let Some(p) = partitions
                && p != topic.meta.partitions
            {
                return Err(DataError::Config(format!(
                    "topic `{name}` has {} partition(s), not {p}",
                    topic.meta.partitions
                )));
            }
            return Ok(topic);
        }
        let meta = TopicMeta { partitions: partitions.unwrap_or(1).max(1) };
        let bytes = serde_json::to_vec(&meta).map_err(|e| DataError::Config(format!("topic `{name}`: {e}")))?;
        let path = warehouse.path(&format!("{TOPICS}/{name}/_topic.json"));
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        match warehouse.store().put_opts(&path, bytes.into(), create).await {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(DataError::Store { context: format!("cannot create topic `{name}`"), source: e }),
        }
        // A concurrent creator may have won with another partition count: read it back.
        Self::open(warehouse, name)
            .await?
            .ok_or_else(|| DataError::Config(format!("topic `{name}` vanished while being created")))
    }

    /// Opens an existing topic (`None` when it does not exist).
    pub async fn open(warehouse: &Warehouse, name: &str) -> Result<Option<Self>> {
        check_name(name)?;
        let path = warehouse.path(&format!("{TOPICS}/{name}/_topic.json"));
        let bytes = match warehouse.store().get(&path).await {
            Ok(r) => r.bytes().await.map_err(DataError::store(format!("cannot read topic `{name}`")))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(DataError::Store { context: format!("cannot read topic `{name}`"), source: e }),
        };
        let meta: TopicMeta = serde_json::from_slice(&bytes)
            .map_err(|e| DataError::Config(format!("topic `{name}`: bad _topic.json: {e}")))?;
        Ok(Some(Self { warehouse: warehouse.clone(), name: name.to_owned(), meta }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn partitions(&self) -> u32 {
        self.meta.partitions
    }

    fn partition_dir(&self, partition: u32) -> Path {
        self.warehouse.path(&format!("{TOPICS}/{}/{partition}", self.name))
    }

    /// The segments of `partition`, in offset order.
    async fn segments(&self, partition: u32) -> Result<Vec<Segment>> {
        let dir = self.partition_dir(partition);
        let listed: Vec<_> = self
            .warehouse
            .store()
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(DataError::store(format!("cannot list topic `{}`", self.name)))?;
        let mut segments: Vec<Segment> = listed
            .iter()
            .filter_map(|o| o.location.filename())
            .filter_map(|f| {
                let (base, count) = f.strip_suffix(".ndjson")?.split_once('-')?;
                Some(Segment { base: base.parse().ok()?, count: count.parse().ok()? })
            })
            .collect();
        segments.sort();
        Ok(segments)
    }

    /// The offset the next record of `partition` gets.
    pub async fn end_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.segments(partition).await?.last().map_or(0, |s| s.base + s.count))
    }

    /// Appends `lines` (records without their newline) to `partition` as one segment;
    /// returns the first record's offset.
    pub async fn append(&self, partition: u32, lines: &[String]) -> Result<u64> {
        if partition >= self.meta.partitions {
            return Err(DataError::Config(format!(
                "topic `{}` has no partition {partition} (it has {})",
                self.name, self.meta.partitions
            )));
        }
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        let body = bytes::Bytes::from(body);
        for _ in 0..MAX_RACES {
            let base = self.end_offset(partition).await?;
            let path = self.partition_dir(partition).join(format!("{base:020}-{}.ndjson", lines.len()));
            let create = PutOptions { mode: PutMode::Create, ..Default::default() };
            match self.warehouse.store().put_opts(&path, body.clone().into(), create).await {
                Ok(_) => return Ok(base),
                Err(object_store::Error::AlreadyExists { .. }) => continue, // another producer won
                Err(e) => {
                    return Err(DataError::Store {
                        context: format!("cannot append to topic `{}`", self.name),
                        source: e,
                    });
                }
            }
        }
        Err(DataError::Config(format!("topic `{}`: gave up appending after {MAX_RACES} races", self.name)))
    }

    /// Up to `max` records of `partition` from offset `from`, in offset order.
    pub async fn read(&self, partition: u32, from: u64, max: usize) -> Result<Vec<LogRecord>> {
        self.read_cached(partition, from, max, &SegmentCache::default()).await
    }

    /// [`LogTopic::read`], keeping the last segment read of each partition in `cache`: a
    /// reader that takes a large segment in several batches fetches it once.
    pub async fn read_cached(
        &self,
        partition: u32,
        from: u64,
        max: usize,
        cache: &SegmentCache,
    ) -> Result<Vec<LogRecord>> {
        let mut out = Vec::new();
        for segment in self.segments(partition).await? {
            if segment.base + segment.count <= from {
                continue;
            }
            if out.len() >= max {
                break;
            }
            let cached = cache.get(partition, segment);
            let bytes = match cached {
                Some(bytes) => bytes,
                None => {
                    let path =
                        self.partition_dir(partition).join(format!("{:020}-{}.ndjson", segment.base, segment.count));
                    let failed = || DataError::store(format!("cannot read topic `{}`", self.name));
                    let bytes =
                        self.warehouse.store().get(&path).await.map_err(failed())?.bytes().await.map_err(failed())?;
                    cache.put(partition, segment, bytes.clone());
                    bytes
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            let skip = from.saturating_sub(segment.base) as usize;
            for (k, line) in text.split_terminator('\n').enumerate().skip(skip) {
                if out.len() >= max {
                    break;
                }
                out.push(LogRecord { partition, offset: segment.base + k as u64, line: line.to_owned() });
            }
        }
        Ok(out)
    }

    /// Every partition's end offset.
    pub async fn end_offsets(&self) -> Result<BTreeMap<u32, u64>> {
        let mut out = BTreeMap::new();
        for p in 0..self.meta.partitions {
            out.insert(p, self.end_offset(p).await?);
        }
        Ok(out)
    }
}

/// A log topic read as a source, in micro-batches (crate::feed): a product over it
/// ingests records from the offsets its manifest committed, like a Kafka source.
#[derive(Debug, Clone)]
pub struct LogSource {
    pub name: String,
    pub warehouse: Warehouse,
    pub topic: String,
    /// The declared schema (scalar columns).
    pub schema: arrow_schema::SchemaRef,
    pub batch_records: usize,
    pub reject: bool,
    /// Records are CSV lines in the declared column order (else JSON objects).
    pub csv: bool,
    pub cache: SegmentCache,
}

impl LogSource {
    pub fn start(&self) -> kiln_artifact::SourcePosition {
        kiln_artifact::SourcePosition { url: format!("log://{}", self.topic), ..Default::default() }
    }

    /// The definition version: topic, schema and error policy.
    pub fn version(&self) -> String {
        let text = format!("{}\n{}\n{}\n", self.topic, self.reject, if self.csv { "csv" } else { "json" });
        crate::feed::batch::definition_version(kiln_artifact::identity::SourceKind::Log, &self.schema, &text)
    }

    /// The next micro-batch after `from`, up to `batch_records` records: each partition
    /// from its committed offset (0 when none), an equal share each, then what is left
    /// of the batch from the partitions that had more (in partition order), so a backlog
    /// is read evenly and per-partition watermarks advance together. `None` when nothing
    /// is new. Rejected records name `log://<topic>/<partition>` as their file and the
    /// offset as their line.
    pub async fn next_batch(
        &self,
        from: &kiln_artifact::SourcePosition,
        batch_size: usize,
    ) -> Result<Option<crate::feed::MicroBatch>> {
        let fail = |message: String| DataError::Source { name: self.name.clone(), message };
        let Some(topic) = LogTopic::open(&self.warehouse, &self.topic).await? else {
            return Err(fail(format!("no topic `{}` yet (kiln produce {} creates it)", self.topic, self.topic)));
        };
        let mut position = from.clone();
        let partitions = topic.partitions().max(1);
        let share = self.batch_records.div_ceil(partitions as usize).max(1);
        let mut taken: BTreeMap<u32, Vec<LogRecord>> = BTreeMap::new();
        let mut total = 0usize;
        for pass in 0..2 {
            for partition in 0..partitions {
                let left = self.batch_records.saturating_sub(total);
                let had = taken.get(&partition).map_or(0, Vec::len);
                // The second pass only goes back to partitions that filled their share.
                if left == 0 || (pass == 1 && had < share) {
                    continue;
                }
                let want = if pass == 0 { share.min(left) } else { left };
                let offset = position.offsets.get(&(partition as i32)).copied().unwrap_or(0).max(0) as u64;
                let read = topic.read_cached(partition, offset + had as u64, want, &self.cache).await?;
                total += read.len();
                taken.entry(partition).or_default().extend(read);
            }
        }
        let (mut batches, mut parts, mut rejects, mut records) = (Vec::new(), Vec::new(), Vec::new(), 0u64);
        for (partition, read) in taken {
            let Some(last) = read.last().map(|r| r.offset) else { continue };
            records += read.len() as u64;
            position.offsets.insert(partition as i32, last as i64 + 1);
            let origin = format!("log://{}/{partition}", self.topic);
            let (b, r) = if self.csv {
                self.csv_records(read, &origin, batch_size)?
            } else {
                let lines = read.into_iter().map(|r| (r.offset, r.line));
                crate::checked::parse_json_records(&self.name, &self.schema, &origin, lines, batch_size)
                    .map_err(DataError::exec(format!("source `{}`", self.name)))?
            };
            parts.extend(std::iter::repeat_n(partition as i32, b.len()));
            batches.extend(b);
            rejects.extend(r);
        }
        if let (false, Some(first)) = (self.reject, rejects.first()) {
            return Err(fail(format!("{} offset {}: {}", first.file, first.line, first.reason)));
        }
        if records == 0 {
            return Ok(None);
        }
        position.records += records;
        position.batches += 1;
        let exhausted = records < self.batch_records as u64;
        Ok(Some(crate::feed::MicroBatch { batches, partitions: parts, rejects, records, position, exhausted }))
    }
}

impl LogSource {
    /// CSV records (one per line, contiguous offsets) read by the checked reader behind a
    /// header of the declared names; rejects name their offset as their line.
    fn csv_records(
        &self,
        read: Vec<LogRecord>,
        origin: &str,
        batch_size: usize,
    ) -> Result<(Vec<datafusion::arrow::array::RecordBatch>, Vec<crate::checked::Rejected>)> {
        let Some(first) = read.first().map(|r| r.offset) else { return Ok((Vec::new(), Vec::new())) };
        let header: Vec<&str> = self.schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut text = header.join(",");
        for r in &read {
            text.push('\n');
            text.push_str(&r.line);
        }
        text.push('\n');
        let (batches, mut rejects) = crate::checked::parse_file_records(
            &self.name,
            &self.schema,
            crate::checked::CheckedFormat::Csv,
            text.as_bytes(),
            origin,
            batch_size,
        )
        .map_err(DataError::exec(format!("source `{}`", self.name)))?;
        for r in &mut rejects {
            // Line 1 is the header; line k + 2 is record k.
            r.line = first + r.line.saturating_sub(2);
        }
        Ok((batches, rejects))
    }
}

/// Where `kiln produce` sends a record: by the hash of its `key` field's JSON text when
/// a key is given (records with the same key keep their relative order), else
/// round-robin by line number.
pub fn partition_for(line: &str, line_no: u64, key: Option<&str>, partitions: u32) -> u32 {
    let partitions = partitions.max(1);
    let Some(key) = key else { return (line_no % u64::from(partitions)) as u32 };
    let value = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get(key).map(ToString::to_string))
        .unwrap_or_default();
    // FNV-1a: stable across processes and versions (std's hasher is not promised to be).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions)) as u32
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with(['.', '_'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DataError::Config(format!(
            "topic name `{name}`: use letters, digits, `_`, `-` and `.`, not starting with `.` or `_`"
        )))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_segments_and_reads_by_offset() {
        let wh = Warehouse::memory();
        let topic = LogTopic::open_or_create(&wh, "clicks", Some(2)).await.unwrap();
        let lines = |r: std::ops::Range<u32>| r.map(|i| format!("{{\"i\": {i}}}")).collect::<Vec<_>>();
        assert_eq!(topic.append(0, &lines(0..3)).await.unwrap(), 0);
        assert_eq!(topic.append(0, &lines(3..5)).await.unwrap(), 3);
        assert_eq!(topic.append(1, &lines(0..1)).await.unwrap(), 0);
        assert_eq!(topic.end_offsets().await.unwrap(), BTreeMap::from([(0, 5), (1, 1)]));
        let read = topic.read(0, 2, 2).await.unwrap();
        assert_eq!(
            read.iter().map(|r| (r.offset, r.line.as_str())).collect::<Vec<_>>(),
            [(2, "{\"i\": 2}"), (3, "{\"i\": 3}")]
        );
        assert_eq!(topic.read(0, 5, 10).await.unwrap(), []);
        assert!(topic.append(2, &lines(0..1)).await.is_err());
        // Reopened, it is the same topic; another partition count is refused.
        let again = LogTopic::open_or_create(&wh, "clicks", None).await.unwrap();
        assert_eq!(again.partitions(), 2);
        assert!(LogTopic::open_or_create(&wh, "clicks", Some(3)).await.is_err());
        assert!(LogTopic::open_or_create(&wh, "../x", None).await.is_err());
    }

    #[tokio::test]
    async fn racing_producers_never_share_an_offset() {
        let wh = Warehouse::memory();
        let topic = LogTopic::open_or_create(&wh, "t", None).await.unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|k| {
                let topic = topic.clone();
                tokio::spawn(async move { topic.append(0, &[format!("{{\"producer\": {k}}}")]).await.unwrap() })
            })
            .collect();
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await.unwrap());
        }
        bases.sort_unstable();
        assert_eq!(bases, (0..8).collect::<Vec<_>>());
        assert_eq!(topic.read(0, 0, 100).await.unwrap().len(), 8);
    }

    #[test]
    fn keys_pick_stable_partitions() {
        let p = |line: &str| partition_for(line, 0, Some("user"), 4);
        assert_eq!(p(r#"{"user": "a", "n": 1}"#), p(r#"{"n": 2, "user": "a"}"#));
        assert_eq!(partition_for("x", 5, None, 4), 1);
        let spread: std::collections::BTreeSet<u32> = (0..100).map(|i| p(&format!("{{\"user\": \"u{i}\"}}"))).collect();
        assert_eq!(spread.len(), 4);
    }
}
