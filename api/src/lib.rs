//! Basalt's HTTP API: Appwrite-compatible REST routes over axum.
//!
//! **Invariant:** handlers never touch storage. They parse and authorise, then call the
//! narrow [`Backend`]: writes become replicated envelopes (no read barrier: apply re-checks
//! what makes them correct), and reads go through a view — one snapshot at a known applied
//! index, linearizable unless asked otherwise. A handler without a view cannot read.

/// Runs `$body` (an expression that answers a `Reply`) under an abuse limit: a request past
/// the limit is answered 429 without running it, and the answer carries the limit's headers.
macro_rules! limited {
    ($s:expr, $req:expr, $ctx:expr, $rule:expr, $body:block) => {{
        let hit = match $s.abuse.hit($req, $ctx, $rule) {
            Ok(h) => h,
            Err(refused) => return Ok(*refused),
        };
        let reply: $crate::common::Reply = async { $body }.await;
        $s.abuse.answer(hit, reply)
    }};
}

mod abuse;
mod account;
pub mod auth;
mod common;
mod cors;
mod databases;
mod edge;
mod emailed;
mod error;
mod health;
mod imported;
mod logs;
pub mod mail;
mod mfa;
mod nested;
mod operator;
mod params;
mod policy;
pub mod realtime;
mod related;
mod render;
mod rows;
mod secrets;
pub mod stale;
mod storage;
mod teams;
mod telemetry;
mod transactions;
mod usage;
mod users;

