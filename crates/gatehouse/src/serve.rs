//! `gatehouse serve`: starts the store, the proxy workers, the admin and status listeners,
//! and handles SIGHUP (reload) and SIGTERM/SIGINT (graceful stop).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::routing::get;
use axum::Json;
use gatehouse_admin::{AdminState, Control};
use gatehouse_counters::cluster::ClusterCounters;
use gatehouse_model::PluginCatalog;
use gatehouse_proxy::{ProxySettings, Shared, Snapshot};
use gatehouse_store::{sha256_hex, ConfigStore, NodeInfo};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{LogFormat, ServeArgs};

fn init_logging(args: &ServeArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level `{}` is not a level or filter", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// The TLS listener's default certificate from `--tls-cert`/`--tls-key`.
fn default_tls(args: &ServeArgs) -> Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let bad = |(field, msg): (&str, String)| {
        let file = if field == "key" { key } else { cert };
        anyhow::anyhow!("--tls-{field} {}: {msg}", file.display())
    };
    gatehouse_model::tls::check_certificate(&cert_pem, &key_pem).map_err(bad)?;
    let cfg = gatehouse_proxy::tls::server::server_config(&cert_pem, &key_pem, None, None)
        .map_err(bad)?;
    Ok(Some(cfg))
}

fn settings(args: &ServeArgs) -> Result<ProxySettings> {
    Ok(ProxySettings {
        trusted_proxies: args.trusted_proxies.iter().map(|n| n.0).collect(),
        max_header_bytes: args.max_header_bytes as usize,
        max_headers: args.max_headers,
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        send_timeout: Duration::from_secs(args.send_timeout.max(1)),
        max_connections: args.max_connections as usize,
        allow_underscores_in_headers: args.allow_underscores_in_headers,
        max_body_bytes: args.max_body_bytes,
        drain_timeout: Duration::from_secs(args.drain_timeout),
        default_tls: default_tls(args)?,
        ..ProxySettings::default()
    })
}

/// The admin token from `--admin-token-file`: its first line.
pub(crate) fn read_token_file(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --admin-token-file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "--admin-token-file {} is empty",
        path.display()
    );
    if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
        tracing::warn!(file = %path.display(), "the admin token file is readable by other users; chmod 600 it");
    }
    Ok(token)
}

