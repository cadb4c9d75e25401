//! N real nodes forming one Raft group: node 1 bootstraps it, the others join through it.
//! With `netns`, each node runs on a host of its own [`Net`] (fixed ports on its own
//! address), so the network between them can be cut; without, all run on 127.0.0.1.

use crate::net::Net;
use crate::node::{Node, NodeConfig};
use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub binary: PathBuf,
    /// Data dirs and logs go under it.
    pub dir: PathBuf,
    /// A network namespace per node (root only), for partitions and packet loss.
    pub netns: bool,
    /// Start every node under libfaketime, for clock skew.
    pub clock: bool,
    pub root_key: String,
    /// `serve` flags for every node.
    pub args: Vec<String>,
    /// Extra environment by node id.
    pub env: Vec<(u64, String, String)>,
    /// Each node's `--region` (node i gets `regions[i - 1]`); empty: the default region.
    pub regions: Vec<String>,
    /// Start every node under libfiu, for disk faults.
    pub disk: bool,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub net: Option<Net>,
    pub opts: ClusterOptions,
    http: reqwest::Client,
}

/// Node-to-node gRPC's port on a namespaced host (the delay proxies sit on it).
pub const GRPC_PORT: u16 = 9080;

/// How long a node has to come up (RocksDB open, log replay).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

impl Cluster {
    pub async fn start(opts: ClusterOptions) -> Result<Cluster> {
        let net = if opts.netns {
            let mut net = Net::create(opts.nodes)?;
            net.proxy_links(GRPC_PORT).await?;
            Some(net)
        } else {
            None
        };
        let nodes = (1..=opts.nodes as u64)
            .map(|id| {
                let host = net.as_ref().map(|n| &n.hosts[id as usize - 1]);
                Node::new(NodeConfig {
                    id,
                    binary: opts.binary.clone(),
                    data_dir: opts.dir.join(format!("node{id}")),
                    log_dir: opts.dir.join("logs"),
                    netns: host.map(|h| h.netns.clone()),
                    http: host.map_or("127.0.0.1:0".into(), |h| format!("{}:8080", h.ip)),
                    grpc: host.map_or("127.0.0.1:0".into(), |h| format!("{}:{GRPC_PORT}", h.ip)),
                    root_key: opts.root_key.clone(),
                    args: opts
                        .args
                        .iter()
                        .cloned()
                        .chain(
                            opts.regions
                                .get(id as usize - 1)
                                .map(|r| ["--region".to_string(), r.clone()])
                                .into_iter()
                                .flatten(),
                        )
                        .collect(),
                    clock_file: opts.clock.then(|| opts.dir.join(format!("node{id}.clock"))),
                    fiu: opts.disk.then(|| opts.dir.join(format!("node{id}.fiu"))),
                    env: opts
                        .env
                        .iter()
                        .filter(|(n, _, _)| *n == id)
                        .map(|(_, k, v)| (k.clone(), v.clone()))
                        .collect(),
                })
            })
            .collect();
        let mut c = Cluster {
            nodes,
            net,
            opts,
            // `cluster check` waits up to 30 s for each member's digest.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(40))
                .no_proxy()
                .build()?,
        };
        c.nodes[0].start(&[], START_TIMEOUT).await?;
        let seed = c.nodes[0].cfg.grpc.clone();
        for n in c.nodes.iter_mut().skip(1) {
            n.start(&["--join".into(), seed.clone()], START_TIMEOUT)
                .await?;
        }
        let ids: Vec<u64> = c.nodes.iter().map(|n| n.id()).collect();
        c.wait_for_voters(&ids, START_TIMEOUT).await?;
        Ok(c)
    }

