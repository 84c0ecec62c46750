//! Checks a flat configuration: field rules, uniqueness and references. Every problem is
//! collected (not just the first) and named by entity and field path.

// Validation of 100,000 routes hashes every name and id several times: foldhash, not SipHash
// (the keys are the admin's own names, not attacker-chosen request data).
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use uuid::Uuid;

use crate::entities::{Config, Kind};
use crate::error::FieldError;
use crate::normalize::{label, Origins};
use crate::pathspec;
use crate::plugin::PluginCatalog;

/// The words of every uniqueness error (the admin API answers those with 409).
pub const ALREADY_USED: &str = "is already used by";

/// Longest timeout accepted (one day), in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

struct Ctx<'a> {
    errors: Vec<FieldError>,
    origins: &'a Origins,
}

impl Ctx<'_> {
    /// Where the user wrote the entity (`services[0].routes[1]` in a file); empty for one
    /// made through the admin API or read from the store, whose position in the flat config
    /// the user never saw: such an entity is named by its name (or id) instead.
    fn path(&self, id: Uuid) -> String {
        self.origins.get(&id).cloned().unwrap_or_default()
    }
    fn err(&mut self, entity: &str, base: &str, field: &str, msg: impl Into<String>) {
        let path = match (base.is_empty(), field.is_empty()) {
            (true, _) => field.to_string(),
            (false, true) => base.to_string(),
            (false, false) if field.starts_with('[') => format!("{base}{field}"),
            (false, false) => format!("{base}.{field}"),
        };
        self.errors.push(FieldError::new(entity, path, msg));
    }
}

/// An entity's label: its name, else where the user wrote it, else its id.
fn named(kind: Kind, name: Option<&str>, base: &str, id: Uuid) -> String {
    match name {
        None if base.is_empty() => format!("{} {id}", kind.as_str()),
        _ => label(kind, name, base),
    }
}

/// Names of the entities a plugin can be scoped to, by id, for error labels.
struct ScopeNames(std::collections::HashMap<String, String>);

impl ScopeNames {
    fn of(cfg: &Config) -> ScopeNames {
        ScopeNames(crate::names_by_id(cfg))
    }

    fn name<'a>(&'a self, reference: &'a str) -> &'a str {
        self.0.get(reference).map_or(reference, String::as_str)
    }
}

/// `plugin 'rate-limiting' (global)`, `plugin 'cors' on route 'orders-api'`, with where
/// the user wrote it when it came from a file.
fn plugin_label(p: &crate::entities::Plugin, base: &str, names: &ScopeNames) -> String {
    let mut scope = Vec::new();
    for (kind, r) in [
        ("service", &p.service),
        ("route", &p.route),
        ("consumer", &p.consumer),
    ] {
        if let Some(r) = r {
            scope.push(format!("{kind} '{}'", names.name(r)));
        }
    }
    let scope = if scope.is_empty() {
        "(global)".to_string()
    } else {
        format!("on {}", scope.join(" and "))
    };
    if base.is_empty() {
        format!("plugin '{}' {scope}", p.name)
    } else {
        format!("plugin '{}' {scope} at {base}", p.name)
    }
}

