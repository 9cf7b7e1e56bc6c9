//! One error type for the HTTP boundary, one stable JSON shape:
//! `{"code", "message", "statement"?, "path"?, "rule"?}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use xapi::limits::Exceeded;
use xapi::BatchViolation;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidStatement(BatchViolation),
    #[error("{message}")]
    Conflict { message: String },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated, but the credential lacks the scope.
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests for this credential; retry in {retry_after_secs} s")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A bound of the limits contract was reached: the answer names it.
    #[error("{0}")]
    Limit(Exceeded),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// NATS or the store did not confirm in time. Nothing acknowledged was lost; retrying
    /// the same request is safe (same ids, same content).
    #[error("{0}")]
    Unavailable(String),
    /// Logged with its cause chain where it happens; the client sees no internals.
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    /// For a reached limit: its configuration key and its value.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u64>,
}

impl ApiError {
    pub fn limit(limit: xapi::limits::Limit, max: usize, message: impl Into<String>) -> ApiError {
        ApiError::Limit(Exceeded::new(limit, max, message))
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::InvalidStatement(_) => (StatusCode::BAD_REQUEST, "invalid_statement"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Limit(exceeded) => (
                StatusCode::from_u16(exceeded.limit.http_status())
                    .unwrap_or(StatusCode::PAYLOAD_TOO_LARGE),
                exceeded.limit.code(),
            ),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            ApiError::InvalidStatement(violation) => Body {
                code,
                message: violation.to_string(),
                statement: violation.statement,
                path: Some(violation.violation.path.as_str()),
                rule: Some(violation.violation.rule.as_str()),
                limit: None,
                max: None,
            },
            ApiError::Limit(exceeded) => Body {
                code,
                message: self.to_string(),
                statement: exceeded.statement,
                path: None,
                rule: None,
                limit: Some(exceeded.limit.key()),
                max: Some(exceeded.max),
            },
            other => Body {
                code,
                message: other.to_string(),
                statement: None,
                path: None,
                rule: None,
                limit: None,
                max: None,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Leerspoor\""),
                );
            }
            ApiError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::TooManyRequests { retry_after_secs } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(1)),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<bus::request::AskError> for ApiError {
    fn from(err: bus::request::AskError) -> ApiError {
        match err {
            bus::request::AskError::Unreadable { .. } => {
                tracing::error!(error = %err, "unreadable reply");
                ApiError::Internal
            }
            bus::request::AskError::Refused { message, .. } => ApiError::BadRequest(message),
            other => {
                tracing::warn!(error = %other, "request failed");
                ApiError::Unavailable(other.to_string())
            }
        }
    }
}
