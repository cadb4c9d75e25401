//! How a new node gets its certificate: it makes a key, sends a signing request to any member
//! with a proof that it may join, and gets back a certificate signed by the cluster CA, the CA
//! itself, and what else a member holds (the CA's key, the gossip key, the root key's digest).
//!
//! Two proofs (CONTRACT.md §1):
//! - **the root key**: the joiner and the member each prove they know the cluster's root key
//!   without sending it. Both compute an HMAC keyed by the root key's SHA-256 digest (which is
//!   all a member keeps): the joiner over its node id, a fresh nonce and its request, the member
//!   over the nonce and what it answers. The joiner trusts the CA it receives only once the
//!   member's HMAC checks out.
//! - **a join token** (`basalt cluster join-token`): carries the CA's fingerprint and a
//!   one-time secret. The joiner only talks to a server whose chain holds that CA before it
//!   sends the secret; the cluster stores only the secret's digest and consumes the token in a
//!   Raft entry, so it works once, before it expires.

use crate::rpc::RemoteError;
use crate::tls::{self, Credentials, Trust};
use crate::ReplicationError;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A joiner's proof that it may join.
#[derive(Clone, Serialize, Deserialize)]
pub enum Proof {
    RootKey { nonce: Vec<u8>, mac: Vec<u8> },
    Token { id: String, secret: String },
}

/// Never shows the token secret.
impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Proof::RootKey { .. } => f.write_str("Proof::RootKey"),
            Proof::Token { id, .. } => write!(f, "Proof::Token({id})"),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    pub node_id: u64,
    /// A certificate signing request (DER) for the joiner's new key.
    pub csr: Vec<u8>,
    pub proof: Proof,
}

/// What a member hands a node it admits.
#[derive(Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub ca_pem: String,
    pub ca_key_pem: Option<String>,
    pub cert_pem: String,
    pub gossip_key: Option<[u8; 32]>,
    /// SHA-256 of the cluster's root key, hex: what every node checks the root key against.
    pub root_key_sha256: String,
    /// For a root-key proof: the member's HMAC over the nonce and this answer.
    pub mac: Vec<u8>,
    /// For a root-key proof: the CA key and gossip key, encrypted (AES-256-GCM) under a key
    /// derived from the root key's digest and the nonce, so that a server the joiner has not
    /// verified yet — which could be relaying to a real member — never sees them in the clear.
    pub sealed: Vec<u8>,
    /// Every node the cluster had admitted, with its pinned key: until its own state arrives
    /// the joiner accepts Raft traffic from these only.
    pub members: Vec<(u64, String)>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn key(root_key_sha256: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, root_key_sha256.as_bytes())
}

fn join_message(node_id: u64, nonce: &[u8], csr: &[u8]) -> Vec<u8> {
    let mut m = b"basalt-enroll-v1\0".to_vec();
    m.extend_from_slice(&node_id.to_be_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(&Sha256::digest(csr));
    m
}

fn accept_message(nonce: &[u8], e: &Enrolled) -> Vec<u8> {
    let mut m = b"basalt-accept-v1\0".to_vec();
    m.extend_from_slice(nonce);
    for part in [
        e.ca_pem.as_bytes(),
        e.cert_pem.as_bytes(),
        e.ca_key_pem.as_deref().unwrap_or("").as_bytes(),
        e.gossip_key.as_ref().map_or(&[][..], |k| &k[..]),
        e.root_key_sha256.as_bytes(),
        &e.sealed,
        &bincode::serialize(&e.members).unwrap_or_default(),
    ] {
        m.extend_from_slice(&Sha256::digest(part));
    }
    m
}

/// The joiner's root-key proof for its request.
pub fn prove(root_key_sha256: &str, node_id: u64, csr: &[u8]) -> Proof {
    let mut nonce = vec![0u8; 32];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    let mac = hmac::sign(&key(root_key_sha256), &join_message(node_id, &nonce, csr));
    Proof::RootKey {
        nonce,
        mac: mac.as_ref().to_vec(),
    }
}

/// The member's check of a root-key proof (constant time).
pub fn check_proof(
    root_key_sha256: &str,
    node_id: u64,
    csr: &[u8],
    nonce: &[u8],
    mac: &[u8],
) -> bool {
    nonce.len() == 32
        && hmac::verify(
            &key(root_key_sha256),
            &join_message(node_id, nonce, csr),
            mac,
        )
        .is_ok()
}

fn secrets_key(root_key_sha256: &str, nonce: &[u8]) -> ring::aead::LessSafeKey {
    let mut m = b"basalt-enroll-secrets-v1\0".to_vec();
    m.extend_from_slice(nonce);
    let k = hmac::sign(&key(root_key_sha256), &m);
    let unbound = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, k.as_ref())
        .expect("an HMAC-SHA256 tag is an AES-256 key");
    ring::aead::LessSafeKey::new(unbound)
}

type Secrets = (Option<String>, Option<[u8; 32]>);

