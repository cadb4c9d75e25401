//! `RaftNode`: one member of the Raft group — start-up, writes (forwarded to the leader when
//! this node does not lead), linearizable read barriers, status and shutdown.

use crate::blobs::BlobStore;
use crate::enroll::{self, Enrolled, Proof};
use crate::network::{self, Network, Service};
use crate::pb::raft_client::RaftClient;
use crate::rpc::RemoteError;
use crate::store::{CheckState, LogStore, StateMachine};
use crate::tls::Transport;
use crate::{NodeInfo, TypeConfig};
use model::reader::Consistency;
use model::{Envelope, Outcome, RequestId};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage_engine::{Engine, LogDb, View};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;

#[derive(Clone, Debug)]
pub struct RaftTimings {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Snapshot after this many log entries since the last one.
    pub snapshot_logs: u64,
    /// Entries kept behind a snapshot, for followers that are only a little behind.
    pub keep_logs: u64,
    /// Bound on how long a client request waits for replication before a 503.
    pub request_timeout: Duration,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            // openraft 0.9 also uses the heartbeat interval as the deadline of every
            // AppendEntries, which includes the follower's fsync: at 50 ms a loaded 2-core
            // machine missed it (openraft then logs an ERROR and backs off for 500 ms). It
            // waits a leader lease (= election_max) plus this node's election timeout (drawn
            // once, in [min, max)) before campaigning: 0.7-1.0 s after the last heartbeat.
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(500),
            snapshot_logs: 10_000,
            keep_logs: 2_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The round trip (ms) to the slowest peer this node has measured, kept in its data dir: the
/// next start derives its Raft timings from it (`RaftTimings::for_round_trip`).
const ROUND_TRIP_FILE: &str = "round-trip-ms";

impl RaftTimings {
    /// Timings for peers `rtt` away (a round trip): openraft times every append out after one
    /// heartbeat interval (the follower's fsync included), so the interval is at least two
    /// round trips and 50 ms; the election timeouts stay well above it, so a slow link is not
    /// taken for a dead leader. Never shorter than `self`'s (one region's) timings.
    pub fn for_round_trip(self, rtt: Duration) -> RaftTimings {
        let heartbeat = self.heartbeat.max(rtt * 2 + Duration::from_millis(50));
        let election_min = self.election_min.max(heartbeat + rtt * 2);
        let election_max = self
            .election_max
            .max(election_min + rtt * 2 + Duration::from_millis(100));
        RaftTimings {
            heartbeat,
            election_min,
            election_max,
            ..self
        }
    }
}

pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub info: NodeInfo,
    /// Members to measure the round trip to before Raft starts (a joiner's `--join` seeds).
    pub measure: Vec<String>,
    /// The slowest round trip to expect before one is measured (the operator's).
    pub round_trip: Duration,
    pub grpc_listener: TcpListener,
    pub timings: RaftTimings,
    /// Start a new single-node cluster when the data dir has never been initialised.
    pub bootstrap: bool,
    /// Rows one read may examine (see `Engine::with_scan_budget`).
    pub scan_budget: usize,
    /// How nodes talk (mutual TLS unless `--insecure`).
    pub transport: Transport,
    /// SHA-256 of the cluster's root key (hex): what a joiner's root-key proof is checked with.
    pub root_key_sha256: String,
    /// How long the node certificates this node signs are valid.
    pub cert_ttl: Duration,
    /// Whom a node that enrolled accepts Raft traffic from before its own state arrives: the
    /// nodes the cluster had admitted, with their keys (empty: any node the CA certified).
    pub peers: Vec<(u64, String)>,
    /// Where what each applied entry changed goes (the node's realtime hub).
    pub feed: Option<Arc<dyn model::change::Feed>>,
    /// How long a blob no file names is kept before it is reclaimed (see `crate::blobs`).
    pub blob_grace: Duration,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir: {0}")]
    DataDir(std::io::Error),
    #[error("raft log: {0}")]
    Log(storage_engine::StorageError),
    #[error("state: {0}")]
    State(storage_engine::StorageError),
    #[error("snapshots: {0}")]
    Snapshots(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a request could not be carried out. Travels between nodes as it is (`RemoteError`),
/// so a forwarded request fails on the node that took it with the leader's reason.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicationError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<u64> },
    #[error("the cluster is unavailable: {0}")]
    Unavailable(#[from] Unavailable),
    #[error("timed out waiting for the cluster")]
    Timeout,
    /// A request the cluster will not carry out; retrying does not help.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// A command larger than one log entry may carry.
    #[error("the request is too large: {bytes} bytes encoded, at most {max}")]
    TooLarge { bytes: u64, max: u64 },
}

/// What kept the cluster from serving a request now; a retry may succeed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Unavailable {
    #[error("this node is shutting down")]
    ShuttingDown,
    #[error("{addr} is not a valid peer address")]
    BadAddress { addr: String },
    /// A peer did not answer (transport error, dropped connection, deadline).
    #[error("no answer from {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    /// Raft could not commit or confirm (openraft's error, as text: its types are generic).
    #[error("raft: {0}")]
    Raft(String),
    /// This node's state could not be read.
    #[error("state: {0}")]
    State(String),
    #[error("the digest at index {index} failed: {reason}")]
    Digest { index: u64, reason: String },
    /// A bug: the state machine answered a batch with the wrong number of outcomes.
    #[error("an entry answered {got} outcomes for {expected} commands")]
    OutcomeCount { expected: usize, got: usize },
    /// Test fault point `lose-forward-reply`.
    #[error("fault point: the leader's answer was dropped")]
    FaultLostReply,
    /// This node's blob store failed (a disk error).
    #[error("blob store: {0}")]
    Blobs(String),
    /// Too few voters stored a blob.
    #[error("a blob was stored on {stored} of the {needed} voters it needs")]
    BlobQuorum { stored: usize, needed: usize },
    /// No member holds a blob whole.
    #[error("no member holds blob {name}")]
    BlobMissing { name: String },
    #[error("this node is seeding a cluster restored from a backup; joins wait until it is done")]
    Seeding,
}

/// A request the cluster refuses.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error(
        "node {id} is already a voter; a node whose data was wiped must join with a new --node-id"
    )]
    VoterIdReused { id: u64 },
    #[error("node {id} is not a member")]
    NotMember { id: u64 },
    #[error("cannot remove the last voter")]
    LastVoter,
    #[error("this cluster runs without TLS (--insecure): there are no certificates to hand out")]
    Insecure,
    #[error("the root key does not match the cluster's")]
    BadProof,
    #[error("this member holds no CA key (its certificates were brought by the operator); join through a member that does")]
    NoCaKey,
    #[error("the certificate request is not valid: {0}")]
    BadRequest(String),
    #[error("node {id} was removed from this cluster and cannot join again; node ids are never reused: join with a new --node-id")]
    Retired { id: u64 },
    #[error("node {id} was never admitted: it must enroll (root key or join token) first")]
    NotAdmitted { id: u64 },
    #[error("a node was removed since the root key was set: rotate it (`basalt cluster rotate-root-key`) or join with a token (`basalt cluster join-token`)")]
    RootKeyStale,
    #[error("the request is for another key than the one node {id} was admitted with")]
    OtherKey { id: u64 },
    /// The command was applied and failed (deterministically, on every replica).
    #[error("{0}")]
    Failed(model::Error),
}

