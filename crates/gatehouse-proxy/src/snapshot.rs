//! A config snapshot compiled for the hot path: the router plus everything a request needs
//! about its route and service, prepared once per config version.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_model::validate::{parse_host_port, parse_service_url};
use gatehouse_model::{Config, ConfigError, FieldError, RouteProtocol, ServiceProtocol};
use http::HeaderValue;
use uuid::Uuid;

use crate::plugin::{build_instances, ChainIndex, Chains, Registry};
use crate::router::{RouteSpec, Router};

/// One place requests can be sent to.
#[derive(Debug)]
pub struct TargetRt {
    /// `host:port` (plus the transport for TLS or HTTP/2), also the connection-pool key.
    pub key: Arc<str>,
    /// The name sent as SNI and verified (TLS transports).
    pub tls_name: Option<rustls::pki_types::ServerName<'static>>,
    /// Host name or IP.
    pub host: Arc<str>,
    /// TCP port.
    pub port: u16,
    /// Value for the Host header when the client's is not preserved.
    pub host_header: HeaderValue,
    /// Relative share of traffic.
    pub weight: u32,
}

/// Where a service sends traffic.
#[derive(Debug)]
pub enum Backend {
    /// A single address from the service `url`.
    Single(Arc<TargetRt>),
    /// A balanced pool; balancer state is kept per upstream id outside the snapshot.
    Upstream {
        /// Upstream id (balancer state key).
        id: Uuid,
        /// Upstream name, for messages.
        name: Arc<str>,
        /// Targets with weight > 0.
        targets: Arc<[Arc<TargetRt>]>,
    },
}

/// A service as the proxy uses it.
#[derive(Debug)]
pub struct ServiceRt {
    /// Service id.
    pub id: Uuid,
    /// Service name, if any.
    pub name: Option<Arc<str>>,
    /// Path prepended to forwarded paths (`""` for none).
    pub base_path: Box<str>,
    /// Where to send.
    pub backend: Backend,
    /// TCP connect limit.
    pub connect_timeout: Duration,
    /// Limit for the response head and between body reads.
    pub read_timeout: Duration,
    /// Limit between request body chunks.
    pub write_timeout: Duration,
    /// Extra targets to try when connecting fails.
    pub retries: u32,
    /// How the targets are spoken to.
    pub transport: crate::upstream::Transport,
}

/// A route as the proxy uses it.
#[derive(Debug)]
pub struct RouteRt {
    /// Route id.
    pub id: Uuid,
    /// Route name, if any.
    pub name: Option<Arc<str>>,
    /// Its service.
    pub service: Arc<ServiceRt>,
    /// Remove the matched prefix before forwarding.
    pub strip_path: bool,
    /// Forward the client's Host header.
    pub preserve_host: bool,
    /// WebSocket upgrades are tunnelled.
    pub websocket: bool,
    /// Accepts cleartext requests (`http` or `grpc` in `protocols`).
    pub cleartext: bool,
    /// Accepts TLS requests (`https` or `grpcs` in `protocols`).
    pub tls: bool,
    /// The status for a cleartext request to a TLS-only route (426, or a redirect).
    pub https_redirect: http::StatusCode,
    /// Route-specific body limit.
    pub body_limit: Option<u64>,
    /// Plugins that apply to this route.
    pub chains: Chains,
}

/// Everything the data plane needs from one config version.
pub struct Snapshot {
    /// Config version this was built from.
    pub version: u64,
    /// The matcher.
    pub router: Router,
    /// Routes, indexed like the router's.
    pub routes: Vec<RouteRt>,
    /// Certificates for the TLS listener, by SNI.
    pub tls: Arc<crate::tls::server::CertStore>,
}

/// True when a route accepts gRPC only.
fn grpc_only(protocols: &[RouteProtocol]) -> bool {
    !protocols.is_empty()
        && protocols
            .iter()
            .all(|p| matches!(p, RouteProtocol::Grpc | RouteProtocol::Grpcs))
}

/// A target of a service spoken to over `transport` (identified by `transport_key` in pool
/// keys when it is not plain HTTP/1).
fn target(
    host: &str,
    port: u16,
    weight: u32,
    transport_key: &str,
    tls: bool,
) -> Result<Arc<TargetRt>, String> {
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let hostport = format!("{bracketed}:{port}");
    let default_port = if tls { 443 } else { 80 };
    let hh = if port == default_port {
        bracketed
    } else {
        hostport.clone()
    };
    let host_header = HeaderValue::from_str(&hh).map_err(|e| format!("host `{hh}`: {e}"))?;
    let key = if transport_key.is_empty() {
        hostport
    } else {
        format!("{transport_key}://{hostport}")
    };
    Ok(Arc::new(TargetRt {
        key: key.into(),
        tls_name: if tls {
            Some(crate::tls::client::server_name(host)?)
        } else {
            None
        },
        host: host.into(),
        port,
        host_header,
        weight,
    }))
}

