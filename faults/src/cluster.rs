//! N real nodes forming one Raft group: node 1 bootstraps it, the others join through it.
//! With `netns`, each node runs on a host of its own [`Net`] (fixed ports on its own
//! address), so the network between them can be cut; without, all run on 127.0.0.1.

use crate::lazyfs::LazyFs;
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
    /// One-way delays (ms) between hosts `(a, b)` (indexes from 0), set before any node
    /// starts (with `netns`): nodes far apart from the start, as in a cluster across regions.
    pub link_delays: Vec<(usize, usize, u64)>,
    /// Put every node's data dir on a lazy file system (`lazyfs`), for lost un-fsynced
    /// writes.
    pub lazyfs: bool,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    pub net: Option<Net>,
    pub opts: ClusterOptions,
    http: reqwest::Client,
    /// Nodes removed from the membership (stopped; their host waits for a new node).
    retired: std::collections::BTreeSet<u64>,
    /// The id the next added node gets.
    next_id: u64,
    /// Nodes replaced by `add_member` (kept for their logs and exits).
    pub former: Vec<Node>,
    /// Each node's lazy file system, by node id (with `lazyfs`). Declared after the nodes:
    /// a file system is unmounted only once its node has stopped.
    disks: std::collections::BTreeMap<u64, LazyFs>,
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
            for (a, b, ms) in &opts.link_delays {
                net.delay_link(*a, *b, *ms, 0)?;
            }
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
        let next_id = opts.nodes as u64 + 1;
        let mut disks = std::collections::BTreeMap::new();
        if opts.lazyfs {
            for id in 1..=opts.nodes as u64 {
                disks.insert(id, mount_disk(&opts.dir, id)?);
            }
        }
        let mut c = Cluster {
            disks,
            retired: Default::default(),
            next_id,
            former: Vec::new(),
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

    /// Bytes of writes the lazy file systems dropped, never fsynced, over the run.
    pub fn unsynced_bytes_lost(&self) -> u64 {
        self.disks.values().map(LazyFs::lost_bytes).sum()
    }

    /// Node `id`'s lazy file system (`lazyfs`).
    pub fn disk(&self, id: u64) -> Result<&LazyFs> {
        self.disks
            .get(&id)
            .ok_or_else(|| anyhow!("node {id} has no lazy file system (start with lazyfs)"))
    }

    pub fn node(&mut self, id: u64) -> Result<&mut Node> {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// Node `id`'s slot: its index in `nodes`, and its host's in the network.
    pub fn slot(&self, id: u64) -> Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.id() == id)
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// The members' ids (not the removed ones).
    pub fn ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.id())
            .filter(|id| !self.retired.contains(id))
            .collect()
    }

    /// The id a node added now would get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Whether node `id` was removed from the membership.
    pub fn is_retired(&self, id: u64) -> bool {
        self.retired.contains(&id)
    }

    /// Removes node `id` from the membership (`cluster remove`, through another member,
    /// retried while the cluster cannot answer), then stops it. Its host stays free for
    /// `add_member`.
    pub async fn remove_member(&mut self, id: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let via: Vec<String> = self
                .nodes
                .iter_mut()
                .filter(|n| n.id() != id && !self.retired.contains(&n.id()))
                .filter_map(|n| n.up().then(|| n.url.clone()))
                .collect();
            let mut last = anyhow!("no member to ask");
            for url in via {
                let res = self
                    .http
                    .post(format!("{url}/v1/cluster/remove"))
                    .header("x-appwrite-project", "console")
                    .header("x-appwrite-key", &self.opts.root_key)
                    .json(&json!({ "nodeId": id }))
                    .send()
                    .await;
                let done = match res {
                    Ok(r) if r.status().is_success() => true,
                    Ok(r) => {
                        let refused = r.status().is_client_error();
                        last = anyhow!(
                            "removing node {id}: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        // A retry after a lost answer finds it already gone: done.
                        refused
                            && self
                                .operator(reqwest::Method::GET, &url, "/cluster/status", json!({}))
                                .await
                                .is_ok_and(|s| {
                                    s["members"]
                                        .as_array()
                                        .is_some_and(|m| m.iter().all(|m| m["id"] != id))
                                })
                    }
                    Err(e) => {
                        last = anyhow!("removing node {id}: {e}");
                        false
                    }
                };
                if done {
                    self.retired.insert(id);
                    let n = self.node(id)?;
                    if n.alive() {
                        n.stop(Duration::from_secs(20))?;
                    }
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Starts a fresh node (new id `new_id`, empty data dir) on the host of removed node
    /// `host_of`, joining through a member, and waits until it is a voter.
    pub async fn add_member(&mut self, host_of: u64, new_id: u64) -> Result<()> {
        let slot = self
            .nodes
            .iter()
            .position(|n| n.id() == host_of)
            .ok_or_else(|| anyhow!("no node {host_of}"))?;
        if !self.retired.contains(&host_of) {
            bail!("node {host_of} is still a member");
        }
        let seed = self
            .nodes
            .iter_mut()
            .filter(|n| !self.retired.contains(&n.id()))
            .find_map(|n| n.up().then(|| n.cfg.grpc.clone()))
            .ok_or_else(|| anyhow!("no member to join through"))?;
        // Once a node has been removed, the root key no longer admits new ones (the removed
        // node knows it): a fresh node joins with a one-time token, as an operator would.
        let member_url = self
            .nodes
            .iter_mut()
            .filter(|n| !self.retired.contains(&n.id()))
            .find_map(|n| n.up().then(|| n.url.clone()))
            .ok_or_else(|| anyhow!("no member to ask for a join token"))?;
        let token = self
            .operator(
                reqwest::Method::POST,
                &member_url,
                "/cluster/join-token",
                json!({ "ttl": 600 }),
            )
            .await?["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no join token in the answer"))?;
        let mut cfg = self.nodes[slot].cfg.clone();
        cfg.id = new_id;
        cfg.root_key = String::new();
        cfg.data_dir = self.opts.dir.join(format!("node{new_id}"));
        if let Some(f) = &mut cfg.clock_file {
            *f = self.opts.dir.join(format!("node{new_id}.clock"));
        }
        if let Some(f) = &mut cfg.fiu {
            *f = self.opts.dir.join(format!("node{new_id}.fiu"));
        }
        if self.opts.lazyfs {
            self.disks
                .insert(new_id, mount_disk(&self.opts.dir, new_id)?);
        }
        let mut fresh = Node::new(cfg);
        fresh
            .start(
                &["--join".into(), seed, "--join-token".into(), token],
                START_TIMEOUT,
            )
            .await?;
        // The removed node's record stays (its logs, its exits); the slot is the new node's.
        let old = std::mem::replace(&mut self.nodes[slot], fresh);
        self.former.push(old);
        self.next_id = self.next_id.max(new_id + 1);
        let ids = self.ids();
        self.wait_for_voters(&ids, START_TIMEOUT).await
    }

    /// The HTTP base URLs by node id (`http://ip:port`).
    pub fn urls(&self) -> Vec<(u64, String)> {
        self.nodes.iter().map(|n| (n.id(), n.url.clone())).collect()
    }

    /// An operator call (root key) to the node at `url`; a non-2xx answer is an error.
    async fn operator(
        &self,
        method: reqwest::Method,
        url: &str,
        path: &str,
        body: Value,
    ) -> Result<Value> {
        let res = self
            .http
            .request(method, format!("{url}/v1{path}"))
            .header("x-appwrite-project", "console")
            .header("x-appwrite-key", &self.opts.root_key)
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }

    /// `/v1/cluster/status` as node `id` sees it.
    pub async fn status(&self, id: u64) -> Result<Value> {
        let url = self.url_of(id)?;
        self.operator(reqwest::Method::GET, &url, "/cluster/status", json!({}))
            .await
    }

    fn url_of(&self, id: u64) -> Result<String> {
        self.nodes
            .iter()
            .find(|n| n.id() == id)
            .map(|n| n.url.clone())
            .ok_or_else(|| anyhow!("no node {id}"))
    }

    /// The nodes running and not paused (those that may answer).
    fn up_ids(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.up().then_some(n.id()))
            .collect()
    }

    /// The leader some running node knows of, if any.
    pub async fn leader(&mut self) -> Option<u64> {
        let up = self.up_ids();
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
            let up = self.up_ids();
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
            let up = self.up_ids();
            for id in up {
                let url = self.url_of(id)?;
                match self
                    .operator(reqwest::Method::POST, &url, "/cluster/check", json!({}))
                    .await
                {
                    Ok(r) => {
                        let complete = r["digests"]
                            .as_object()
                            .is_some_and(|d| d.len() == self.ids().len());
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
            .chain(self.former.iter_mut())
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

/// Node `id`'s data dir on a lazy file system, its contents kept in `node<id>.disk`.
fn mount_disk(dir: &std::path::Path, id: u64) -> Result<LazyFs> {
    LazyFs::mount(
        &dir.join(format!("node{id}.disk")),
        &dir.join(format!("node{id}")),
    )
}
