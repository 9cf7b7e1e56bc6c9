//! Store and projector replicas on one NATS: every write reaches both, reads see one's own
//! writes whichever replica answers, a replica stopped and started again catches up, and at
//! rest the replicas' digests are equal.

use bus::subjects::Topology;
use leerspoor::node::Parts;
use reqwest::StatusCode;
use serde_json::{json, Value};
use testkit::{wait_until, Nats};

use crate::helpers::{
    config, hub_statement, start_node, statement, wait_for_credential_at, Running, TestApp, WAIT,
};

fn topology() -> Topology {
    Topology {
        stores: vec!["a".into(), "b".into()],
        projectors: vec!["a".into(), "b".into()],
        stream_replicas: 1,
    }
}

/// One part of replica `name` (its own data folder) on `nats`.
async fn replica(nats: &Nats, dir: &std::path::Path, name: &str, parts: Parts) -> Running {
    let mut config = config(&nats.url(), dir);
    config.replicas.name = name.into();
    config.replicas.stores = topology().stores;
    config.replicas.projectors = topology().projectors;
    start_node(config, parts).await
}

/// The replicas' statuses once both stores applied everything in `LRS_IN` and both
/// projectors everything in `LRS_STORED`.
pub(crate) async fn at_rest(
    client: &async_nats::Client,
    topology: &Topology,
) -> Vec<bus::wire::ReplicaStatus> {
    // At rest twice in a row with the streams unchanged: a store publishes its events just
    // after its flush, so one look can find every projector caught up with a stream that is
    // about to grow.
    let previous = std::sync::Mutex::new(None::<Vec<Option<u64>>>);
    wait_until("every replica caught up", WAIT, || async {
        let statuses = leerspoor::replicas::statuses(
            client,
            topology,
            true,
            std::time::Duration::from_secs(10),
        )
        .await
        .ok()?;
        let complete = statuses.len() == 4
            && statuses
                .iter()
                .all(|status| status.lag == Some(0) && status.digest.is_some());
        let lasts: Vec<Option<u64>> = statuses.iter().map(|status| status.stream_last).collect();
        let mut previous = previous.lock().expect("lock");
        let stable = complete && previous.as_ref() == Some(&lasts);
        *previous = complete.then_some(lasts);
        stable.then_some(statuses)
    })
    .await
}