/// The admin token's hash: the one given, else the store's, else (store unreachable) the
/// last-good copy's, else a new one printed once.
async fn admin_token(
    store: &dyn ConfigStore,
    given: Option<&str>,
    offline: Option<&str>,
) -> Result<String> {
    if let Some(t) = given {
        anyhow::ensure!(
            t.len() >= 16,
            "the admin token must be at least 16 characters"
        );
        let h = sha256_hex(t);
        // A declarative node gets its token on every start; writing it down would only
        // leave a file in the working directory (the default data dir).
        if !store.read_only() {
            match store.set_admin_token_hash(h.clone()).await {
                Ok(()) => {}
                Err(e) if offline.is_some() => {
                    tracing::warn!(error = %e, "cannot store the admin token hash while the store is unreachable");
                }
                Err(e) => return Err(e).context("storing the admin token hash"),
            }
        }
        return Ok(h);
    }
    if let Some(h) = offline {
        return Ok(h.to_string());
    }
    if let Some(h) = store
        .admin_token_hash()
        .await
        .context("reading the admin token hash")?
    {
        return Ok(h);
    }
    let token: String = hex::encode(rand::random::<[u8; 24]>());
    let h = sha256_hex(&token);
    store
        .set_admin_token_hash(h.clone())
        .await
        .context("storing the admin token hash")?;
    eprintln!("\n  Gatehouse admin token (shown once, store it safely): {token}\n  Use it as: Authorization: Bearer {token}\n");
    Ok(h)
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(args: ServeArgs) -> Result<()> {
    init_logging(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gatehouse-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let result = rt.block_on(serve(args));
    // Whatever background task is still running (a store poller, a file watcher) must not
    // hold the exit once the proxy has drained and said "stopped".
    rt.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(args: ServeArgs) -> Result<()> {
    gatehouse_store::private::create_dir(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let counters = match &args.redis {
        Some(url) => {
            let ca = match &args.redis_ca_file {
                Some(f) => Some(
                    std::fs::read(f)
                        .with_context(|| format!("reading --redis-ca-file {}", f.display()))?,
                ),
                None => None,
            };
            let c = ClusterCounters::connect(url, &args.redis_prefix, ca)
                .await
                .context("--redis")?;
            c.spawn_upkeep();
            Some(c)
        }
        None => None,
    };
    let registry = Arc::new(gatehouse_plugins::registry_for(
        counters.clone(),
        Some(args.data_dir.clone()),
    ));
    let catalog: Arc<dyn PluginCatalog> = registry.clone();
    let opened = crate::stores::open(&args, catalog).await?;
    let store = opened.store.clone();
    let given_token = match &args.admin_token_file {
        Some(path) => Some(read_token_file(path)?),
        None => args.admin_token.clone(),
    };
    let offline_token = opened
        .cached
        .as_ref()
        .and_then(|c| c.admin_token_sha256.clone());
    let token_hash = admin_token(&*store, given_token.as_deref(), offline_token.as_deref()).await?;

    let call_log = if args.call_log_on() {
        let node = node_id(&args.data_dir, args.config.is_none())?;
        Some(
            crate::calls::open(
                &args.data_dir,
                args.store.as_deref(),
                node,
                args.call_log_queue as usize,
            )
            .await?,
        )
    } else {
        None
    };
    let mut proxy_settings = settings(&args)?;
    proxy_settings.call_sink = call_log
        .as_ref()
        .map(|l| gatehouse_proxy::settings::CallSinkRef(Arc::new(crate::calls::Sink(l.clone()))));
    let shared = Shared::new(Snapshot::empty(), proxy_settings);
    let control =
        Control::with_last_good(store.clone(), shared.clone(), registry, opened.last_good);
    control.set_token_hash(&token_hash);
    match opened.cached {
        Some(cached) => {
            control
                .start_from(cached)
                .context("starting from the last-good config")?;
        }
        None => {
            control.reload().await.context("loading the config")?;
        }
    }
    control.spawn_reloader();

    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let listener = gatehouse_proxy::bind(args.listen, workers)
        .with_context(|| format!("binding proxy listener {}", args.listen))?;
    let proxy_addr = listener.addr;
    let tls_listener = match args.tls_listen.0 {
        Some(addr) => Some(
            gatehouse_proxy::bind(addr, workers)
                .with_context(|| format!("binding TLS listener {addr}"))?,
        ),
        None => None,
    };
    let tls_addr = tls_listener.as_ref().map(|l| l.addr);

    let admin = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding admin listener {}", args.admin_listen))?;
    let status = tokio::net::TcpListener::bind(args.status_listen)
        .await
        .with_context(|| format!("binding status listener {}", args.status_listen))?;
    let node = node_info(
        &args,
        proxy_addr,
        tls_addr,
        admin.local_addr()?,
        status.local_addr()?,
    )?;
    spawn_heartbeat(control.clone(), node.clone(), counters.clone());
    let (admin_router, _) = gatehouse_admin::build(Arc::new(AdminState {
        control: control.clone(),
        token_hash,
        node,
        counters: counters.clone(),
        calls: call_log.clone(),
    }));
    let admin_addr = admin.local_addr()?;
    let status_addr = status.local_addr()?;

    let proxy =
        gatehouse_proxy::start(shared, listener, tls_listener).context("starting proxy workers")?;
    tracing::info!("proxy listening on {proxy_addr} ({workers} workers)");
    if let Some(a) = tls_addr {
        tracing::info!("tls listening on {a}");
    }
    tracing::info!("admin listening on {admin_addr}");
    tracing::info!("status listening on {status_addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = crate::listen::Limits {
        header_read_timeout: Duration::from_secs(args.header_read_timeout.max(1)),
        idle_timeout: Duration::from_secs(args.idle_timeout.max(1)),
        max_connections: args.admin_max_connections as usize,
    };
    tokio::spawn(crate::listen::serve(
        "admin",
        admin,
        admin_router,
        limits,
        stop_rx.clone(),
    ));
    let ready_control = control.clone();
    let metrics_counters = counters.clone();
    let metrics_calls = call_log.clone();
    let status_router = axum::Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/metrics",
            get(move || {
                let degraded = metrics_counters.as_ref().map(|c| c.is_degraded());
                let calls = metrics_calls.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        with_node_metrics(
                            gatehouse_plugins::observe::prometheus::render(),
                            degraded,
                            calls.as_deref(),
                        ),
                    )
                }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let c = ready_control.clone();
                async move {
                    if c.is_ready() {
                        (
                            axum::http::StatusCode::OK,
                            Json(json!({"status": "ready", "config_version": c.current().version})),
                        )
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"status": "loading"})),
                        )
                    }
                }
            }),
        );
    tokio::spawn(crate::listen::serve(
        "status",
        status,
        status_router,
        limits,
        stop_rx.clone(),
    ));

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading config");
                if let Err(e) = store.refresh().await {
                    tracing::error!(error = %e, "reload failed; the running config stays");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    proxy.shutdown();
    tokio::task::spawn_blocking(move || proxy.join()).await.ok();
    tracing::info!("stopped");
    Ok(())
}