/// The member seals its answer to a root-key proof: encrypts the secrets, then signs it all.
pub fn seal(root_key_sha256: &str, nonce: &[u8], e: &mut Enrolled) {
    let secrets: Secrets = (e.ca_key_pem.take(), e.gossip_key.take());
    let mut buf = bincode::serialize(&secrets).unwrap_or_default();
    // The key is new for every nonce (a fresh random one per request): a fixed IV is safe.
    let iv = ring::aead::Nonce::assume_unique_for_key([0; 12]);
    match secrets_key(root_key_sha256, nonce).seal_in_place_append_tag(
        iv,
        ring::aead::Aad::empty(),
        &mut buf,
    ) {
        Ok(()) => e.sealed = buf,
        Err(_) => e.sealed.clear(),
    }
    e.mac = hmac::sign(&key(root_key_sha256), &accept_message(nonce, e))
        .as_ref()
        .to_vec();
}

/// The joiner checks a root-key answer and decrypts its secrets; `None` if the member did not
/// prove it knows the root key.
fn unseal(root_key_sha256: &str, nonce: &[u8], mut e: Enrolled) -> Option<Enrolled> {
    hmac::verify(&key(root_key_sha256), &accept_message(nonce, &e), &e.mac).ok()?;
    let iv = ring::aead::Nonce::assume_unique_for_key([0; 12]);
    let mut buf = std::mem::take(&mut e.sealed);
    let plain = secrets_key(root_key_sha256, nonce)
        .open_in_place(iv, ring::aead::Aad::empty(), &mut buf)
        .ok()?;
    let (ca_key_pem, gossip_key): Secrets = bincode::deserialize(plain).ok()?;
    e.ca_key_pem = ca_key_pem;
    e.gossip_key = gossip_key;
    Some(e)
}

/// SHA-256 of a secret, hex: how the cluster keeps a join token's secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A join token: `basalt1.<CA fingerprint>.<token id>.<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JoinToken({}, {})", self.ca_fingerprint, self.id)
    }
}

const TOKEN_PREFIX: &str = "basalt1";

impl JoinToken {
    pub fn new(ca_fingerprint: String) -> JoinToken {
        let mut bytes = [0u8; 24];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        JoinToken {
            ca_fingerprint,
            id: hex::encode(&bytes[..8]),
            secret: hex::encode(&bytes[8..]),
        }
    }

    pub fn secret_sha256(&self) -> String {
        digest(&self.secret)
    }

    pub fn parse(s: &str) -> Option<JoinToken> {
        let mut parts = s.trim().split('.');
        let (prefix, fp, id, secret) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex_of = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
        match prefix == TOKEN_PREFIX
            && parts.next().is_none()
            && hex_of(fp, 64)
            && hex_of(id, 16)
            && hex_of(secret, 32)
        {
            true => Some(JoinToken {
                ca_fingerprint: fp.to_ascii_lowercase(),
                id: id.to_ascii_lowercase(),
                secret: secret.to_ascii_lowercase(),
            }),
            false => None,
        }
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.ca_fingerprint, self.id, self.secret
        )
    }
}

