//! The configuration entities (Kong-compatible names) shared by the file format, the stores
//! and the admin API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

fn is_nil(id: &Uuid) -> bool {
    id.is_nil()
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn is_true(b: &bool) -> bool {
    *b
}
fn yes() -> bool {
    true
}
fn default_timeout() -> u64 {
    60_000
}
fn default_retries() -> u32 {
    5
}
fn default_weight() -> u32 {
    100
}

/// A backend API that routes send traffic to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Unique name, usable instead of the id everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where to send requests: `scheme://host:port/base-path`, scheme one of `http`,
    /// `https`, `grpc`, `grpcs`, `h2c` (HTTP/2 without TLS), `h2` (HTTP/2 over TLS).
    /// Exclusive with `upstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Name or id of an upstream (load-balanced pool). Exclusive with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// How to talk to the upstream's targets (with `upstream`, or Kong's split form); with
    /// `url` the scheme says it. Default `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ServiceProtocol>,
    /// Kong's split form: the host (or the name of an upstream) instead of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Kong's split form: the port (default 80, or 443 for TLS protocols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Base path prepended to the forwarded path when `upstream` (or the split form) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Verify the upstream's TLS certificate and name (default true). Turn off only for a
    /// backend you reach over a network you trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_verify: Option<bool>,
    /// PEM CA bundles trusted for the upstream's certificate instead of the system roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<String>,
    /// Id of a `certificates` entity presented to the upstream (upstream mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Milliseconds to establish a TCP connection to a target.
    #[serde(default = "default_timeout")]
    pub connect_timeout: u64,
    /// Milliseconds to wait for the response head, and between two reads of the response body.
    #[serde(default = "default_timeout")]
    pub read_timeout: u64,
    /// Milliseconds allowed between two writes of the request body to the target.
    #[serde(default = "default_timeout")]
    pub write_timeout: u64,
    /// How many other targets to try when connecting fails (the request was not sent yet).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// A disabled service keeps its config, but its routes take no traffic (as in Kong).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Declarative files only: routes of this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub routes: Vec<Route>,
    /// Declarative files only: plugins scoped to this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

/// How a service's targets are spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProtocol {
    /// HTTP/1.1 over TCP.
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// gRPC over HTTP/2 without TLS.
    Grpc,
    /// gRPC over HTTP/2 over TLS.
    Grpcs,
    /// HTTP/2 without TLS (prior knowledge).
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
}

impl ServiceProtocol {
    /// The URL scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceProtocol::Http => "http",
            ServiceProtocol::Https => "https",
            ServiceProtocol::Grpc => "grpc",
            ServiceProtocol::Grpcs => "grpcs",
            ServiceProtocol::H2c => "h2c",
            ServiceProtocol::H2 => "h2",
        }
    }
    /// Parses a URL scheme.
    pub fn parse(s: &str) -> Option<ServiceProtocol> {
        Some(match s {
            "http" => ServiceProtocol::Http,
            "https" => ServiceProtocol::Https,
            "grpc" => ServiceProtocol::Grpc,
            "grpcs" => ServiceProtocol::Grpcs,
            "h2c" => ServiceProtocol::H2c,
            "h2" => ServiceProtocol::H2,
            _ => return None,
        })
    }
    /// True when the connection to the target is TLS.
    pub fn tls(self) -> bool {
        matches!(
            self,
            ServiceProtocol::Https | ServiceProtocol::Grpcs | ServiceProtocol::H2
        )
    }
    /// True when the connection to the target is HTTP/2.
    pub fn http2(self) -> bool {
        !matches!(self, ServiceProtocol::Http | ServiceProtocol::Https)
    }
    /// The port used when none is given.
    pub fn default_port(self) -> u16 {
        if self.tls() {
            443
        } else {
            80
        }
    }
}

/// Which client protocols a route accepts (Kong's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteProtocol {
    /// Cleartext HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// gRPC over cleartext HTTP/2.
    Grpc,
    /// gRPC over TLS.
    Grpcs,
}

