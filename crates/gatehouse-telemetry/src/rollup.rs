//! Rollups, written as calls arrive: per minute, hour and day, per (service, route,
//! consumer), the counts, bytes, tokens and cost, and a DDSketch of the latencies. A sketch
//! merges exactly (bucket counts add up), so percentiles over several rows — several
//! routes, buckets or nodes — come from the merged sketch, never from averaging
//! percentiles. Relative accuracy 1 %: a p99 of 200 ms reads between 198 and 202 ms.
//!
//! Each writer (a node's process) keeps the buckets still open in memory and writes them
//! whole, replacing its own row; rows are keyed by writer, so nodes never update each
//! other's rows and a restarted process starts rows of its own.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sketches_ddsketch::{Config, DDSketch};
use uuid::Uuid;

use crate::call::Call;

/// The id in all three columns of a bucket's totals row: every call of the bucket, so a
/// chart of the whole node or cluster reads one row per bucket and writer, not one per
/// (service, route, consumer).
pub const ALL: Uuid = Uuid::max();

/// Sketch accuracy (relative error of a quantile).
pub const ACCURACY: f64 = 0.01;

/// A new, empty latency sketch.
pub fn sketch() -> DDSketch {
    DDSketch::new(Config::new(ACCURACY, 2048, 1.0e-3))
}

/// Rollup resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day (UTC).
    Day,
}

impl Resolution {
    /// Every resolution.
    pub const ALL: [Resolution; 3] = [Resolution::Minute, Resolution::Hour, Resolution::Day];

    /// Bucket length in ms.
    pub fn millis(self) -> i64 {
        match self {
            Resolution::Minute => 60_000,
            Resolution::Hour => 3_600_000,
            Resolution::Day => 86_400_000,
        }
    }

    /// The column value (`m`, `h`, `d`).
    pub fn code(self) -> &'static str {
        match self {
            Resolution::Minute => "m",
            Resolution::Hour => "h",
            Resolution::Day => "d",
        }
    }

    /// The bucket start of `ts_ms`.
    pub fn bucket(self, ts_ms: i64) -> i64 {
        ts_ms - ts_ms.rem_euclid(self.millis())
    }

    /// The API's word (`minute`, `hour`, `day`).
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "minute",
            Resolution::Hour => "hour",
            Resolution::Day => "day",
        }
    }

    /// From the API's word.
    pub fn parse(s: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// What a rollup row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Resolution.
    pub res: Resolution,
    /// Bucket start (Unix ms).
    pub bucket: i64,
    /// Service id (nil: none).
    pub service: Uuid,
    /// Route id (nil: none).
    pub route: Uuid,
    /// Consumer id (nil: none).
    pub consumer: Uuid,
}

/// The sums of a rollup row and its latency sketch.
#[derive(Clone)]
pub struct Agg {
    /// Service name (for display).
    pub service_name: Option<String>,
    /// Route name.
    pub route_name: Option<String>,
    /// Consumer username.
    pub consumer_name: Option<String>,
    /// Calls.
    pub requests: u64,
    /// 4xx answers.
    pub s4xx: u64,
    /// 5xx answers.
    pub s5xx: u64,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes.
    pub bytes_out: u64,
    /// AI prompt tokens.
    pub tokens_in: u64,
    /// AI completion tokens.
    pub tokens_out: u64,
    /// AI cost, micro-dollars.
    pub cost_micros: u64,
    /// Total latency in ms.
    pub latency: DDSketch,
    /// Changed since last written.
    pub dirty: bool,
}

impl Default for Agg {
    fn default() -> Agg {
        Agg {
            service_name: None,
            route_name: None,
            consumer_name: None,
            requests: 0,
            s4xx: 0,
            s5xx: 0,
            bytes_in: 0,
            bytes_out: 0,
            tokens_in: 0,
            tokens_out: 0,
            cost_micros: 0,
            latency: sketch(),
            dirty: false,
        }
    }
}

impl Agg {
    fn add(&mut self, c: &Call) {
        self.requests += 1;
        match c.status / 100 {
            4 => self.s4xx += 1,
            5 => self.s5xx += 1,
            _ => {}
        }
        self.bytes_in += c.bytes_in.unwrap_or(0);
        self.bytes_out += c.bytes_out;
        if let Some(ai) = &c.ai {
            self.tokens_in += ai.input_tokens;
            self.tokens_out += ai.output_tokens;
            self.cost_micros += ai.cost_micros;
        }
        // Milliseconds; a sketch cannot hold 0, and nothing takes less than a microsecond.
        self.latency.add((c.total_us.max(1)) as f64 / 1000.0);
        self.dirty = true;
    }

    /// Adds another row's sums and sketch.
    pub fn merge(&mut self, other: &Agg) {
        self.requests += other.requests;
        self.s4xx += other.s4xx;
        self.s5xx += other.s5xx;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.tokens_in += other.tokens_in;
        self.tokens_out += other.tokens_out;
        self.cost_micros += other.cost_micros;
        // Sketches made with the same config always merge.
        let _ = self.latency.merge(&other.latency);
    }

