//! Suite `stream`: Nexmark Bid events through two windowed materialized views, end to end
//! with `kiln stream` (read, parse, window, checkpoint, write):
//!
//! - q7-like: the highest price per 10-second tumbling window;
//! - q5-like: bids per auction over HOP windows of 2-second slide and 10-second size.
//!
//! Each runs from JSON records in a log topic (`kiln produce`'s format) and from Arrow IPC
//! files (a `files` stream), on the same events. Reported: wall time, CPU time of the
//! process (user + system, /proc/self/stat), events per second per core (events / CPU
//! seconds), against the targets (>= 250K events/s per core from Arrow, >= 100K
//! from JSON) and Flink's published per-core figures (12.3K q7, 22.1K q5). The JSON and
//! Arrow runs of a query must emit the same rows.
//!
//! The generator follows the Nexmark specification's Bid (the Beam/Flink generator's
//! rules): event ids interleave 1 person, 3 auctions and 46 bids per 50; a bid goes to a
//! hot auction half of the time (else one of the 100 auctions in flight), to a hot bidder
//! three times in four (else one of the 1,000 active people); price = round(10^(6u) * 100)
//! cents; half the bids come through one of 4 hot channels, the rest through one of
//! 10,000 channels with its own URL; `extra` pads a bid to about 100 bytes; event times
//! advance at 10,000 events per second from 2015-07-15 (the generator's base time), in
//! order.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Value, json};

/// Bids generated (override with KILN_BENCH_STREAM_EVENTS).
const EVENTS: usize = 1_000_000;
/// Records per log segment and per Arrow file.
const CHUNK: usize = 50_000;
/// 2015-07-15T00:00:00Z, the Nexmark generator's base time.
const BASE_TIME_MS: i64 = 1_436_918_400_000;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// One Nexmark Bid.
#[derive(Debug, Clone, PartialEq)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: String,
    pub url: String,
    pub date_time_ms: i64,
    pub extra: String,
}

/// The Nexmark Bid generator (see the module docs), deterministic from its seed.
pub struct BidGenerator {
    state: u64,
    event_id: i64,
}

impl BidGenerator {
    pub fn new(seed: u64) -> Self {
        Self { state: seed ^ 0x9e37_79b9_7f4a_7c15, event_id: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: i64) -> i64 {
        (self.next_u64() % n.max(1) as u64) as i64
    }

    fn string(&mut self, len: usize) -> String {
        (0..len).map(|_| char::from(b'a' + self.below(26) as u8)).collect()
    }

    /// The next bid (event ids that are people or auctions are skipped, as the
    /// generator's interleaving does).
    pub fn next_bid(&mut self) -> Bid {
        const PROPORTION: i64 = 50;
        const PEOPLE: i64 = 1;
        const AUCTIONS: i64 = 3;
        loop {
            let id = self.event_id;
            self.event_id += 1;
            let (epoch, offset) = (id / PROPORTION, id % PROPORTION);
            if offset < PEOPLE + AUCTIONS {
                continue;
            }
            // The last person and auction generated before this event.
            let last_person = epoch * PEOPLE;
            let last_auction = epoch * AUCTIONS + AUCTIONS - 1;
            let auction = if self.below(2) > 0 {
                last_auction / 2 * 2
            } else {
                let min = (last_auction - 100).max(0);
                min + self.below(last_auction - min + 1 + 10)
            } + 1_000;
            let bidder = if self.below(4) > 0 {
                last_person / 4 * 4 + 1
            } else {
                let min = (last_person - 1_000).max(0);
                min + self.below(last_person - min + 1)
            } + 1_000;
            let price = (10f64.powf(self.next_u64() as f64 / u64::MAX as f64 * 6.0) * 100.0).round() as i64;
            let (channel, url) = if self.below(2) > 0 {
                let k = self.below(4) as usize;
                (HOT_CHANNELS[k].to_owned(), format!("https://www.nexmark.com/{}/item.htm?query=1", HOT_CHANNELS[k]))
            } else {
                let c = self.below(10_000);
                let (a, b, d) = (self.string(5), self.string(5), self.string(5));
                let reversed: String = c.to_string().chars().rev().collect();
                (
                    format!("channel-{c}"),
                    format!("https://www.nexmark.com/{a}/{b}/{d}/item.htm?query=1&channel_id={reversed}"),
                )
            };
            let date_time_ms = BASE_TIME_MS + id / 10;
            // Pad to about 100 bytes of fields, as the generator's nextExtra does.
            let size = 8 * 4 + channel.len() + url.len();
            let pad = 100usize.saturating_sub(size);
            let len = pad / 2 + self.below(pad as i64 + 1) as usize / 2;
            let extra = self.string(len);
            return Bid { auction, bidder, price, channel, url, date_time_ms, extra };
        }
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new("date_time", DataType::Timestamp(TimeUnit::Millisecond, None), false),
        Field::new("extra", DataType::Utf8, false),
    ]))
}

