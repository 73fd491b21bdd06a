//! Micro-batch sources: sources read in batches of records with a committed position
//! (ingest products, streams), and the tables they are registered as.
//!
//! - [`batch`]: [`MicroBatch`] (records, their partitions, rejects, the position after
//!   them) and the definition version every source's identity is made of;
//! - [`http`]: HTTP polling with retries and paging;
//! - [`kafka`]: Kafka topics (rskafka, behind the `kafka` cargo feature);
//! - [`files`]: a directory's arriving files, each read once;
//! - the embedded log's source is [`crate::log::LogSource`];
//! - [`source`]: [`MicroBatchSource`], all of them behind one interface;
//! - [`table`]: [`MicroBatchTable`], [`StreamTable`] and their scan.

pub mod batch;
pub mod files;
pub mod http;
pub mod kafka;
pub mod source;
pub mod table;

pub use batch::MicroBatch;
pub use files::FilesSource;
pub use http::{HttpFormat, HttpSource, Pagination};
pub use kafka::KafkaSource;
pub use source::MicroBatchSource;
pub use table::{MicroBatchExec, MicroBatchTable, StreamTable};
