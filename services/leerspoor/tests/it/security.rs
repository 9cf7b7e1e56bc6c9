//! The shipped NATS permissions (deploy/nats-accounts.conf) with a real nats-server: a hub
//! publishes only for itself and reads nothing of the LRS.

use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use leerspoor::node::Parts;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{wait_until, LocalServer};

use crate::helpers::{config, new_id, start_node, statement, with_id, KEY, SECRET, WAIT};

const SERVICE_PASSWORD: &str = "service-secret";
const EINDHOVEN_PASSWORD: &str = "eindhoven-secret";

/// Places the shipped deploy/nats-accounts.conf beside the server's configuration (nats-server
/// resolves includes relative to the including file) and returns the include line.
fn accounts_conf(nats_dir: &std::path::Path) -> String {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats-accounts.conf");
    std::fs::create_dir_all(nats_dir).expect("nats dir");
    std::fs::copy(shipped, nats_dir.join("nats-accounts.conf"))
        .expect("copy deploy/nats-accounts.conf");
    "include \"nats-accounts.conf\"".to_owned()
}

/// The password of each user of deploy/nats-accounts.conf, as nats-server's environment.
const PASSWORDS: [(&str, &str, &str); 8] = [
    ("leerspoor", "LEERSPOOR_NATS_PASSWORD", SERVICE_PASSWORD),
    (
        "leerspoor-gateway",
        "LEERSPOOR_GATEWAY_NATS_PASSWORD",
        "gateway-secret",
    ),
    (
        "leerspoor-store",
        "LEERSPOOR_STORE_NATS_PASSWORD",
        "store-secret",
    ),
    (
        "leerspoor-projector",
        "LEERSPOOR_PROJECTOR_NATS_PASSWORD",
        "projector-secret",
    ),
    (
        "leerspoor-forwarder",
        "LEERSPOOR_FORWARDER_NATS_PASSWORD",
        "forwarder-secret",
    ),
    (
        "leerspoor-admin",
        "LEERSPOOR_ADMIN_NATS_PASSWORD",
        "admin-secret",
    ),
    (
        "hub-eindhoven",
        "HUB_EINDHOVEN_NATS_PASSWORD",
        EINDHOVEN_PASSWORD,
    ),
    ("hub-delft", "HUB_DELFT_NATS_PASSWORD", "delft-secret"),
];

fn password(user: &str) -> &'static str {
    PASSWORDS
        .iter()
        .find(|(name, _, _)| *name == user)
        .map(|(_, _, password)| *password)
        .expect("a user of deploy/nats-accounts.conf")
}

/// nats-server with exactly the shipped users and permissions.
async fn secured_nats(nats_dir: &std::path::Path) -> LocalServer {
    let environment: Vec<(&str, &str)> = PASSWORDS
        .iter()
        .map(|(_, variable, password)| (*variable, *password))
        .collect();
    LocalServer::start_with_config(nats_dir, &accounts_conf(nats_dir), &environment)
        .await
        .expect("nats-server with the shipped permissions")
}

/// A connection as one of the shipped users, with its inbox prefix; permission errors the
/// server reports are collected in `errors`.
async fn connect_as(
    url: &str,
    user: &str,
    inbox_prefix: &str,
    errors: Arc<Mutex<Vec<String>>>,
) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), password(user).into())
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    errors.lock().expect("lock").push(error.to_string());
                }
            }
        })
        .connect(url)
        .await
        .expect("connects")
}

/// The Eindhoven hub, reading only its own inbox prefix, as its client must.
async fn hub_client(url: &str, errors: Arc<Mutex<Vec<String>>>) -> async_nats::Client {
    connect_as(url, "hub-eindhoven", "_INBOX_hub_eindhoven", errors).await
}

