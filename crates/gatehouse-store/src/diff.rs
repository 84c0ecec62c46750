//! The changes that turn one flat config into another, so a store writes only what changed.

use std::collections::HashMap;

use gatehouse_model::{Config, Kind};
use uuid::Uuid;

use crate::{Change, Entity};

/// Every entity of a config, in declaration order.
pub fn entities(cfg: &Config) -> Vec<Entity> {
    let mut out = Vec::new();
    out.extend(cfg.upstreams.iter().cloned().map(Entity::Upstream));
    out.extend(cfg.services.iter().cloned().map(Entity::Service));
    out.extend(cfg.routes.iter().cloned().map(Entity::Route));
    out.extend(cfg.consumers.iter().cloned().map(Entity::Consumer));
    out.extend(cfg.plugins.iter().cloned().map(Entity::Plugin));
    out.extend(cfg.certificates.iter().cloned().map(Entity::Certificate));
    out
}

/// An entity borrowed from a config: diffing compares in place and clones only what changed
/// (a one-route edit of a 100,000-route config clones one route, not the config).
#[derive(PartialEq)]
enum Ref<'a> {
    Service(&'a gatehouse_model::Service),
    Route(&'a gatehouse_model::Route),
    Upstream(&'a gatehouse_model::Upstream),
    Consumer(&'a gatehouse_model::Consumer),
    Plugin(&'a gatehouse_model::Plugin),
    Certificate(&'a gatehouse_model::Certificate),
}

impl Ref<'_> {
    fn owned(&self) -> Entity {
        match *self {
            Ref::Service(e) => Entity::Service(e.clone()),
            Ref::Route(e) => Entity::Route(e.clone()),
            Ref::Upstream(e) => Entity::Upstream(e.clone()),
            Ref::Consumer(e) => Entity::Consumer(e.clone()),
            Ref::Plugin(e) => Entity::Plugin(e.clone()),
            Ref::Certificate(e) => Entity::Certificate(e.clone()),
        }
    }
}

/// Every entity of a config by reference, keyed, in declaration order.
fn refs(cfg: &Config) -> impl Iterator<Item = ((Kind, Uuid), Ref<'_>)> {
    let up = cfg
        .upstreams
        .iter()
        .map(|e| ((Kind::Upstream, e.id), Ref::Upstream(e)));
    let sv = cfg
        .services
        .iter()
        .map(|e| ((Kind::Service, e.id), Ref::Service(e)));
    let rt = cfg
        .routes
        .iter()
        .map(|e| ((Kind::Route, e.id), Ref::Route(e)));
    let cs = cfg
        .consumers
        .iter()
        .map(|e| ((Kind::Consumer, e.id), Ref::Consumer(e)));
    let pl = cfg
        .plugins
        .iter()
        .map(|e| ((Kind::Plugin, e.id), Ref::Plugin(e)));
    let ce = cfg
        .certificates
        .iter()
        .map(|e| ((Kind::Certificate, e.id), Ref::Certificate(e)));
    up.chain(sv).chain(rt).chain(cs).chain(pl).chain(ce)
}

/// Puts for new or changed entities, deletes for removed ones.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let before: HashMap<(Kind, Uuid), Ref<'_>> = refs(old).collect();
    let mut seen = std::collections::HashSet::with_capacity(before.len());
    let mut changes = Vec::new();
    for (key, e) in refs(new) {
        if before.get(&key) != Some(&e) {
            changes.push(Change::Put(e.owned()));
        }
        seen.insert(key);
    }
    for (key, _) in refs(old) {
        if !seen.contains(&key) {
            changes.push(Change::Delete(key.0, key.1));
        }
    }
    changes
}
