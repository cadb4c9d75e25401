//! `basalt` command line: `serve`, the operator commands, and `bench`.

use crate::client::Client;
use crate::config::ServeConfig;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Appwrite-compatible backend in one clustered binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Manage a project's client platforms (the web origins allowed to call it).
    Platform {
        #[command(subcommand)]
        command: PlatformCommand,
    },
    /// Inspect the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Back the whole cluster up, online: its state at one applied index and the files it
    /// holds, from the node reached, into a new or empty directory (with a manifest).
    Backup {
        #[arg(long)]
        to: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// Build a new node's data directory from a backup (offline); `basalt serve --data-dir
    /// NEW_DIR` then starts a new cluster holding that state.
    Restore {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Load generator: row writes from concurrent clients, then indexed queries.
    Bench(crate::bench::BenchArgs),
    /// Rehearse a failure (a node, the leader, a partition, a region) under write load; print
    /// the time to recover and the proof that nothing acknowledged was lost.
    Drill(crate::drill::DrillArgs),
    /// Test builds only: call every node-to-node RPC of a node as a given client identity
    /// (`anonymous`, `self-signed:ID`, `files:DATA_DIR`, `minted:DATA_DIR:ID`) and print each
    /// method's answer.
    #[cfg(feature = "fault-points")]
    ProbeRpc {
        #[arg(long)]
        grpc: String,
        #[arg(long = "as")]
        identity: String,
        /// The node id the requests act as.
        #[arg(long)]
        claim: u64,
    },
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, env = "BASALT_DATA_DIR", default_value = "./basalt-data")]
    data_dir: PathBuf,
    #[arg(long, env = "BASALT_HTTP", default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    #[arg(long, env = "BASALT_GRPC", default_value = "127.0.0.1:9080")]
    grpc: std::net::SocketAddr,
    #[arg(long, env = "BASALT_ADVERTISE_HTTP")]
    advertise_http: Option<String>,
    #[arg(long, env = "BASALT_ADVERTISE_GRPC")]
    advertise_grpc: Option<String>,
    /// Gossip (failure detection), TCP and UDP. Default: the gRPC address's IP, a free port.
    #[arg(long, env = "BASALT_GOSSIP")]
    gossip: Option<std::net::SocketAddr>,
    #[arg(long, env = "BASALT_ADVERTISE_GOSSIP")]
    advertise_gossip: Option<std::net::SocketAddr>,
    #[arg(long, env = "BASALT_NODE_ID", default_value_t = 1)]
    node_id: u64,
    #[arg(long, env = "BASALT_REGION", default_value = "default")]
    region: String,
    /// The zone within the region (a failure domain, e.g. a data centre): voters are spread
    /// across a region's zones. May change between starts.
    #[arg(long, env = "BASALT_ZONE", default_value = "")]
    zone: String,
    #[arg(long, env = "BASALT_JOIN", value_delimiter = ',')]
    join: Vec<String>,
    /// The operator's root key. Prefer `BASALT_ROOT_KEY` or `--root-key-file`: a command
    /// line is visible to every local user.
    #[arg(
        long,
        env = "BASALT_ROOT_KEY",
        hide_env_values = true,
        conflicts_with = "root_key_file"
    )]
    root_key: Option<String>,
    /// A file holding the root key (its first line).
    #[arg(long, env = "BASALT_ROOT_KEY_FILE")]
    root_key_file: Option<PathBuf>,
    /// Join with a token from `basalt cluster join-token` instead of the root key.
    #[arg(long, env = "BASALT_JOIN_TOKEN", hide_env_values = true)]
    join_token: Option<String>,
    /// Plain-text node-to-node traffic, for local experiments only (warned on every start).
    #[arg(long, env = "BASALT_INSECURE")]
    insecure: bool,
    /// The operator's own CA certificate (PEM), instead of the cluster's generated one; needs
    /// --node-cert and --node-key. Such nodes sign no certificates for others.
    #[arg(long, env = "BASALT_CA_CERT", requires_all = ["node_cert", "node_key"], conflicts_with = "insecure")]
    ca_cert: Option<PathBuf>,
    /// This node's certificate (PEM), signed by --ca-cert, naming `node-<id>.basalt`.
    #[arg(long, env = "BASALT_NODE_CERT", requires = "ca_cert")]
    node_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "BASALT_NODE_KEY", requires = "ca_cert")]
    node_key: Option<PathBuf>,
    /// Seconds the node certificates this node signs are valid (renewed when a third is left).
    #[arg(long, env = "BASALT_CERT_TTL", default_value_t = 90 * 86_400, hide = true)]
    cert_ttl: u64,
    /// Requests served at once, at most; more are answered 429 at once.
    #[arg(long, env = "BASALT_MAX_REQUESTS", default_value_t = 1024)]
    max_requests: usize,
    /// Seconds a request may take, body reading included, before it is answered 503.
    #[arg(long, env = "BASALT_REQUEST_TIMEOUT", default_value_t = 60)]
    request_timeout: u64,
    /// Seconds a connection may take to send a request's headers before it is closed.
    #[arg(long, env = "BASALT_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Appwrite's abuse limits on sign-in, sign-up, JWTs and end users' writes (429 past
    /// them), counted per node: `enabled` or `disabled`.
    #[arg(long, env = "BASALT_ABUSE_LIMITS", default_value = "enabled", value_parser = ["enabled", "disabled"])]
    abuse_limits: String,
    /// Snapshot the state and purge the Raft log after this many entries.
    #[arg(long, env = "BASALT_SNAPSHOT_EVERY", default_value_t = 10_000)]
    snapshot_every: u64,
    /// The round trip (ms) to the furthest peer this node should expect, until it has measured
    /// one: Raft's heartbeat and election timeouts are derived from the slowest round trip
    /// known (this, the one measured to `--join` seeds at start, or on a former run). Give it
    /// to the first node of a cluster across regions, which has no peer to measure yet.
    #[arg(long, env = "BASALT_ROUND_TRIP_MS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=5000))]
    round_trip_ms: u64,
    /// Rows one query may examine without an index serving it; past that it answers
    /// `database_timeout` (408) instead of scanning on.
    #[arg(long, env = "BASALT_SCAN_BUDGET", default_value_t = storage_engine::DEFAULT_SCAN_BUDGET)]
    scan_budget: usize,
    /// Seconds a stored file chunk that no file names any more (a deleted file's, an
    /// abandoned upload's) is kept before this node reclaims its bytes.
    #[arg(long, env = "BASALT_BLOB_GRACE", default_value_t = 3600)]
    blob_grace: u64,
    /// The SMTP server outgoing email goes through (verification, recovery, magic URLs,
    /// codes, invitations). Without it those flows answer `general_smtp_disabled`. Give every
    /// node the same settings: the leader sends.
    #[arg(long, env = "BASALT_SMTP_HOST")]
    smtp_host: Option<String>,
    /// Default: 25, 587 with starttls, 465 with tls.
    #[arg(long, env = "BASALT_SMTP_PORT")]
    smtp_port: Option<u16>,
    #[arg(long, env = "BASALT_SMTP_USERNAME")]
    smtp_username: Option<String>,
    /// Prefer `BASALT_SMTP_PASSWORD`: a command line is visible to every local user.
    #[arg(long, env = "BASALT_SMTP_PASSWORD", hide_env_values = true)]
    smtp_password: Option<String>,
    #[arg(long, env = "BASALT_SMTP_TLS", default_value = "starttls", value_parser = ["none", "starttls", "tls"])]
    smtp_tls: String,
    /// `From:` of every email, `Name <address>` or an address.
    #[arg(
        long,
        env = "BASALT_SMTP_SENDER",
        default_value = "Basalt <noreply@localhost>"
    )]
    smtp_sender: String,
    /// The URL end users reach the cluster at: links in emails may lead to its host, and a
    /// magic URL asked for without a page leads to `<public-url>/auth/magic-url`.
    #[arg(long, env = "BASALT_PUBLIC_URL")]
    public_url: Option<String>,
}

