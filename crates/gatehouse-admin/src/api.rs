//! The admin REST API (Kong-like paths) and its OpenAPI 3.1 document, generated from the
//! same handler annotations that build the router, so the two cannot disagree.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use gatehouse_model::{
    Certificate, Config, Consumer, Kind, Plugin, Route, Service, Target, Upstream,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::control::Control;
use crate::entity::{self, Ent};
pub use crate::error::ApiError;
use crate::error::{ErrorBody, REQUEST_ID};
use crate::input::{Document, Input};

/// State of the admin API.
pub struct AdminState {
    /// The config controller.
    pub control: Arc<Control>,
    /// SHA-256 (hex) of the admin token.
    pub token_hash: String,
    /// This node as the registry shows it (its config version is read when asked).
    pub node: gatehouse_store::NodeInfo,
    /// Counters shared through Redis, when the node has them.
    pub counters: Option<Arc<gatehouse_counters::cluster::ClusterCounters>>,
    /// The node's call log, when on.
    pub calls: Option<Arc<gatehouse_telemetry::CallLog>>,
}

type St = State<Arc<AdminState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Paging of list endpoints.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (1-1000, default 100).
    pub size: Option<usize>,
    /// Where to continue, from the previous page's `offset`.
    pub offset: Option<String>,
    /// Only entities with these tags: `a,b` all of them, `a/b` any of them.
    pub tags: Option<String>,
}

/// A page of entities.
#[derive(Serialize, ToSchema)]
pub struct Page {
    /// The entities.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<Value>,
    /// Pass as `offset` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
    /// The next page's path and query (Kong's `next`); null on the last page.
    pub next: Option<String>,
}

fn page(items: Vec<Value>, q: &ListQuery, uri: &Uri) -> ApiResult<Json<Page>> {
    let size = q.size.unwrap_or(100);
    if size == 0 || size > 1000 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`size` must be 1-1000",
        ));
    }
    let start = match &q.offset {
        None => 0,
        Some(o) => o.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "`offset` is not one this API gave",
            )
        })?,
    };
    let end = (start + size).min(items.len());
    let data = items
        .get(start.min(items.len())..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let offset = (end < items.len()).then(|| end.to_string());
    let next = offset.as_ref().map(|o| next_link(uri, o));
    Ok(Json(Page { data, offset, next }))
}

/// The request's own path and query with `offset` set to the next page's.
fn next_link(uri: &Uri, offset: &str) -> String {
    let mut query: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("offset="))
        .map(str::to_string)
        .collect();
    query.push(format!("offset={offset}"));
    format!("{}?{}", uri.path(), query.join("&"))
}

// ---- generic operations -------------------------------------------------------------

fn list_of<T: Ent>(
    s: &AdminState,
    keep: impl Fn(&T) -> bool,
    q: &ListQuery,
    uri: &Uri,
) -> ApiResult<Json<Page>> {
    let cur = s.control.current();
    page(
        T::list(&cur.config)
            .iter()
            .filter(|e| keep(e))
            .filter(|e| {
                q.tags
                    .as_deref()
                    .is_none_or(|t| entity::tags_match(e.tags(), t))
            })
            .map(entity::to_public_json)
            .collect(),
        q,
        uri,
    )
}

fn get_one<T: Ent>(s: &AdminState, key: &str) -> ApiResult<Json<Value>> {
    let cur = s.control.current();
    let i = entity::must_find::<T>(&cur.config, key)?;
    Ok(Json(entity::to_public_json(&T::list(&cur.config)[i])))
}

fn fetch<T: Ent>(cfg: &Config, id: Uuid) -> Value {
    T::list(cfg)
        .iter()
        .find(|e| e.id() == id)
        .map(entity::to_public_json)
        .unwrap_or(Value::Null)
}

async fn create_with<T: Ent>(
    s: &AdminState,
    body: Input,
    scope: impl Fn(&mut T, &Config) -> ApiResult<()>,
) -> ApiResult<Response> {
    let given: T = entity::parse(body.required(entity::schema_name(T::KIND))?)?;
    let (cur, id) = s
        .control
        .mutate(move |cfg, origins| {
            // Each attempt starts from the body (a retry after another node's write).
            let mut e = given.clone();
            scope(&mut e, cfg)?;
            entity::insert(cfg, origins, e)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(fetch::<T>(&cur.config, id))).into_response())
}

