//! Traffic-control plugins.

pub mod counters;
pub mod limit_conn;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod request_size_limiting;
