//! Gatehouse's built-in plugins. Each plugin is one module with its config type (serde, with
//! defaults and field-path validation, and a JSON Schema from the same type), a priority, and
//! only the phases it needs. `registry()` lists them all.

pub mod ai;
pub mod auth;
pub mod client;
pub mod config;
pub mod observe;
pub mod security;
pub mod traffic;
pub mod transform;

use std::sync::Arc;

use gatehouse_proxy::plugin::{Factory, Registry};

/// Every built-in plugin, ready to hand to the proxy and the validators (a node without
/// shared counters).
pub fn registry() -> Registry {
    registry_with(None)
}

/// Every built-in plugin; limits with `policy: redis` count in `cluster`.
pub fn registry_with(
    cluster: Option<Arc<traffic::counters::cluster::ClusterCounters>>,
) -> Registry {
    registry_for(cluster, None)
}

/// Every built-in plugin of a serving node: limits with `policy: redis` count in
/// `cluster`; `ai-budget` keeps `policy: local` spend in `data_dir` across restarts.
pub fn registry_for(
    cluster: Option<Arc<traffic::counters::cluster::ClusterCounters>>,
    data_dir: Option<std::path::PathBuf>,
) -> Registry {
    let factories: Vec<Arc<dyn Factory>> = vec![
        Arc::new(auth::basic_auth::BasicAuth),
        Arc::new(auth::hmac_auth::HmacAuth),
        Arc::new(auth::jwt::Jwt),
        Arc::new(auth::key_auth::KeyAuth),
        Arc::new(auth::mtls_auth::MtlsAuth),
        Arc::new(security::acl::Acl),
        Arc::new(security::cors::Cors),
        Arc::new(security::ip_restriction::IpRestriction),
        Arc::new(security::request_termination::RequestTermination),
        Arc::new(security::request_validator::RequestValidator),
        Arc::new(traffic::limit_conn::LimitConn),
        Arc::new(traffic::proxy_cache::ProxyCache),
        Arc::new(traffic::rate_limiting::RateLimiting {
            cluster: cluster.clone(),
        }),
        Arc::new(ai::limits::AiRateLimiting {
            cluster: cluster.clone(),
        }),
        Arc::new(ai::limits::AiBudget {
            cluster,
            spend_dir: data_dir,
        }),
        Arc::new(traffic::request_size_limiting::RequestSizeLimiting),
        Arc::new(transform::correlation_id::CorrelationId),
        Arc::new(transform::grpc_web::GrpcWeb),
        Arc::new(transform::request_transformer::RequestTransformer),
        Arc::new(transform::response_transformer::ResponseTransformer),
        Arc::new(observe::file_log::FileLog),
        Arc::new(observe::http_log::HttpLog),
        Arc::new(observe::prometheus::Prometheus),
        Arc::new(ai::proxy::AiProxy),
        Arc::new(ai::prompt::AiPromptTemplate),
        Arc::new(ai::prompt::AiPromptGuard),
    ];
    Registry::new(factories)
}
