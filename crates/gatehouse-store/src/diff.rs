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

/// Puts for new or changed entities, deletes for removed ones.
pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let before: HashMap<(Kind, Uuid), Entity> = entities(old)
        .into_iter()
        .map(|e| ((e.kind(), e.id()), e))
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut changes = Vec::new();
    for e in entities(new) {
        let key = (e.kind(), e.id());
        seen.insert(key);
        if before.get(&key) != Some(&e) {
            changes.push(Change::Put(e));
        }
    }
    for e in entities(old) {
        if !seen.contains(&(e.kind(), e.id())) {
            changes.push(Change::Delete(e.kind(), e.id()));
        }
    }
    changes
}

/// Applies changes to an in-memory config (used by stores that keep one).
pub fn apply(cfg: &mut Config, changes: Vec<Change>) {
    fn upsert<T: Clone>(list: &mut Vec<T>, item: T, id: impl Fn(&T) -> Uuid) {
        let key = id(&item);
        match list.iter_mut().find(|x| id(x) == key) {
            Some(slot) => *slot = item,
            None => list.push(item),
        }
    }
    for c in changes {
        match c {
            Change::Put(Entity::Service(e)) => upsert(&mut cfg.services, e, |x| x.id),
            Change::Put(Entity::Route(e)) => upsert(&mut cfg.routes, e, |x| x.id),
            Change::Put(Entity::Upstream(e)) => upsert(&mut cfg.upstreams, e, |x| x.id),
            Change::Put(Entity::Consumer(e)) => upsert(&mut cfg.consumers, e, |x| x.id),
            Change::Put(Entity::Plugin(e)) => upsert(&mut cfg.plugins, e, |x| x.id),
            Change::Put(Entity::Certificate(e)) => upsert(&mut cfg.certificates, e, |x| x.id),
            Change::Delete(k, id) => match k {
                Kind::Service => cfg.services.retain(|x| x.id != id),
                Kind::Route => cfg.routes.retain(|x| x.id != id),
                Kind::Upstream => cfg.upstreams.retain(|x| x.id != id),
                Kind::Consumer => cfg.consumers.retain(|x| x.id != id),
                Kind::Plugin => cfg.plugins.retain(|x| x.id != id),
                Kind::Certificate => cfg.certificates.retain(|x| x.id != id),
            },
        }
    }
}