/// What a joiner proves itself with.
#[derive(Clone)]
pub enum Credential {
    /// SHA-256 of the root key the joiner was given, hex.
    RootKey(String),
    Token(JoinToken),
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The cluster said no; asking again will not change that.
    #[error("{seed} refused this node: {reason}")]
    Refused { seed: String, reason: String },
    #[error("{seed} answered without proving it knows the root key: it is not this cluster")]
    Impostor { seed: String },
    #[error("{0}")]
    Pki(#[from] crate::pki::PkiError),
}

/// Asks the members at `seeds` (in turn, until one answers) to admit node `node_id`. Retries
/// while none can be reached or the cluster cannot commit yet; returns at once when refused.
pub async fn enroll(
    seeds: &[String],
    node_id: u64,
    credential: &Credential,
) -> Result<Credentials, EnrollError> {
    // One key for every attempt: an attempt whose answer was lost after the cluster admitted
    // this key (and used the token) is repeated with the same key, which the cluster accepts.
    let (key_pem, csr) = crate::pki::new_request()?;
    let mut attempt = 0usize;
    loop {
        let seed = &seeds[attempt % seeds.len()];
        attempt += 1;
        match enroll_once(seed, node_id, credential, &key_pem, &csr).await {
            Ok(creds) => return Ok(creds),
            Err(Retry::No(e)) => return Err(e),
            Err(Retry::Yes(reason)) => {
                tracing::warn!(%seed, %reason, "cannot enroll yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

enum Retry {
    Yes(String),
    No(EnrollError),
}

async fn enroll_once(
    seed: &str,
    node_id: u64,
    credential: &Credential,
    key_pem: &str,
    csr: &[u8],
) -> Result<Credentials, Retry> {
    let (trust, proof) = match credential {
        Credential::RootKey(sha) => (Trust::Proven, prove(sha, node_id, csr)),
        Credential::Token(t) => (
            Trust::CaFingerprint(t.ca_fingerprint.clone()),
            Proof::Token {
                id: t.id.clone(),
                secret: t.secret.clone(),
            },
        ),
    };
    let nonce = match &proof {
        Proof::RootKey { nonce, .. } => nonce.clone(),
        Proof::Token { .. } => Vec::new(),
    };
    let refused = |reason: String| {
        Retry::No(EnrollError::Refused {
            seed: seed.to_string(),
            reason,
        })
    };
    let stream = tls::connect_to_enroll(seed, trust.clone())
        .await
        .map_err(|e| match &trust {
            // A server that fails the token's pin will fail it again.
            Trust::CaFingerprint(_) if e.kind() == std::io::ErrorKind::InvalidData => {
                refused(format!("{e}"))
            }
            _ => Retry::Yes(e.to_string()),
        })?;
    let mut client = crate::network::over(stream)
        .await
        .map_err(|e| Retry::Yes(e.to_string()))?;
    let mut req = tonic::Request::new(Request {
        node_id,
        csr: csr.to_vec(),
        proof,
    });
    req.set_timeout(Duration::from_secs(30));
    let answer = client
        .enroll(req)
        .await
        .map_err(|s| Retry::Yes(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let e = match answer {
        Ok(e) => e,
        Err(RemoteError::Replication(ReplicationError::Refused(r))) => {
            return Err(refused(r.to_string()))
        }
        Err(other) => return Err(Retry::Yes(other.to_string())),
    };
    let e = match credential {
        Credential::RootKey(sha) => unseal(sha, &nonce, e).ok_or_else(|| {
            Retry::No(EnrollError::Impostor {
                seed: seed.to_string(),
            })
        })?,
        Credential::Token(t) => {
            let ca = crate::pki::first_cert(&e.ca_pem).map_err(|e| Retry::No(e.into()))?;
            if !crate::pki::fingerprint(&ca).eq_ignore_ascii_case(&t.ca_fingerprint) {
                return Err(refused(
                    "the cluster's CA is not the one the token names".into(),
                ));
            }
            e
        }
    };
    Ok(Credentials {
        ca_pem: e.ca_pem,
        ca_key_pem: e.ca_key_pem,
        node: crate::pki::KeyedCert {
            cert_pem: e.cert_pem,
            key_pem: key_pem.to_string(),
        },
        gossip_key: e.gossip_key,
        root_key_sha256: Some(e.root_key_sha256),
        peers: e.members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_key_proofs_check_only_with_the_same_key_and_request() {
        let sha = "a".repeat(64);
        let Proof::RootKey { nonce, mac } = prove(&sha, 7, b"csr") else {
            unreachable!()
        };
        assert!(check_proof(&sha, 7, b"csr", &nonce, &mac));
        assert!(!check_proof(&"b".repeat(64), 7, b"csr", &nonce, &mac));
        assert!(!check_proof(&sha, 8, b"csr", &nonce, &mac));
        assert!(!check_proof(&sha, 7, b"other", &nonce, &mac));
        assert!(!check_proof(&sha, 7, b"csr", &nonce[..16], &mac));
        let mut e = Enrolled {
            ca_pem: "ca".into(),
            ca_key_pem: Some("CA PRIVATE KEY".into()),
            cert_pem: "c".into(),
            gossip_key: Some([1; 32]),
            root_key_sha256: sha.clone(),
            mac: vec![],
            sealed: vec![],
            members: vec![(1, "k1".into())],
        };
        seal(&sha, &nonce, &mut e);
        // What crosses the wire holds the secrets only encrypted.
        assert!(e.ca_key_pem.is_none() && e.gossip_key.is_none());
        let wire = bincode::serialize(&e).unwrap();
        assert!(!wire.windows(14).any(|w| w == b"CA PRIVATE KEY"));
        let opened = unseal(&sha, &nonce, e.clone()).unwrap();
        assert_eq!(opened.ca_key_pem.as_deref(), Some("CA PRIVATE KEY"));
        assert_eq!(opened.gossip_key, Some([1; 32]));
        assert!(unseal(&"b".repeat(64), &nonce, e.clone()).is_none());
        assert!(unseal(&sha, &[9; 32], e.clone()).is_none());
        let mut swapped = e.clone();
        swapped.ca_pem = "another ca".into();
        assert!(unseal(&sha, &nonce, swapped).is_none());
        let mut pins = e.clone();
        pins.members.push((66, "evil".into()));
        assert!(unseal(&sha, &nonce, pins).is_none());
        let mut tampered = e.clone();
        tampered.sealed[0] ^= 1;
        assert!(unseal(&sha, &nonce, tampered).is_none());
    }

    #[test]
    fn tokens_round_trip_and_reject_other_shapes() {
        let t = JoinToken::new("ab".repeat(32));
        let text = t.to_string();
        assert_eq!(JoinToken::parse(&text), Some(t.clone()));
        assert!(!format!("{t:?}").contains(&t.secret));
        for bad in [
            "",
            "basalt1",
            &text.replace("basalt1", "basalt2"),
            &format!("{text}.x"),
            &text[..text.len() - 1],
            &text.replace(&t.secret, &"z".repeat(32)),
        ] {
            assert_eq!(JoinToken::parse(bad), None, "{bad}");
        }
    }
}
