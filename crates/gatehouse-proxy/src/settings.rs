//! Node-level proxy settings (from flags and environment, not from the config store).

use std::time::Duration;

use ipnet::IpNet;

/// Limits and behaviour of the proxy listener.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Peers whose `X-Forwarded-*` and `X-Request-Id` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest request head (request line + headers) in bytes.
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    pub max_headers: usize,
    /// Time a client has to send the complete request head (from the connection's start for
    /// the first request, from its first byte for later ones); also the time an HTTP/2
    /// connection has to open its first stream.
    pub header_read_timeout: Duration,
    /// How long a keep-alive HTTP/1 connection may wait for its next request, and an HTTP/2
    /// connection may sit with no stream open, before the gateway closes it.
    pub idle_timeout: Duration,
    /// How long a client may take to accept any bytes of the answer before the gateway gives
    /// up on it (a client that stops reading).
    pub send_timeout: Duration,
    /// Most client connections open at once on the proxy listener (all workers together;
    /// WebSocket tunnels count). Connections over the cap are closed at once.
    pub max_connections: usize,
    /// Keep request headers whose names contain `_` (dropped by default).
    pub allow_underscores_in_headers: bool,
    /// Most concurrent streams per HTTP/2 connection.
    pub h2_max_concurrent_streams: u32,
    /// The TLS listener's certificate for SNIs no certificate entity covers (and clients
    /// that send no SNI); without it such handshakes fail with an alert.
    pub default_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Default largest request body (routes may override).
    pub max_body_bytes: u64,
    /// How long idle upstream connections are kept.
    pub upstream_idle_timeout: Duration,
    /// Idle upstream connections kept per target and worker.
    pub upstream_max_idle: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// The call log, when on: every request's record goes to it.
    pub call_sink: Option<CallSinkRef>,
}

/// The node's call log, as the proxy holds it.
#[derive(Clone)]
pub struct CallSinkRef(pub std::sync::Arc<dyn crate::plugin::CallSink>);

impl std::fmt::Debug for CallSinkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallSink")
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            trusted_proxies: Vec::new(),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_connections: 16_384,
            allow_underscores_in_headers: false,
            h2_max_concurrent_streams: 128,
            default_tls: None,
            max_body_bytes: 16 * 1024 * 1024,
            upstream_idle_timeout: Duration::from_secs(60),
            upstream_max_idle: 256,
            drain_timeout: Duration::from_secs(30),
            call_sink: None,
        }
    }
}