/// A bid as the JSON record `kiln produce` appends; `date_time` as Arrow displays it.
fn json_line(b: &Bid, date_time: &str) -> String {
    json!({
        "auction": b.auction, "bidder": b.bidder, "price": b.price, "channel": b.channel,
        "url": b.url, "date_time": date_time, "extra": b.extra,
    })
    .to_string()
}

fn arrow_batch(bids: &[Bid]) -> Result<RecordBatch> {
    let int = |f: fn(&Bid) -> i64| Arc::new(Int64Array::from_iter_values(bids.iter().map(f)));
    let text = |f: fn(&Bid) -> &str| Arc::new(StringArray::from_iter_values(bids.iter().map(f)));
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            int(|b| b.auction),
            int(|b| b.bidder),
            int(|b| b.price),
            text(|b| &b.channel),
            text(|b| &b.url),
            Arc::new(TimestampMillisecondArray::from_iter_values(bids.iter().map(|b| b.date_time_ms))),
            text(|b| &b.extra),
        ],
    )?)
}

const COLUMNS: &str =
    "auction BIGINT NOT NULL, bidder BIGINT NOT NULL, price BIGINT NOT NULL, channel VARCHAR NOT NULL,
    url VARCHAR NOT NULL, date_time TIMESTAMP(3) NOT NULL, extra VARCHAR NOT NULL,
    WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND";

fn views(stream: &str, suffix: &str) -> String {
    format!(
        "CREATE MATERIALIZED VIEW q7_{suffix} AS
SELECT TUMBLE_START(date_time, INTERVAL '10' SECOND) AS window_start, max(price) AS max_price
FROM {stream} GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND);

CREATE MATERIALIZED VIEW q5_{suffix} AS
SELECT HOP_START(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS window_start, auction, count(*) AS bids
FROM {stream} GROUP BY HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND), auction;
"
    )
}

/// Writes the project and its inputs: `events` bids as a log topic and as Arrow files.
async fn setup(dir: &Path, events: usize) -> Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("bids_arrow"))?;
    let sql = format!(
        "CREATE STREAM bids ({COLUMNS}) WITH (connector = 'log', topic = 'bids', batch_records = '{CHUNK}');\n\
         CREATE STREAM bids_arrow ({COLUMNS}) WITH (connector = 'files', path = 'bids_arrow', format = 'arrow', batch_records = '{CHUNK}');\n{}\n{}",
        views("bids", "json"),
        views("bids_arrow", "arrow")
    );
    std::fs::write(
        dir.join("kiln.toml"),
        "[project]\nname = \"nexmark\"\n[storage]\nwarehouse = \"warehouse\"\nartifacts = \".kiln\"\n",
    )?;
    std::fs::write(dir.join("nexmark.sql"), sql)?;
    let warehouse = kiln::data::Warehouse::local(&dir.join("warehouse"))?;
    let topic = kiln::data::log::LogTopic::open_or_create(&warehouse, "bids", Some(1)).await?;
    let mut generator = BidGenerator::new(42);
    let mut written = 0;
    let mut part = 0;
    while written < events {
        let n = CHUNK.min(events - written);
        let bids: Vec<Bid> = (0..n).map(|_| generator.next_bid()).collect();
        let batch = arrow_batch(&bids)?;
        let times = batch.column(5);
        let lines = bids
            .iter()
            .enumerate()
            .map(|(k, b)| Ok(json_line(b, &datafusion::arrow::util::display::array_value_to_string(times, k)?)))
            .collect::<Result<Vec<String>>>()?;
        topic.append(0, &lines).await?;
        let mut file = std::fs::File::create(dir.join("bids_arrow").join(format!("part-{part:05}.arrow")))?;
        let mut w = datafusion::arrow::ipc::writer::FileWriter::try_new(&mut file, &batch.schema())?;
        w.write(&batch)?;
        w.finish()?;
        written += n;
        part += 1;
    }
    Ok(())
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(')').map(|(_, r)| r).context("/proc/self/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok(ticks / hz)
}

