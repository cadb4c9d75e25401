//! Appwrite's Health service, each route answering for what Basalt has, and unauthenticated
//! probes for load balancers and Kubernetes.
//!
//! Every Appwrite route takes a key with `health.read`, checked against this node's own state
//! (no read barrier), so a node cut off from its quorum can still say so. As in Appwrite, a
//! failed check answers an error (500 `general_server_error` naming what failed; a queue past
//! its threshold 503 `health_queue_size_exceeded`), and a passing one the model.
//!
//! | route | what Basalt checks |
//! |---|---|
//! | `/health` | this node answers HTTP |
//! | `/health/db` | the local store (a read) and the Raft group (a read barrier: a quorum confirms the leader) |
//! | `/health/cache` | the rate-limit counters, the only thing Basalt caches where Appwrite uses Redis: full, they refuse new clients |
//! | `/health/pubsub` | the realtime feed: a ping through the queue applied entries take to subscribers |
//! | `/health/storage` | replicated file storage: a probe chunk stored on a quorum of voters |
//! | `/health/storage/local` | this node's blob directory: a probe file written (synced), read back, removed |
//! | `/health/time` | this node's clock against the cluster's: the median of the members' clocks as the last probes measured them |
//! | `/health/certificate` | this node's certificate in the cluster (mutual TLS), named by one of its names |
//! | `/health/anti-virus` | nothing scans files: `disabled` |
//! | `/health/queue/databases` | entries in this node's log not applied yet |
//! | `/health/queue/mails` | emails in the outbox (`failed/v1-mails`: those that failed at least once) |
//! | other queues | 0: Basalt does that work within the request or the apply, so nothing waits |
//!
//! `GET /v1/health/live` answers 200 while the process serves HTTP; `GET /v1/health/ready`
//! 200 once this node is a member that knows its leader (503 before, with the reason).

use crate::auth::authorize;
use crate::common::{reply, Reply};
use crate::error::ApiError;
use crate::params::{now_ms, Req};
use crate::{AppState, APPWRITE_VERSION};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use model::reader::Consistency;
use model::{msg, ErrorCode};
use serde_json::{json, Value as Json};
use std::time::{Duration, Instant};

/// How long a check may take before it counts as failed.
const CHECK_WITHIN: Duration = Duration::from_secs(5);
/// Appwrite's default queue threshold.
const THRESHOLD: u64 = 5000;
/// A clock further than this from the cluster's fails `/health/time` (Appwrite's gap).
const CLOCK_GAP_MS: i64 = 60_000;

/// Appwrite's queue names, as `/health/queue/failed/{name}` takes them, with the route of
/// each queue.
const QUEUES: &[(&str, &str)] = &[
    ("v1-database", "databases"),
    ("v1-deletes", "deletes"),
    ("v1-audits", "audits"),
    ("v1-mails", "mails"),
    ("v1-functions", "functions"),
    ("v1-stats-resources", "stats-resources"),
    ("v1-stats-usage", "stats-usage"),
    ("v1-webhooks", "webhooks"),
    ("v1-certificates", "certificates"),
    ("v1-builds", "builds"),
    ("v1-screenshots", "screenshots"),
    ("v1-messaging", "messaging"),
    ("v1-migrations", "migrations"),
];

/// Routes of queues Appwrite has and Basalt has no use for (their work is done in the request
/// or the apply): always empty.
const EMPTY_QUEUES: &[&str] = &[
    "audits",
    "builds",
    "certificates",
    "deletes",
    "functions",
    "logs",
    "messaging",
    "migrations",
    "stats-resources",
    "stats-usage",
    "webhooks",
];

