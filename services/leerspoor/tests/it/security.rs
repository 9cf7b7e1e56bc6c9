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

async fn hub_client(url: &str, errors: Arc<Mutex<Vec<String>>>) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(
        "hub-eindhoven".into(),
        EINDHOVEN_PASSWORD.into(),
    )
    .custom_inbox_prefix("_INBOX_hub_eindhoven")
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
    .expect("hub connects")
}

#[tokio::test]
async fn a_hub_publishes_only_for_itself_and_reads_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats_dir = dir.path().join("nats");
    let server = LocalServer::start_with_config(
        &nats_dir,
        &accounts_conf(&nats_dir),
        &[
            ("LEERSPOOR_NATS_PASSWORD", SERVICE_PASSWORD),
            ("HUB_EINDHOVEN_NATS_PASSWORD", EINDHOVEN_PASSWORD),
            ("HUB_DELFT_NATS_PASSWORD", "delft-secret"),
        ],
    )
    .await
    .expect("nats-server with the shipped permissions");
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