#[derive(Args, Clone)]
pub struct Remote {
    #[arg(long, env = "BASALT_ENDPOINT", default_value = "http://127.0.0.1:8080")]
    pub endpoint: String,
    #[arg(long, env = "BASALT_ROOT_KEY", hide_env_values = true)]
    pub root_key: String,
}

impl Remote {
    pub fn console(&self) -> Result<Client> {
        Client::new(&self.endpoint, "console", &self.root_key)
    }
}

#[derive(Subcommand)]
enum ProjectCommand {
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Shows the project (its auth settings included).
    Get {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Changes the project's auth settings; each flag given is one change.
    Auth {
        #[arg(long)]
        id: String,
        /// Seconds a session lasts (60 to 31536000).
        #[arg(long)]
        duration: Option<u64>,
        /// Users the project may have (0: no limit); sign-ups past it are refused.
        #[arg(long)]
        limit: Option<u64>,
        /// Sessions a user holds at most (1 to 100).
        #[arg(long)]
        max_sessions: Option<u64>,
        /// A new password may not be one of the user's last N (0 to 20).
        #[arg(long)]
        password_history: Option<u64>,
        /// Refuse the most common passwords.
        #[arg(long, value_parser = ["on", "off"])]
        password_dictionary: Option<String>,
        /// Refuse passwords containing the user's id, name, email or phone.
        #[arg(long, value_parser = ["on", "off"])]
        personal_data: Option<String>,
        /// Turn sign-in methods on: email-password, magic-url, email-otp, anonymous, invites,
        /// jwt, phone.
        #[arg(long, value_delimiter = ',')]
        enable: Vec<String>,
        /// Turn sign-in methods off.
        #[arg(long, value_delimiter = ',')]
        disable: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    Create {
        #[arg(long)]
        project: String,
        #[arg(long, default_value = "key")]
        name: String,
        #[arg(long, value_delimiter = ',', conflicts_with = "all_scopes")]
        scopes: Vec<String>,
        #[arg(long)]
        all_scopes: bool,
        #[arg(long)]
        expire: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// A project's keys (no secrets).
    List {
        #[arg(long)]
        project: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revokes a key: from then on no write made with it is applied, on any node.
    Delete {
        #[arg(long)]
        project: String,
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum PlatformCommand {
    /// Lets pages on HOST (or any subdomain, for `*.example.com`) call the project from the
    /// browser with credentials.
    Add {
        #[arg(long)]
        project: String,
        #[arg(long)]
        hostname: String,
        #[arg(long = "type", default_value = "web", value_parser = ["web"])]
        kind: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    List {
        #[arg(long)]
        project: String,
        #[command(flatten)]
        remote: Remote,
    },
    Delete {
        #[arg(long)]
        project: String,
        #[arg(long)]
        platform_id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    Status {
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a member; prints the new membership.
    Remove {
        #[arg(long)]
        node_id: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Compare every replica: each computes a digest of its state at the same log entry.
    /// Exits 1 if they differ (or a member cannot answer).
    Check {
        #[command(flatten)]
        remote: Remote,
    },
    /// Replace the cluster's root key on every node at once. The new key is read from the
    /// file (its first line) or BASALT_NEW_ROOT_KEY; only its SHA-256 is sent.
    RotateRootKey {
        #[arg(long, env = "BASALT_NEW_ROOT_KEY_FILE")]
        new_key_file: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Restart every member one at a time, followers first and the leader last: runs
    /// `--restart` for each (`{id}` is its node id; `sh -c`, with BASALT_NODE_ID set) and
    /// goes on once it is ready and caught up. Each member waits until the others are ready.
    RollingRestart {
        /// E.g. `ssh node{id} systemctl restart basalt`.
        #[arg(long)]
        restart: String,
        /// Seconds each step (the others ready, the command, the node back) may take.
        #[arg(long, default_value_t = 120)]
        per_node: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show the placement policy, or change it: which regions hold voters, which hold read
    /// replicas (learners), where the leader should be. A flag given replaces that part
    /// (an empty value clears it); the others stay. Prints the policy now in force.
    Placement {
        /// Regions whose nodes vote, comma-separated.
        #[arg(long, value_delimiter = ',')]
        voters: Option<Vec<String>>,
        /// Regions whose nodes are read replicas, comma-separated.
        #[arg(long, value_delimiter = ',')]
        learners: Option<Vec<String>>,
        /// The region the leader should be in while one of its voters is healthy.
        #[arg(long)]
        leader_region: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// A one-time token a new node joins with (`serve --join ADDR --join-token TOKEN`).
    JoinToken {
        /// How long it is valid: seconds, or a number with s, m, h or d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `90`, `90s`, `15m`, `1h`, `7d` as seconds (at least one, at most a year).
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.trim().char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.trim().split_at(i),
        None => (s.trim(), "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 7d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is one of s, m, h, d")),
    };
    match n.checked_mul(per) {
        Some(secs) if (1..=366 * 86_400).contains(&secs) => Ok(secs),
        _ => Err(format!("{s:?}: a token lives between a second and a year")),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("basalt: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            #[cfg(feature = "fault-points")]
            Command::ProbeRpc {
                grpc,
                identity,
                claim,
            } => probe_rpc(&grpc, &identity, claim).await,
            Command::Project { command } => project(command).await,
            Command::Key { command } => key(command).await,
            Command::Platform { command } => platform(command).await,
            Command::Cluster { command } => cluster(command).await,
            Command::Backup { to, remote } => {
                let v = crate::backup::backup(&remote.endpoint, &remote.root_key, &to)
                    .await
                    .with_context(|| format!("backing up into {}", to.display()))?;
                print(&v)
            }
            Command::Restore { from, data_dir } => {
                let v =
                    tokio::task::spawn_blocking(move || crate::backup::restore(&from, &data_dir))
                        .await?
                        .context("restoring")?;
                print(&v)
            }
            Command::Bench(args) => crate::bench::run(args).await,
            Command::Drill(args) => crate::drill::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BASALT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| {
            // memberlist logs every undeliverable packet at ERROR (a peer down, its own
            // shutdown); the node logs each peer's health change itself instead.
            EnvFilter::new(
                "info,openraft=warn,h2=warn,tower_http=warn,memberlist=off,memberlist_core=off,memberlist_net=off",
            )
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(a: ServeArgs) -> Result<()> {
    init_logging();
    // Listen for SIGTERM before the node starts: a signal that arrives while it starts (after
    // it says it is listening, before a listener would otherwise exist) is not lost.
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let cfg = ServeConfig {
        data_dir: a.data_dir,
        http: a.http,
        grpc: a.grpc,
        advertise_http: a.advertise_http,
        advertise_grpc: a.advertise_grpc,
        gossip: a
            .gossip
            .unwrap_or_else(|| std::net::SocketAddr::new(a.grpc.ip(), 0)),
        advertise_gossip: a.advertise_gossip,
        node_id: a.node_id,
        region: a.region,
        join: a.join.into_iter().filter(|j| !j.is_empty()).collect(),
        root_key: match (a.root_key, a.root_key_file) {
            (Some(k), _) => Some(k),
            (None, Some(path)) => Some(first_line(&path)?).filter(|k| !k.is_empty()),
            (None, None) => None,
        },
        limits: api::Limits {
            max_in_flight: a.max_requests.max(1),
            request_timeout: std::time::Duration::from_secs(a.request_timeout.max(1)),
            header_timeout: std::time::Duration::from_secs(a.header_timeout.max(1)),
            abuse: a.abuse_limits == "enabled",
        },
        snapshot_every: a.snapshot_every.max(10),
        zone: a.zone,
        round_trip: std::time::Duration::from_millis(a.round_trip_ms),
        scan_budget: a.scan_budget.max(1),
        blob_grace: {
            // A chunk is stored before its entry commits; its blob must outlive the request
            // that proposes it, retries included.
            if a.blob_grace < 2 * a.request_timeout.max(1) {
                anyhow::bail!(
                    "--blob-grace ({} s) must be at least twice --request-timeout ({} s)",
                    a.blob_grace,
                    a.request_timeout
                );
            }
            std::time::Duration::from_secs(a.blob_grace)
        },
        join_token: a.join_token.filter(|t| !t.is_empty()),
        insecure: a.insecure,
        own_certs: match (a.ca_cert, a.node_cert, a.node_key) {
            (Some(ca), Some(cert), Some(key)) => Some(crate::config::OwnCerts { ca, cert, key }),
            _ => None,
        },
        cert_ttl: std::time::Duration::from_secs(a.cert_ttl.max(10)),
        smtp: match a.smtp_host.filter(|h| !h.is_empty()) {
            None => None,
            Some(host) => {
                let tls = crate::mail::SmtpTls::parse(&a.smtp_tls)
                    .ok_or_else(|| anyhow::anyhow!("--smtp-tls: none, starttls or tls"))?;
                let smtp = crate::mail::Smtp {
                    host,
                    port: a.smtp_port.unwrap_or(tls.default_port()),
                    username: a.smtp_username.filter(|u| !u.is_empty()),
                    password: a.smtp_password,
                    tls,
                    sender: a.smtp_sender,
                };
                smtp.check()?;
                Some(smtp)
            }
        },
        public_url: match a.public_url.filter(|u| !u.is_empty()) {
            Some(u) if api::mail::url_host(&u).is_none() => {
                anyhow::bail!("--public-url {u:?}: an http(s) URL")
            }
            other => other,
        },
    };
    let handle = crate::run(cfg).await?;
    #[cfg(unix)]
    let signal = shutdown_signal(term);
    #[cfg(not(unix))]
    let signal = shutdown_signal();
    tokio::select! {
        _ = signal => {}
        error = handle.fatal() => {
            // Fail-stop: the Raft core quit on an error it cannot go on from (a failed write
            // or fsync of the log). A node left running would answer 503 for ever while its
            // health probe says it is up; exiting lets its supervisor restart it, and the
            // restart recovers from what the disk holds (nothing unsynced was acknowledged).
            tracing::error!(%error, "the Raft core stopped on a fatal error; exiting so that the node restarts and recovers");
            // At once, as a crash would: exit(3)'s static destructors would tear RocksDB down
            // under its own background threads (and abort).
            // SAFETY: _exit ends the process; nothing runs after it.
            unsafe { libc::_exit(70) }
        }
    }
    tracing::info!("shutdown requested");
    handle.shutdown().await;
    Ok(())
}

#[cfg(unix)]
async fn shutdown_signal(term: Option<tokio::signal::unix::Signal>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match term {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(not(unix))]
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn print(v: &serde_json::Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn project(c: ProjectCommand) -> Result<()> {
    match c {
        ProjectCommand::Create { id, name, remote } => {
            let v = remote
                .console()?
                .post("/projects", json!({ "projectId": id, "name": name }))
                .await
                .context("creating the project")?;
            print(&v)
        }
        ProjectCommand::Get { id, remote } => {
            let v = remote
                .console()?
                .get(&format!("/projects/{id}"))
                .await
                .context("reading the project")?;
            print(&v)
        }
        ProjectCommand::Auth {
            id,
            duration,
            limit,
            max_sessions,
            password_history,
            password_dictionary,
            personal_data,
            enable,
            disable,
            remote,
        } => {
            // Checked before the first change is sent: each flag is its own request, and a bad
            // one late in the line would leave the earlier ones applied.
            let within = |name: &str, v: Option<u64>, lo: u64, hi: u64| match v {
                Some(n) if !(lo..=hi).contains(&n) => {
                    anyhow::bail!("--{name} {n}: between {lo} and {hi}")
                }
                _ => Ok(()),
            };
            within("duration", duration, 60, 31_536_000)?;
            within("max-sessions", max_sessions, 1, 100)?;
            within("password-history", password_history, 0, 20)?;
            if let Some(m) = enable.iter().find(|m| disable.contains(m)) {
                anyhow::bail!("{m} is both enabled and disabled");
            }
            let on = |v: &str| v == "on";
            let mut changes: Vec<(String, serde_json::Value)> = Vec::new();
            if let Some(d) = duration {
                changes.push(("duration".into(), json!({ "duration": d })));
            }
            if let Some(n) = limit {
                changes.push(("limit".into(), json!({ "limit": n })));
            }
            if let Some(n) = max_sessions {
                changes.push(("max-sessions".into(), json!({ "limit": n })));
            }
            if let Some(n) = password_history {
                changes.push(("password-history".into(), json!({ "limit": n })));
            }
            if let Some(v) = password_dictionary {
                changes.push(("password-dictionary".into(), json!({ "enabled": on(&v) })));
            }
            if let Some(v) = personal_data {
                changes.push(("personal-data".into(), json!({ "enabled": on(&v) })));
            }
            for (methods, status) in [(enable, true), (disable, false)] {
                for m in methods {
                    if !model::auth::AUTH_METHODS.contains(&m.as_str()) {
                        anyhow::bail!(
                            "unknown sign-in method {m:?}: one of {}",
                            model::auth::AUTH_METHODS.join(", ")
                        );
                    }
                    changes.push((m, json!({ "status": status })));
                }
            }
            let console = remote.console()?;
            let mut last = console
                .get(&format!("/projects/{id}"))
                .await
                .context("reading the project")?;
            for (setting, body) in changes {
                last = console
                    .call(
                        reqwest::Method::PATCH,
                        &format!("/projects/{id}/auth/{setting}"),
                        Some(body),
                    )
                    .await
                    .with_context(|| format!("changing {setting}"))?;
            }
            print(&last)
        }
    }
}

async fn platform(c: PlatformCommand) -> Result<()> {
    match c {
        PlatformCommand::Add {
            project,
            hostname,
            kind,
            name,
            remote,
        } => {
            let v = remote
                .console()?
                .post(
                    &format!("/projects/{project}/platforms"),
                    json!({ "type": kind, "hostname": hostname, "name": name }),
                )
                .await
                .context("adding the platform")?;
            print(&v)
        }
        PlatformCommand::List { project, remote } => {
            let v = remote
                .console()?
                .get(&format!("/projects/{project}/platforms"))
                .await
                .context("listing platforms")?;
            print(&v)
        }
        PlatformCommand::Delete {
            project,
            platform_id,
            remote,
        } => {
            remote
                .console()?
                .call(
                    reqwest::Method::DELETE,
                    &format!("/projects/{project}/platforms/{platform_id}"),
                    None,
                )
                .await
                .context("deleting the platform")?;
            print(&json!({ "deleted": platform_id }))
        }
    }
}

async fn key(c: KeyCommand) -> Result<()> {
    match c {
        KeyCommand::Create {
            project,
            name,
            scopes,
            all_scopes,
            expire,
            remote,
        } => {
            let scopes: Vec<String> = if all_scopes {
                crate::bench::all_scopes()
            } else {
                scopes
            };
            let v = remote
                .console()?
                .post(
                    &format!("/projects/{project}/keys"),
                    json!({ "name": name, "scopes": scopes, "expire": expire }),
                )
                .await
                .context("creating the key")?;
            print(&v)
        }
        KeyCommand::List { project, remote } => {
            let v = remote
                .console()?
                .get(&format!("/projects/{project}/keys"))
                .await
                .context("listing keys")?;
            print(&v)
        }
        KeyCommand::Delete {
            project,
            key_id,
            remote,
        } => {
            remote
                .console()?
                .call(
                    reqwest::Method::DELETE,
                    &format!("/projects/{project}/keys/{key_id}"),
                    None,
                )
                .await
                .with_context(|| format!("deleting key {key_id}"))?;
            print(&json!({}))
        }
    }
}

#[cfg(feature = "fault-points")]
async fn probe_rpc(grpc: &str, identity: &str, claim: u64) -> Result<()> {
    use raft::probe::Identity;
    let parts: Vec<&str> = identity.split(':').collect();
    let identity = match parts.as_slice() {
        ["anonymous"] => Identity::Anonymous,
        ["self-signed", id] => Identity::SelfSigned(id.parse()?),
        ["files", dir] => Identity::NodeFiles(dir.into()),
        ["minted", dir, id] => Identity::Minted(dir.into(), id.parse()?),
        _ => anyhow::bail!("unknown identity {identity:?}"),
    };
    let answers = raft::probe::every_rpc(grpc, identity, claim)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    print(&json!(answers))
}

/// A secret kept in a file: its first line, trimmed.
fn first_line(path: &std::path::Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

async fn cluster(c: ClusterCommand) -> Result<()> {
    match c {
        ClusterCommand::Status { remote } => {
            let v = remote
                .console()?
                .get("/cluster/status")
                .await
                .context("reading cluster status")?;
            print(&v)
        }
        ClusterCommand::Remove { node_id, remote } => {
            let v = remote
                .console()?
                .post("/cluster/remove", json!({ "nodeId": node_id }))
                .await
                .with_context(|| format!("removing node {node_id}"))?;
            print(&v)
        }
        ClusterCommand::Check { remote } => {
            let v = remote
                .console()?
                .post("/cluster/check", json!({}))
                .await
                .context("checking the replicas")?;
            print(&v)?;
            if v.get("consistent") != Some(&json!(true)) {
                anyhow::bail!("the replicas are not consistent");
            }
            Ok(())
        }
        ClusterCommand::RotateRootKey {
            new_key_file,
            remote,
        } => {
            let key = match new_key_file {
                Some(path) => first_line(&path)?,
                None => std::env::var("BASALT_NEW_ROOT_KEY").unwrap_or_default(),
            };
            anyhow::ensure!(
                key.len() >= 16,
                "the new root key (--new-key-file or BASALT_NEW_ROOT_KEY) must be at least 16 characters"
            );
            let sha256 = api::auth::sha256_hex(&key);
            let v = remote
                .console()?
                .post("/cluster/root-key", json!({ "sha256": sha256 }))
                .await
                .context("replacing the root key")?;
            print(&v)
        }
        ClusterCommand::RollingRestart {
            restart,
            per_node,
            remote,
        } => {
            let v = crate::rolling::rolling_restart(
                &remote.endpoint,
                &remote.root_key,
                &restart,
                std::time::Duration::from_secs(per_node),
            )
            .await
            .context("rolling restart")?;
            print(&v)
        }
        ClusterCommand::Placement {
            voters,
            learners,
            leader_region,
            remote,
        } => {
            let console = remote.console()?;
            let regions = |l: Vec<String>| -> Vec<String> {
                l.into_iter().filter(|r| !r.trim().is_empty()).collect()
            };
            let mut change = serde_json::Map::new();
            if let Some(v) = voters {
                change.insert("voters".into(), json!(regions(v)));
            }
            if let Some(l) = learners {
                change.insert("learners".into(), json!(regions(l)));
            }
            if let Some(r) = leader_region {
                change.insert("leaderRegion".into(), json!(r));
            }
            let v = if change.is_empty() {
                console.get("/cluster/placement").await
            } else {
                console
                    .call(
                        reqwest::Method::PUT,
                        "/cluster/placement",
                        Some(json!(change)),
                    )
                    .await
            }
            .context("the placement policy")?;
            print(&v)
        }
        ClusterCommand::JoinToken { ttl, remote } => {
            let v = remote
                .console()?
                .post("/cluster/join-token", json!({ "ttl": ttl }))
                .await
                .context("making a join token")?;
            print(&v)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_lifetimes_parse_with_units_and_bounds() {
        use super::parse_ttl;
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        for bad in [
            "",
            "h",
            "0",
            "1y",
            "-5m",
            "400d",
            "99999999999999999999d",
            "1.5h",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
