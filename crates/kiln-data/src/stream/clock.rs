//! The watermark: per source partition, the greatest event time read minus the stream's
//! allowed lateness; the stream's is the least over partitions that sent records within
//! `idle_timeout` (all of them idle: the greatest), and it never moves back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The event time of one source partition, as far as read.
#[derive(Debug, Clone, Copy)]
struct PartitionClock {
    /// Greatest event time read (ms).
    max_ms: i64,
    /// When a record of the partition was last read.
    seen: Instant,
}

/// A stream's watermark bookkeeping (see the module docs).
#[derive(Debug, Clone)]
pub struct Watermark {
    clocks: BTreeMap<i32, PartitionClock>,
    delay_ms: i64,
    idle_timeout: Duration,
    current: Option<i64>,
}

impl Watermark {
    pub fn new(delay_ms: i64, idle_timeout: Duration) -> Self {
        Self { clocks: BTreeMap::new(), delay_ms, idle_timeout, current: None }
    }

    /// Takes up a checkpoint's per-partition event times and watermark (the partitions
    /// count as just seen).
    pub fn restore(&mut self, partitions: &BTreeMap<i32, i64>, watermark_ms: Option<i64>) {
        let now = Instant::now();
        self.clocks = partitions.iter().map(|(&p, &max_ms)| (p, PartitionClock { max_ms, seen: now })).collect();
        self.current = watermark_ms;
    }

    /// Per partition, the greatest event time read (what a checkpoint stores).
    pub fn partitions(&self) -> BTreeMap<i32, i64> {
        self.clocks.iter().map(|(&p, c)| (p, c.max_ms)).collect()
    }

    /// The watermark now (ms since the epoch), if any event was read.
    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// Records that `partition` sent events up to `max_ms`, now.
    pub fn observe(&mut self, partition: i32, max_ms: i64, now: Instant) {
        let clock = self.clocks.entry(partition).or_insert(PartitionClock { max_ms: i64::MIN, seen: now });
        clock.max_ms = clock.max_ms.max(max_ms);
        clock.seen = now;
    }

    /// Moves the watermark to what the clocks allow; the new watermark when it moved.
    pub fn advance(&mut self) -> Option<i64> {
        let candidate = self.candidate()?;
        if self.current.is_some_and(|w| w >= candidate) {
            return None;
        }
        self.current = Some(candidate);
        Some(candidate)
    }

    /// The least partition watermark among partitions that are not idle; when all are
    /// idle, the greatest.
    fn candidate(&self) -> Option<i64> {
        let marks = |active: bool| {
            self.clocks
                .values()
                .filter(move |c| !active || c.seen.elapsed() < self.idle_timeout)
                .map(|c| c.max_ms.saturating_sub(self.delay_ms))
        };
        marks(true).min().or_else(|| marks(false).max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_active_partition_holds_the_watermark_and_it_never_moves_back() {
        let mut w = Watermark::new(5, Duration::from_secs(3600));
        let now = Instant::now();
        w.observe(0, 100, now);
        w.observe(1, 40, now);
        assert_eq!(w.advance(), Some(35));
        w.observe(1, 30, now);
        assert_eq!(w.advance(), None, "an older event moves nothing");
        w.observe(1, 200, now);
        assert_eq!(w.advance(), Some(95));
        assert_eq!(w.current(), Some(95));
        assert_eq!(w.partitions(), BTreeMap::from([(0, 100), (1, 200)]));
        // Every partition idle: the greatest.
        let mut idle = Watermark::new(0, Duration::ZERO);
        idle.observe(0, 10, now);
        idle.observe(1, 50, now);
        assert_eq!(idle.advance(), Some(50));
    }
}
