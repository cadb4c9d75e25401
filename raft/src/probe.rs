//! Test-only (`fault-points`): calls every node-to-node RPC of a node as a given client
//! identity, each with a request that would do harm if it were accepted, and reports what each
//! answered. The security tests use it to check that a node refuses outsiders on every method.

use crate::network;
use crate::pki::{self, KeyedCert};
use crate::tls::{self, Credentials, TLS_DIR};
use crate::NodeInfo;
use openraft::{SnapshotMeta, Vote};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;

/// Who the probe claims to be.
pub enum Identity {
    /// No client certificate.
    Anonymous,
    /// A self-signed certificate naming node `id`.
    SelfSigned(u64),
    /// The certificate and key in a node's data dir (`<dir>/tls`).
    NodeFiles(std::path::PathBuf),
    /// A new key, certified for node `id` by the CA key in a node's data dir: a certificate
    /// someone holding the CA key could make.
    Minted(std::path::PathBuf, u64),
}

fn cert_for(identity: &Identity) -> Result<Option<KeyedCert>, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs() as i64;
    let load = |dir: &Path| {
        Credentials::load(&dir.join(TLS_DIR))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no credentials in {}", dir.display()))
    };
    Ok(match identity {
        Identity::Anonymous => None,
        Identity::SelfSigned(id) => {
            // A CA of its own: the certificate looks right, but no cluster CA signed it.
            let ca = pki::new_ca(now).map_err(|e| e.to_string())?;
            let (key_pem, csr) = pki::new_request().map_err(|e| e.to_string())?;
            let cert_pem = pki::sign(&ca, &csr, *id, now, 3600).map_err(|e| e.to_string())?;
            Some(KeyedCert { cert_pem, key_pem })
        }
        Identity::NodeFiles(dir) => Some(load(dir)?.node),
        Identity::Minted(dir, id) => {
            let creds = load(dir)?;
            let ca = KeyedCert {
                cert_pem: creds.ca_pem,
                key_pem: creds.ca_key_pem.ok_or("that node holds no CA key")?,
            };
            let (key_pem, csr) = pki::new_request().map_err(|e| e.to_string())?;
            let cert_pem = pki::sign(&ca, &csr, *id, now, 3600).map_err(|e| e.to_string())?;
            Some(KeyedCert { cert_pem, key_pem })
        }
    })
}

/// Calls every RPC of the node at `addr` as `identity`, each request acting as node `claim`
/// where it names one. Returns each method's answer: `"ok"`, or the gRPC code and message.
pub async fn every_rpc(
    addr: &str,
    identity: Identity,
    claim: u64,
) -> Result<BTreeMap<&'static str, String>, String> {
    // Any server will do: the probe is about what the server accepts.
    let config = tls::client_trusting(tls::Trust::Proven, cert_for(&identity)?.as_ref())
        .map_err(|e| e.to_string())?;
    let config = Arc::new(config);
    let mut out = BTreeMap::new();
    let vote = Vote::new_committed(1 << 40, claim);
    let info = NodeInfo {
        grpc: "203.0.113.1:9".into(),
        http: "http://203.0.113.1:9".into(),
        region: "probe".into(),
        gossip: String::new(),
    };
    let hijack = model::Envelope::new(
        "probe-hijack",
        model::RequestId(7),
        model::Actor::Operator,
        model::Op::Projects(model::command::ProjectOp::Create {
            name: "hijacked".into(),
        }),
    );
    macro_rules! call {
        ($name:literal, $method:ident, $req:expr) => {{
            // A connection per call: one refused call must not spoil the next.
            let stream = {
                let tcp = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let name = rustls::pki_types::ServerName::try_from(pki::ANY_MEMBER)
                    .map_err(|e| e.to_string())?;
                tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await
            };
            let answer = match stream {
                Err(e) => format!("handshake: {e}"),
                Ok(stream) => match network::over(stream).await {
                    Err(e) => format!("connection: {e}"),
                    Ok(mut client) => {
                        let mut req = tonic::Request::new($req);
                        // Longer than the server's handshake bound, so a handshake it never
                        // finishes shows as the dropped connection it ends in.
                        req.set_timeout(tls::HANDSHAKE_TIMEOUT * 2);
                        match client.$method(req).await {
                            Ok(r) => match format!("{:?}", r.into_inner()) {
                                // The method ran and the node answered with a refusal.
                                e if e.starts_with("Err(") => format!("Refused: {e}"),
                                _ => "ok".to_string(),
                            },
                            // The server's TLS layer dropped the connection (TLS 1.3 reports a
                            // refused client certificate after the client's handshake ends).
                            Err(s)
                                if matches!(
                                    s.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::Unknown
                                        | tonic::Code::Cancelled
                                ) && (s.message().contains("transport error")
                                    || s.message().contains("connection is gone")
                                    || s.message().contains("operation was canceled")) =>
                            {
                                format!("tls-refused: {}", s.message())
                            }
                            Err(s) => format!("{:?}: {}", s.code(), s.message()),
                        }
                    }
                },
            };
            out.insert($name, answer);
        }};
    }
    call!(
        "vote",
        vote,
        openraft::raft::VoteRequest {
            vote,
            last_log_id: None
        }
    );
    call!(
        "append",
        append,
        openraft::raft::AppendEntriesRequest {
            vote,
            prev_log_id: None,
            entries: vec![],
            leader_commit: None,
        }
    );
    call!(
        "snapshot",
        snapshot,
        openraft::raft::InstallSnapshotRequest {
            vote,
            meta: SnapshotMeta {
                last_log_id: None,
                last_membership: Default::default(),
                snapshot_id: "probe".into(),
            },
            offset: 0,
            data: vec![0; 16],
            done: false,
        }
    );
    call!("forward", forward, hijack.clone());
    call!("read_index", read_index, ());
    call!("digest", digest, model::RequestId(1));
    call!("ping", ping, ());
    call!("announce", announce, (claim, info.clone()));
    call!("join", join, (claim, info.clone()));
    call!("remove", remove, claim);
    call!(
        "renew",
        renew,
        pki::new_request().map_err(|e| e.to_string())?.1
    );
    Ok(out)
}
