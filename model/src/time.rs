//! Appwrite's datetime format: `2026-01-01T00:00:00.000+00:00`, always UTC here.
//! Timestamps travel as milliseconds since the Unix epoch.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Formats epoch milliseconds the way Appwrite does.
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t
            .to_rfc3339_opts(SecondsFormat::Millis, false)
            .replace('Z', "+00:00"),
        None => String::new(),
    }
}

/// Parses the datetime forms clients send (RFC 3339, with or without zone, date only).
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Some(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis());
    }
    None
}

/// Normalises a datetime string to the canonical UTC form, so strings compare in time order.
pub fn normalize(s: &str) -> Option<String> {
    parse_ms(s).map(format_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            parse_ms("2026-01-01T00:00:00.000+00:00"),
            Some(1767225600000)
        );
        assert_eq!(
            parse_ms("2026-01-01T01:00:00.000+01:00"),
            Some(1767225600000)
        );
        assert_eq!(parse_ms("2026-01-01"), Some(1767225600000));
        assert_eq!(parse_ms("2026-01-01T00:00:00Z"), Some(1767225600000));
        assert_eq!(parse_ms("nope"), None);
        assert_eq!(
            normalize("2026-01-01T01:00:00.5+01:00").unwrap(),
            "2026-01-01T00:00:00.500+00:00"
        );
    }
}
