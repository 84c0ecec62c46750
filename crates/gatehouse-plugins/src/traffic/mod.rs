//! Traffic-control plugins.

pub use gatehouse_counters as counters;
pub mod counting;
pub mod limit_conn;
pub mod proxy_cache;
pub mod rate_limiting;
pub mod request_size_limiting;
