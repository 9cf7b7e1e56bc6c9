//! Starting Leerspoor exactly as production does, on random ports, in temp dirs.

use std::time::Duration;

use bus::access::Scope;
use leerspoor::config::{Config, GatewaySection, NatsConfig, StoreSection};
use leerspoor::node::{Node, Parts};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use testkit::Nats;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const KEY: &str = "tool";
pub const SECRET: &str = "s3cret-for-tests";

/// A running node and the way to stop it.
pub struct Running {
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub http_addr: Option<std::net::SocketAddr>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("node task")
            .expect("node stops cleanly");
    }
}

pub fn config(nats_url: &str, data_dir: &std::path::Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        nats: NatsConfig {
            url: Some(nats_url.to_owned()),
            ..NatsConfig::default()
        },
        gateway: GatewaySection {
            listen: "127.0.0.1:0".parse().expect("addr"),
            write_timeout_secs: 5,
            ..GatewaySection::default()
        },
        limits: xapi::limits::Limits {
            body_bytes: 8 * 1024 * 1024,
            ..xapi::limits::Limits::default()
        },
        replicas: Default::default(),
        ops: Default::default(),
        memory: Default::default(),
        programme: Default::default(),
        hubs: Default::default(),
        hub: Default::default(),
        // A killed store's messages come back quickly (tests wait at most 20 s).
        store: StoreSection {
            ack_wait_secs: 2,
            bootstrap: Some(test_credential()),
            ..StoreSection::default()
        },
    }
}

/// Runs the `leerspoor` binary as an operator would, `stdin` (plus a newline) on its input.
pub async fn run_leerspoor(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leerspoor"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn leerspoor");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        tokio::io::AsyncWriteExt::write_all(&mut input, format!("{text}\n").as_bytes())
            .await
            .expect("stdin");
    }
    drop(input);
    child.wait_with_output().await.expect("run leerspoor")
}

/// [`run_leerspoor`] that must succeed; its standard output.
pub async fn leerspoor_ok(args: &[&str], stdin: Option<&str>) -> String {
    let output = run_leerspoor(args, stdin).await;
    assert!(
        output.status.success(),
        "leerspoor {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Creates the test credential with `leerspoor credentials create` (as an operator would),
/// once the store (another process) answers.
pub async fn grant_via_cli(nats_url: &str) {
    testkit::wait_until("the store takes the test credential", WAIT, || async {
        let args = [
            "credentials",
            "create",
            "--nats-url",
            nats_url,
            "--key",
            KEY,
            "--name",
            "test tool",
            "--scopes",
            "all,summaries/read,admin",
            "--secret-stdin",
        ];
        let output = run_leerspoor(&args, Some(SECRET)).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains(SECRET), "a given secret is never echoed");
        (output.status.success() && stdout.contains(&format!("key: {KEY}"))).then_some(())
    })
    .await;
}

/// The credential every test request uses: every scope. Hashed once per test binary.
pub fn test_credential() -> bus::access::CredentialRecord {
    static RECORD: std::sync::OnceLock<bus::access::CredentialRecord> = std::sync::OnceLock::new();
    RECORD
        .get_or_init(|| {
            leerspoor::access::record(
                KEY,
                "test tool",
                SECRET,
                bus::access::Scope::EVERY.to_vec(),
                None,
                None,
            )
            .expect("hash")
        })
        .clone()
}

pub async fn start_node(config: Config, parts: Parts) -> Running {
    let node = Node::start(config, parts).await.expect("node starts");
    let http_addr = node.http_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(node.run(shutdown.clone()));
    Running {
        shutdown,
        handle,
        http_addr,
    }
}

/// Waits until the gateway at `base` takes the test credential (see
/// [`TestApp::wait_for_credential`]).
pub async fn wait_for_credential_at(base: &str) {
    leerspoor::bench::wait_for_credential(base, KEY, SECRET)
        .await
        .expect("the gateway takes the test credential");
}

/// nats-server + store + gateway in this process, like `leerspoor serve`.
pub struct TestApp {
    pub nats: Nats,
    /// Held so the sled folder outlives the node.
    _data: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
    /// The node, when this app started it.
    node: Option<Running>,
}

impl TestApp {
    pub async fn start() -> TestApp {
        TestApp::start_with(Nats::start().await, |_| {}).await
    }

    /// On this NATS, with the test configuration changed by `configure`.
    pub async fn start_with(nats: Nats, configure: impl FnOnce(&mut Config)) -> TestApp {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = config(&nats.url(), data.path());
        configure(&mut config);
        let bootstrap = config.store.bootstrap.is_some();
        let node = start_node(config, Parts::All).await;
        let base = format!("http://{}", node.http_addr.expect("gateway runs"));
        let app = TestApp {
            nats,
            _data: data,
            base,
            http: reqwest::Client::new(),
            node: Some(node),
        };
        if bootstrap {
            app.wait_for_credential().await;
        }
        app
    }

    /// Waits until the gateway takes the test credential: the store makes the demo credential
    /// through `LRS_IN`, and the gateway reloads once it is applied.
    pub async fn wait_for_credential(&self) {
        wait_for_credential_at(&self.base).await;
    }

    /// A client for a Leerspoor started some other way (separate parts), over its NATS and URL.
    pub fn attach(nats: Nats, base: String) -> TestApp {
        TestApp {
            nats,
            _data: tempfile::tempdir().expect("temp dir"),
            base,
            http: reqwest::Client::new(),
            node: None,
        }
    }

    /// The node's data folder.
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Whether the node is still running (it has not stopped by itself).
    pub fn is_running(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|node| !node.handle.is_finished())
    }

    /// Stops the node and waits for it to flush.
    pub async fn stop(self) {
        if let Some(node) = self.node {
            node.stop().await;
        }
    }

    /// Stops the node and hands over its data folder, to look into sled afterwards.
    pub async fn stop_keeping_data(self) -> tempfile::TempDir {
        if let Some(node) = self.node {
            node.stop().await;
        }
        self._data
    }

    /// Creates a credential through the store, as `leerspoor credentials create` does.
    pub async fn grant(&self, key: &str, scopes: &[Scope], per_minute: Option<u32>) -> String {
        self.grant_record(
            leerspoor::access::record(key, key, &secret_of(key), scopes.to_vec(), None, per_minute)
                .expect("hash"),
        )
        .await
    }

    pub async fn grant_record(&self, record: bus::access::CredentialRecord) -> String {
        let key = record.key.clone();
        leerspoor::access::create(&self.nats_client().await, record, "cli:test")
            .await
            .expect("credential created");
        key
    }

    /// The audit log, as the test credential (it has `admin`) reads it.
    pub async fn audit_log(&self) -> Value {
        let response = self
            .request_with(KEY, Method::GET, "/admin/audit")
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("json")
    }

    /// A request as another credential (made by [`TestApp::grant`]), speaking xAPI 2.0.0.
    pub fn request_with(&self, key: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(key, Some(secret_of(key)))
            .header("X-Experience-API-Version", "2.0.0")
    }

    /// A request with credentials, speaking xAPI 1.0.3.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_as("1.0.3", method, path)
    }

    /// A request with credentials, speaking the given xAPI version.
    pub fn request_as(&self, version: &str, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(KEY, Some(SECRET))
            .header("X-Experience-API-Version", version)
    }

    pub async fn post_statements(&self, body: &Value) -> Response {
        self.request(Method::POST, "/xapi/statements")
            .json(body)
            .send()
            .await
            .expect("http")
    }

    pub async fn put_statement(&self, id: &str, body: &Value) -> Response {
        self.request(Method::PUT, &format!("/xapi/statements?statementId={id}"))
            .json(body)
            .send()
            .await
            .expect("http")
    }

    pub async fn get(&self, path_and_query: &str) -> Response {
        self.request(Method::GET, path_and_query)
            .send()
            .await
            .expect("http")
    }

    /// GET statements with the given query pairs, following every `more` link.
    pub async fn get_all(&self, query: &[(&str, &str)]) -> Vec<Value> {
        get_all_at(&self.base, query).await
    }

    /// A NATS client on the same server (for hubs publishing directly).
    pub async fn nats_client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url()).await.expect("nats")
    }
}