async fn put_one<T: Ent>(s: &AdminState, key: String, body: Input) -> ApiResult<Response> {
    let given: T = entity::parse(body.required(entity::schema_name(T::KIND))?)?;
    let (cur, (id, created)) = s
        .control
        .mutate(move |cfg, origins| {
            let mut e = given.clone();
            match entity::find::<T>(cfg, &key) {
                Some(i) => {
                    if e.name().is_none() && key.parse::<Uuid>().is_err() {
                        // PUT /services/orders keeps the name it was addressed by.
                        e.set_name(&key);
                    }
                    Ok((entity::replace_at(cfg, origins, i, e)?, false))
                }
                None => {
                    match key.parse::<Uuid>() {
                        Ok(id) => e.set_id(id),
                        Err(_) => {
                            if e.name().is_some_and(|n| n != key) {
                                return Err(ApiError::new(
                                    StatusCode::CONFLICT,
                                    "conflict",
                                    format!(
                                        "the body names the {} `{}`, the path `{key}`",
                                        T::KIND.as_str(),
                                        e.name().unwrap_or_default()
                                    ),
                                ));
                            }
                            if !e.set_name(&key) {
                                return Err(ApiError::not_found(T::KIND.as_str(), &key));
                            }
                        }
                    }
                    Ok((entity::insert(cfg, origins, e)?, true))
                }
            }
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(fetch::<T>(&cur.config, id))).into_response())
}

async fn patch_one<T: Ent>(s: &AdminState, key: String, body: Input) -> ApiResult<Json<Value>> {
    let schema = format!("{}Patch", entity::schema_name(T::KIND));
    let patch = body.required(&schema)?;
    entity::check_patch(T::KIND, &schema, &patch)?;
    let (cur, id) = s
        .control
        .mutate(move |cfg, origins| {
            let i = entity::must_find::<T>(cfg, &key)?;
            let mut v = entity::to_json(&T::list(cfg)[i]);
            entity::merge_patch(&mut v, &patch);
            let e: T = entity::parse(v)?;
            entity::replace_at(cfg, origins, i, e)
        })
        .await?;
    Ok(Json(fetch::<T>(&cur.config, id)))
}

async fn delete_one<T: Ent>(s: &AdminState, key: String) -> ApiResult<StatusCode> {
    s.control
        .mutate(move |cfg, _| {
            let i = entity::must_find::<T>(cfg, &key)?;
            entity::remove::<T>(cfg, i)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A nested create's scope comes from the path; a body that names another entity for it
/// is a conflict, not silently overridden.
fn scope_to<T: Ent>(cfg: &Config, field: &mut Option<String>, key: &str) -> ApiResult<()> {
    let id = id_of::<T>(cfg, key)?;
    if let Some(given) = field.as_deref() {
        if id_of::<T>(cfg, given).ok().as_deref() != Some(id.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "the body names the {} `{given}`, the path `{key}`",
                    T::KIND.as_str()
                ),
            ));
        }
    }
    *field = Some(id);
    Ok(())
}

fn id_of<T: Ent>(cfg: &Config, key: &str) -> ApiResult<String> {
    let i = entity::must_find::<T>(cfg, key)?;
    Ok(T::list(cfg)[i].id().to_string())
}

// ---- per-kind endpoints -------------------------------------------------------------

macro_rules! crud {
    ($m:ident, $t:ty, $tag:literal, $coll:literal, $item:literal, $param:literal) => {
        /// Endpoints of one entity kind.
        pub mod $m {
            use super::*;

            /// List all.
            #[utoipa::path(get, path = $coll, tag = $tag, params(ListQuery),
                responses((status = 200, body = Page), (status = 401, body = ErrorBody)))]
            pub async fn list(State(s): St, uri: Uri, Query(q): Query<ListQuery>) -> ApiResult<Json<Page>> {
                list_of::<$t>(&s, |_| true, &q, &uri)
            }

            /// Create one.
            #[utoipa::path(post, path = $coll, tag = $tag, request_body = $t,
                responses((status = 201, body = $t), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub async fn create(State(s): St, body: Input) -> ApiResult<Response> {
                create_with::<$t>(&s, body, |_, _| Ok(())).await
            }

            /// Read one by id or name.
            #[utoipa::path(get, path = $item, tag = $tag, params(($param = String, Path, description = "id or name")),
                responses((status = 200, body = $t), (status = 404, body = ErrorBody)))]
            pub async fn get(State(s): St, Path(key): Path<String>) -> ApiResult<Json<Value>> {
                get_one::<$t>(&s, &key)
            }

            /// Create or replace by id or name.
            #[utoipa::path(put, path = $item, tag = $tag, params(($param = String, Path, description = "id or name")), request_body = $t,
                responses((status = 200, body = $t), (status = 201, body = $t), (status = 400, body = ErrorBody)))]
            pub async fn put(State(s): St, Path(key): Path<String>, body: Input) -> ApiResult<Response> {
                put_one::<$t>(&s, key, body).await
            }

            /// Change some fields (JSON merge patch).
            #[utoipa::path(patch, path = $item, tag = $tag, params(($param = String, Path, description = "id or name")), request_body = Object,
                responses((status = 200, body = $t), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
            pub async fn patch(State(s): St, Path(key): Path<String>, body: Input) -> ApiResult<Json<Value>> {
                patch_one::<$t>(&s, key, body).await
            }

            /// Delete by id or name.
            #[utoipa::path(delete, path = $item, tag = $tag, params(($param = String, Path, description = "id or name")),
                responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub async fn delete(State(s): St, Path(key): Path<String>) -> ApiResult<StatusCode> {
                delete_one::<$t>(&s, key).await
            }
        }
    };
}

