//! What an operator and a load balancer read, without an xAPI credential: `/metrics`
//! (Prometheus text format), `/health/live` and `/health/ready`. The gateway serves them on
//! its own listener, and every process can serve them on a listener of their own
//! (`[ops] listen`), so a store or projector running alone is scraped too.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bus::health::ReadyPolicy;
use bus::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// The process's metrics recorder, installed on first use: every service of the process
/// records into it, and one `/metrics` page shows them all.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &m::SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed; /metrics shows only its own"
                );
            }
            handle
        })
        .clone()
}

/// What the ops routes need.
#[derive(Clone)]
pub struct Ops {
    handle: PrometheusHandle,
    client: async_nats::Client,
    policy: ReadyPolicy,
}

impl Ops {
    pub fn new(client: async_nats::Client, policy: ReadyPolicy) -> Self {
        Ops {
            handle: prometheus(),
            client,
            policy,
        }
    }

    /// The ops routes, without authentication.
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics_page))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(self)
    }

    /// Serves the ops routes alone on `listener` until `shutdown` (a store or projector
    /// process, or a separate scrape address).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("ops listener")
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn metrics_page(State(ops): State<Ops>) -> Response {
    // Gauges that live in NATS (consumers, streams, the connection) are read at scrape time.
    bus::health::check(&ops.client, &ops.policy, CHECK_TIMEOUT)
        .await
        .record();
    ops.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.handle.render(),
    )
        .into_response()
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"live": true}))
}

/// 200 when NATS is connected, the streams are there and this process's consumers are caught
/// up within the bound; 503 with the reasons otherwise.
async fn ready(State(ops): State<Ops>) -> Response {
    let health = bus::health::check(&ops.client, &ops.policy, CHECK_TIMEOUT).await;
    health.record();
    let status = if health.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health)).into_response()
}

/// Counts every HTTP request by its matched route, method and status, and times it.
pub async fn record_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(m::HTTP_REQUESTS, "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(m::HTTP_SECONDS, "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}
