//! TLS toward upstreams: the upstream's certificate verified against the system roots (or
//! the service's `ca_certificates`) and its name, SNI sent, an optional client certificate
//! for upstream mTLS. `tls_verify: false` is honoured only when a service asks for it.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use gatehouse_model::tls::{pem_certificates, pem_private_key, provider};

/// The system's trusted roots, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading a system CA certificate");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "no system CA certificates found: https upstreams need `ca_certificates`"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// Accepts any certificate (the handshake's signatures are still checked): `tls_verify:
/// false`.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a service asks of TLS to its targets.
pub struct UpstreamTlsSpec<'a> {
    /// Verify the certificate and name.
    pub verify: bool,
    /// PEM bundles to trust instead of the system roots.
    pub ca_certificates: &'a [String],
    /// A client certificate chain and key (PEM) for upstream mTLS.
    pub client_certificate: Option<(&'a str, &'a str)>,
    /// Offer `h2` (HTTP/2 and gRPC) rather than `http/1.1` in ALPN.
    pub h2: bool,
}

/// Builds the client config of a service.
pub fn client_config(spec: &UpstreamTlsSpec<'_>) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if !spec.verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider.clone())))
    } else if spec.ca_certificates.is_empty() {
        builder.with_root_certificates(system_roots())
    } else {
        let mut roots = RootCertStore::empty();
        for pem in spec.ca_certificates {
            roots.add_parsable_certificates(pem_certificates(pem)?);
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match spec.client_certificate {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(pem_certificates(cert)?, pem_private_key(key)?)
            .map_err(|e| format!("client certificate: {e}"))?,
    };
    cfg.alpn_protocols = if spec.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(cfg))
}

/// The name to send as SNI and to verify: a DNS name, or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string())
            .map_err(|e| format!("`{host}` is not a valid TLS server name: {e}")),
    }
}