/// How requests reach a service: match conditions plus rewriting options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Unique name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Name or id of the service (implied when nested under a service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Hosts: exact (`api.example.com`) or leading wildcard (`*.example.com`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Paths: prefix (`/orders`), exact (`=/health`), regex (`~/items/\d+$`); `{param}` segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// HTTP methods; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Header name → accepted values (any of them). A value starting with `~` is a regex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the matched path prefix before forwarding.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub strip_path: bool,
    /// Forward the client's Host header instead of the target's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub preserve_host: bool,
    /// Client protocols the route accepts (default `http` and `https`). A cleartext request
    /// to a route that accepts only TLS gets `https_redirect_status_code`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<RouteProtocol>,
    /// Answer to a cleartext request on a TLS-only route: 426 (default), or a redirect to
    /// the `https://` URL with 301, 302, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect_status_code: Option<u16>,
    /// Let WebSocket upgrades through to the service (off by default: an upgrade request on
    /// a route without it gets 400 `websocket_not_enabled`). No other upgrade is ever
    /// tunnelled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub websocket: bool,
    /// Higher wins among routes of the same precedence class.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    /// Order among routes matched by regex paths (higher first), as Kong's field; see
    /// docs/coming-from-kong.md for how regex and prefix paths rank.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub regex_priority: i64,
    /// Largest request body accepted in bytes (413 above it); overrides the server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_body_limit: Option<u64>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Declarative files only: plugins scoped to this route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
}

/// A load-balanced pool of targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Unique name, referenced by services.
    pub name: String,
    /// How targets are picked.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// The members of the pool.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// One member of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// `host:port` (port defaults to 80).
    pub target: String,
    /// Relative share of traffic; 0 takes the target out of rotation.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// An application or user calling the APIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Unique user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Unique id from another system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// API keys for the `key-auth` plugin (stored hashed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyauth_credentials: Vec<KeyAuthCredential>,
    /// Username/password pairs for the `basic-auth` plugin (passwords stored as argon2id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basicauth_credentials: Vec<BasicAuthCredential>,
    /// Username/secret pairs for the `hmac-auth` plugin (the secret is needed to verify
    /// signatures, so it is stored as given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hmacauth_credentials: Vec<HmacAuthCredential>,
    /// Keys for the `jwt` plugin: which tokens belong to this consumer and how to verify them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_secrets: Vec<JwtSecret>,
    /// Client-certificate identities for the `mtls-auth` plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mtls_credentials: Vec<MtlsCredential>,
    /// Groups for the `acl` plugin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<AclGroup>,
    /// Declarative files only: plugins scoped to this consumer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

/// An API key of a consumer. The key is given once (`key`) and kept only as its SHA-256
/// (`key_hash`), so a database or config dump never holds usable keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthCredential {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// The key, on input only; replaced by `key_hash` when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Hex SHA-256 of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A username and password of a consumer. The password is given once (`password`) and kept
/// only as an argon2id hash (`password_hash`, PHC format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthCredential {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// The username clients send (unique across consumers).
    pub username: String,
    /// The password, on input only; replaced by `password_hash` when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Argon2id hash of the password (PHC string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A username and shared secret for HMAC request signatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthCredential {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// The username clients put in the signature (unique across consumers).
    pub username: String,
    /// The shared secret (at least 16 characters).
    pub secret: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn hs256() -> String {
    "HS256".into()
}

/// A JWT credential: tokens whose `key_claim_name` claim (default `iss`) equals `key` belong to
/// the consumer, verified with `secret` (HS*) or `rsa_public_key` (PEM public key for RS*, PS*,
/// ES*, EdDSA), or with the plugin's JWKS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtSecret {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Value of the key claim that identifies this credential (unique).
    pub key: String,
    /// Algorithm of the tokens: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA.
    #[serde(default = "hs256")]
    pub algorithm: String,
    /// Shared secret for HS* (stored as given: verifying needs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// PEM public key for the asymmetric algorithms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsa_public_key: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A client certificate identity: a verified certificate whose subject common name or one
