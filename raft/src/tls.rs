//! Node-to-node mutual TLS: what a node holds (`Credentials`, kept under `<data dir>/tls`),
//! the rustls configurations made from it, the accept loop that hands tonic verified TLS
//! streams, and the connector its clients dial through.
//!
//! Every node's server asks for a client certificate and verifies any it gets against the
//! cluster CA; one without a certificate may only call `enroll` (the per-RPC check is in
//! `network`). A client verifies the server it reaches against the CA and, when it knows which
//! node it is calling, that the certificate names that node. The configurations are swapped
//! as a whole when the node's certificate is renewed: new connections use the new one.

use crate::pki::{self, CertInfo, KeyedCert, PkiError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where a node keeps its credentials, under its data dir.
pub const TLS_DIR: &str = "tls";
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node-key.pem";
const GOSSIP_KEY: &str = "gossip.key";
const ROOT_KEY_SHA: &str = "root-key.sha256";
const PEERS: &str = "peers";

/// How long a TLS handshake may take before the connection is dropped.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// What a node holds: the cluster CA's certificate (and its key, on nodes that sign), its own
/// certificate and key, and the gossip encryption key.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub ca_key_pem: Option<String>,
    pub node: KeyedCert,
    pub gossip_key: Option<[u8; 32]>,
    /// The cluster's root key digest (SHA-256, hex), as the member that admitted this node
    /// handed it over; `None` on the node that started the cluster (it has the key itself).
    pub root_key_sha256: Option<String>,
    /// The nodes (and pinned keys) the cluster had admitted when this node enrolled: whom it
    /// accepts Raft traffic from until its own copy of the cluster's state arrives.
    pub peers: Vec<(u64, String)>,
}

/// Never shows a key.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("ca_pem", &self.ca_pem)
            .field(
                "ca_key_pem",
                &self.ca_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("node", &self.node)
            .field("gossip_key", &self.gossip_key.map(|_| "<redacted>"))
            .field(
                "root_key_sha256",
                &self.root_key_sha256.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn read_opt(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::Io(format!("reading {}", path.display()), e)),
    }
}

/// Writes a file only its owner may read, atomically (a crash leaves the old or the new one).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Credentials {
    /// The credentials in `dir` (`<data dir>/tls`), if it holds a node certificate.
    pub fn load(dir: &Path) -> Result<Option<Credentials>, TlsError> {
        let (Some(cert_pem), Some(key_pem)) = (
            read_opt(&dir.join(NODE_CERT))?,
            read_opt(&dir.join(NODE_KEY))?,
        ) else {
            return Ok(None);
        };
        let ca_pem = read_opt(&dir.join(CA_CERT))?.ok_or_else(|| {
            TlsError::Invalid(format!(
                "{} has a node certificate but no {CA_CERT}",
                dir.display()
            ))
        })?;
        let gossip_key = match read_opt(&dir.join(GOSSIP_KEY))? {
            None => None,
            Some(hex_key) => Some(
                hex::decode(hex_key.trim())
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or_else(|| {
                        TlsError::Invalid(format!("{GOSSIP_KEY} is not 32 bytes of hex"))
                    })?,
            ),
        };
        Ok(Some(Credentials {
            ca_pem,
            ca_key_pem: read_opt(&dir.join(CA_KEY))?,
            node: KeyedCert { cert_pem, key_pem },
            gossip_key,
            root_key_sha256: read_opt(&dir.join(ROOT_KEY_SHA))?.map(|s| s.trim().to_string()),
            peers: read_opt(&dir.join(PEERS))?
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (id, key) = l.split_once(' ')?;
                    Some((id.parse().ok()?, key.trim().to_string()))
                })
                .collect(),
        }))
    }

    /// Writes them to `dir`, every key file mode 0600. The node certificate goes last: a
    /// crash part-way leaves no node certificate, so the next start enrolls again.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let io = |what: &str, e| TlsError::Io(format!("writing {what} in {}", dir.display()), e);
        std::fs::create_dir_all(dir).map_err(|e| io("the directory", e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("the directory", e))?;
        }
        write_private(&dir.join(CA_CERT), self.ca_pem.as_bytes()).map_err(|e| io(CA_CERT, e))?;
        if let Some(k) = &self.ca_key_pem {
            write_private(&dir.join(CA_KEY), k.as_bytes()).map_err(|e| io(CA_KEY, e))?;
        }
        if let Some(k) = &self.gossip_key {
            write_private(&dir.join(GOSSIP_KEY), hex::encode(k).as_bytes())
                .map_err(|e| io(GOSSIP_KEY, e))?;
        }
        if !self.peers.is_empty() {
            let text: String = self
                .peers
                .iter()
                .map(|(id, key)| format!("{id} {key}\n"))
                .collect();
            write_private(&dir.join(PEERS), text.as_bytes()).map_err(|e| io(PEERS, e))?;
        }
        if let Some(sha) = &self.root_key_sha256 {
            write_private(&dir.join(ROOT_KEY_SHA), sha.as_bytes())
                .map_err(|e| io(ROOT_KEY_SHA, e))?;
        }
        write_private(&dir.join(NODE_KEY), self.node.key_pem.as_bytes())
            .map_err(|e| io(NODE_KEY, e))?;
        write_private(&dir.join(NODE_CERT), self.node.cert_pem.as_bytes())
            .map_err(|e| io(NODE_CERT, e))?;
        Ok(())
    }

    /// A new cluster: a new CA, this node's certificate signed by it, a new gossip key.
    pub fn new_cluster(node_id: u64, now: i64, ttl_secs: i64) -> Result<Credentials, TlsError> {
        let ca = pki::new_ca(now)?;
        let (key_pem, csr) = pki::new_request()?;
        let cert_pem = pki::sign(&ca, &csr, node_id, now, ttl_secs)?;
        let mut gossip_key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut gossip_key)
            .map_err(|_| TlsError::Invalid("no randomness for the gossip key".into()))?;
        Ok(Credentials {
            ca_pem: ca.cert_pem,
            ca_key_pem: Some(ca.key_pem),
            node: KeyedCert { cert_pem, key_pem },
            gossip_key: Some(gossip_key),
            root_key_sha256: None,
            peers: Vec::new(),
        })
    }
}

