//! The admin routes of forwarding targets and webhooks (scope `admin`), over
//! [`bus::targets`]:
//!
//! - `GET /admin/webhooks`, `POST /admin/webhooks` with `{"name", "url", "secret", "filter":
//!   {"verbs", "activities", "hubs", "companies"}, "batch", "max_attempts"}`
//! - `DELETE /admin/webhooks/{name}`
//! - `GET /admin/webhooks/{name}/dead-letters?limit=N`, `POST /admin/webhooks/{name}/replay`
//! - the same under `/admin/forwards` with `{"name", "endpoint", "user", "password",
//!   "version", "filter", "batch"}` (another LRS; never gives up on it).

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bus::targets::{Filter, Kind, Target, TargetError, Targets};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

fn http_error(err: TargetError) -> ApiError {
    match err {
        TargetError::Invalid(message) => ApiError::BadRequest(message),
        TargetError::NotFound(name) => ApiError::NotFound(format!("no target named {name:?}")),
        TargetError::Exists(name) => ApiError::Conflict {
            message: format!("a target named {name:?} exists already"),
        },
        TargetError::Nats(reason) => {
            tracing::warn!(%reason, "the targets registry");
            ApiError::Unavailable("the message bus is unavailable".into())
        }
    }
}

async fn registry(state: &AppState) -> Result<&Targets, ApiError> {
    let replicas = state.stream_replicas;
    state
        .targets
        .get_or_try_init(|| Targets::open(&state.client, replicas))
        .await
        .map_err(http_error)
}

/// Which family a route serves.
#[derive(Clone, Copy, PartialEq)]
enum Family {
    Webhooks,
    Forwards,
}

impl Family {
    fn holds(self, target: &Target) -> bool {
        matches!(
            (self, &target.kind),
            (Family::Webhooks, Kind::Webhook { .. }) | (Family::Forwards, Kind::Lrs { .. })
        )
    }

    fn key(self) -> &'static str {
        match self {
            Family::Webhooks => "webhooks",
            Family::Forwards => "forwards",
        }
    }
}

async fn list(state: &AppState, family: Family) -> Result<Json<serde_json::Value>, ApiError> {
    let targets = registry(state).await?;
    let kind = match family {
        Family::Webhooks => "webhook",
        Family::Forwards => "lrs",
    };
    let views: Vec<_> = targets
        .views()
        .await
        .map_err(http_error)?
        .into_iter()
        .filter(|view| view.kind == kind)
        .collect();
    Ok(Json(json!({ family.key(): views })))
}

pub async fn list_webhooks(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    list(&state, Family::Webhooks).await
}

pub async fn list_forwards(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    list(&state, Family::Forwards).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    name: String,
    url: String,
    secret: String,
    #[serde(default)]
    filter: Filter,
    batch: Option<usize>,
    max_attempts: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewForward {
    name: String,
    endpoint: String,
    user: Option<String>,
    password: Option<String>,
    version: Option<String>,
    #[serde(default)]
    filter: Filter,
    batch: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("the body is not a valid target: {err}")))
}

async fn add(state: &AppState, target: Target) -> Result<Response, ApiError> {
    let targets = registry(state).await?;
    targets.add(&target).await.map_err(http_error)?;
    Ok((StatusCode::CREATED, Json(target.view())).into_response())
}

fn now() -> String {
    xapi::time::format_timestamp(chrono::Utc::now())
}

pub async fn add_webhook(
    State(state): State<AppState>,
    _caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let new: NewWebhook = parse(&body)?;
    let target = Target {
        name: new.name,
        kind: Kind::Webhook {
            url: new.url,
            secret: new.secret,
        },
        filter: new.filter,
        batch: new.batch.unwrap_or(1),
        max_attempts: new.max_attempts.unwrap_or(10).max(1),
        created: now(),
        replay_requested: None,
    };
    add(&state, target).await
}

pub async fn add_forward(
    State(state): State<AppState>,
    _caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let new: NewForward = parse(&body)?;
    let version = new.version.unwrap_or_else(|| "1.0.3".into());
    if xapi::XapiVersion::from_header(&version).is_none() {
        return Err(ApiError::BadRequest(format!(
            "version {version:?} is not 1.0.3 or 2.0.0"
        )));
    }
    let target = Target {
        name: new.name,
        kind: Kind::Lrs {
            endpoint: new.endpoint,
            user: new.user,
            password: new.password,
            version,
        },
        filter: new.filter,
        batch: new.batch.unwrap_or(100),
        max_attempts: 0,
        created: now(),
        replay_requested: None,
    };
    add(&state, target).await
}

/// The target `name` of this family, or 404.
async fn existing<'a>(
    state: &'a AppState,
    family: Family,
    name: &str,
) -> Result<&'a Targets, ApiError> {
    let targets = registry(state).await?;
    match targets.get(name).await.map_err(http_error)? {
        Some(target) if family.holds(&target) => Ok(targets),
        _ => Err(ApiError::NotFound(format!(
            "no {} named {name:?}",
            &family.key()[..family.key().len() - 1]
        ))),
    }
}

async fn remove(state: &AppState, family: Family, name: &str) -> Result<StatusCode, ApiError> {
    let targets = existing(state, family, name).await?;
    targets.remove(name).await.map_err(http_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_webhook(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, Family::Webhooks, &name).await
}

pub async fn remove_forward(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    remove(&state, Family::Forwards, &name).await
}

async fn dead_letters(
    state: &AppState,
    family: Family,
    name: &str,
    query: Option<&str>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut limit = 100usize;
    for (key, value) in crate::params::parse_pairs(query)? {
        match key.as_str() {
            "limit" => {
                limit = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("limit must be a number, not {value:?}"))
                })?
            }
            _ => return Err(ApiError::BadRequest(format!("unknown parameter {key:?}"))),
        }
    }
    let targets = existing(state, family, name).await?;
    let letters = targets
        .dead_letters(name, limit.clamp(1, 1000))
        .await
        .map_err(http_error)?;
    let count = targets.dead_count(name).await.map_err(http_error)?;
    Ok(Json(json!({"count": count, "dead_letters": letters})))
}

pub async fn webhook_dead_letters(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    dead_letters(&state, Family::Webhooks, &name, query.as_deref()).await
}

pub async fn forward_dead_letters(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    dead_letters(&state, Family::Forwards, &name, query.as_deref()).await
}

async fn replay(state: &AppState, family: Family, name: &str) -> Result<Response, ApiError> {
    let targets = existing(state, family, name).await?;
    let count = targets.dead_count(name).await.map_err(http_error)?;
    targets
        .request_replay(name, &now())
        .await
        .map_err(http_error)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"replaying": count}))).into_response())
}

pub async fn replay_webhook(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    replay(&state, Family::Webhooks, &name).await
}

pub async fn replay_forward(
    State(state): State<AppState>,
    _caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    replay(&state, Family::Forwards, &name).await
}