    pub fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id()).collect()
    }

    /// The HTTP base URLs by node id (`http://ip:port`).
    pub fn urls(&self) -> Vec<(u64, String)> {
        self.nodes.iter().map(|n| (n.id(), n.url.clone())).collect()
    }

    async fn operator(&self, method: reqwest::Method, url: &str, path: &str) -> Result<Value> {
        let res = self
            .http
            .request(method, format!("{url}/v1{path}"))
            .header("x-appwrite-project", "console")
            .header("x-appwrite-key", &self.opts.root_key)
            .json(&json!({}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() && status.as_u16() != 409 {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// `/v1/cluster/status` as node `id` sees it.
    pub async fn status(&self, id: u64) -> Result<Value> {
        let url = self.url_of(id)?;
        self.operator(reqwest::Method::GET, &url, "/cluster/status")
            .await
    }

    fn url_of(&self, id: u64) -> Result<String> {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .map(|n| n.url.clone())
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// The leader some running node knows of, if any.
    pub async fn leader(&mut self) -> Option<u64> {
        let up: Vec<u64> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.up().then_some(n.id()))
            .collect();
        for id in up {
            if let Ok(s) = self.status(id).await {
                if let Some(l) = s["leader"].as_u64() {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Waits until every running node sees exactly `ids` as voters and knows a leader.
    pub async fn wait_for_voters(&mut self, ids: &[u64], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut want = ids.to_vec();
        want.sort();
        loop {
            let up: Vec<u64> = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.up().then_some(n.id()))
                .collect();
            let mut all = true;
            for id in &up {
                let ok = match self.status(*id).await {
                    Ok(s) => {
                        let mut voters: Vec<u64> = s["members"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|m| m["role"] == "voter")
                            .filter_map(|m| m["id"].as_u64())
                            .collect();
                        voters.sort();
                        voters == want && !s["leader"].is_null()
                    }
                    Err(_) => false,
                };
                all &= ok;
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("voters never became {want:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `cluster check` through the first node that answers: every replica's digest at one
    /// applied index. Retried until it is complete and consistent or `timeout` passes (a
    /// member still catching up is not a verdict); returns the last report.
    pub async fn check(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Err(anyhow!("no node answered"));
        loop {
            let up: Vec<u64> = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.up().then_some(n.id()))
                .collect();
            for id in up {
                let url = self.url_of(id)?;
                match self
                    .operator(reqwest::Method::POST, &url, "/cluster/check")
                    .await
                {
                    Ok(r) => {
                        let complete = r["digests"]
                            .as_object()
                            .is_some_and(|d| d.len() == self.nodes.len());
                        if r["consistent"] == true && complete {
                            return Ok(r);
                        }
                        last = Ok(r);
                        break;
                    }
                    Err(e) => last = Err(e),
                }
            }
            if Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Creates a project and an API key with `scopes`; returns the key's secret.
    pub async fn create_project(&self, id: &str, scopes: &[&str]) -> Result<String> {
        let url = self.nodes[0].url.clone();
        let post = |path: String, body: Value| {
            self.http
                .post(format!("{url}/v1{path}"))
                .header("x-appwrite-project", "console")
                .header("x-appwrite-key", &self.opts.root_key)
                .json(&body)
                .send()
        };
        let r = post("/projects".into(), json!({"projectId": id, "name": id})).await?;
        if !r.status().is_success() {
            bail!("creating project {id}: {}", r.text().await?);
        }
        let r = post(
            format!("/projects/{id}/keys"),
            json!({"name": "faults", "scopes": scopes}),
        )
        .await?;
        let key: Value = r.json().await?;
        key["secret"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("creating a key: {key}"))
    }

    /// Every time a node ended by itself (not by `kill` or `stop`): (node, how).
    pub fn unexpected_exits(&mut self) -> Vec<(u64, String)> {
        self.nodes
            .iter_mut()
            .flat_map(|n| {
                n.alive();
                let id = n.id();
                n.exits
                    .iter()
                    .filter(|(_, expected)| !expected)
                    .map(move |(e, _)| (id, e.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// SIGTERM to every node (resumed first if paused).
    pub fn shutdown(&mut self) {
        for n in &mut self.nodes {
            if n.alive() {
                let _ = n.stop(Duration::from_secs(20));
            }
        }
    }
}