/// of whose subject alternative names equals `subject_name` belongs to the consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsCredential {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// The CN or SAN (DNS name, e-mail, URI, IP) to match (unique across consumers).
    pub subject_name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A group a consumer belongs to, for the `acl` plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclGroup {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Group name.
    pub group: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A plugin instance and its scope (global when no scope field is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// Plugin name, e.g. `key-auth`.
    pub name: String,
    /// Plugin-specific settings.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// A disabled plugin stays stored but does not run.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Scope: service name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Scope: route name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Scope: consumer username or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// A name for this instance, unique among plugins (Kong's field; lets two instances of
    /// one plugin be told apart in logs and the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A TLS certificate and key, served for the listed SNIs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// Stable identity; generated when absent.
    #[serde(default, skip_serializing_if = "is_nil")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub id: Uuid,
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// Server names this certificate answers for (`*.example.com` allowed).
    #[serde(default)]
    pub snis: Vec<String>,
    /// PEM CA bundle for client certificates (mTLS) on these SNIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// With `client_ca`: whether a client certificate is `required` (default) or
    /// `optional` (verified when sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// When it was created (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<u64>,
    /// When it last changed (Unix seconds; set by the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<u64>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Whether a TLS client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Verified when sent; a client without one is let through (plugins decide).
    Optional,
    /// The handshake fails without a valid client certificate.
    Required,
}

/// A whole configuration: the declarative file format, and (flattened) what stores hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version; must be `"1"`.
    #[serde(rename = "_format_version", default = "format_version")]
    pub format_version: String,
    /// Backend APIs (may nest their routes and plugins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Routes declared at top level (with `service:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Load-balanced pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<Upstream>,
    /// API consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// Plugins (global, or scoped by `service`/`route`/`consumer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    /// TLS certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Certificate>,
    /// LLM providers (the AI gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_providers: Vec<crate::ai::AiProvider>,
    /// Public model names and the providers serving them (the AI gateway).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ai_models: Vec<crate::ai::AiModel>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format_version: format_version(),
            services: Vec::new(),
            routes: Vec::new(),
            upstreams: Vec::new(),
            consumers: Vec::new(),
            plugins: Vec::new(),
            certificates: Vec::new(),
            ai_providers: Vec::new(),
            ai_models: Vec::new(),
        }
    }
}

/// The only declarative format version this build reads.
pub const FORMAT_VERSION: &str = "1";

fn format_version() -> String {
    FORMAT_VERSION.to_string()
}

/// The kinds of entity, for messages, store keys and admin paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// [`Service`]
    Service,
    /// [`Route`]
    Route,
    /// [`Upstream`]
    Upstream,
    /// [`Consumer`]
    Consumer,
    /// [`Plugin`]
    Plugin,
    /// [`Certificate`]
    Certificate,
    /// [`AiProvider`](crate::ai::AiProvider)
    AiProvider,
    /// [`AiModel`](crate::ai::AiModel)
    AiModel,
}

impl Kind {
    /// Every kind, in dependency order (referenced kinds first).
    pub const ALL: [Kind; 8] = [
        Kind::Upstream,
        Kind::Service,
        Kind::Route,
        Kind::Consumer,
        Kind::Plugin,
        Kind::Certificate,
        Kind::AiProvider,
        Kind::AiModel,
    ];

    /// Singular lower-case name (`service`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Upstream => "upstream",
            Kind::Consumer => "consumer",
            Kind::Plugin => "plugin",
            Kind::Certificate => "certificate",
            Kind::AiProvider => "ai_provider",
            Kind::AiModel => "ai_model",
        }
    }

    /// Plural name as used in files and admin paths (`services`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Route => "routes",
            Kind::Upstream => "upstreams",
            Kind::Consumer => "consumers",
            Kind::Plugin => "plugins",
            Kind::Certificate => "certificates",
            Kind::AiProvider => "ai_providers",
            Kind::AiModel => "ai_models",
        }
    }

    /// Parses a singular or plural name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s || k.plural() == s)
    }
}
