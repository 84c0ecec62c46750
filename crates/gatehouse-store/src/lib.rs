//! Where configuration lives. [`ConfigStore`] is the one interface the admin API and the
//! reload loop use; backends: declarative file ([`file::FileStore`]), SQLite
//! ([`sqlite::SqliteStore`], the embedded default) and PostgreSQL ([`postgres::PgStore`],
//! shared by the nodes of a cluster, with LISTEN/NOTIFY as its change feed).
//!
//! The pattern every later stored feature follows: one trait, one module per engine, the
//! same tables in `migrations/sqlite` and `migrations/postgres`, rows decoded by shared code
//! ([`rows`]), and tests that run against both engines.

pub mod diff;
pub mod file;
pub mod keyring;
pub mod last_good;
pub mod nodes;
pub mod postgres;
pub mod private;
pub mod rows;
pub mod sealed;
pub mod sqlite;

pub use nodes::{NodeInfo, NodeRow};

use std::future::Future;
use std::pin::Pin;

use gatehouse_model::{
    Certificate, Config, ConfigError, Consumer, Kind, Plugin, Route, Service, Upstream,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Boxed future returned by store methods (keeps the trait usable as `dyn`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored or supplied config is invalid.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// This store does not take entity writes (declarative mode).
    #[error("the config is declarative (read from a file): only POST /config may replace it")]
    ReadOnly,
    /// Someone else changed the config since it was read.
    #[error("config changed concurrently (expected version {expected}, found {found}); retry")]
    Conflict {
        /// Version the writer started from.
        expected: u64,
        /// Version found in the store.
        found: u64,
    },
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration failure.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// File system failure.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A secret field could not be sealed or opened (keyring missing a key, tampering).
    #[error("secrets at rest: {0}")]
    Keyring(String),
    /// The store cannot be reached (database down, connection refused, timeout).
    #[error("config store unreachable: {0}")]
    Unavailable(String),
    /// Stored data that no longer parses.
    #[error("corrupt stored {kind} {id}: {message}")]
    Corrupt {
        /// Entity kind.
        kind: String,
        /// Entity id.
        id: String,
        /// Parser message.
        message: String,
    },
}

/// A config with the version it was read at.
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    /// Flat, validated config.
    pub config: Config,
    /// Monotonic version.
    pub version: u64,
    /// True when the store already ran full validation on it (no need to run it again).
    pub validated: bool,
}

/// What changed between two versions: entities now present (new or changed) and removed.
#[derive(Debug, Default)]
pub struct Delta {
    /// The version the delta brings a config to.
    pub version: u64,
    /// New or changed entities, in declaration order.
    pub puts: Vec<Entity>,
    /// Removed entities.
    pub deletes: Vec<(Kind, Uuid)>,
    /// Every version in the delta was written by a node of this build (same version, same
    /// config schema), which validated the config it wrote: applied to the reader's own
    /// validated config, the result needs no second validation.
    pub same_build: bool,
}

/// One entity of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    /// A service.
    Service(Service),
    /// A route.
    Route(Route),
    /// An upstream with its targets.
    Upstream(Upstream),
    /// A consumer.
    Consumer(Consumer),
    /// A plugin instance.
    Plugin(Plugin),
    /// A certificate.
    Certificate(Certificate),
    /// An LLM provider.
    AiProvider(gatehouse_model::AiProvider),
    /// A public AI model.
    AiModel(gatehouse_model::AiModel),
}

