//! The hub registry over HTTP (scope `admin`); the store keeps it ([`bus::hubs`]).
//!
//! - `GET /admin/hubs`: every registered hub.
//! - `PUT /admin/hubs/{id}` with `{"name": "...", "type": "technohub"|"fieldlab", "region": "..."}`
//! - `DELETE /admin/hubs/{id}`

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use bus::access::{AdminReply, AdminRequest};
use bus::hubs::{HubChange, HubEntry, HubType};
use bus::subjects;
use bus::wire::Verdict;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The registry as the store has it now (the dashboard and the programme summary read it too).
pub async fn registry(state: &AppState) -> Result<Vec<HubEntry>, ApiError> {
    let reply = crate::admin::ask(
        &state.client,
        &AdminRequest::ListHubs,
        TIMEOUT,
        state.watermarks.current(),
    )
    .await?;
    match reply {
        AdminReply::Hubs { hubs } => Ok(hubs),
        _ => Err(ApiError::Internal),
    }
}

pub async fn list(State(state): State<AppState>, _caller: Caller) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "hubs": registry(&state).await? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HubBody {
    name: String,
    #[serde(rename = "type")]
    kind: HubType,
    region: String,
}

pub async fn set(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<HubEntry>, ApiError> {
    let body = crate::body::read_body(&state, &headers, body).await?;
    let body: HubBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "a hub is {{\"name\": \"...\", \"type\": \"technohub\"|\"fieldlab\", \"region\": \"...\"}}: {err}"
        ))
    })?;
    let hub = HubEntry {
        id,
        name: body.name,
        kind: body.kind,
        region: body.region,
    };
    hub.check().map_err(ApiError::BadRequest)?;
    change(&state, &HubChange::Set { hub: hub.clone() }).await?;
    Ok(Json(hub))
}

pub async fn delete(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    change(&state, &HubChange::Delete { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change(state: &AppState, change: &HubChange) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(change).map_err(|_| ApiError::Internal)?;
    let verdict = crate::admin::submit(state, subjects::IN_HUBS, payload, TIMEOUT).await?;
    match verdict {
        Verdict::Applied => Ok(()),
        Verdict::Refused { code, message } if code == "not_found" => {
            Err(ApiError::NotFound(message))
        }
        Verdict::Refused { message, .. } => Err(ApiError::BadRequest(message)),
        Verdict::Rejected(rejection) => Err(ApiError::BadRequest(rejection.message)),
        other => {
            tracing::error!(?other, "unexpected hub registry verdict");
            Err(ApiError::Internal)
        }
    }
}
