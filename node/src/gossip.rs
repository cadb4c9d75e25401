//! Gossip: which peers this node can hear right now, from the SWIM protocol of the
//! `memberlist` crate.
//!
//! Raft stays the only source of truth for membership and data. Gossip only informs: it gives
//! `cluster status` each member's health and carries each node's region and HTTP address for
//! later routing and placement. The peers to gossip with come from the Raft membership (every
//! member records its gossip address there), so a node that joined Raft is found by gossip
//! without further configuration, and one that restarts on a new port is found again.
//!
//! memberlist has one maintainer and few users, so it stays behind the small [`Gossip`] trait;
//! nothing outside this file names its types.

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use memberlist::delegate::{CompositeDelegate, NodeDelegate, VoidDelegate};
use memberlist::net::{stream_layer::tcp::Tcp, NetTransport, NetTransportOptions};
use memberlist::proto::{EncryptionAlgorithm, Label, MaybeResolvedAddress, Meta, SecretKey};
use memberlist::tokio::{TokioRuntime, TokioSocketAddrResolver};
use memberlist::{Memberlist, Options};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How this node hears a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Gossip lists it online and it answers direct pings.
    Alive,
    /// Gossip still lists it online but it stopped answering pings, or it has not been heard
    /// from yet.
    Suspect,
    /// Gossip declared it dead (or it left), or it has never been heard from.
    Dead,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Alive => "alive",
            Health::Suspect => "suspect",
            Health::Dead => "dead",
        }
    }
}

/// The peers that should be in the gossip group: Raft members other than this node, with
/// the gossip address the membership records for them.
pub type Peers = Arc<dyn Fn() -> Vec<(u64, SocketAddr)> + Send + Sync>;

/// What the rest of the node needs from gossip.
pub trait Gossip: Send + Sync {
    /// Where peers reach this node's gossip (TCP and UDP).
    fn address(&self) -> SocketAddr;
    /// How this node hears `id` right now.
    fn health(&self, id: u64) -> Health;
    /// Tells the group this node leaves, then stops gossiping.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

pub struct GossipConfig {
    pub id: u64,
    pub bind: SocketAddr,
    /// The address to announce, if not the bound one.
    pub advertise: Option<SocketAddr>,
    pub region: String,
    pub http: String,
    /// The cluster's gossip key: every packet and stream is sealed with it (AES-256-GCM, the
    /// label as associated data), and anything not sealed with it is dropped. `None` only with
    /// `--insecure`.
    pub key: Option<[u8; 32]>,
}

/// Every Basalt gossip message carries this label; another label's traffic is dropped.
const LABEL: &str = "basalt";

/// How often the view is refreshed, each online peer pinged, and a missing peer contacted.
const TICK: Duration = Duration::from_millis(250);
const PING_EVERY: Duration = Duration::from_millis(500);
const REJOIN_EVERY: Duration = Duration::from_secs(1);
/// Silence (no answered ping) after which an online peer is suspect.
const SUSPECT_AFTER: Duration = Duration::from_millis(1500);
/// How long a peer gossip has never listed stays suspect (it may still be starting) before
/// it counts as dead.
const UNHEARD_GRACE: Duration = Duration::from_secs(5);

/// What memberlist says of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    Online,
    DeadOrLeft,
    Absent,
}

/// This node's view of one peer, refreshed every tick.
#[derive(Clone, Copy, Debug)]
struct PeerView {
    listed: Listed,
    /// When it last answered a ping, or came online in gossip.
    heard: Option<Instant>,
    /// When it first became a peer to watch.
    watched_since: Instant,
    ever_online: bool,
}

impl PeerView {
    fn new(now: Instant) -> Self {
        PeerView {
            listed: Listed::Absent,
            heard: None,
            watched_since: now,
            ever_online: false,
        }
    }

    /// Folds in one tick: what memberlist lists, and when the peer last answered a ping.
    fn observe(&mut self, listed: Listed, last_ack: Option<Instant>, now: Instant) {
        if listed == Listed::Online && self.listed != Listed::Online {
            self.heard = Some(now); // (back) online: counts as heard until pings say otherwise
            self.ever_online = true;
        }
        self.listed = listed;
        self.heard = self.heard.max(last_ack);
    }
}

/// The health rule, kept pure so it can be tested.
fn judge(view: &PeerView, now: Instant) -> Health {
    match view.listed {
        Listed::Online => match view.heard {
            Some(at) if now.duration_since(at) < SUSPECT_AFTER => Health::Alive,
            _ => Health::Suspect,
        },
        Listed::DeadOrLeft => Health::Dead,
        Listed::Absent if view.ever_online => Health::Dead,
        Listed::Absent if now.duration_since(view.watched_since) < UNHEARD_GRACE => Health::Suspect,
        Listed::Absent => Health::Dead,
    }
}

