//! Turns a configuration as written (nested routes and plugins, references by name) into the
//! flat form stores and the proxy use: every entity has an id, every reference is an id.

use std::collections::HashMap;

use uuid::Uuid;

use crate::entities::{Config, Kind};
use crate::error::FieldError;

/// Namespace for ids derived from names, so a file reloaded keeps its ids.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6761_7465_686f_7573_6500_0000_0000_0001);

/// Where each entity came from (its field path in the source document).
pub type Origins = HashMap<Uuid, String>;

/// Derives a stable id for an entity that has none.
pub fn derive_id(kind: Kind, key: &str) -> Uuid {
    Uuid::new_v5(&ID_NAMESPACE, format!("{}:{key}", kind.as_str()).as_bytes())
}

/// Human label of an entity for error messages.
pub fn label(kind: Kind, name: Option<&str>, path: &str) -> String {
    match name {
        Some(n) => format!("{} '{n}'", kind.as_str()),
        None if path.is_empty() => kind.as_str().to_string(),
        None => format!("{} at {path}", kind.as_str()),
    }
}

thread_local! {
    static USED: std::cell::RefCell<std::collections::HashSet<Uuid>> = Default::default();
}

/// Gives an entity without id a stable one from `key`; if two entities would get the same
/// (duplicate names, reported by validation), the later one is keyed by its position instead.
fn fill(id: &mut Uuid, kind: Kind, key: &str) {
    if id.is_nil() {
        let mut cand = derive_id(kind, key);
        USED.with(|u| {
            let mut u = u.borrow_mut();
            let mut n = 0;
            while u.contains(&cand) {
                n += 1;
                cand = derive_id(kind, &format!("{key}#{n}"));
            }
            u.insert(cand);
        });
        *id = cand;
    }
}

/// Kong's split form (`protocol`, `host`, `port`, `path`) becomes `url` — or, when `host`
/// names an upstream, `upstream` (as Kong resolves it).
fn split_form(
    s: &mut crate::entities::Service,
    upstreams: &std::collections::HashSet<String>,
    spath: &str,
    errors: &mut Vec<FieldError>,
) {
    let Some(host) = s.host.take() else {
        if s.port.is_some() {
            errors.push(FieldError::new(
                label(Kind::Service, s.name.as_deref(), spath),
                format!("{spath}.port"),
                "`port` goes with `host` (Kong's split form); with `url`, put the port in it",
            ));
        }
        return;
    };
    let ent = label(Kind::Service, s.name.as_deref(), spath);
    if s.url.is_some() || s.upstream.is_some() {
        errors.push(FieldError::new(
            ent,
            format!("{spath}.host"),
            "set `url`, `upstream` or `host` (with `protocol`, `port`, `path`), only one",
        ));
        return;
    }
    if upstreams.contains(&host) && s.port.is_none() {
        s.upstream = Some(host);
        return;
    }
    let protocol = s.protocol.take().unwrap_or(crate::ServiceProtocol::Http);
    let port = s.port.take().unwrap_or(protocol.default_port());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let path = s.path.take().unwrap_or_default();
    s.url = Some(format!("{}://{host}:{port}{path}", protocol.as_str()));
}

/// A secret comes either in the clear (`key`, `password`) or as its stored hash
/// (`key_hash`, `password_hash`, from a dump), never both (which one would count?); in the
/// clear it is not empty.
fn check_secret(
    clear: Option<&str>,
    hash: &Option<String>,
    name: &str,
    consumer: &str,
    field: &str,
    errors: &mut Vec<FieldError>,
) {
    if clear.is_some() && hash.is_some() {
        errors.push(FieldError::new(
            consumer,
            format!("{field}.{name}_hash"),
            format!("give `{name}` or `{name}_hash`, not both"),
        ));
    }
    if clear == Some("") {
        errors.push(FieldError::new(
            consumer,
            format!("{field}.{name}"),
            "must not be empty",
        ));
    }
}

