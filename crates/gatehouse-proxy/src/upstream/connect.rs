//! Opening a connection to a target: TCP, then TLS when the service's transport has it
//! (SNI and certificate name from the target's host), all within the connect timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::Transport;
use crate::snapshot::TargetRt;
use crate::stream::UpstreamStream;

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connect (or TLS handshake) did not finish in time.
    #[error("connect to {0} timed out")]
    Timeout(Arc<str>),
    /// Refused, unreachable or not resolvable.
    #[error("connect to {0}: {1}")]
    Failed(Arc<str>, std::io::Error),
    /// The TLS handshake failed (untrusted certificate, wrong name, protocol error).
    #[error("TLS to {0}: {1}")]
    Tls(Arc<str>, String),
}

/// Connects to `target` the way `transport` says, within `timeout`.
pub async fn connect(
    target: &TargetRt,
    transport: &Transport,
    timeout: Duration,
) -> Result<UpstreamStream, ConnectError> {
    let key = target.key.clone();
    let fut = async {
        let tcp = match target.host.parse::<std::net::IpAddr>() {
            Ok(ip) => TcpStream::connect(SocketAddr::new(ip, target.port)).await,
            Err(_) => TcpStream::connect((&*target.host, target.port)).await,
        }
        .map_err(|e| ConnectError::Failed(key.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &transport.tls else {
            return Ok(UpstreamStream::Plain(tcp));
        };
        let name = target
            .tls_name
            .clone()
            .ok_or_else(|| ConnectError::Tls(key.clone(), "no server name".into()))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Tls(key.clone(), tls_reason(&e)))?;
        Ok(UpstreamStream::Tls(Box::new(stream)))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ConnectError::Timeout(key.clone()))?
}

/// A readable reason for a failed client handshake (rustls wraps it in an io::Error).
fn tls_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(c)) => format!("invalid certificate: {c:?}"),
        Some(other) => other.to_string(),
        None => e.to_string(),
    }
}