type Transport = NetTransport<u64, TokioSocketAddrResolver, Tcp<TokioRuntime>, TokioRuntime>;
type Delegate = CompositeDelegate<
    u64,
    SocketAddr,
    VoidDelegate<u64, SocketAddr>,
    VoidDelegate<u64, SocketAddr>,
    VoidDelegate<u64, SocketAddr>,
    VoidDelegate<u64, SocketAddr>,
    MetaDelegate,
>;
type Cluster = Memberlist<Transport, Delegate>;

/// Gives memberlist this node's metadata: region and HTTP address.
struct MetaDelegate(Meta);

impl NodeDelegate for MetaDelegate {
    async fn node_meta(&self, _limit: usize) -> Meta {
        self.0.clone()
    }
}

/// Region and HTTP address as gossip metadata; the address is left out if both would not fit
/// in memberlist's 512 bytes.
fn node_meta(region: &str, http: &str) -> Meta {
    let full = serde_json::json!({ "region": region, "http": http }).to_string();
    Meta::try_from(full.as_str())
        .or_else(|_| Meta::try_from(serde_json::json!({ "region": region }).to_string()))
        .unwrap_or_else(|_| Meta::empty())
}

/// Timings for one region: a dead peer is declared within about two to three seconds.
fn options(key: Option<[u8; 32]>) -> Options {
    let options = timings().with_label(Label::try_from(LABEL).expect("a short label"));
    match key {
        Some(key) => options
            .with_encryption_algo(EncryptionAlgorithm::NoPadding)
            .with_primary_key(SecretKey::Aes256(key))
            .with_gossip_verify_outgoing(true)
            .with_gossip_verify_incoming(true),
        None => options,
    }
}

fn timings() -> Options {
    Options::local()
        .with_probe_interval(Duration::from_millis(300))
        .with_probe_timeout(Duration::from_millis(200))
        .with_gossip_interval(Duration::from_millis(100))
        .with_suspicion_mult(4)
        .with_push_pull_interval(Duration::from_secs(5))
        // Dead peers are never reaped from the member list (their entries stay, marked dead):
        // memberlist-core 0.8.5's reaping (`reset_nodes`) moves dead nodes to the end of its
        // list without updating its id→index map, and its shuffle can leave an entry stale, so
        // a later alive message for that id indexes past the list and panics (found by
        // jepsen/ after membership changes, seeds 3006 and 3041). A dead entry costs a few
        // gossip packets to its old address; removed members are few.
        .with_gossip_to_the_dead_time(Duration::from_secs(30 * 24 * 3600))
        // A peer that restarts on a new port (same id) is accepted again after this.
        .with_dead_node_reclaim_time(Duration::from_secs(1))
}

pub struct MemberlistGossip {
    cluster: Cluster,
    address: SocketAddr,
    view: Arc<Mutex<BTreeMap<u64, PeerView>>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl MemberlistGossip {
    /// Binds TCP and UDP on `cfg.bind` (port 0 picks a free port) and starts watching `peers`.
    pub async fn start(cfg: GossipConfig, peers: Peers) -> Result<Arc<Self>> {
        let delegate = CompositeDelegate::<u64, SocketAddr>::new()
            .with_node_delegate(MetaDelegate(node_meta(&cfg.region, &cfg.http)));
        let mut transport =
            NetTransportOptions::<u64, TokioSocketAddrResolver, Tcp<TokioRuntime>>::new(cfg.id);
        transport.add_bind_address(cfg.bind);
        if let Some(a) = cfg.advertise {
            transport = transport.with_advertise_address(a);
        }
        let cluster = Memberlist::with_delegate(delegate, transport, options(cfg.key))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("starting gossip on {}", cfg.bind))?;
        let address = *cluster.advertise_address();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let me = Arc::new(Self {
            cluster,
            address,
            view: Arc::new(Mutex::new(BTreeMap::new())),
            stop,
        });
        tokio::spawn(watch(me.cluster.clone(), me.view.clone(), peers, stopped));
        Ok(me)
    }
}

impl Gossip for MemberlistGossip {
    fn address(&self) -> SocketAddr {
        self.address
    }

    fn health(&self, id: u64) -> Health {
        let view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        match view.get(&id) {
            Some(v) => judge(v, Instant::now()),
            None => Health::Suspect,
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            if let Err(e) = self.cluster.leave(Duration::from_millis(500)).await {
                tracing::debug!(error = %e, "gossip leave");
            }
            if let Err(e) = self.cluster.shutdown().await {
                tracing::warn!(error = %e, "gossip shutdown");
            }
        })
    }
}