/// Flattens nested entities and assigns missing ids. Returns the origin path of every entity.
pub fn flatten(cfg: &mut Config, errors: &mut Vec<FieldError>) -> Origins {
    USED.with(|u| {
        let mut u = u.borrow_mut();
        u.clear();
        u.extend(existing_ids(cfg));
    });
    let mut origins = Origins::new();
    let mut routes = Vec::new();
    let mut plugins = Vec::new();

    let upstream_names: std::collections::HashSet<String> =
        cfg.upstreams.iter().map(|u| u.name.clone()).collect();
    for (i, s) in cfg.services.iter_mut().enumerate() {
        let spath = format!("services[{i}]");
        split_form(s, &upstream_names, &spath, errors);
        let key = s.name.clone().unwrap_or_else(|| spath.clone());
        fill(&mut s.id, Kind::Service, &key);
        origins.insert(s.id, spath.clone());
        for (j, mut r) in std::mem::take(&mut s.routes).into_iter().enumerate() {
            let rpath = format!("{spath}.routes[{j}]");
            if r.service.is_some() {
                errors.push(FieldError::new(
                    label(Kind::Route, r.name.as_deref(), &rpath),
                    format!("{rpath}.service"),
                    "a route nested under a service must not name a service",
                ));
            }
            r.service = Some(s.id.to_string());
            fill(&mut r.id, Kind::Route, r.name.as_deref().unwrap_or(&rpath));
            origins.insert(r.id, rpath.clone());
            lift_plugins(
                std::mem::take(&mut r.plugins),
                r.id,
                &rpath,
                Scope::Route,
                &mut plugins,
                &mut origins,
                errors,
            );
            routes.push(r);
        }
        lift_plugins(
            std::mem::take(&mut s.plugins),
            s.id,
            &spath,
            Scope::Service,
            &mut plugins,
            &mut origins,
            errors,
        );
    }
    for (i, mut r) in std::mem::take(&mut cfg.routes).into_iter().enumerate() {
        let rpath = format!("routes[{i}]");
        fill(&mut r.id, Kind::Route, r.name.as_deref().unwrap_or(&rpath));
        origins.insert(r.id, rpath.clone());
        lift_plugins(
            std::mem::take(&mut r.plugins),
            r.id,
            &rpath,
            Scope::Route,
            &mut plugins,
            &mut origins,
            errors,
        );
        routes.push(r);
    }
    for (i, u) in cfg.upstreams.iter_mut().enumerate() {
        let upath = format!("upstreams[{i}]");
        fill(&mut u.id, Kind::Upstream, &u.name);
        origins.insert(u.id, upath.clone());
        let uid = u.id;
        for (j, t) in u.targets.iter_mut().enumerate() {
            fill(
                &mut t.id,
                Kind::Upstream,
                &format!("{uid}:target:{}", t.target),
            );
            origins.insert(t.id, format!("{upath}.targets[{j}]"));
        }
    }
    for (i, c) in cfg.consumers.iter_mut().enumerate() {
        let cpath = format!("consumers[{i}]");
        let key = c
            .username
            .clone()
            .or_else(|| c.custom_id.clone())
            .unwrap_or_else(|| cpath.clone());
        fill(&mut c.id, Kind::Consumer, &key);
        origins.insert(c.id, cpath.clone());
        let cid = c.id;
        for (j, cred) in c.jwt_secrets.iter_mut().enumerate() {
            fill(
                &mut cred.id,
                Kind::Consumer,
                &format!("{cid}:jwt:{}", cred.key),
            );
            origins.insert(cred.id, format!("{cpath}.jwt_secrets[{j}]"));
        }
        for (j, cred) in c.mtls_credentials.iter_mut().enumerate() {
            fill(
                &mut cred.id,
                Kind::Consumer,
                &format!("{cid}:mtls:{}", cred.subject_name),
            );
            origins.insert(cred.id, format!("{cpath}.mtls_credentials[{j}]"));
        }
        for (j, g) in c.acls.iter_mut().enumerate() {
            fill(&mut g.id, Kind::Consumer, &format!("{cid}:acl:{}", g.group));
            origins.insert(g.id, format!("{cpath}.acls[{j}]"));
        }
        for (j, cred) in c.hmacauth_credentials.iter_mut().enumerate() {
            fill(
                &mut cred.id,
                Kind::Consumer,
                &format!("{cid}:hmac:{}", cred.username),
            );
            origins.insert(cred.id, format!("{cpath}.hmacauth_credentials[{j}]"));
        }
        for (j, cred) in c.basicauth_credentials.iter_mut().enumerate() {
            let field = format!("{cpath}.basicauth_credentials[{j}]");
            let consumer = label(Kind::Consumer, c.username.as_deref(), &cpath);
            let clear = cred.password.as_deref();
            check_secret(
                clear,
                &cred.password_hash,
                "password",
                &consumer,
                &field,
                errors,
            );
            if let Some(p) = cred.password.take() {
                match crate::secret::hash_password(&p) {
                    Ok(h) => cred.password_hash = Some(h),
                    Err(e) => errors.push(FieldError::new(
                        consumer,
                        format!("{field}.password"),
                        format!("cannot hash the password: {e}"),
                    )),
                }
            }
            fill(
                &mut cred.id,
                Kind::Consumer,
                &format!("{cid}:basic:{}", cred.username),
            );
            origins.insert(cred.id, format!("{cpath}.basicauth_credentials[{j}]"));
        }
        for (j, cred) in c.keyauth_credentials.iter_mut().enumerate() {
            let field = format!("{cpath}.keyauth_credentials[{j}]");
            let consumer = label(Kind::Consumer, c.username.as_deref(), &cpath);
            check_secret(
                cred.key.as_deref(),
                &cred.key_hash,
                "key",
                &consumer,
                &field,
                errors,
            );
            if let Some(k) = cred.key.take() {
                cred.key_hash = Some(crate::secret::sha256_hex(&k));
            }
            let hash = cred.key_hash.clone().unwrap_or_default();
            fill(&mut cred.id, Kind::Consumer, &format!("{cid}:key:{hash}"));
            origins.insert(cred.id, format!("{cpath}.keyauth_credentials[{j}]"));
        }
        lift_plugins(
            std::mem::take(&mut c.plugins),
            c.id,
            &cpath,
            Scope::Consumer,
            &mut plugins,
            &mut origins,
            errors,
        );
    }
    for (i, mut p) in std::mem::take(&mut cfg.plugins).into_iter().enumerate() {
        let ppath = format!("plugins[{i}]");
        let scope = format!(
            "{}:{}:{}:{}",
            p.name,
            p.service.as_deref().unwrap_or(""),
            p.route.as_deref().unwrap_or(""),
            p.consumer.as_deref().unwrap_or("")
        );
        fill(&mut p.id, Kind::Plugin, &scope);
        origins.insert(p.id, ppath);
        plugins.push(p);
    }
    for (i, c) in cfg.certificates.iter_mut().enumerate() {
        let cpath = format!("certificates[{i}]");
        let key = c.snis.first().cloned().unwrap_or_else(|| cpath.clone());
        fill(&mut c.id, Kind::Certificate, &key);
        origins.insert(c.id, cpath);
    }
    for (i, p) in cfg.ai_providers.iter_mut().enumerate() {
        fill(&mut p.id, Kind::AiProvider, &p.name);
        origins.insert(p.id, format!("ai_providers[{i}]"));
    }
    for (i, m) in cfg.ai_models.iter_mut().enumerate() {
        fill(&mut m.id, Kind::AiModel, &m.name);
        origins.insert(m.id, format!("ai_models[{i}]"));
    }
    cfg.routes = routes;
    cfg.plugins = plugins;
    origins
}

