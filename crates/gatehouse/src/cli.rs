//! Command-line interface: every `serve` flag is also an environment variable
//! `GATEHOUSE_<NAME>`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Gatehouse: API gateway, AI gateway and API management in one binary.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (embedded SQLite store, or a declarative file with --config).
    Serve(Box<ServeArgs>),
    /// Check a declarative config file; prints every error with its line and column.
    Validate {
        /// The YAML or JSON file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the declarative config format.
    Schema,
    /// Compare a file with a running node, apply it, or dump the node's config (decK's
    /// `diff`, `sync` and `dump`).
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Create or upgrade the store's schema (`serve` does the same at start), then exit.
    Migrate {
        /// The store: `sqlite://PATH` or `postgres://user:password@host:port/db`.
        #[arg(long, env = "GATEHOUSE_STORE")]
        store: Option<String>,
        /// The data directory (the SQLite database's default place, and the keyring).
        #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = ".")]
        data_dir: PathBuf,
    },
    /// Manage the keyring that encrypts secrets at rest (`<data dir>/keyring`).
    Keyring {
        /// What to do.
        #[command(subcommand)]
        action: KeyringAction,
    },
}

/// `gatehouse config …`
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the running config as a declarative document.
    Dump {
        /// The node.
        #[command(flatten)]
        remote: RemoteArgs,
        /// JSON instead of YAML.
        #[arg(long)]
        json: bool,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show what applying FILE would create, update and delete on the node.
    Diff {
        /// The declarative file (Gatehouse's format or a Kong decK file).
        file: PathBuf,
        /// The node.
        #[command(flatten)]
        remote: RemoteArgs,
        /// Exit with 2 when there are differences (for CI).
        #[arg(long)]
        non_zero_exit_code: bool,
    },
    /// Show the differences, then make FILE the node's whole config.
    Sync {
        /// The declarative file (Gatehouse's format or a Kong decK file).
        file: PathBuf,
        /// The node.
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

/// How to reach a running node's admin API.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The admin listener.
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_URL",
        default_value = "http://127.0.0.1:9180"
    )]
    pub admin_url: String,
    /// The admin token (or `GATEHOUSE_ADMIN_TOKEN`; a flag's value shows in `ps`).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// A file whose first line is the admin token.
    #[arg(long, conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
}