#[tokio::test]
async fn a_hub_publishes_only_for_itself_and_reads_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats_dir = dir.path().join("nats");
    let server = secured_nats(&nats_dir).await;
    let url = server.url();
    assert!(
        async_nats::connect(&url).await.is_err(),
        "no anonymous access"
    );

    let mut node_config = config(&url, &dir.path().join("data"));
    node_config.nats.user = Some("leerspoor".into());
    node_config.nats.password = Some(SERVICE_PASSWORD.into());
    let node = start_node(node_config, Parts::All).await;
    let base = format!("http://{}", node.http_addr.expect("gateway"));

    let errors = Arc::new(Mutex::new(Vec::new()));
    let hub = hub_client(&url, errors.clone()).await;
    let js = jetstream::new(hub.clone());
    let mut own = with_id(
        statement("ann@example.org", "attended", "https://hub.example/s/1"),
        &new_id(),
    );
    own["context"] =
        json!({"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "eindhoven"}});
    js.publish("lrs.in.hub.eindhoven", own.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("its own subject is acknowledged");
    let http = reqwest::Client::new();
    let id = own["id"].as_str().expect("id").to_owned();
    wait_until("the hub's statement is stored", WAIT, || {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        async move {
            let response = http
                .get(format!("{base}/xapi/statements?statementId={id}"))
                .basic_auth(KEY, Some(SECRET))
                .header("X-Experience-API-Version", "2.0.0")
                .send()
                .await
                .ok()?;
            (response.status() == StatusCode::OK).then_some(())
        }
    })
    .await;

    let mut other = own.clone();
    other["id"] = json!(new_id());
    other["context"]["extensions"]["https://w3id.org/xapi/llo/extensions/hub"] = json!("delft");
    let forged = js
        .publish("lrs.in.hub.delft", other.to_string().into())
        .await;
    // The server drops the message and reports a violation; the acknowledgement never comes.
    let acknowledged = match forged {
        Ok(ack) => matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(2),
                std::future::IntoFuture::into_future(ack)
            )
            .await,
            Ok(Ok(_))
        ),
        Err(_) => false,
    };
    assert!(!acknowledged, "publishing for another hub is refused");

    let _stored = hub.subscribe("lrs.stored.>").await.expect("subscribe call");
    let _api = hub.subscribe("lrs.api.>").await.expect("subscribe call");
    let _others = hub.subscribe("_INBOX.>").await.expect("subscribe call");
    let query = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        hub.request("lrs.api.statements", "{}".into()),
    )
    .await;
    assert!(!matches!(query, Ok(Ok(_))), "a hub cannot query statements");
    let seen = wait_until("permission violations reported", WAIT, || {
        let errors = errors.clone();
        async move {
            let errors = errors.lock().expect("lock").clone();
            let violations = errors
                .iter()
                .filter(|error| error.to_lowercase().contains("permissions violation"))
                .count();
            (violations >= 4).then_some(errors)
        }
    })
    .await;
    let text = seen.join("\n");
    assert!(text.contains("lrs.in.hub.delft"), "{text}");
    assert!(text.contains("lrs.stored.>"), "{text}");
    assert!(text.contains("lrs.api"), "{text}");
    assert!(
        text.contains("_INBOX.>"),
        "another client's replies: {text}"
    );
    node.stop().await;
}

/// Runs a `leerspoor` command as the operator's NATS user (`leerspoor-admin`).
async fn admin_cli(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let config = config.to_str().expect("utf-8 path");
    let mut all = args.to_vec();
    all.extend(["--config", config]);
    crate::helpers::leerspoor_ok(&all, stdin).await
}

