//! `node::run`: the start-up sequence — identity → storage and Raft → HTTP API — and the
//! handle that stops it all.

use crate::backend::NodeBackend;
use crate::config::{self, ServeConfig};
use crate::gossip::{Gossip, GossipConfig, MemberlistGossip, Peers};
use anyhow::{Context, Result};
use raft::{NodeConfig, NodeInfo, RaftNode, RaftTimings};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct NodeHandle {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    node: Arc<RaftNode>,
    gossip: Arc<dyn Gossip>,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: Option<JoinHandle<()>>,
}

impl NodeHandle {
    /// Resolves if the Raft core stops on a fatal error (not a shutdown), with the error.
    pub async fn fatal(&self) -> String {
        self.node.fatal().await
    }

    /// Stops accepting requests, drains the HTTP server, then stops Raft and the gRPC server.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop_http.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.http_task.take() {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("HTTP server did not drain within 10s");
            }
        }
        // Each step is bounded: a shutdown never hangs the process (what is acknowledged is
        // already durable; the log and state are fsynced as they are written).
        if tokio::time::timeout(Duration::from_secs(5), self.gossip.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("gossip did not stop within 5s");
        }
        if tokio::time::timeout(Duration::from_secs(10), self.node.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("Raft did not stop within 10s");
        }
        tracing::info!("node stopped");
    }
}

pub async fn run(cfg: ServeConfig) -> Result<NodeHandle> {
    // Before anything reports a figure.
    crate::telemetry::install();
    anyhow::ensure!(
        cfg.zone.is_empty() || model::schema::valid_region(&cfg.zone),
        "--zone {:?} is not a zone name: 1-64 of a-z, A-Z, 0-9, '.', '_' and '-'",
        cfg.zone
    );
    let (identity, fresh) = config::identity(&cfg)?;
    tracing::info!(node_id = identity.node_id, region = %identity.region, data_dir = %cfg.data_dir.display(), fresh, "starting node");
    let secured = crate::security::prepare(&cfg, identity.node_id).await?;

    let grpc_listener = TcpListener::bind(cfg.grpc)
        .await
        .with_context(|| format!("binding gRPC {}", cfg.grpc))?;
    let grpc = grpc_listener.local_addr()?;
    let http_listener = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding HTTP {}", cfg.http))?;
    let http = http_listener.local_addr()?;
    let http_url = cfg
        .advertise_http
        .clone()
        .unwrap_or_else(|| format!("http://{http}"));

    // Gossip starts first: its address goes into this node's Raft membership record, and the
    // peers it watches are the Raft members (known once Raft is up).
    let raft_node: Arc<OnceLock<Weak<RaftNode>>> = Arc::default();
    let gossip = MemberlistGossip::start(
        GossipConfig {
            id: identity.node_id,
            bind: cfg.gossip,
            advertise: cfg.advertise_gossip,
            region: identity.region.clone(),
            http: http_url.clone(),
            key: secured.gossip_key,
        },
        gossip_peers(raft_node.clone()),
    )
    .await?;
    let info = NodeInfo {
        grpc: cfg
            .advertise_grpc
            .clone()
            .unwrap_or_else(|| grpc.to_string()),
        http: http_url,
        region: identity.region.clone(),
        gossip: gossip.address().to_string(),
    };

    // Realtime: apply feeds this node's hub, which serves its WebSocket subscribers.
    let hub = api::realtime::Hub::start();
    tracing::info!(%grpc, "opening storage and starting raft");
    let node = RaftNode::start(NodeConfig {
        id: identity.node_id,
        data_dir: cfg.data_dir.clone(),
        info: info.clone(),
        grpc_listener,
        timings: RaftTimings {
            snapshot_logs: cfg.snapshot_every,
            keep_logs: (cfg.snapshot_every / 5).max(10),
            ..RaftTimings::default()
        },
        bootstrap: cfg.join.is_empty(),
        measure: cfg.join.clone(),
        round_trip: cfg.round_trip,
        scan_budget: cfg.scan_budget,
        transport: secured.transport.clone(),
        root_key_sha256: secured.root_key_sha256.clone(),
        cert_ttl: cfg.cert_ttl,
        peers: secured.peers.clone(),
        feed: Some(hub.clone()),
        blob_grace: cfg.blob_grace,
    })
    .await?;
    let _ = raft_node.set(Arc::downgrade(&node));
    hub.attach(Arc::new(crate::backend::Applied(Arc::downgrade(&node))));
    if !cfg.join.is_empty() && !node.is_initialized().await {
        tracing::info!(seeds = ?cfg.join, "asking the cluster to add this node");
        let (joiner, seeds) = (node.clone(), cfg.join.clone());
        tokio::spawn(async move { joiner.join_cluster(seeds, info).await });
    } else {
        if !cfg.join.is_empty() {
            tracing::info!("already a member: --join is ignored on restart");
        }
        let (announcer, info) = (node.clone(), info.clone());
        tokio::spawn(async move { announcer.announce_addresses(info).await });
    }
    tokio::spawn(RaftNode::record_zone(
        Arc::downgrade(&node),
        cfg.zone.clone(),
    ));
    tokio::spawn(crate::jobs::run(Arc::downgrade(&node)));
    tokio::spawn(crate::mail::run(Arc::downgrade(&node), cfg.smtp.clone()));
    tokio::spawn(RaftNode::admit_self(Arc::downgrade(&node)));
    tokio::spawn(RaftNode::renew_certificates(Arc::downgrade(&node)));
    if node.wait_for_leader(Duration::from_secs(10)).await {
        tracing::info!(leader = ?node.status().leader, "raft ready");
    } else {
        tracing::warn!("no leader yet; API calls answer 503 until one is elected");
    }

    let gossip: Arc<dyn Gossip> = gossip;
    let backend = Arc::new(NodeBackend {
        node: node.clone(),
        gossip: gossip.clone(),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let limits = cfg.limits.clone();
    let mail = api::MailSettings {
        enabled: cfg.smtp.is_some(),
        public_url: cfg.public_url.clone(),
    };
    let http_task = tokio::spawn(async move {
        let res = api::serve(http_listener, backend, hub, limits, mail, async {
            let _ = stop_rx.await;
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let endpoint = serde_json::json!({ "http": format!("http://{http}"), "grpc": grpc.to_string(), "gossip": gossip.address().to_string(), "node_id": identity.node_id });
    std::fs::write(cfg.data_dir.join("endpoint.json"), endpoint.to_string())
        .context("writing endpoint.json")?;
    println!(
        "{}",
        serde_json::json!({ "event": "listening", "http": format!("http://{http}"), "grpc": grpc.to_string() })
    );
    tracing::info!(%http, "serving the API under /v1");
    Ok(NodeHandle {
        http,
        grpc,
        node,
        gossip,
        stop_http: Some(stop_tx),
        http_task: Some(http_task),
    })
}

/// The peers gossip should watch: every other Raft member that records a gossip address.
fn gossip_peers(node: Arc<OnceLock<Weak<RaftNode>>>) -> Peers {
    Arc::new(move || {
        let Some(node) = node.get().and_then(Weak::upgrade) else {
            return Vec::new();
        };
        node.peers()
            .into_iter()
            .filter_map(|(id, info)| Some((id, info.gossip.parse().ok()?)))
            .collect()
    })
}
