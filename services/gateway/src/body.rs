//! Reading a request body: the size limit, and statements as `application/json` or as
//! `multipart/mixed` with attachment parts.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::attachments::{check_signatures, match_parts, require_no_raw_attachments};
use crate::error::ApiError;
use crate::{multipart, AppState};

/// The body, at most `max_body_bytes` (413 beyond).
pub async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > state.max_body_bytes) {
        return Err(ApiError::PayloadTooLarge(state.max_body_bytes));
    }
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(state.max_body_bytes))
}

fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|err| ApiError::BadRequest(format!("the statements are not valid JSON: {err}")))
}

/// A statement or array of statements, and the attachment bodies sent with them by hash.
pub async fn read_statements(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Value, HashMap<String, Bytes>), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    match media_type(content_type).as_str() {
        "application/json" => {
            let statements = parse_json(&read_body(state, headers, body).await?)?;
            require_no_raw_attachments(as_slice(&statements))?;
            Ok((statements, HashMap::new()))
        }
        "multipart/mixed" => {
            let boundary = multipart::boundary(content_type).ok_or_else(|| {
                ApiError::BadRequest("multipart/mixed needs a boundary parameter".into())
            })?;
            let bytes = read_body(state, headers, body).await?;
            let mut parts = multipart::parse(&bytes, &boundary)
                .map_err(|reason| {
                    ApiError::BadRequest(format!("malformed multipart body: {reason}"))
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
            let statements = parse_json(&first.body)?;
            let bodies = match_parts(as_slice(&statements), parts.collect())?;
            check_signatures(as_slice(&statements), &bodies)?;
            Ok((statements, bodies))
        }
        _ => Err(ApiError::BadRequest(format!(
            "statements must be sent as application/json or multipart/mixed, not {content_type:?}"
        ))),
    }
}

fn as_slice(statements: &Value) -> &[Value] {
    match statements {
        Value::Array(items) => items,
        single => std::slice::from_ref(single),
    }
}
