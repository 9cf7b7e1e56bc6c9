//! The gateway: Leerspoor's HTTP front door.
//!
//! Stateless: it validates what it can at once (so a bad statement is a 400 with its index,
//! path and rule), publishes writes to JetStream as one message per request, waits for the
//! store's verdict (read-your-writes, conflicts as 409), and answers reads by asking the
//! store over NATS request/reply. Any number of gateways can run side by side.
//!
//! # Layout
//! - [`attachments`]: multipart attachment parts, hashes, signatures, the attachment bucket.
//! - [`body`]: request bodies: limits, JSON or multipart statements.
//! - [`multipart`]: `multipart/mixed` bodies.
//! - [`alternate`]: xAPI 1.0.3's alternate request syntax, rebuilt into plain requests.
//! - [`auth`]: Basic auth against the store's credentials, scopes per route, rate limits.
//! - [`admin`]: the admin routes: audit log, credentials listing, export and erasure.
//! - [`version`]: the `X-Experience-API-Version` rules on every request and response.
//! - [`statements`]: `/xapi/statements` PUT, POST, GET, HEAD.
//! - [`params`]: strict parsing of the GET parameters.
//! - [`documents`]: the State, Activity Profile and Agent Profile resources, and the
//!   Activities and Agents resources.
//! - [`summaries`]: the summary API (JSON and CSV), answered by the projector.
//! - [`targets`]: the admin routes of forwarding targets and webhooks.
//! - [`retries`]: a write whose answer was lost, retried, is stored once.
//! - [`serve`]: the HTTP server loop: header deadlines, graceful shutdown.
//! - [`watermark`]: waiting for the store's applied watermark.
//! - [`error`]: the JSON error shape and status mapping.
//! - [`ops`]: `/metrics`, `/health/live`, `/health/ready`, without credentials.

pub mod admin;
pub mod alternate;
pub mod attachments;
pub mod auth;
pub mod body;
pub mod bundle;
pub mod dashboard;
pub mod documents;
pub mod error;
pub mod hubs;
pub mod labels;
pub mod multipart;
pub mod ops;
pub mod params;
pub mod retries;
pub mod serve;
pub mod statements;
pub mod summaries;
pub mod targets;
pub mod version;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use xapi::limits::Limits;
use xapi::Validator;

use bus::watermark::Watermarks;
use error::ApiError;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Requests per minute of a credential that sets no limit of its own.
    pub default_requests_per_minute: u32,
    /// The homePage of the authority accounts of HTTP credentials.
    pub authority_home_page: String,
    /// Every bound on input (README "Limits").
    pub limits: Limits,
    /// How long a write waits for the store's verdict before answering 503.
    pub write_timeout: Duration,
    /// The store and projector replicas, and how many copies NATS keeps.
    pub topology: bus::subjects::Topology,
    /// The xAPI versions this deployment speaks.
    pub versions: version::Versions,
    /// The programme's company target and the skill labels file's labels.
    pub programme: Programme,
}

/// What the programme summary and the dashboard need beyond the projector's figures.
#[derive(Debug, Clone)]
pub struct Programme {
    /// Companies the programme means to reach (the fieldlabs' target).
    pub company_target: u64,
    pub skill_labels: labels::SkillLabels,
}

impl Default for Programme {
    fn default() -> Self {
        Programme {
            company_target: 6000,
            skill_labels: labels::SkillLabels::default(),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            default_requests_per_minute: 6000,
            authority_home_page: xapi::llo::CLIENTS_HOME_PAGE.into(),
            limits: Limits::default(),
            write_timeout: Duration::from_secs(10),
            topology: bus::subjects::Topology::default(),
            versions: version::Versions::all(),
            programme: Programme::default(),
        }
    }
}

/// What every handler shares, behind one `Arc`: axum clones the state for each middleware and
/// each extractor of every request, and a clone of the fields themselves (NATS clients, the
/// JetStream contexts, the bundler's queue) took ~6% of `serve`'s CPU answering statement
/// reads (BENCHMARKS.md, the thirty-ninth round).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
pub struct Shared {
    pub credentials: auth::Credentials,
    pub authority_home_page: Arc<str>,
    pub validator: Arc<Validator>,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub watermarks: Watermarks,
    /// Small statement writes, bundled into shared `LRS_IN` messages.
    pub bundler: bundle::Bundler,
    /// Attachment bodies, in a NATS Object Store bucket.
    pub attachments: attachments::AttachmentStore,
    pub limits: Arc<Limits>,
    pub write_timeout: Duration,
    /// Writes whose fate was not confirmed to their client, remembered for their retry.
    pub unconfirmed: retries::Unconfirmed,
    pub versions: version::Versions,
    /// Forwarding targets and webhooks, opened at the first admin request about them.
    pub targets: Arc<tokio::sync::OnceCell<bus::targets::Targets>>,
    pub stream_replicas: usize,
    pub programme: Programme,
    /// The store of this process, asked first for reads (`leerspoor serve`); `None` when the
    /// gateway runs alone and every read goes over NATS.
    pub store_here: Option<Arc<dyn bus::request::Here>>,
    /// The projector of this process, asked first for summaries.
    pub projector_here: Option<Arc<dyn bus::request::Here>>,
}