impl Entity {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Entity::Service(_) => Kind::Service,
            Entity::Route(_) => Kind::Route,
            Entity::Upstream(_) => Kind::Upstream,
            Entity::Consumer(_) => Kind::Consumer,
            Entity::Plugin(_) => Kind::Plugin,
            Entity::Certificate(_) => Kind::Certificate,
            Entity::AiProvider(_) => Kind::AiProvider,
            Entity::AiModel(_) => Kind::AiModel,
        }
    }
    /// Its id.
    pub fn id(&self) -> Uuid {
        match self {
            Entity::Service(e) => e.id,
            Entity::Route(e) => e.id,
            Entity::Upstream(e) => e.id,
            Entity::Consumer(e) => e.id,
            Entity::Plugin(e) => e.id,
            Entity::Certificate(e) => e.id,
            Entity::AiProvider(e) => e.id,
            Entity::AiModel(e) => e.id,
        }
    }
    /// Its JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let r = match self {
            Entity::Service(e) => serde_json::to_value(e),
            Entity::Route(e) => serde_json::to_value(e),
            Entity::Upstream(e) => serde_json::to_value(e),
            Entity::Consumer(e) => serde_json::to_value(e),
            Entity::Plugin(e) => serde_json::to_value(e),
            Entity::Certificate(e) => serde_json::to_value(e),
            Entity::AiProvider(e) => serde_json::to_value(e),
            Entity::AiModel(e) => serde_json::to_value(e),
        };
        r.unwrap_or(serde_json::Value::Null)
    }
    /// Parses the JSON form of an entity of `kind`.
    pub fn from_json(kind: Kind, v: serde_json::Value) -> Result<Entity, serde_json::Error> {
        Ok(match kind {
            Kind::Service => Entity::Service(serde_json::from_value(v)?),
            Kind::Route => Entity::Route(serde_json::from_value(v)?),
            Kind::Upstream => Entity::Upstream(serde_json::from_value(v)?),
            Kind::Consumer => Entity::Consumer(serde_json::from_value(v)?),
            Kind::Plugin => Entity::Plugin(serde_json::from_value(v)?),
            Kind::Certificate => Entity::Certificate(serde_json::from_value(v)?),
            Kind::AiProvider => Entity::AiProvider(serde_json::from_value(v)?),
            Kind::AiModel => Entity::AiModel(serde_json::from_value(v)?),
        })
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // changes are few and short-lived; boxing buys nothing
pub enum Change {
    /// Create or replace.
    Put(Entity),
    /// Remove.
    Delete(Kind, Uuid),
}

/// Typed, versioned config storage with a change feed.
pub trait ConfigStore: Send + Sync {
    /// Backend name for status pages (`sqlite`, `file`).
    fn backend(&self) -> &'static str;
    /// True when only whole-config replacement is allowed.
    fn read_only(&self) -> bool;
    /// Reads the whole config and its version.
    fn load(&self) -> StoreFuture<'_, Versioned>;
    /// What changed since version `from`, when the store can tell without reading the whole
    /// config (`None`: read it all with [`ConfigStore::load`]); an empty delta of version
    /// `from` when nothing did.
    fn load_since(&self, _from: u64) -> StoreFuture<'_, Option<Delta>> {
        Box::pin(async { Ok(None) })
    }
    /// Applies changes atomically if the version is still `expected`; returns the new version.
    fn apply(&self, changes: Vec<Change>, expected: u64) -> StoreFuture<'_, u64>;
    /// Replaces the whole config (already validated and flat); returns the new version.
    fn replace(&self, config: Config) -> StoreFuture<'_, u64>;
    /// Re-reads the source now (SIGHUP); returns the version.
    fn refresh(&self) -> StoreFuture<'_, u64>;
    /// Tells of every new version.
    fn watch(&self) -> watch::Receiver<u64>;
    /// SHA-256 (hex) of the admin token, if one was set.
    fn admin_token_hash(&self) -> StoreFuture<'_, Option<String>>;
    /// Stores the SHA-256 (hex) of the admin token.
    fn set_admin_token_hash(&self, hash: String) -> StoreFuture<'_, ()>;
    /// True when the store lives outside this node (the node then keeps a last-good copy
    /// of the config in its data dir and can start from it while the store is down).
    fn remote(&self) -> bool {
        false
    }
    /// Whether the store answered its last query, and since when it has not.
    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }
    /// Records this node in the registry (insert or refresh `last_seen`).
    fn heartbeat(&self, node: &NodeInfo) -> StoreFuture<'_, ()>;
    /// Every node the registry knows, most recently seen first.
    fn nodes(&self) -> StoreFuture<'_, Vec<NodeRow>>;
}

/// Reachability of a store, for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreHealth {
    /// True when the last query succeeded.
    pub reachable: bool,
    /// The last failure, while unreachable.
    pub error: Option<String>,
    /// Unix seconds of the first failure of the current outage.
    pub down_since: Option<i64>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            reachable: true,
            error: None,
            down_since: None,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Hex SHA-256 of a secret, the form in which admin tokens are stored.
pub use gatehouse_model::secret::sha256_hex;

/// Tells watchers of a version read from the store, if it is not the one they have.
pub(crate) fn announce(tx: &watch::Sender<u64>, v: u64) -> u64 {
    if v != *tx.borrow() {
        tx.send_replace(v);
    }
    v
}
