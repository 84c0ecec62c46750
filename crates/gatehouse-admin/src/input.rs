//! Request bodies of the admin API: JSON (also `application/merge-patch+json` and other
//! `+json` types) or Kong-style forms, read into JSON. Anything else is 415; a body that
//! an operation needs and did not get is 400.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::form;

/// A request body as JSON, and whether it came as a form (then its strings still need
/// typing by the target schema, see [`Input::typed`]).
#[derive(Debug)]
pub struct Input {
    value: Option<Value>,
    form: bool,
}

/// How the body was sent.
enum Media {
    Json,
    Form,
    None,
}

/// The media type of the body (`application/json`), lower-case, without parameters; empty
/// when none is given.
fn essence(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn media(req: &Request) -> Result<Media, ApiError> {
    if req.headers().get(header::CONTENT_TYPE).is_none() {
        return Ok(Media::None);
    }
    let essence = essence(req);
    match essence.as_str() {
        "application/json" => Ok(Media::Json),
        "application/x-www-form-urlencoded" => Ok(Media::Form),
        e if e.starts_with("application/") && e.ends_with("+json") => Ok(Media::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "send the body as application/json or application/x-www-form-urlencoded, not `{essence}`"
            ),
        )),
    }
}

/// Reads the whole body (413 above the admin API's limit).
pub async fn bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, e.body_text())
    })
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media = media(&req)?;
        let body = bytes(req, state).await?;
        // An empty form is an empty object (every field left out); an empty JSON body is
        // no body at all.
        if body.iter().all(u8::is_ascii_whitespace) && !matches!(media, Media::Form) {
            return Ok(Input {
                value: None,
                form: false,
            });
        }
        // `curl -d '{"name": …}'` sends JSON labelled as a form (curl's default type): a
        // form body that is a JSON object is read as JSON, as the docs' examples rely on.
        let json_in_form = matches!(media, Media::Form)
            && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            && serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object());
        let (value, form) = match media {
            Media::Form if !json_in_form => (
                form::decode(&body).map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_form", e.to_string())
                })?,
                true,
            ),
            Media::Json | Media::None | Media::Form => (
                serde_json::from_slice(&body).map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_json",
                        format!("request body is not valid JSON: {e}"),
                    )
                })?,
                false,
            ),
        };
        Ok(Input {
            value: Some(value),
            form,
        })
    }
}

impl Input {
    /// The body, which this operation needs: 400 when there is none.
    pub fn required(self, schema: &str) -> Result<Value, ApiError> {
        if self.value.is_none() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "this operation needs a request body (JSON or form)",
            ));
        }
        Ok(self.typed(schema))
    }

    /// The body, or `{}` when none was sent.
    pub fn optional(self, schema: &str) -> Value {
        if self.value.is_none() {
            return Value::Object(Map::new());
        }
        self.typed(schema)
    }

    /// The body with a form's strings typed by the schema `schema` (plugin configs by
    /// their plugin's schema), and Kong's `{"service": {"id": …}}` references flattened
    /// to the id or name (in JSON bodies too).
    fn typed(self, schema: &str) -> Value {
        let mut v = self.value.unwrap_or(Value::Null);
        gatehouse_model::whole_numbers(&mut v);
        if let Value::Object(m) = &mut v {
            for field in ["service", "route", "consumer"] {
                if let Some(Value::Object(r)) = m.get(field) {
                    // An object without either (`{}`) is left as it is: the field takes an
                    // id or name, and the entity's parser says so (400).
                    if let Some(key) = r.get("id").or_else(|| r.get("name")).cloned() {
                        m.insert(field.into(), key);
                    }
                }
            }
        }
        if self.form {
            let schemas = crate::openapi::schemas();
            if let Some(s) = schemas.get(schema) {
                form::coerce(&mut v, s, schemas);
            }
            let plugin = v.get("name").and_then(Value::as_str).map(str::to_string);
            if let (Some(name), Some(config)) = (plugin, v.get_mut("config")) {
                if let Some(s) = schemas.get(&format!("PluginConfig.{name}")) {
                    form::coerce(config, s, schemas);
                }
            }
        }
        v
    }
}

/// The body of `POST /config`: a declarative document, YAML or JSON (400 when empty or
/// not UTF-8, 415 for other media types).
#[derive(Debug)]
pub struct Document(pub String);

impl<S: Send + Sync> FromRequest<S> for Document {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let essence = essence(&req);
        // `curl --data-binary @file.yaml` labels the document as a form.
        let known = [
            "",
            "application/x-www-form-urlencoded",
            "application/json",
            "application/yaml",
            "application/x-yaml",
            "text/yaml",
            "text/x-yaml",
        ];
        if !known.contains(&essence.as_str()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "send the document as application/yaml or application/json, not `{essence}`"
                ),
            ));
        }
        let body = bytes(req, state).await?;
        let text = String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the document must be UTF-8",
            )
        })?;
        if text.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "this operation needs a request body (a declarative document)",
            ));
        }
        Ok(Document(text))
    }
}