/// How long a read waits for the store.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Shared {
    /// A read from the store (statements, documents, activities and agents), answered from a
    /// state that includes this gateway's writes: by the store of this process when there is
    /// one and it has applied them, else by the store's queue group over NATS.
    pub(crate) async fn ask_store(
        &self,
        subject: &'static str,
        payload: Vec<u8>,
    ) -> Result<bytes::Bytes, error::ApiError> {
        let to = bus::request::Ask::store(subject, READ_TIMEOUT)
            .retrying_every(bus::request::READ_ATTEMPT)
            .after(self.watermarks.current());
        let here = self.store_here.as_deref();
        Ok(bus::request::ask_here_first(here, &self.client, to, payload.into()).await?)
    }
}

pub struct Gateway {
    listener: TcpListener,
    state: Shared,
    ops: Option<ops::Ops>,
}

impl Gateway {
    /// Binds the listener and prepares the state; `run` serves. Tests build it on port 0
    /// exactly as production does.
    pub async fn build(client: async_nats::Client, config: GatewayConfig) -> anyhow::Result<Self> {
        let validator = Arc::new(Validator::new().context("compiling xAPI schemas")?);
        let js = jetstream::new(client.clone());
        bus::subjects::ensure_streams(&js, &config.topology).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding http listener on {}", config.listen))?;
        let attachments =
            attachments::AttachmentStore::open(&js, config.topology.stream_replicas).await?;
        // Without a store yet, the first request loads them.
        let watermarks = Watermarks::new(client.clone());
        let state = Shared {
            bundler: bundle::Bundler::start(js.clone(), watermarks.clone()),
            attachments,
            credentials: auth::Credentials::new(client.clone(), config.default_requests_per_minute),
            authority_home_page: config.authority_home_page.into(),
            validator,
            watermarks,
            client,
            js,
            limits: Arc::new(config.limits),
            write_timeout: config.write_timeout,
            unconfirmed: retries::Unconfirmed::default(),
            versions: config.versions,
            targets: Arc::default(),
            stream_replicas: config.topology.stream_replicas,
            programme: config.programme.clone(),
            store_here: None,
            projector_here: None,
        };
        Ok(Gateway {
            listener,
            state,
            ops: None,
        })
    }

    /// Serves `/metrics` and `/health/*` on the gateway's listener too, without credentials.
    pub fn with_ops(mut self, ops: ops::Ops) -> Self {
        self.ops = Some(ops);
        self
    }

    /// Asks the store of this process for statements and documents before the store's queue
    /// group on NATS ([`bus::request::ask_here_first`]).
    pub fn with_store_here(mut self, store: Arc<dyn bus::request::Here>) -> Self {
        self.state.store_here = Some(store);
        self
    }

