//! The cluster's certificate authority and its node certificates, as plain functions over PEM
//! and DER: make a CA, make a key and a signing request, sign a request for a node id, and
//! read back what a certificate says (its node id, expiry, key).
//!
//! A node certificate names its node by one DNS name, `node-<id>.basalt`, and every node
//! certificate also carries [`ANY_MEMBER`], which a client asks for when it does not know which
//! node it is reaching (a `--join` seed). Keys are ECDSA P-256.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};

/// The name every node certificate carries besides its own.
pub const ANY_MEMBER: &str = "member.basalt";
/// How long a cluster CA is valid.
pub const CA_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

fn invalid(what: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid(what.to_string())
}

/// The DNS name a node's certificate carries.
pub fn node_name(id: u64) -> String {
    format!("node-{id}.basalt")
}

fn node_id_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("node-")?.strip_suffix(".basalt")?;
    match !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        true => digits.parse().ok(),
        false => None,
    }
}

fn time_at(unix_secs: i64) -> Result<time::OffsetDateTime, PkiError> {
    time::OffsetDateTime::from_unix_timestamp(unix_secs).map_err(invalid)
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never shows the key.
impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A new self-signed cluster CA, valid from an hour before `now` (clocks differ) for
/// [`CA_DAYS`]. The random part of its name tells two clusters' CAs apart in `openssl x509`.
pub fn new_ca(now: i64) -> Result<KeyedCert, PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let tag = hex::encode(&Sha256::digest(key.subject_public_key_info())[..4]);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Basalt cluster CA {tag}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time_at(now - 3600)?;
    params.not_after = time_at(now + CA_DAYS * 86_400)?;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A fresh private key (PEM) and a signing request for it (DER). The request names nothing:
/// the signer decides the names from the node id it admits.
pub fn new_request() -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A signing request for an existing key (PEM): a renewal keeps the key the cluster admitted.
pub fn request_for(key_pem: &str) -> Result<Vec<u8>, PkiError> {
    let key = KeyPair::from_pem(key_pem)?;
    Ok(CertificateParams::default()
        .serialize_request(&key)?
        .der()
        .to_vec())
}

/// Signs `csr_der` (whose signature proves the requester holds the key) as node `node_id`'s
/// certificate, valid from an hour before `now` for `ttl_secs`.
pub fn sign(
    ca: &KeyedCert,
    csr_der: &[u8],
    node_id: u64,
    now: i64,
    ttl_secs: i64,
) -> Result<String, PkiError> {
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        csr_der.to_vec(),
    ))?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, node_name(node_id));
    params.subject_alt_names = vec![
        SanType::DnsName(node_name(node_id).try_into()?),
        SanType::DnsName(ANY_MEMBER.try_into()?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time_at(now - 3600)?;
    params.not_after = time_at(now.saturating_add(ttl_secs))?;
    Ok(params.signed_by(&csr.public_key, &issuer)?.pem())
}

/// What a certificate says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The node id its `node-<id>.basalt` name gives, if it has one.
    pub node_id: Option<u64>,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of its public key (the DER SubjectPublicKeyInfo), hex.
    pub key_sha256: String,
}

pub fn inspect(der: &[u8]) -> Result<CertInfo, PkiError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(invalid)?;
    let mut node_id = None;
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                if let Some(id) = node_id_of_name(n) {
                    if node_id.is_some_and(|seen| seen != id) {
                        return Err(invalid("the certificate names two node ids"));
                    }
                    node_id = Some(id);
                }
            }
        }
    }
    Ok(CertInfo {
        node_id,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        key_sha256: hex::encode(Sha256::digest(cert.public_key().raw)),
    })
}

/// What `GET /v1/health/certificate` shows of a certificate, in the fields Appwrite names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// The subject as a distinguished name, `/CN=node-1.basalt`.
    pub name: String,
    pub subject_cn: String,
    pub issuer_organisation: String,
    pub not_before: i64,
    pub not_after: i64,
    /// The signature algorithm's short name (`ecdsa-with-SHA256`), else its OID.
    pub signature: String,
    /// Its DNS names.
    pub dns_names: Vec<String>,
}

