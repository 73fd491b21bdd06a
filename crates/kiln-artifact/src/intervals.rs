//! Time intervals of incremental products (`incremental = 'by_time'`): the calendar of a
//! grain, sets of days, and the state a committed build keeps of them.
//!
//! Days are counted from 1970-01-01 (Arrow's `Date32`); a set of days is kept as sorted,
//! disjoint, half-open ranges, so 2,400 computed days in a row cost one range, not 2,400
//! entries (the "interval explosion" of tools that store one row per interval). Intervals
//! of a grain are aligned: a day; a week from Monday (ISO 8601); a calendar month, quarter
//! or year.

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

/// Days between 0001-01-01 (chrono's day 1 of the common era) and 1970-01-01.
const EPOCH_FROM_CE: i32 = 719_163;

/// The length of one interval of an incremental product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grain {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Grain {
    pub const ALL: [Grain; 5] = [Grain::Day, Grain::Week, Grain::Month, Grain::Quarter, Grain::Year];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Day => "day",
            Grain::Week => "week",
            Grain::Month => "month",
            Grain::Quarter => "quarter",
            Grain::Year => "year",
        }
    }

    /// The first day of the interval holding `day`.
    pub fn floor(self, day: i32) -> i32 {
        let Some(date) = date(day) else { return day };
        let first = match self {
            Grain::Day => return day,
            Grain::Week => return day - date.weekday().num_days_from_monday() as i32,
            Grain::Month => NaiveDate::from_ymd_opt(date.year(), date.month(), 1),
            Grain::Quarter => NaiveDate::from_ymd_opt(date.year(), (date.month() - 1) / 3 * 3 + 1, 1),
            Grain::Year => NaiveDate::from_ymd_opt(date.year(), 1, 1),
        };
        first.map_or(day, days)
    }

    /// The first day of the interval after the one holding `day`.
    pub fn next(self, day: i32) -> i32 {
        let first = self.floor(day);
        let months = match self {
            Grain::Day => return first + 1,
            Grain::Week => return first + 7,
            Grain::Month => 1,
            Grain::Quarter => 3,
            Grain::Year => 12,
        };
        date(first)
            .and_then(|d| d.checked_add_months(chrono::Months::new(months)))
            .map_or(first + 28 * months as i32, days)
    }

    /// Whether `day` is the first day of an interval.
    pub fn aligned(self, day: i32) -> bool {
        self.floor(day) == day
    }

    /// The intervals in `[from, to)` (both aligned), as their first days.
    pub fn starts(self, from: i32, to: i32) -> impl Iterator<Item = i32> {
        std::iter::successors(Some(from), move |&d| Some(self.next(d))).take_while(move |&d| d < to)
    }

    /// How many intervals `[from, to)` holds.
    pub fn count(self, from: i32, to: i32) -> u64 {
        match self {
            Grain::Day => (to - from).max(0) as u64,
            Grain::Week => ((to - from).max(0) / 7) as u64,
            _ => self.starts(from, to).count() as u64,
        }
    }
}

impl std::fmt::Display for Grain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn date(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day.checked_add(EPOCH_FROM_CE)?)
}

fn days(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - EPOCH_FROM_CE
}

/// `YYYY-MM-DD` of a day (days since 1970-01-01).
pub fn format_day(day: i32) -> String {
    match date(day) {
        Some(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
        None => format!("day {day}"),
    }
}

/// The day of `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<i32> {
    let mut parts = text.trim().splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).map(days)
}

/// A set of days as sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySet(Vec<(i32, i32)>);

