//! Test helpers shared by Gatehouse's integration tests: real upstream HTTP servers (echo,
//! status, slow, streaming/SSE, WebSocket, connection-dropping), a launcher for the real
//! `gatehouse` binary, and a small HTTP client.

pub mod backing;
pub mod client;
pub mod gateway;
pub mod hostile;
pub mod llm;
pub mod pki;
pub mod recorder;
mod server_thread;
pub mod upstream;

pub use client::{get, request, Reply};
pub use gateway::Gateway;
pub use upstream::{blackhole, closed_port, Upstream};