/// The node's own metrics, added before the exposition's `# EOF`:
/// `gatehouse_counter_store_degraded` is 1 while shared counters fall back to local
/// counting (Redis unreachable), 0 when exact, absent without `--redis`.
fn with_node_metrics(
    mut text: String,
    degraded: Option<bool>,
    calls: Option<&gatehouse_telemetry::CallLog>,
) -> String {
    let mut extra = String::new();
    if let Some(d) = degraded {
        extra.push_str(&format!(
            "# HELP gatehouse_counter_store_degraded 1 while shared counters count locally because Redis is unreachable.\n# TYPE gatehouse_counter_store_degraded gauge\ngatehouse_counter_store_degraded {}\n",
            u8::from(d)
        ));
    }
    if let Some(log) = calls {
        use std::sync::atomic::Ordering::Relaxed;
        let st = log.stats();
        extra.push_str("# HELP gatehouse_call_log_records Call-log records by what became of them (dropped: the queue was full).\n# TYPE gatehouse_call_log_records counter\n");
        for (outcome, n) in [
            ("accepted", &st.accepted),
            ("dropped", &st.dropped),
            ("written", &st.written),
            ("failed", &st.failed),
            ("pruned", &st.pruned),
        ] {
            extra.push_str(&format!(
                "gatehouse_call_log_records_total{{outcome=\"{outcome}\"}} {}\n",
                n.load(Relaxed)
            ));
        }
        extra.push_str(&format!(
            "# HELP gatehouse_call_log_queued Records waiting for the call-log writer.\n# TYPE gatehouse_call_log_queued gauge\ngatehouse_call_log_queued {}\n",
            log.queued()
        ));
    }
    if extra.is_empty() {
        return text;
    }
    let eof = text.rfind("# EOF").unwrap_or(text.len());
    text.insert_str(eof, &extra);
    text
}

/// A stable node id, kept in the data dir (a restarted node is the same registry entry).
/// A declarative node has no shared registry and writes nothing: a new id per run.
fn node_id(data_dir: &std::path::Path, persist: bool) -> Result<uuid::Uuid> {
    if !persist {
        return Ok(uuid::Uuid::new_v4());
    }
    let path = data_dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(id) = text.trim().parse() {
            return Ok(id);
        }
    }
    let id = uuid::Uuid::new_v4();
    gatehouse_store::private::write(&path, id.to_string().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

fn node_info(
    args: &ServeArgs,
    proxy: std::net::SocketAddr,
    tls: Option<std::net::SocketAddr>,
    admin: std::net::SocketAddr,
    status: std::net::SocketAddr,
) -> Result<NodeInfo> {
    let mut addresses = vec![format!("proxy={proxy}")];
    if let Some(t) = tls {
        addresses.push(format!("tls={t}"));
    }
    addresses.push(format!("admin={admin}"));
    addresses.push(format!("status={status}"));
    Ok(NodeInfo {
        id: node_id(&args.data_dir, args.config.is_none())?,
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
        addresses,
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_version: 0,
        started_at: gatehouse_store::unix_now(),
    })
}

/// Every few seconds: tell the registry this node is alive and which config it serves, and
/// count the live nodes (the divisor of limits while Redis is down).
fn spawn_heartbeat(
    control: Arc<Control>,
    mut node: NodeInfo,
    counters: Option<Arc<ClusterCounters>>,
) {
    tokio::spawn(async move {
        loop {
            node.config_version = control.current().version;
            let store = control.store();
            if let Err(e) = store.heartbeat(&node).await {
                tracing::debug!(error = %e, "heartbeat not recorded");
            } else if let Some(c) = &counters {
                // Only shared counters need the count (their divisor while Redis is down).
                if let Ok(nodes) = store.nodes().await {
                    c.set_live_nodes(nodes.iter().filter(|n| !n.stale).count());
                }
            }
            tokio::time::sleep(Duration::from_secs(gatehouse_store::nodes::HEARTBEAT_SECS)).await;
        }
    });
}
