//! The streaming runtime behind `kiln stream`: materialized views run micro-batch by
//! micro-batch over their streams, with checkpoints that make the output exactly-once.
//!
//! Each view is a pipeline over its stream's micro-batch source (crate::feed: log,
//! files, HTTP or Kafka; one read position per view), run by a [`ViewRunner`]:
//!
//! 1. read the next micro-batch (records, the source partition of each batch, the
//!    position after it); records that do not conform, or have no event time, go to
//!    `<stream>__rejected` (or fail the run, per the stream's `on_error`);
//! 2. *late* events are set aside ([`late`]): an event is late when one of its windows has
//!    already been emitted, i.e. the earliest window containing it ends at or before the
//!    watermark. A late event is dropped as a whole (counted; with
//!    `late_events = 'table'` written to `<view>__late`), even when a later HOP window of
//!    it is still open, so every emitted window holds exactly the events that were not
//!    late, and the result equals a batch `GROUP BY` over the stream minus the late
//!    events;
//! 3. the view's stateless part (filters, projections, functions, the HOP explode) runs
//!    over the rest, planned once by DataFusion over the stream's table (which reads the
//!    batch bound when it executes), and its rows enter the window aggregate
//!    ([`window`]); a view without an aggregate appends those rows instead;
//! 4. the watermark advances ([`clock`]): per source partition, the greatest event time
//!    read minus the stream's allowed lateness; the stream's is the least over partitions
//!    that have sent records within `idle_timeout` (all of them idle: the greatest),
//!    never moving back. Windows that end at or before it close: their final rows go
//!    through the operators above the aggregate (the view's projection, HAVING) and are
//!    buffered, in window-end order, until the next checkpoint.
//!
//! A checkpoint ([`ViewRunner::checkpoint`]) writes the buffered rows into a new build
//! directory of the view, the open windows' state next to them (`_state.arrow`, Arrow
//! IPC), the late events and rejected records into new builds of `<view>__late` /
//! `<stream>__rejected`, and then commits the view's manifest: all files so far, the
//! source position, per-partition event times, the watermark, the state file
//! (`Manifest::stream`) and the side datasets' manifests (`Manifest::side`). That
//! manifest is the one commit point: a process killed anywhere restarts from the last
//! one, re-reads from its position with its state, and emits exactly what the
//! uninterrupted run would have (late-event decisions depend on the watermark, which
//! depends only on the records read, as long as no partition goes idle). The side
//! datasets' own pointers are switched after it, and again on restart when a run was
//! killed in between (`kiln gc` keeps the files a view's manifest lists for them).
//!
//! Materialization boundaries (the only places rows are held): one micro-batch's rows
//! after the stateless part (what one aggregation step takes), and the emitted window
//! rows, late events and rejects between two checkpoints.
//!
//! What runs is typed ([`program`]): the control plane says which group expression is
//! the window and which column is the event time; nothing here reads SQL.

pub mod clock;
pub mod late;
pub mod program;
pub mod view;
pub mod window;

pub use late::late_schema;
pub use program::{EventTime, LateEvents, StreamProgram, ViewProgram, WindowProgram};
pub use view::{ViewDataset, ViewRunner, ViewSetup};
pub use window::{WindowAggregate, WindowSpec};