fn read_files(files: &[PathBuf; 3], gossip_key: Option<[u8; 32]>) -> Result<Credentials, TlsError> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).map_err(|e| TlsError::Io(format!("reading {}", p.display()), e))
    };
    Ok(Credentials {
        ca_pem: read(&files[0])?,
        ca_key_pem: None,
        node: KeyedCert {
            cert_pem: read(&files[1])?,
            key_pem: read(&files[2])?,
        },
        gossip_key,
        root_key_sha256: None,
        peers: Vec::new(),
    })
}

/// The configurations made from one set of credentials.
struct Loaded {
    creds: Credentials,
    cert: CertInfo,
    ca_fingerprint: String,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in pki::certs(ca_pem)? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

fn key_der(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("node key: {e}")))
}

impl Loaded {
    fn new(node_id: u64, creds: Credentials) -> Result<Loaded, TlsError> {
        let node_der = pki::first_cert(&creds.node.cert_pem)?;
        let cert = pki::inspect(&node_der)?;
        if cert.node_id != Some(node_id) {
            return Err(TlsError::Invalid(format!(
                "the node certificate is for {}, not node {node_id} (its name must be {})",
                cert.node_id
                    .map_or("no node".to_string(), |id| format!("node {id}")),
                pki::node_name(node_id)
            )));
        }
        let ca_der = pki::first_cert(&creds.ca_pem)?;
        // The chain a node presents: its certificate, then the CA's (a joiner holding only the
        // CA's fingerprint checks it against this).
        let mut chain = pki::certs(&creds.node.cert_pem)?;
        chain.push(ca_der.clone());
        let roots = roots(&creds.ca_pem)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der(&creds.node.key_pem)?)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der(&creds.node.key_pem)?)?;
        Ok(Loaded {
            ca_fingerprint: pki::fingerprint(&ca_der),
            creds,
            cert,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A node's TLS identity, swappable at run time.
pub struct ClusterTls {
    node_id: u64,
    /// Where renewed credentials are written; `None` for certificates the operator brought.
    dir: Option<PathBuf>,
    /// The operator's files (CA, certificate, key), reloaded when they change.
    files: Option<[PathBuf; 3]>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("node_id", &self.node_id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl ClusterTls {
    pub fn new(
        node_id: u64,
        creds: Credentials,
        dir: Option<PathBuf>,
    ) -> Result<Arc<ClusterTls>, TlsError> {
        Ok(Arc::new(ClusterTls {
            node_id,
            dir,
            files: None,
            current: RwLock::new(Arc::new(Loaded::new(node_id, creds)?)),
        }))
    }

    /// A node whose certificates the operator brought in these files (CA, certificate, key);
    /// `reload` picks up replaced files.
    pub fn from_files(
        node_id: u64,
        files: [PathBuf; 3],
        gossip_key: Option<[u8; 32]>,
    ) -> Result<Arc<ClusterTls>, TlsError> {
        let creds = read_files(&files, gossip_key)?;
        Ok(Arc::new(ClusterTls {
            node_id,
            dir: None,
            files: Some(files),
            current: RwLock::new(Arc::new(Loaded::new(node_id, creds)?)),
        }))
    }

    /// Rereads the operator's files; uses them if they changed. Returns whether they did.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let cur = self.current();
        let creds = read_files(files, cur.creds.gossip_key)?;
        if creds.ca_pem == cur.creds.ca_pem
            && creds.node.cert_pem == cur.creds.node.cert_pem
            && creds.node.key_pem == cur.creds.node.key_pem
        {
            return Ok(false);
        }
        let loaded = Loaded::new(self.node_id, creds)?;
        // The cluster pinned the key this node was admitted with: a certificate for another
        // key would lock it out of every peer.
        if loaded.cert.key_sha256 != cur.cert.key_sha256 {
            return Err(TlsError::Invalid(
                "the new certificate is for another key than the one this node was admitted with; renew the certificate for the same key (a new key needs a new node id)".into(),
            ));
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    fn current(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces this node's certificate and key (renewal): saved first, then used by every
    /// new connection.
    pub fn install(&self, cert: KeyedCert) -> Result<CertInfo, TlsError> {
        let mut creds = self.current().creds.clone();
        creds.node = cert;
        let loaded = Loaded::new(self.node_id, creds)?;
        if let Some(dir) = &self.dir {
            loaded.creds.save(dir)?;
        }
        let info = loaded.cert.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(info)
    }

    /// Whether this node renews its own certificate (not one the operator brought).
    pub fn renews(&self) -> bool {
        self.files.is_none()
    }

    pub fn cert(&self) -> CertInfo {
        self.current().cert.clone()
    }

    /// This node's certificate, DER.
    pub fn cert_der(&self) -> Option<Vec<u8>> {
        pki::first_cert(&self.current().creds.node.cert_pem)
            .ok()
            .map(|c| c.to_vec())
    }

    pub fn credentials(&self) -> Credentials {
        self.current().creds.clone()
    }

    pub fn ca_fingerprint(&self) -> String {
        self.current().ca_fingerprint.clone()
    }

    /// Signs a request for node `node_id`, if this node holds the CA's key.
    pub fn sign(
        &self,
        csr: &[u8],
        node_id: u64,
        now: i64,
        ttl_secs: i64,
    ) -> Option<Result<String, PkiError>> {
        let cur = self.current();
        let ca = KeyedCert {
            cert_pem: cur.creds.ca_pem.clone(),
            key_pem: cur.creds.ca_key_pem.clone()?,
        };
        Some(pki::sign(&ca, csr, node_id, now, ttl_secs))
    }

    /// Connects to a member at `addr`; when `expect` names a node, its certificate must name it.
    pub async fn connect(
        &self,
        addr: &str,
        expect: Option<u64>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match expect {
            Some(id) => pki::node_name(id),
            None => pki::ANY_MEMBER.to_string(),
        };
        dial(addr, self.current().client.clone(), name).await
    }
}

async fn dial(
    addr: &str,
    config: Arc<ClientConfig>,
    name: String,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(name).map_err(std::io::Error::other)?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// How a node without credentials yet (a joiner) decides to trust the member it enrolls with.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Only a server whose chain holds the CA with this fingerprint (a join token's), and
    /// whose certificate that CA signed.
    CaFingerprint(String),
    /// Any server: the enrollment answer itself proves the cluster knows the root key.
    Proven,
}

/// Connects to `addr` without credentials, for `enroll`.
pub async fn connect_to_enroll(
    addr: &str,
    trust: Trust,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = client_trusting(trust, None).map_err(std::io::Error::other)?;
    dial(addr, Arc::new(config), pki::ANY_MEMBER.to_string()).await
}

/// A client configuration that checks the server as `trust` says (not against a cluster CA
/// it holds), presenting `cert` if given.
pub(crate) fn client_trusting(
    trust: Trust,
    cert: Option<&KeyedCert>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(EnrollVerifier {
            trust,
            provider: provider(),
        }));
    Ok(match cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder.with_client_auth_cert(pki::certs(&c.cert_pem)?, key_der(&c.key_pem)?)?,
    })
}

#[derive(Debug)]
struct EnrollVerifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for EnrollVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Trust::CaFingerprint(fp) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let ca = intermediates
            .iter()
            .find(|c| pki::fingerprint(c).eq_ignore_ascii_case(fp))
            .ok_or_else(|| {
                rustls::Error::General("the server's CA is not the one the join token names".into())
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?
        .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes (each bounded in
/// time, a bounded number at once), yielding the streams that made it. Stops when the
/// returned stream is dropped.
pub fn accept(listener: TcpListener, tls: Arc<ClusterTls>) -> Incoming {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.current().server.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    Incoming(rx)
}

/// The accepted streams, as the `Stream` tonic serves.
pub struct Incoming(tokio::sync::mpsc::Receiver<std::io::Result<ServerStream>>);

type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

impl futures::Stream for Incoming {
    type Item = std::io::Result<ServerStream>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// What the certificate a peer presented on this request's connection says (it names a
/// node), or why there is none.
pub fn peer_cert<T>(req: &tonic::Request<T>) -> Result<(u64, CertInfo), tonic::Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        tonic::Status::unauthenticated(
            "a client certificate signed by the cluster's CA is required",
        )
    })?;
    let first = certs.first().ok_or_else(|| {
        tonic::Status::unauthenticated(
            "a client certificate signed by the cluster's CA is required",
        )
    })?;
    let info = pki::inspect(first).map_err(|e| {
        tonic::Status::permission_denied(format!("unreadable client certificate: {e}"))
    })?;
    match info.node_id {
        Some(id) => Ok((id, info)),
        None => Err(tonic::Status::permission_denied(
            "the client certificate names no node",
        )),
    }
}

/// How nodes talk: mutual TLS, or plain text (`--insecure`, for local experiments only).
#[derive(Clone, Debug)]
pub enum Transport {
    Insecure,
    Tls(Arc<ClusterTls>),
}

impl Transport {
    pub fn tls(&self) -> Option<&Arc<ClusterTls>> {
        match self {
            Transport::Tls(t) => Some(t),
            Transport::Insecure => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_round_trip_through_their_files_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let mut creds = Credentials::new_cluster(3, 1_800_000_000, 3600).unwrap();
        creds.root_key_sha256 = Some("ab".repeat(32));
        creds.peers = vec![(1, "k1".into()), (2, "k2".into())];
        creds.save(dir.path()).unwrap();
        let back = Credentials::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.ca_pem, creds.ca_pem);
        assert_eq!(back.ca_key_pem, creds.ca_key_pem);
        assert_eq!(back.node.cert_pem, creds.node.cert_pem);
        assert_eq!(back.gossip_key, creds.gossip_key);
        assert_eq!(back.root_key_sha256, creds.root_key_sha256);
        assert_eq!(back.peers, creds.peers);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [CA_KEY, NODE_KEY, GOSSIP_KEY] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        assert!(Credentials::load(&dir.path().join("none"))
            .unwrap()
            .is_none());
        let text = format!("{back:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }

    #[test]
    fn a_certificate_for_another_node_is_not_this_nodes_identity() {
        let creds = Credentials::new_cluster(3, 1_800_000_000, 3600).unwrap();
        assert!(ClusterTls::new(3, creds.clone(), None).is_ok());
        let err = ClusterTls::new(4, creds, None).unwrap_err().to_string();
        assert!(err.contains("node 3, not node 4"), "{err}");
    }
}