/// Keeps the view of every peer current: reads memberlist's member table, pings each online
/// peer directly (a failed ping is what "suspect" means here, since memberlist 0.8 does not
/// expose its own suspect state), and contacts peers gossip does not list as online.
async fn watch(
    cluster: Cluster,
    view: Arc<Mutex<BTreeMap<u64, PeerView>>>,
    peers: Peers,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let acks: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
    let mut pinged: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut contacted: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => return,
        }
        let wanted = peers();
        let online: BTreeMap<u64, SocketAddr> = cluster
            .online_members()
            .await
            .iter()
            .map(|n| (*n.id(), *n.address()))
            .collect();
        let listed: BTreeSet<u64> = cluster.members().await.iter().map(|n| *n.id()).collect();
        let now = Instant::now();
        let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|id, _| wanted.iter().any(|(w, _)| w == id));
        for (id, gossip_addr) in &wanted {
            let state = if online.contains_key(id) {
                Listed::Online
            } else if listed.contains(id) {
                Listed::DeadOrLeft
            } else {
                Listed::Absent
            };
            let ack = acks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .copied();
            let entry = v.entry(*id).or_insert_with(|| PeerView::new(now));
            let before = judge(entry, now);
            entry.observe(state, ack, now);
            let after = judge(entry, now);
            if after != before {
                match after {
                    Health::Alive => tracing::info!(peer = id, "gossip: peer alive"),
                    h => tracing::warn!(peer = id, "gossip: peer {}", h.as_str()),
                }
            }
            if let Some(addr) = online.get(id) {
                // A ping ends within two probe timeouts (send, then ack), well inside
                // PING_EVERY, so pings to one peer never overlap.
                if pinged
                    .get(id)
                    .is_none_or(|t| now.duration_since(*t) >= PING_EVERY)
                {
                    pinged.insert(*id, now);
                    let (cluster, acks, id, addr) = (cluster.clone(), acks.clone(), *id, *addr);
                    tokio::spawn(async move {
                        let node = memberlist::proto::Node::new(id, addr);
                        if cluster.ping(node).await.is_ok() {
                            acks.lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(id, Instant::now());
                        }
                    });
                }
            } else if contacted
                .get(id)
                .is_none_or(|t| now.duration_since(*t) >= REJOIN_EVERY)
            {
                contacted.insert(*id, now);
                let (cluster, addr) = (cluster.clone(), *gossip_addr);
                tokio::spawn(async move {
                    let join = cluster.join(MaybeResolvedAddress::resolved(addr));
                    match tokio::time::timeout(REJOIN_EVERY * 2, join).await {
                        Ok(Ok(_)) => tracing::debug!(%addr, "gossip: contacted peer"),
                        Ok(Err(e)) => {
                            tracing::debug!(%addr, error = %e, "gossip: peer unreachable")
                        }
                        Err(_) => tracing::debug!(%addr, "gossip: peer did not answer"),
                    }
                });
            }
        }
        drop(v);
        pinged.retain(|id, _| wanted.iter().any(|(w, _)| w == id));
        contacted.retain(|id, _| wanted.iter().any(|(w, _)| w == id));
        acks.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| wanted.iter().any(|(w, _)| w == id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        listed: Listed,
        heard_ago: Option<u64>,
        watched_ago: u64,
        ever: bool,
    ) -> (PeerView, Instant) {
        let now = Instant::now() + Duration::from_secs(60);
        let ago = |ms: u64| now - Duration::from_millis(ms);
        (
            PeerView {
                listed,
                heard: heard_ago.map(ago),
                watched_since: ago(watched_ago),
                ever_online: ever,
            },
            now,
        )
    }

    #[test]
    fn online_and_answering_is_alive() {
        let (v, now) = view(Listed::Online, Some(200), 10_000, true);
        assert_eq!(judge(&v, now), Health::Alive);
    }

    #[test]
    fn online_but_silent_is_suspect() {
        let (v, now) = view(Listed::Online, Some(2_000), 10_000, true);
        assert_eq!(judge(&v, now), Health::Suspect);
        let (v, now) = view(Listed::Online, None, 10_000, true);
        assert_eq!(judge(&v, now), Health::Suspect);
    }

    #[test]
    fn declared_dead_or_gone_is_dead() {
        let (v, now) = view(Listed::DeadOrLeft, Some(100), 10_000, true);
        assert_eq!(judge(&v, now), Health::Dead);
        // Dropped from the member table after having been online.
        let (v, now) = view(Listed::Absent, None, 100, true);
        assert_eq!(judge(&v, now), Health::Dead);
    }

    #[test]
    fn never_heard_is_suspect_for_a_grace_period_then_dead() {
        let (v, now) = view(Listed::Absent, None, 1_000, false);
        assert_eq!(judge(&v, now), Health::Suspect);
        let (v, now) = view(Listed::Absent, None, 6_000, false);
        assert_eq!(judge(&v, now), Health::Dead);
    }

    #[test]
    fn a_peer_coming_online_is_alive_until_its_pings_go_unanswered() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut v = PeerView::new(t0);
        assert_eq!(judge(&v, t0), Health::Suspect); // not heard yet
        v.observe(Listed::Online, None, at(250));
        assert_eq!(judge(&v, at(250)), Health::Alive);
        v.observe(Listed::Online, Some(at(600)), at(750));
        assert_eq!(judge(&v, at(2_000)), Health::Alive); // 1.4 s after the last answer
        v.observe(Listed::Online, Some(at(600)), at(2_250));
        assert_eq!(judge(&v, at(2_250)), Health::Suspect); // 1.65 s of silence
        v.observe(Listed::DeadOrLeft, Some(at(600)), at(3_000));
        assert_eq!(judge(&v, at(3_000)), Health::Dead);
        v.observe(Listed::Absent, Some(at(600)), at(20_000)); // dropped from the table
        assert_eq!(judge(&v, at(20_000)), Health::Dead);
        v.observe(Listed::Online, Some(at(600)), at(21_000)); // restarted, refuted its death
        assert_eq!(judge(&v, at(21_000)), Health::Alive);
    }

    #[test]
    fn a_ping_ends_before_the_next_one_to_the_same_peer_starts() {
        assert!(timings().probe_timeout() * 2 < PING_EVERY);
    }

    #[test]
    fn metadata_fits_memberlist_limit() {
        assert!(!node_meta("eu", "http://127.0.0.1:8080").is_empty());
        let long = "x".repeat(600);
        let meta = node_meta("eu", &long);
        assert!(!meta.is_empty() && meta.len() <= memberlist::META_MAX_SIZE);
    }

    /// Three real memberlist instances on loopback find each other from the peer lists alone,
    /// and a stopped one is declared dead by the others.
    /// Starts one memberlist instance per key, ids 1.., each watching all the others.
    async fn group(keys: &[Option<[u8; 32]>]) -> Vec<Arc<MemberlistGossip>> {
        let addrs: Arc<Mutex<BTreeMap<u64, SocketAddr>>> = Arc::default();
        let mut nodes = Vec::new();
        for (id, key) in (1u64..).zip(keys) {
            let all = addrs.clone();
            let peers: Peers = Arc::new(move || {
                let all = all.lock().unwrap();
                all.iter()
                    .filter(|(i, _)| **i != id)
                    .map(|(i, a)| (*i, *a))
                    .collect()
            });
            let cfg = GossipConfig {
                id,
                bind: "127.0.0.1:0".parse().unwrap(),
                advertise: None,
                region: "test".into(),
                http: format!("http://127.0.0.1:{id}"),
                key: *key,
            };
            let g = MemberlistGossip::start(cfg, peers).await.unwrap();
            addrs.lock().unwrap().insert(id, g.address());
            nodes.push(g);
        }
        nodes
    }

    /// Three real memberlist instances on loopback find each other from the peer lists alone,
    /// and a stopped one is declared dead by the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_find_each_other_and_see_one_leave() {
        let mut nodes = group(&[Some([7; 32]); 3]).await;
        let all_alive = |nodes: &[Arc<MemberlistGossip>]| {
            nodes.iter().enumerate().all(|(i, g)| {
                (1..=3u64)
                    .filter(|p| *p != i as u64 + 1)
                    .all(|p| g.health(p) == Health::Alive)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !all_alive(&nodes) {
            assert!(Instant::now() < deadline, "peers never all alive");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let gone = nodes.pop().unwrap();
        gone.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while nodes.iter().any(|g| g.health(3) != Health::Dead) {
            assert!(Instant::now() < deadline, "stopped peer never seen dead");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(nodes[0].health(2) == Health::Alive && nodes[1].health(1) == Health::Alive);
        for g in nodes {
            g.shutdown().await;
        }
    }

    /// A node without the cluster's gossip key (or with another one) is never heard: its
    /// packets are dropped, and it hears nothing either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gossip_without_the_key_is_ignored() {
        let nodes = group(&[Some([7; 32]), Some([7; 32]), None, Some([8; 32])]).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while nodes[0].health(2) != Health::Alive || nodes[1].health(1) != Health::Alive {
            assert!(
                Instant::now() < deadline,
                "the keyed peers never saw each other"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (i, g) in nodes.iter().enumerate() {
            let me = i as u64 + 1;
            for other in (1..=4u64).filter(|o| *o != me) {
                let same_key = me <= 2 && other <= 2;
                assert_eq!(
                    g.health(other) == Health::Alive,
                    same_key,
                    "node {me} hears node {other}: {:?}",
                    g.health(other)
                );
            }
        }
        for g in nodes {
            g.shutdown().await;
        }
    }
}
