//! Admin API errors in the common JSON error shape, plus the request id that every admin
//! request carries.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gatehouse_model::FieldError;
use gatehouse_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::control::ControlError;

tokio::task_local! {
    /// The id of the admin request being served.
    pub static REQUEST_ID: String;
}

/// Current request id (empty outside a request).
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error answer of the admin API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
    /// Field-level problems, for validation errors.
    pub details: Vec<FieldError>,
}

/// Body of every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInner,
}

/// The error object.
#[derive(Serialize, ToSchema)]
pub struct ErrorInner {
    /// HTTP status, repeated.
    pub status: u16,
    /// Machine-readable code, e.g. `invalid_config`.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Id of the request (also in `X-Request-Id`).
    pub request_id: String,
    /// Field problems: entity, path, message (and line/column for files).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
    /// 404 for an entity that does not exist.
    pub fn not_found(kind: &str, key: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {kind} with id or name `{key}`"),
        )
    }
    /// 400 for a body that does not fit its schema, naming the field.
    pub fn invalid(details: Vec<FieldError>) -> Self {
        let message = match details.as_slice() {
            [one] => format!(
                "invalid {}: {}: {}",
                one.entity,
                if one.path.is_empty() {
                    "(body)"
                } else {
                    &one.path
                },
                one.message
            ),
            many => format!("invalid configuration ({} errors)", many.len()),
        };
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_config",
            message,
            details,
        }
    }
}

impl ApiError {
    /// A config that validation rejected: 400 when it is malformed, 422 when it is
    /// well-formed but breaks a rule (what the OpenAPI document says of each).
    pub fn rejected(c: gatehouse_model::ConfigError) -> Self {
        let mut e = ApiError::invalid(c.errors);
        if !c.malformed {
            e.status = StatusCode::UNPROCESSABLE_ENTITY;
        }
        e
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(c) => ApiError::rejected(c),
            StoreError::ReadOnly => {
                ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "read_only", e.to_string())
            }
            StoreError::Conflict { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    format!("config store failed: {other}"),
                )
            }
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            // A write whose only problem is a name (or key) another entity has is a
            // conflict, as in Kong — not a malformed request.
            ControlError::Invalid(c)
                if !c.errors.is_empty()
                    && c.errors
                        .iter()
                        .all(|e| e.message.contains(gatehouse_model::validate::ALREADY_USED)) =>
            {
                let mut e = ApiError::invalid(c.errors);
                e.status = StatusCode::CONFLICT;
                e.code = "conflict";
                e
            }
            ControlError::Invalid(c) => ApiError::rejected(c),
            ControlError::Store(s) => s.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let rid = request_id();
        let body = ErrorBody {
            error: ErrorInner {
                status: self.status.as_u16(),
                code: self.code.to_string(),
                message: self.message,
                request_id: rid.clone(),
                details: self.details,
            },
        };
        let mut r = (self.status, Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&rid) {
            r.headers_mut().insert("x-request-id", v);
        }
        r
    }
}
