//! Abuse limits, as Appwrite has them: fixed windows per route and key (`url:{url},ip:{ip}`,
//! `url:{url},email:{param-email}`, ...), 429 `general_rate_limit_exceeded` past the limit,
//! and `X-RateLimit-Limit/Remaining/Reset` on every limited answer. Keys and the operator are
//! not limited.
//!
//! Counted **per node**, in memory: a client spreading its attempts over three nodes gets
//! three times the limit. A cluster-wide count would put a Raft write (a quorum round and a
//! log entry) in front of every sign-in attempt, which costs more than it saves; the limits
//! still bound guessing to a small multiple of Appwrite's. The table is bounded: keys are
//! kept as SHA-256 digests, and past `MAX_KEYS` live keys expired windows are dropped and, if
//! that is not enough, new keys are refused (429) rather than anyone's count forgotten.

use crate::auth::Ctx;
use crate::error::ApiError;
use crate::params::Req;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use model::ErrorCode;
use std::collections::HashMap;
use std::sync::Mutex;

/// Live counters kept, at most.
const MAX_KEYS: usize = 100_000;

/// One route's limit: at most `limit` requests per `period` seconds per key, the key made of
/// `parts` (`url`, `ip`, `userId`, `method`, or `param-NAME`). `reset_on_success`: a 201 sets
/// the count back to zero (a successful sign-in forgets the failures before it).
pub(crate) struct Rule {
    pub limit: u32,
    pub period: i64,
    pub parts: &'static [&'static str],
    pub reset_on_success: bool,
}

pub(crate) const SIGN_UP: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "ip"],
    reset_on_success: false,
};
pub(crate) const EMAIL_SESSION: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "param-email"],
    reset_on_success: true,
};
pub(crate) const TOKEN_SESSION: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["ip", "param-userId"],
    reset_on_success: true,
};
pub(crate) const ANONYMOUS_SESSION: Rule = Rule {
    limit: 50,
    period: 3600,
    parts: &["ip"],
    reset_on_success: false,
};
pub(crate) const JWT: Rule = Rule {
    limit: 120,
    period: 60,
    parts: &["url", "userId"],
    reset_on_success: false,
};
pub(crate) const ACCOUNT_CHANGE: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "userId"],
    reset_on_success: false,
};
pub(crate) const SESSION_DELETE: Rule = Rule {
    limit: 100,
    period: 3600,
    parts: &["url", "userId"],
    reset_on_success: false,
};
pub(crate) const ROW_WRITE: Rule = Rule {
    limit: 120,
    period: 60,
    parts: &["ip", "method", "url", "userId"],
    reset_on_success: false,
};
pub(crate) const ROW_DELETE: Rule = Rule {
    limit: 60,
    period: 60,
    parts: &["ip", "method", "url", "userId"],
    reset_on_success: false,
};
pub(crate) const VERIFICATION: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "userId"],
    reset_on_success: false,
};
pub(crate) const RECOVERY: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "param-email"],
    reset_on_success: false,
};
/// Using an emailed secret (a verification's, a recovery's, an invitation's).
pub(crate) const REDEEM: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "param-userId"],
    reset_on_success: false,
};
pub(crate) const MAGIC_URL: Rule = Rule {
    limit: 60,
    period: 3600,
    parts: &["url", "param-email"],
    reset_on_success: false,
};
pub(crate) const EMAIL_TOKEN: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "param-email"],
    reset_on_success: false,
};
/// MFA challenges made, per user; answered, per challenge (so that whoever holds only the
/// password cannot use up the user's answers).
pub(crate) const CHALLENGE: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "userId"],
    reset_on_success: false,
};
pub(crate) const CHALLENGE_ANSWER: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "param-challengeId"],
    reset_on_success: false,
};
pub(crate) const INVITE: Rule = Rule {
    limit: 10,
    period: 3600,
    parts: &["url", "ip"],
    reset_on_success: false,
};

