//! How a node secures node-to-node traffic, decided once at start:
//! - `--insecure`: plain text, warned about on every start;
//! - `--ca-cert/--node-cert/--node-key`: the operator's certificates;
//! - credentials already in `<data dir>/tls`: a restart;
//! - a new node with `--join`: enroll with a join token or the root key (`raft::enroll`);
//! - a new node without `--join`: a new cluster, with a new CA.

use crate::config::{self, ServeConfig};
use anyhow::{bail, Context, Result};
use api::auth::sha256_hex;
use raft::enroll::{self, Credential, JoinToken};
use raft::tls::{ClusterTls, Credentials, Transport, TLS_DIR};

/// What `prepare` decided.
pub struct Secured {
    pub transport: Transport,
    /// SHA-256 of the cluster's root key, hex: what HTTP requests and joiners are checked with.
    pub root_key_sha256: String,
    /// The key gossip is encrypted with (`None` with `--insecure`).
    pub gossip_key: Option<[u8; 32]>,
    /// Whom to accept Raft traffic from before this node has the cluster's state (see
    /// `raft::NodeConfig::peers`).
    pub peers: Vec<(u64, String)>,
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub async fn prepare(cfg: &ServeConfig, node_id: u64) -> Result<Secured> {
    let dir = cfg.data_dir.join(TLS_DIR);
    if cfg.insecure {
        tracing::warn!("--insecure: node-to-node traffic (Raft, forwarded writes, gossip) is plain text and unauthenticated; anyone who reaches this node's gRPC or gossip port controls the cluster. For local experiments only.");
        return Ok(Secured {
            transport: Transport::Insecure,
            root_key_sha256: sha256_hex(&config::root_key(cfg)?),
            gossip_key: None,
            peers: Vec::new(),
        });
    }
    if let Some(own) = &cfg.own_certs {
        let root_key_sha256 = sha256_hex(&config::given_root_key(cfg)?.context(
            "with --ca-cert every node needs the cluster's root key (--root-key-file or BASALT_ROOT_KEY)",
        )?);
        // Operator-made certificates carry no gossip key: it is derived from the root key,
        // which every such node holds.
        let gossip_key: Option<[u8; 32]> = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, root_key_sha256.as_bytes()),
            b"basalt-gossip-key-v1",
        )
        .as_ref()
        .try_into()
        .ok();
        let files = [own.ca.clone(), own.cert.clone(), own.key.clone()];
        return Ok(Secured {
            transport: Transport::Tls(ClusterTls::from_files(node_id, files, gossip_key)?),
            root_key_sha256,
            gossip_key,
            peers: Vec::new(),
        });
    }
    let creds = match Credentials::load(&dir)? {
        Some(creds) => creds,
        None if !cfg.join.is_empty() => {
            let credential = match &cfg.join_token {
                Some(t) => Credential::Token(JoinToken::parse(t).context(
                    "--join-token is not a token printed by `basalt cluster join-token`",
                )?),
                None => match config::given_root_key(cfg)? {
                    Some(k) => Credential::RootKey(sha256_hex(&k)),
                    None => bail!("joining a cluster needs --join-token TOKEN (from `basalt cluster join-token`) or the cluster's root key (--root-key-file or BASALT_ROOT_KEY)"),
                },
            };
            tracing::info!(seeds = ?cfg.join, "asking the cluster for this node's certificate");
            let creds = enroll::enroll(&cfg.join, node_id, &credential).await?;
            creds.save(&dir)?;
            tracing::info!("enrolled: node certificate stored in {}", dir.display());
            creds
        }
        None => {
            if cfg.data_dir.join("raft-log").exists() {
                bail!(
                    "{} holds a cluster that runs without TLS (started with --insecure): start it with --insecure",
                    cfg.data_dir.display()
                );
            }
            let creds =
                Credentials::new_cluster(node_id, now_secs(), cfg.cert_ttl.as_secs() as i64)?;
            creds.save(&dir)?;
            tracing::info!(dir = %dir.display(), "created the cluster's certificate authority");
            creds
        }
    };
    // Every node checks the operator's key against the cluster's digest (replicated; see
    // `RaftNode::root_key_sha256`). This one is only what a node checks with before it has
    // applied that: the digest it was handed when it enrolled, or its own key.
    let root_key_sha256 = match &creds.root_key_sha256 {
        Some(cluster) => cluster.clone(),
        None => sha256_hex(&config::root_key(cfg)?),
    };
    let (gossip_key, peers) = (creds.gossip_key, creds.peers.clone());
    Ok(Secured {
        transport: Transport::Tls(ClusterTls::new(node_id, creds, Some(dir))?),
        root_key_sha256,
        gossip_key,
        peers,
    })
}
