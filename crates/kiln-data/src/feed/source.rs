//! [`MicroBatchSource`]: every connector a product ingests or a stream reads, behind one
//! interface (start, definition version, next micro-batch).

use datafusion::arrow::datatypes::SchemaRef;
use kiln_artifact::SourcePosition;

use super::batch::MicroBatch;
use super::files::FilesSource;
use super::http::HttpSource;
use super::kafka::KafkaSource;
use crate::Result;
use crate::log::LogSource;

/// A source read in micro-batches: HTTP ([`HttpSource`]), Kafka ([`KafkaSource`]; reading
/// it needs the `kafka` cargo feature), a topic of the embedded log ([`LogSource`]), or a
/// directory's arriving files ([`FilesSource`]).
#[derive(Debug, Clone)]
pub enum MicroBatchSource {
    Http(HttpSource),
    Kafka(KafkaSource),
    Log(LogSource),
    Files(FilesSource),
}

impl MicroBatchSource {
    pub fn name(&self) -> &str {
        match self {
            Self::Http(s) => &s.name,
            Self::Kafka(s) => &s.name,
            Self::Log(s) => &s.name,
            Self::Files(s) => &s.name,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        match self {
            Self::Http(s) => &s.schema,
            Self::Kafka(s) => &s.schema,
            Self::Log(s) => &s.schema,
            Self::Files(s) => &s.schema,
        }
    }

    /// Where a never-ingested product starts.
    pub fn start(&self) -> SourcePosition {
        match self {
            Self::Http(s) => s.start(),
            Self::Kafka(s) => s.start(),
            Self::Log(s) => s.start(),
            Self::Files(s) => s.start(),
        }
    }

    /// The definition version (what the records mean, not how fast they are read).
    pub fn version(&self) -> String {
        match self {
            Self::Http(s) => s.version(),
            Self::Kafka(s) => s.version(),
            Self::Log(s) => s.version(),
            Self::Files(s) => s.version(),
        }
    }

    /// The next micro-batch after `from`; `None` when there is nothing new.
    pub async fn next_batch(&self, from: &SourcePosition, batch_size: usize) -> Result<Option<MicroBatch>> {
        match self {
            Self::Http(s) => s.next_batch(from, batch_size).await,
            Self::Kafka(s) => s.next_batch(from, batch_size).await,
            Self::Log(s) => s.next_batch(from, batch_size).await,
            Self::Files(s) => s.next_batch(from, batch_size).await,
        }
    }
}
