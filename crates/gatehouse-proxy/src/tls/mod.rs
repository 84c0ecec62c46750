//! TLS on both sides of the proxy (rustls with the ring provider).

pub mod client;
pub mod server;