crud!(
    services,
    Service,
    "services",
    "/services",
    "/services/{service}",
    "service"
);
crud!(
    routes_api,
    Route,
    "routes",
    "/routes",
    "/routes/{route}",
    "route"
);
crud!(
    upstreams,
    Upstream,
    "upstreams",
    "/upstreams",
    "/upstreams/{upstream}",
    "upstream"
);
crud!(
    consumers,
    Consumer,
    "consumers",
    "/consumers",
    "/consumers/{consumer}",
    "consumer"
);
crud!(
    plugins,
    Plugin,
    "plugins",
    "/plugins",
    "/plugins/{plugin}",
    "plugin"
);
crud!(
    certificates,
    Certificate,
    "certificates",
    "/certificates",
    "/certificates/{certificate}",
    "certificate"
);
crud!(
    ai_providers,
    gatehouse_model::AiProvider,
    "ai",
    "/ai-providers",
    "/ai-providers/{ai_provider}",
    "ai_provider"
);
crud!(
    ai_models,
    gatehouse_model::AiModel,
    "ai",
    "/ai-models",
    "/ai-models/{ai_model}",
    "ai_model"
);

// ---- nested endpoints ---------------------------------------------------------------

/// Routes of a service.
#[utoipa::path(get, path = "/services/{service}/routes", tag = "routes", params(("service" = String, Path), ListQuery),
    responses((status = 200, body = Page), (status = 404, body = ErrorBody)))]