impl DaySet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn range(start: i32, end: i32) -> Self {
        let mut s = Self::new();
        s.insert(start, end);
        s
    }

    pub fn ranges(&self) -> &[(i32, i32)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `[start, end)`.
    pub fn insert(&mut self, start: i32, end: i32) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.0 = out;
    }

    pub fn union(&self, other: &DaySet) -> DaySet {
        let mut out = self.clone();
        for &(a, b) in &other.0 {
            out.insert(a, b);
        }
        out
    }

    pub fn intersect(&self, other: &DaySet) -> DaySet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.0.len() && j < other.0.len() {
            let (a, b) = self.0[i];
            let (c, d) = other.0[j];
            let (s, e) = (a.max(c), b.min(d));
            if s < e {
                out.push((s, e));
            }
            if b < d {
                i += 1;
            } else {
                j += 1;
            }
        }
        DaySet(out)
    }

    pub fn minus(&self, other: &DaySet) -> DaySet {
        let mut out = Vec::new();
        for &(a, b) in &self.0 {
            let mut s = a;
            for &(c, d) in &other.0 {
                if d <= s || c >= b {
                    continue;
                }
                if c > s {
                    out.push((s, c));
                }
                s = s.max(d);
            }
            if s < b {
                out.push((s, b));
            }
        }
        DaySet(out)
    }

    pub fn contains(&self, day: i32) -> bool {
        self.0.iter().any(|&(a, b)| a <= day && day < b)
    }

    /// The days as stored ranges.
    pub fn to_ranges(&self) -> Vec<DayRange> {
        self.0.iter().map(|&(a, b)| DayRange { start: format_day(a), end: format_day(b) }).collect()
    }

    /// The set of stored ranges; `None` when a date does not parse.
    pub fn from_ranges(ranges: &[DayRange]) -> Option<DaySet> {
        let mut s = DaySet::new();
        for r in ranges {
            s.insert(parse_day(&r.start)?, parse_day(&r.end)?);
        }
        Some(s)
    }
}

/// Days `[start, end)` as `YYYY-MM-DD`, in records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRange {
    pub start: String,
    pub end: String,
}

/// What a committed build of an incremental product holds of its intervals, recorded in
/// each of its commits (`Manifest::intervals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalState {
    /// The product's time column (a `DATE` partition column).
    pub column: String,
    pub grain: Grain,
    /// The first interval of the product (its `start` option).
    pub start: String,
    /// The intervals the table holds, computed from the inputs below (a forward-only
    /// query change aside, see `forward_only`).
    pub done: Vec<DayRange>,
    /// Intervals a run planned and had not committed yet when it made this commit (a
    /// backfill commits batch by batch): the next build computes them first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<DayRange>,
    /// The input the time column comes from, whose files say which intervals changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// That input's files when the intervals were computed, each with the range of the
    /// product's time column it covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<InputFile>,
    /// Query changes applied to new intervals only (`on_change = 'forward_only'`): from
    /// which interval each query holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_only: Vec<ForwardOnly>,
}

impl IntervalState {
    pub fn done_days(&self) -> DaySet {
        DaySet::from_ranges(&self.done).unwrap_or_default()
    }

    pub fn pending_days(&self) -> DaySet {
        DaySet::from_ranges(&self.pending).unwrap_or_default()
    }

    /// The days the input's files cover (the data's extent), `None` when a file's range
    /// is not known.
    pub fn extent(&self) -> Option<(i32, i32)> {
        let mut extent: Option<(i32, i32)> = None;
        for f in &self.files {
            let Some((a, b)) = f.days() else { continue };
            extent = Some(extent.map_or((a, b), |(x, y)| (x.min(a), y.max(b))));
        }
        extent
    }
}

/// One file of an incremental product's time input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub path: String,
    /// Size and modification time (a source's file) or empty (a product's files are
    /// immutable): a file with the same path and version is the same file.
    pub version: String,
    /// The first and last day of the product's time column its rows map to: both `None`
    /// for a file without values there; `first` absent and `last` empty when its range
    /// is not known (it may hold any interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

impl InputFile {
    /// `[first, last + 1)`.
    pub fn days(&self) -> Option<(i32, i32)> {
        Some((parse_day(self.first.as_deref()?)?, parse_day(self.last.as_deref()?)? + 1))
    }
}