use axum::Router;
use model::reader::{Consistency, StateReader};
use model::{Envelope, Outcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use auth::ALL_SCOPES;
pub use edge::Limits;
pub use error::ApiError;
pub use mail::MailSettings;
pub use params::new_request_id;

pub const APPWRITE_VERSION: &str = "1.9.6";

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the cluster could not serve a request right now (answered with a 503, and logged
/// there, once). The node's own error type, kept whole for the log.
#[derive(Debug)]
pub struct Unavailable(pub Box<dyn std::error::Error + Send + Sync>);

/// A view at most some staleness old (`Backend::read_within`): the view, the index the node
/// had applied when it was taken (at least), and how stale it may be (ms).
pub type Within = (Arc<dyn StateReader>, u64, u64);

/// A fault a node does to itself when `basalt drill` rehearses a failure against a running
/// cluster (root key only).
#[derive(Clone, Copy, Debug)]
pub enum DrillFault {
    /// Dies at once, as kill -9 (its supervisor restarts it).
    Crash,
    /// Refuses every node-to-node request, in and out, for this long, as a partition would.
    Isolate(std::time::Duration),
}

/// A backup's frames as the node sends them, or why it stopped.
pub type BackupStream = tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>;

/// What `/v1/health/*` reads of the node itself, as it stands (nothing is asked of peers).
#[derive(Clone, Debug, Default)]
pub struct NodeHealth {
    pub node: u64,
    pub leader: Option<u64>,
    /// This node leads, and no quorum has acknowledged it for longer than an election takes:
    /// it cannot commit, whatever it believes.
    pub leader_unconfirmed: bool,
    /// Whether this node is in the membership it knows (a voter or a learner).
    pub member: bool,
    /// Entries in this node's log not applied yet.
    pub apply_backlog: u64,
    /// How far each member's wall clock is ahead of this node's, in ms, as recent probes
    /// measured it (this node's own: 0; members not heard from lately are left out).
    pub clock_offsets: Vec<(u64, i64)>,
    /// The host names this node answers to: those of its advertised addresses.
    pub names: Vec<String>,
    /// This node's certificate in the cluster; `None` without TLS.
    pub certificate: Option<Certificate>,
}

/// A certificate, in the terms of Appwrite's `healthCertificate`.
#[derive(Clone, Debug, Default)]
pub struct Certificate {
    /// The subject, `/CN=...`.
    pub name: String,
    pub subject_cn: String,
    pub issuer_organisation: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    pub signature: String,
    pub dns_names: Vec<String>,
}

/// What the API needs from the node: replicated writes, views to read, and status.
pub trait Backend: Send + Sync + 'static {
    /// Proposes an envelope through Raft; resolves once it is committed and applied.
    fn write(&self, env: Envelope) -> BoxFuture<'_, Result<Outcome, Unavailable>>;
    /// A view of the state: `Linearizable` reflects every write acknowledged before the
    /// call; `Local` is this node's applied state (fast pre-checks of writes only).
    fn read(
        &self,
        consistency: Consistency,
    ) -> BoxFuture<'_, Result<Arc<dyn StateReader>, Unavailable>>;
    /// SHA-256 (hex) of the cluster's root key.
    fn root_key_sha256(&self) -> String;
    /// `basalt cluster rotate-root-key`: makes `sha256` the digest of the cluster's root key.
    fn set_root_key(&self, sha256: String) -> BoxFuture<'_, Result<(), model::Error>>;
    /// A view at most `max` stale (`X-Basalt-Max-Staleness`): this node's own state if it
    /// provably is, else a linearizable one; with the index applied and the staleness bound (ms).
    fn read_within(&self, max: std::time::Duration) -> BoxFuture<'_, Result<Within, Unavailable>>;
    /// The placement policy in force (`basalt cluster placement`), read linearizably.
    fn placement(&self) -> BoxFuture<'_, Result<model::schema::Placement, model::Error>>;
    /// Puts `policy` in force; the leader then changes the voters to match.
    fn set_placement(
        &self,
        policy: model::schema::Placement,
    ) -> BoxFuture<'_, Result<(), model::Error>>;
    /// `basalt cluster status` as JSON.
    fn cluster_status(&self) -> serde_json::Value;
    /// Ready: a leader is known.
    fn ready(&self) -> bool;
    /// Removes a member from the cluster; answers the new `cluster_status`.
    fn remove_member(&self, node_id: u64)
        -> BoxFuture<'_, Result<serde_json::Value, model::Error>>;
    /// `basalt cluster check`: commits `check` (a `ClusterOp::Check` envelope) and gathers
    /// every member's digest of its state at that entry.
    fn cluster_check(
        &self,
        check: Envelope,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>>;
    /// Stores `data` (one stored chunk of a file) as blob `name` (its SHA-256, hex, which the
    /// caller computed) on a quorum of the voters; resolves once it is durable there.
    fn put_blob(&self, name: String, data: bytes::Bytes) -> BoxFuture<'_, Result<(), Unavailable>>;
    /// Blob `name`'s bytes, checked against the name: this node's copy, or a peer's.
    fn get_blob(&self, name: String) -> BoxFuture<'_, Result<bytes::Bytes, Unavailable>>;
    /// `basalt cluster join-token`: a new one-time join token valid for `ttl`, as JSON
    /// (`token`, `expires`).
    fn join_token(
        &self,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, Result<serde_json::Value, model::Error>>;
    /// `basalt drill`: does `fault` to this node; answers what it did, as JSON.
    fn drill(&self, fault: DrillFault) -> serde_json::Value;
    /// What `/v1/health/*` reads of this node.
    fn node_health(&self) -> NodeHealth;
    /// Writes a probe file where this node keeps file bytes (synced), reads it back and
    /// removes it.
    fn probe_local_files(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Emails in the outbox, and among them those that failed at least once, each counted up
    /// to `limit`. Reads the store: call it off the runtime.
    fn mail_queue(&self, limit: usize) -> Result<(u64, u64), String>;
    /// Every figure of this node, in Prometheus's text format.
    fn metrics_text(&self) -> String;
    /// `basalt backup`: takes a consistent checkpoint of the state and answers the stream of
    /// frames that carries it (`raft::backup`).
    fn backup(&self) -> BoxFuture<'_, Result<BackupStream, model::Error>>;
}

#[derive(Clone)]
pub struct AppState {
    pub backend: Arc<dyn Backend>,
    edge: Arc<edge::Edge>,
    hasher: Arc<secrets::Hasher>,
    abuse: Arc<abuse::Abuse>,
    mail: Arc<MailSettings>,
    realtime: Arc<realtime::Hub>,
    previews: Arc<storage::preview::Previews>,
    /// Upload requests receiving a chunk at once on this node (each holds at most one).
    uploads: Arc<tokio::sync::Semaphore>,
    /// Chunks being encoded and replicated at once on this node (a chunk, its encoded form
    /// and the frames that carry it to the peers).
    storing: Arc<tokio::sync::Semaphore>,
    /// Reads served here, not yet in the usage counters.
    reads: Arc<usage::Reads>,
}

/// Every route under `/v1`, with the shared middleware stack; realtime subscribers are
/// served from `hub`.
pub fn router(
    backend: Arc<dyn Backend>,
    hub: Arc<realtime::Hub>,
    limits: Limits,
    mail: MailSettings,
) -> Router {
    // One password hash at a time per core: sign-ins wait for each other, not the runtime.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state = AppState {
        backend,
        edge: Arc::new(edge::Edge::new(limits.clone())),
        hasher: Arc::new(secrets::Hasher::new(cores)),
        abuse: Arc::new(abuse::Abuse::new(limits.abuse)),
        mail: Arc::new(mail),
        realtime: hub,
        previews: Arc::new(storage::preview::Previews::new(cores)),
        uploads: Arc::new(tokio::sync::Semaphore::new(16)),
        storing: Arc::new(tokio::sync::Semaphore::new(4)),
        reads: Arc::new(usage::Reads::default()),
    };
    usage::Reads::start(&state.reads, &state.backend);
    Router::new()
        .merge(operator::router())
        .merge(health::router())
        .merge(realtime::router())
        .merge(account::router())
        .merge(emailed::router())
        .merge(mfa::router())
        .merge(logs::router())
        .merge(users::router())
        .merge(teams::router())
        .merge(storage::router())
        .merge(storage::tokens::router())
        .merge(databases::router(common::Flavor::Legacy))
        .merge(databases::router(common::Flavor::Tables))
        .merge(usage::router(common::Flavor::Legacy))
        .merge(usage::router(common::Flavor::Tables))
        .route("/metrics", axum::routing::get(telemetry::metrics))
        .route_layer(axum::middleware::from_fn(telemetry::tag))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::not_found)
        .layer(axum::middleware::map_response(error::ensure_content_type))
        // Failures are answered and logged where they are handled; the trace layer only
        // records them at debug level so a 503 is not reported twice, or as an ERROR.
        .layer(
            tower_http::trace::TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ),
        )
        .layer(axum::middleware::from_fn(stale::layer))
        .layer(axum::extract::DefaultBodyLimit::max(32 * 1024 * 1024))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::guard,
        ))
        .layer(axum::middleware::from_fn(telemetry::record))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then drains in-flight requests.
/// Connections whose headers do not arrive within `limits.header_timeout` are closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    backend: Arc<dyn Backend>,
    hub: Arc<realtime::Hub>,
    limits: Limits,
    mail: MailSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let header_timeout = limits.header_timeout;
    let app = router(backend, hub, limits, mail);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accepting an HTTP connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().ok();
                let with_peer = tower::ServiceExt::map_request(
                    app.clone(),
                    move |mut r: axum::http::Request<hyper::body::Incoming>| {
                        if let Some(p) = peer {
                            r.extensions_mut().insert(params::Peer(p));
                        }
                        r
                    },
                );
                let service = hyper_util::service::TowerToHyperService::new(with_peer);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    graceful.shutdown().await;
    Ok(())
}
