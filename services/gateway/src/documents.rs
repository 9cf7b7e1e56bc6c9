//! The document resources (`/xapi/activities/state`, `/xapi/activities/profile`,
//! `/xapi/agents/profile`) and the Activities and Agents resources, answered by the store.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Extension, Json};
use bus::subjects;
use bus::wire::{
    DocumentKind, DocumentOp, DocumentReply, DocumentRequest, DocumentStatus, ObjectQuery,
    Precondition, Verdict,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use xapi::XapiVersion;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{parse_pairs, parse_timestamp_param};
use crate::AppState;

/// The parameters a resource takes, and which of them name the document.
pub struct Resource {
    kind: DocumentKind,
    /// The parameter that names one document: `stateId` or `profileId`.
    id_param: &'static str,
    needs_activity: bool,
    needs_agent: bool,
    allows_registration: bool,
}

pub const STATE: Resource = Resource {
    kind: DocumentKind::State,
    id_param: "stateId",
    needs_activity: true,
    needs_agent: true,
    allows_registration: true,
};
pub const ACTIVITY_PROFILE: Resource = Resource {
    kind: DocumentKind::ActivityProfile,
    id_param: "profileId",
    needs_activity: true,
    needs_agent: false,
    allows_registration: false,
};
pub const AGENT_PROFILE: Resource = Resource {
    kind: DocumentKind::AgentProfile,
    id_param: "profileId",
    needs_activity: false,
    needs_agent: true,
    allows_registration: false,
};

/// The routes of one document resource: one handler, told its resource by an extension.
pub fn routes(resource: &'static Resource) -> MethodRouter<AppState> {
    get(document)
        .put(document)
        .post(document)
        .delete(document)
        .fallback(crate::method_not_allowed)
        .layer(Extension(resource))
}

// An axum handler takes what it needs as extractors, one argument each.
#[allow(clippy::too_many_arguments)]
async fn document(
    Extension(resource): Extension<&'static Resource>,
    State(state): State<AppState>,
    Extension(version): Extension<XapiVersion>,
    caller: Caller,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let asked = Asked {
        resource,
        caller: &caller,
        version,
        method: &method,
    };
    match document_inner(&state, asked, query.as_deref(), &headers, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// The validated parameters of a document request.
struct Target {
    scope: String,
    id: Option<String>,
    since: Option<String>,
}

fn parse_target(
    resource: &Resource,
    state: &AppState,
    version: XapiVersion,
    method: &Method,
    raw: Option<&str>,
) -> Result<Target, ApiError> {
    let mut allowed = vec![resource.id_param];
    if resource.needs_activity {
        allowed.push("activityId");
    }
    if resource.needs_agent {
        allowed.push("agent");
    }
    if resource.allows_registration {
        allowed.push("registration");
    }
    if *method == Method::GET || *method == Method::HEAD {
        allowed.push("since");
    }
    let mut activity = None;
    let mut agent = None;
    let mut registration = None;
    let mut id = None;
    let mut since = None;
    let mut seen = std::collections::HashSet::new();
    for (name, value) in parse_pairs(raw)? {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {name:?} for {method} on this resource"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(ApiError::BadRequest(format!(
                "parameter {name:?} is repeated"
            )));
        }
        match name.as_str() {
            "activityId" => {
                if iri_string::types::IriStr::new(&value).is_err() {
                    return Err(ApiError::BadRequest(format!(
                        "activityId {value:?} is not an absolute IRI"
                    )));
                }
                activity = Some(value);
            }
            "agent" => agent = Some(agent_key(state, version, &value)?),
            "registration" => {
                let parsed = uuid::Uuid::parse_str(&value).map_err(|_| {
                    ApiError::BadRequest(format!("registration {value:?} is not a UUID"))
                })?;
                registration = Some(parsed.to_string());
            }
            "since" => since = Some(parse_timestamp_param("since", &value)?),
            _ => id = Some(value),
        }
    }
    if resource.needs_activity && activity.is_none() {
        return Err(ApiError::BadRequest(
            "the activityId parameter is required".into(),
        ));
    }
    if resource.needs_agent && agent.is_none() {
        return Err(ApiError::BadRequest(
            "the agent parameter is required".into(),
        ));
    }
    if since.is_some() && id.is_some() {
        return Err(ApiError::BadRequest(format!(
            "since lists documents; it cannot be combined with {}",
            resource.id_param
        )));
    }
    let scope = bus::wire::document_scope(
        activity.as_deref().unwrap_or_default(),
        agent.as_deref().unwrap_or_default(),
        registration.as_deref().unwrap_or_default(),
    );
    Ok(Target { scope, id, since })
}

/// The canonical IFI key of an `agent` parameter, after the same checks as an actor.
pub fn agent_key(state: &AppState, version: XapiVersion, value: &str) -> Result<String, ApiError> {
    let agent: Value = serde_json::from_str(value)
        .map_err(|err| ApiError::BadRequest(format!("parameter agent is not JSON: {err}")))?;
    state
        .validator
        .check_agent(&agent, version)
        .map_err(|violation| {
            ApiError::BadRequest(format!("parameter agent is not a valid Agent: {violation}"))
        })?;
    xapi::agent::ifi_key(&agent)
        .ok_or_else(|| ApiError::BadRequest("parameter agent has no identifier".into()))
}