/// `gatehouse keyring …`
#[derive(Debug, Subcommand)]
pub enum KeyringAction {
    /// Put a new key first in the keyring file and seal every secret in the database with
    /// it (older keys stay, so running nodes keep reading what they wrote).
    Rotate {
        /// The data directory holding `keyring` and `gatehouse.db`.
        #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = ".")]
        data_dir: PathBuf,
    },
    /// Drop from the keyring file every key no sealed secret in the database uses.
    Prune {
        /// The data directory holding `keyring` and `gatehouse.db`.
        #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = ".")]
        data_dir: PathBuf,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable key=value lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Proxy listener.
    #[arg(long, env = "GATEHOUSE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// TLS proxy listener (HTTPS and HTTP/2 by ALPN; certificates by SNI), or `off`.
    #[arg(long, env = "GATEHOUSE_TLS_LISTEN", default_value = "0.0.0.0:8443", value_parser = parse_listen)]
    pub tls_listen: Listen,
    /// PEM certificate chain for TLS clients whose SNI no certificate entity covers.
    #[arg(long, env = "GATEHOUSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "GATEHOUSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Admin API listener (keep it private).
    #[arg(long, env = "GATEHOUSE_ADMIN_LISTEN", default_value = "127.0.0.1:9180")]
    pub admin_listen: SocketAddr,
    /// Status listener (/health, /ready; no auth).
    #[arg(
        long,
        env = "GATEHOUSE_STATUS_LISTEN",
        default_value = "127.0.0.1:9190"
    )]
    pub status_listen: SocketAddr,
    /// Proxy worker threads (default: number of cores).
    #[arg(long, env = "GATEHOUSE_WORKERS")]
    pub workers: Option<usize>,
    /// Where the embedded database and node files live.
    #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = ".")]
    pub data_dir: PathBuf,
    /// Admin API token; without it one is generated on first start and printed once.
    /// Visible in `ps` as a flag: prefer `--admin-token-file` or the environment variable.
    #[arg(long, env = "GATEHOUSE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Read the admin API token from this file (first line; the file should be 0600).
    #[arg(
        long,
        env = "GATEHOUSE_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Run DB-less from this declarative YAML/JSON file (watched; SIGHUP reloads).
    #[arg(long, env = "GATEHOUSE_CONFIG", conflicts_with = "store")]
    pub config: Option<PathBuf>,
    /// Where the config lives: `sqlite://PATH` (default `<data dir>/gatehouse.db`) or
    /// `postgres://user:password@host:port/db` (a cluster: every node on the same database).
    #[arg(long, env = "GATEHOUSE_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Redis for counters shared by every node (`policy: redis`): `redis://`, `rediss://`
    /// (TLS), `redis+cluster://h1:p1,h2:p2`, `redis+sentinel://s1:26379,s2:26379/master`.
    #[arg(long, env = "GATEHOUSE_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// PEM CA certificate(s) that verify a `rediss://` server (default: the system's roots).
    #[arg(long, env = "GATEHOUSE_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// Prefix of every Redis key this cluster writes (clusters sharing a Redis need
    /// different prefixes).
    #[arg(long, env = "GATEHOUSE_REDIS_PREFIX", default_value = "gatehouse")]
    pub redis_prefix: String,
    /// Log level or tracing filter (e.g. `info`, `gatehouse=debug`).
    #[arg(long, env = "GATEHOUSE_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long, env = "GATEHOUSE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Comma-separated CIDRs of proxies whose X-Forwarded-* and X-Request-Id are trusted.
    #[arg(long, env = "GATEHOUSE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet_arg::Net>,
    /// Largest request head in bytes (at least 8192).
    #[arg(long, env = "GATEHOUSE_MAX_HEADER_BYTES", default_value_t = 32768, value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// Most request headers accepted.
    #[arg(long, env = "GATEHOUSE_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Seconds a client has to send its request head (on every listener; for HTTP/2, to open
    /// its first stream).
    #[arg(long, env = "GATEHOUSE_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,
    /// Seconds a keep-alive connection may wait for its next request (HTTP/2: with no stream
    /// open) before it is closed, on every listener.
    #[arg(long, env = "GATEHOUSE_IDLE_TIMEOUT", default_value_t = 60)]
    pub idle_timeout: u64,
    /// Seconds a client may take to accept any bytes of an answer before it is cut off.
    #[arg(long, env = "GATEHOUSE_SEND_TIMEOUT", default_value_t = 60)]
    pub send_timeout: u64,
    /// Most open client connections on the proxy listener (WebSocket tunnels count); more
    /// are closed at once.
    #[arg(long, env = "GATEHOUSE_MAX_CONNECTIONS", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most open connections on each of the admin and status listeners.
    #[arg(long, env = "GATEHOUSE_ADMIN_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub admin_max_connections: u32,
    /// Keep request headers whose names contain `_` (dropped by default, as nginx does:
    /// CGI-style backends read `X_User` and `X-User` as the same variable).
    #[arg(long, env = "GATEHOUSE_ALLOW_UNDERSCORES_IN_HEADERS")]
    pub allow_underscores_in_headers: bool,
    /// Default largest request body in bytes (routes override with `request_body_limit`).
    #[arg(long, env = "GATEHOUSE_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: u64,
    /// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
    #[arg(long, env = "GATEHOUSE_DRAIN_TIMEOUT", default_value_t = 30)]
    pub drain_timeout: u64,
    /// The call log: every request's record in `<data dir>/calls.db` (or the PostgreSQL
    /// store), searchable at `/calls` and charted at `/analytics`: `on`, `off`, or `auto`
    /// (the default: on with a store, off in declarative mode, which writes no file).
    #[arg(long, env = "GATEHOUSE_CALL_LOG", default_value = "auto", value_parser = ["on", "off", "auto"])]
    pub call_log: String,
    /// Call-log records each proxy worker holds for the writer at most (collected every
    /// 100 ms); a request finding its worker's buffer full drops its record (counted in
    /// `/metrics`) rather than wait.
    #[arg(long, env = "GATEHOUSE_CALL_LOG_QUEUE", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub call_log_queue: u32,
}

impl ServeArgs {
    /// Whether the call log is on (`auto`: when the node has a store, not a declarative
    /// file).
    pub fn call_log_on(&self) -> bool {
        match self.call_log.as_str() {
            "on" => true,
            "off" => false,
            _ => self.config.is_none(),
        }
    }
}

/// A listener address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct Listen(pub Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Listen(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| Listen(Some(a)))
        .map_err(|_| format!("`{s}` is not an address:port (or `off`)"))
}

/// CIDR parsing for clap (a bare IP means a single host).
pub mod ipnet_arg {
    use std::str::FromStr;

    /// A CIDR or single address.
    #[derive(Debug, Clone)]
    pub struct Net(pub ipnet::IpNet);

    impl FromStr for Net {
        type Err = String;
        fn from_str(s: &str) -> Result<Self, String> {
            let s = s.trim();
            if let Ok(n) = s.parse::<ipnet::IpNet>() {
                return Ok(Net(n));
            }
            s.parse::<std::net::IpAddr>()
                .map(|ip| Net(ipnet::IpNet::from(ip)))
                .map_err(|_| format!("`{s}` is not an IP address or CIDR"))
        }
    }
}