pub fn router() -> Router<AppState> {
    STARTED.get_or_init(now_ms);
    let mut r = Router::new()
        .route("/v1/health/version", get(version))
        .route("/v1/health/live", get(live))
        .route("/v1/health/ready", get(ready))
        .route("/v1/health", get(http))
        .route("/v1/health/db", get(db))
        .route("/v1/health/cache", get(cache))
        .route("/v1/health/pubsub", get(pubsub))
        .route("/v1/health/storage", get(storage))
        .route("/v1/health/storage/local", get(storage_local))
        .route("/v1/health/time", get(time))
        .route("/v1/health/certificate", get(certificate))
        .route("/v1/health/anti-virus", get(antivirus))
        .route("/v1/health/queue/databases", get(queue_databases))
        .route("/v1/health/queue/mails", get(queue_mails))
        .route("/v1/health/queue/failed/{name}", get(queue_failed));
    for name in EMPTY_QUEUES {
        r = r.route(&format!("/v1/health/queue/{name}"), get(queue_empty));
    }
    r
}

async fn version() -> Reply {
    reply(StatusCode::OK, json!({ "version": APPWRITE_VERSION }))
}

async fn live() -> Reply {
    reply(StatusCode::OK, json!({ "status": "pass" }))
}

/// When this process started serving (epoch ms): `ready` shows it, so a restart can be told
/// from a process that never went down (`basalt cluster rolling-restart`).
pub(crate) static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();

async fn ready(State(s): State<AppState>) -> Reply {
    let h = s.backend.node_health();
    let problem = if !h.member {
        Some("this node is not a member of the cluster (yet)")
    } else if h.leader.is_none() {
        Some("this node knows no leader")
    } else if h.leader_unconfirmed {
        Some("this node leads, but no quorum has acknowledged it lately")
    } else {
        None
    };
    let body = json!({
        "status": if problem.is_some() { "fail" } else { "pass" },
        "node": h.node, "leader": h.leader, "reason": problem.unwrap_or_default(),
        "started": STARTED.get().copied().unwrap_or(0),
    });
    let status = if problem.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    reply(status, body)
}

/// Checks the key against this node's state as applied: a node without a quorum can still
/// answer its health.
async fn authorized(s: &AppState, req: &Req) -> Result<(), ApiError> {
    let view = s.backend.read(Consistency::Local).await?;
    authorize(view, req, &["health.read"]).map(|_| ())
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn status(name: &str, ping: u64) -> Json {
    json!({ "name": name, "ping": ping, "status": "pass" })
}

/// One check's result: its status, or what failed.
type Checked = Result<Json, String>;

/// A list of checks, as Appwrite answers it: every status if all passed, else a 500 that
/// names each failure (`{kind} failure on: ...`).
fn status_list(kind: &str, checks: Vec<Checked>) -> Reply {
    let failures: Vec<String> = checks.iter().filter_map(|c| c.clone().err()).collect();
    if !failures.is_empty() {
        return Err(ApiError::new(
            ErrorCode::GeneralServerError,
            format!("{kind} failure on: {}", failures.join(", ")),
        ));
    }
    let statuses: Vec<Json> = checks.into_iter().flatten().collect();
    reply(
        StatusCode::OK,
        json!({ "total": statuses.len(), "statuses": statuses }),
    )
}

async fn http(State(s): State<AppState>, req: Req) -> Reply {
    let started = Instant::now();
    authorized(&s, &req).await?;
    reply(StatusCode::OK, status("http", ms(started)))
}

async fn db(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let started = Instant::now();
    let store = match s.backend.read(Consistency::Local).await {
        Ok(view) => match view.list_projects() {
            Ok(_) => Ok(status("store", ms(started))),
            Err(e) => Err(format!("store ({e})")),
        },
        Err(e) => Err(format!("store ({})", e.0)),
    };
    let started = Instant::now();
    let quorum =
        match tokio::time::timeout(CHECK_WITHIN, s.backend.read(Consistency::Linearizable)).await {
            Ok(Ok(_)) => Ok(status("raft", ms(started))),
            Ok(Err(e)) => Err(format!("raft ({})", e.0)),
            Err(_) => Err(format!(
                "raft (no quorum confirmed a read within {} s)",
                CHECK_WITHIN.as_secs()
            )),
        };
    status_list("DB", vec![store, quorum])
}

async fn cache(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let started = Instant::now();
    let (live, most) = s.abuse.usage();
    let check = if live >= most {
        Err(format!(
            "rate limits ({live} of {most} counters live: new clients are refused)"
        ))
    } else {
        Ok(status("rate limits", ms(started)))
    };
    status_list("Cache", vec![check])
}

/// One pubsub ping in the hub's queue at a time, however many ask: pings never crowd out
/// the applied entries subscribers wait for.
static PUBSUB_PING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn pubsub(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let started = Instant::now();
    let _one = PUBSUB_PING.lock().await;
    let check = match s.realtime.ping(CHECK_WITHIN).await {
        Ok(()) => Ok(status("realtime", ms(started))),
        Err(e) => Err(format!("realtime ({e})")),
    };
    status_list("Pubsub", vec![check])
}

/// The chunk `/health/storage` stores: always the same bytes, so the same blob (stored
/// once, refreshed after), which the sweeper removes once no check has refreshed it lately.
const PROBE_CHUNK: &[u8] = b"basalt storage health probe\n";

async fn storage(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let started = Instant::now();
    let name = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(PROBE_CHUNK));
    let stored = tokio::time::timeout(
        CHECK_WITHIN,
        s.backend
            .put_blob(name.clone(), bytes::Bytes::from_static(PROBE_CHUNK)),
    )
    .await;
    let failed = match stored {
        Ok(Ok(())) => match s.backend.get_blob(name).await {
            Ok(b) if b == PROBE_CHUNK => None,
            Ok(_) => Some("the probe chunk read back differs".to_string()),
            Err(e) => Some(format!("reading the probe chunk back: {}", e.0)),
        },
        Ok(Err(e)) => Some(e.0.to_string()),
        Err(_) => Some(format!(
            "no quorum stored the probe chunk within {} s",
            CHECK_WITHIN.as_secs()
        )),
    };
    if let Some(why) = failed {
        return Err(ApiError::new(
            ErrorCode::GeneralServerError,
            format!("Failed storing a file chunk on a quorum of the cluster: {why}"),
        ));
    }
    reply(StatusCode::OK, status("storage", ms(started)))
}

