//! A hub node: what a hub's kiosks, badge scanners and back office write to when the central
//! site may be out of reach. It speaks the write half of the xAPI statement API
//! (`POST`/`PUT /xapi/statements`, `GET /xapi/about`; `GET /health/live`, `/health/ready`),
//! checks each write as the central store
//! will ([`accept`]), and answers once the statements are on disk in the hub's own JetStream
//! stream, on the hub's own nats-server, a leaf node of the central NATS. The central `LRS_IN`
//! sources from that stream whenever the link is up ([`bus::leaf`]).
//!
//! # Layout
//! - [`accept`]: checking a write and publishing it to the hub's stream.
//! - [`auth`]: the hub's local credentials.
//! - [`attendance`]: a kiosk's attendance CSV turned into `attended` statements.
//! - [`HubEndpoint`]: the HTTP endpoint.

pub mod accept;
pub mod attendance;
pub mod auth;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use xapi::XapiVersion;

use crate::accept::{Accepter, Checker, Refusal};
use crate::auth::{Credentials, HubCredential};

/// What a hub node's endpoint needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub hub: String,
    pub listen: SocketAddr,
    pub credentials: Vec<HubCredential>,
    pub limits: xapi::limits::Limits,
    /// How long a write waits for the hub's own stream to acknowledge it.
    pub publish_timeout: Duration,
}

/// The statement stream at the hub, created if missing (kept `keep`, 0: for ever).
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    hub: &str,
    keep: Duration,
) -> anyhow::Result<()> {
    let config = bus::leaf::hub_stream_config(hub, keep);
    match js.get_stream(&config.name).await {
        Ok(_) => {
            js.update_stream(config)
                .await
                .map_err(|err| anyhow::anyhow!("updating the hub's stream: {err}"))?;
        }
        Err(_) => {
            js.create_stream(config)
                .await
                .map_err(|err| anyhow::anyhow!("creating the hub's stream: {err}"))?;
        }
    }
    Ok(())
}

struct AppState {
    accepter: Accepter,
    credentials: Credentials,
}

/// The HTTP endpoint of a hub node, bound and ready to run.
pub struct HubEndpoint {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl HubEndpoint {
    pub async fn build(client: async_nats::Client, config: HubConfig) -> anyhow::Result<Self> {
        bus::leaf::check_hub_id(&config.hub).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !config.credentials.is_empty(),
            "a hub node needs at least one credential ([[hub.credentials]])"
        );
        let validator = Arc::new(xapi::Validator::new()?);
        let checker = Checker::new(&config.hub, validator, config.limits.clone());
        let accepter = Accepter::new(
            async_nats::jetstream::new(client),
            checker,
            config.publish_timeout,
        );
        let state = Arc::new(AppState {
            accepter,
            credentials: Credentials::new(&config.credentials),
        });
        // The body may be a little larger than the message it becomes is allowed to be
        // (whitespace); the message's own limit is checked after.
        let body_limit = config.limits.hub_message_bytes.saturating_mul(2);
        let router = Router::new()
            .route("/xapi/about", get(about))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .route(
                "/xapi/statements",
                axum::routing::post(post_statements)
                    .put(put_statement)
                    .fallback(reads_elsewhere),
            )
            .fallback(not_here)
            .layer(DefaultBodyLimit::max(body_limit))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|err| anyhow::anyhow!("binding {}: {err}", config.listen))?;
        Ok(HubEndpoint { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await?;
        Ok(())
    }
}

/// The error body, as the central gateway writes it.
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<u64>,
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    let body = ErrorBody {
        code,
        message,
        statement: None,
        path: None,
        rule: None,
        limit: None,
        max: None,
    };
    (status, axum::Json(body)).into_response()
}

