//! The connection to Redis in its three deployments, chosen by the URL:
//!
//! - `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS, system roots): one server;
//! - `redis+cluster://[user:password@]h1:p1,h2:p2` (`rediss+cluster://` for TLS): Redis
//!   Cluster — every key of one counter carries the same hash tag, so a lease script touches
//!   one slot;
//! - `redis+sentinel://[user:password@]s1:26379,s2:26379/<master name>[/db]`: the master
//!   that Sentinel names (asked again after a failure, so a failover is followed).
//!
//! Every command has a deadline ([`TIMEOUT`]): a request waiting for a lease must not wait
//! on a Redis that does not answer; the caller then counts locally (degraded).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script};

/// Longest wait for one Redis command.
pub const TIMEOUT: Duration = Duration::from_millis(250);

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Unknown scheme or malformed URL.
    #[error("redis URL `{0}`: {1}")]
    Bad(String, String),
}

/// Where Redis is, parsed from the URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// One server (`redis://`, `rediss://`, `unix://`).
    Single(String),
    /// A Redis Cluster, by its seed nodes (each a `redis://` or `rediss://` URL).
    Cluster(Vec<String>),
    /// Sentinels (each a `redis://` URL), the master's name, and its database.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<String>,
        /// Name of the monitored master.
        master: String,
        /// Database number.
        db: i64,
        /// Username for the master (and the sentinels).
        user: Option<String>,
        /// Password for the master (and the sentinels).
        password: Option<String>,
    },
}

/// Splits `scheme://[userinfo@]hosts[/path]` into its parts.
fn parts(url: &str) -> Option<(&str, Option<&str>, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p),
        None => (rest, ""),
    };
    Some((scheme, auth, hosts, path))
}

impl Target {
    /// Parses a Redis URL (see the module docs).
    pub fn parse(url: &str) -> Result<Target, UrlError> {
        let bad = |m: &str| UrlError::Bad(redacted(url), m.to_string());
        let (scheme, auth, hosts, path) = parts(url).ok_or_else(|| bad("not a URL"))?;
        let node_scheme = |tls: bool| if tls { "rediss" } else { "redis" };
        let with_auth = |s: &str, h: &str| match auth {
            Some(a) => format!("{s}://{a}@{h}"),
            None => format!("{s}://{h}"),
        };
        let hosts_of = |tls: bool| -> Result<Vec<String>, UrlError> {
            let list: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| with_auth(node_scheme(tls), h))
                .collect();
            if list.is_empty() {
                return Err(bad("no host"));
            }
            Ok(list)
        };
        match scheme {
            "redis" | "rediss" | "unix" | "redis+unix" => {
                if hosts.contains(',') {
                    return Err(bad(
                        "several hosts: use redis+cluster:// or redis+sentinel://",
                    ));
                }
                redis::Client::open(url).map_err(|e| bad(&e.to_string()))?;
                Ok(Target::Single(url.to_string()))
            }
            "redis+cluster" | "rediss+cluster" => {
                Ok(Target::Cluster(hosts_of(scheme.starts_with("rediss"))?))
            }
            "redis+sentinel" => {
                let mut segs = path.split('/').filter(|s| !s.is_empty());
                let master = segs
                    .next()
                    .ok_or_else(|| bad("name the master: redis+sentinel://host:26379/<master>"))?
                    .to_string();
                let db = match segs.next() {
                    Some(d) => d
                        .parse()
                        .map_err(|_| bad("the database must be a number"))?,
                    None => 0,
                };
                let (user, password) = match auth {
                    Some(a) => match a.split_once(':') {
                        Some((u, p)) => (Some(u).filter(|u| !u.is_empty()), Some(p)),
                        None => (Some(a), None),
                    },
                    None => (None, None),
                };
                let sentinels = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("redis://{h}"))
                    .collect::<Vec<_>>();
                if sentinels.is_empty() {
                    return Err(bad("no sentinel host"));
                }
                Ok(Target::Sentinel {
                    sentinels,
                    master,
                    db,
                    user: user.map(str::to_string),
                    password: password.map(str::to_string),
                })
            }
            _ => Err(bad(
                "the scheme must be redis, rediss, redis+cluster, rediss+cluster or redis+sentinel",
            )),
        }
    }
}

