//! `node::run`: the start-up sequence — identity → storage and Raft → HTTP API — and the
//! handle that stops it all.

use crate::backend::NodeBackend;
use crate::config::{self, ServeConfig};
use anyhow::{Context, Result};
use raft::{NodeConfig, NodeInfo, RaftNode, RaftTimings};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct NodeHandle {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    node: Arc<RaftNode>,
    stop_http: Option<oneshot::Sender<()>>,
    http_task: Option<JoinHandle<()>>,
}

impl NodeHandle {
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
        self.node.shutdown().await;
        tracing::info!("node stopped");
    }
}

pub async fn run(cfg: ServeConfig) -> Result<NodeHandle> {
    let (identity, fresh) = config::identity(&cfg)?;
    tracing::info!(node_id = identity.node_id, region = %identity.region, data_dir = %cfg.data_dir.display(), fresh, "starting node");
    let root_key = config::root_key(&cfg)?;

    let grpc_listener = TcpListener::bind(cfg.grpc)
        .await
        .with_context(|| format!("binding gRPC {}", cfg.grpc))?;
    let grpc = grpc_listener.local_addr()?;
    let http_listener = TcpListener::bind(cfg.http)
        .await
        .with_context(|| format!("binding HTTP {}", cfg.http))?;
    let http = http_listener.local_addr()?;
    let info = NodeInfo {
        grpc: cfg
            .advertise_grpc
            .clone()
            .unwrap_or_else(|| grpc.to_string()),
        http: cfg
            .advertise_http
            .clone()
            .unwrap_or_else(|| format!("http://{http}")),
        region: identity.region.clone(),
    };

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
    })
    .await
    .map_err(anyhow::Error::msg)?;
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
    if node.wait_for_leader(Duration::from_secs(10)).await {
        tracing::info!(leader = ?node.status().leader, "raft ready");
    } else {
        tracing::warn!("no leader yet; API calls answer 503 until one is elected");
    }

    let backend = Arc::new(NodeBackend {
        node: node.clone(),
        root_key_sha256: api_root_sha(&root_key),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let http_task = tokio::spawn(async move {
        let res = api::serve(http_listener, backend, async {
            let _ = stop_rx.await;
        })
        .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let endpoint = serde_json::json!({ "http": format!("http://{http}"), "grpc": grpc.to_string(), "node_id": identity.node_id });
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
        stop_http: Some(stop_tx),
        http_task: Some(http_task),
    })
}

fn api_root_sha(key: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(key.as_bytes()))
}