pub async fn service_routes(
    State(s): St,
    uri: Uri,
    Path(svc): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page>> {
    let id = id_of::<Service>(&s.control.current().config, &svc)?;
    list_of::<Route>(&s, |r| r.service.as_deref() == Some(&id), &q, &uri)
}

/// Create a route of a service.
#[utoipa::path(post, path = "/services/{service}/routes", tag = "routes", params(("service" = String, Path)), request_body = Route,
    responses((status = 201, body = Route), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_service_route(
    State(s): St,
    Path(svc): Path<String>,
    body: Input,
) -> ApiResult<Response> {
    create_with::<Route>(&s, body, move |r, cfg| {
        scope_to::<Service>(cfg, &mut r.service, &svc)
    })
    .await
}

macro_rules! scoped_plugins {
    ($list:ident, $create:ident, $t:ty, $path:literal, $param:literal, $field:ident) => {
        /// Plugins scoped to this entity.
        #[utoipa::path(get, path = $path, tag = "plugins", params(($param = String, Path), ListQuery),
            responses((status = 200, body = Page), (status = 404, body = ErrorBody)))]
        pub async fn $list(State(s): St, uri: Uri, Path(key): Path<String>, Query(q): Query<ListQuery>) -> ApiResult<Json<Page>> {
            let id = id_of::<$t>(&s.control.current().config, &key)?;
            list_of::<Plugin>(&s, |p| p.$field.as_deref() == Some(&id), &q, &uri)
        }

        /// Add a plugin scoped to this entity.
        #[utoipa::path(post, path = $path, tag = "plugins", params(($param = String, Path)), request_body = Plugin,
            responses((status = 201, body = Plugin), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
        pub async fn $create(State(s): St, Path(key): Path<String>, body: Input) -> ApiResult<Response> {
            create_with::<Plugin>(&s, body, move |p, cfg| {
                scope_to::<$t>(cfg, &mut p.$field, &key)
            })
            .await
        }
    };
}

scoped_plugins!(
    service_plugins,
    create_service_plugin,
    Service,
    "/services/{service}/plugins",
    "service",
    service
);
scoped_plugins!(
    route_plugins,
    create_route_plugin,
    Route,
    "/routes/{route}/plugins",
    "route",
    route
);
scoped_plugins!(
    consumer_plugins,
    create_consumer_plugin,
    Consumer,
    "/consumers/{consumer}/plugins",
    "consumer",
    consumer
);

macro_rules! creds_api {
    ($m:ident, $t:ty, $coll:literal, $item:literal, $all:literal, $one:literal) => {
        /// Credential endpoints of one kind.
        pub mod $m {
            use super::*;
            use crate::creds;

            /// A consumer's credentials of this kind.
            #[utoipa::path(get, path = $coll, tag = "credentials", params(("consumer" = String, Path, description = "id or username"), ListQuery),
                responses((status = 200, body = Page), (status = 404, body = ErrorBody)))]
            pub async fn list(State(s): St, uri: Uri, Path(c): Path<String>, Query(q): Query<ListQuery>) -> ApiResult<Json<Page>> {
                let cur = s.control.current();
                let cid = creds::consumer_id(&cur.config, &c)?;
                page(creds::all::<$t>(&cur.config, Some(cid), q.tags.as_deref()), &q, &uri)
            }

            /// Add a credential to a consumer (a key-auth key is generated when none is given,
            /// and shown in this answer only).
            #[utoipa::path(post, path = $coll, tag = "credentials", params(("consumer" = String, Path, description = "id or username")), request_body = $t,
                responses((status = 201, body = $t), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
            pub async fn create(State(s): St, Path(c): Path<String>, body: Input) -> ApiResult<Response> {
                let mut cred: $t = creds::parse(body)?;
                let shown = creds::Cred::on_create(&mut cred);
                let (cur, id) = s
                    .control
                    .mutate(move |cfg, _| creds::add(cfg, &c, cred.clone()))
                    .await?;
                Ok((StatusCode::CREATED, Json(creds::created::<$t>(&cur.config, id, shown))).into_response())
            }

            /// One credential of a consumer.
            #[utoipa::path(get, path = $item, tag = "credentials", params(("consumer" = String, Path), ("id" = String, Path)),
                responses((status = 200, body = $t), (status = 404, body = ErrorBody)))]
            pub async fn get(State(s): St, Path((c, id)): Path<(String, String)>) -> ApiResult<Json<Value>> {
                let cur = s.control.current();
                let cid = creds::consumer_id(&cur.config, &c)?;
                creds::read::<$t>(&cur.config, Some(cid), &id).map(Json)
            }

            /// Revoke a credential of a consumer.
            #[utoipa::path(delete, path = $item, tag = "credentials", params(("consumer" = String, Path), ("id" = String, Path)),
                responses((status = 204), (status = 404, body = ErrorBody)))]
            pub async fn delete(State(s): St, Path((c, id)): Path<(String, String)>) -> ApiResult<StatusCode> {
                s.control
                    .mutate(move |cfg, _| {
                        let cid = creds::consumer_id(cfg, &c)?;
                        creds::remove::<$t>(cfg, Some(cid), &id)
                    })
                    .await?;
                Ok(StatusCode::NO_CONTENT)
            }

            /// Every consumer's credentials of this kind.
            #[utoipa::path(get, path = $all, tag = "credentials", params(ListQuery),
                responses((status = 200, body = Page), (status = 400, body = ErrorBody)))]
            pub async fn list_all(State(s): St, uri: Uri, Query(q): Query<ListQuery>) -> ApiResult<Json<Page>> {
                let cur = s.control.current();
                page(creds::all::<$t>(&cur.config, None, q.tags.as_deref()), &q, &uri)
            }

            /// One credential by id, whoever's it is.
            #[utoipa::path(get, path = $one, tag = "credentials", params(("id" = String, Path)),
                responses((status = 200, body = $t), (status = 404, body = ErrorBody)))]
            pub async fn get_any(State(s): St, Path(id): Path<String>) -> ApiResult<Json<Value>> {
                creds::read::<$t>(&s.control.current().config, None, &id).map(Json)
            }

            /// Revoke a credential by id.
            #[utoipa::path(delete, path = $one, tag = "credentials", params(("id" = String, Path)),
                responses((status = 204), (status = 404, body = ErrorBody)))]
            pub async fn delete_any(State(s): St, Path(id): Path<String>) -> ApiResult<StatusCode> {
                s.control
                    .mutate(move |cfg, _| creds::remove::<$t>(cfg, None, &id))
                    .await?;
                Ok(StatusCode::NO_CONTENT)
            }

            /// Adds these endpoints to the router.
            pub fn register(r: OpenApiRouter<Arc<AdminState>>) -> OpenApiRouter<Arc<AdminState>> {
                r.routes(routes!(list, create))
                    .routes(routes!(get, delete))
                    .routes(routes!(list_all))
                    .routes(routes!(get_any, delete_any))
            }
        }
    };
}

