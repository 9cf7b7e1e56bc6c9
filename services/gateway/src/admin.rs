//! The admin routes (scope `admin`): the audit log, the credentials (without hashes), a
//! person's export, and erasure.
//!
//! - `GET /admin/audit?after=ID&limit=N`
//! - `GET /admin/credentials`
//! - `GET /admin/exports?agent=AGENT_JSON`: every statement naming the person (voided ones
//!   too) and their State and Agent Profile documents.
//! - `POST /admin/erasures` with `{"agent": AGENT, "reason": "ticket 123"}`: erases them, and
//!   answers with the counts once the store has applied it.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::Json;
use bus::access::{AdminError, AdminReply, AdminRequest, CredentialView, EraseCommand};
use bus::subjects;
use bus::wire::Verdict;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params;
use crate::AppState;

const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One admin request to the store (answered from a state that includes `LRS_IN` through
/// `min_applied`), its failures as HTTP errors.
pub async fn ask(
    client: &async_nats::Client,
    request: &AdminRequest,
    timeout: std::time::Duration,
    min_applied: u64,
) -> Result<AdminReply, ApiError> {
    bus::access::request(client, request, timeout, min_applied)
        .await
        .map_err(http_error)
}

/// An admin request's failure as an HTTP error.
fn http_error(err: AdminError) -> ApiError {
    match err {
        AdminError::Refused { code, message } => match code.as_str() {
            "not_found" => ApiError::NotFound(message),
            "conflict" => ApiError::Conflict { message },
            "bad_request" => ApiError::BadRequest(message),
            _ => ApiError::Internal,
        },
        AdminError::Timeout(_) => ApiError::Unavailable("the store did not answer in time".into()),
        AdminError::Unavailable(_) => ApiError::Unavailable("the store is unavailable".into()),
        AdminError::Unreadable(reason) => {
            tracing::error!(%reason, "unreadable admin reply");
            ApiError::Internal
        }
    }
}

pub async fn audit(
    State(state): State<AppState>,
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut after = None;
    let mut limit = 100;
    for (name, value) in params::parse_pairs(query.as_deref())? {
        let number = value
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("{name} must be a whole number")))?;
        match name.as_str() {
            "after" => after = Some(number),
            "limit" => limit = usize::try_from(number).unwrap_or(1000).clamp(1, 1000),
            _ => return Err(ApiError::BadRequest(format!("unknown parameter {name:?}"))),
        }
    }
    match ask(
        &state.client,
        &AdminRequest::Audit { after, limit },
        ADMIN_TIMEOUT,
        state.watermarks.current(),
    )
    .await?
    {
        AdminReply::Audit { entries } => Ok(Json(json!({ "entries": entries }))),
        _ => Err(ApiError::Internal),
    }
}

pub async fn credentials(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let listing = ask(
        &state.client,
        &AdminRequest::ListCredentials,
        ADMIN_TIMEOUT,
        state.watermarks.current(),
    );
    match listing.await? {
        AdminReply::Credentials { credentials } => {
            let views: Vec<CredentialView> = credentials.iter().map(CredentialView::from).collect();
            Ok(Json(json!({ "credentials": views })))
        }
        _ => Err(ApiError::Internal),
    }
}

/// The canonical IFI key of an agent given as JSON, after the Agent checks.
fn person(state: &AppState, agent: &Value) -> Result<String, ApiError> {
    state
        .validator
        .check_agent(agent, xapi::XapiVersion::V2_0_0)
        .map_err(|violation| {
            ApiError::BadRequest(format!("agent is not a valid Agent: {violation}"))
        })?;
    xapi::agent::ifi_key(agent)
        .ok_or_else(|| ApiError::BadRequest("agent has no identifier".into()))
}

/// Everything stored about one person (see [`bus::access::export_of`]), its failures as
/// HTTP errors.
pub async fn export_of(
    client: &async_nats::Client,
    person: &str,
    min_applied: u64,
) -> Result<Value, ApiError> {
    bus::access::export_of(client, person, ADMIN_TIMEOUT, min_applied)
        .await
        .map_err(http_error)
}

