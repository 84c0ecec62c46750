//! Traffic-control plugins.

pub mod counters;
pub mod rate_limiting;
pub mod request_size_limiting;