    /// The latency quantile `q` (0-1) in ms, if any call was seen.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.latency.quantile(q).ok().flatten()
    }
}

/// The open buckets of one writer.
#[derive(Default)]
pub struct Rollups {
    open: HashMap<Key, Agg>,
}

impl Rollups {
    /// Counts a call in its minute, hour and day.
    pub fn add(&mut self, c: &Call) {
        let id = |p: &Option<(Uuid, Option<std::sync::Arc<str>>)>| {
            p.as_ref().map_or(Uuid::nil(), |(i, _)| *i)
        };
        let name = |p: &Option<(Uuid, Option<std::sync::Arc<str>>)>| {
            p.as_ref()
                .and_then(|(_, n)| n.as_deref().map(str::to_string))
        };
        for res in Resolution::ALL {
            let bucket = res.bucket(c.ts_ms);
            let key = Key {
                res,
                bucket,
                service: id(&c.service),
                route: id(&c.route),
                consumer: id(&c.consumer),
            };
            let agg = self.open.entry(key).or_insert_with(|| Agg {
                service_name: name(&c.service),
                route_name: name(&c.route),
                consumer_name: name(&c.consumer),
                ..Agg::default()
            });
            agg.add(c);
            let totals = Key {
                res,
                bucket,
                service: ALL,
                route: ALL,
                consumer: ALL,
            };
            self.open.entry(totals).or_default().add(c);
        }
    }

    /// The rows changed since the last call (marked clean), and the buckets that closed
    /// before `now_ms` dropped from memory once written.
    pub fn take_dirty(&mut self, now_ms: i64) -> Vec<(Key, Agg)> {
        let mut out = Vec::new();
        for (k, a) in self.open.iter_mut() {
            if a.dirty {
                a.dirty = false;
                out.push((k.clone(), a.clone()));
            }
        }
        // A bucket stays open a minute past its end for calls that finish late.
        self.open
            .retain(|k, _| k.bucket + k.res.millis() + 60_000 > now_ms);
        out
    }

    /// Open rows (tests and metrics).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// True when nothing is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(ts: i64, status: u16, total_us: u64) -> Call {
        Call {
            ts_ms: ts,
            request_id: "r".into(),
            trace_id: None,
            route: Some((Uuid::from_u128(1), Some("r1".into()))),
            service: Some((Uuid::from_u128(2), Some("s".into()))),
            consumer: None,
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET".into(),
            host: None,
            path: "/".into(),
            status,
            total_us,
            upstream_us: None,
            bytes_in: Some(10),
            bytes_out: 100,
            upstream: None,
            retries: 0,
            error: None,
            complete: true,
            ai: None,
        }
    }

    #[test]
    fn buckets_count_and_merged_sketches_give_true_percentiles() {
        let mut r = Rollups::default();
        let t0 = 1_764_000_000_000_i64 - 1_764_000_000_000_i64.rem_euclid(3_600_000);
        // Two minutes with different latency spreads: 1..=1000 ms and 1001..=2000 ms.
        for i in 1..=1000u64 {
            r.add(&call(
                t0 + 1_000,
                if i % 10 == 0 { 500 } else { 200 },
                i * 1000,
            ));
            r.add(&call(t0 + 61_000, 404, (1000 + i) * 1000));
        }
        let rows = r.take_dirty(t0 + 120_000);
        let minutes: Vec<&(Key, Agg)> = rows
            .iter()
            .filter(|(k, _)| k.res == Resolution::Minute && k.route != ALL)
            .collect();
        assert_eq!(minutes.len(), 2);
        let hour = &rows
            .iter()
            .find(|(k, _)| k.res == Resolution::Hour && k.route != ALL)
            .unwrap()
            .1;
        // The totals row of the hour holds the same as its one route's row.
        let total = &rows
            .iter()
            .find(|(k, _)| k.res == Resolution::Hour && k.route == ALL)
            .unwrap()
            .1;
        assert_eq!(total.requests, hour.requests);
        assert_eq!(total.quantile(0.99), hour.quantile(0.99));
        assert_eq!((hour.requests, hour.s5xx, hour.s4xx), (2000, 100, 1000));
        assert_eq!(hour.bytes_out, 200_000);
        // Merging the two minutes gives the hour's distribution: p50 ≈ 1000 ms, p99 ≈ 1980.
        let mut merged = Agg::default();
        for (_, a) in &minutes {
            merged.merge(a);
        }
        for (q, exact) in [(0.5, 1000.0), (0.95, 1900.0), (0.99, 1980.0)] {
            let got = merged.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.02,
                "q{q}: {got} vs {exact}"
            );
            assert_eq!(got, hour.quantile(q).unwrap());
        }
        // Nothing changed: nothing to write; closed minutes are dropped after their grace.
        assert!(r.take_dirty(t0 + 120_000).is_empty());
        r.take_dirty(t0 + 86_400_000 * 2);
        assert!(r.is_empty());
    }
}
