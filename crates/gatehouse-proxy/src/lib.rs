//! Gatehouse's data plane: path normalization, the router, config snapshots, the upstream
//! connection pool and the proxy handler that ties them together.

pub mod balancer;
pub mod body;
pub mod coarse;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod h1;
pub mod h1server;
pub mod handler;
pub mod outcall;
pub mod pathnorm;
pub mod plugin;
pub mod pool;
pub mod request_head;
pub mod router;
pub mod server;
pub mod settings;
pub mod snapshot;
pub mod stream;
pub mod tls;
pub mod tunnel;
pub mod upstream;
pub mod wire;

pub use handler::Shared;
pub use server::{bind, start, Listener, ProxyHandle};
pub use settings::ProxySettings;
pub use snapshot::Snapshot;