impl Unavailable {
    fn unreachable(addr: &str, status: &tonic::Status) -> Unavailable {
        Unavailable::Unreachable {
            addr: addr.to_string(),
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    pub id: u64,
    pub http: String,
    pub grpc: String,
    pub region: String,
    /// Its `--zone`, as the cluster recorded it (`None`: it named none).
    pub zone: Option<String>,
    pub gossip: String,
    pub role: &'static str,
    /// As its last answer to a probe said (this node's own: current).
    pub applied: Option<u64>,
    /// Entries it trails the member furthest ahead by, as `applied` figures say.
    pub lag: Option<u64>,
    /// Round trip of this node's last probe of it (ms; this node itself: none).
    pub rtt_ms: Option<f64>,
    /// When its node certificate expires (RFC 3339), as its last answer to a probe said;
    /// `None` without TLS or before it answered.
    pub cert_expires: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub state: String,
    pub members: Vec<MemberStatus>,
    pub placement: model::schema::Placement,
}

/// An envelope waiting for the group-commit batcher, its encoded size, and where its outcome
/// goes.
type Proposal = (
    Envelope,
    u64,
    oneshot::Sender<Result<Outcome, ReplicationError>>,
);

/// Envelopes proposed together in one log entry, at most.
const MAX_BATCH: usize = 64;
/// Bytes of envelopes in one log entry, at most (a single envelope may fill it alone).
const MAX_BATCH_BYTES: u64 = 8 << 20;
/// Bytes of one envelope, at most: what one request may ask the cluster to replicate.
pub const MAX_COMMAND_BYTES: u64 = MAX_BATCH_BYTES;
/// Proposals in flight at once; while they are, newcomers queue up and form the next batch.
/// Within a region (a commit takes about an fsync), two make the largest batches.
const IN_FLIGHT: usize = 2;
/// Across regions (a commit takes a round trip or two): more, or a write waits a whole commit
/// for a slot before its own (`basalt drill region --local --latency 100`: write p50 414 ms
/// with two, 310 ms with eight).
const IN_FLIGHT_FAR: usize = 8;
/// Peers at least this far (a round trip) count as across regions.
const FAR: Duration = Duration::from_millis(20);

/// How often every peer is asked how far it has applied.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// What a peer's last answer to a probe said: its applied index, when its certificate expires
/// (Unix seconds), and how far its wall clock is ahead of this node's (ms, the round trip
/// halved) as of when the answer came.
#[derive(Clone, Copy, Debug, Default)]
struct PeerReport {
    applied: Option<u64>,
    cert_expires: Option<i64>,
    clock: Option<(i64, std::time::Instant)>,
    /// The probe's round trip.
    rtt: Option<Duration>,
    /// Round trips, smoothed over the last few probes.
    smooth_rtt: Option<Duration>,
}

/// A peer that answered no probe for this long is unhealthy to placement decisions, and its
/// clock offset estimate is stale.
const HEALTHY_WITHIN: Duration = PROBE_EVERY.saturating_mul(8);
/// How often each node reviews placement: whether it may campaign, and (on the leader) whether
/// to hand the lead over or change the voters.
const PLACEMENT_EVERY: Duration = Duration::from_millis(250);
/// How often the leader compares the voters with the placement policy.
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// A learner this close behind the leader's log may be promoted (or be handed the lead).
const CAUGHT_UP: u64 = 64;
/// A leader outside the preferred region leads this long before handing over (it has just
/// been elected: the preferred voters may still be coming back).
const HANDOVER_AFTER: Duration = Duration::from_secs(2);
/// A hand-over that did not move the lead is tried again after this long, doubled after each
/// failure in a row (up to 32 times).
const HANDOVER_RETRY: Duration = Duration::from_secs(10);

pub struct RaftNode {
    pub id: u64,
    /// Each peer's applied index and certificate expiry, as its last answer to a probe said.
    peer_applied: Arc<Mutex<BTreeMap<u64, PeerReport>>>,
    transport: Transport,
    root_key_sha256: String,
    cert_ttl: Duration,
    peers: BTreeMap<u64, String>,
    raft: Raft<TypeConfig>,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    sm: StateMachine,
    engine: Engine,
    timings: RaftTimings,
    stop_grpc: Mutex<Option<oneshot::Sender<()>>>,
    grpc_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One channel per peer address, reused by forwarded writes, read-index calls and checks
    /// (a channel multiplexes requests over one HTTP/2 connection and reconnects by itself).
    channels: network::Channels,
    /// Token enrollments checked at once (each may take a read barrier).
    enrolling: tokio::sync::Semaphore,
    /// File bytes, beside the log.
    blobs: Arc<BlobStore>,
    blob_grace: Duration,
    /// The log's database, for its figures (`record_metrics`); Raft's log store holds it too.
    log: LogDb,
    /// While this node starts a cluster from a restored backup (`seed_restored`): no node may
    /// join until the restored state is in a snapshot and the log before it is gone.
    seeding: std::sync::atomic::AtomicBool,
    snapshots_dir: PathBuf,
    /// While set, this leader is handing the lead over (`keep_placement`).
    handover: Arc<crate::drill::Until>,
    /// How stale this node's state may be (`crate::closed`).
    closed: Arc<crate::closed::Closed>,
}

/// Each member's answer to a replica consistency check: the applied index it computed its
/// digest at, and the digest; or why it could not answer.
pub type CheckReport = BTreeMap<u64, Result<(u64, String), String>>;

impl RaftNode {
    pub async fn start(cfg: NodeConfig) -> Result<Arc<RaftNode>, StartError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(StartError::DataDir)?;
        let restored = cfg.data_dir.join(RESTORED);
        let restored = restored.exists().then_some(restored);
        if restored.is_some() && !cfg.bootstrap {
            return Err(StartError::Raft(
                "this data dir was restored from a backup: it starts a new cluster of its own (start it without --join; other nodes join it)".into(),
            ));
        }
        let log = LogDb::open(&cfg.data_dir.join("raft-log")).map_err(StartError::Log)?;
        let engine = Engine::open(&cfg.data_dir.join("state")).map_err(StartError::State)?;
        let engine = engine.with_scan_budget(cfg.scan_budget);
        let blobs = BlobStore::open(&cfg.data_dir.join("blobs")).map_err(StartError::DataDir)?;
        // Opening may finish a snapshot install a crash interrupted: file work, off the runtime.
        let (e, dir, feed) = (
            engine.clone(),
            cfg.data_dir.join("snapshots"),
            cfg.feed.clone(),
        );
        let sm = tokio::task::spawn_blocking(move || StateMachine::open(e, dir, feed))
            .await
            .map_err(|e| StartError::Snapshots(e.to_string()))?
            .map_err(|e| StartError::Snapshots(e.to_string()))?;
        // Timings from the slowest round trip known: measured on a former run, or now to the
        // seeds a joiner was given.
        let remembered = std::fs::read_to_string(cfg.data_dir.join(ROUND_TRIP_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let mut rtt = remembered.unwrap_or_default().max(cfg.round_trip);
        for seed in &cfg.measure {
            if let Some(r) = measure_round_trip(seed, &cfg.transport).await {
                rtt = rtt.max(r);
            }
        }
        let timings = cfg.timings.clone().for_round_trip(rtt);
        tracing::info!(
            round_trip_ms = rtt.as_millis() as u64,
            heartbeat_ms = timings.heartbeat.as_millis() as u64,
            election_ms = ?(timings.election_min.as_millis(), timings.election_max.as_millis()),
            "raft timings"
        );
        let t = &timings;
        let config = Config {
            cluster_name: "basalt".into(),
            heartbeat_interval: t.heartbeat.as_millis() as u64,
            election_timeout_min: t.election_min.as_millis() as u64,
            election_timeout_max: t.election_max.as_millis() as u64,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_logs),
            max_in_snapshot_log_to_keep: t.keep_logs,
            snapshot_max_chunk_size: crate::rpc::SNAPSHOT_CHUNK,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let handover = Arc::new(crate::drill::Until::new());
        let closed = Arc::new(crate::closed::Closed::default());
        let raft = Raft::new(
            cfg.id,
            Arc::new(config),
            Network {
                transport: cfg.transport.clone(),
                closed: closed.clone(),
                channels: Default::default(),
            },
            LogStore::new(log.clone()),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (proposals, queue) = tokio::sync::mpsc::channel::<Proposal>(4096);
        let in_flight = if rtt >= FAR { IN_FLIGHT_FAR } else { IN_FLIGHT };
        tokio::spawn(group_commit(
            raft.clone(),
            queue,
            handover.clone(),
            in_flight,
        ));
        let node = Arc::new(RaftNode {
            id: cfg.id,
            peer_applied: Arc::new(Mutex::new(BTreeMap::new())),
            transport: cfg.transport.clone(),
            root_key_sha256: cfg.root_key_sha256.clone(),
            cert_ttl: cfg.cert_ttl,
            peers: cfg.peers.iter().cloned().collect(),
            raft: raft.clone(),
            proposals,
            sm,
            engine,
            timings: timings.clone(),
            stop_grpc: Mutex::new(Some(stop_tx)),
            grpc_task: Mutex::new(None),
            channels: Mutex::new(HashMap::new()),
            enrolling: tokio::sync::Semaphore::new(2),
            blobs: Arc::new(blobs),
            blob_grace: cfg.blob_grace,
            log,
            snapshots_dir: cfg.data_dir.join("snapshots"),
            seeding: std::sync::atomic::AtomicBool::new(restored.is_some()),
            handover,
            closed: closed.clone(),
        });
        let service = network::server(Service::new(
            raft.clone(),
            Arc::downgrade(&node),
            cfg.transport.clone(),
        ));
        let server = tonic::transport::Server::builder().add_service(service);
        let stop = async {
            let _ = stop_rx.await;
        };
        let grpc_task = match &cfg.transport {
            Transport::Insecure => {
                let incoming = tonic::transport::server::TcpIncoming::from(cfg.grpc_listener)
                    .with_nodelay(Some(true));
                tokio::spawn(serve_grpc(
                    server.serve_with_incoming_shutdown(incoming, stop),
                ))
            }
            Transport::Tls(t) => {
                let incoming = crate::tls::accept(cfg.grpc_listener, t.clone());
                tokio::spawn(serve_grpc(
                    server.serve_with_incoming_shutdown(incoming, stop),
                ))
            }
        };
        *node.grpc_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(grpc_task);
        tokio::spawn(probe_peers(Arc::downgrade(&node)));
        tokio::spawn(keep_placement(Arc::downgrade(&node)));
        tokio::spawn(blob_upkeep(Arc::downgrade(&node)));
        tokio::spawn(count_leader_changes(node.raft.metrics()));
        tokio::spawn(track_quorum_acks(node.raft.metrics(), closed, cfg.id));
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && cfg.bootstrap {
            let members: BTreeMap<u64, NodeInfo> =
                [(cfg.id, cfg.info.clone())].into_iter().collect();
            match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(node_id = cfg.id, "bootstrapped a new single-node cluster")
                }
                Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(StartError::Raft(format!("initialize: {e}"))),
            }
        }
        if let Some(marker) = restored {
            tokio::spawn(seed_restored(Arc::downgrade(&node), marker));
        }
        Ok(node)
    }

    /// Stores `data` as a blob on this node and sends it to every other member; answers its
    /// name once a majority of the voters hold it synced (the sends to the rest go on). This
    /// is what makes a file chunk durable before the entry naming it is proposed.
    ///
    /// `name` is `data`'s SHA-256 (hex), which the caller has just computed: this node stores
    /// the bytes under it as they are; every peer checks them before it keeps them.
    pub async fn put_blob(&self, name: String, data: bytes::Bytes) -> Result<(), ReplicationError> {
        if data.len() > crate::blobs::MAX_BLOB {
            return Err(ReplicationError::TooLarge {
                bytes: data.len() as u64,
                max: crate::blobs::MAX_BLOB as u64,
            });
        }
        let voters = self.voters();
        let needed = voters.len() / 2 + 1;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(bool, bool)>(voters.len() + 8);
        for (id, info) in self.peers() {
            let (tx, voter) = (tx.clone(), voters.contains(&id));
            let client = self.peer(id, &info.grpc);
            let req = crate::rpc::PutBlobReq {
                name: name.clone(),
                data: data.clone(),
            };
            let timeout = self.timings.request_timeout * 3;
            tokio::spawn(async move {
                let ok = match client {
                    Ok(mut c) => {
                        let mut req = tonic::Request::new(req);
                        req.set_timeout(timeout);
                        match c.put_blob(req).await {
                            Ok(r) => r.into_inner().0.is_ok(),
                            Err(_) => false,
                        }
                    }
                    Err(_) => false,
                };
                let _ = tx.send((voter, ok)).await;
            });
        }
        // This node's copy is written while the peers write theirs.
        let ok = self
            .store_blob_locally(name.clone(), data, false)
            .await
            .is_ok();
        let _ = tx.send((voters.contains(&self.id), ok)).await;
        drop(tx);
        let (mut stored, mut failed) = (0, 0);
        while let Some((voter, ok)) = rx.recv().await {
            if !voter {
                continue;
            }
            match ok {
                true => stored += 1,
                false => failed += 1,
            }
            if stored >= needed {
                return Ok(());
            }
            if voters.len() - failed < needed {
                break;
            }
        }
        Err(Unavailable::BlobQuorum { stored, needed }.into())
    }

    /// Blob `name`'s bytes: this node's copy, or a member's (checked, and kept here).
    pub async fn get_blob(&self, name: String) -> Result<bytes::Bytes, ReplicationError> {
        if let Some(data) = self.local_blob(name.clone()).await? {
            return Ok(data);
        }
        for (id, info) in self.peers() {
            let Ok(mut c) = self.peer(id, &info.grpc) else {
                continue;
            };
            let mut req = tonic::Request::new(crate::rpc::GetBlobReq(name.clone()));
            req.set_timeout(self.timings.request_timeout * 3);
            let Ok(reply) = c.get_blob(req).await else {
                continue;
            };
            let Ok(Some(data)) = reply.into_inner().0 else {
                continue;
            };
            // Stored only if the bytes hash to the name: a peer cannot hand out others.
            if self
                .store_blob_locally(name.clone(), data.clone(), true)
                .await
                .is_ok()
            {
                return Ok(data);
            }
        }
        Err(Unavailable::BlobMissing { name }.into())
    }

    /// Stores a blob on this node only (a member's push, or a copy fetched from one: both
    /// `verify`, checked against the name; or bytes this node hashed itself).
    pub(crate) async fn store_blob_locally(
        &self,
        name: String,
        data: bytes::Bytes,
        verify: bool,
    ) -> Result<(), ReplicationError> {
        let store = self.blobs.clone();
        tokio::task::spawn_blocking(move || match verify {
            true => store.put(&name, &data),
            false => store.put_hashed(&name, &data),
        })
        .await
        .map_err(|e| Unavailable::Blobs(e.to_string()))?
        .map_err(|e| Unavailable::Blobs(e.to_string()).into())
    }

    /// This node's copy of blob `name`, if it holds it whole.
    pub(crate) async fn local_blob(
        &self,
        name: String,
    ) -> Result<Option<bytes::Bytes>, ReplicationError> {
        let store = self.blobs.clone();
        tokio::task::spawn_blocking(move || store.get(&name))
            .await
            .map_err(|e| Unavailable::Blobs(e.to_string()))?
            .map(|d| d.map(bytes::Bytes::from))
            .map_err(|e| Unavailable::Blobs(e.to_string()).into())
    }

    /// One pass of blob upkeep: fetches every blob the applied state names that this node
    /// lacks (it was down, or joined, or installed a snapshot, while they were stored), then,
    /// with `sweep`, reclaims those nothing names any more. Answers (fetched, missing,
    /// reclaimed).
    pub async fn blob_upkeep_pass(&self, sweep: bool) -> (u64, u64, u64) {
        let (mut fetched, mut missing) = (0, 0);
        let mut after: Option<String> = None;
        loop {
            let (engine, from) = (self.engine.clone(), after.clone());
            let page =
                tokio::task::spawn_blocking(move || engine.referenced_blobs(from.as_deref(), 1000))
                    .await;
            let Ok(Ok(page)) = page else { break };
            let Some(last) = page.last().cloned() else {
                break;
            };
            let store = self.blobs.clone();
            let lacking = tokio::task::spawn_blocking(move || {
                page.into_iter()
                    .filter(|n| !store.has(n))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for name in lacking {
                match self.get_blob(name.clone()).await {
                    Ok(_) => fetched += 1,
                    Err(e) => {
                        missing += 1;
                        tracing::warn!(blob = %name, error = %e, "a blob the state names is missing here and could not be fetched");
                    }
                }
            }
            after = Some(last);
        }
        let mut reclaimed = 0;
        // Only a node that has applied everything committed sweeps: one that is behind (it was
        // down, or partitioned) would take blobs of chunks it has yet to apply for unnamed.
        let caught_up = sweep && self.read_barrier().await.is_ok();
        if caught_up {
            let (store, engine, grace) = (self.blobs.clone(), self.engine.clone(), self.blob_grace);
            let swept = tokio::task::spawn_blocking(move || {
                store.sweep(|n| engine.blob_referenced(n).unwrap_or(true), grace)
            })
            .await;
            match swept {
                Ok(Ok((n, bytes))) => {
                    reclaimed = n;
                    if n > 0 {
                        tracing::info!(blobs = n, bytes, "reclaimed blobs no file names");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "sweeping blobs"),
                Err(e) => tracing::warn!(error = %e, "sweeping blobs"),
            }
        }
        if fetched > 0 {
            tracing::info!(blobs = fetched, "fetched missing blobs from peers");
        }
        (fetched, missing, reclaimed)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Waits until some leader is known (readiness), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "leader known")
            .await
            .is_ok()
    }

    pub fn has_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    /// A client for a peer's gRPC address, on the channel kept for it. Opening a new one drops
    /// the channels of addresses no member has any more (a member that moved, one removed).
    fn peer(&self, id: u64, addr: &str) -> Result<RaftClient<Channel>, ReplicationError> {
        if crate::drill::isolated() {
            return Err(Unavailable::Unreachable {
                addr: addr.to_string(),
                reason: crate::drill::ISOLATED.into(),
            }
            .into());
        }
        let key = (id, addr.to_string());
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&key) {
            return Ok(c.clone());
        }
        let members: std::collections::HashSet<(u64, String)> = self
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.grpc.clone()))
            .collect();
        channels.retain(|k, _| members.contains(k));
        let c = network::client(
            addr,
            self.timings.request_timeout * 30,
            &self.transport,
            Some(id),
        )
        .ok_or_else(|| Unavailable::BadAddress {
            addr: addr.to_string(),
        })?;
        channels.insert(key, c.clone());
        Ok(c)
    }

    /// Proposes an envelope and returns its outcome once committed and applied. Forwards to
    /// the leader when this node does not lead. Bounded by the request timeout.
    pub async fn write(&self, env: Envelope) -> Result<Outcome, ReplicationError> {
        let deadline = tokio::time::Instant::now() + self.timings.request_timeout;
        let mut first = true;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.write_once(&env, first)).await;
            first = false;
            match attempt {
                Err(_) => return Err(ReplicationError::Timeout),
                Ok(Ok(o)) => return Ok(o),
                // Retrying is safe even when the failed attempt may have reached the leader
                // and been committed (a forward whose reply was lost): the envelope keeps its
                // request id, and the state machine answers a repeat with the first outcome
                // instead of applying it again.
                Ok(Err(ReplicationError::NotLeader { .. }))
                | Ok(Err(ReplicationError::Unavailable(_))) => {
                    if tokio::time::Instant::now() + Duration::from_millis(50) >= deadline {
                        return Err(ReplicationError::Timeout);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    async fn write_once(&self, env: &Envelope, first: bool) -> Result<Outcome, ReplicationError> {
        match self.write_local(env.clone()).await {
            Err(ReplicationError::NotLeader {
                leader: Some(leader),
            }) if leader != self.id => {
                let info = self.member(leader).ok_or(ReplicationError::NotLeader {
                    leader: Some(leader),
                })?;
                let mut client = self.peer(leader, &info.grpc)?;
                let mut req = tonic::Request::new(env.clone());
                req.set_timeout(self.timings.request_timeout);
                #[cfg(feature = "fault-points")]
                let lose_reply =
                    first && std::env::var("BASALT_FAULT").is_ok_and(|f| f == "lose-forward-reply");
                #[cfg(not(feature = "fault-points"))]
                let _ = first;
                match client.forward(req).await {
                    #[cfg(feature = "fault-points")]
                    Ok(_) if lose_reply => {
                        // Test fault: the leader committed, but its answer never arrives.
                        tracing::warn!(request = %env.request_id, "fault point lose-forward-reply: dropping the leader's answer");
                        Err(Unavailable::FaultLostReply.into())
                    }
                    Ok(r) => r.into_inner().map_err(Self::from_remote),
                    Err(s) => Err(Unavailable::unreachable(&info.grpc, &s).into()),
                }
            }
            other => other,
        }
    }

    /// Proposes on this node only (no forwarding), through the group-commit batcher. Every
    /// proposal passes here first, forwarded ones on the leader too: the size cap is kept here.
    pub(crate) async fn write_local(&self, env: Envelope) -> Result<Outcome, ReplicationError> {
        let bytes = bincode::serialized_size(&env).unwrap_or(u64::MAX);
        if bytes > MAX_COMMAND_BYTES {
            return Err(ReplicationError::TooLarge {
                bytes,
                max: MAX_COMMAND_BYTES,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send((env, bytes, tx))
            .await
            .map_err(|_| Unavailable::ShuttingDown)?;
        rx.await.map_err(|_| Unavailable::ShuttingDown)?
    }

    /// A view of the state: after a read barrier for `Linearizable` (it reflects every write
    /// acknowledged before the call), or as this node has applied it for `Local`.
    /// This node's applied state now, without a read barrier.
    pub fn local_view(&self) -> Result<View, ReplicationError> {
        self.engine
            .view()
            .map_err(|e| Unavailable::State(e.to_string()).into())
    }

    pub async fn view(&self, consistency: Consistency) -> Result<View, ReplicationError> {
        match consistency {
            Consistency::Linearizable => self.read_barrier().await?,
            Consistency::Local => {}
        }
        self.engine
            .view()
            .map_err(|e| Unavailable::State(e.to_string()).into())
    }

    /// Makes the next local read linearizable: confirms leadership with a quorum (or asks the
    /// leader for its read index) and waits until this node has applied that far.
    pub async fn read_barrier(&self) -> Result<(), ReplicationError> {
        let timeout = self.timings.request_timeout;
        let fut = async {
            loop {
                match self.read_index_local().await {
                    Ok(_) => return Ok(()),
                    Err(ReplicationError::NotLeader {
                        leader: Some(leader),
                    }) if leader != self.id => {
                        let info = self.member(leader).ok_or(ReplicationError::NotLeader {
                            leader: Some(leader),
                        })?;
                        let mut client = self.peer(leader, &info.grpc)?;
                        let mut req = tonic::Request::new(());
                        req.set_timeout(timeout);
                        match client.read_index(req).await.map(|r| r.into_inner()) {
                            Ok(Ok(index)) => {
                                self.raft
                                    .wait(Some(timeout))
                                    .applied_index_at_least(Some(index), "read index")
                                    .await
                                    .map_err(|e| Unavailable::Raft(e.to_string()))?;
                                return Ok(());
                            }
                            _ => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        };
        let started = std::time::Instant::now();
        let done = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ReplicationError::Timeout)
            .and_then(|r| r);
        metrics::histogram!(
            "basalt_raft_read_barrier_seconds",
            "outcome" => if done.is_ok() { "ok" } else { "error" }
        )
        .record(started.elapsed().as_secs_f64());
        done
    }

    /// Replica consistency check: commits `check` (a `ClusterOp::Check` envelope), then asks
    /// every member for the digest it computed at that log entry.
    pub async fn cluster_check(&self, check: Envelope) -> Result<CheckReport, ReplicationError> {
        const WAIT: Duration = Duration::from_secs(30);
        let id = check.request_id;
        if let Outcome::Failed(e) = self.write(check).await? {
            return Err(Refusal::Failed(e).into());
        }
        let members: Vec<(u64, NodeInfo)> = self
            .membership()
            .nodes()
            .map(|(id, info)| (*id, info.clone()))
            .collect();
        let asks = members.into_iter().map(|(member, info)| async move {
            let answer = if member == self.id {
                self.wait_check(id, WAIT).await.map_err(|e| e.to_string())
            } else {
                match self.peer(member, &info.grpc) {
                    Ok(mut c) => {
                        let mut req = tonic::Request::new(id);
                        req.set_timeout(WAIT + Duration::from_secs(1));
                        match c.digest(req).await {
                            Ok(r) => r.into_inner().map_err(|e| e.to_string()),
                            Err(s) => Err(format!("unreachable: {}", s.message())),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                }
            };
            (member, answer)
        });
        Ok(futures::future::join_all(asks).await.into_iter().collect())
    }

    /// This node's digest for check `id`, once it has applied it and computed the digest.
    /// This node's data digest (`View::data_digest`) at check `id`'s entry, once computed.
    pub fn check_data_digest(&self, id: RequestId) -> Option<(u64, String)> {
        match self.sm.check(id) {
            Some(CheckState::Done {
                index, data_digest, ..
            }) => Some((index, data_digest)),
            _ => None,
        }
    }

    pub(crate) async fn wait_check(
        &self,
        id: RequestId,
        wait: Duration,
    ) -> Result<(u64, String), ReplicationError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.sm.check(id) {
                Some(CheckState::Done { index, digest, .. }) => return Ok((index, digest)),
                Some(CheckState::Failed { index, reason }) => {
                    return Err(Unavailable::Digest { index, reason }.into())
                }
                Some(CheckState::Computing { .. }) | None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ReplicationError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn read_index_local(&self) -> Result<u64, ReplicationError> {
        // Confirming the lead sends appends, which would renew the leases a hand-over waits
        // out: a read waits for it to end (and then asks the new leader).
        self.handover.passed().await;
        match self.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ReplicationError::NotLeader {
                    leader: f.leader_id,
                })
            }
            Err(e) => Err(Unavailable::Raft(e.to_string()).into()),
        }
    }

    pub async fn is_initialized(&self) -> bool {
        self.raft.is_initialized().await.unwrap_or(false)
    }

    fn voters(&self) -> std::collections::BTreeSet<u64> {
        self.membership().voter_ids().collect()
    }

    /// A client for the current leader, when another node leads.
    fn leader_client(
        &self,
        timeout: Duration,
    ) -> Result<
        Option<crate::pb::raft_client::RaftClient<tonic::transport::Channel>>,
        ReplicationError,
    > {
        let leader = self.raft.metrics().borrow().current_leader;
        match leader {
            None => Err(ReplicationError::NotLeader { leader: None }),
            Some(l) if l == self.id => Ok(None),
            Some(_) if crate::drill::isolated() => Err(Unavailable::Unreachable {
                addr: "the leader".into(),
                reason: crate::drill::ISOLATED.into(),
            }
            .into()),
            Some(l) => {
                let info = self
                    .member(l)
                    .ok_or(ReplicationError::NotLeader { leader: Some(l) })?;
                network::client(&info.grpc, timeout, &self.transport, Some(l))
                    .map(Some)
                    .ok_or_else(|| {
                        Unavailable::BadAddress {
                            addr: info.grpc.clone(),
                        }
                        .into()
                    })
            }
        }
    }

    /// The current membership (voters, learners and their addresses).
    pub(crate) fn membership(&self) -> openraft::Membership<u64, NodeInfo> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// Every other member and its addresses.
    /// Every other member, as the Raft membership records it.
    pub fn peers(&self) -> Vec<(u64, NodeInfo)> {
        self.membership()
            .nodes()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, info)| (*id, info.clone()))
            .collect()
    }

    /// A peer's answer to a forwarded membership request.
    fn remote_reply<T>(
        res: Result<tonic::Response<Result<T, RemoteError>>, tonic::Status>,
    ) -> Result<T, ReplicationError> {
        match res {
            Ok(r) => r.into_inner().map_err(Self::from_remote),
            Err(s) => Err(Unavailable::unreachable("the leader", &s).into()),
        }
    }

    fn from_remote(e: RemoteError) -> ReplicationError {
        match e {
            RemoteError::Replication(e) => e,
            RemoteError::SnapshotMismatch(m) => Unavailable::Raft(m.to_string()).into(),
        }
    }

    /// Adds a node to the cluster: as a learner until it has caught up, then as a voter.
    /// Runs on the leader; other members forward the request there.
    pub async fn add_member(&self, id: u64, info: NodeInfo) -> Result<Vec<u64>, ReplicationError> {
        const JOIN_TIMEOUT: Duration = Duration::from_secs(120);
        if self.seeding.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Unavailable::Seeding.into());
        }
        if let Some(mut leader) = self.leader_client(JOIN_TIMEOUT)? {
            return Self::remote_reply(leader.join((id, info)).await);
        }
        let membership = self.membership();
        if membership.voter_ids().any(|v| v == id) {
            // Re-adding a voter that lost its log could elect a stale leader: ids are never reused.
            return Err(Refusal::VoterIdReused { id }.into());
        }
        if let Transport::Tls(_) = &self.transport {
            // Only a node the cluster admitted (a proof at enrollment, or its own certificate
            // on a direct join) is added: a member cannot add a node of its own making.
            match self.node_record(id) {
                None => return Err(Refusal::NotAdmitted { id }.into()),
                Some(r) if r.retired_at.is_some() => return Err(Refusal::Retired { id }.into()),
                Some(_) => {}
            }
        }
        tracing::info!(node_id = id, grpc = %info.grpc, "adding a learner");
        tokio::time::timeout(JOIN_TIMEOUT, self.raft.add_learner(id, info, true))
            .await
            .map_err(|_| ReplicationError::Timeout)?
            .map_err(write_error)?;
        // A voter if the placement policy makes it one (else it stays a read replica).
        self.reconcile_placement(Some(id)).await?;
        Ok(self.voters().into_iter().collect())
    }

    /// The placement policy in force.
    pub fn placement(&self) -> model::schema::Placement {
        self.engine.cluster_placement().unwrap_or_default()
    }

    /// Sets the placement policy; the leader then brings the membership in line with it.
    pub async fn set_placement(
        &self,
        policy: model::schema::Placement,
    ) -> Result<(), ReplicationError> {
        self.cluster_write(model::command::ClusterOp::SetPlacement(policy))
            .await
    }

    /// Records this node's `--zone` (empty: none) in the cluster's state once it is a member and
    /// the state says otherwise; retried until it is.
    pub async fn record_zone(node: std::sync::Weak<RaftNode>, zone: String) {
        loop {
            let Some(me) = node.upgrade() else { return };
            let known = me.engine.cluster_zones().unwrap_or_default();
            let recorded = known.get(&me.id).map(String::as_str).unwrap_or("");
            if me.is_member() && recorded == zone {
                return;
            }
            if me.is_member() && me.has_leader() {
                let op = model::command::ClusterOp::SetZone {
                    node: me.id,
                    zone: zone.clone(),
                };
                match me.cluster_write(op).await {
                    Ok(()) => continue,
                    Err(ReplicationError::Refused(r)) => {
                        tracing::error!(%zone, reason = %r, "the zone was refused");
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "zone not recorded yet"),
                }
            }
            drop(me);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Whether peer `id` answered a probe from this node lately (this node itself: always).
    fn healthy(&self, id: u64) -> bool {
        id == self.id
            || self
                .peer_applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .and_then(|r| r.clock)
                .is_some_and(|(_, at)| at.elapsed() <= HEALTHY_WITHIN)
    }

    /// How far member `id`'s log trails this leader's (entries), as replication last matched it.
    fn replication_lag(m: &openraft::RaftMetrics<u64, NodeInfo>, id: u64) -> Option<u64> {
        let matched = m.replication.as_ref()?.get(&id)?;
        let last = m.last_log_index.unwrap_or(0);
        Some(last.saturating_sub(matched.map_or(0, |l| l.index)))
    }

    /// The members as this leader sees them. `fresh`: a learner that has just caught up (its
    /// addition waited for that), healthy and current whatever the probes say yet.
    fn placement_members(&self, fresh: Option<u64>) -> Vec<crate::placement::Member> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let zones = self.engine.cluster_zones().unwrap_or_default();
        membership
            .nodes()
            .map(|(id, info)| {
                let me_or_fresh = *id == self.id || Some(*id) == fresh;
                crate::placement::Member {
                    id: *id,
                    region: info.region.clone(),
                    zone: zones.get(id).cloned().unwrap_or_default(),
                    voter: voters.contains(id),
                    healthy: me_or_fresh || self.healthy(*id),
                    caught_up: me_or_fresh
                        || Self::replication_lag(&m, *id).is_some_and(|lag| lag <= CAUGHT_UP),
                }
            })
            .collect()
    }

    /// On the leader: makes the voters those the placement policy wants of the members now
    /// (`placement::plan_voters`); a voter no longer wanted stays on as a learner.
    async fn reconcile_placement(&self, fresh: Option<u64>) -> Result<(), ReplicationError> {
        if !self.is_leader() {
            return Ok(());
        }
        let policy = self.placement();
        let members = self.placement_members(fresh);
        let Some(voters) = crate::placement::plan_voters(&policy, &members, self.id) else {
            return Ok(());
        };
        tracing::info!(?voters, "placement: changing the voters");
        tokio::time::timeout(
            self.timings.request_timeout * 2,
            self.raft.change_membership(voters, true),
        )
        .await
        .map_err(|_| ReplicationError::Timeout)?
        .map_err(write_error)?;
        Ok(())
    }

    /// Records this node's own new addresses (it restarted elsewhere with its data): on this
    /// node if it leads, else sent to the leader with this node's own certificate (which is
    /// what the leader checks an announcement against).
    async fn announce_self(&self, info: NodeInfo) -> Result<Vec<u64>, ReplicationError> {
        if let Some(mut leader) = self.leader_client(self.timings.request_timeout)? {
            return Self::remote_reply(leader.announce((self.id, info)).await);
        }
        self.update_member_here(self.id, info).await
    }

    /// Records member `id`'s new addresses, on the leader only: another member answers
    /// `NotLeader` with the leader it knows. (It does not pass the announcement on: its
    /// certificate is not `id`'s, so the leader would refuse it.)
    pub(crate) async fn update_member_here(
        &self,
        id: u64,
        info: NodeInfo,
    ) -> Result<Vec<u64>, ReplicationError> {
        if !self.is_leader() {
            return Err(ReplicationError::NotLeader {
                leader: self.raft.metrics().borrow().current_leader,
            });
        }
        // Leading, as a quorum confirms: a leader restarted with its old term believes it
        // leads until it hears of a newer one (and openraft logs a membership change refused
        // for that at ERROR).
        self.read_index_local().await?;
        let known = self.member(id).ok_or(Refusal::NotMember { id })?;
        if known != info {
            tracing::info!(node_id = id, grpc = %info.grpc, http = %info.http, "member moved: updating its addresses");
            let change = openraft::ChangeMembers::SetNodes([(id, info)].into_iter().collect());
            self.raft
                .change_membership(change, false)
                .await
                .map_err(write_error)?;
        }
        Ok(self.voters().into_iter().collect())
    }

    /// On restart: if this node's addresses changed, tell the cluster until its membership
    /// record matches: recorded here if this node leads (a leader restarted fast enough keeps
    /// its term), else sent to the leader it knows; if it knows none, to each member in turn
    /// (the leader among them records it; the others answer who leads).
    pub async fn announce_addresses(&self, info: NodeInfo) {
        loop {
            if self.member(self.id).is_none_or(|known| known == info) {
                return;
            }
            match self.announce_self(info.clone()).await {
                Ok(_) => {
                    // Recorded; this node's copy of the membership follows shortly.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, "address update: no leader reached yet"),
            }
            for (id, peer) in self.peers() {
                if let Some(mut c) = network::client(
                    &peer.grpc,
                    self.timings.request_timeout,
                    &self.transport,
                    Some(id),
                ) {
                    match c
                        .announce((self.id, info.clone()))
                        .await
                        .map(|r| r.into_inner())
                    {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %peer.grpc, error = %e, "address update not accepted yet")
                        }
                        Err(s) => {
                            tracing::debug!(peer = %peer.grpc, error = %s, "peer unreachable")
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Removes a member (voter or learner) from the cluster, on the leader (forwarded there):
    /// an operator's request. If leadership moves, or an attempt times out, it starts again
    /// wherever the leader is now (each step can be taken twice), until its deadline. It runs
    /// on a task of its own: a caller that stops waiting does not cut it short between steps.
    pub async fn remove_member(self: &Arc<Self>, id: u64) -> Result<Vec<u64>, ReplicationError> {
        let me = self.clone();
        let run = async move {
            let deadline = tokio::time::Instant::now() + me.timings.request_timeout * 6;
            loop {
                let attempt = me.remove_member_once(id, deadline, false).await;
                match attempt {
                    Err(ReplicationError::NotLeader { .. })
                    | Err(ReplicationError::Timeout)
                    | Err(ReplicationError::Unavailable(_)) => {}
                    r => return r,
                }
                if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline {
                    return attempt;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::spawn(run)
            .await
            .unwrap_or_else(|e| Err(Unavailable::Raft(e.to_string()).into()))
    }

    /// One attempt at another node's request (`remove` RPC), carried out on a task of its
    /// own so that the asker giving up does not cut it short between steps.
    pub(crate) async fn remove_for_peer(
        self: &Arc<Self>,
        id: u64,
    ) -> Result<Vec<u64>, ReplicationError> {
        let me = self.clone();
        let deadline = tokio::time::Instant::now() + self.timings.request_timeout * 5;
        tokio::spawn(async move { me.remove_member_once(id, deadline, true).await })
            .await
            .unwrap_or_else(|e| Err(Unavailable::Raft(e.to_string()).into()))
    }

    /// One attempt at removing `id`, by `deadline`. A `remote` attempt (another node's RPC:
    /// the node that asked retries) is carried out only by the leader: `NotLeader` elsewhere,
    /// so requests are never passed on twice.
    pub(crate) async fn remove_member_once(
        &self,
        id: u64,
        deadline: tokio::time::Instant,
        remote: bool,
    ) -> Result<Vec<u64>, ReplicationError> {
        // The cluster's record of a node: none (never admitted), or whether it is retired.
        let record = |id| self.node_record(id).map(|r| r.retired_at.is_some());
        let (retiring, retired) = (Some(false), Some(true));
        let out = |id| self.membership().get_node(&id).is_none();
        if id == self.id && out(id) {
            // A leader that removed itself (a node knows no leader once out): the members
            // it left finish its removal, when the operator asks here.
            return match (remote, record(id)) {
                (true, _) => Err(ReplicationError::NotLeader { leader: None }),
                (false, r) if r == retiring => self.retired_by_the_others(deadline).await,
                (false, r) if r == retired => Ok(self.voters().into_iter().collect()),
                (false, _) => Err(Refusal::NotMember { id }.into()),
            };
        }
        if remote && self.raft.metrics().borrow().current_leader != Some(self.id) {
            return Err(ReplicationError::NotLeader { leader: None });
        }
        if let Some(mut leader) = self.leader_client(self.timings.request_timeout * 6)? {
            let mut req = tonic::Request::new(id);
            req.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            return match tokio::time::timeout_at(deadline, leader.remove(req)).await {
                Ok(answer) => Self::remote_reply(answer),
                Err(_) => Err(ReplicationError::Timeout),
            };
        }
        let membership = self.membership();
        if membership.get_node(&id).is_none() {
            // A removal whose `Retire` did not commit (a leader change between the two steps)
            // is finished by asking again; one that did is done (an answer lost, a repeat).
            if record(id) == retiring {
                self.retire_here(id, deadline).await?;
            }
            if record(id) == retired {
                return Ok(self.voters().into_iter().collect());
            }
            return Err(Refusal::NotMember { id }.into());
        }
        let mut voters = self.voters();
        let change: openraft::ChangeMembers<u64, NodeInfo> = if voters.remove(&id) {
            if voters.is_empty() {
                return Err(Refusal::LastVoter.into());
            }
            openraft::ChangeMembers::ReplaceAllVoters(voters)
        } else {
            openraft::ChangeMembers::RemoveNodes([id].into_iter().collect())
        };
        // Retired first (its certificate refused from then on, so it cannot ask to be added
        // back between the two steps) — unless it is this leader, whose appends must still be
        // accepted for the membership change to commit. (Should leadership pass to `id` after
        // the proposal and before its commit, `id` commits its own retirement: the members
        // then refuse its appends and elect another leader, where the removal is finished.)
        // Without TLS no certificate is checked, so this leader may retire itself first too.
        let insecure = matches!(self.transport, Transport::Insecure);
        if id != self.id || insecure {
            self.retire_here(id, deadline).await?;
        }
        tracing::info!(node_id = id, "removing a member");
        tokio::time::timeout_at(deadline, self.raft.change_membership(change, false))
            .await
            .map_err(|_| ReplicationError::Timeout)?
            .map_err(write_error)?;
        if id == self.id && !insecure {
            return self.retired_by_the_others(deadline).await;
        }
        Ok(self.voters().into_iter().collect())
    }

    /// The last step of a leader's removal of itself: once out of the membership it can no
    /// longer propose, nor pass a write on, and no leader will tell it who leads now. It asks
    /// the members it left, in turn, to retire it (a node may ask that for itself), until the
    /// one that leads by then does it or `deadline` passes.
    async fn retired_by_the_others(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u64>, ReplicationError> {
        let others = self.peers();
        let voters: Vec<u64> = self.voters().into_iter().collect();
        let mut last = ReplicationError::Timeout;
        for (id, info) in others.iter().cycle() {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            // A peer that drops packets is given up on in time: the next is asked.
            let until = deadline.min(now + self.timings.request_timeout);
            let answer = match self.peer(*id, &info.grpc) {
                Ok(mut client) => {
                    let mut req = tonic::Request::new(self.id);
                    req.set_timeout(until - now);
                    match tokio::time::timeout_at(until, client.remove(req)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
                    }
                }
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            match answer {
                Ok(r) => match r.into_inner() {
                    Ok(_) => return Ok(voters),
                    Err(e) => last = Self::from_remote(e),
                },
                // Retired already, and the member knows: its certificate is refused.
                Err(s) if s.message() == network::removed(self.id) => return Ok(voters),
                Err(s) => last = Unavailable::unreachable(&info.grpc, &s).into(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Unavailable::Raft(format!(
            "node {} left the membership, but its retirement did not commit yet ({last}): ask again",
            self.id
        ))
        .into())
    }

    /// Asks a member of an existing cluster (any of `seeds`) to add this node, retrying until
    /// it is a voter (or the cluster refuses it). Used on the first start of a node given `--join`.
    pub async fn join_cluster(&self, seeds: Vec<String>, info: NodeInfo) {
        let mut attempt = 0u32;
        loop {
            if self.voters().contains(&self.id) {
                tracing::info!(node_id = self.id, "joined the cluster as a voter");
                return;
            }
            if attempt > 0 && self.is_member() {
                tracing::info!(
                    node_id = self.id,
                    "joined the cluster as a learner (the placement policy decides whether it votes)"
                );
                return;
            }
            let seed = &seeds[attempt as usize % seeds.len()];
            attempt += 1;
            let result =
                match network::client(seed, Duration::from_secs(150), &self.transport, None) {
                    Some(mut c) => c
                        .join((self.id, info.clone()))
                        .await
                        .map(|r| r.into_inner()),
                    None => {
                        tracing::error!(%seed, "--join address is not a valid host:port");
                        return;
                    }
                };
            match result {
                Ok(Ok(voters)) => {
                    tracing::info!(node_id = self.id, ?voters, "join accepted");
                    // A voter, or a learner the placement policy keeps one.
                    let me = self.id;
                    let _ = self
                        .raft
                        .wait(Some(Duration::from_secs(30)))
                        .metrics(
                            |m| m.membership_config.membership().get_node(&me).is_some(),
                            "own membership",
                        )
                        .await;
                }
                Ok(Err(RemoteError::Replication(ReplicationError::Refused(m))))
                    if !self.voters().contains(&self.id) =>
                {
                    tracing::error!(%seed, reason = %m, "join refused");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(%seed, error = %e, "join not accepted yet; retrying"),
                Err(s) => tracing::warn!(%seed, error = %s, "cannot reach join address; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(500.min(100 * attempt as u64))).await;
        }
    }

    /// Admits node `req.node_id` if its proof holds: signs its certificate request and hands
    /// it what a member holds. Runs on whichever member the joiner reached.
    pub(crate) async fn enroll(&self, req: enroll::Request) -> Result<Enrolled, ReplicationError> {
        let Transport::Tls(tls) = &self.transport else {
            return Err(Refusal::Insecure.into());
        };
        let nonce = match &req.proof {
            Proof::RootKey { nonce, mac } => {
                if !enroll::check_proof(&self.root_key_sha256(), req.node_id, &req.csr, nonce, mac)
                {
                    return Err(Refusal::BadProof.into());
                }
                // A removed node knows what root-key proofs are keyed with: after a removal,
                // only a rotated root key (or a join token) admits.
                if self
                    .engine
                    .cluster_root_key()
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.removed_since)
                {
                    return Err(Refusal::RootKeyStale.into());
                }
                Some(nonce.clone())
            }
            Proof::Token { id, secret } => {
                // Anyone may call `enroll`: a token is checked against this node's state (after
                // a read barrier if it is not there yet) before it may cost a log entry.
                let _slot = self.enrolling.try_acquire().map_err(|_| {
                    Unavailable::Raft("busy checking other join tokens; retry".into())
                })?;
                let digest = crate::enroll::digest(secret);
                let known = |node: &RaftNode| {
                    node.engine
                        .join_token(id)
                        .ok()
                        .flatten()
                        .is_some_and(|t| t.secret_sha256 == digest)
                };
                if !known(self) && (self.read_barrier().await.is_err() || !known(self)) {
                    return Err(Refusal::Failed(model::Error::new(
                        model::ErrorCode::GeneralAccessForbidden,
                        "the join token is not valid for this cluster",
                    ))
                    .into());
                }
                None
            }
        };
        if self.voters().contains(&req.node_id) {
            return Err(Refusal::VoterIdReused { id: req.node_id }.into());
        }
        let cert_pem = self.sign_for(&req.csr, req.node_id)?;
        let key_sha256 = crate::pki::first_cert(&cert_pem)
            .and_then(|der| crate::pki::inspect(&der))
            .map_err(|e| Refusal::BadRequest(e.to_string()))?
            .key_sha256;
        // This node may not have recorded its own admission yet (the first node does so just
        // after it starts): record it first, or the joiner's list of the members it may take
        // Raft traffic from before its state arrives would lack this node, and it would refuse
        // the appends that bring that state.
        if matches!(self.engine.cluster_node(self.id), Ok(None)) {
            self.admit(self.id, tls.cert().key_sha256).await?;
        }
        // The admission (and the token's one use) is a Raft entry: it holds on every member,
        // and a token cannot be used twice through two members at once.
        let token = match &req.proof {
            Proof::Token { id, secret } => Some(model::command::TokenUse {
                id: id.clone(),
                secret_sha256: crate::enroll::digest(secret),
            }),
            Proof::RootKey { .. } => None,
        };
        self.cluster_write(model::command::ClusterOp::Admit {
            node: req.node_id,
            key_sha256,
            token,
        })
        .await?;
        let creds = tls.credentials();
        let mut answer = Enrolled {
            ca_pem: creds.ca_pem,
            ca_key_pem: creds.ca_key_pem,
            cert_pem,
            gossip_key: creds.gossip_key,
            root_key_sha256: self.root_key_sha256(),
            mac: Vec::new(),
            sealed: Vec::new(),
            members: self
                .engine
                .admitted_nodes()
                .map_err(|e| Unavailable::State(e.to_string()))?,
        };
        if let Some(nonce) = nonce {
            enroll::seal(&answer.root_key_sha256.clone(), &nonce, &mut answer);
        }
        tracing::info!(
            node_id = req.node_id,
            "enrolled a node: signed its certificate"
        );
        Ok(answer)
    }

    /// Retires node `id`, proposed by this node only while it leads: forwarded, it could reach
    /// `id` itself as the new leader, whose appends every member would then refuse (the
    /// change of membership that follows could not commit). `NotLeader` when it does not lead,
    /// `Timeout` if it does not commit in time.
    async fn retire_here(
        &self,
        id: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), ReplicationError> {
        let env = Envelope::new(
            "",
            new_request_id(),
            model::Actor::Operator,
            model::Op::Cluster(model::command::ClusterOp::Retire { node: id }),
        );
        let until = deadline.min(tokio::time::Instant::now() + self.timings.request_timeout);
        let written = tokio::time::timeout_at(until, self.write_local(env))
            .await
            .map_err(|_| ReplicationError::Timeout)?;
        match written? {
            Outcome::Failed(e) => Err(Refusal::Failed(e).into()),
            _ => Ok(()),
        }
    }

    /// Commits one of the cluster's own operations; a refusal in apply is a `Refusal::Failed`.
    async fn cluster_write(&self, op: model::command::ClusterOp) -> Result<(), ReplicationError> {
        let env = Envelope::new(
            "",
            new_request_id(),
            model::Actor::Operator,
            model::Op::Cluster(op),
        );
        match self.write(env).await? {
            Outcome::Failed(e) => Err(Refusal::Failed(e).into()),
            _ => Ok(()),
        }
    }

    /// A new one-time join token, valid for `ttl`: the token (shown once) and when it
    /// expires (epoch milliseconds).
    pub async fn issue_join_token(&self, ttl: Duration) -> Result<(String, i64), ReplicationError> {
        let Transport::Tls(tls) = &self.transport else {
            return Err(Refusal::Insecure.into());
        };
        let token = enroll::JoinToken::new(tls.ca_fingerprint());
        let expires = wall_clock_ms().saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
        self.cluster_write(model::command::ClusterOp::IssueToken {
            id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            expires,
        })
        .await?;
        Ok((token.to_string(), expires))
    }

    /// Records this node's own admission (its certificate's key) if the cluster has none: the
    /// node that started the cluster, and nodes with operator-made certificates, which never
    /// enrolled. Retries until it is committed.
    pub async fn admit_self(node: std::sync::Weak<RaftNode>) {
        loop {
            let Some(me) = node.upgrade() else { return };
            let Transport::Tls(tls) = &me.transport else {
                return;
            };
            // The node that started the cluster also records the cluster's root key (only if the
            // cluster has none: a joiner whose state is not there yet changes nothing).
            if me.engine.cluster_root_key().is_ok_and(|k| k.is_none()) {
                let op = model::command::ClusterOp::SetRootKey {
                    sha256: me.root_key_sha256.clone(),
                    initial: true,
                };
                if let Err(e) = me.cluster_write(op).await {
                    tracing::debug!(error = %e, "recording the cluster's root key; retrying");
                    drop(me);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
            match me.engine.cluster_node(me.id) {
                Ok(Some(_)) => return,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "reading this node's admission"),
            }
            let op = model::command::ClusterOp::Admit {
                node: me.id,
                key_sha256: tls.cert().key_sha256,
                token: None,
            };
            match me.cluster_write(op).await {
                Ok(()) => return,
                Err(ReplicationError::Refused(r)) => {
                    tracing::error!(reason = %r, "the cluster refused this node's admission");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "recording this node's admission; retrying"),
            }
            drop(me);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The cluster's root key digest: as its replicated state records it, else (before this
    /// node applied that) the one it started with.
    pub fn root_key_sha256(&self) -> String {
        match self.engine.cluster_root_key() {
            Ok(Some(record)) => record.sha256,
            _ => self.root_key_sha256.clone(),
        }
    }

    /// Replaces the cluster's root key (by its digest), for every node at once.
    pub async fn set_root_key(&self, sha256: String) -> Result<(), ReplicationError> {
        self.cluster_write(model::command::ClusterOp::SetRootKey {
            sha256,
            initial: false,
        })
        .await
    }

    /// Admits node `id` with the key its certificate carries.
    pub(crate) async fn admit(&self, id: u64, key_sha256: String) -> Result<(), ReplicationError> {
        self.cluster_write(model::command::ClusterOp::Admit {
            node: id,
            key_sha256,
            token: None,
        })
        .await
    }

    /// Renews this node's certificate before it expires, without a restart: when a third of
    /// its lifetime is left, a certificate for the same key is signed (here if this node holds
    /// the CA key, else by a member that does) and used by every new connection. Certificates
    /// the operator brought are reloaded from their files when those change instead.
    pub async fn renew_certificates(node: std::sync::Weak<RaftNode>) {
        loop {
            let Some(me) = node.upgrade() else { return };
            let Transport::Tls(tls) = me.transport.clone() else {
                return;
            };
            let cert = tls.cert();
            // Certificates are backdated an hour for clock skew: that hour is not lifetime.
            let lifetime = (cert.not_after - cert.not_before - 3600).max(1);
            let now = wall_clock_ms() / 1000;
            if tls.renews() && cert.not_after - now < lifetime / 3 {
                match me.renew_once(&tls).await {
                    Ok(info) => tracing::info!(
                        expires = rfc3339(info.not_after).unwrap_or_default(),
                        "renewed this node's certificate"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not renew this node's certificate yet")
                    }
                }
            } else if !tls.renews() {
                match tls.reload() {
                    Ok(true) => tracing::info!("reloaded this node's certificate files"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the certificate files could not be reloaded")
                    }
                }
            }
            drop(me);
            let every = Duration::from_secs((lifetime as u64 / 20).clamp(1, 60));
            tokio::time::sleep(every).await;
        }
    }

    async fn renew_once(
        &self,
        tls: &crate::tls::ClusterTls,
    ) -> Result<crate::pki::CertInfo, String> {
        let key_pem = tls.credentials().node.key_pem;
        let csr = crate::pki::request_for(&key_pem).map_err(|e| e.to_string())?;
        let cert_pem = match self.sign_for(&csr, self.id) {
            Ok(pem) => pem,
            Err(ReplicationError::Refused(Refusal::NoCaKey)) => {
                let mut last = "no member to ask".to_string();
                let mut signed = None;
                for (id, info) in self.peers() {
                    let Ok(mut c) = self.peer(id, &info.grpc) else {
                        continue;
                    };
                    match c.renew(csr.clone()).await.map(|r| r.into_inner()) {
                        Ok(Ok(pem)) => {
                            signed = Some(pem);
                            break;
                        }
                        Ok(Err(e)) => last = e.to_string(),
                        Err(s) => last = s.message().to_string(),
                    }
                }
                signed.ok_or(last)?
            }
            Err(e) => return Err(e.to_string()),
        };
        tls.install(crate::pki::KeyedCert { cert_pem, key_pem })
            .map_err(|e| e.to_string())
    }

    /// Before this node has any of the cluster's state: whether a peer with this certificate
    /// is one the cluster had admitted when this node enrolled.
    pub(crate) fn known_before_state(&self, id: u64, key_sha256: &str) -> bool {
        self.peers.is_empty() || self.peers.get(&id).is_some_and(|k| k == key_sha256)
    }

    /// Whether node `id` was a member in the last membership committed (applied) here. A
    /// change that removes a member takes effect on a follower as soon as it is appended; the
    /// leader removing itself replicates on until its removal is committed, and tells the
    /// members it is.
    pub(crate) fn committed_member(&self, id: u64) -> bool {
        self.sm.applied_membership().get_node(&id).is_some()
    }

    /// Whether node `id`, with this key, was a member when this node enrolled, and this node
    /// is still catching up to its own admission (false for a node that never enrolled).
    /// Once that entry is applied, the log's membership names every member the list did.
    pub(crate) fn enrolled_with(&self, id: u64, key_sha256: &str) -> bool {
        self.peers.get(&id).is_some_and(|k| k == key_sha256) && self.node_record(self.id).is_none()
    }

    /// What the cluster records about node `id` (admitted key, retired), as applied here.
    pub(crate) fn node_record(&self, id: u64) -> Option<model::schema::NodeRecord> {
        self.engine.cluster_node(id).ok().flatten()
    }

    /// A member's renewal: its new certificate, for the key the cluster admitted it with only.
    pub(crate) fn renew_for(&self, csr: &[u8], node_id: u64) -> Result<String, ReplicationError> {
        let pem = self.sign_for(csr, node_id)?;
        let key = crate::pki::first_cert(&pem)
            .and_then(|der| crate::pki::inspect(&der))
            .map_err(|e| Refusal::BadRequest(e.to_string()))?
            .key_sha256;
        match self.node_record(node_id) {
            Some(r) if r.key_sha256 == key && r.retired_at.is_none() => Ok(pem),
            _ => Err(Refusal::OtherKey { id: node_id }.into()),
        }
    }

    /// Signs a certificate request as node `node_id`'s certificate, if this node holds the CA key.
    pub(crate) fn sign_for(&self, csr: &[u8], node_id: u64) -> Result<String, ReplicationError> {
        let Transport::Tls(tls) = &self.transport else {
            return Err(Refusal::Insecure.into());
        };
        let now = wall_clock_ms() / 1000;
        match tls.sign(csr, node_id, now, self.cert_ttl.as_secs() as i64) {
            None => Err(Refusal::NoCaKey.into()),
            Some(Err(e)) => Err(Refusal::BadRequest(e.to_string()).into()),
            Some(Ok(pem)) => Ok(pem),
        }
    }

    fn member(&self, id: u64) -> Option<NodeInfo> {
        self.membership().get_node(&id).cloned()
    }

    pub fn applied_index(&self) -> Option<u64> {
        self.sm.applied_index()
    }

    /// Keeps the slowest smoothed round trip to a peer in the data dir when it moved by a
    /// quarter (the next start's timings come from it), and warns once when this run's
    /// heartbeat is too short for it.
    fn remember_round_trip(&self, remembered: &mut Option<Duration>, warned: &mut bool) {
        let slowest = self
            .peer_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(|r| r.smooth_rtt)
            .max();
        let Some(slowest) = slowest else { return };
        let moved = remembered.is_none_or(|r| {
            let (a, b) = (r.as_secs_f64(), slowest.as_secs_f64());
            (a - b).abs() > 0.25 * a.max(b) && (a - b).abs() > 0.005
        });
        if moved {
            // A file write: off the runtime's worker threads.
            let path = self.snapshots_dir.with_file_name(ROUND_TRIP_FILE);
            let ms = (slowest.as_millis() as u64).to_string();
            tokio::task::spawn_blocking(move || std::fs::write(path, ms));
            *remembered = Some(slowest);
        }
        let wanted = self.timings.clone().for_round_trip(slowest);
        if wanted.heartbeat > self.timings.heartbeat + self.timings.heartbeat / 2 && !*warned {
            *warned = true;
            tracing::warn!(
                round_trip_ms = slowest.as_millis() as u64,
                heartbeat_ms = self.timings.heartbeat.as_millis() as u64,
                "peers are further away than this node's Raft timings allow for: they take effect at its next start (e.g. basalt cluster rolling-restart)"
            );
        }
    }

    pub(crate) fn closed(&self) -> &crate::closed::Closed {
        &self.closed
    }

    /// How stale this node's applied state may be now, at most (ms), with the index applied;
    /// `None` if it cannot tell (no stamp applied yet, or no fresh clock estimate of the leader
    /// that stamped it). See `crate::closed`.
    pub fn staleness(&self) -> Option<(u64, u64)> {
        let applied = self.sm.applied_index().unwrap_or(0);
        let now = wall_clock_ms();
        if self.is_leader() {
            if let Some(lead) = self.closed.lead().filter(|l| l.index <= applied) {
                return Some((applied, (now - lead.q).max(0) as u64));
            }
        }
        let stamp = self.closed.newest(applied)?;
        let (ahead, rtt) = if stamp.leader == self.id {
            (0, Duration::ZERO)
        } else {
            let r = *self
                .peer_applied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&stamp.leader)?;
            match (r.clock, r.rtt) {
                (Some((ahead, at)), Some(rtt)) if at.elapsed() <= HEALTHY_WITHIN => (ahead, rtt),
                _ => return None,
            }
        };
        let ms = crate::closed::staleness_ms(now, stamp.q, ahead, rtt.as_millis() as i64);
        Some((applied, ms))
    }

    /// A view at most `max` stale: this node's own state if it provably is (see `staleness`),
    /// else after a read barrier (then it is current). Answers the view, the index this node
    /// had applied when it was taken (at least), and the bound on its staleness (ms).
    pub async fn view_within(&self, max: Duration) -> Result<(View, u64, u64), ReplicationError> {
        let (applied, stale) = match self.staleness() {
            Some((applied, ms)) if ms <= max.as_millis() as u64 => (applied, ms),
            _ => {
                self.read_barrier().await?;
                (self.sm.applied_index().unwrap_or(0), 0)
            }
        };
        let view = self
            .engine
            .view()
            .map_err(|e| ReplicationError::from(Unavailable::State(e.to_string())))?;
        Ok((view, applied, stale))
    }

    /// How far each member's wall clock is ahead of this node's (ms; this node's own: 0), as
    /// the probes of the last `HEALTHY_WITHIN` measured it; members not heard from in that
    /// time are left out.
    pub fn clock_offsets(&self) -> Vec<(u64, i64)> {
        let fresh = HEALTHY_WITHIN;
        let known = self.peer_applied.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = vec![(self.id, 0)];
        for (id, _) in self.peers() {
            if let Some(PeerReport {
                clock: Some((ahead, at)),
                ..
            }) = known.get(&id)
            {
                if at.elapsed() <= fresh {
                    out.push((id, *ahead));
                }
            }
        }
        out
    }

    /// Sets the gauges `/metrics` shows of Raft, the log, the state and the snapshot as they
    /// stand (counters and histograms are kept as things happen).
    pub fn record_metrics(&self) {
        use metrics::gauge;
        let m = self.raft.metrics().borrow().clone();
        let index = |l: Option<openraft::LogId<u64>>| l.map_or(0, |l| l.index) as f64;
        gauge!("basalt_raft_term").set(m.current_term as f64);
        gauge!("basalt_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
        gauge!("basalt_raft_is_leader").set(f64::from(u8::from(m.current_leader == Some(self.id))));
        gauge!("basalt_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
        gauge!("basalt_raft_applied_index").set(index(m.last_applied));
        gauge!("basalt_raft_apply_lag_entries").set(self.apply_backlog() as f64);
        gauge!("basalt_raft_snapshot_index").set(index(m.snapshot));
        gauge!("basalt_raft_purged_index").set(index(m.purged));
        let membership = m.membership_config.membership();
        gauge!("basalt_raft_voters").set(membership.voter_ids().count() as f64);
        gauge!("basalt_raft_members").set(membership.nodes().count() as f64);
        // Figures only a leader has are NaN elsewhere (not the last value it had as leader).
        gauge!("basalt_raft_quorum_ack_age_seconds").set(
            m.millis_since_quorum_ack
                .filter(|_| m.current_leader == Some(self.id))
                .map_or(f64::NAN, |ms| ms as f64 / 1000.0),
        );
        // On the leader: how far each follower's log trails its own.
        static LABELED: Mutex<std::collections::BTreeSet<u64>> =
            Mutex::new(std::collections::BTreeSet::new());
        let mut labeled = LABELED.lock().unwrap_or_else(|p| p.into_inner());
        let last = m.last_log_index.unwrap_or(0);
        let mut lags: BTreeMap<u64, f64> = labeled.iter().map(|p| (*p, f64::NAN)).collect();
        for (peer, matched) in m.replication.iter().flatten() {
            if *peer != self.id {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                lags.insert(*peer, lag as f64);
            }
        }
        for (peer, lag) in lags {
            labeled.insert(peer);
            gauge!("basalt_raft_replication_lag_entries", "peer" => peer.to_string()).set(lag);
        }
        for (name, v) in self.log.figures() {
            gauge!(format!("basalt_rocksdb_{name}"), "db" => "log").set(v as f64);
        }
        for (name, v) in self.engine.figures() {
            gauge!(format!("basalt_rocksdb_{name}"), "db" => "state").set(v as f64);
        }
        let snapshot_bytes: u64 = std::fs::read_dir(&self.snapshots_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum();
        gauge!("basalt_raft_snapshot_bytes").set(snapshot_bytes as f64);
    }

    /// Entries in this node's log that it has not applied yet.
    pub fn apply_backlog(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        last.saturating_sub(m.last_applied.map_or(0, |l| l.index))
    }

    /// Whether this node leads without a quorum's acknowledgement for two election timeouts
    /// (or ever): openraft keeps a leader cut off from its quorum leading until a newer term
    /// reaches it, but it can neither commit nor serve a linearizable read.
    pub fn leader_unconfirmed(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let most = 2 * self.timings.election_max.as_millis() as u64;
        m.current_leader == Some(self.id) && m.millis_since_quorum_ack.is_none_or(|ms| ms > most)
    }

    /// Whether this node is in the membership it knows (a voter or a learner).
    pub fn is_member(&self) -> bool {
        self.membership().get_node(&self.id).is_some()
    }

    /// Writes a probe file into the blob directory, reads it back and removes it.
    pub async fn probe_blob_dir(&self) -> std::io::Result<()> {
        let blobs = self.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.probe())
            .await
            .map_err(std::io::Error::other)?
    }

    pub(crate) fn blob_store(&self) -> Arc<BlobStore> {
        self.blobs.clone()
    }

    pub(crate) fn snapshots_dir(&self) -> &std::path::Path {
        &self.snapshots_dir
    }

    /// This node's certificate (DER), if it runs with TLS.
    pub fn certificate_der(&self) -> Option<Vec<u8>> {
        self.transport.tls().and_then(|t| t.cert_der())
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let zones = self.engine.cluster_zones().unwrap_or_default();
        let mut members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, info)| {
                let (applied, expires, rtt) = if *id == self.id {
                    (
                        m.last_applied.map(|l| l.index),
                        self.transport.tls().map(|t| t.cert().not_after),
                        None,
                    )
                } else {
                    let r = self
                        .peer_applied
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(id)
                        .copied()
                        .unwrap_or_default();
                    (r.applied, r.cert_expires, r.rtt)
                };
                MemberStatus {
                    id: *id,
                    http: info.http.clone(),
                    grpc: info.grpc.clone(),
                    region: info.region.clone(),
                    zone: zones.get(id).cloned(),
                    gossip: info.gossip.clone(),
                    role: if voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    },
                    applied,
                    lag: None,
                    rtt_ms: rtt.map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
                    cert_expires: expires.and_then(rfc3339),
                }
            })
            .collect();
        let ahead = members.iter().filter_map(|m| m.applied).max();
        for member in &mut members {
            member.lag = ahead
                .zip(member.applied)
                .map(|(a, mine)| a.saturating_sub(mine));
        }
        ClusterStatus {
            id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            state: format!("{:?}", m.state),
            members,
            placement: self.placement(),
        }
    }

    /// Resolves once the Raft core has stopped on a fatal error (a storage failure, a panic),
    /// with the error; never for a shutdown.
    pub async fn fatal(&self) -> String {
        let mut m = self.raft.metrics();
        loop {
            let state = m.borrow().running_state.clone();
            match state {
                Err(openraft::error::Fatal::Stopped) => return std::future::pending().await,
                Err(e) => return e.to_string(),
                Ok(()) => {}
            }
            if m.changed().await.is_err() {
                // The core is gone without saying why: not a shutdown we asked for.
                return "the Raft core's metrics channel closed".into();
            }
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub async fn shutdown(&self) {
        if let Some(tx) = self
            .stop_grpc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = tx.send(());
        }
        // Let requests from peers that are already in flight finish before the Raft core
        // stops under them (bounded: a peer that holds its connection open costs 2 s at most).
        let task = self
            .grpc_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::debug!("gRPC server still draining; stopping Raft anyway");
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        // The state machine's worker may still be applying an entry (on a blocking thread):
        // let it finish before the runtime goes (bounded: the entry is in the log either way).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.sm.applying() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn serve_grpc(
    server: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
) {
    if let Err(e) = server.await {
        tracing::error!(error = %e, "gRPC server stopped");
    }
}

/// Proposes envelopes as one log entry and waits for their outcomes.
async fn propose(
    raft: &Raft<TypeConfig>,
    envs: Vec<Envelope>,
) -> Result<Vec<Outcome>, ReplicationError> {
    raft.client_write(model::Batch(envs))
        .await
        .map(|resp| resp.data)
        .map_err(write_error)
}

fn new_request_id() -> RequestId {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    RequestId(u128::from_be_bytes(bytes))
}

fn rfc3339(unix_secs: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Epoch milliseconds from this node's clock (the leader's, when it proposes).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Group commit: proposals that queue up while earlier ones are being replicated go out
/// together as one log entry — one fsync per node — and each caller gets its own envelope's
/// outcome. Entries are bounded by count and bytes. Every envelope is stamped here with the
/// proposing leader's time (never below the last it stamped; apply also never lets `at` go
/// below what it applied before, across leaders).
async fn group_commit(
    raft: Raft<TypeConfig>,
    mut queue: tokio::sync::mpsc::Receiver<Proposal>,
    handover: Arc<crate::drill::Until>,
    in_flight: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut held: Option<Proposal> = None;
    let mut last_at = i64::MIN;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.1;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => {
                    if bytes + p.1 > MAX_BATCH_BYTES {
                        held = Some(p);
                        break;
                    }
                    bytes += p.1;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        // A leader handing the lead over proposes nothing meanwhile (each append would renew
        // its followers' leases); once it follows, these are passed on to the new leader.
        handover.passed().await;
        let at = wall_clock_ms().max(last_at);
        last_at = at;
        let raft = raft.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (mut envs, replies): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|(env, _, reply)| (env, reply))
                .unzip();
            for e in &mut envs {
                e.at = at;
            }
            let n = envs.len();
            metrics::histogram!("basalt_raft_batch_envelopes").record(n as f64);
            metrics::histogram!("basalt_raft_batch_bytes").record(bytes as f64);
            let started = std::time::Instant::now();
            let proposed = propose(&raft, envs).await;
            metrics::histogram!(
                "basalt_raft_commit_seconds",
                "outcome" => if proposed.is_ok() { "ok" } else { "error" }
            )
            .record(started.elapsed().as_secs_f64());
            match proposed {
                Ok(outcomes) if outcomes.len() == n => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Ok(other) => {
                    let e = Unavailable::OutcomeCount {
                        expected: n,
                        got: other.len(),
                    };
                    tracing::error!(error = %e, "group commit");
                    for reply in replies {
                        let _ = reply.send(Err(e.clone().into()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// How often a node checks that it holds every blob its state names.
const BLOB_REPAIR_EVERY: Duration = Duration::from_secs(10);

/// Keeps this node's blobs in step with its state (see `RaftNode::blob_upkeep_pass`): a
/// repair pass every `BLOB_REPAIR_EVERY`, with a sweep every few of them (never the first:
/// a node just started has yet to catch up).
async fn blob_upkeep(node: std::sync::Weak<RaftNode>) {
    let mut passes: u64 = 1;
    loop {
        tokio::time::sleep(BLOB_REPAIR_EVERY).await;
        let Some(n) = node.upgrade() else { return };
        let sweep_every = (n.blob_grace.as_secs() / 4 / BLOB_REPAIR_EVERY.as_secs()).clamp(1, 60);
        n.blob_upkeep_pass(passes > 1 && passes.is_multiple_of(sweep_every))
            .await;
        passes += 1;
    }
}

/// Left by `basalt restore` in the data dir it builds: the state there came from a backup,
/// not from this cluster's log.
pub const RESTORED: &str = "restored";

/// Starts a cluster from a restored backup. The restored data is in this node's state but in
/// no log entry: a node joining now would replay the log from its first entry and miss it. So
/// the state is put into a snapshot and the log before it purged; every node that joins from
/// then on installs that snapshot first. Joins wait meanwhile (`Unavailable::Seeding`). Done
/// again after a crash until the marker is gone.
async fn seed_restored(node: std::sync::Weak<RaftNode>, marker: PathBuf) {
    const WITHIN: Duration = Duration::from_secs(300);
    let Some(n) = node.upgrade() else { return };
    let leading = n
        .raft
        .wait(Some(WITHIN))
        .metrics(
            |m| m.current_leader == Some(m.id) && m.last_applied.is_some(),
            "leading",
        )
        .await;
    let result = async {
        leading.map_err(|e| e.to_string())?;
        let applied = n
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        n.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| e.to_string())?;
        n.raft
            .wait(Some(WITHIN))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot of the restored state",
            )
            .await
            .map_err(|e| e.to_string())?;
        let upto = n.raft.metrics().borrow().snapshot.map_or(0, |s| s.index);
        n.raft
            .trigger()
            .purge_log(upto)
            .await
            .map_err(|e| e.to_string())?;
        n.raft
            .wait(Some(WITHIN))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= upto),
                "log purged up to the snapshot",
            )
            .await
            .map_err(|e| e.to_string())?;
        std::fs::remove_file(&marker).map_err(|e| e.to_string())?;
        Ok::<u64, String>(upto)
    }
    .await;
    match result {
        Ok(upto) => {
            n.seeding.store(false, std::sync::atomic::Ordering::Release);
            tracing::info!(
                snapshot = upto,
                "restored state seeded: other nodes may join now"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "seeding the restored state failed; restart this node to try again")
        }
    }
}

/// While this node leads: when a quorum last acknowledged it, on the wall clock, for the
/// stamps its appends carry and its own bounded-staleness reads (`crate::closed`).
async fn track_quorum_acks(
    mut watch: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>,
    closed: Arc<crate::closed::Closed>,
    me: u64,
) {
    // Metrics are reported at some moment after the last look at them: the wall clock taken
    // just before that look is a lower bound on when they were reported, and so `floor - ms`
    // on when the quorum acknowledged (less a millisecond for `ms` being floored). The first
    // metrics seen may be older than that: they set nothing.
    let mut floor: Option<i64> = None;
    loop {
        let before = wall_clock_ms();
        let lead = {
            let m = watch.borrow_and_update();
            match (m.state, m.millis_since_quorum_ack, floor) {
                (ServerState::Leader, Some(ms), Some(floor)) if m.current_leader == Some(me) => {
                    Some(crate::closed::Lead {
                        term: m.current_term,
                        q: floor - ms as i64 - 1,
                        index: m.last_log_index.unwrap_or(0),
                    })
                }
                _ => None,
            }
        };
        closed.set_lead(lead);
        floor = Some(before);
        if watch.changed().await.is_err() {
            return;
        }
    }
}

/// Counts every change of the leader this node sees (`basalt_raft_leader_changes_total`),
/// a leader lost included, until Raft stops.
async fn count_leader_changes(
    mut watch: tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, NodeInfo>>,
) {
    let mut leader = watch.borrow().current_leader;
    while watch.changed().await.is_ok() {
        let now = watch.borrow().current_leader;
        if now != leader {
            metrics::counter!("basalt_raft_leader_changes_total").increment(1);
            leader = now;
        }
    }
}

/// The round trip of a call to `addr` over an open connection (the best of a few; the first
/// call, which opens it, is not counted), answered or refused; `None` if it never answers.
async fn measure_round_trip(addr: &str, transport: &Transport) -> Option<Duration> {
    let mut client = network::client(addr, Duration::from_secs(3), transport, None)?;
    let _ = client.ping(()).await;
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        // An answer (a refusal too: a joiner is no member yet); not a timeout or a failed
        // connection, which measure nothing.
        let answered = match client.ping(()).await {
            Ok(_) => true,
            Err(s) => matches!(
                s.code(),
                tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument
            ),
        };
        if answered {
            best = Some(best.map_or(t.elapsed(), |b| b.min(t.elapsed())));
        }
    }
    best
}

/// Asks every other member over gRPC how far it has applied, for `cluster status`. Health
/// comes from gossip (the `node` crate); this only informs status, never Raft.
async fn probe_peers(node: std::sync::Weak<RaftNode>) {
    let mut remembered: Option<Duration> = None;
    let mut warned = false;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(node) = node.upgrade() else { return };
        node.remember_round_trip(&mut remembered, &mut warned);
        let members = node.peers();
        node.peer_applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| members.iter().any(|(m, _)| m == id));
        for (id, info) in members {
            let Ok(mut client) = node.peer(id, &info.grpc) else {
                continue;
            };
            let known = node.peer_applied.clone();
            tokio::spawn(async move {
                let (asked, sent) = (std::time::Instant::now(), wall_clock_ms());
                if let Ok(Ok(r)) = tokio::time::timeout(PROBE_EVERY * 2, client.ping(())).await {
                    let (peer, applied, cert_expires, clock) = r.into_inner();
                    let rtt = asked.elapsed();
                    let half_trip = rtt.as_millis() as i64 / 2;
                    if peer == id {
                        let ahead = clock - (sent + half_trip);
                        let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                        // Smoothed, so one slow answer does not stand for the link.
                        let smooth = known
                            .get(&id)
                            .and_then(|r| r.smooth_rtt)
                            .map_or(rtt, |old| old.mul_f64(0.8) + rtt.mul_f64(0.2));
                        known.insert(
                            id,
                            PeerReport {
                                applied,
                                cert_expires,
                                clock: Some((ahead, std::time::Instant::now())),
                                rtt: Some(rtt),
                                smooth_rtt: Some(smooth),
                            },
                        );
                    }
                }
            });
        }
    }
}

/// Every node, for as long as it runs: campaigns for the lead only where the placement policy
/// prefers it (while a preferred voter is healthy); a leader outside the preferred region hands
/// the lead over to a healthy, caught-up preferred voter; the leader reconciles the voters
/// with the policy.
///
/// A hand-over: openraft 0.9 has no leader transfer, and a follower refuses to vote while its
/// leader's lease runs. So the leader sends nothing for a moment: no heartbeats, no proposals
/// (`group_commit` holds them), no leadership confirmations (`read_index_local` waits). Its
/// followers' leases run out, the preferred voter's election timer fires (the others do not
/// campaign), and it wins, its log being caught up. Writes and reads wait meanwhile, as in any
/// election, then go to the new leader; a hand-over that does not move the lead ends by itself
/// after three election timeouts (the preferred voter campaigns within two of the last
/// heartbeat), and is tried again later and later while they keep failing.
async fn keep_placement(node: std::sync::Weak<RaftNode>) {
    use crate::placement::{preferred, should_campaign};
    use std::time::Instant;
    let mut leaderless_since: Option<Instant> = None;
    let mut leading_since: Option<Instant> = None;
    let mut last_handover: Option<Instant> = None;
    let mut handovers_failed = 0u32;
    let mut last_reconcile = Instant::now();
    let mut campaigning = true;
    let mut handing_over = false;
    loop {
        // During a hand-over, often: writes wait for it to end.
        let pause = if handing_over {
            Duration::from_millis(20)
        } else {
            PLACEMENT_EVERY
        };
        tokio::time::sleep(pause).await;
        let Some(node) = node.upgrade() else { return };
        let m = node.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let Some(me) = membership.get_node(&node.id) else {
            continue;
        };
        let policy = node.placement();
        let now = Instant::now();
        // Leaderless: no leader known, or the one known answers no probe (a node that does not
        // campaign keeps naming a dead leader: only an election would tell it otherwise).
        let led = m
            .current_leader
            .is_some_and(|l| l == node.id || node.healthy(l));
        if led {
            leaderless_since = None;
        } else {
            leaderless_since.get_or_insert(now);
        }
        let preferred_voters: Vec<u64> = membership
            .voter_ids()
            .filter(|v| *v != node.id)
            .filter(|v| {
                membership
                    .get_node(v)
                    .is_some_and(|n| preferred(&policy, &n.region))
            })
            .collect();
        let preferred_healthy = preferred_voters.iter().any(|v| node.healthy(*v));
        // Leaderless for this long: the preferred voters evidently cannot win; anyone may.
        let grace = (node.timings.election_max + node.timings.election_max) * 3;
        let too_long = leaderless_since.is_some_and(|t| now - t > grace);
        let campaign = should_campaign(&policy, &me.region, preferred_healthy, too_long);
        if campaign != campaigning {
            tracing::info!(
                campaign,
                region = %me.region,
                "placement: {} for the lead",
                if campaign { "campaigning" } else { "not campaigning" }
            );
            node.raft.runtime_config().elect(campaign);
            campaigning = campaign;
        }
        if handing_over && !(node.handover.active() && m.current_leader == Some(node.id)) {
            // Over: the lead moved, or it did not in time. Heartbeats again (a follower's
            // setting is its setting when it next leads).
            if m.current_leader == Some(node.id) {
                handovers_failed = (handovers_failed + 1).min(5);
                tracing::warn!(
                    failed = handovers_failed,
                    "placement: the preferred region did not take the lead; trying again later"
                );
            } else {
                handovers_failed = 0;
            }
            node.handover.clear();
            node.raft.runtime_config().heartbeat(true);
            handing_over = false;
        }
        if m.current_leader != Some(node.id) {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert(now);
        if handing_over {
            continue;
        }
        if !preferred(&policy, &me.region)
            && now - since >= HANDOVER_AFTER
            && last_handover.is_none_or(|t| now - t >= HANDOVER_RETRY * (1 << handovers_failed))
        {
            let ready = preferred_voters.iter().find(|v| {
                node.healthy(**v)
                    && RaftNode::replication_lag(&m, **v).is_some_and(|lag| lag <= CAUGHT_UP)
            });
            if let Some(to) = ready {
                tracing::info!(to, region = %me.region, "placement: handing the lead over to the preferred region");
                node.raft.runtime_config().heartbeat(false);
                node.handover.set(node.timings.election_max * 3);
                handing_over = true;
                last_handover = Some(now);
                continue;
            }
        }
        if now - last_reconcile >= RECONCILE_EVERY && !node.leader_unconfirmed() {
            last_reconcile = now;
            if let Err(e) = node.reconcile_placement(None).await {
                tracing::warn!(error = %e, "placement: the voters could not be changed yet");
            }
        }
    }
}

/// How a failed proposal or membership change reads to callers.
fn write_error(e: RaftError<u64, ClientWriteError<u64, NodeInfo>>) -> ReplicationError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ReplicationError::NotLeader {
            leader: f.leader_id,
        },
        other => Unavailable::Raft(other.to_string()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::RaftTimings;
    use std::time::Duration;

    #[test]
    fn timings_stretch_with_the_round_trip_and_never_shrink() {
        let one_region = RaftTimings::default();
        let near = one_region.clone().for_round_trip(Duration::from_millis(1));
        assert_eq!(near.heartbeat, one_region.heartbeat);
        assert_eq!(near.election_max, one_region.election_max);
        let far = one_region.for_round_trip(Duration::from_millis(150));
        // An append (a round trip and an fsync) fits in a heartbeat interval twice over.
        assert!(far.heartbeat >= Duration::from_millis(350), "{far:?}");
        assert!(far.election_min > far.heartbeat + Duration::from_millis(150 * 2 - 1));
        assert!(far.election_max > far.election_min);
    }
}
