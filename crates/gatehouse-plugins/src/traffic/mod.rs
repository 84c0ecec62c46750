//! Traffic-control plugins.

pub mod request_size_limiting;
