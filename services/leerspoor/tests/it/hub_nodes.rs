//! Hubs that keep working offline: a central `serve` (its own nats-server, taking leaf
//! connections) and a hub node (its own nats-server, a leaf node of the central one) on
//! loopback ports, the hub's link running through a [`testkit::Link`] the tests cut.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use leerspoor::config::Config;
use leerspoor::hubnode::HubNode;
use leerspoor::node::{Node, Parts};
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, Link};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{config, get_all_at, leerspoor_ok, summary_at, wait_for_credential_at};
use crate::summaries::summaries_match;

const HUB: &str = "veghel";
const WAIT: Duration = Duration::from_secs(60);
const ATTENDED: &str = "http://adlnet.gov/expapi/verbs/attended";

/// The central site: `serve` with its own nats-server and a leaf port, in a data folder that
/// outlives it (so it can be stopped and started again on the same ports).
struct Central {
    data: tempfile::TempDir,
    nats_port: u16,
    leaf: Option<SocketAddr>,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    base: String,
}

impl Central {
    async fn start() -> Central {
        let mut central = Central {
            data: tempfile::tempdir().expect("temp dir"),
            nats_port: 0,
            leaf: None,
            running: None,
            base: String::new(),
        };
        central.up().await;
        central
    }

    fn config(&self) -> Config {
        let mut config = config("unused", self.data.path());
        config.nats.url = None;
        config.nats.port = self.nats_port;
        config.hubs.leaf_listen = Some(
            self.leaf
                .unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")),
        );
        config
    }

    async fn up(&mut self) {
        let node = Node::start(self.config(), Parts::All)
            .await
            .expect("central starts");
        let url = node.nats_url().to_owned();
        self.nats_port = url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("port");
        self.leaf = node.leaf_addr();
        self.base = format!("http://{}", node.http_addr().expect("gateway"));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(node.run(shutdown.clone()));
        self.running = Some((shutdown, handle));
        wait_for_credential_at(&self.base).await;
    }

    async fn down(&mut self) {
        if let Some((shutdown, handle)) = self.running.take() {
            shutdown.cancel();
            handle
                .await
                .expect("central task")
                .expect("central stops cleanly");
        }
    }

    /// `leerspoor hubs ARGS…` against this central site, as its operator runs it.
    async fn hubs(&self, args: &[&str]) -> String {
        let data = self.data.path().display().to_string();
        let port = self.nats_port.to_string();
        let mut all = vec!["hubs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", &data, "--nats-port", &port]);
        leerspoor_ok(&all, None).await
    }

    /// The last sequence of the central `LRS_IN`.
    async fn in_sequence(&self) -> u64 {
        let js = async_nats::jetstream::new(self.nats().await);
        let mut stream = js
            .get_stream(bus::subjects::STREAM_IN)
            .await
            .expect("LRS_IN");
        stream.info().await.expect("info").state.last_sequence
    }

    /// A NATS client of the central site (the services' user `serve` made).
    async fn nats(&self) -> async_nats::Client {
        let (user, password) =
            leerspoor::node::local_credentials(self.data.path()).expect("serve's password");
        async_nats::ConnectOptions::new()
            .user_and_password(user, password)
            .custom_inbox_prefix("_LRS_INBOX")
            .connect(format!("nats://127.0.0.1:{}", self.nats_port))
            .await
            .expect("central nats")
    }
}

/// A hub node, through a link to the central leaf port.
struct HubSite {
    data: tempfile::TempDir,
    central_url: String,
    running: Option<(CancellationToken, JoinHandle<anyhow::Result<()>>)>,
    base: String,
    client: Option<async_nats::Client>,
}

impl HubSite {
    async fn start(central_url: String) -> HubSite {
        let mut site = HubSite {
            data: tempfile::tempdir().expect("temp dir"),
            central_url,
            running: None,
            base: String::new(),
            client: None,
        };
        site.up().await;
        site
    }

    async fn up(&mut self) {
        let mut config = Config::load(None).expect("defaults");
        config.data_dir = self.data.path().to_owned();
        config.hub.id = Some(HUB.to_owned());
        config.hub.central_nats = Some(self.central_url.clone());
        config.hub.listen = "127.0.0.1:0".parse().expect("addr");
        let node = HubNode::start(&config).await.expect("hub node starts");
        self.base = format!("http://{}", node.http_addr());
        self.client = Some(node.nats_client());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(node.run(shutdown.clone()));
        self.running = Some((shutdown, handle));
    }

