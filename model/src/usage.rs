//! Usage figures of the Databases and TablesDB services (the console's `getUsage`,
//! `listUsage`, `getCollectionUsage`/`getTableUsage`), kept as Appwrite keeps them: a counter
//! per metric, scope and time bucket (hours and days), zero where nothing happened.
//!
//! Counters are replicated state: apply adds to them in the same entry as the write they
//! count (rows written, rows and collections made or removed, bytes of row data), and the
//! reads each node served reach them through the log too (`UsageOp::Reads`, flushed by every
//! node every [`READS_FLUSH_SECS`]), so every node answers the same figures.

use crate::error::{Error, ErrorCode};
use chrono::{TimeZone, Utc};

/// How often a node proposes the reads it counted.
pub const READS_FLUSH_SECS: u64 = 10;
/// Hour buckets are kept two days, day buckets 100 days (the longest range is 90).
pub const HOUR_RETENTION_SECS: i64 = 48 * 3600;
pub const DAY_RETENTION_SECS: i64 = 100 * 86400;
/// Expired counters removed per counted write, beyond as many as it may have added.
pub const PRUNE_PER_WRITE: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Hour,
    Day,
}

impl Period {
    pub const ALL: [Period; 2] = [Period::Hour, Period::Day];

    pub fn secs(self) -> i64 {
        match self {
            Period::Hour => 3600,
            Period::Day => 86400,
        }
    }

    /// Its name in keys, as Appwrite names its periods.
    pub fn tag(self) -> &'static str {
        match self {
            Period::Hour => "1h",
            Period::Day => "1d",
        }
    }

    pub fn retention_secs(self) -> i64 {
        match self {
            Period::Hour => HOUR_RETENTION_SECS,
            Period::Day => DAY_RETENTION_SECS,
        }
    }

    /// The start (epoch seconds) of the bucket holding `at_ms`.
    pub fn bucket(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(1000).div_euclid(self.secs()) * self.secs()
    }

    /// A bucket's start as the usage models show it (`2026-12-04T11:00:00.000+00:00`).
    pub fn date(self, bucket: i64) -> String {
        match Utc.timestamp_opt(bucket, 0).single() {
            Some(t) => match self {
                Period::Hour => t.format("%Y-%m-%dT%H:00:00.000+00:00").to_string(),
                Period::Day => t.format("%Y-%m-%dT00:00:00.000+00:00").to_string(),
            },
            None => String::new(),
        }
    }
}

/// The `range` parameter: the last 24 hours by hour, or the last 30 or 90 days by day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub name: &'static str,
    pub period: Period,
    pub buckets: i64,
}

impl Range {
    pub fn parse(s: Option<&str>) -> Result<Range, Error> {
        let r = |name, period, buckets| Range {
            name,
            period,
            buckets,
        };
        match s.unwrap_or("30d") {
            "24h" => Ok(r("24h", Period::Hour, 24)),
            "30d" => Ok(r("30d", Period::Day, 30)),
            "90d" => Ok(r("90d", Period::Day, 90)),
            _ => Err(Error::new(
                ErrorCode::GeneralArgumentInvalid,
                "Invalid `range` param: Value must be one of (24h, 30d, 90d)",
            )),
        }
    }

    /// The range's buckets at `now_ms`, oldest first, the current one last.
    pub fn bucket_starts(&self, now_ms: i64) -> Vec<i64> {
        let last = self.period.bucket(now_ms);
        (0..self.buckets)
            .rev()
            .map(|i| last - i * self.period.secs())
            .collect()
    }
}

/// What is counted. Deltas (made minus removed) for the things a scope holds, sums for the
/// operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Databases,
    Collections,
    Documents,
    /// Bytes of row data (the encoded rows; indexes not included).
    Storage,
    Reads,
    Writes,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Databases,
        Metric::Collections,
        Metric::Documents,
        Metric::Storage,
        Metric::Reads,
        Metric::Writes,
    ];

    pub fn tag(self) -> &'static str {
        match self {
            Metric::Databases => "databases",
            Metric::Collections => "collections",
            Metric::Documents => "documents",
            Metric::Storage => "storage",
            Metric::Reads => "reads",
            Metric::Writes => "writes",
        }
    }
}

/// Whether apply keeps a running total of `metric` at `scope` beside its series: bytes
/// everywhere (nothing else counts them), and a database's collections and rows, so deleting
/// a database takes them out of the project's series without visiting its collections.
pub fn keeps_total(scope: &Scope, metric: Metric) -> bool {
    metric == Metric::Storage
        || (matches!(scope, Scope::Database(_))
            && matches!(metric, Metric::Collections | Metric::Documents))
}

/// Where a counter counts: the project's databases, one database, or one collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Project,
    Database(String),
    Collection(String, String),
}

impl Scope {
    /// The two key parts naming the scope (empty where it is wider).
    pub fn parts(&self) -> (&str, &str) {
        match self {
            Scope::Project => ("", ""),
            Scope::Database(d) => (d, ""),
            Scope::Collection(d, c) => (d, c),
        }
    }
}

/// A counter value as stored: 8 big-endian bytes, two's complement (deltas go negative).
pub fn decode(v: &[u8]) -> i64 {
    <[u8; 8]>::try_from(v).map_or(0, i64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_end_with_the_current_one() {
        let now = 1_764_847_800_000; // 2025-12-04T11:30:00Z
        let r = Range::parse(Some("24h")).unwrap();
        let b = r.bucket_starts(now);
        assert_eq!(b.len(), 24);
        assert_eq!(Period::Hour.date(b[23]), "2025-12-04T11:00:00.000+00:00");
        assert_eq!(Period::Hour.date(b[0]), "2025-12-03T12:00:00.000+00:00");
        let d = Range::parse(None).unwrap();
        assert_eq!(d.name, "30d");
        let b = d.bucket_starts(now);
        assert_eq!(b.len(), 30);
        assert_eq!(Period::Day.date(b[29]), "2025-12-04T00:00:00.000+00:00");
        assert_eq!(Period::Day.date(b[0]), "2025-11-05T00:00:00.000+00:00");
        assert_eq!(
            Range::parse(Some("90d")).unwrap().bucket_starts(now).len(),
            90
        );
    }

    #[test]
    fn only_appwrite_ranges_are_taken() {
        for bad in ["7d", "1h", "", "30D"] {
            assert!(Range::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn buckets_floor_before_the_epoch_too() {
        assert_eq!(Period::Hour.bucket(-1), -3600);
        assert_eq!(Period::Day.bucket(86_400_000 + 5), 86_400);
    }

    #[test]
    fn counters_decode_negative_deltas() {
        assert_eq!(decode(&(-3i64).to_be_bytes()), -3);
        assert_eq!(decode(b"bad"), 0);
    }
}