#[tokio::test]
async fn each_service_runs_as_its_own_user_with_only_what_it_needs() {
    use crate::attachments::{attachment, multipart, part_with_hash, BOUNDARY};
    let dir = tempfile::tempdir().expect("temp dir");
    let nats_dir = dir.path().join("nats");
    let server = secured_nats(&nats_dir).await;
    let url = server.url();
    let data = dir.path().join("data");
    let as_user = |user: &str| {
        let mut part = config(&url, &data);
        part.nats.user = Some(user.into());
        part.nats.password = Some(password(user).into());
        part
    };
    let store = start_node(as_user("leerspoor-store"), Parts::Store).await;
    let projector = start_node(as_user("leerspoor-projector"), Parts::Projector).await;
    let gateway = start_node(as_user("leerspoor-gateway"), Parts::Gateway).await;
    let forwarder = start_node(as_user("leerspoor-forwarder"), Parts::Forwarder).await;
    let base = format!("http://{}", gateway.http_addr.expect("gateway"));
    let http = reqwest::Client::new();
    let v2 = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}"))
            .basic_auth(KEY, Some(SECRET))
            .header("X-Experience-API-Version", "2.0.0")
    };

    // Everything a user of the LRS does works: statements with attachments, documents,
    // summaries.
    let content = b"certificate of attendance";
    let mut written = with_id(
        statement("ann@example.org", "attended", "https://hub.example/s/1"),
        &new_id(),
    );
    written["context"] =
        json!({"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "eindhoven"}});
    written["attachments"] = json!([attachment(
        "https://x.example/certificate",
        "text/plain",
        content
    )]);
    let id = written["id"].as_str().expect("id").to_owned();
    let response = v2(reqwest::Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(multipart(&written, &[("text/plain", content)]))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let response = v2(
        reqwest::Method::GET,
        &format!("/xapi/statements?statementId={id}&attachments=true"),
    )
    .send()
    .await
    .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.expect("body");
    let hash = written["attachments"][0]["sha2"].as_str().expect("sha2");
    assert_eq!(part_with_hash(&body, hash), Some(&content[..]));
    let state = "/xapi/activities/state?activityId=https%3A%2F%2Fhub.example%2Fs%2F1&agent=%7B%22mbox%22%3A%22mailto%3Aann%40example.org%22%7D&stateId=seat";
    let response = v2(reqwest::Method::POST, state)
        .json(&json!({"row": 3}))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        v2(reqwest::Method::GET, state)
            .send()
            .await
            .expect("http")
            .status(),
        StatusCode::OK
    );
    wait_until("the projector's summary", WAIT, || async {
        let response = v2(reqwest::Method::GET, "/summaries/hubs/eindhoven")
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then_some(())
    })
    .await;

    // The operator's commands, as leerspoor-admin.
    let admin_config = dir.path().join("admin.toml");
    std::fs::write(
        &admin_config,
        format!(
            "[nats]\nurl = \"{url}\"\nuser = \"leerspoor-admin\"\npassword = \"{}\"\n",
            password("leerspoor-admin")
        ),
    )
    .expect("admin config");
    admin_cli(
        &admin_config,
        &[
            "credentials",
            "create",
            "--key",
            "lms",
            "--name",
            "LMS",
            "--scopes",
            "all",
            "--secret-stdin",
        ],
        Some("lms-secret-for-tests"),
    )
    .await;
    let response = http
        .get(format!("{base}/xapi/statements"))
        .basic_auth("lms", Some("lms-secret-for-tests"))
        .header("X-Experience-API-Version", "2.0.0")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let summary = admin_cli(&admin_config, &["summary", "hubs"], None).await;
    assert!(summary.contains("eindhoven"), "{summary}");
    let erased = admin_cli(
        &admin_config,
        &["erase-agent", r#"{"mbox": "mailto:ann@example.org"}"#],
        None,
    )
    .await;
    assert!(
        erased.contains("erased 1 statements and 1 documents"),
        "{erased}"
    );
    // Operating, as leerspoor-admin, the gateway and the forwarder: exports, imports,
    // backups, forwarding targets and webhooks, metrics and health.
    let export = dir.path().join("export.ndjson");
    let exported = admin_cli(
        &admin_config,
        &["export", "--to", export.to_str().expect("path")],
        None,
    )
    .await;
    assert!(exported.contains("exported"), "{exported}");
    let imported = admin_cli(
        &admin_config,
        &[
            "import",
            export.to_str().expect("path"),
            "--data-dir",
            data.to_str().expect("path"),
        ],
        None,
    )
    .await;
    assert!(imported.contains("refused 0"), "{imported}");
    let backup = dir.path().join("backup");
    admin_cli(
        &admin_config,
        &["backup", "--to", backup.to_str().expect("path")],
        None,
    )
    .await;
    admin_cli(
        &admin_config,
        &[
            "webhooks",
            "add",
            "hook",
            "--url",
            "http://127.0.0.1:9/hook",
            "--secret-stdin",
        ],
        Some("a-webhook-secret-of-some-length"),
    )
    .await;
    let listed = admin_cli(&admin_config, &["webhooks", "list"], None).await;
    assert!(listed.contains("hook\twebhook"), "{listed}");
    admin_cli(&admin_config, &["webhooks", "dead-letters", "hook"], None).await;
    admin_cli(&admin_config, &["webhooks", "remove", "hook"], None).await;
    let response = v2(reqwest::Method::GET, "/admin/webhooks")
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    for path in ["/metrics", "/health/ready"] {
        let response = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    admin_cli(&admin_config, &["backup", "--release"], None).await;
    // The store, as its own user, deletes the certificate no statement uses any more.
    let looking = connect_as(&url, "leerspoor", "_LRS_INBOX", Arc::default()).await;
    let bucket = jetstream::new(looking)
        .get_object_store(bus::subjects::ATTACHMENTS_BUCKET)
        .await
        .expect("bucket");
    wait_until(
        "the erased statement's attachment body is deleted",
        WAIT,
        || async {
            let gone = matches!(bucket.get(hash).await,
            Err(err) if err.kind() == jetstream::object_store::GetErrorKind::NotFound);
            gone.then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(nats_dir.join("nats-server.log")).expect("server log");
    assert!(
        !log.contains("Violation"),
        "a service or the operator lacks a permission it needs:\n{log}"
    );

    // And nothing beyond it.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let as_gateway = connect_as(&url, "leerspoor-gateway", "_LRS_INBOX", errors.clone()).await;
    let as_projector = connect_as(&url, "leerspoor-projector", "_LRS_INBOX", errors.clone()).await;
    let as_admin = connect_as(&url, "leerspoor-admin", "_LRS_INBOX", errors.clone()).await;
    let hub = hub_client(&url, errors.clone()).await;
    let forged = bus::wire::StoredEvents {
        sequence: 999,
        events: Vec::new(),
    };
    let forged = serde_json::to_vec(&forged).expect("json");
    as_gateway
        .publish("lrs.stored.events", forged.clone().into())
        .await
        .expect("publish call");
    as_gateway
        .publish("$JS.API.STREAM.PURGE.LRS_STORED", "".into())
        .await
        .expect("publish call");
    as_projector
        .publish("lrs.in.http", "{}".into())
        .await
        .expect("publish call");
    as_admin
        .publish("lrs.in.http", "{}".into())
        .await
        .expect("publish call");
    let _tap = as_admin
        .subscribe("lrs.stored.>")
        .await
        .expect("subscribe call");
    hub.publish(
        "lrs.in.admin.erase",
        r#"{"agent": {"mbox": "mailto:bob@example.org"}, "actor": "hub"}"#.into(),
    )
    .await
    .expect("publish call");
    for client in [&as_gateway, &as_projector, &as_admin, &hub] {
        client.flush().await.expect("flush");
    }
    let refused = wait_until("every forbidden call refused", WAIT, || {
        let errors = errors.clone();
        async move {
            let text = errors.lock().expect("lock").join("\n");
            [
                "lrs.stored.events",
                "$JS.API.STREAM.PURGE.LRS_STORED",
                "lrs.in.http",
                "lrs.stored.>",
                "lrs.in.admin.erase",
            ]
            .iter()
            .all(|subject| text.contains(subject))
            // Both the projector's and the operator's refusals of `lrs.in.http` (they may
            // arrive after the others).
            .then_some(text)
            .filter(|text| text.matches("lrs.in.http").count() >= 2)
        }
    })
    .await;
    assert_eq!(
        refused.matches("lrs.in.http").count(),
        2,
        "neither the projector nor the operator may write statements: {refused}"
    );
    // The log records refusals, so its silence before these was meaningful.
    let log = std::fs::read_to_string(nats_dir.join("nats-server.log")).expect("server log");
    assert!(log.contains("Violation"), "{log}");
    gateway.stop().await;
    projector.stop().await;
    forwarder.stop().await;
    store.stop().await;
}
