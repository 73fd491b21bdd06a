//! The programs the control plane compiles for `kiln stream`: what a stream's records
//! mean in time ([`StreamProgram`]) and how a materialized view runs over it
//! ([`ViewProgram`]). Typed and complete: the runtime never looks at SQL, option text or
//! function names.

use std::time::Duration;

/// A stream (`CREATE STREAM`), besides how its source reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamProgram {
    pub name: String,
    /// The event-time column (`WATERMARK FOR`), if any.
    pub event_time: Option<EventTime>,
    /// A partition without new records for this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Malformed records go to `<stream>__rejected` (else they fail the run).
    pub reject: bool,
    /// How long to wait before polling the source again after it had nothing new.
    pub poll_interval: Duration,
}

/// A stream's event time: its column (a TIMESTAMP of the stream's schema) and the allowed
/// lateness the watermark trails the latest event time by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    pub column: String,
    pub delay_ms: i64,
}

/// How a materialized view runs over its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewProgram {
    pub stream: StreamProgram,
    /// The view's window, when it aggregates (a view aggregates by exactly one).
    pub window: Option<WindowProgram>,
    pub late_events: LateEvents,
}

/// A windowed view's aggregation: which of its aggregate's group expressions is the
/// window start, and the window's length and slide (a TUMBLE window slides by its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowProgram {
    /// Index among the group expressions of the view's (only) aggregate, in the order the
    /// logical plan lists them (DataFusion plans them in that order).
    pub group_index: usize,
    pub size_ms: i64,
    pub slide_ms: i64,
}

/// What happens to late events (`late_events`): counted and dropped, or also kept in
/// `<view>__late`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LateEvents {
    #[default]
    Drop,
    Table,
}
