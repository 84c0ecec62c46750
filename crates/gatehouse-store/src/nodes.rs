//! The node registry: each node writes who it is and what it serves every few seconds; the
//! admin API lists them (`GET /cluster/nodes`) and the shared counters divide a limit by the
//! number of live nodes while Redis is down.

use serde::Serialize;
use uuid::Uuid;

/// Seconds between heartbeats.
pub const HEARTBEAT_SECS: u64 = 5;
/// A node not seen for this long is stale (three missed heartbeats).
pub const STALE_AFTER_SECS: i64 = 15;
/// A node not seen for this long is dropped from the registry.
pub const FORGET_AFTER_SECS: i64 = 86_400;

/// What a node says about itself.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeInfo {
    /// Stable id (kept in the data dir).
    pub id: Uuid,
    /// Host name.
    pub hostname: String,
    /// Listen addresses (`proxy=…`, `tls=…`, `admin=…`, `status=…`).
    pub addresses: Vec<String>,
    /// Build version of the binary.
    pub version: String,
    /// Config version the node serves.
    pub config_version: u64,
    /// Unix seconds the node started.
    pub started_at: i64,
}

/// A registry entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeRow {
    /// What the node said.
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Unix seconds of its last heartbeat.
    pub last_seen: i64,
    /// True when it missed three heartbeats.
    pub stale: bool,
}

impl NodeRow {
    /// An entry seen at `last_seen`, judged at `now`.
    pub fn new(info: NodeInfo, last_seen: i64, now: i64) -> NodeRow {
        NodeRow {
            info,
            last_seen,
            stale: now - last_seen > STALE_AFTER_SECS,
        }
    }
}

/// Parses the stored address list (a JSON array of strings); garbage reads as none.
pub fn addresses_from(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A registry of one node, for stores without a database (declarative mode).
#[derive(Default)]
pub struct OneNode(std::sync::Mutex<Option<(NodeInfo, i64)>>);

impl OneNode {
    /// Records the heartbeat.
    pub fn beat(&self, node: &NodeInfo) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((node.clone(), crate::unix_now()));
    }
    /// The node, if it beat once.
    pub fn list(&self) -> Vec<NodeRow> {
        let now = crate::unix_now();
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(n, seen)| NodeRow::new(n.clone(), *seen, now))
            .collect()
    }
}

/// A registry row of either engine (same column names and types in both).
pub fn from_row<'r, R>(r: &'r R, now: i64) -> Result<NodeRow, crate::StoreError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = r.try_get("id")?;
    let info = NodeInfo {
        id: id.parse().unwrap_or_default(),
        hostname: r.try_get("hostname")?,
        addresses: addresses_from(&r.try_get::<String, _>("addresses")?),
        version: r.try_get("version")?,
        config_version: r.try_get::<i64, _>("config_version")?.max(0) as u64,
        started_at: r.try_get("started_at")?,
    };
    Ok(NodeRow::new(info, r.try_get("last_seen")?, now))
}
