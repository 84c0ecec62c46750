//! Checks of TLS material in the config: a certificate chain and its key, CA bundles. They
//! run with the rest of validation, so a bad certificate is refused (naming the entity and
//! field) before it can reach a listener, and the running config stays.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates of a PEM bundle, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => Err("no PEM certificate found".into()),
        Err(e) => Err(format!("not a PEM certificate: {e}")),
    }
}

/// The private key of a PEM document (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn pem_private_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("not a PEM private key: {e}"))
}

/// The crypto provider the gateway's TLS uses (also to check keys at validation): ring,
/// or aws-lc-rs with the `aws-lc` feature (docs/tls.md has the measurements).
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    #[cfg(feature = "aws-lc")]
    return std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(not(feature = "aws-lc"))]
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// What a certificate says, for messages and for mTLS identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Subject distinguished name (RFC 4514 form).
    pub subject: String,
    /// Subject common name, if any.
    pub common_name: Option<String>,
    /// Subject alternative names: DNS names, e-mail addresses, URIs, IP addresses.
    pub sans: Vec<String>,
    /// Not valid after (Unix seconds).
    pub not_after: i64,
    /// Not valid before (Unix seconds).
    pub not_before: i64,
}

/// Reads the subject, names and validity of a DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                    sans.push((*s).to_string())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(b);
                        sans.push(std::net::Ipv6Addr::from(a).to_string());
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        common_name,
        sans,
        not_after: cert.validity().not_after.timestamp(),
        not_before: cert.validity().not_before.timestamp(),
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks a certificate chain (leaf first) and its private key: every PEM block parses,
/// each certificate is issued by the next one, the leaf is within its validity period, and
/// the key is the leaf's. Errors name the field (`cert` or `key`).
pub fn check_certificate(cert: &str, key: &str) -> Result<CertFacts, (&'static str, String)> {
    use x509_parser::prelude::*;
    let chain = pem_certificates(cert).map_err(|e| ("cert", e))?;
    let key = pem_private_key(key).map_err(|e| ("key", e))?;
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der)
            .map_err(|e| ("cert", format!("certificate {} of the chain: {e}", i + 1)))?;
        parsed.push(c);
    }
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer() != pair[1].subject() {
            return Err((
                "cert",
                format!(
                    "the chain is out of order: certificate {} (issued by `{}`) is followed by `{}`; put the leaf first, then each issuer",
                    i + 1,
                    pair[0].issuer(),
                    pair[1].subject()
                ),
            ));
        }
    }
    let facts = cert_facts(&chain[0]).map_err(|e| ("cert", e))?;
    let t = now();
    if facts.not_after < t {
        return Err((
            "cert",
            format!(
                "the certificate `{}` expired on {}",
                facts.subject,
                parsed[0].validity().not_after
            ),
        ));
    }
    if facts.not_before > t {
        return Err((
            "cert",
            format!(
                "the certificate `{}` is not valid before {}",
                facts.subject,
                parsed[0].validity().not_before
            ),
        ));
    }
    rustls::sign::CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        (
            "key",
            match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_string()
                }
                e => format!("unusable private key: {e}"),
            },
        )
    })?;
    Ok(facts)
}

/// Checks a CA bundle (one or more PEM certificates).
pub fn check_ca_bundle(pem: &str) -> Result<(), String> {
    let certs = pem_certificates(pem)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("no usable CA certificate in the bundle".into());
    }
    Ok(())
}