creds_api!(
    key_auth,
    gatehouse_model::KeyAuthCredential,
    "/consumers/{consumer}/key-auth",
    "/consumers/{consumer}/key-auth/{id}",
    "/key-auths",
    "/key-auths/{id}"
);
creds_api!(
    basic_auth,
    gatehouse_model::BasicAuthCredential,
    "/consumers/{consumer}/basic-auth",
    "/consumers/{consumer}/basic-auth/{id}",
    "/basic-auths",
    "/basic-auths/{id}"
);
creds_api!(
    hmac_auth,
    gatehouse_model::HmacAuthCredential,
    "/consumers/{consumer}/hmac-auth",
    "/consumers/{consumer}/hmac-auth/{id}",
    "/hmac-auths",
    "/hmac-auths/{id}"
);
creds_api!(
    jwt_creds,
    gatehouse_model::JwtSecret,
    "/consumers/{consumer}/jwt",
    "/consumers/{consumer}/jwt/{id}",
    "/jwts",
    "/jwts/{id}"
);
creds_api!(
    acl_groups,
    gatehouse_model::AclGroup,
    "/consumers/{consumer}/acls",
    "/consumers/{consumer}/acls/{id}",
    "/acls",
    "/acls/{id}"
);

fn find_target(u: &Upstream, key: &str) -> Option<usize> {
    u.targets
        .iter()
        .position(|t| t.id.to_string() == key || t.target == key)
}

/// Targets of an upstream.
#[utoipa::path(get, path = "/upstreams/{upstream}/targets", tag = "upstreams", params(("upstream" = String, Path), ListQuery),
    responses((status = 200, body = Page), (status = 404, body = ErrorBody)))]
pub async fn list_targets(
    State(s): St,
    uri: Uri,
    Path(up): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Page>> {
    let cur = s.control.current();
    let i = entity::must_find::<Upstream>(&cur.config, &up)?;
    page(
        cur.config.upstreams[i]
            .targets
            .iter()
            .filter(|t| {
                q.tags
                    .as_deref()
                    .is_none_or(|f| entity::tags_match(&t.tags, f))
            })
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect(),
        &q,
        &uri,
    )
}

/// Add a target to an upstream.
#[utoipa::path(post, path = "/upstreams/{upstream}/targets", tag = "upstreams", params(("upstream" = String, Path)), request_body = Target,
    responses((status = 201, body = Target), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_target(
    State(s): St,
    Path(up): Path<String>,
    body: Input,
) -> ApiResult<Response> {
    let v = body.required("Target")?;
    let mut t: Target = serde_path_to_error::deserialize(&v).map_err(|e| {
        ApiError::invalid(vec![gatehouse_model::FieldError::new(
            "target",
            e.path().to_string(),
            e.inner().to_string(),
        )])
    })?;
    if t.id.is_nil() {
        t.id = Uuid::new_v4();
    }
    let tid = t.id;
    let (cur, ui) = s
        .control
        .mutate(move |cfg, _| {
            let i = entity::must_find::<Upstream>(cfg, &up)?;
            cfg.upstreams[i].targets.push(t.clone());
            Ok(cfg.upstreams[i].id)
        })
        .await?;
    let target = cur
        .config
        .upstreams
        .iter()
        .find(|u| u.id == ui)
        .and_then(|u| u.targets.iter().find(|t| t.id == tid));
    Ok((StatusCode::CREATED, Json(json!(target))).into_response())
}

/// Read a target by id or `host:port`.
#[utoipa::path(get, path = "/upstreams/{upstream}/targets/{target}", tag = "upstreams", params(("upstream" = String, Path), ("target" = String, Path)),
    responses((status = 200, body = Target), (status = 404, body = ErrorBody)))]