async fn storage_local(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let started = Instant::now();
    if let Err(e) = s.backend.probe_local_files().await {
        return Err(ApiError::new(
            ErrorCode::GeneralServerError,
            format!("Failed writing, reading or deleting a test file in this node's file directory: {e}"),
        ));
    }
    reply(StatusCode::OK, status("storage/local", ms(started)))
}

/// The median of `offsets` (ms); of an even count's two middle values, the one nearer 0 (this
/// node's own clock), whichever side the other is on.
fn median(mut offsets: Vec<i64>) -> i64 {
    offsets.sort_unstable();
    let n = offsets.len();
    if n == 0 {
        return 0;
    }
    if n % 2 == 1 {
        return offsets[n / 2];
    }
    let (a, b) = (offsets[n / 2 - 1], offsets[n / 2]);
    if a.abs() <= b.abs() {
        a
    } else {
        b
    }
}

async fn time(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let h = s.backend.node_health();
    let diff = median(h.clock_offsets.iter().map(|(_, o)| *o).collect());
    if diff.abs() > CLOCK_GAP_MS {
        return Err(ApiError::new(
            ErrorCode::GeneralServerError,
            format!(
                "Server time gaps detected: this node's clock is {} ms {} the cluster's",
                diff.abs(),
                if diff > 0 { "behind" } else { "ahead of" }
            ),
        ));
    }
    let local = now_ms();
    reply(
        StatusCode::OK,
        json!({
            "remoteTime": (local + diff).div_euclid(1000),
            "localTime": local.div_euclid(1000),
            "diff": diff,
        }),
    )
}