pub async fn export(
    State(state): State<AppState>,
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut agent = None;
    for (name, value) in params::parse_pairs(query.as_deref())? {
        match name.as_str() {
            "agent" => {
                agent = Some(serde_json::from_str::<Value>(&value).map_err(|err| {
                    ApiError::BadRequest(format!("parameter agent is not JSON: {err}"))
                })?)
            }
            _ => return Err(ApiError::BadRequest(format!("unknown parameter {name:?}"))),
        }
    }
    let agent =
        agent.ok_or_else(|| ApiError::BadRequest("the agent parameter is required".into()))?;
    let person = person(&state, &agent)?;
    Ok(Json(
        export_of(&state.client, &person, state.watermarks.current()).await?,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseBody {
    agent: Value,
    reason: Option<String>,
}

/// Publishes an erasure to `LRS_IN` and waits for the store to apply it.
pub async fn submit_erasure(
    js: &async_nats::jetstream::Context,
    watermarks: &bus::watermark::Watermarks,
    command: &EraseCommand,
    timeout: std::time::Duration,
) -> Result<Verdict, ApiError> {
    let payload = serde_json::to_vec(command).map_err(|_| ApiError::Internal)?;
    submit_to(js, watermarks, subjects::IN_ERASE, payload, timeout).await
}

/// Publishes an admin change to `LRS_IN` and waits for the store's verdict on it.
pub async fn submit(
    state: &AppState,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<Verdict, ApiError> {
    submit_to(&state.js, &state.watermarks, subject, payload, timeout).await
}

async fn submit_to(
    js: &async_nats::jetstream::Context,
    watermarks: &bus::watermark::Watermarks,
    subject: &'static str,
    payload: Vec<u8>,
    timeout: std::time::Duration,
) -> Result<Verdict, ApiError> {
    bus::watermark::submit(
        js,
        watermarks,
        subject,
        async_nats::HeaderMap::new(),
        payload,
        timeout,
    )
    .await
    .map_err(|err| match err {
        bus::watermark::SubmitError::Publish(_) => {
            ApiError::Unavailable("the message bus is unavailable".into())
        }
        bus::watermark::SubmitError::NotApplied { .. } => ApiError::Unavailable(
            "the change is queued but not yet applied; check again later".into(),
        ),
    })
}

pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "an erasure is a JSON body: {\"agent\": {...}, \"reason\": \"...\"}".into(),
        ));
    }
    let body = crate::body::read_body(&state, &headers, body).await?;
    let body: EraseBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("bad erasure request: {err}")))?;
    person(&state, &body.agent)?;
    let command = EraseCommand {
        agent: body.agent,
        actor: caller.actor(),
        reason: body.reason,
    };
    match submit_erasure(&state.js, &state.watermarks, &command, ADMIN_TIMEOUT).await? {
        Verdict::Erased {
            statements,
            documents,
        } => Ok(Json(
            json!({"statements": statements, "documents": documents}),
        )),
        Verdict::Rejected(rejection) => Err(ApiError::BadRequest(rejection.message)),
        other => {
            tracing::error!(?other, "unexpected erasure verdict");
            Err(ApiError::Internal)
        }
    }
}

/// `GET /admin/exports/statements`: every stored statement (voided ones too) matching the
/// filters, oldest first, as NDJSON, streamed a page at a time (constant memory).
pub async fn export_statements(
    State(state): State<AppState>,
    _caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<axum::response::Response, ApiError> {
    let filters = params::parse_export(query.as_deref())?;
    let mut export = bus::export::Export::new(filters);
    // The first page before the answer: a store that cannot answer is a 503, not a cut body.
    let first = export.next_page(&state.client).await?;
    let client = state.client.clone();
    let pages = futures::stream::unfold(
        (Some(first), export, client),
        |(first, mut export, client)| async move {
            let page = match first {
                Some(page) => Ok(page),
                None => export.next_page(&client).await,
            };
            match page {
                Ok(Some(statements)) => {
                    let mut chunk = Vec::new();
                    for statement in &statements {
                        if serde_json::to_writer(&mut chunk, statement).is_ok() {
                            chunk.push(b'\n');
                        }
                    }
                    Some((Ok(bytes::Bytes::from(chunk)), (None, export, client)))
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::warn!(error = %err, "export cut short");
                    Some((
                        Err(std::io::Error::other(err.to_string())),
                        (None, bus::export::Export::finished(), client),
                    ))
                }
            }
        },
    );
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(pages))
        .map_err(|_| ApiError::Internal)
}
