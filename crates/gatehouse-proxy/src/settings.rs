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
    /// Time a client has to send the complete request head.
    pub header_read_timeout: Duration,
    /// Default largest request body (routes may override).
    pub max_body_bytes: u64,
    /// How long idle upstream connections are kept.
    pub upstream_idle_timeout: Duration,
    /// Idle upstream connections kept per target and worker.
    pub upstream_max_idle: usize,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            trusted_proxies: Vec::new(),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024 * 1024,
            upstream_idle_timeout: Duration::from_secs(60),
            upstream_max_idle: 256,
            drain_timeout: Duration::from_secs(30),
        }
    }
}
