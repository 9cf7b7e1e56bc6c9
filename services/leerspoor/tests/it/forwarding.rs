//! Forwarding to another LRS and webhooks: at least once, in order, after the target was
//! down; signed; dead letters and their replay.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use leerspoor::node::Parts;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{wait_until, Nats};

use crate::helpers::*;
use crate::operating::{metrics_page, sample};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test]
async fn forwarding_reaches_another_leerspoor_in_order_and_catches_up_after_it_was_down() {
    let source = TestApp::start().await;
    // The target: another Leerspoor on a port of its own, stopped and started again.
    let target_nats = Nats::start().await;
    let target_dir = tempfile::tempdir().expect("dir");
    let port = free_port();
    let mut target_config = config(&target_nats.url(), target_dir.path());
    target_config.gateway.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    let target_node = start_node(target_config.clone(), Parts::All).await;
    let target_base = format!("http://127.0.0.1:{port}");
    wait_for_credential_at(&target_base).await;
    let target = TestApp::attach(target_nats, target_base.clone());

    let added = run_leerspoor(
        &[
            "forward",
            "add",
            "ministry",
            "--to",
            &format!("{target_base}/xapi"),
            "--user",
            KEY,
            "--password-stdin",
            "--hub",
            "delft",
            "--batch",
            "7",
            "--nats-url",
            &source.nats.url(),
        ],
        Some(SECRET),
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );

    let post = |count: usize, hub: &'static str, prefix: &'static str| {
        let batch: Vec<Value> = (0..count)
            .map(|n| hub_statement(&format!("{prefix}{n}@example.org"), hub))
            .collect();
        let source = &source;
        async move {
            let response = source.post_statements(&json!(batch)).await;
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<Vec<String>>().await.expect("ids")
        }
    };
    let mut forwarded = post(20, "delft", "a").await;
    post(10, "eindhoven", "b").await;
    let arrived = |expected: Vec<String>| {
        let target = &target;
        async move {
            wait_until("the forwarded statements", WAIT, || async {
                let got = target.get_all(&[("ascending", "true")]).await;
                (ids(&got) == expected).then_some(got)
            })
            .await
        }
    };
    let got = arrived(forwarded.clone()).await;
    assert!(got
        .iter()
        .all(|statement| statement["context"]["extensions"]
            ["https://w3id.org/xapi/llo/extensions/hub"]
            == "delft"));

    // The target goes down for a while; statements keep being stored at the source.
    target_node.stop().await;
    forwarded.extend(post(15, "delft", "c").await);
    forwarded.extend(post(3, "delft", "d").await);
    let page = metrics_page(&source.base).await;
    wait_until("a failed delivery counted", WAIT, || async {
        let page = metrics_page(&source.base).await;
        sample(
            &page,
            "leerspoor_delivery_failures_total",
            &["target=\"ministry\""],
        )
        .filter(|failures| *failures >= 1.0)
    })
    .await;
    drop(page);
    let target_node = start_node(target_config, Parts::All).await;
    arrived(forwarded.clone()).await;
    let page = metrics_page(&source.base).await;
    assert_eq!(
        sample(
            &page,
            "leerspoor_delivered_statements_total",
            &["target=\"ministry\""]
        ),
        Some(forwarded.len() as f64),
        "{page}"
    );
    let listed = leerspoor_ok(&["forward", "list", "--nats-url", &source.nats.url()], None).await;
    assert!(listed.contains("ministry\tlrs"), "{listed}");
    target_node.stop().await;
    source.stop().await;
}

/// A webhook receiver: fails the first `failing` requests with 503, and `/broken` while
/// `broken` is set; keeps what it accepted and whether every signature held.
#[derive(Default)]
struct Receiver {
    failing: AtomicUsize,
    broken: AtomicBool,
    received: Mutex<Vec<Value>>,
    bad_signatures: AtomicUsize,
    requests: AtomicUsize,
}

const WEBHOOK_SECRET: &str = "a-webhook-secret-of-some-length";

async fn receive(
    receiver: Arc<Receiver>,
    path: &str,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    receiver.requests.fetch_add(1, Ordering::Relaxed);
    let signed = headers
        .get("x-leerspoor-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if signed != forwarder::deliver::signature(WEBHOOK_SECRET, &body) {
        receiver.bad_signatures.fetch_add(1, Ordering::Relaxed);
    }
    if path == "/broken" && receiver.broken.load(Ordering::Relaxed) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if receiver
        .failing
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let payload: Value = serde_json::from_slice(&body).expect("json");
    receiver.received.lock().expect("lock").extend(
        payload["statements"]
            .as_array()
            .expect("statements")
            .iter()
            .cloned(),
    );
    StatusCode::NO_CONTENT
}