/// The URL with its password replaced, for logs and `/status`.
pub fn redacted(url: &str) -> String {
    match parts(url) {
        Some((scheme, Some(auth), hosts, path)) if auth.contains(':') => {
            let user = auth.split(':').next().unwrap_or_default();
            let slash = if path.is_empty() { "" } else { "/" };
            format!("{scheme}://{user}:***@{hosts}{slash}{path}")
        }
        _ => url.to_string(),
    }
}

/// A live connection (cheap to clone: both kinds multiplex one socket per server).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        // Reconnection is the probe's job; a command fails fast instead of retrying.
        .set_number_of_retries(1)
}

fn certs(ca_pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

/// Opens a connection to `target`; TLS servers are verified against `ca_pem` when given
/// (a private CA), else against the system's roots.
pub(crate) async fn connect(target: &Target, ca_pem: Option<&[u8]>) -> Result<Conn, RedisError> {
    match target {
        Target::Single(url) => {
            let client = match ca_pem {
                Some(ca) if url.starts_with("rediss") => {
                    redis::Client::build_with_tls(url.as_str(), certs(ca))?
                }
                _ => redis::Client::open(url.as_str())?,
            };
            let m = ConnectionManager::new_with_config(client, manager_config()).await?;
            Ok(Conn::Single(m))
        }
        Target::Cluster(nodes) => {
            let mut b = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .retries(1);
            if let (Some(ca), true) = (ca_pem, nodes.iter().all(|n| n.starts_with("rediss"))) {
                b = b.certs(certs(ca));
            }
            let client = b.build()?;
            Ok(Conn::Cluster(client.get_async_connection().await?))
        }
        Target::Sentinel {
            sentinels,
            master,
            db,
            user,
            password,
        } => {
            let mut conn = redis::RedisConnectionInfo::default().set_db(*db);
            if let Some(u) = user {
                conn = conn.set_username(u.clone());
            }
            if let Some(p) = password {
                conn = conn.set_password(p.clone());
            }
            let info = redis::sentinel::SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(conn);
            let mut sc = redis::sentinel::SentinelClient::build(
                sentinels.clone(),
                master.clone(),
                Some(info),
                redis::sentinel::SentinelServerType::Master,
            )?;
            let client = sc.async_get_client().await?;
            let m = ConnectionManager::new_with_config(client, manager_config()).await?;
            Ok(Conn::Single(m))
        }
    }
}

impl Conn {
    /// Runs `script` with `keys` and `args` under [`TIMEOUT`].
    pub(crate) async fn run(
        &mut self,
        script: &Script,
        keys: &[String],
        args: &[u64],
    ) -> Result<Vec<i64>, RedisError> {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        let call = async {
            match self {
                Conn::Single(c) => inv.invoke_async(c).await,
                Conn::Cluster(c) => inv.invoke_async(c).await,
            }
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(timeout_error()))
    }

    /// PING under [`TIMEOUT`].
    pub(crate) async fn ping(&mut self) -> Result<(), RedisError> {
        let call = async {
            match self {
                Conn::Single(c) => redis::cmd("PING").query_async::<String>(c).await,
                Conn::Cluster(c) => redis::cmd("PING").query_async::<String>(c).await,
            }
        };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(timeout_error()))
            .map(drop)
    }
}

fn timeout_error() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_deployment() {
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2").unwrap(),
            Target::Single("redis://127.0.0.1:6379/2".into())
        );
        assert!(matches!(
            Target::parse("rediss://u:p@cache.example:6380").unwrap(),
            Target::Single(_)
        ));
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:7000,b:7001").unwrap(),
            Target::Cluster(vec![
                "redis://u:p@a:7000".into(),
                "redis://u:p@b:7001".into()
            ])
        );
        assert_eq!(
            Target::parse("rediss+cluster://a:7000").unwrap(),
            Target::Cluster(vec!["rediss://a:7000".into()])
        );
        match Target::parse("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/3").unwrap() {
            Target::Sentinel {
                sentinels,
                master,
                db,
                user,
                password,
            } => {
                assert_eq!(sentinels, vec!["redis://s1:26379", "redis://s2:26379"]);
                assert_eq!((master.as_str(), db), ("mymaster", 3));
                assert_eq!((user, password.as_deref()), (None, Some("pw")));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "http://x",
            "redis://a:1,b:2",
            "redis+sentinel://s1:26379",
            "redis+sentinel://s1:26379/m/x",
            "redis+cluster:///",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        let e = Target::parse("http://u:secret@x").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }
}