    /// Asks the projector of this process for summaries before the projector's queue group.
    pub fn with_projector_here(mut self, projector: Arc<dyn bus::request::Here>) -> Self {
        self.state.projector_here = Some(projector);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown`; in-flight requests finish first.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = AppState(Arc::new(self.state));
        let follow = state.watermarks.clone().follow(shutdown.clone());
        let limits = state.limits.clone();
        let credentials = state.credentials.clone();
        if let Err(err) = credentials.load(0).await {
            tracing::warn!(error = %err, "credentials not loaded yet; the first request retries");
        }
        let follow_credentials = credentials.follow(shutdown.clone());
        // The rewrite wraps the router instead of being one of its layers: a router's own
        // layers run after routing, and the rewrite changes the method and the query.
        let mut routes = router(state.clone());
        if let Some(ops) = self.ops {
            routes = ops.router().merge(routes);
        }
        let app = tower::Layer::layer(
            &axum::middleware::from_fn_with_state(state, alternate::rewrite),
            routes,
        );
        // Browser-based tools call from other origins; preflights are answered here, before
        // authentication (browsers send them without credentials).
        let app = tower::Layer::layer(&cors(), app);
        let header_read_timeout = Duration::from_secs(limits.header_read_timeout_secs.max(1));
        let serve = serve::serve(self.listener, app, header_read_timeout, shutdown.clone());
        let (follow_result, credentials_result, serve_result) =
            tokio::join!(follow, follow_credentials, async {
                let result = serve.await.context("http server");
                shutdown.cancel();
                result
            });
        follow_result
            .map_err(anyhow::Error::from)
            .and(credentials_result)
            .and(serve_result)
    }
}

/// CORS for browser-based xAPI tools: any origin, the xAPI methods and headers, and the
/// response headers a tool needs to read.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::IF_NONE_MATCH,
            HeaderName::from_static("x-experience-api-version"),
        ])
        .expose_headers([
            header::ETAG,
            header::LAST_MODIFIED,
            HeaderName::from_static("x-experience-api-version"),
            HeaderName::from_static("x-experience-api-consistent-through"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/xapi/about", get(about))
        .route(
            "/xapi/statements",
            get(statements::get)
                .put(statements::put)
                .post(statements::post)
                .fallback(method_not_allowed),
        )
        .route(
            "/xapi/activities/state",
            documents::routes(&documents::STATE),
        )
        .route(
            "/xapi/activities/profile",
            documents::routes(&documents::ACTIVITY_PROFILE),
        )
        .route(
            "/xapi/agents/profile",
            documents::routes(&documents::AGENT_PROFILE),
        )
        .route(
            "/xapi/activities",
            get(documents::activities).fallback(method_not_allowed),
        )
        .route(
            "/xapi/agents",
            get(documents::agents).fallback(method_not_allowed),
        )
        .route(
            "/summaries/workers",
            get(summaries::workers).fallback(method_not_allowed),
        )
        .route(
            "/summaries/hubs",
            get(summaries::hubs).fallback(method_not_allowed),
        )
        .route(
            "/summaries/hubs/{hub}",
            get(summaries::hub).fallback(method_not_allowed),
        )
        .route(
            "/dashboard",
            get(dashboard::overview).fallback(method_not_allowed),
        )
        .route(
            "/dashboard/hubs/{hub}",
            get(dashboard::hub).fallback(method_not_allowed),
        )
        .route(
            "/dashboard/companies/{company}",
            get(dashboard::company).fallback(method_not_allowed),
        )
        .route(
            "/dashboard/workers",
            get(dashboard::worker).fallback(method_not_allowed),
        )
        .route(
            "/dashboard/search",
            get(dashboard::search).fallback(method_not_allowed),
        )
        .route(
            "/dashboard/assets/{file}",
            get(dashboard::asset).fallback(method_not_allowed),
        )
        .route(
            "/summaries/programme",
            get(summaries::programme).fallback(method_not_allowed),
        )
        .route(
            "/summaries/companies",
            get(summaries::companies).fallback(method_not_allowed),
        )
        .route(
            "/summaries/companies/{company}",
            get(summaries::company).fallback(method_not_allowed),
        )
        .route(
            "/admin/audit",
            get(admin::audit).fallback(method_not_allowed),
        )
        .route(
            "/admin/credentials",
            get(admin::credentials).fallback(method_not_allowed),
        )
        .route(
            "/admin/exports",
            get(admin::export).fallback(method_not_allowed),
        )
        .route(
            "/admin/exports/statements",
            get(admin::export_statements).fallback(method_not_allowed),
        )
        .route(
            "/admin/webhooks",
            get(targets::list_webhooks)
                .post(targets::add_webhook)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/webhooks/{name}",
            axum::routing::delete(targets::remove_webhook).fallback(method_not_allowed),
        )
        .route(
            "/admin/webhooks/{name}/dead-letters",
            get(targets::webhook_dead_letters).fallback(method_not_allowed),
        )
        .route(
            "/admin/webhooks/{name}/replay",
            axum::routing::post(targets::replay_webhook).fallback(method_not_allowed),
        )
        .route(
            "/admin/forwards",
            get(targets::list_forwards)
                .post(targets::add_forward)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/forwards/{name}",
            axum::routing::delete(targets::remove_forward).fallback(method_not_allowed),
        )
        .route(
            "/admin/forwards/{name}/dead-letters",
            get(targets::forward_dead_letters).fallback(method_not_allowed),
        )
        .route(
            "/admin/forwards/{name}/replay",
            axum::routing::post(targets::replay_forward).fallback(method_not_allowed),
        )
        .route("/admin/hubs", get(hubs::list).fallback(method_not_allowed))
        .route(
            "/admin/hubs/{id}",
            axum::routing::put(hubs::set)
                .delete(hubs::delete)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/erasures",
            axum::routing::post(admin::erase).fallback(method_not_allowed),
        )
        .fallback(not_found)
        // Inside the version rules, so every answer (401 and 403 too) carries the header.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.versions.clone(),
            version::negotiate,
        ))
        // Outermost: every answer counted, 401s and version errors too.
        .layer(axum::middleware::from_fn(ops::record_requests))
        .with_state(state)
}

async fn about(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Json<serde_json::Value> {
    Json(json!({
        "version": state.versions.names(),
        "extensions": {
            "https://w3id.org/xapi/llo/extensions/lrs": {"name": "Leerspoor", "version": env!("CARGO_PKG_VERSION")}
        }
    }))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no resource at {}", uri.path()))
}

pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
