//! The changes that turn one flat config into another, so a store writes only what changed.

use std::collections::HashMap;

use gatehouse_model::{Config, Kind};
use uuid::Uuid;

use crate::{Change, Entity};

/// Every entity of a config, in declaration order (moved out of it, not copied: a
/// whole-config replacement of 100,000 routes writes them without cloning them).
pub fn into_entities(cfg: Config) -> Vec<Entity> {
    let mut out = Vec::new();
    out.extend(cfg.upstreams.into_iter().map(Entity::Upstream));
    out.extend(cfg.services.into_iter().map(Entity::Service));
    out.extend(cfg.routes.into_iter().map(Entity::Route));
    out.extend(cfg.consumers.into_iter().map(Entity::Consumer));
    out.extend(cfg.plugins.into_iter().map(Entity::Plugin));
    out.extend(cfg.certificates.into_iter().map(Entity::Certificate));
    out.extend(cfg.ai_providers.into_iter().map(Entity::AiProvider));
    out.extend(cfg.ai_models.into_iter().map(Entity::AiModel));
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
    AiProvider(&'a gatehouse_model::AiProvider),
    AiModel(&'a gatehouse_model::AiModel),
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
            Ref::AiProvider(e) => Entity::AiProvider(e.clone()),
            Ref::AiModel(e) => Entity::AiModel(e.clone()),
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
    let ap = cfg
        .ai_providers
        .iter()
        .map(|e| ((Kind::AiProvider, e.id), Ref::AiProvider(e)));
    let am = cfg
        .ai_models
        .iter()
        .map(|e| ((Kind::AiModel, e.id), Ref::AiModel(e)));
    up.chain(sv)
        .chain(rt)
        .chain(cs)
        .chain(pl)
        .chain(ce)
        .chain(ap)
        .chain(am)
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

/// Brings `cfg` to a delta's version: puts replace the entity with the same id in place
/// (new ones are appended, as the store orders them), deletes remove. Linear in the size of
/// the kinds touched.
pub fn patch(cfg: &mut Config, delta: crate::Delta) {
    fn put<T>(list: &mut Vec<T>, items: Vec<T>, id: impl Fn(&T) -> Uuid) {
        if items.is_empty() {
            return;
        }
        let at: HashMap<Uuid, usize> = list.iter().enumerate().map(|(i, x)| (id(x), i)).collect();
        for item in items {
            match at.get(&id(&item)) {
                Some(&i) => list[i] = item,
                None => list.push(item),
            }
        }
    }
    fn remove<T>(
        list: &mut Vec<T>,
        gone: &std::collections::HashSet<Uuid>,
        id: impl Fn(&T) -> Uuid,
    ) {
        if !gone.is_empty() {
            list.retain(|x| !gone.contains(&id(x)));
        }
    }
    let mut by_kind = Config::default();
    for e in delta.puts {
        match e {
            Entity::Service(e) => by_kind.services.push(e),
            Entity::Route(e) => by_kind.routes.push(e),
            Entity::Upstream(e) => by_kind.upstreams.push(e),
            Entity::Consumer(e) => by_kind.consumers.push(e),
            Entity::Plugin(e) => by_kind.plugins.push(e),
            Entity::Certificate(e) => by_kind.certificates.push(e),
            Entity::AiProvider(e) => by_kind.ai_providers.push(e),
            Entity::AiModel(e) => by_kind.ai_models.push(e),
        }
    }
    put(&mut cfg.services, by_kind.services, |x| x.id);
    put(&mut cfg.routes, by_kind.routes, |x| x.id);
    put(&mut cfg.upstreams, by_kind.upstreams, |x| x.id);
    put(&mut cfg.consumers, by_kind.consumers, |x| x.id);
    put(&mut cfg.plugins, by_kind.plugins, |x| x.id);
    put(&mut cfg.certificates, by_kind.certificates, |x| x.id);
    put(&mut cfg.ai_providers, by_kind.ai_providers, |x| x.id);
    put(&mut cfg.ai_models, by_kind.ai_models, |x| x.id);
    let gone = |k: Kind| -> std::collections::HashSet<Uuid> {
        delta
            .deletes
            .iter()
            .filter(|(dk, _)| *dk == k)
            .map(|(_, id)| *id)
            .collect()
    };
    remove(&mut cfg.services, &gone(Kind::Service), |x| x.id);
    remove(&mut cfg.routes, &gone(Kind::Route), |x| x.id);
    remove(&mut cfg.upstreams, &gone(Kind::Upstream), |x| x.id);
    remove(&mut cfg.consumers, &gone(Kind::Consumer), |x| x.id);
    remove(&mut cfg.plugins, &gone(Kind::Plugin), |x| x.id);
    remove(&mut cfg.certificates, &gone(Kind::Certificate), |x| x.id);
    remove(&mut cfg.ai_providers, &gone(Kind::AiProvider), |x| x.id);
    remove(&mut cfg.ai_models, &gone(Kind::AiModel), |x| x.id);
}