/// What a nested plugin is scoped to.
#[derive(Clone, Copy)]
enum Scope {
    Service,
    Route,
    Consumer,
}

/// Moves plugins nested under an entity to the top level, scoped to that entity.
fn lift_plugins(
    nested: Vec<crate::entities::Plugin>,
    parent: Uuid,
    parent_path: &str,
    scope: Scope,
    out: &mut Vec<crate::entities::Plugin>,
    origins: &mut Origins,
    errors: &mut Vec<FieldError>,
) {
    for (k, mut p) in nested.into_iter().enumerate() {
        let ppath = format!("{parent_path}.plugins[{k}]");
        let (field, what) = match scope {
            Scope::Service => (&mut p.service, "service"),
            Scope::Route => (&mut p.route, "route"),
            Scope::Consumer => (&mut p.consumer, "consumer"),
        };
        if field.is_some() {
            errors.push(FieldError::new(
                format!("plugin at {ppath}"),
                format!("{ppath}.{what}"),
                format!("a plugin nested under a {what} must not name a {what}"),
            ));
        }
        *field = Some(parent.to_string());
        fill(
            &mut p.id,
            Kind::Plugin,
            &format!("{}:{what}:{parent}", p.name),
        );
        origins.insert(p.id, ppath);
        out.push(p);
    }
}

/// Like [`label`] for a kind known only by name.
pub fn label_str(kind: &str, name: Option<&str>, path: &str) -> String {
    match name {
        Some(n) => format!("{kind} '{n}'"),
        None => format!("{kind} at {path}"),
    }
}

fn existing_ids(cfg: &Config) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = Vec::new();
    for s in &cfg.services {
        ids.push(s.id);
        ids.extend(s.routes.iter().map(|r| r.id));
    }
    ids.extend(cfg.routes.iter().map(|r| r.id));
    ids.extend(cfg.upstreams.iter().map(|u| u.id));
    ids.extend(cfg.consumers.iter().map(|c| c.id));
    ids.extend(cfg.plugins.iter().map(|p| p.id));
    ids.extend(cfg.certificates.iter().map(|c| c.id));
    ids.extend(cfg.ai_providers.iter().map(|p| p.id));
    ids.extend(cfg.ai_models.iter().map(|m| m.id));
    ids.retain(|i| !i.is_nil());
    ids
}