pub async fn get_target(
    State(s): St,
    Path((up, key)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let cur = s.control.current();
    let u = &cur.config.upstreams[entity::must_find::<Upstream>(&cur.config, &up)?];
    let t = find_target(u, &key).ok_or_else(|| ApiError::not_found("target", &key))?;
    Ok(Json(json!(u.targets[t])))
}

/// Remove a target by id or `host:port`.
#[utoipa::path(delete, path = "/upstreams/{upstream}/targets/{target}", tag = "upstreams", params(("upstream" = String, Path), ("target" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_target(
    State(s): St,
    Path((up, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.control
        .mutate(move |cfg, _| {
            let i = entity::must_find::<Upstream>(cfg, &up)?;
            let t = find_target(&cfg.upstreams[i], &key)
                .ok_or_else(|| ApiError::not_found("target", &key))?;
            cfg.upstreams[i].targets.remove(t);
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- whole config, status -----------------------------------------------------------

/// Format of `GET /config`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// `yaml` (default) or `json`.
    pub format: Option<String>,
}

/// The whole running config as a declarative document.
#[utoipa::path(get, path = "/config", tag = "config", params(ConfigQuery),
    responses((status = 200, description = "declarative document (YAML or JSON)", body = Config), (status = 400, body = ErrorBody)))]
pub async fn get_config(State(s): St, Query(q): Query<ConfigQuery>) -> ApiResult<Response> {
    let doc = gatehouse_model::to_document(&s.control.current().config);
    let v = serde_json::to_value(&doc).unwrap_or(Value::Null);
    match q.format.as_deref().unwrap_or("yaml") {
        "json" => Ok(Json(v).into_response()),
        "yaml" | "yml" => Ok((
            [(header::CONTENT_TYPE, "application/yaml")],
            gatehouse_model::yaml::to_yaml(&v),
        )
            .into_response()),
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("unknown format `{other}` (yaml or json)"),
        )),
    }
}

/// Result of replacing the config.
#[derive(Serialize, ToSchema)]
pub struct Applied {
    /// The new config version.
    pub version: u64,
    /// Entity counts of the new config.
    #[schema(value_type = Object)]
    pub entities: Value,
    /// Fields accepted whose behaviour differs from the format they came from (a Kong
    /// file's `request_buffering`, …), with line and column.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<gatehouse_model::FieldError>,
}

fn counts(c: &Config) -> Value {
    json!({
        "services": c.services.len(), "routes": c.routes.len(), "upstreams": c.upstreams.len(),
        "consumers": c.consumers.len(), "plugins": c.plugins.len(), "certificates": c.certificates.len(),
    })
}

/// Replace the whole config with a declarative document (YAML or JSON). The only write
/// allowed in declarative mode.
#[utoipa::path(post, path = "/config", tag = "config", request_body(content = Config, description = "declarative document, YAML or JSON"),
    responses((status = 201, body = Applied), (status = 400, body = ErrorBody)))]
pub async fn post_config(State(s): St, Document(text): Document) -> ApiResult<Response> {
    let cur = s.control.current();
    let parsed =
        gatehouse_model::parse_document_noted(&text, &**s.control.catalog(), Some(&cur.config))
            .map_err(ApiError::rejected)?;
    let entities = counts(&parsed.config);
    let version = s.control.replace(parsed.config).await?;
    let notes = parsed.notes;
    Ok((
        StatusCode::CREATED,
        Json(Applied {
            version,
            entities,
            notes,
        }),
    )
        .into_response())
}