pub fn describe(der: &[u8]) -> Result<Described, PkiError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(invalid)?;
    fn first<'a>(
        mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>>,
    ) -> String {
        it.next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string()
    }
    let subject_cn = first(cert.subject().iter_common_name());
    let algorithm = &cert.signature_algorithm.algorithm;
    let signature = x509_parser::objects::oid2sn(algorithm, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or_else(|_| algorithm.to_id_string());
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                dns_names.push(n.to_string());
            }
        }
    }
    Ok(Described {
        name: format!("/CN={subject_cn}"),
        subject_cn,
        issuer_organisation: first(cert.issuer().iter_organization()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        signature,
        dns_names,
    })
}

/// SHA-256 of a certificate's DER, hex: how a join token names the cluster's CA.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The certificates of a PEM text, in order.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    match certs.is_empty() {
        true => Err(invalid("no certificate in the PEM text")),
        false => Ok(certs),
    }
}

/// The first certificate of a PEM text, DER.
pub fn first_cert(pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    Ok(certs(pem)?.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_signed_node_certificate_names_its_node_and_key() {
        let ca = new_ca(NOW).unwrap();
        let (key_pem, csr) = new_request().unwrap();
        let pem = sign(&ca, &csr, 42, NOW, 86_400).unwrap();
        let info = inspect(&first_cert(&pem).unwrap()).unwrap();
        assert_eq!(info.node_id, Some(42));
        assert_eq!(info.not_after, NOW + 86_400);
        assert_eq!(info.not_before, NOW - 3600);
        let key = KeyPair::from_pem(&key_pem).unwrap();
        assert_eq!(
            info.key_sha256,
            hex::encode(Sha256::digest(key.subject_public_key_info()))
        );
        let ca_info = inspect(&first_cert(&ca.cert_pem).unwrap()).unwrap();
        assert_eq!(ca_info.node_id, None);
    }

    #[test]
    fn a_node_certificate_is_described_in_appwrites_terms() {
        let ca = new_ca(NOW).unwrap();
        let (_, csr) = new_request().unwrap();
        let pem = sign(&ca, &csr, 7, NOW, 86_400).unwrap();
        let d = describe(&first_cert(&pem).unwrap()).unwrap();
        assert_eq!(d.subject_cn, node_name(7));
        assert_eq!(d.name, format!("/CN={}", node_name(7)));
        assert_eq!((d.not_before, d.not_after), (NOW - 3600, NOW + 86_400));
        assert_eq!(d.dns_names[0], node_name(7));
        assert_eq!(d.signature, "ecdsa-with-SHA256");
    }

    #[test]
    fn a_renewal_keeps_the_key() {
        let ca = new_ca(NOW).unwrap();
        let (key_pem, csr) = new_request().unwrap();
        let first = inspect(&first_cert(&sign(&ca, &csr, 5, NOW, 60).unwrap()).unwrap()).unwrap();
        let again = request_for(&key_pem).unwrap();
        let renewed = sign(&ca, &again, 5, NOW + 30, 60).unwrap();
        let renewed = inspect(&first_cert(&renewed).unwrap()).unwrap();
        assert_eq!(renewed.key_sha256, first.key_sha256);
        assert_eq!(renewed.not_after, NOW + 90);
    }

    #[test]
    fn a_tampered_request_is_refused() {
        let ca = new_ca(NOW).unwrap();
        let (_, mut csr) = new_request().unwrap();
        let n = csr.len();
        csr[n - 3] ^= 0x55; // in the signature
        assert!(sign(&ca, &csr, 1, NOW, 60).is_err());
        assert!(sign(&ca, b"not a request", 1, NOW, 60).is_err());
    }

    #[test]
    fn names_parse_only_in_their_own_form() {
        assert_eq!(node_id_of_name("node-7.basalt"), Some(7));
        assert_eq!(node_id_of_name(&node_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "node-.basalt",
            "node-7.basalt.evil",
            "xnode-7.basalt",
            "node--7.basalt",
            "node-+7.basalt",
        ] {
            assert_eq!(node_id_of_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_key_never_formats() {
        let ca = new_ca(NOW).unwrap();
        let text = format!("{ca:?}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
    }
}