fn refused(refusal: Refusal) -> Response {
    let message = refusal.to_string();
    match refusal {
        Refusal::Invalid(violation) => {
            let body = ErrorBody {
                code: "invalid_statement",
                message,
                statement: violation.statement,
                path: Some(violation.violation.path),
                rule: Some(violation.violation.rule),
                limit: None,
                max: None,
            };
            (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
        }
        Refusal::Limit(exceeded) => {
            let body = ErrorBody {
                code: exceeded.limit.code(),
                message,
                statement: exceeded.statement,
                path: None,
                rule: None,
                limit: Some(exceeded.limit.key()),
                max: Some(exceeded.max),
            };
            let status = StatusCode::from_u16(exceeded.limit.http_status())
                .unwrap_or(StatusCode::PAYLOAD_TOO_LARGE);
            (status, axum::Json(body)).into_response()
        }
        Refusal::Malformed(_) => error(StatusCode::BAD_REQUEST, "bad_request", message),
        Refusal::Unavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
    }
}

/// Who calls, and in which xAPI version; or the answer that refuses the request.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<(String, XapiVersion), Response> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let Some(key) = state.credentials.check(authorization).await else {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a hub credential is required (HTTP Basic)".into(),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Leerspoor hub\""),
        );
        return Err(response);
    };
    let Some(version_header) = headers
        .get("X-Experience-API-Version")
        .and_then(|value| value.to_str().ok())
    else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "version_required",
            "the X-Experience-API-Version header is required (1.0.3 or 2.0.0)".into(),
        ));
    };
    let Some(version) = XapiVersion::from_header(version_header) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "version_unsupported",
            format!(
                "X-Experience-API-Version {:?} is not 1.0.x or 2.0.x",
                xapi::limits::truncate_text(version_header, 64)
            ),
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if !content_type.trim_start().starts_with("application/json") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "content_type",
            format!(
                "a hub node takes statements as application/json (not {:?}); attachments go to \
                 the central LRS",
                xapi::limits::truncate_text(content_type, 64)
            ),
        ));
    }
    Ok((key, version))
}

/// A write from an authenticated caller, accepted: its ids; or the answer that refuses it.
async fn write(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    put_id: Option<&str>,
) -> Result<Vec<String>, Response> {
    let (key, version) = caller(state, headers).await?;
    state
        .accepter
        .accept(&key, body, version, put_id)
        .await
        .map_err(refused)
}

async fn post_statements(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match write(&state, &headers, &body, None).await {
        Ok(ids) => (StatusCode::OK, axum::Json(ids)).into_response(),
        Err(response) => response,
    }
}

#[derive(Deserialize)]
struct PutQuery {
    #[serde(rename = "statementId")]
    statement_id: Option<String>,
}

async fn put_statement(
    State(state): State<Arc<AppState>>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A missing statementId is refused after the caller is known, like any other bad request.
    let put_id = query.statement_id.unwrap_or_default();
    match write(&state, &headers, &body, Some(&put_id)).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(response) => response,
    }
}

async fn about(State(state): State<Arc<AppState>>) -> Response {
    let body = serde_json::json!({
        "version": ["2.0.0", "1.0.3"],
        "extensions": {
            HUB_NODE_EXTENSION: {
                "hub": state.accepter.checker.hub(),
                "accepts": ["POST /xapi/statements", "PUT /xapi/statements"],
            }
        }
    });
    let mut response = axum::Json(body).into_response();
    response.headers_mut().insert(
        "X-Experience-API-Version",
        HeaderValue::from_static("2.0.0"),
    );
    response
}

async fn live() -> Response {
    axum::Json(serde_json::json!({"status": "live"})).into_response()
}

/// Ready when the hub's own stream answers: then writes are kept. Says how many messages and
/// bytes the hub keeps (sourced by the central site or not: see `hubs list` there).
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.accepter.stream_state().await {
        Ok((messages, bytes)) => axum::Json(serde_json::json!({
            "status": "ready",
            "hub": state.accepter.checker.hub(),
            "kept_messages": messages,
            "kept_bytes": bytes,
        }))
        .into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// The `about` extension that says this is a hub node, and whose.
pub const HUB_NODE_EXTENSION: &str = "https://w3id.org/xapi/llo/extensions/hub-node";

/// Statement reads (and anything but POST and PUT) are the central site's.
async fn reads_elsewhere() -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "not_at_a_hub_node",
        "a hub node takes statements (POST, PUT); read them from the central LRS".into(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, PUT"));
    response
}

async fn not_here() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_at_a_hub_node",
        "a hub node takes statement writes only (POST or PUT /xapi/statements), \
         GET /xapi/about and /health/*; read from the central LRS"
            .into(),
    )
}