/// Node and config status.
#[utoipa::path(get, path = "/status", tag = "status", responses((status = 200, description = "status", body = Object)))]
pub async fn status(State(s): St) -> Json<Value> {
    let cur = s.control.current();
    let counters = match &s.counters {
        Some(c) => json!(c.status()),
        None => json!({"backend": "local", "degraded": false}),
    };
    Json(json!({
        "ready": s.control.is_ready(),
        "config_version": cur.version,
        "config_source": s.control.source(),
        "store": s.control.store().backend(),
        "store_health": s.control.store().health(),
        "read_only": s.control.store().read_only(),
        "counters": counters,
        "call_log": s.calls.as_ref().map(|l| {
            let st = l.stats();
            let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            json!({"accepted": n(&st.accepted), "dropped": n(&st.dropped), "written": n(&st.written),
                "failed": n(&st.failed), "pruned": n(&st.pruned), "queued": l.queued()})
        }),
        "node": {"id": s.node.id, "hostname": s.node.hostname, "addresses": s.node.addresses},
        "entities": counts(&cur.config),
        "last_reload_error": s.control.last_error(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// The node registry.
#[derive(Serialize, ToSchema)]
pub struct ClusterNodes {
    /// Every node seen in the last day, most recently seen first.
    #[schema(value_type = Vec<Object>)]
    pub data: Vec<gatehouse_store::NodeRow>,
    /// A node is stale when not seen for this many seconds.
    pub stale_after_seconds: i64,
}

/// The nodes sharing this node's store: id, hostname, listen addresses, build version, the
/// config version each serves, when each was last seen, and which are stale.
#[utoipa::path(get, path = "/cluster/nodes", tag = "status",
    responses((status = 200, body = ClusterNodes), (status = 503, body = ErrorBody)))]
pub async fn cluster_nodes(State(s): St) -> ApiResult<Json<ClusterNodes>> {
    let data = s.control.store().nodes().await?;
    Ok(Json(ClusterNodes {
        data,
        stale_after_seconds: gatehouse_store::nodes::STALE_AFTER_SECS,
    }))
}

/// Node information (Kong's `GET /`): version, host, plugins this build has and those the
/// config uses.
#[utoipa::path(get, path = "/", tag = "status", responses((status = 200, description = "node information", body = Object), (status = 401, body = ErrorBody)))]
pub async fn node_info(State(s): St) -> Json<Value> {
    let cur = s.control.current();
    let available: serde_json::Map<String, Value> =
        gatehouse_model::PluginCatalog::names(&**s.control.catalog())
            .into_iter()
            .map(|n| (n.to_string(), json!({"version": env!("CARGO_PKG_VERSION")})))
            .collect();
    let mut enabled: Vec<&str> = cur
        .config
        .plugins
        .iter()
        .filter(|p| p.enabled)
        .map(|p| p.name.as_str())
        .collect();
    enabled.sort_unstable();
    enabled.dedup();
    Json(json!({
        "tagline": "Welcome to Gatehouse",
        "version": env!("CARGO_PKG_VERSION"),
        "hostname": s.node.hostname,
        "plugins": {"available_on_server": available, "enabled_in_cluster": enabled},
        "configuration": {
            "database": s.control.store().backend(),
            "read_only": s.control.store().read_only(),
            "config_version": cur.version,
        },
    }))
}

/// Result of a cache purge.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// Entries dropped.
    pub purged: usize,
}

/// Drop every entry of every proxy-cache instance.
#[utoipa::path(delete, path = "/proxy-cache", tag = "plugins", responses((status = 200, body = Purged)))]
pub async fn purge_all_caches(State(s): St) -> Json<Purged> {
    Json(Purged {
        purged: s.control.catalog().state.purge_caches(None),
    })
}

/// Drop one entry (its `X-Cache-Key`) from every proxy-cache instance.
#[utoipa::path(delete, path = "/proxy-cache/{key}", tag = "plugins", params(("key" = String, Path, description = "the X-Cache-Key of the entry")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn purge_cache_key(State(s): St, Path(key): Path<String>) -> ApiResult<StatusCode> {
    match s.control.catalog().state.purge_caches(Some(&key)) {
        0 => Err(ApiError::not_found("cache entry", &key)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

/// The JSON Schema of the declarative format.
#[utoipa::path(get, path = "/schemas/config", tag = "config", responses((status = 200, description = "JSON Schema", body = Object)))]
pub async fn config_schema(State(s): St) -> Json<Value> {
    Json(gatehouse_model::schema::json_schema_with(
        &**s.control.catalog(),
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "status", responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub async fn openapi_json(State(s): St) -> Response {
    let _ = s;
    match OPENAPI.get() {
        Some(doc) => ([(header::CONTENT_TYPE, "application/json")], doc.clone()).into_response(),
        None => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "document not built",
        )
        .into_response(),
    }
}

static OPENAPI: std::sync::OnceLock<String> = std::sync::OnceLock::new();

#[derive(OpenApi)]
#[openapi(
    info(title = "Gatehouse admin API", description = "Manage services, routes, upstreams, consumers, plugins and certificates."),
    components(schemas(ErrorBody, Page, Applied)),
    security(("admin_token" = [])),
)]
struct ApiDoc;

// ---- auth and request ids -----------------------------------------------------------

fn token_of(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get("gatehouse-admin-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Puts every error answer in the common JSON shape — also those axum's extractors and
/// router make (a query string that does not parse, 405, 413, 415), which are plain text.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, default) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this method is not allowed on this path",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("request_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        StatusCode::NOT_FOUND => ("not_found", "no such path"),
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    let message = if text.is_empty() {
        default.to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

async fn guard(State(s): St, req: Request, next: Next) -> Response {
    let rid = Uuid::new_v4().simple().to_string();
    let ok = token_of(req.headers())
        .map(|t| {
            constant_time_eq(
                gatehouse_store::sha256_hex(t).as_bytes(),
                s.token_hash.as_bytes(),
            )
        })
        .unwrap_or(false);
    let rid2 = rid.clone();
    let mut resp = REQUEST_ID
        .scope(rid.clone(), async move {
            if !ok {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid admin token is required (Authorization: Bearer <token>)",
                )
                .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            json_errors(next.run(req).await).await
        })
        .await;
    if let Ok(v) = HeaderValue::from_str(&rid2) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such admin endpoint (see /openapi.json)",
    )
}

/// Builds the router and the OpenAPI document of the admin API.
pub fn build(state: Arc<AdminState>) -> (Router, utoipa::openapi::OpenApi) {
    let mut doc = ApiDoc::openapi();
    let comps = doc.components.get_or_insert_with(Default::default);
    comps.add_security_scheme(
        "admin_token",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    let router = OpenApiRouter::with_openapi(doc)
        .routes(routes!(services::list, services::create))
        .routes(routes!(
            services::get,
            services::put,
            services::patch,
            services::delete
        ))
        .routes(routes!(routes_api::list, routes_api::create))
        .routes(routes!(
            routes_api::get,
            routes_api::put,
            routes_api::patch,
            routes_api::delete
        ))
        .routes(routes!(upstreams::list, upstreams::create))
        .routes(routes!(
            upstreams::get,
            upstreams::put,
            upstreams::patch,
            upstreams::delete
        ))
        .routes(routes!(consumers::list, consumers::create))
        .routes(routes!(
            consumers::get,
            consumers::put,
            consumers::patch,
            consumers::delete
        ))
        .routes(routes!(plugins::list, plugins::create))
        .routes(routes!(
            plugins::get,
            plugins::put,
            plugins::patch,
            plugins::delete
        ))
        .routes(routes!(certificates::list, certificates::create))
        .routes(routes!(
            certificates::get,
            certificates::put,
            certificates::patch,
            certificates::delete
        ))
        .routes(routes!(ai_providers::list, ai_providers::create))
        .routes(routes!(
            ai_providers::get,
            ai_providers::put,
            ai_providers::patch,
            ai_providers::delete
        ))
        .routes(routes!(ai_models::list, ai_models::create))
        .routes(routes!(
            ai_models::get,
            ai_models::put,
            ai_models::patch,
            ai_models::delete
        ))
        .routes(routes!(service_routes, create_service_route))
        .routes(routes!(service_plugins, create_service_plugin))
        .routes(routes!(route_plugins, create_route_plugin))
        .routes(routes!(consumer_plugins, create_consumer_plugin))
        .routes(routes!(list_targets, create_target))
        .routes(routes!(get_target, delete_target))
        .routes(routes!(get_config, post_config))
        .routes(routes!(status))
        .routes(routes!(cluster_nodes))
        .routes(routes!(node_info))
        .routes(routes!(config_schema))
        .routes(routes!(purge_all_caches))
        .routes(routes!(purge_cache_key))
        .routes(routes!(openapi_json))
        .routes(routes!(crate::calls::search))
        .routes(routes!(crate::calls::export))
        .routes(routes!(crate::calls::get_call))
        .routes(routes!(crate::calls::series))
        .routes(routes!(crate::calls::top))
        .routes(routes!(crate::calls::usage))
        .routes(routes!(
            crate::calls::get_settings,
            crate::calls::put_settings
        ))
        .routes(routes!(crate::calls::prune));
    let router = [
        key_auth::register,
        basic_auth::register,
        hmac_auth::register,
        jwt_creds::register,
        acl_groups::register,
    ]
    .into_iter()
    .fold(router, |r, register| register(r));
    let (router, api) = router.split_for_parts();
    let finished = crate::openapi::finish(&api, state.control.catalog().clone());
    let _ = OPENAPI.set(finished.to_string());
    let router = router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
        .with_state(state);
    (router, api)
}

/// Every kind the API manages, for docs and tests.
pub const KINDS: [Kind; 8] = Kind::ALL;