    async fn down(&mut self) {
        if let Some((shutdown, handle)) = self.running.take() {
            shutdown.cancel();
            handle
                .await
                .expect("hub task")
                .expect("hub node stops cleanly");
        }
    }

    /// POSTs statements as the hub's tools do (the demo credential); the answer.
    async fn post(&self, body: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/xapi/statements", self.base))
            .basic_auth("leerspoor", Some("leerspoor"))
            .header("X-Experience-API-Version", "2.0.0")
            .json(body)
            .send()
            .await
            .expect("hub http")
    }

    /// Writes `statements` in batches of `batch`, one request at a time: every write must be
    /// answered 200 with its ids. The ids, in the order the hub accepted them.
    async fn write(&self, statements: &[Value], batch: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in statements.chunks(batch) {
            let response = self.post(&json!(chunk)).await;
            assert_eq!(response.status(), StatusCode::OK, "a write at the hub");
            let got: Vec<String> = response.json().await.expect("ids");
            assert_eq!(got.len(), chunk.len());
            ids.extend(got);
        }
        ids
    }
}

/// Attendance number `n` at the hub: 40 workers of 4 companies, `n` minutes long.
fn attendance(n: usize) -> Value {
    json!({
        "actor": {"mbox": format!("mailto:w{}@example.org", n % 40)},
        "verb": {"id": ATTENDED},
        "object": {"id": format!("https://veghel.example/sessions/{}", n % 25)},
        "result": {"duration": format!("PT{}M", 1 + n % 90)},
        "timestamp": format!("2026-0{}-1{}T09:00:00Z", 1 + n % 6, n % 10),
        "context": {"extensions": {
            "https://w3id.org/xapi/llo/extensions/hub": HUB,
            "https://w3id.org/xapi/llo/extensions/company": format!("KVK-{}", n % 4),
        }},
    })
}

/// Makes the central site source from the hub (`leerspoor hubs add`); the hub's leaf URL
/// through `link`.
async fn add_hub(central: &Central, link: &Link) -> String {
    let address = link.addr().to_string();
    let said = central
        .hubs(&["add", HUB, "--leaf-address", &address])
        .await;
    assert!(
        said.contains("now sources its stream LRS_HUB_veghel"),
        "{said}"
    );
    let words: Vec<&str> = said.split_whitespace().collect();
    words
        .windows(2)
        .find(|pair| pair[0] == "--central-nats")
        .map(|pair| pair[1].to_owned())
        .expect("the hub's leaf URL is printed")
}

