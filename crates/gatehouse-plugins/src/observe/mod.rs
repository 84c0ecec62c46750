//! Observability plugins: request logs and metrics.

pub mod file_log;
pub mod http_log;
pub mod prometheus;
pub mod record;