async fn start_receiver(receiver: Arc<Receiver>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let receiver = receiver.clone();
            async move { receive(receiver, uri.path(), headers, body).await }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_webhook_gets_signed_statements_after_failing_and_dead_letters_replay() {
    let app = TestApp::start().await;
    let receiver = Arc::new(Receiver::default());
    receiver.failing.store(3, Ordering::Relaxed);
    let url = start_receiver(receiver.clone()).await;

    let created = app
        .request(Method::POST, "/admin/webhooks")
        .json(&json!({
            "name": "analytics",
            "url": format!("{url}/hook"),
            "secret": WEBHOOK_SECRET,
            "filter": {"verbs": ["http://adlnet.gov/expapi/verbs/attended"]},
            "batch": 5,
            "max_attempts": 20
        }))
        .send()
        .await
        .expect("http");
    assert_eq!(created.status(), StatusCode::CREATED);
    let view: Value = created.json().await.expect("json");
    assert!(
        view.get("secret").is_none() && view["url"].is_string(),
        "{view}"
    );
    let again = app
        .request(Method::POST, "/admin/webhooks")
        .json(&json!({"name": "analytics", "url": format!("{url}/x"), "secret": WEBHOOK_SECRET}))
        .send()
        .await
        .expect("http");
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let bad = app
        .request(Method::POST, "/admin/webhooks")
        .json(&json!({"name": "short", "url": format!("{url}/x"), "secret": "short"}))
        .send()
        .await
        .expect("http");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let mut expected = Vec::new();
    for round in 0..3 {
        let mut batch: Vec<Value> = (0..4)
            .map(|n| {
                statement(
                    &format!("r{round}-{n}@example.org"),
                    "attended",
                    "https://x.example/s",
                )
            })
            .collect();
        batch.push(statement(
            "c@example.org",
            "completed",
            "https://x.example/s",
        ));
        let response = app.post_statements(&json!(batch)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let ids: Vec<String> = response.json().await.expect("ids");
        expected.extend(ids[..4].iter().cloned());
    }
    let received = wait_until("the webhook caught up", WAIT, || async {
        let received = receiver.received.lock().expect("lock").clone();
        (received.len() >= expected.len()).then_some(received)
    })
    .await;
    assert_eq!(
        ids(&received),
        expected,
        "every attended statement, once, in order"
    );
    assert!(
        receiver.requests.load(Ordering::Relaxed) >= 3 + 3,
        "it failed and was retried"
    );
    assert_eq!(receiver.bad_signatures.load(Ordering::Relaxed), 0);

    // A receiver that keeps failing: the statements go to the dead-letter list.
    receiver.broken.store(true, Ordering::Relaxed);
    let added = run_leerspoor(
        &[
            "webhooks",
            "add",
            "broken",
            "--url",
            &format!("{url}/broken"),
            "--secret-stdin",
            "--max-attempts",
            "2",
            "--nats-url",
            &app.nats.url(),
        ],
        Some(WEBHOOK_SECRET),
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let response = app
        .post_statements(&json!([
            statement("x@example.org", "attended", "https://x.example/d"),
            statement("y@example.org", "attended", "https://x.example/d")
        ]))
        .await;
    let buried: Vec<String> = response.json().await.expect("ids");
    let letters: Value = wait_until("two dead letters", WAIT, || async {
        let response = app
            .request(Method::GET, "/admin/webhooks/broken/dead-letters")
            .send()
            .await
            .ok()?;
        let letters: Value = response.json().await.ok()?;
        (letters["count"] == 2).then_some(letters)
    })
    .await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["statement"]["id"], buried[0]);
    assert!(
        letter["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("500")),
        "{letter}"
    );
    assert_eq!(letter["attempts"], 2);

    // Fixed, and replayed: delivered, and off the list.
    receiver.broken.store(false, Ordering::Relaxed);
    let before = receiver.received.lock().expect("lock").len();
    let replay = app
        .request(Method::POST, "/admin/webhooks/broken/replay")
        .send()
        .await
        .expect("http");
    assert_eq!(replay.status(), StatusCode::ACCEPTED);
    wait_until("the dead letters delivered", WAIT, || async {
        let response = app
            .request(Method::GET, "/admin/webhooks/broken/dead-letters")
            .send()
            .await
            .ok()?;
        let letters: Value = response.json().await.ok()?;
        (letters["count"] == 0).then_some(())
    })
    .await;
    let received = receiver.received.lock().expect("lock").clone();
    // "analytics" got the two as well (they are attended); "broken" delivered them on replay.
    let replayed: Vec<&Value> = received[before..]
        .iter()
        .filter(|statement| buried.contains(&statement["id"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(replayed.len() >= 2, "{replayed:?}");
    let page = metrics_page(&app.base).await;
    assert_eq!(
        sample(
            &page,
            "leerspoor_dead_letters_total",
            &["target=\"broken\""]
        ),
        Some(2.0)
    );

    let listed: Value = app
        .request(Method::GET, "/admin/webhooks")
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(
        listed["webhooks"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let removed = app
        .request(Method::DELETE, "/admin/webhooks/broken")
        .send()
        .await
        .expect("http");
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let gone = app
        .request(Method::DELETE, "/admin/webhooks/broken")
        .send()
        .await
        .expect("http");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}