pub(crate) struct Abuse {
    enabled: bool,
    /// key → (window start, requests counted in it)
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

/// A counted request: what its answer must say about the limit.
pub(crate) struct Hit {
    key: String,
    limit: u32,
    remaining: u32,
    reset: i64,
    reset_on_success: bool,
}

impl Abuse {
    pub fn new(enabled: bool) -> Abuse {
        Abuse {
            enabled,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Live counters kept, and the most kept (`GET /v1/health/cache`): at the most, new
    /// keys are refused.
    pub fn usage(&self) -> (usize, usize) {
        let now = crate::params::now_ms() / 1000;
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let live = windows.values().filter(|(s, _)| *s + 3600 > now).count();
        (live, MAX_KEYS)
    }

    /// Counts the request under `rule`; a refusal is the whole answer (429 with the headers).
    /// `None`: not limited (limits off, or a key).
    pub fn hit(&self, req: &Req, ctx: &Ctx, rule: &Rule) -> Result<Option<Hit>, Box<Response>> {
        if !self.enabled || ctx.is_key() {
            return Ok(None);
        }
        let user = ctx.user().map(|(u, _)| u.id.as_str()).unwrap_or("");
        let key = rule
            .parts
            .iter()
            .map(|p| match *p {
                // The route, not the client's Host header (which it may vary at will).
                "url" => format!("url:{}", req.route),
                "ip" => format!("ip:{}", req.ip()),
                "userId" => format!("userId:{user}"),
                "method" => format!("method:{}", req.method),
                p => {
                    let name = p.strip_prefix("param-").unwrap_or(p);
                    let value = match req.params.get(name) {
                        Some(serde_json::Value::String(s)) => s.to_lowercase(),
                        Some(v) => v.to_string(),
                        None => format!("{{{p}}}"),
                    };
                    format!("{name}:{value}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        // Kept as a digest: a huge parameter costs a key no more than a small one.
        let key = crate::secrets::sha256_hex(&key);
        let now = crate::params::now_ms() / 1000;
        let start = now - now.rem_euclid(rule.period);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_KEYS && !windows.contains_key(&key) {
            // Windows are at most an hour long.
            windows.retain(|_, (s, _)| *s + 3600 > now);
            if windows.len() >= MAX_KEYS {
                // Full of live counts: a new key is refused rather than anyone's count
                // forgotten (a flood of distinct keys must not reset a victim's).
                let mut res = ApiError::new(
                    ErrorCode::GeneralRateLimitExceeded,
                    "Rate limit for the current endpoint has been exceeded. Please try again after some time.",
                )
                .into_response();
                res.headers_mut()
                    .insert("x-ratelimit-limit", HeaderValue::from(rule.limit));
                return Err(Box::new(res));
            }
        }
        let slot = windows.entry(key.clone()).or_insert((start, 0));
        if slot.0 != start {
            *slot = (start, 0);
        }
        let hit = Hit {
            key,
            limit: rule.limit,
            remaining: rule.limit.saturating_sub(slot.1 + 1),
            reset: start + rule.period,
            reset_on_success: rule.reset_on_success,
        };
        if slot.1 >= rule.limit {
            let mut res = ApiError::new(
                ErrorCode::GeneralRateLimitExceeded,
                "Rate limit for the current endpoint has been exceeded. Please try again after some time.",
            )
            .into_response();
            hit.headers(res.headers_mut());
            return Err(Box::new(res));
        }
        slot.1 += 1;
        Ok(Some(hit))
    }

    /// Puts the limit's headers on an answer (and forgets the count after a success that
    /// resets it).
    pub fn answer(
        &self,
        hit: Option<Hit>,
        reply: Result<Response, ApiError>,
    ) -> Result<Response, ApiError> {
        let Some(hit) = hit else {
            return reply;
        };
        let mut res = match reply {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if hit.reset_on_success && res.status() == StatusCode::CREATED {
            let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
            windows.remove(&hit.key);
        }
        hit.headers(res.headers_mut());
        Ok(res)
    }
}

impl Hit {
    fn headers(&self, h: &mut HeaderMap) {
        for (name, v) in [
            ("x-ratelimit-limit", self.limit as i64),
            ("x-ratelimit-remaining", self.remaining as i64),
            ("x-ratelimit-reset", self.reset),
        ] {
            h.insert(name, HeaderValue::from(v));
        }
    }
}
