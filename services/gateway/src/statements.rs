//! `/xapi/statements`: PUT and POST publish to JetStream and wait for the store's verdict;
//! GET and HEAD ask the store.

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bus::access::Scope;
use bus::subjects;
use bus::wire::{
    HttpBatchText, PageHead, StatementQuery, StatementReply, StatementReplyWire, Verdict,
};
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use xapi::statement::{authority_names, format_canonical, format_ids};
use xapi::{BatchViolation, Violation, XapiVersion};

use crate::auth::{caller_ifi, Caller};
use crate::body::{read_statements, StatementsBody};
use crate::error::ApiError;
use crate::params::{self, Format};
use crate::AppState;

pub const CONSISTENT_THROUGH: &str = "X-Experience-API-Consistent-Through";

pub async fn post(
    State(state): State<AppState>,
    Extension(version): Extension<XapiVersion>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if let Some((name, _)) = params::parse_pairs(query.as_deref())?.first() {
        return Err(ApiError::BadRequest(format!(
            "POST statements takes no parameters; got {name:?}"
        )));
    }
    let body = read_statements(&state, &headers, body).await?;
    let ids = submit(&state, &caller, version, body, None).await?;
    Ok(Json(ids).into_response())
}

pub async fn put(
    State(state): State<AppState>,
    Extension(version): Extension<XapiVersion>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let pairs = params::parse_pairs(query.as_deref())?;
    let mut statement_id_param = None;
    for (name, value) in pairs {
        match name.as_str() {
            "statementId" if statement_id_param.is_none() => statement_id_param = Some(value),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "PUT statements takes exactly one parameter, statementId; got {name:?}"
                )))
            }
        }
    }
    let id_param = statement_id_param.ok_or_else(|| {
        ApiError::BadRequest("PUT statements needs the statementId parameter".into())
    })?;
    let id = uuid::Uuid::parse_str(&id_param)
        .map_err(|_| ApiError::BadRequest(format!("statementId {id_param:?} is not a UUID")))?
        .to_string();
    let mut body = read_statements(&state, &headers, body).await?;
    let object = match body.statements.as_mut_slice() {
        [statement] if body.single => statement.as_object_mut(),
        _ => None,
    };
    let Some(object) = object else {
        return Err(ApiError::BadRequest(
            "the body must be one statement object".into(),
        ));
    };
    if let Some(body_id) = object.get("id") {
        let matches = body_id
            .as_str()
            .and_then(|body_id| uuid::Uuid::parse_str(body_id).ok())
            .is_some_and(|body_id| body_id.to_string() == id);
        if !matches {
            return Err(ApiError::BadRequest(format!(
                "the statement's id {body_id} differs from statementId {id}"
            )));
        }
    } else {
        object.insert("id".into(), Value::String(id.clone()));
    }
    submit(&state, &caller, version, body, Some(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// What a write answers when its fate is unknown (NATS or the store did not confirm in time).
/// True in every case, and the reason retrying is safe: the retry publishes the same message
/// id and the same statement ids (see [`xapi::statement::request_seed`]).
const MAYBE_STORED: &str = "the statements may or may not be stored; retrying the same request is safe (same ids, stored once)";

/// Validates, assigns ids, publishes the batch as one JetStream message, waits for the verdict.
async fn submit(
    state: &AppState,
    caller: &Caller,
    version: XapiVersion,
    body: StatementsBody,
    put_id: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let StatementsBody {
        mut statements,
        attachments,
        ..
    } = body;
    if statements.is_empty() {
        return Ok(Vec::new());
    }
    let validator = state.validator.clone();
    let checked = if statements.len() > 10 {
        // Large batches take more than ~500 µs to validate: off the async workers.
        let (result, returned) = tokio::task::spawn_blocking(move || {
            let result = validator.check_batch(&statements, version);
            (result, statements)
        })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "validation task failed");
            ApiError::Internal
        })?;
        statements = returned;
        result
    } else {
        validator.check_batch(&statements, version)
    };
    checked.map_err(ApiError::InvalidStatement)?;
    let texts = xapi::statement::StatementTexts::of(&statements);
    let attempt = state.unconfirmed.attempt(xapi::statement::request_seed_of(
        &caller.0.key,
        version,
        &texts,
        put_id,
    ));
    let seed = attempt.seed();
    let mut written = Vec::with_capacity(texts.iter().map(|text| text.len() + 64).sum());
    let ids: Vec<String> = statements
        .iter()
        .enumerate()
        .map(|(index, statement)| {
            if index > 0 {
                written.push(b',');
            }
            xapi::statement::write_with_id(statement, texts.get(index), &seed, index, &mut written)
        })
        .collect();
    let bodies: Vec<String> = attachments.keys().cloned().collect();
    let payload = HttpBatchText {
        authority: &caller.0.authority(&state.authority_home_page),
        version: version.as_str(),
        statements: &written,
        define: caller.has_any(&[Scope::All, Scope::Define]),
        bodies: &bodies,
    }
    .to_vec()
    .map_err(|err| {
        tracing::error!(error = %err, "cannot encode batch");
        ApiError::Internal
    })?;
    let max_payload = state.client.server_info().max_payload;
    if payload.len() + bus::HEADROOM > max_payload {
        // A definite answer: nothing was sent, and a retry would get the same.
        attempt.confirm();
        return Err(ApiError::limit(
            xapi::limits::Limit::NatsMessage,
            max_payload.saturating_sub(bus::HEADROOM),
            format!(
                "these {} statements make a bus message of {} bytes; send fewer per request",
                ids.len(),
                payload.len()
            ),
        ));
    }
    // Bodies first: once the statement is acknowledged, its attachments must be readable.
    for (sha2, body) in &attachments {
        state.attachments.put(sha2, body).await?;
    }
    let msg_id = format!("http-{}", hex(&seed));
    let submitted = state
        .bundler
        .submit(msg_id, payload, state.write_timeout)
        .await;
    let verdict = match submitted {
        Ok(verdict) => {
            attempt.confirm();
            Some(verdict)
        }
        Err(err) => {
            tracing::warn!(error = %err, "a statement write was not confirmed");
            None
        }
    };
    match verdict {
        Some(Verdict::Applied) => Ok(ids),
        Some(
            other @ (Verdict::Erased { .. }
            | Verdict::Document { .. }
            | Verdict::Credential { .. }
            | Verdict::Refused { .. }
            | Verdict::Parts { .. }),
        ) => {
            tracing::error!(
                ?other,
                "a verdict of another kind of write for a statement batch"
            );
            Err(ApiError::Internal)
        }
        Some(Verdict::Conflict { statement, id }) => Err(ApiError::Conflict {
            message: format!(
                "statement {statement}: id {id} is already stored with different content"
            ),
        }),
        Some(Verdict::Rejected(rejection)) => Err(ApiError::InvalidStatement(BatchViolation {
            statement: rejection.statement,
            violation: Violation {
                path: rejection.path,
                rule: rejection.rule,
                message: rejection.message,
            },
        })),
        None => Err(ApiError::Unavailable(MAYBE_STORED.into())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub async fn get(
    State(state): State<AppState>,
    Extension(_version): Extension<XapiVersion>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match get_inner(&state, &caller, query.as_deref(), &headers).await {
        Ok(response) => response,
        Err(err) => {
            // Every GET answer carries the header, errors included.
            let mut response = err.into_response();
            set_consistent_through(&mut response, &xapi::time::format_timestamp(Utc::now()));
            response
        }
    }
}

async fn get_inner(
    state: &AppState,
    caller: &Caller,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let mut params = params::parse_get(params::parse_pairs(raw_query)?, state.limits.query_limit)?;
    // `statements/read/mine` alone: only what this credential wrote.
    let mine = if caller.confined() {
        Some(caller_ifi(caller, &state.authority_home_page).ok_or(ApiError::Internal)?)
    } else {
        None
    };
    params.query.authority = mine.clone();
    // The common read, a page as stored: the store joins it, and it goes out unread.
    params.query.joined = params.format == Format::Exact && !params.attachments;
    let answer = ask_store(state, &params.query).await?;
    let joined = bus::wire::read_joined_page(&answer).map_err(|reason| {
        tracing::error!(%reason, "unreadable joined page");
        ApiError::Internal
    })?;
    if let Some((head, statements)) = joined {
        return Ok(exact_page(head, statements, &params.echo));
    }
    let raw: StatementReplyWire<Box<RawValue>> =
        serde_json::from_slice(&answer).map_err(|err| {
            tracing::error!(error = %err, "unreadable statement reply");
            ApiError::Internal
        })?;
    let unreadable = |reason: String| {
        tracing::error!(%reason, "unreadable statement reply");
        ApiError::Internal
    };
    let reply = match raw.reply().map_err(unreadable)? {
        // One statement in the exact format goes out as stored, as a page's do: not built
        // into a value and written again.
        StatementReply::One {
            statement: Some(statement),
            consistent_through,
            ..
        } if params.format == Format::Exact && !params.attachments && mine.is_none() => {
            return Ok(exact_one(&statement, &consistent_through));
        }
        reply => reply.try_map(|statement: Box<RawValue>| {
            serde_json::from_str(statement.get()).map_err(|err| err.to_string())
        }),
    };
    let mut reply = reply.map_err(unreadable)?;
    if let (
        Some(mine),
        StatementReply::One {
            statement: found @ Some(_),
            ..
        },
    ) = (&mine, &mut reply)
    {
        if !found
            .as_ref()
            .is_some_and(|statement| authority_names(statement, mine))
        {
            *found = None;
        }
    }
    let languages = accept_languages(headers);
    let render = |statement: Value| match params.format {
        Format::Exact => statement,
        Format::Ids => format_ids(&statement),
        Format::Canonical => format_canonical(&statement, &languages),
    };
    let (body, consistent_through, last_modified, shown_bodies) = match reply {
        StatementReply::One {
            statement,
            consistent_through,
            bodies,
        } => {
            let Some(statement) = statement else {
                let wanted = params
                    .query
                    .statement_id
                    .or(params.query.voided_statement_id)
                    .unwrap_or_default();
                return Err(ApiError::NotFound(format!("no statement with id {wanted}")));
            };
            let stored = stored_of(&statement);
            (render(statement), consistent_through, stored, bodies)
        }
        StatementReply::Page {
            statements,
            next_after,
            consistent_through,
            bodies,
            last_modified,
        } => {
            let last_modified =
                last_modified.or_else(|| statements.iter().filter_map(stored_of).max());
            let more = more_link(next_after, &params.echo);
            let statements: Vec<Value> = statements.into_iter().map(render).collect();
            (
                json!({"statements": statements, "more": more}),
                consistent_through,
                last_modified,
                bodies,
            )
        }
        StatementReply::Error { message } => {
            tracing::error!(%message, "store refused a query");
            return Err(ApiError::Internal);
        }
    };
    let response = if params.attachments {
        multipart_response(state, &body, shown_bodies.as_deref()).await?
    } else {
        Json(body).into_response()
    };
    Ok(with_read_headers(
        response,
        &consistent_through,
        last_modified,
    ))
}

/// A page in the `exact` format without attachments, the common read: the statements go out
/// as the store joined them, never read here (building them into values and writing them
/// again was half of a gateway's time on a 100-statement page; reading them for their ends
/// and their `stored`, a third of what was left).
fn exact_page(head: PageHead, statements: &[u8], echo: &[(String, String)]) -> Response {
    let more = serde_json::to_string(&more_link(head.next_after, echo)).unwrap_or_default();
    let mut body = Vec::with_capacity(statements.len() + more.len() + 32);
    body.extend_from_slice(b"{\"statements\":[");
    body.extend_from_slice(statements);
    body.extend_from_slice(b"],\"more\":");
    body.extend_from_slice(more.as_bytes());
    body.push(b'}');
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    with_read_headers(response, &head.consistent_through, head.last_modified)
}

/// One statement in the `exact` format without attachments, as the store holds it; its
/// `Last-Modified` from its `stored`.
fn exact_one(statement: &RawValue, consistent_through: &str) -> Response {
    #[derive(serde::Deserialize)]
    struct Stored {
        stored: Option<String>,
    }
    let stored = serde_json::from_str::<Stored>(statement.get())
        .ok()
        .and_then(|read| read.stored);
    let response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        statement.get().to_owned(),
    )
        .into_response();
    with_read_headers(response, consistent_through, stored)
}

/// The `more` link of a page: the same query from behind its last statement, or "".
fn more_link(next_after: Option<u64>, echo: &[(String, String)]) -> String {
    next_after
        .map(|after| {
            let mut pairs = echo.to_vec();
            pairs.push(("cursor".into(), after.to_string()));
            format!(
                "/xapi/statements?{}",
                serde_urlencoded::to_string(pairs).unwrap_or_default()
            )
        })
        .unwrap_or_default()
}

/// The headers every statement read carries: how consistent it is, and when what it shows
/// last changed.
fn with_read_headers(
    mut response: Response,
    consistent_through: &str,
    last_modified: Option<String>,
) -> Response {
    set_consistent_through(&mut response, consistent_through);
    if let Some(http_date) = last_modified.and_then(|stored| {
        DateTime::parse_from_rfc3339(&stored)
            .ok()
            .map(|at| httpdate::fmt_http_date(at.with_timezone(&Utc).into()))
    }) {
        if let Ok(value) = HeaderValue::from_str(&http_date) {
            response.headers_mut().insert(header::LAST_MODIFIED, value);
        }
    }
    response
}

fn stored_of(statement: &Value) -> Option<String> {
    statement.get("stored")?.as_str().map(str::to_owned)
}

fn set_consistent_through(response: &mut Response, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(CONSISTENT_THROUGH, value);
    }
}

