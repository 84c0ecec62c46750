//! TLS toward clients: a certificate per SNI (exact or `*.wildcard`), a default certificate
//! from the command line, per-SNI client-certificate verification (mTLS), ALPN `h2` and
//! `http/1.1`, TLS 1.2 and 1.3 only, session resumption by rotating tickets and a shared
//! session cache.
//!
//! The certificate is chosen after the ClientHello is read (`LazyConfigAcceptor`): each
//! certificate entity compiles to its own `ServerConfig` (its own client verifier), held by
//! the snapshot, so a config change applies to the next handshake and open connections keep
//! theirs. An SNI no certificate covers, with no default, gets a handshake alert.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::server::{ProducesTickets, ResolvesServerCert, StoresServerSessions};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;

use gatehouse_model::tls::{cert_facts, pem_certificates, pem_private_key, provider};
use gatehouse_model::{Certificate, ClientAuth};

/// What every server config shares: the crypto provider, the ticket keys (rotated every 6
/// hours, old ones still accepted for one more period) and the session-id cache.
struct Common {
    provider: Arc<rustls::crypto::CryptoProvider>,
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

fn common() -> &'static Common {
    static COMMON: OnceLock<Common> = OnceLock::new();
    COMMON.get_or_init(|| Common {
        provider: provider(),
        ticketer: ticketer().unwrap_or_else(|_| Arc::new(NoTickets)),
        sessions: ServerSessionMemoryCache::new(64 * 1024),
    })
}

#[cfg(not(feature = "aws-lc"))]
fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::ring::Ticketer::new()
}

#[cfg(feature = "aws-lc")]
fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    rustls::crypto::aws_lc_rs::Ticketer::new()
}

/// Used only if the system cannot make ticket keys (no randomness): resumption then goes
/// through the session cache alone.
#[derive(Debug)]
struct NoTickets;

impl ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Always the same certificate.
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// No certificate: the handshake fails with an alert.
#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// Builds the server config of one certificate (and its client CA, if any).
pub fn server_config(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
    client_auth: Option<ClientAuth>,
) -> Result<Arc<ServerConfig>, (&'static str, String)> {
    let c = common();
    let chain = pem_certificates(cert).map_err(|e| ("cert", e))?;
    let key = pem_private_key(key).map_err(|e| ("key", e))?;
    let certified =
        CertifiedKey::from_der(chain, key, &c.provider).map_err(|e| ("key", e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(c.provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ("cert", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(pem_certificates(pem).map_err(|e| ("client_ca", e))?);
            let v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), c.provider.clone());
            let v = if client_auth == Some(ClientAuth::Optional) {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| ("client_ca", e.to_string()))?)
        }
    };
    Ok(finish(
        builder.with_cert_resolver(Arc::new(One(Arc::new(certified)))),
    ))
}

fn finish(mut cfg: ServerConfig) -> Arc<ServerConfig> {
    let c = common();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = c.ticketer.clone();
    cfg.session_storage = c.sessions.clone();
    cfg.send_tls13_tickets = 2;
    Arc::new(cfg)
}

/// A config that answers every handshake with an alert (unknown SNI, no default).
fn refusing() -> Arc<ServerConfig> {
    static REFUSE: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    REFUSE
        .get_or_init(|| {
            let c = common();
            let builder = ServerConfig::builder_with_provider(c.provider.clone())
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12]);
            match builder {
                Ok(b) => finish(b.with_no_client_auth().with_cert_resolver(Arc::new(NoCert))),
                // The ring provider supports both versions; kept total rather than panicking.
                Err(_) => finish(
                    ServerConfig::builder_with_provider(c.provider.clone())
                        .with_safe_default_protocol_versions()
                        .expect("default protocol versions")
                        .with_no_client_auth()
                        .with_cert_resolver(Arc::new(NoCert)),
                ),
            }
        })
        .clone()
}

/// The certificates of one config version, by SNI.
#[derive(Default)]
pub struct CertStore {
    exact: HashMap<String, Arc<ServerConfig>>,
    /// `*.example.com` is stored under `example.com`: it covers one label more.
    wildcard: HashMap<String, Arc<ServerConfig>>,
}