/// The transport of a service, and the key that tells its pooled connections apart from
/// other transports' to the same address (empty for plain HTTP/1).
fn transport(
    s: &gatehouse_model::Service,
    protocol: ServiceProtocol,
    cfg: &Config,
) -> Result<(crate::upstream::Transport, String), (&'static str, String)> {
    use std::hash::{Hash, Hasher};
    if !protocol.tls() {
        let key = if protocol.http2() { "h2c" } else { "" };
        return Ok((
            crate::upstream::Transport {
                protocol,
                tls: None,
            },
            key.to_string(),
        ));
    }
    let client_cert = match &s.client_certificate {
        None => None,
        Some(id) => {
            let c = cfg
                .certificates
                .iter()
                .find(|c| c.id.to_string() == *id)
                .ok_or((
                    "client_certificate",
                    format!("no certificate with id `{id}`"),
                ))?;
            Some((c.cert.as_str(), c.key.as_str()))
        }
    };
    let spec = crate::tls::client::UpstreamTlsSpec {
        verify: s.tls_verify.unwrap_or(true),
        ca_certificates: &s.ca_certificates,
        client_certificate: client_cert,
        h2: protocol.http2(),
    };
    let config = crate::tls::client::client_config(&spec).map_err(|e| ("ca_certificates", e))?;
    // Services with the same TLS settings share pooled connections; others never do.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        spec.verify,
        spec.ca_certificates,
        &s.client_certificate,
        spec.h2,
    )
        .hash(&mut h);
    Ok((
        crate::upstream::Transport {
            protocol,
            tls: Some(config),
        },
        format!("{}-{:016x}", protocol.as_str(), h.finish()),
    ))
}

impl Snapshot {
    /// An empty snapshot (every request gets 404) used before the first config loads.
    pub fn empty() -> Snapshot {
        Snapshot {
            version: 0,
            router: Router::new(&[]).expect("empty router"),
            routes: Vec::new(),
            tls: Arc::new(crate::tls::server::CertStore::default()),
        }
    }