#[tokio::test]
async fn replicas_apply_every_write_and_end_identical() {
    let nats = Nats::start().await;
    let (dir_a, dir_b, dir_gateway) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let store_a = replica(&nats, dir_a.path(), "a", Parts::Store).await;
    let store_b = replica(&nats, dir_b.path(), "b", Parts::Store).await;
    let projector_a = replica(&nats, dir_a.path(), "a", Parts::Projector).await;
    let projector_b = replica(&nats, dir_b.path(), "b", Parts::Projector).await;
    let gateway = replica(&nats, dir_gateway.path(), "a", Parts::Gateway).await;
    let base = format!("http://{}", gateway.http_addr.expect("gateway"));
    wait_for_credential_at(&base).await;
    let app = TestApp::attach(nats, base);

    // Statements, then read back at once: whichever store replica answers has them.
    for round in 0..5 {
        let batch: Vec<Value> = (0..10)
            .map(|n| hub_statement(&format!("w{round}-{n}@example.org"), "replicated"))
            .collect();
        let response = app.post_statements(&json!(batch)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let ids: Vec<String> = response.json().await.expect("ids");
        for id in &ids {
            let found = app.get(&format!("/xapi/statements?statementId={id}")).await;
            assert_eq!(found.status(), StatusCode::OK, "read-your-writes for {id}");
        }
    }
    // A hub publishing straight to NATS, without ids: both replicas derive the same ones.
    let hub = app.nats_client().await;
    let js = async_nats::jetstream::new(hub);
    let published = js
        .publish(
            "lrs.in.hub.replicated",
            serde_json::to_vec(&json!([
                hub_statement("direct-1@example.org", "replicated"),
                hub_statement("direct-2@example.org", "replicated")
            ]))
            .expect("json")
            .into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert!(published.sequence > 0);
    // Documents: a PUT and a merge, read back at once.
    let state = "/xapi/activities/state?activityId=https%3A%2F%2Fx.example%2Fa&agent=%7B%22mbox%22%3A%22mailto%3Aann%40example.org%22%7D&stateId=bookmark";
    for (method, body) in [
        (reqwest::Method::PUT, r#"{"page": 1}"#),
        (reqwest::Method::POST, r#"{"seen": true}"#),
    ] {
        let response = app
            .request(method, state)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let document: Value = app.get(state).await.json().await.expect("document");
    assert_eq!(document, json!({"page": 1, "seen": true}));

    // Store replica b goes away; writes go on (replica a answers them) and b catches up.
    let kept_b = dir_b.path().to_owned();
    store_b.stop().await;
    let response = app
        .post_statements(&statement(
            "while-b-was-down@example.org",
            "attended",
            "https://x.example/1",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let store_b = replica(&app.nats, &kept_b, "b", Parts::Store).await;

    let client = app.nats_client().await;
    let statuses = at_rest(&client, &topology()).await;
    let stores: Vec<_> = statuses.iter().filter(|s| s.kind == "store").collect();
    assert_eq!(stores.len(), 2);
    assert_eq!(stores[0].items, Some(53), "50 + 2 from the hub + 1");
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "store"),
        Some(true),
        "{statuses:?}"
    );
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "projector"),
        Some(true),
        "{statuses:?}"
    );
    let hub_summary = app.hub_summary("replicated").await.expect("hub summary");
    assert_eq!(hub_summary["statements"], json!(52));

    for part in [store_a, store_b, projector_a, projector_b, gateway] {
        part.stop().await;
    }
}

#[tokio::test]
async fn a_new_replica_starts_from_a_snapshot_and_catches_up() {
    let nats = Nats::start().await;
    let (dir_a, dir_c, dir_gateway) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    // A deployment of one replica, "a": nothing keeps LRS_IN's messages for another.
    let alone = |dir: &std::path::Path, name: &str| {
        let mut config = config(&nats.url(), dir);
        config.replicas.name = name.into();
        config.replicas.stores = vec!["a".into()];
        config.replicas.projectors = vec!["a".into()];
        config
    };
    let node_a = start_node(alone(dir_a.path(), "a"), Parts::All).await;
    let gateway = start_node(alone(dir_gateway.path(), "a"), Parts::Gateway).await;
    let base = format!("http://{}", gateway.http_addr.expect("gateway"));
    wait_for_credential_at(&base).await;
    let app = TestApp::attach(nats, base);
    let before: Vec<Value> = (0..30)
        .map(|n| hub_statement(&format!("before-{n}@example.org"), "snapshotted"))
        .collect();
    assert_eq!(
        app.post_statements(&json!(before)).await.status(),
        StatusCode::OK
    );

    // Replica "c" joins with an empty data folder: from a snapshot of "a", then the log.
    let mut joining = config(&app.nats.url(), dir_c.path());
    joining.replicas.name = "c".into();
    joining.replicas.stores = vec!["a".into(), "c".into()];
    joining.replicas.projectors = vec!["a".into(), "c".into()];
    joining.replicas.from_snapshot = true;
    let node_c = start_node(joining.clone(), Parts::Store).await;
    let projector_c = start_node(joining, Parts::Projector).await;
    assert!(
        dir_c.path().join("store.sled").exists(),
        "c's database came from the snapshot"
    );
    let after: Vec<Value> = (0..10)
        .map(|n| hub_statement(&format!("after-{n}@example.org"), "snapshotted"))
        .collect();
    assert_eq!(
        app.post_statements(&json!(after)).await.status(),
        StatusCode::OK
    );

    let client = app.nats_client().await;
    let both = Topology {
        stores: vec!["a".into(), "c".into()],
        projectors: vec!["a".into(), "c".into()],
        stream_replicas: 1,
    };
    let statuses = at_rest(&client, &both).await;
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "store"),
        Some(true),
        "{statuses:?}"
    );
    assert_eq!(
        leerspoor::replicas::identical(&statuses, "projector"),
        Some(true),
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|status| status.items.is_some()));
    assert_eq!(
        statuses
            .iter()
            .find(|status| status.kind == "store")
            .and_then(|status| status.items),
        Some(40)
    );

    // With "a" gone, "c" answers alone: everything is there.
    node_a.stop().await;
    let listed = app.get_all(&[("limit", "100")]).await;
    assert_eq!(listed.len(), 40);
    assert_eq!(
        app.hub_summary("snapshotted").await.expect("hub")["statements"],
        json!(40)
    );
    for part in [node_c, projector_c, gateway] {
        part.stop().await;
    }
}

/// A request that takes longer than the NATS client's default request timeout (10 s), such as
/// a snapshot of a large store, is sent once and waited for, not sent again every 10 s.
#[tokio::test]
async fn a_slow_answer_is_waited_for_not_asked_again() {
    let nats = Nats::start().await;
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let mut requests = client
        .subscribe("lrs.api.test.slow")
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let responder = client.clone();
    let answering = tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut asked = 0;
        let request = requests.next().await.expect("a request");
        asked += 1;
        // Slower than the client's own default.
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        let reply = request.reply.expect("reply subject");
        responder
            .publish(reply, "done".into())
            .await
            .expect("answer");
        // Any request sent again meanwhile is waiting here now.
        responder.flush().await.expect("flush");
        while let Ok(Some(_)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), requests.next()).await
        {
            asked += 1;
        }
        asked
    });
    let to = bus::request::Ask::store("lrs.api.test.slow", std::time::Duration::from_secs(30));
    let answer = bus::request::ask(&client, to, "?".into())
        .await
        .expect("the slow answer");
    assert_eq!(answer.as_ref(), b"done");
    assert_eq!(answering.await.expect("responder"), 1, "asked once");
}