/// Who asks what of which resource.
struct Asked<'a> {
    resource: &'a Resource,
    caller: &'a Caller,
    version: XapiVersion,
    method: &'a Method,
}

async fn document_inner(
    state: &AppState,
    asked: Asked<'_>,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Asked {
        resource,
        caller,
        version,
        method,
    } = asked;
    let target = parse_target(resource, state, version, method, raw_query)?;
    let op = match (method.as_str(), &target.id) {
        ("GET" | "HEAD", Some(_)) => DocumentOp::Get,
        ("GET" | "HEAD", None) => DocumentOp::List,
        ("PUT", Some(_)) => DocumentOp::Put,
        ("POST", Some(_)) => DocumentOp::Post,
        ("DELETE", Some(_)) => DocumentOp::Delete,
        ("DELETE", None) if resource.kind == DocumentKind::State => DocumentOp::DeleteAll,
        ("PUT" | "POST" | "DELETE", None) => {
            return Err(ApiError::BadRequest(format!(
                "the {} parameter is required",
                resource.id_param
            )))
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let header_text = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let body = match op {
        DocumentOp::Put | DocumentOp::Post => {
            crate::body::read_limited(
                headers,
                body,
                state.limits.document_bytes.min(state.limits.body_bytes),
                xapi::limits::Limit::DocumentBytes,
                std::time::Duration::from_secs(state.limits.body_read_timeout_secs),
            )
            .await?
        }
        _ => Default::default(),
    };
    let request = DocumentRequest {
        op,
        kind: resource.kind,
        scope: target.scope,
        writer: Some(caller.0.key.clone()),
        own_only: caller.confined(),
        id: target.id,
        since: target.since,
        content_type: header_text(header::CONTENT_TYPE),
        if_match: header_text(header::IF_MATCH),
        if_none_match: header_text(header::IF_NONE_MATCH),
        // xAPI 1.0.3 asks for concurrency control on the profile resources (and a precondition
        // on every PUT there); 2.0 on all three.
        precondition: match (resource.kind, version) {
            (DocumentKind::State, XapiVersion::V1_0_3) => Precondition::Optional,
            (_, XapiVersion::V1_0_3) => Precondition::Required,
            (_, XapiVersion::V2_0_0) => Precondition::RequiredToOverwrite,
        },
    };
    let payload = bus::wire::frame(&request, &body).map_err(|err| {
        tracing::error!(error = %err, "cannot encode document request");
        ApiError::Internal
    })?;
    let writes = matches!(
        op,
        DocumentOp::Put | DocumentOp::Post | DocumentOp::Delete | DocumentOp::DeleteAll
    );
    if writes {
        return write(state, payload).await;
    }
    let reply = state.ask_store(subjects::API_DOCUMENTS, payload).await?;
    let (reply, body): (DocumentReply, &[u8]) = bus::wire::unframe(&reply).map_err(|reason| {
        tracing::error!(%reason, "unreadable document reply");
        ApiError::Internal
    })?;
    let message = reply.message.clone().unwrap_or_default();
    let mut response = match reply.status {
        DocumentStatus::Ok => {
            let mut response = Response::new(Body::from(body.to_vec()));
            if let Some(value) = reply
                .content_type
                .as_deref()
                .and_then(|value| HeaderValue::from_str(value).ok())
            {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        DocumentStatus::NoContent => StatusCode::NO_CONTENT.into_response(),
        failed => return Err(refusal(state, failed, message)),
    };
    if let Some(value) = reply
        .etag
        .as_deref()
        .and_then(|value| HeaderValue::from_str(value).ok())
    {
        response.headers_mut().insert(header::ETAG, value);
    }
    set_last_modified(&mut response, reply.updated.as_deref());
    Ok(response)
}

/// A document write goes through `LRS_IN`, so that every store replica applies it at the
/// same point of the log; its preconditions are checked there. A write that was done answers
/// 204.
async fn write(state: &AppState, payload: Vec<u8>) -> Result<Response, ApiError> {
    let max_payload = state.client.server_info().max_payload;
    if payload.len() + bus::HEADROOM > max_payload {
        return Err(ApiError::limit(
            xapi::limits::Limit::NatsMessage,
            max_payload.saturating_sub(bus::HEADROOM),
            format!(
                "this document makes a bus message of {} bytes; limits.document_bytes is set above what NATS carries",
                payload.len()
            ),
        ));
    }
    let verdict = bus::watermark::submit(
        &state.js,
        &state.watermarks,
        subjects::IN_DOCUMENTS,
        async_nats::HeaderMap::new(),
        payload,
        state.write_timeout,
    )
    .await
    .map_err(|err| {
        tracing::warn!(error = %err, "a document write was not confirmed");
        ApiError::Unavailable(
            "the document may or may not be written; read it back before retrying a merge".into(),
        )
    })?;
    match verdict {
        Verdict::Applied => Ok(StatusCode::NO_CONTENT.into_response()),
        Verdict::Document { status, message } => Err(refusal(state, status, message)),
        Verdict::Rejected(rejection) => Err(ApiError::BadRequest(rejection.message)),
        other => {
            tracing::error!(?other, "a verdict of another kind of write for a document");
            Err(ApiError::Internal)
        }
    }
}

/// The error a document status other than a success stands for.
fn refusal(state: &AppState, status: DocumentStatus, message: String) -> ApiError {
    match status {
        DocumentStatus::NotFound => ApiError::NotFound(message),
        DocumentStatus::BadRequest => ApiError::BadRequest(message),
        DocumentStatus::Conflict => ApiError::Conflict { message },
        DocumentStatus::PreconditionFailed => ApiError::PreconditionFailed(message),
        DocumentStatus::Forbidden => ApiError::Forbidden(message),
        DocumentStatus::TooLarge => ApiError::limit(
            xapi::limits::Limit::DocumentBytes,
            state.limits.document_bytes,
            message,
        ),
        DocumentStatus::Ok | DocumentStatus::NoContent | DocumentStatus::Internal => {
            ApiError::Internal
        }
    }
}

pub fn set_last_modified(response: &mut Response, updated: Option<&str>) {
    let http_date = updated
        .and_then(|updated| DateTime::parse_from_rfc3339(updated).ok())
        .map(|at| httpdate::fmt_http_date(at.with_timezone(&Utc).into()));
    if let Some(value) = http_date.and_then(|date| HeaderValue::from_str(&date).ok()) {
        response.headers_mut().insert(header::LAST_MODIFIED, value);
    }
}

/// The value of a resource's one required parameter; anything else in the query is a 400.
fn only_parameter(raw: Option<&str>, wanted: &str, resource: &str) -> Result<String, ApiError> {
    let mut found = None;
    for (name, value) in parse_pairs(raw)? {
        if name != wanted || found.is_some() {
            return Err(ApiError::BadRequest(format!(
                "unexpected parameter {name:?}; the {resource} resource takes {wanted} once"
            )));
        }
        found = Some(value);
    }
    found.ok_or_else(|| ApiError::BadRequest(format!("the {wanted} parameter is required")))
}

/// `GET /xapi/activities?activityId=`: the activity as the LRS knows it.
/// The agent IFI a confined caller's reads are limited to (see [`Caller::confined`]).
fn confined_to(state: &AppState, caller: &Caller) -> Result<Option<String>, ApiError> {
    if !caller.confined() {
        return Ok(None);
    }
    crate::auth::caller_ifi(caller, &state.authority_home_page)
        .map(Some)
        .ok_or(ApiError::Internal)
}

pub async fn activities(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = only_parameter(query.as_deref(), "activityId", "Activities")?;
    if iri_string::types::IriStr::new(&id).is_err() {
        return Err(ApiError::BadRequest(format!(
            "activityId {id:?} is not an absolute IRI"
        )));
    }
    let authority = confined_to(&state, &caller)?;
    let payload = serde_json::to_vec(&ObjectQuery::Activity { id, authority })
        .map_err(|_| ApiError::Internal)?;
    let reply = state.ask_store(subjects::API_OBJECTS, payload).await?;
    let activity: Value = serde_json::from_slice(&reply).map_err(|_| ApiError::Internal)?;
    if activity.get("error").is_some() {
        return Err(ApiError::Internal);
    }
    Ok(Json(activity).into_response())
}

/// `GET /xapi/agents?agent=`: the Person behind an agent, with what the LRS knows of them.
pub async fn agents(
    State(state): State<AppState>,
    Extension(version): Extension<XapiVersion>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let raw = only_parameter(query.as_deref(), "agent", "Agents")?;
    let ifi = agent_key(&state, version, &raw)?;
    let agent: Value = serde_json::from_str(&raw).map_err(|_| ApiError::Internal)?;
    let authority = confined_to(&state, &caller)?;
    let payload = serde_json::to_vec(&ObjectQuery::Person { ifi, authority })
        .map_err(|_| ApiError::Internal)?;
    let reply = state.ask_store(subjects::API_OBJECTS, payload).await?;
    let known: Value = serde_json::from_slice(&reply).map_err(|_| ApiError::Internal)?;
    let mut names: Vec<Value> = known
        .get("names")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(name) = agent.get("name").filter(|name| !names.contains(name)) {
        names.insert(0, name.clone());
    }
    let mut person = json!({"objectType": "Person"});
    if !names.is_empty() {
        person["name"] = Value::Array(names);
    }
    for property in xapi::agent::IFI_PROPERTIES {
        if let Some(value) = agent.get(property) {
            person[property] = json!([value]);
        }
    }
    Ok(Json(person).into_response())
}