/// A statement query, answered from a state that includes this gateway's writes.
async fn ask_store(state: &AppState, query: &StatementQuery) -> Result<Bytes, ApiError> {
    let payload = serde_json::to_vec(query).map_err(|err| {
        tracing::error!(error = %err, "cannot encode a statement query");
        ApiError::Internal
    })?;
    state.ask_store(subjects::API_STATEMENTS, payload).await
}

/// Language tags of `Accept-Language`, most wanted first.
fn accept_languages(headers: &HeaderMap) -> Vec<String> {
    let Some(header) = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|value| value.to_str().ok())
    else {
        return Vec::new();
    };
    let mut weighted: Vec<(f32, String)> = header
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next()?.trim();
            if tag.is_empty() || tag == "*" {
                return None;
            }
            let weight = pieces
                .find_map(|piece| piece.trim().strip_prefix("q="))
                .and_then(|q| q.parse().ok())
                .unwrap_or(1.0);
            Some((weight, tag.to_owned()))
        })
        .collect();
    weighted.sort_by(|a, b| b.0.total_cmp(&a.0));
    weighted.into_iter().map(|(_, tag)| tag).collect()
}

/// `attachments=true`: the statements as the first part of a multipart/mixed body, then
/// the body of every attachment the LRS holds, once per hash.
/// `shown`: when the reader is confined to its own statements, the bodies they brought.
async fn multipart_response(
    state: &AppState,
    body: &Value,
    shown: Option<&[String]>,
) -> Result<Response, ApiError> {
    let statements: Vec<&Value> = match body.get("statements").and_then(Value::as_array) {
        Some(statements) => statements.iter().collect(),
        None => vec![body],
    };
    let mut parts = vec![(
        vec![("Content-Type", "application/json".to_owned())],
        Bytes::from(body.to_string()),
    )];
    // Hashes and content types first: nothing borrowed from `body` lives across an await.
    let mut wanted: Vec<(String, String)> = Vec::new();
    for attachment in statements
        .iter()
        .filter_map(|statement| statement.get("attachments").and_then(Value::as_array))
        .flatten()
    {
        let Some(sha2) = attachment.get("sha2").and_then(Value::as_str) else {
            continue;
        };
        let sha2 = sha2.to_ascii_lowercase();
        if wanted.iter().any(|(known, _)| *known == sha2)
            || shown.is_some_and(|shown| !shown.contains(&sha2))
        {
            continue;
        }
        let content_type = attachment
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or("application/octet-stream")
            .to_owned();
        wanted.push((sha2, content_type));
    }
    for (sha2, content_type) in wanted {
        let Some(content) = state.attachments.get(&sha2).await? else {
            continue;
        };
        parts.push((
            vec![
                ("Content-Type", content_type),
                ("Content-Transfer-Encoding", "binary".to_owned()),
                ("X-Experience-API-Hash", sha2),
            ],
            content,
        ));
    }
    let (text, boundary) = crate::multipart::build(&parts);
    let mut response = text.into_response();
    let content_type = HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
        .map_err(|_| ApiError::Internal)?;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    Ok(response)
}
