//! Hubs and services publishing straight to NATS.

use async_nats::jetstream;
use bus::subjects;
use bus::wire::RejectedMessage;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::wait_until;

use crate::helpers::{new_id, statement, with_id, TestApp, WAIT};

async fn publish(js: &jetstream::Context, subject: &str, msg_id: &str, body: &Value) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    js.publish_with_headers(subject.to_owned(), headers, body.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("jetstream ack");
}

/// A statement as a hub publishes it: naming its hub in the LLO extension.
fn at_hub(mut statement: Value, hub: &str) -> Value {
    statement["context"] = json!({"extensions": {"https://w3id.org/xapi/llo/extensions/hub": hub}});
    statement
}

async fn find(app: &TestApp, id: &str) -> Option<Value> {
    let response = app.get(&format!("/xapi/statements?statementId={id}")).await;
    if response.status() != StatusCode::OK {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test]
async fn statements_published_on_a_hub_subject_are_stored_with_the_hub_as_authority() {
    let app = TestApp::start().await;
    let js = jetstream::new(app.nats_client().await);
    let single = at_hub(
        with_id(
            statement("ann@example.org", "attended", "https://hub.example/s/1"),
            &new_id(),
        ),
        "eindhoven",
    );
    let pair = json!([
        at_hub(
            with_id(
                statement("bob@example.org", "attended", "https://hub.example/s/1"),
                &new_id()
            ),
            "eindhoven"
        ),
        at_hub(
            with_id(
                statement("cem@example.org", "attended", "https://hub.example/s/1"),
                &new_id()
            ),
            "eindhoven"
        ),
    ]);
    publish(&js, "lrs.in.hub.eindhoven", "scan-1", &single).await;
    publish(&js, "lrs.in.hub.eindhoven", "scan-2", &pair).await;

    let id = single["id"].as_str().expect("id");
    let stored = wait_until("hub statement stored", WAIT, || find(&app, id)).await;
    assert_eq!(stored["authority"]["account"]["name"], "hub.eindhoven");
    assert_eq!(stored["version"], "2.0.0");
    for member in pair.as_array().expect("array") {
        let id = member["id"].as_str().expect("id");
        wait_until("batch statement stored", WAIT, || find(&app, id)).await;
    }
}

#[tokio::test]
async fn a_republished_message_is_stored_once() {
    let app = TestApp::start().await;
    let js = jetstream::new(app.nats_client().await);
    let body = at_hub(
        statement("ann@example.org", "attended", "https://hub.example/s/1"),
        "delft",
    );
    // Without an id, only JetStream's dedup keeps the retry from becoming a second statement.
    publish(&js, "lrs.in.hub.delft", "retry-me", &body).await;
    publish(&js, "lrs.in.hub.delft", "retry-me", &body).await;
    let marker = at_hub(
        with_id(
            statement("zed@example.org", "attended", "https://hub.example/s/1"),
            &new_id(),
        ),
        "delft",
    );
    publish(&js, "lrs.in.hub.delft", "marker", &marker).await;
    let marker_id = marker["id"].as_str().expect("id");
    wait_until("marker stored", WAIT, || find(&app, marker_id)).await;
    let all = app.get_all(&[]).await;
    assert_eq!(all.len(), 2, "one retried statement and the marker");
}

#[tokio::test]
async fn an_invalid_message_goes_to_lrs_rejected_with_its_reason() {
    let app = TestApp::start().await;
    let js = jetstream::new(app.nats_client().await);
    let good = at_hub(
        with_id(
            statement("ann@example.org", "attended", "https://hub.example/s/1"),
            &new_id(),
        ),
        "tilburg",
    );
    let mut bad = at_hub(
        statement("bob@example.org", "attended", "https://hub.example/s/1"),
        "tilburg",
    );
    bad["verb"]["id"] = json!("attended");
    let elsewhere = at_hub(
        statement("cem@example.org", "attended", "https://hub.example/s/1"),
        "delft",
    );
    publish(&js, "lrs.in.hub.tilburg", "mixed-1", &json!([good, bad])).await;
    publish(
        &js,
        "lrs.in.hub.tilburg",
        "garbage-1",
        &json!("not a statement"),
    )
    .await;
    publish(&js, "lrs.in.hub.tilburg", "other-hub-1", &elsewhere).await;

    let stream = js
        .get_stream(subjects::STREAM_REJECTED)
        .await
        .expect("stream");
    let rejected: Vec<RejectedMessage> = wait_until("three rejections", WAIT, || {
        let stream = stream.clone();
        async move {
            let first = stream.get_raw_message(1).await.ok()?;
            let second = stream.get_raw_message(2).await.ok()?;
            let third = stream.get_raw_message(3).await.ok()?;
            Some(
                [first, second, third]
                    .iter()
                    .map(|message| serde_json::from_slice(&message.payload).expect("rejection"))
                    .collect(),
            )
        }
    })
    .await;
    assert_eq!(rejected[0].subject, "lrs.in.hub.tilburg");
    assert_eq!(rejected[0].rejection.statement, Some(1));
    assert_eq!(rejected[0].rejection.path, "/verb/id");
    assert!(
        rejected[0].payload.contains("bob@example.org"),
        "the payload is kept for replay"
    );
    assert_eq!(rejected[1].rejection.rule, "message.json");
    assert_eq!(
        rejected[2].rejection.rule, "llo.hub_subject",
        "a hub publishes only its own hub"
    );
    let good_id = good["id"].as_str().expect("id");
    assert!(
        find(&app, good_id).await.is_none(),
        "the batch is atomic: nothing stored"
    );
}