    /// Compiles a validated, flat config (plugins with `registry`).
    pub fn compile(
        cfg: &Config,
        version: u64,
        registry: &Registry,
    ) -> Result<Snapshot, ConfigError> {
        let mut errors = Vec::new();
        let generation = registry.state.begin();
        let built = match build_instances(cfg, registry) {
            Ok(b) => b,
            Err((i, e)) => {
                let p = &cfg.plugins[i];
                return Err(vec![FieldError::new(
                    format!("plugin '{}'", p.name),
                    format!("plugins[{i}].config"),
                    e,
                )]
                .into());
            }
        };
        let mut services = std::collections::HashMap::new();
        for (i, s) in cfg.services.iter().enumerate() {
            let ent = format!(
                "service '{}'",
                s.name.clone().unwrap_or_else(|| s.id.to_string())
            );
            let protocol = match &s.url {
                Some(url) => match parse_service_url(url) {
                    Ok(u) => u.protocol,
                    Err(e) => {
                        errors.push(FieldError::new(ent, format!("services[{i}].url"), e));
                        continue;
                    }
                },
                None => s.protocol.unwrap_or(ServiceProtocol::Http),
            };
            let (transport, tkey) = match transport(s, protocol, cfg) {
                Ok(t) => t,
                Err((f, e)) => {
                    errors.push(FieldError::new(ent, format!("services[{i}].{f}"), e));
                    continue;
                }
            };
            let tls = protocol.tls();
            let (backend, base_path) = if let Some(url) = &s.url {
                match parse_service_url(url)
                    .and_then(|u| Ok((target(&u.host, u.port, 1, &tkey, tls)?, u.path)))
                {
                    Ok((t, p)) => (Backend::Single(t), p),
                    Err(e) => {
                        errors.push(FieldError::new(ent, format!("services[{i}].url"), e));
                        continue;
                    }
                }
            } else {
                let up = s
                    .upstream
                    .as_deref()
                    .and_then(|u| cfg.upstreams.iter().find(|x| x.id.to_string() == u));
                let Some(up) = up else {
                    errors.push(FieldError::new(
                        ent,
                        format!("services[{i}].upstream"),
                        "unknown upstream",
                    ));
                    continue;
                };
                let mut targets = Vec::new();
                for t in up.targets.iter().filter(|t| t.weight > 0) {
                    match parse_host_port(&t.target, protocol.default_port())
                        .and_then(|(h, p)| target(&h, p, t.weight, &tkey, tls))
                    {
                        Ok(t) => targets.push(t),
                        Err(e) => errors.push(FieldError::new(
                            ent.clone(),
                            format!("upstreams '{}'.targets", up.name),
                            e,
                        )),
                    }
                }
                let backend = Backend::Upstream {
                    id: up.id,
                    name: up.name.as_str().into(),
                    targets: targets.into(),
                };
                (
                    backend,
                    s.path
                        .clone()
                        .unwrap_or_default()
                        .trim_end_matches('/')
                        .to_string(),
                )
            };
            let ms = Duration::from_millis;
            services.insert(
                s.id.to_string(),
                Arc::new(ServiceRt {
                    id: s.id,
                    name: s.name.as_deref().map(Arc::from),
                    base_path: base_path.into_boxed_str(),
                    backend,
                    connect_timeout: ms(s.connect_timeout),
                    read_timeout: ms(s.read_timeout),
                    write_timeout: ms(s.write_timeout),
                    retries: s.retries,
                    transport,
                }),
            );
        }
        let mut chains = ChainIndex::new(cfg, &built);
        let mut specs = Vec::with_capacity(cfg.routes.len());
        let mut routes = Vec::with_capacity(cfg.routes.len());
        // A disabled service's routes take no traffic: they are left out of the router.
        let disabled: std::collections::HashSet<String> = cfg
            .services
            .iter()
            .filter(|s| !s.enabled)
            .map(|s| s.id.to_string())
            .collect();
        for (i, r) in cfg.routes.iter().enumerate() {
            if r.service.as_ref().is_some_and(|s| disabled.contains(s)) {
                continue;
            }
            let Some(service) = r.service.as_deref().and_then(|s| services.get(s)) else {
                errors.push(FieldError::new(
                    format!("route at routes[{i}]"),
                    format!("routes[{i}].service"),
                    "unknown service",
                ));
                continue;
            };
            specs.push(RouteSpec {
                hosts: r.hosts.clone(),
                paths: r.paths.clone(),
                methods: r.methods.clone(),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                priority: r.priority,
                regex_priority: r.regex_priority,
            });
            routes.push(RouteRt {
                id: r.id,
                name: r.name.as_deref().map(Arc::from),
                service: service.clone(),
                // gRPC method paths are never stripped (Kong does not either).
                strip_path: r.strip_path && !grpc_only(&r.protocols),
                preserve_host: r.preserve_host,
                websocket: r.websocket,
                cleartext: r.protocols.is_empty()
                    || r.protocols
                        .iter()
                        .any(|p| matches!(p, RouteProtocol::Http | RouteProtocol::Grpc)),
                tls: r.protocols.is_empty()
                    || r.protocols
                        .iter()
                        .any(|p| matches!(p, RouteProtocol::Https | RouteProtocol::Grpcs)),
                https_redirect: http::StatusCode::from_u16(
                    r.https_redirect_status_code.unwrap_or(426),
                )
                .unwrap_or(http::StatusCode::UPGRADE_REQUIRED),
                body_limit: r.request_body_limit,
                chains: chains.chains(r.id, service.id),
            });
        }
        let tls = match crate::tls::server::CertStore::build(&cfg.certificates) {
            Ok(t) => Some(Arc::new(t)),
            Err(errs) => {
                for (i, f, m) in errs {
                    errors.push(FieldError::new(
                        format!("certificate at certificates[{i}]"),
                        format!("certificates[{i}].{f}"),
                        m,
                    ));
                }
                None
            }
        };
        let router = match Router::new(&specs) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(FieldError::new(
                    "route",
                    format!("routes[{}]", e.index),
                    e.message,
                ));
                None
            }
        };
        match (router, tls) {
            (Some(router), Some(tls)) if errors.is_empty() => {
                registry.state.sweep(generation);
                Ok(Snapshot {
                    version,
                    router,
                    routes,
                    tls,
                })
            }
            _ => Err(errors.into()),
        }
    }
}