async fn certificate(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    // Optional in Appwrite's spec: without it, this node's own name.
    let h = s.backend.node_health();
    let domain = req
        .str_opt("domain")?
        .unwrap_or_else(|| format!("node-{}.basalt", h.node));
    // A URL names its host.
    let host = url::Url::parse(&domain)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| domain.clone());
    let Some(cert) = h.certificate else {
        return Err(ApiError::new(
            ErrorCode::HealthInvalidHost,
            "This node runs without TLS (--insecure): it has no certificate.",
        ));
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if !h.names.iter().chain(&cert.dns_names).any(|n| *n == host) {
        return Err(ApiError::new(
            ErrorCode::HealthInvalidHost,
            msg!(
                "Basalt reports the certificate of the node reached, and {} is not one of its names.",
                host
            ),
        ));
    }
    if cert.not_after < now_ms() / 1000 {
        return Err(ApiError::new(
            ErrorCode::HealthCertificateExpired,
            "The SSL certificate for the specified domain has expired and is no longer valid.",
        ));
    }
    reply(
        StatusCode::OK,
        json!({
            "name": cert.name,
            "subjectSN": cert.subject_cn,
            "issuerOrganisation": cert.issuer_organisation,
            "validFrom": cert.not_before.to_string(),
            "validTo": cert.not_after.to_string(),
            "signatureTypeSN": cert.signature,
        }),
    )
}

async fn antivirus(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    reply(
        StatusCode::OK,
        json!({ "version": "", "status": "disabled" }),
    )
}

fn threshold(req: &Req) -> Result<u64, ApiError> {
    Ok(req.uint_opt("threshold")?.unwrap_or(THRESHOLD))
}

/// A queue's size, refused past its threshold as Appwrite does.
fn queue_size(size: u64, threshold: u64, failed: bool) -> Reply {
    if size >= threshold {
        return Err(ApiError::new(
            ErrorCode::HealthQueueSizeExceeded,
            format!(
                "Queue {} threshold hit. Current value is {size} and threshold is {threshold}.",
                if failed { "failed jobs" } else { "jobs" }
            ),
        ));
    }
    reply(StatusCode::OK, json!({ "size": size }))
}

async fn queue_empty(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    queue_size(0, threshold(&req)?, false)
}

async fn queue_databases(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    // `name` picks one of Appwrite's database queues; Basalt has one.
    req.str_opt("name")?;
    let t = threshold(&req)?;
    queue_size(s.backend.node_health().apply_backlog, t, false)
}

/// Emails counted at most: past it the queue is reported at this size (a threshold above it
/// cannot be reached), so one request never reads a huge outbox.
const MAIL_COUNT_MAX: u64 = 100_000;

async fn mails(s: &AppState, threshold: u64) -> Result<(u64, u64), ApiError> {
    let backend = s.backend.clone();
    let limit = threshold.min(MAIL_COUNT_MAX) as usize;
    tokio::task::spawn_blocking(move || backend.mail_queue(limit))
        .await
        .map_err(|e| ApiError::new(ErrorCode::GeneralServerError, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::GeneralServerError,
                format!("Reading the email outbox: {e}"),
            )
        })
}

async fn queue_mails(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let t = threshold(&req)?;
    let (queued, _) = mails(&s, t).await?;
    queue_size(queued, t, false)
}

async fn queue_failed(State(s): State<AppState>, req: Req) -> Reply {
    authorized(&s, &req).await?;
    let name = req.path("name");
    let Some((_, route)) = QUEUES.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = QUEUES.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::new(
            ErrorCode::GeneralArgumentInvalid,
            format!(
                "Invalid `name` param: Value must be one of ({})",
                names.join(", ")
            ),
        ));
    };
    let t = threshold(&req)?;
    let failed = if *route == "mails" {
        mails(&s, t).await?.1
    } else {
        // No other queue holds work that can fail and wait to be retried.
        0
    };
    queue_size(failed, t, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_offset_is_the_clusters_clock() {
        assert_eq!(median(vec![0]), 0);
        assert_eq!(median(vec![0, 120_000, -5]), 0);
        assert_eq!(median(vec![0, 100, 90]), 90);
        // Two nodes: a single skewed peer does not move the answer alone, ahead or behind.
        assert_eq!(median(vec![0, 500]), 0);
        assert_eq!(median(vec![0, -500]), 0);
        assert_eq!(median(vec![-40, 30, 0, 900]), 0);
        assert_eq!(median(vec![]), 0);
    }

    #[test]
    fn every_failed_queue_name_has_a_route() {
        for (_, route) in QUEUES {
            assert!(
                EMPTY_QUEUES.contains(route)
                    || ["databases", "mails", "screenshots"].contains(route),
                "{route}"
            );
        }
    }
}
