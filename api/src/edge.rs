//! The HTTP edge: what a request may cost before it is authenticated or served. Headers must
//! arrive within `header_timeout` (a slowloris connection is closed), a request is answered
//! within `request_timeout` (body reading included), at most `max_in_flight` requests run at
//! once (more are answered 429 at once rather than queued without end), and a large body is
//! only read from a request that names a valid key (or the root key): cheap checks on this
//! node's state, no read barrier.

use crate::auth::sha256_hex;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use model::reader::Consistency;
use model::ErrorCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The edge's bounds (`basalt serve --max-requests`, `--request-timeout`, `--header-timeout`).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    pub header_timeout: Duration,
    /// Appwrite's abuse limits on sign-in, sign-up, JWTs and users' writes (`--abuse-limits`).
    pub abuse: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            abuse: true,
        }
    }
}

/// A body larger than this is read only after the request's key checks out.
pub const UNAUTHENTICATED_BODY: u64 = 64 << 10;

pub(crate) struct Edge {
    pub limits: Limits,
    pub in_flight: Arc<Semaphore>,
}

impl Edge {
    pub fn new(limits: Limits) -> Edge {
        Edge {
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
        }
    }
}

pub(crate) async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // A load balancer's and Kubernetes' probes answer even when the node is saturated: a busy
    // node must not be restarted for being busy.
    if matches!(req.uri().path(), "/v1/health/live" | "/v1/health/ready") {
        return next.run(req).await;
    }
    let Ok(_permit) = s.edge.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            ErrorCode::GeneralRateLimitExceeded,
            "Rate limit for the current endpoint has been exceeded. Please try again after some time.",
        )
        .into_response();
    };
    if large_body(&req)
        && !authorizes_first(&req)
        && !credentialed(&s, &req.headers().clone()).await
    {
        // Refused before a byte of the body is read. An HTTP/1 connection is not kept, so the
        // unread body is never waited for (HTTP/2 resets the stream by itself).
        let mut res = ApiError::new(
            ErrorCode::UserUnauthorized,
            "The current user is not authorized to perform the requested action.",
        )
        .into_response();
        if req.version() < axum::http::Version::HTTP_2 {
            res.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        return res;
    }
    let limit = s.edge.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
            ApiError::new(
                ErrorCode::GeneralUnavailable,
                model::msg!(
                    "The request did not complete within {} seconds. Please try again.",
                    limit.as_secs()
                ),
            )
            .into_response()
        }
    }
}

/// Routes whose handler decides who may send a large body before it reads a byte of it: a
/// file upload, which a bucket may allow guests (`create("any")`).
fn authorizes_first(req: &Request) -> bool {
    let path = req.uri().path();
    req.method() == axum::http::Method::POST
        && path
            .strip_prefix("/v1/storage/buckets/")
            .and_then(|rest| rest.strip_suffix("/files"))
            .is_some_and(|bucket| !bucket.is_empty() && !bucket.contains('/'))
}

fn large_body(req: &Request) -> bool {
    let h = req.headers();
    let length = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) => n > UNAUTHENTICATED_BODY,
        None => h.contains_key(header::TRANSFER_ENCODING),
    }
}

/// The request names the root key, a key of the project it names (not checked for scopes or
/// expiry here: the handler does that), or a signed-in user of that project (a session
/// created a moment ago through another node is looked for once more on a linearizable view).
async fn credentialed(s: &AppState, headers: &axum::http::HeaderMap) -> bool {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let project = text("x-appwrite-project");
    if let Some(key) = text("x-appwrite-key") {
        let sha = sha256_hex(key);
        if crate::auth::same_secret(&sha, &s.backend.root_key_sha256()) {
            return true;
        }
        let Some(project) = project else {
            return false;
        };
        return match s.backend.read(Consistency::Local).await {
            Ok(view) => matches!(view.key_by_secret_sha256(project, &sha), Ok(Some(_))),
            Err(_) => false,
        };
    }
    let Some(project) = project else {
        return false;
    };
    if !crate::auth::has_credentials_in(headers) {
        return false;
    }
    for consistency in [Consistency::Local, Consistency::Linearizable] {
        match s.backend.read(consistency).await {
            Ok(view) if crate::auth::signed_in(&*view, headers, project) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}
