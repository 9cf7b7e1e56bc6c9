//! Reading a request body: its size and time limits, and statements as `application/json` or
//! as `multipart/mixed` with attachment parts. Every bound is from the limits contract
//! ([`xapi::limits`]) and answers with the error that names it.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde_json::Value;
use xapi::limits::{self, BodyError, Limit};

use crate::attachments::{check_signatures, match_parts, require_no_raw_attachments};
use crate::error::ApiError;
use crate::{multipart, AppState};

/// At most `max` bytes of `body`, read within the body deadline: 413 beyond the size (before
/// reading anything when `Content-Length` says so), 408 when the client is too slow.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    limit: Limit,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let too_large =
        |length: String| ApiError::limit(limit, max, format!("a request body of {length} bytes"));
    if let Some(length) = declared.filter(|length| *length > max as u64) {
        return Err(too_large(length.to_string()));
    }
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(ApiError::limit(
            Limit::BodyReadTimeout,
            usize::try_from(deadline.as_secs()).unwrap_or(usize::MAX),
            "the request body did not arrive in time",
        )),
        Ok(Err(err)) if is_length_limit(&err) => Err(too_large(format!("more than {max}"))),
        Ok(Err(err)) => Err(ApiError::BadRequest(format!(
            "the request body could not be read: {err}"
        ))),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// The body of a request, within `limits.body_bytes` and `limits.body_read_timeout_secs`.
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    read_limited(
        headers,
        body,
        state.limits.body_bytes,
        Limit::BodyBytes,
        Duration::from_secs(state.limits.body_read_timeout_secs),
    )
    .await
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// JSON statements within the limits, or the error that names what is wrong.
pub fn parse_statements(state: &AppState, bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    limits::parse_statements(bytes, &state.limits).map_err(|err| match err {
        BodyError::Exceeded(exceeded) => ApiError::Limit(exceeded),
        BodyError::Malformed(message) => ApiError::BadRequest(message),
    })
}

/// What a statements request carried.
pub struct StatementsBody {
    pub statements: Vec<Value>,
    /// Whether the JSON was one statement object (PUT needs one), not an array.
    pub single: bool,
    /// Attachment bodies sent as parts, by SHA-2.
    pub attachments: HashMap<String, Bytes>,
}

/// Statements, and the attachment bodies sent with them by hash.
pub async fn read_statements(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<StatementsBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    match media_type(content_type).as_str() {
        "application/json" => {
            let bytes = read_body(state, headers, body).await?;
            let statements = parse_statements(state, &bytes)?;
            require_no_raw_attachments(&statements)?;
            Ok(StatementsBody {
                single: is_object(&bytes),
                statements,
                attachments: HashMap::new(),
            })
        }
        "multipart/mixed" => {
            let boundary = multipart::boundary(content_type).ok_or_else(|| {
                ApiError::BadRequest("multipart/mixed needs a boundary parameter".into())
            })?;
            if boundary.chars().count() > state.limits.boundary_length {
                return Err(ApiError::limit(
                    Limit::BoundaryLength,
                    state.limits.boundary_length,
                    format!(
                        "a multipart boundary of {} characters",
                        boundary.chars().count()
                    ),
                ));
            }
            let bytes = read_body(state, headers, body).await?;
            let mut parts = multipart::parse(&bytes, &boundary, state.limits.multipart_parts)
                .map_err(|err| match err {
                    multipart::Error::TooManyParts => ApiError::limit(
                        Limit::MultipartParts,
                        state.limits.multipart_parts,
                        "a multipart body with more parts",
                    ),
                    multipart::Error::Malformed(reason) => {
                        ApiError::BadRequest(format!("malformed multipart body: {reason}"))
                    }
                })?
                .into_iter();
            let first = parts
                .next()
                .ok_or_else(|| ApiError::BadRequest("the multipart body has no parts".into()))?;
            let first_type = first
                .header("content-type")
                .map(media_type)
                .unwrap_or_default();
            if first_type != "application/json" {
                return Err(ApiError::BadRequest(
                    "the first part must be the statements as application/json".into(),
                ));
            }
            let statements = parse_statements(state, &first.body)?;
            let attachments = match_parts(&statements, parts.collect())?;
            check_signatures(&statements, &attachments, &state.limits)?;
            Ok(StatementsBody {
                single: is_object(&first.body),
                statements,
                attachments,
            })
        }
        _ => Err(ApiError::BadRequest(format!(
            "statements must be sent as application/json or multipart/mixed, not {content_type:?}"
        ))),
    }
}

fn is_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{')
}
