//! `basalt serve` configuration and the node identity persisted in the data dir.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub advertise_http: Option<String>,
    pub advertise_grpc: Option<String>,
    /// Where gossip binds (port 0: any free port), and what peers are told, if not that.
    pub gossip: SocketAddr,
    pub advertise_gossip: Option<SocketAddr>,
    pub node_id: u64,
    pub region: String,
    pub join: Vec<String>,
    pub root_key: Option<String>,
    /// The HTTP edge's bounds.
    pub limits: api::Limits,
    /// Take a snapshot (and purge the log behind it) after this many log entries.
    pub snapshot_every: u64,
    /// The slowest round trip to a peer to expect before one is measured (`--round-trip-ms`).
    pub round_trip: std::time::Duration,
    /// `--zone`: where in its region the node is (empty: not said).
    pub zone: String,
    /// Rows one query may examine (see `Engine::with_scan_budget`).
    pub scan_budget: usize,
    /// How long an unnamed blob is kept before it is reclaimed.
    pub blob_grace: std::time::Duration,
    /// A join token (`basalt cluster join-token`), proving this node may join.
    pub join_token: Option<String>,
    /// Plain-text node-to-node traffic (`--insecure`).
    pub insecure: bool,
    /// Certificates the operator brought, instead of the cluster's own CA.
    pub own_certs: Option<OwnCerts>,
    /// How long the node certificates this node signs are valid.
    pub cert_ttl: std::time::Duration,
    /// Outgoing email (`--smtp-*`); none: the email flows answer `general_smtp_disabled`.
    pub smtp: Option<crate::mail::Smtp>,
    /// `--public-url`: where end users reach the cluster.
    pub public_url: Option<String>,
}

/// `--ca-cert`, `--node-cert`, `--node-key`.
#[derive(Clone, Debug)]
pub struct OwnCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything but the root key, which is never formatted (the one first-start line aside).
impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("data_dir", &self.data_dir)
            .field("http", &self.http)
            .field("grpc", &self.grpc)
            .field("advertise_http", &self.advertise_http)
            .field("advertise_grpc", &self.advertise_grpc)
            .field("gossip", &self.gossip)
            .field("advertise_gossip", &self.advertise_gossip)
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("join", &self.join)
            .field("root_key", &self.root_key.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("snapshot_every", &self.snapshot_every)
            .field("scan_budget", &self.scan_budget)
            .field("blob_grace", &self.blob_grace)
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure", &self.insecure)
            .field("own_certs", &self.own_certs)
            .field("cert_ttl", &self.cert_ttl)
            .field("smtp", &self.smtp)
            .field("public_url", &self.public_url)
            .finish()
    }
}

/// Who this node is; written on first start, checked on every later one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub region: String,
}

const IDENTITY: &str = "node.json";
const ROOT_KEY: &str = "root-key";

/// Loads the identity of an existing data dir, or records the flags' one in a new dir.
/// Returns whether the dir is new.
pub fn identity(cfg: &ServeConfig) -> Result<(Identity, bool)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data dir {}", cfg.data_dir.display()))?;
    // The data dir holds every project's data and the root key: its owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", cfg.data_dir.display()))?;
    }
    let path = cfg.data_dir.join(IDENTITY);
    let wanted = Identity {
        node_id: cfg.node_id,
        region: cfg.region.clone(),
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Identity = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            if stored.node_id != wanted.node_id {
                bail!(
                    "data dir {} belongs to node {}, not node {}: node ids are stable; start with --node-id {} or use a new data dir",
                    cfg.data_dir.display(),
                    stored.node_id,
                    wanted.node_id,
                    stored.node_id
                );
            }
            if stored.region != wanted.region {
                bail!(
                    "data dir {} belongs to region {:?}, not {:?}: a node's region cannot change",
                    cfg.data_dir.display(),
                    stored.region,
                    wanted.region
                );
            }
            Ok((stored, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_private(&path, &serde_json::to_vec_pretty(&wanted)?)?;
            Ok((wanted, true))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    raft::tls::write_private(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The root key this node was given (flag, env or file), else the one stored in its data
/// dir; never a new one, and never stored: only the node that starts a cluster keeps the key
/// (a joined node keeps the cluster's digest, so a removed one takes no key away).
pub fn given_root_key(cfg: &ServeConfig) -> Result<Option<String>> {
    let path = cfg.data_dir.join(ROOT_KEY);
    match &cfg.root_key {
        Some(k) => Ok(Some(k.clone())),
        None => match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        },
    }
}

/// The operator's root key: the flag's, else the stored one, else a new one (printed once).
pub fn root_key(cfg: &ServeConfig) -> Result<String> {
    let path = cfg.data_dir.join(ROOT_KEY);
    let stored = match std::fs::read_to_string(&path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match (&cfg.root_key, stored) {
        (Some(k), None) => {
            write_private(&path, k.as_bytes())?;
            Ok(k.clone())
        }
        (Some(k), Some(_)) => Ok(k.clone()),
        (None, Some(s)) => Ok(s),
        (None, None) => {
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let key = hex::encode(bytes);
            write_private(&path, key.as_bytes())?;
            // Printed once, on stdout only: never through the logs.
            println!(
                "{}",
                serde_json::json!({ "event": "root_key_generated", "root_key": key, "stored_in": path })
            );
            Ok(key)
        }
    }
}

#[cfg(test)]
mod redaction {
    #[test]
    fn the_root_key_is_never_formatted() {
        let cfg = super::ServeConfig {
            data_dir: "d".into(),
            http: "127.0.0.1:1".parse().unwrap(),
            grpc: "127.0.0.1:2".parse().unwrap(),
            advertise_http: None,
            advertise_grpc: None,
            gossip: "127.0.0.1:3".parse().unwrap(),
            advertise_gossip: None,
            node_id: 1,
            region: "r".into(),
            join: vec![],
            root_key: Some("s3cret-root-key".into()),
            limits: api::Limits::default(),
            snapshot_every: 10,
            round_trip: std::time::Duration::ZERO,
            zone: String::new(),
            scan_budget: 10,
            blob_grace: std::time::Duration::from_secs(3600),
            join_token: Some("basalt1.s3cret-token".into()),
            insecure: false,
            own_certs: None,
            cert_ttl: std::time::Duration::from_secs(60),
            smtp: Some(crate::mail::Smtp {
                host: "mail".into(),
                port: 25,
                username: Some("u".into()),
                password: Some("s3cret-smtp".into()),
                tls: crate::mail::SmtpTls::None,
                sender: "Basalt <noreply@localhost>".into(),
            }),
            public_url: None,
        };
        let text = format!("{cfg:?} {cfg:#?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
