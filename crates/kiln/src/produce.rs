//! `kiln produce TOPIC`: appends NDJSON records from a reader (stdin) to a topic of the
//! project's embedded log (kiln_data::log), creating it on first use.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use kiln_control::Project;
use kiln_data::Warehouse;
use kiln_data::log::{LogTopic, partition_for};

use crate::KilnError;

/// Records per segment: a long input becomes several segments, each visible to readers
/// as soon as it is written.
const SEGMENT_RECORDS: usize = 10_000;

/// What `produce` appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceReport {
    pub topic: String,
    pub records: u64,
    /// Per partition written to: the first and last offsets appended.
    pub offsets: BTreeMap<u32, (u64, u64)>,
}

/// Appends every non-empty line of `input` to `topic` (see the module docs). `partitions`
/// creates the topic with that many partitions (an existing topic must match); `key`
/// routes records by a JSON field, else round-robin by line.
pub async fn produce(
    dir: &Path,
    topic: &str,
    partitions: Option<u32>,
    key: Option<&str>,
    input: impl BufRead,
) -> Result<ProduceReport, KilnError> {
    let project = Project::load(dir)?;
    let warehouse = Warehouse::open(&project.config.storage.warehouse, &project.root)?;
    let log = LogTopic::open_or_create(&warehouse, topic, partitions).await?;
    let n = log.partitions();
    let mut report = ProduceReport { topic: topic.to_owned(), records: 0, offsets: BTreeMap::new() };
    let mut pending: Vec<Vec<String>> = vec![Vec::new(); n as usize];
    let mut line_no = 0u64;
    let mut lines = input.lines();
    loop {
        // Reading stdin blocks: take a chunk off the runtime's worker thread.
        let chunk: Vec<String> =
            tokio::task::block_in_place(|| lines.by_ref().take(SEGMENT_RECORDS).collect::<std::io::Result<Vec<_>>>())
                .map_err(|e| KilnError::Usage(format!("cannot read the records: {e}")))?;
        let done = chunk.len() < SEGMENT_RECORDS;
        for line in chunk {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let p = partition_for(line, line_no, key, n);
            pending[p as usize].push(line.to_owned());
            line_no += 1;
        }
        for (p, records) in pending.iter_mut().enumerate() {
            if records.is_empty() || (!done && records.len() < SEGMENT_RECORDS) {
                continue;
            }
            let base = log.append(p as u32, records).await?;
            let last = base + records.len() as u64 - 1;
            report.offsets.entry(p as u32).and_modify(|(_, l)| *l = last).or_insert((base, last));
            report.records += records.len() as u64;
            records.clear();
        }
        if done {
            break;
        }
    }
    Ok(report)
}