/// Runs view `view` from the start of its stream to the end; (wall s, CPU s, report).
async fn run(dir: &Path, view: &str) -> Result<(f64, f64, kiln::artifact::ViewStatus)> {
    for side in ["", "__late"] {
        let _ = std::fs::remove_dir_all(dir.join("warehouse").join(format!("{view}{side}")));
    }
    let options = kiln::StreamOptions {
        build: kiln::BuildOptions { select: Some(view.to_owned()), ..Default::default() },
        until_idle: true,
        checkpoint_interval: Duration::from_secs(10),
        ..Default::default()
    };
    let (cpu, t) = (cpu_seconds()?, Instant::now());
    let report = kiln::stream(dir, &options, &kiln::Quiet, Arc::new(AtomicBool::new(false))).await?;
    let wall = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu;
    let status = report.views.into_iter().next().context("no view ran")?;
    Ok((wall, cpu, status))
}

pub async fn suite(out: &Path, runs: usize) -> Result<Value> {
    let events = std::env::var("KILN_BENCH_STREAM_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(EVENTS);
    let dir = std::path::absolute(out.join("stream-nexmark"))?;
    let t = Instant::now();
    setup(&dir, events).await?;
    eprintln!("stream: {events} Nexmark bids written in {:.1} s", t.elapsed().as_secs_f64());
    let cases = [
        ("q7_arrow", "q7-like from Arrow", 250_000.0, 12_300.0),
        ("q5_arrow", "q5-like from Arrow", 250_000.0, 22_100.0),
        ("q7_json", "q7-like from JSON", 100_000.0, 12_300.0),
        ("q5_json", "q5-like from JSON", 100_000.0, 22_100.0),
    ];
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Option<kiln::artifact::ViewStatus>)> =
        vec![(Vec::new(), Vec::new(), None); 4];
    for _ in 0..runs {
        for (k, (view, ..)) in cases.iter().enumerate() {
            let (wall, cpu, status) = run(&dir, view).await?;
            eprintln!(
                "stream {view}: {} events in {wall:.2} s wall, {cpu:.2} s CPU ({:.0} events/s per core), {} rows",
                status.events,
                status.events as f64 / cpu,
                status.emitted
            );
            ensure!(status.events == events as u64, "{view} read {} of {events} events", status.events);
            samples[k].0.push(wall);
            samples[k].1.push(cpu);
            samples[k].2 = Some(status);
        }
    }
    // The same query from JSON and from Arrow emits the same rows.
    for q in ["q7", "q5"] {
        let a = kiln::inspect::query_batches(&dir, &format!("SELECT * FROM {q}_arrow EXCEPT SELECT * FROM {q}_json"))
            .await?;
        let b = kiln::inspect::query_batches(&dir, &format!("SELECT * FROM {q}_json EXCEPT SELECT * FROM {q}_arrow"))
            .await?;
        let differ: usize = a.iter().chain(&b).map(RecordBatch::num_rows).sum();
        ensure!(differ == 0, "{q}: JSON and Arrow runs differ in {differ} rows");
    }
    let mut rows = Vec::new();
    for (k, (view, case, target, flink)) in cases.iter().enumerate() {
        let (walls, cpus, status) = std::mem::take(&mut samples[k]);
        let (wall, cpu) = (crate::median(walls), crate::median(cpus));
        let per_core = events as f64 / cpu;
        let flink_seconds = events as f64 / flink;
        rows.push(json!({
            "case": format!("{case}, {events} bids ({view})"),
            "kiln_median": cpu,
            "kiln_wall": wall,
            "events_per_second_per_core": per_core,
            "events_per_second_wall": events as f64 / wall,
            "emitted_rows": status.map_or(0, |s| s.emitted),
            "peer": format!("Flink published ({flink:.0} events/s per core)"),
            "peer_median": flink_seconds,
            "ratio": cpu / flink_seconds,
            "target": format!(">= {:.0}K events/s per core: {:.0}K (CPU s per core; wall {wall:.2} s)", target / 1000.0, per_core / 1000.0),
        }));
    }
    Ok(json!({ "events": events, "rows": rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bids_follow_the_generator_rules() {
        let mut g = BidGenerator::new(1);
        let bids: Vec<Bid> = (0..10_000).map(|_| g.next_bid()).collect();
        // 46 bids per 50 events: event times advance at 10 events per ms.
        let span = bids.last().map(|b| b.date_time_ms).unwrap_or(0) - bids[0].date_time_ms;
        assert!((1_080..=1_090).contains(&span), "{span}");
        assert!(bids.windows(2).all(|w| w[0].date_time_ms <= w[1].date_time_ms));
        let hot = bids.iter().filter(|b| HOT_CHANNELS.contains(&b.channel.as_str())).count();
        assert!((4_500..5_500).contains(&hot), "{hot}");
        assert!(bids.iter().all(|b| (100..=100_000_000).contains(&b.price)));
        let size: usize =
            bids.iter().map(|b| 32 + b.channel.len() + b.url.len() + b.extra.len()).sum::<usize>() / bids.len();
        assert!((80..=120).contains(&size), "{size}");
    }
}
