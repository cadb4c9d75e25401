//! Bounded-staleness reads. A request with `X-Basalt-Max-Staleness: 2s` (or `500ms`) lets the
//! node it reaches answer its reads from its own state when that is provably at most that
//! stale (the Raft layer's closed timestamps), and from a linearizable view otherwise. The
//! answer then says what it was served from: `X-Basalt-Applied-Index` (the node's applied log
//! index, at least) and `X-Basalt-Staleness-Ms` (how stale that state may be, at most; 0 when
//! the read took a read barrier). Without the header every read is linearizable.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const REQUEST_HEADER: &str = "x-basalt-max-staleness";
pub const APPLIED_HEADER: &str = "x-basalt-applied-index";
pub const STALENESS_HEADER: &str = "x-basalt-staleness-ms";

/// A request's bound, and what its read was served from (applied index, staleness ms).
#[derive(Debug)]
struct Bound {
    max: Duration,
    served: Option<(u64, u64)>,
}

tokio::task_local! {
    static BOUND: Arc<Mutex<Bound>>;
}

/// `2s`, `500ms`, `1.5s`, or plain milliseconds; at most an hour.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num.trim().parse().ok()?;
    let ms = n * scale;
    (n.is_finite() && (0.0..=3_600_000.0).contains(&ms)).then(|| Duration::from_millis(ms as u64))
}

/// Middleware: reads the request's bound (a malformed one is refused, 400), and puts on the
/// answer what its read was served from.
pub(crate) async fn layer(req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(REQUEST_HEADER) else {
        return next.run(req).await;
    };
    let Some(max) = value.to_str().ok().and_then(parse) else {
        return ApiError(model::Error::invalid(
            "Invalid `X-Basalt-Max-Staleness` header: a duration such as 2s or 500ms, at most 3600s.",
        ))
        .into_response();
    };
    let bound = Arc::new(Mutex::new(Bound { max, served: None }));
    let mut res = BOUND.scope(bound.clone(), next.run(req)).await;
    let served = bound.lock().unwrap_or_else(|p| p.into_inner()).served;
    if let Some((applied, stale)) = served {
        let h = res.headers_mut();
        h.insert(APPLIED_HEADER, HeaderValue::from(applied));
        h.insert(STALENESS_HEADER, HeaderValue::from(stale));
    }
    res
}

/// The staleness the current request accepts, if it named one.
pub(crate) fn bound() -> Option<Duration> {
    BOUND
        .try_with(|b| b.lock().unwrap_or_else(|p| p.into_inner()).max)
        .ok()
}

/// Records what the current request's read was served from. A request reading twice reports
/// the staler of its reads (at the lower index).
pub(crate) fn served(applied: u64, stale_ms: u64) {
    let _ = BOUND.try_with(|b| {
        let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
        b.served = Some(match b.served {
            Some((a, s)) => (a.min(applied), s.max(stale_ms)),
            None => (applied, stale_ms),
        });
    });
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn bounds_parse_as_the_contract_writes_them() {
        assert_eq!(parse("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse(" 250 "), Some(Duration::from_millis(250)));
        for bad in ["", "s", "-1s", "2h", "NaNs", "infs", "9999999s"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