/// Waits until the central site holds exactly `ids` of the hub, each once, and answers them in
/// the order given (oldest stored first).
async fn arrived_once_in_order(central: &Central, ids: &[String]) -> Vec<Value> {
    let stored = wait_until("every hub statement at the central site", WAIT, || async {
        let all = get_all_at(
            &central.base,
            &[("verb", ATTENDED), ("ascending", "true"), ("limit", "100")],
        )
        .await;
        (all.len() >= ids.len()).then_some(all)
    })
    .await;
    let got: Vec<String> = stored
        .iter()
        .map(|statement| statement["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(got.len(), ids.len(), "each statement once");
    assert_eq!(
        got.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no statement twice"
    );
    assert_eq!(got, ids, "in the hub's order");
    stored
}

#[tokio::test]
async fn a_hub_keeps_working_while_the_central_site_is_down_and_everything_arrives_once() {
    let mut central = Central::start().await;
    let link = Link::start(central.leaf.expect("leaf port")).await;
    let url = add_hub(&central, &link).await;
    let listed = central.hubs(&["list", "--json"]).await;
    assert!(listed.contains("\"veghel\""), "{listed}");
    let mut hub = HubSite::start(url.clone()).await;

    // The central site goes away; the hub's tools keep writing, and every write is a 200.
    central.down().await;
    let statements: Vec<Value> = (0..1000).map(attendance).collect();
    let ids = hub.write(&statements, 10).await;

    // It comes back: all 1,000 arrive, once, in the hub's order.
    central.up().await;
    let stored = arrived_once_in_order(&central, &ids).await;
    let seconds: u64 = (0..1000).map(|n| 60 * (1 + n as u64 % 90)).sum();
    let summary = wait_until("the hub's summary", WAIT, || async {
        let hub = summary_at(&central.base, &format!("/summaries/hubs/{HUB}")).await?;
        (hub["attendance"] == json!(1000)).then_some(hub)
    })
    .await;
    assert_eq!(summary["workers"], json!(40));
    assert_eq!(summary["companies"], json!(4));
    assert_eq!(summary["attended_seconds"], json!(seconds as f64));
    assert_eq!(summary["sessions"], json!(25));
    summaries_match(&central.base, stored, WAIT).await;
    let listed = central.hubs(&["list"]).await;
    let line = listed
        .lines()
        .find(|line| line.starts_with(HUB))
        .expect("the hub is listed");
    assert!(line.contains("sourced") && line.contains(" 0 "), "{listed}");

    // A hub cannot write another hub's statements: not at its node…
    let mut other = attendance(1);
    other["context"]["extensions"]["https://w3id.org/xapi/llo/extensions/hub"] = json!("uden");
    let response = hub.post(&other).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["rule"], "llo.hub_subject", "{body}");

    // …not by putting it into its own stream (the central store refuses it)…
    let refused_id = uuid::Uuid::new_v4().to_string();
    other["id"] = json!(refused_id);
    let js = async_nats::jetstream::new(hub.client.clone().expect("hub client"));
    js.publish(
        bus::subjects::hub_subject(HUB),
        serde_json::to_vec(&json!([other])).expect("json").into(),
    )
    .await
    .expect("publish at the hub")
    .await
    .expect("the hub's stream takes it");
    let central_js = async_nats::jetstream::new(central.nats().await);
    wait_until("the forged statement is rejected", WAIT, || async {
        let mut rejected = central_js
            .get_stream(bus::subjects::STREAM_REJECTED)
            .await
            .ok()?;
        (rejected.info().await.ok()?.state.messages >= 1).then_some(())
    })
    .await;
    let response = reqwest::Client::new()
        .get(format!(
            "{}/xapi/statements?statementId={refused_id}",
            central.base
        ))
        .basic_auth(crate::helpers::KEY, Some(crate::helpers::SECRET))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // …nor over NATS as its user: it may publish only its own subject.
    let password = url
        .strip_prefix(&format!("nats-leaf://hub-{HUB}:"))
        .and_then(|rest| rest.split('@').next())
        .expect("password in the URL");
    let as_hub = async_nats::ConnectOptions::new()
        .user_and_password(format!("hub-{HUB}"), password.to_owned())
        .custom_inbox_prefix(format!("_INBOX_hub_{HUB}"))
        .connect(format!("nats://127.0.0.1:{}", central.nats_port))
        .await
        .expect("the hub's user logs in");
    let as_hub = async_nats::jetstream::new(as_hub);
    let elsewhere = tokio::time::timeout(Duration::from_secs(5), async {
        as_hub
            .publish("lrs.in.hub.uden", b"[]".to_vec().into())
            .await?
            .await
    })
    .await;
    assert!(
        !matches!(elsewhere, Ok(Ok(_))),
        "another hub's subject is not the hub's to publish"
    );

    hub.down().await;
    central.down().await;
}

#[tokio::test]
async fn a_cut_link_and_a_restarted_hub_node_lose_nothing_and_keep_the_order() {
    let mut central = Central::start().await;
    let link = Link::start(central.leaf.expect("leaf port")).await;
    let url = add_hub(&central, &link).await;
    let mut hub = HubSite::start(url).await;
    let statements: Vec<Value> = (0..650).map(attendance).collect();

    // Writes go on while the link is cut and restored.
    let mut ids = hub.write(&statements[..150], 5).await;
    link.cut();
    ids.extend(hub.write(&statements[150..300], 5).await);
    link.restore();
    ids.extend(hub.write(&statements[300..400], 5).await);
    arrived_once_in_order(&central, &ids).await;

    // A hub node restarted with a backlog keeps it.
    link.cut();
    ids.extend(hub.write(&statements[400..600], 20).await);
    hub.down().await;
    hub.up().await;
    link.restore();
    arrived_once_in_order(&central, &ids).await;

    // The central site restarts: it sources from where it stopped, not again from the start.
    let before = central.in_sequence().await;
    central.down().await;
    ids.extend(hub.write(&statements[600..650], 5).await);
    central.up().await;
    let stored = arrived_once_in_order(&central, &ids).await;
    assert_eq!(
        central.in_sequence().await,
        before + 10,
        "only the ten new messages are sourced after the restart"
    );
    summaries_match(&central.base, stored, WAIT).await;

    // Taken out: refused while behind is checked; with nothing behind it goes.
    let said = central.hubs(&["remove", HUB]).await;
    assert!(said.contains("no longer sources"), "{said}");
    let listed = central.hubs(&["list", "--json"]).await;
    assert!(!listed.contains(HUB), "{listed}");
    hub.down().await;
    central.down().await;
}

#[tokio::test]
async fn a_kiosk_export_becomes_attendance_at_the_hub_with_a_report_of_refused_rows() {
    // No central site at all: the hub node takes the import regardless.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr");
    let mut hub = HubSite::start(format!("nats-leaf://hub-{HUB}:nobody@{unreachable}")).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("kiosk.csv");
    let mut csv = String::from("Worker,Session,Check-In,Check-Out,Company\n");
    for n in 0..250 {
        csv.push_str(&format!(
            "w{}@example.org,s{},2026-03-0{}T09:00:00Z,2026-03-0{}T11:00:00Z,KVK-{}\n",
            n % 50,
            n % 5,
            1 + n / 50,
            1 + n / 50,
            n % 3
        ));
    }
    csv.push_str("w1@example.org,s1,2026-03-09T11:00:00Z,2026-03-09T10:00:00Z,KVK-1\n");
    csv.push_str(",s1,2026-03-09T10:00:00Z,2026-03-09T11:00:00Z,KVK-1\n");
    std::fs::write(&file, csv).expect("write csv");
    let file_arg = file.display().to_string();
    let args = [
        "hub",
        "import-attendance",
        &file_arg,
        "--url",
        &hub.base,
        "--batch",
        "40",
    ];
    let said = leerspoor_ok(&args, None).await;
    assert!(
        said.contains("252 rows; wrote 250 attended statements; refused 2 rows"),
        "{said}"
    );
    assert!(said.contains("line 252: check-out"), "{said}");
    assert!(said.contains("line 253: the worker is empty"), "{said}");

    let js = async_nats::jetstream::new(hub.client.clone().expect("hub client"));
    let kept = |js: async_nats::jetstream::Context| async move {
        let mut stream = js
            .get_stream(bus::subjects::hub_stream(HUB))
            .await
            .expect("the hub's stream");
        let info = stream.info().await.expect("info");
        (info.state.messages, info.state.bytes)
    };
    let (messages, _) = kept(js.clone()).await;
    assert_eq!(messages, 7, "250 statements in batches of 40");
    let first = js
        .get_stream(bus::subjects::hub_stream(HUB))
        .await
        .expect("stream")
        .get_raw_message(1)
        .await
        .expect("first message");
    let statements: Vec<Value> = serde_json::from_slice(&first.payload).expect("json");
    assert_eq!(statements[0]["verb"]["id"], ATTENDED);
    assert_eq!(statements[0]["result"]["duration"], "PT7200S");

    let ready: Value = reqwest::get(format!("{}/health/ready", hub.base))
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["kept_messages"], json!(7));
    let read = reqwest::Client::new()
        .get(format!("{}/xapi/statements", hub.base))
        .basic_auth("leerspoor", Some("leerspoor"))
        .send()
        .await
        .expect("http");
    assert_eq!(read.status(), StatusCode::METHOD_NOT_ALLOWED);
    let wrong = reqwest::Client::new()
        .post(format!("{}/xapi/statements", hub.base))
        .basic_auth("leerspoor", Some("not the secret"))
        .header("X-Experience-API-Version", "2.0.0")
        .json(&attendance(1))
        .send()
        .await
        .expect("http");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The same file again: the same ids, so the hub's stream drops the repeats.
    let said = leerspoor_ok(&args, None).await;
    assert!(said.contains("wrote 250"), "{said}");
    assert_eq!(kept(js).await.0, 7, "nothing new is kept");
    hub.down().await;
}