/// The secret [`TestApp::grant`] gives a key.
pub fn secret_of(key: &str) -> String {
    if key == KEY {
        return SECRET.to_owned();
    }
    format!("{key}-secret-for-tests")
}

pub fn statement(email: &str, verb: &str, activity: &str) -> Value {
    json!({
        "actor": {"objectType": "Agent", "name": email, "mbox": format!("mailto:{email}")},
        "verb": {"id": format!("http://adlnet.gov/expapi/verbs/{verb}"), "display": {"en-US": verb}},
        "object": {"objectType": "Activity", "id": activity,
            "definition": {"name": {"en-US": "a session"}}},
    })
}

/// A statement at an LLO hub (its hub extension set).
pub fn hub_statement(email: &str, hub: &str) -> Value {
    let mut statement = statement(email, "attended", "https://x.example/session");
    statement["context"] = json!({"extensions": {"https://w3id.org/xapi/llo/extensions/hub": hub}});
    statement
}

impl TestApp {
    /// A summary as the test credential reads it (`None` unless 200).
    pub async fn summary(&self, path: &str) -> Option<Value> {
        summary_at(&self.base, path).await
    }

    /// One hub's summary.
    pub async fn hub_summary(&self, hub: &str) -> Option<Value> {
        self.summary(&format!("/summaries/hubs/{hub}")).await
    }
}

/// GET statements of the Leerspoor at `base` with the given query pairs (xAPI 1.0.3, the test
/// credential), following every `more` link.
pub async fn get_all_at(base: &str, query: &[(&str, &str)]) -> Vec<Value> {
    let http = reqwest::Client::new();
    let encoded = serde_urlencoded::to_string(query).expect("query");
    let mut next = format!("/xapi/statements?{encoded}");
    let mut all = Vec::new();
    loop {
        let response = http
            .get(format!("{base}{next}"))
            .basic_auth(KEY, Some(SECRET))
            .header("X-Experience-API-Version", "1.0.3")
            .send()
            .await
            .expect("http");
        let status = response.status();
        if status != StatusCode::OK {
            // What the gateway said (a 503 names the store's deadline, a 429 the rate limit).
            let body = response.text().await.unwrap_or_default();
            panic!("GET {next}: {status}: {body}");
        }
        let page: Value = response.json().await.expect("json");
        all.extend(
            page["statements"]
                .as_array()
                .expect("statements")
                .iter()
                .cloned(),
        );
        match page["more"].as_str() {
            Some(more) if !more.is_empty() => next = more.to_owned(),
            _ => return all,
        }
    }
}

/// A summary (or list) of the Leerspoor at `base`, with the test credential; none until it is
/// there.
pub async fn summary_at(base: &str, path: &str) -> Option<Value> {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .ok()?;
    (response.status() == reqwest::StatusCode::OK).then_some(())?;
    response.json().await.ok()
}

pub fn with_id(mut statement: Value, id: &str) -> Value {
    statement["id"] = json!(id);
    statement
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub fn ids(statements: &[Value]) -> Vec<String> {
    statements
        .iter()
        .map(|statement| statement["id"].as_str().expect("id").to_owned())
        .collect()
}

pub const WAIT: Duration = Duration::from_secs(20);