/// True when `s` is usable as an entity name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Checks a route host pattern: `api.example.com` or `*.example.com`.
pub fn check_host_pattern(h: &str) -> Result<(), String> {
    if h.contains(':') {
        return Err(format!(
            "`{h}`: ports are not part of host matching; write the host alone"
        ));
    }
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{h}`: write hosts in lower case"));
    }
    let bare = h.strip_prefix("*.").unwrap_or(h);
    if !valid_hostname(bare) {
        return Err(format!(
            "`{h}` is not a host name (wildcards only as a leading `*.`)"
        ));
    }
    Ok(())
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses `host[:port]` (IPv6 in brackets); the port defaults to `default_port`.
pub fn parse_host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or("unclosed `[` in IPv6 address")?;
        let host = &rest[..end];
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        match &rest[end + 1..] {
            "" => (host.to_string(), None),
            p => (
                host.to_string(),
                Some(p.strip_prefix(':').ok_or("expected `:port` after `]`")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if !host.contains(':') && !valid_hostname(&host) {
        return Err(format!("`{host}` is not a host name or IP address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("`{p}` is not a port (1-65535)")),
        },
    };
    Ok((host, port))
}

/// A service URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// How to talk to it.
    pub protocol: crate::ServiceProtocol,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Base path (`""` when none).
    pub path: String,
}

/// Parses a service `url`.
pub fn parse_service_url(url: &str) -> Result<ServiceUrl, String> {
    let (protocol, rest) = url
        .split_once("://")
        .and_then(|(scheme, rest)| Some((crate::ServiceProtocol::parse(scheme)?, rest)))
        .ok_or_else(|| {
            format!("`{url}` must start with http://, https://, grpc://, grpcs://, h2c:// or h2://")
        })?;
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace()) {
        return Err("must not contain a query, a fragment or white space".into());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err("must not contain user info".into());
    }
    let (host, port) = parse_host_port(authority, protocol.default_port())?;
    let path = path.trim_end_matches('/');
    Ok(ServiceUrl {
        protocol,
        host,
        port,
        path: path.to_string(),
    })
}

fn check_unique<'a>(
    ctx: &mut Ctx,
    seen: &mut HashMap<&'a str, String>,
    value: &'a str,
    entity: &str,
    base: &str,
    field: &str,
    what: &str,
) {
    if let Some(first) = seen.get(value) {
        let msg = format!("{what} `{value}` {ALREADY_USED} {first}");
        ctx.err(entity, base, field, msg);
    } else {
        seen.insert(value, entity.to_string());
    }
}

/// Id unique across the config, name valid and unique within its kind; records both for
/// reference resolution.
#[allow(clippy::too_many_arguments)]
fn check_identity<'a>(
    ctx: &mut Ctx,
    ids: &mut HashSet<Uuid>,
    names: &mut HashMap<&'a str, String>,
    refs: &mut HashMap<String, Uuid>,
    id: Uuid,
    name: Option<&'a str>,
    ent: &str,
    base: &str,
) {
    if !ids.insert(id) {
        ctx.err(
            ent,
            base,
            "id",
            format!("id {id} {ALREADY_USED} another entity"),
        );
    }
    if let Some(n) = name {
        if !valid_name(n) {
            ctx.err(ent, base, "name", "must be 1-128 letters, digits or `._~-`");
        }
        check_unique(ctx, names, n, ent, base, "name", "name");
        refs.insert(n.to_string(), id);
    }
    refs.insert(id.to_string(), id);
}

fn resolve(map: &HashMap<String, Uuid>, r: &str) -> Option<Uuid> {
    map.get(r).copied().or_else(|| {
        r.parse::<Uuid>()
            .ok()
            .filter(|id| map.values().any(|v| v == id))
    })
}

/// Validates a flattened config and rewrites references to canonical ids.
pub fn validate(
    cfg: &mut Config,
    origins: &Origins,
    catalog: &dyn PluginCatalog,
) -> Vec<FieldError> {
    let mut ctx = Ctx {
        errors: Vec::new(),
        origins,
    };
    if cfg.format_version != crate::entities::FORMAT_VERSION {
        ctx.err(
            "document",
            "",
            "_format_version",
            format!(
                "must be \"1\" (Gatehouse's format) or \"3.0\" (a Kong decK file), found \"{}\"",
                cfg.format_version
            ),
        );
    }

    // --- upstreams
    let mut upstream_ids = HashMap::new();
    let mut names = HashMap::new();
    let mut ids = HashSet::new();
    for u in cfg.upstreams.iter() {
        let base = ctx.path(u.id);
        let ent = label(Kind::Upstream, Some(&u.name), &base);
        if !ids.insert(u.id) {
            ctx.err(
                &ent,
                &base,
                "id",
                format!("id {} {ALREADY_USED} another entity", u.id),
            );
        }
        if !valid_name(&u.name) {
            ctx.err(
                &ent,
                &base,
                "name",
                "must be 1-128 letters, digits or `._~-`",
            );
        }
        check_unique(&mut ctx, &mut names, &u.name, &ent, &base, "name", "name");
        upstream_ids.insert(u.name.clone(), u.id);
        upstream_ids.insert(u.id.to_string(), u.id);
        let mut seen_targets = HashMap::new();
        for (j, t) in u.targets.iter().enumerate() {
            let tpath = match ctx.origins.get(&t.id) {
                Some(p) => p.clone(),
                None if base.is_empty() => format!("targets[{j}]"),
                None => format!("{base}.targets[{j}]"),
            };
            if let Err(e) = parse_host_port(&t.target, 80) {
                ctx.err(&ent, &tpath, "target", e);
            }
            if let Some(first) = seen_targets.insert(t.target.as_str(), j) {
                ctx.err(
                    &ent,
                    &tpath,
                    "target",
                    format!("target `{}` {ALREADY_USED} targets[{first}]", t.target),
                );
            }
            if t.weight > 65_535 {
                ctx.err(&ent, &tpath, "weight", "must be 0-65535");
            }
        }
    }

    // --- services
    let cfg_cert_ids: HashSet<Uuid> = cfg.certificates.iter().map(|c| c.id).collect();
    let mut service_ids = HashMap::new();
    let mut names = HashMap::new();
    for s in cfg.services.iter_mut() {
        let base = ctx.path(s.id);
        let ent = named(Kind::Service, s.name.as_deref(), &base, s.id);
        check_identity(
            &mut ctx,
            &mut ids,
            &mut names,
            &mut service_ids,
            s.id,
            s.name.as_deref(),
            &ent,
            &base,
        );
        match (&s.url, &s.upstream) {
            (Some(_), Some(_)) => ctx.err(
                &ent,
                &base,
                "upstream",
                "set either `url` or `upstream`, not both",
            ),
            (None, None) => ctx.err(&ent, &base, "url", "a service needs `url` or `upstream`"),
            (Some(url), None) => {
                if let Err(e) = parse_service_url(url) {
                    ctx.err(&ent, &base, "url", e);
                }
                if s.path.is_some() {
                    ctx.err(
                        &ent,
                        &base,
                        "path",
                        "`path` goes with `upstream`; put the path in `url`",
                    );
                }
            }
            (None, Some(u)) => match resolve(&upstream_ids, u) {
                Some(id) => s.upstream = Some(id.to_string()),
                None => ctx.err(&ent, &base, "upstream", format!("no upstream named `{u}`")),
            },
        }
        if let (Some(url), Some(p)) = (&s.url, s.protocol) {
            if parse_service_url(url).is_ok_and(|u| u.protocol != p) {
                ctx.err(
                    &ent,
                    &base,
                    "protocol",
                    "`protocol` differs from the scheme of `url`; give one of them",
                );
            }
        }
        for (j, pem) in s.ca_certificates.iter().enumerate() {
            if let Err(e) = crate::tls::check_ca_bundle(pem) {
                ctx.err(&ent, &base, &format!("ca_certificates[{j}]"), e);
            }
        }
        if let Some(c) = &s.client_certificate {
            match c.parse::<Uuid>() {
                Ok(id) if cfg_cert_ids.contains(&id) => {}
                _ => ctx.err(
                    &ent,
                    &base,
                    "client_certificate",
                    format!("no certificate with id `{c}`"),
                ),
            }
        }
        if let Some(p) = &s.path {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                ctx.err(
                    &ent,
                    &base,
                    "path",
                    "must start with `/` and have no query or spaces",
                );
            }
        }
        for (f, v) in [
            ("connect_timeout", s.connect_timeout),
            ("read_timeout", s.read_timeout),
            ("write_timeout", s.write_timeout),
        ] {
            if v == 0 || v > MAX_TIMEOUT_MS {
                ctx.err(
                    &ent,
                    &base,
                    f,
                    format!("must be 1-{MAX_TIMEOUT_MS} milliseconds"),
                );
            }
        }
        if s.retries > 100 {
            ctx.err(&ent, &base, "retries", "must be 0-100");
        }
    }

    // --- routes
    let mut route_ids = HashMap::new();
    let mut names = HashMap::new();
    for r in cfg.routes.iter_mut() {
        let base = ctx.path(r.id);
        let ent = named(Kind::Route, r.name.as_deref(), &base, r.id);
        check_identity(
            &mut ctx,
            &mut ids,
            &mut names,
            &mut route_ids,
            r.id,
            r.name.as_deref(),
            &ent,
            &base,
        );
        match &r.service {
            None => ctx.err(&ent, &base, "service", "a route needs a `service`"),
            Some(s) => match resolve(&service_ids, s) {
                Some(id) => r.service = Some(id.to_string()),
                None => ctx.err(&ent, &base, "service", format!("no service named `{s}`")),
            },
        }
        if r.hosts.is_empty() && r.paths.is_empty() && r.methods.is_empty() && r.headers.is_empty()
        {
            ctx.err(
                &ent,
                &base,
                "paths",
                "a route needs at least one of `hosts`, `paths`, `methods`, `headers`",
            );
        }
        for (j, h) in r.hosts.iter().enumerate() {
            if let Err(e) = check_host_pattern(h) {
                ctx.err(&ent, &base, &format!("hosts[{j}]"), e);
            }
        }
        for (j, p) in r.paths.iter().enumerate() {
            if let Err(e) = pathspec::parse(p) {
                ctx.err(&ent, &base, &format!("paths[{j}]"), format!("`{p}`: {e}"));
            }
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !valid_token(m) || m.bytes().any(|b| b.is_ascii_lowercase()) {
                ctx.err(
                    &ent,
                    &base,
                    &format!("methods[{j}]"),
                    format!("`{m}` is not an upper-case HTTP method"),
                );
            }
        }
        for (name, values) in &r.headers {
            let hp = format!("headers.{name}");
            if !valid_token(name) {
                ctx.err(&ent, &base, &hp, format!("`{name}` is not a header name"));
            } else if name.eq_ignore_ascii_case("host") {
                ctx.err(&ent, &base, &hp, "match the Host header with `hosts`");
            }
            if values.is_empty() {
                ctx.err(&ent, &base, &hp, "list at least one value");
            }
            for (k, v) in values.iter().enumerate() {
                if let Some(rx) = v.strip_prefix('~') {
                    if let Err(e) = regex::Regex::new(rx) {
                        ctx.err(
                            &ent,
                            &base,
                            &format!("{hp}[{k}]"),
                            format!("invalid regex: {}", pathspec::regex_error(&e)),
                        );
                    }
                }
            }
        }
        if r.request_body_limit == Some(0) {
            ctx.err(
                &ent,
                &base,
                "request_body_limit",
                "must be at least 1 byte (omit it for the server default)",
            );
        }
        if let Some(code) = r.https_redirect_status_code {
            if ![426, 301, 302, 307, 308].contains(&code) {
                ctx.err(
                    &ent,
                    &base,
                    "https_redirect_status_code",
                    "must be 426, 301, 302, 307 or 308",
                );
            }
        }
    }

    // --- consumers
    let mut consumer_ids = HashMap::new();
    let mut names = HashMap::new();
    let mut custom = HashMap::new();
    let mut key_hashes: HashMap<String, String> = HashMap::new();
    let mut basic_users: HashMap<&str, String> = HashMap::new();
    let mut hmac_users: HashMap<&str, String> = HashMap::new();
    let mut mtls_subjects: HashMap<&str, String> = HashMap::new();
    let mut jwt_keys: HashMap<&str, String> = HashMap::new();
    let mut credential_ids: HashMap<Uuid, String> = HashMap::new();
    for c in cfg.consumers.iter() {
        let base = ctx.path(c.id);
        let ent = named(Kind::Consumer, c.username.as_deref(), &base, c.id);
        // A credential is addressed by its id alone (`/key-auths/{id}`…): unique across
        // every consumer and kind.
        let creds = c
            .keyauth_credentials
            .iter()
            .map(|x| ("keyauth_credentials", x.id))
            .chain(
                c.basicauth_credentials
                    .iter()
                    .map(|x| ("basicauth_credentials", x.id)),
            )
            .chain(
                c.hmacauth_credentials
                    .iter()
                    .map(|x| ("hmacauth_credentials", x.id)),
            )
            .chain(c.jwt_secrets.iter().map(|x| ("jwt_secrets", x.id)))
            .chain(
                c.mtls_credentials
                    .iter()
                    .map(|x| ("mtls_credentials", x.id)),
            )
            .chain(c.acls.iter().map(|x| ("acls", x.id)));
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (list, id) in creds {
            let j = index.entry(list).or_default();
            let field = format!("{list}[{j}].id");
            *j += 1;
            if let Some(first) = credential_ids.get(&id) {
                ctx.err(
                    &ent,
                    &base,
                    &field,
                    format!("id {id} {ALREADY_USED} {first}"),
                );
            } else {
                credential_ids.insert(id, format!("a credential of {ent}"));
            }
        }
        if !ids.insert(c.id) {
            ctx.err(
                &ent,
                &base,
                "id",
                format!("id {} {ALREADY_USED} another entity", c.id),
            );
        }
        if c.username.is_none() && c.custom_id.is_none() {
            ctx.err(
                &ent,
                &base,
                "username",
                "a consumer needs `username` or `custom_id`",
            );
        }
        if let Some(u) = &c.username {
            if u.is_empty() || u.len() > 128 {
                ctx.err(&ent, &base, "username", "must be 1-128 characters");
            }
            check_unique(&mut ctx, &mut names, u, &ent, &base, "username", "username");
            consumer_ids.insert(u.clone(), c.id);
        }
        if let Some(u) = &c.custom_id {
            check_unique(
                &mut ctx,
                &mut custom,
                u,
                &ent,
                &base,
                "custom_id",
                "custom_id",
            );
        }
        for (j, g) in c.acls.iter().enumerate() {
            if g.group.trim().is_empty() || g.group.contains(',') {
                ctx.err(
                    &ent,
                    &base,
                    &format!("acls[{j}].group"),
                    "must be a non-empty name without commas",
                );
            }
        }
        for (j, cred) in c.jwt_secrets.iter().enumerate() {
            let cp = format!("jwt_secrets[{j}]");
            if cred.key.is_empty() {
                ctx.err(&ent, &base, &format!("{cp}.key"), "must not be empty");
            } else {
                check_unique(
                    &mut ctx,
                    &mut jwt_keys,
                    &cred.key,
                    &ent,
                    &base,
                    &format!("{cp}.key"),
                    "key",
                );
            }
            let alg = cred.algorithm.as_str();
            let symmetric = matches!(alg, "HS256" | "HS384" | "HS512");
            let asymmetric = matches!(
                alg,
                "RS256"
                    | "RS384"
                    | "RS512"
                    | "PS256"
                    | "PS384"
                    | "PS512"
                    | "ES256"
                    | "ES384"
                    | "EdDSA"
            );
            if !symmetric && !asymmetric {
                ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.algorithm"),
                    format!("`{alg}` is not a supported algorithm"),
                );
            }
            if cred.secret.is_some() || symmetric {
                // Characters, as JSON Schema's `minLength` counts.
                let short = cred
                    .secret
                    .as_deref()
                    .is_none_or(|s| s.chars().count() < 16);
                if short {
                    ctx.err(
                        &ent,
                        &base,
                        &format!("{cp}.secret"),
                        "HS* algorithms need a `secret` of at least 16 characters",
                    );
                }
            }
            // Without a key, asymmetric tokens are verified with the jwt plugin's JWKS.
            if cred
                .rsa_public_key
                .as_deref()
                .is_some_and(|k| !k.contains("PUBLIC KEY"))
            {
                ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.rsa_public_key"),
                    "must be a PEM public key",
                );
            }
        }
        for (j, cred) in c.mtls_credentials.iter().enumerate() {
            let f = format!("mtls_credentials[{j}].subject_name");
            if cred.subject_name.trim().is_empty() {
                ctx.err(&ent, &base, &f, "must not be empty");
            } else {
                check_unique(
                    &mut ctx,
                    &mut mtls_subjects,
                    &cred.subject_name,
                    &ent,
                    &base,
                    &f,
                    "subject_name",
                );
            }
        }
        for (j, cred) in c.hmacauth_credentials.iter().enumerate() {
            let cp = format!("hmacauth_credentials[{j}]");
            if cred.username.is_empty() || cred.username.contains('"') {
                ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.username"),
                    "must be non-empty and contain no `\"`",
                );
            } else {
                check_unique(
                    &mut ctx,
                    &mut hmac_users,
                    &cred.username,
                    &ent,
                    &base,
                    &format!("{cp}.username"),
                    "username",
                );
            }
            if cred.secret.chars().count() < 16 {
                ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.secret"),
                    "must be at least 16 characters",
                );
            }
        }
        for (j, cred) in c.basicauth_credentials.iter().enumerate() {
            let cp = format!("basicauth_credentials[{j}]");
            if cred.username.is_empty() || cred.username.contains(':') {
                ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.username"),
                    "must be non-empty and contain no `:`",
                );
            } else {
                check_unique(
                    &mut ctx,
                    &mut basic_users,
                    &cred.username,
                    &ent,
                    &base,
                    &format!("{cp}.username"),
                    "username",
                );
            }
            match cred.password_hash.as_deref() {
                None => ctx.err(&ent, &base, &cp, "a basic-auth credential needs `password`"),
                Some(h) if !crate::secret::is_password_hash(h) => ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.password_hash"),
                    "must be an argon2 PHC string",
                ),
                Some(_) => {}
            }
        }
        for (j, cred) in c.keyauth_credentials.iter().enumerate() {
            let cp = format!("keyauth_credentials[{j}]");
            match cred.key_hash.as_deref() {
                None => ctx.err(&ent, &base, &cp, "a key credential needs `key`"),
                Some(h) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => ctx.err(
                    &ent,
                    &base,
                    &format!("{cp}.key_hash"),
                    "must be a hex SHA-256",
                ),
                Some(h) => {
                    if let Some(first) = key_hashes.get(h) {
                        ctx.err(
                            &ent,
                            &base,
                            &cp,
                            format!("this key is already used by {first}"),
                        );
                    } else {
                        key_hashes.insert(h.to_string(), ent.clone());
                    }
                }
            }
        }
        consumer_ids.insert(c.id.to_string(), c.id);
    }

    // --- plugins
    let scope_names = ScopeNames::of(cfg);
    let mut scopes = HashMap::new();
    let available = catalog.names();
    for p in cfg.plugins.iter_mut() {
        let base = ctx.path(p.id);
        let ent = plugin_label(p, &base, &scope_names);
        if !ids.insert(p.id) {
            ctx.err(
                &ent,
                &base,
                "id",
                format!("id {} {ALREADY_USED} another entity", p.id),
            );
        }
        for (field, slot, map) in [
            ("service", &mut p.service, &service_ids),
            ("route", &mut p.route, &route_ids),
            ("consumer", &mut p.consumer, &consumer_ids),
        ] {
            if let Some(r) = slot.as_deref() {
                match resolve(map, r) {
                    Some(id) => *slot = Some(id.to_string()),
                    None => ctx.err(&ent, &base, field, format!("no {field} named `{r}`")),
                }
            }
        }
        if !p.config.is_object() {
            ctx.err(&ent, &base, "config", "must be an object");
        }
        match catalog.check(&p.name, &p.config) {
            None => {
                let list = if available.is_empty() {
                    "none in this build".to_string()
                } else {
                    available.join(", ")
                };
                ctx.err(
                    &ent,
                    &base,
                    "name",
                    format!("unknown plugin `{}` (available: {list})", p.name),
                );
            }
            Some(problems) => {
                for (f, m) in problems {
                    let field = if f.is_empty() {
                        "config".to_string()
                    } else {
                        format!("config.{f}")
                    };
                    ctx.err(&ent, &base, &field, m);
                }
            }
        }
        let scope = (
            p.name.clone(),
            p.service.clone(),
            p.route.clone(),
            p.consumer.clone(),
        );
        if let Some(first) = scopes.get(&scope) {
            ctx.err(
                &ent,
                &base,
                "name",
                format!("plugin `{}` for this scope {ALREADY_USED} {first}", p.name),
            );
        } else {
            scopes.insert(scope, ent.clone());
        }
    }

    // --- certificates
    let mut snis = HashMap::new();
    for c in cfg.certificates.iter() {
        let base = ctx.path(c.id);
        let ent = named(
            Kind::Certificate,
            c.snis.first().map(String::as_str),
            &base,
            c.id,
        );
        if !ids.insert(c.id) {
            ctx.err(
                &ent,
                &base,
                "id",
                format!("id {} {ALREADY_USED} another entity", c.id),
            );
        }
        if let Err((f, m)) = crate::tls::check_certificate(&c.cert, &c.key) {
            ctx.err(&ent, &base, f, m);
        }
        if let Some(ca) = &c.client_ca {
            if let Err(e) = crate::tls::check_ca_bundle(ca) {
                ctx.err(&ent, &base, "client_ca", e);
            }
        } else if c.client_auth.is_some() {
            ctx.err(
                &ent,
                &base,
                "client_auth",
                "`client_auth` needs a `client_ca`",
            );
        }
        for (j, s) in c.snis.iter().enumerate() {
            if let Err(e) = check_host_pattern(s) {
                ctx.err(&ent, &base, &format!("snis[{j}]"), e);
            }
            check_unique(
                &mut ctx,
                &mut snis,
                s,
                &ent,
                &base,
                &format!("snis[{j}]"),
                "sni",
            );
        }
    }

    // --- AI providers and models
    let ai_ids = cfg
        .ai_providers
        .iter()
        .map(|p| (Kind::AiProvider, p.id, p.name.as_str()))
        .chain(
            cfg.ai_models
                .iter()
                .map(|m| (Kind::AiModel, m.id, m.name.as_str())),
        );
    for (kind, id, name) in ai_ids {
        if !ids.insert(id) {
            let base = ctx.path(id);
            let ent = label(kind, Some(name), &base);
            ctx.err(
                &ent,
                &base,
                "id",
                format!("id {id} {ALREADY_USED} another entity"),
            );
        }
    }
    let path_of = |id: Uuid| ctx.path(id);
    let problems = crate::ai::check(&cfg.ai_providers, &mut cfg.ai_models, &path_of);
    for (ent, base, field, msg) in problems {
        ctx.err(&ent, &base, &field, msg);
    }
    ctx.errors
}
