//! Kong's credential endpoints: a consumer's keys, passwords, HMAC secrets, JWT keys and
//! ACL groups added or revoked one at a time (`/consumers/{c}/key-auth`, `/key-auths`, …)
//! instead of by rewriting the consumer.

use gatehouse_model::{
    AclGroup, BasicAuthCredential, Config, Consumer, FieldError, HmacAuthCredential, JwtSecret,
    KeyAuthCredential,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::entity;
use crate::error::ApiError;
use crate::input::Input;

/// A kind of credential kept in a list on the consumer.
pub trait Cred: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// Its name in paths and messages (`key-auth`).
    const NAME: &'static str;
    /// Its schema in the OpenAPI document.
    const SCHEMA: &'static str;
    /// Whether a create may come without a body (a key-auth key is then generated).
    const BODY_OPTIONAL: bool = false;
    /// The consumer's list of them.
    fn list(c: &Consumer) -> &Vec<Self>;
    /// The consumer's list of them, mutably.
    fn list_mut(c: &mut Consumer) -> &mut Vec<Self>;
    /// Its id.
    fn id(&self) -> Uuid;
    /// Sets its id.
    fn set_id(&mut self, id: Uuid);
    /// Its labels.
    fn tags(&self) -> &[String];
    /// Fills what Kong fills on create; returns a secret to show in this answer only (the
    /// store keeps a hash).
    fn on_create(&mut self) -> Option<(&'static str, String)> {
        None
    }
}

macro_rules! cred {
    ($t:ident, $name:literal, $field:ident $(, $extra:item)*) => {
        impl Cred for $t {
            const NAME: &'static str = $name;
            const SCHEMA: &'static str = stringify!($t);
            fn list(c: &Consumer) -> &Vec<Self> {
                &c.$field
            }
            fn list_mut(c: &mut Consumer) -> &mut Vec<Self> {
                &mut c.$field
            }
            fn id(&self) -> Uuid {
                self.id
            }
            fn set_id(&mut self, id: Uuid) {
                self.id = id;
            }
            fn tags(&self) -> &[String] {
                &self.tags
            }
            $($extra)*
        }
    };
}

cred!(BasicAuthCredential, "basic-auth", basicauth_credentials);
cred!(HmacAuthCredential, "hmac-auth", hmacauth_credentials);
cred!(JwtSecret, "jwt", jwt_secrets);
cred!(AclGroup, "acls", acls);
cred!(
    KeyAuthCredential,
    "key-auth",
    keyauth_credentials,
    const BODY_OPTIONAL: bool = true;,
    /// A key-auth credential without a key gets a random one (as in Kong), shown once.
    fn on_create(&mut self) -> Option<(&'static str, String)> {
        if self.key.is_none() && self.key_hash.is_none() {
            self.key = Some(hex::encode(rand::random::<[u8; 24]>()));
        }
        self.key.clone().map(|k| ("key", k))
    }
);

/// A credential as answers show it: with its consumer, as Kong does.
pub fn to_json<C: Cred>(c: &C, consumer: Uuid) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    entity::with_defaults(C::SCHEMA, &mut v);
    if let Some(o) = v.as_object_mut() {
        o.insert("consumer".into(), json!({ "id": consumer }));
    }
    v
}

/// Every credential of this kind (of one consumer, or of all) that `?tags=` keeps, with its
/// consumer's id.
pub fn all<C: Cred>(cfg: &Config, consumer: Option<Uuid>, tags: Option<&str>) -> Vec<Value> {
    cfg.consumers
        .iter()
        .filter(|c| consumer.is_none_or(|id| c.id == id))
        .flat_map(|c| {
            C::list(c)
                .iter()
                .filter(|x| tags.is_none_or(|t| entity::tags_match(x.tags(), t)))
                .map(move |x| to_json(x, c.id))
        })
        .collect()
}

/// One credential by id (in one consumer, or in any), as answers show it.
pub fn read<C: Cred>(cfg: &Config, consumer: Option<Uuid>, id: &str) -> Result<Value, ApiError> {
    let (i, j) = find::<C>(cfg, consumer, id).ok_or_else(|| ApiError::not_found(C::NAME, id))?;
    let c = &cfg.consumers[i];
    Ok(to_json(&C::list(c)[j], c.id))
}

/// Revokes a credential by id (in one consumer, or in any).
pub fn remove<C: Cred>(cfg: &mut Config, consumer: Option<Uuid>, id: &str) -> Result<(), ApiError> {
    let (i, j) = find::<C>(cfg, consumer, id).ok_or_else(|| ApiError::not_found(C::NAME, id))?;
    C::list_mut(&mut cfg.consumers[i]).remove(j);
    cfg.consumers[i].updated_at = Some(entity::now());
    Ok(())
}

/// The id of the consumer addressed by id or username.
pub fn consumer_id(cfg: &Config, key: &str) -> Result<Uuid, ApiError> {
    Ok(cfg.consumers[entity::must_find::<Consumer>(cfg, key)?].id)
}

/// Finds a credential by id, in one consumer or in all.
pub fn find<C: Cred>(cfg: &Config, consumer: Option<Uuid>, id: &str) -> Option<(usize, usize)> {
    let id: Uuid = id.parse().ok()?;
    cfg.consumers
        .iter()
        .enumerate()
        .filter(|(_, c)| consumer.is_none_or(|cid| c.id == cid))
        .find_map(|(i, c)| C::list(c).iter().position(|x| x.id() == id).map(|j| (i, j)))
}

/// Parses a request body as a credential, naming the failing field.
pub fn parse<C: Cred>(body: Input) -> Result<C, ApiError> {
    let v = if C::BODY_OPTIONAL {
        body.optional(C::SCHEMA)
    } else {
        body.required(C::SCHEMA)?
    };
    serde_path_to_error::deserialize(&v).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            C::NAME,
            e.path().to_string().trim_start_matches('.').to_string(),
            e.inner().to_string(),
        )])
    })
}

/// Adds a credential to the consumer addressed by `consumer`; its id.
pub fn add<C: Cred>(cfg: &mut Config, consumer: &str, mut cred: C) -> Result<Uuid, ApiError> {
    let ci = entity::must_find::<Consumer>(cfg, consumer)?;
    // A given id another credential has is refused by validation (409), across kinds.
    if cred.id().is_nil() {
        cred.set_id(Uuid::new_v4());
    }
    let id = cred.id();
    C::list_mut(&mut cfg.consumers[ci]).push(cred);
    cfg.consumers[ci].updated_at = Some(entity::now());
    Ok(id)
}

/// The answer to a create: the stored credential, plus the secret it was given, once.
pub fn created<C: Cred>(cfg: &Config, id: Uuid, shown: Option<(&'static str, String)>) -> Value {
    let found = find::<C>(cfg, None, &id.to_string());
    let mut v = match found {
        Some((i, j)) => to_json(&C::list(&cfg.consumers[i])[j], cfg.consumers[i].id),
        None => Value::Null,
    };
    if let (Some((k, secret)), Some(o)) = (shown, v.as_object_mut()) {
        o.insert(k.into(), Value::String(secret));
    }
    v
}