impl CertStore {
    /// Compiles the certificates of a config; errors as `(index, field, message)`.
    pub fn build(certs: &[Certificate]) -> Result<CertStore, Vec<(usize, &'static str, String)>> {
        let mut store = CertStore::default();
        let mut errors = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            match server_config(&c.cert, &c.key, c.client_ca.as_deref(), c.client_auth) {
                Ok(cfg) => {
                    for sni in &c.snis {
                        let sni = sni.to_ascii_lowercase();
                        match sni.strip_prefix("*.") {
                            Some(suffix) => store.wildcard.insert(suffix.to_string(), cfg.clone()),
                            None => store.exact.insert(sni, cfg.clone()),
                        };
                    }
                }
                Err((f, m)) => errors.push((i, f, m)),
            }
        }
        if errors.is_empty() {
            Ok(store)
        } else {
            Err(errors)
        }
    }

    /// The config for a server name: exact, then one-label wildcard.
    pub fn find(&self, sni: &str) -> Option<&Arc<ServerConfig>> {
        if let Some(c) = self.exact.get(sni) {
            return Some(c);
        }
        let (_, parent) = sni.split_once('.')?;
        self.wildcard.get(parent)
    }

    /// True when no certificate is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty()
    }
}

/// A verified client certificate, as plugins and logs see it.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Subject distinguished name.
    pub subject: Arc<str>,
    /// Subject common name.
    pub common_name: Option<Arc<str>>,
    /// Subject alternative names.
    pub sans: Vec<Arc<str>>,
    /// Lower-case hex SHA-256 of the DER certificate.
    pub fingerprint: Arc<str>,
}

/// What the TLS handshake established for a connection.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The server name the client asked for.
    pub sni: Option<Arc<str>>,
    /// ALPN chose `h2`.
    pub h2: bool,
    /// The client certificate, verified against the SNI's `client_ca`.
    pub client_cert: Option<Arc<ClientCert>>,
}

fn client_cert(der: &[u8]) -> Option<ClientCert> {
    use sha2::Digest;
    let facts = cert_facts(der).ok()?;
    let digest = sha2::Sha256::digest(der);
    let mut fp = String::with_capacity(64);
    for b in digest {
        fp.push_str(&format!("{b:02x}"));
    }
    Some(ClientCert {
        subject: facts.subject.into(),
        common_name: facts.common_name.map(Arc::from),
        sans: facts.sans.into_iter().map(Arc::from).collect(),
        fingerprint: fp.into(),
    })
}

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client did not finish within the time allowed.
    #[error("TLS handshake timed out")]
    Timeout,
    /// Not TLS, a protocol error, or a refused client certificate.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

/// Runs the server side of a handshake on `stream`: reads the ClientHello, picks the config
/// for its SNI from `store` (else `default`, else refuses with an alert), completes the
/// handshake within `limit`.
pub async fn accept(
    stream: TcpStream,
    store: &CertStore,
    default: Option<&Arc<ServerConfig>>,
    limit: Duration,
) -> Result<(tokio_rustls::server::TlsStream<TcpStream>, TlsInfo), HandshakeError> {
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
                .await
                .map_err(HandshakeError::Failed)?;
        let sni: Option<Arc<str>> = start
            .client_hello()
            .server_name()
            .map(|s| Arc::from(s.to_ascii_lowercase()));
        let config = sni
            .as_deref()
            .and_then(|s| store.find(s))
            .or(default)
            .cloned()
            .unwrap_or_else(refusing);
        let tls = start
            .into_stream(config)
            .await
            .map_err(HandshakeError::Failed)?;
        let (_, conn) = tls.get_ref();
        let info = TlsInfo {
            sni,
            h2: conn.alpn_protocol() == Some(b"h2"),
            client_cert: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| client_cert(c))
                .map(Arc::new),
        };
        Ok((tls, info))
    };
    match tokio::time::timeout(limit, handshake).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout),
    }
}