/// A query change kept for later intervals only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardOnly {
    pub query_fp: String,
    /// The first interval computed with it.
    pub from: String,
}

/// Why an interval is computed (`kiln plan`, the run summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalReason {
    /// Never computed: a gap, or new data past the end.
    Missing,
    /// A file of the time input that covers it was added, replaced or removed.
    InputChanged,
    /// Another input changed (it is not split by time): every interval.
    UpstreamChanged,
    /// The query or schema changed and `on_change = 'rebuild'`: every interval.
    Rebuild,
    /// One of the last `lookback` intervals, recomputed on every build.
    Lookback,
    /// `--restate`.
    Restated,
    /// Planned by an earlier run that did not finish.
    Pending,
}

impl IntervalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalReason::Missing => "missing",
            IntervalReason::InputChanged => "input changed",
            IntervalReason::UpstreamChanged => "upstream changed",
            IntervalReason::Rebuild => "query changed",
            IntervalReason::Lookback => "lookback",
            IntervalReason::Restated => "restated",
            IntervalReason::Pending => "pending",
        }
    }
}

/// Consecutive intervals computed for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalRun {
    pub start: String,
    /// Exclusive.
    pub end: String,
    pub intervals: u64,
    pub reason: IntervalReason,
}

/// What an incremental product's build computes (`ProductPlan::intervals`,
/// `ProductRun::intervals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalPlan {
    pub column: String,
    pub grain: Grain,
    /// How the scan is narrowed to the intervals: `derived from <table>.<column>`,
    /// `written (kiln_interval_start/end)`, or `none: <why>` (every batch scans all rows).
    pub filter: String,
    /// The intervals to compute, in order, grouped by reason.
    pub compute: Vec<IntervalRun>,
    pub intervals: u64,
    /// Commits the computation takes (`batch_size` intervals each).
    pub batches: u64,
    /// Intervals the product holds after it (its whole range).
    pub held: u64,
    /// Set when a query change is applied forward only (the intervals held keep the old
    /// query's rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_only: Option<String>,
    /// `kiln plan`: the time input is a product this build builds first, whose new files
    /// decide the intervals; `compute` is what its committed build says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        let d = |s: &str| parse_day(s).unwrap();
        assert_eq!(d("1970-01-01"), 0);
        assert_eq!(format_day(d("1992-02-29")), "1992-02-29");
        assert_eq!(parse_day("1993-02-29"), None);
        assert_eq!(Grain::Week.floor(d("2026-12-03")), d("2026-11-30"), "a Thursday's week starts on Monday");
        assert_eq!(Grain::Month.next(d("1992-01-31")), d("1992-02-01"));
        assert_eq!(Grain::Quarter.floor(d("1995-08-17")), d("1995-07-01"));
        assert_eq!(Grain::Quarter.next(d("1995-12-31")), d("1996-01-01"));
        assert_eq!(Grain::Year.count(d("1992-01-01"), d("1999-01-01")), 7);
        assert_eq!(Grain::Month.count(d("1992-01-01"), d("1993-01-01")), 12);
        assert_eq!(Grain::Day.count(d("1992-01-01"), d("1992-03-01")), 60);
    }

    #[test]
    fn day_sets() {
        let mut s = DaySet::range(0, 10);
        s.insert(20, 30);
        s.insert(10, 12); // adjacent: merged
        assert_eq!(s.ranges(), &[(0, 12), (20, 30)]);
        assert_eq!(s.minus(&DaySet::range(5, 25)).ranges(), &[(0, 5), (25, 30)]);
        assert_eq!(s.intersect(&DaySet::range(5, 25)).ranges(), &[(5, 12), (20, 25)]);
        assert_eq!(s.union(&DaySet::range(11, 21)).ranges(), &[(0, 30)]);
        let back = DaySet::from_ranges(&s.to_ranges()).unwrap();
        assert_eq!(back, s);
    }
}
