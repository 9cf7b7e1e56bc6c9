use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{new_id, statement, with_id, TestApp, KEY, SECRET};

#[tokio::test]
async fn a_posted_statement_is_readable_at_once_with_what_the_lrs_sets() {
    let app = TestApp::start().await;
    let response = app
        .post_statements(&statement(
            "ann@example.org",
            "attended",
            "https://hub.example/s/1",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-experience-api-version"], "1.0.3");
    let ids: Vec<String> = response.json().await.expect("ids");
    assert_eq!(ids.len(), 1);

    let response = app
        .get(&format!("/xapi/statements?statementId={}", ids[0]))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .contains_key("x-experience-api-consistent-through"));
    assert!(response.headers().contains_key("last-modified"));
    let stored: Value = response.json().await.expect("json");
    assert_eq!(stored["id"], json!(ids[0]));
    assert_eq!(stored["version"], "1.0.0");
    assert_eq!(stored["authority"]["account"]["name"], "tool");
    assert!(stored["stored"].is_string());
    assert_eq!(stored["timestamp"], stored["stored"]);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_with_one_invalid_statement_stores_nothing() {
    let app = TestApp::start().await;
    let first = with_id(
        statement("a@example.org", "attended", "https://x.example/1"),
        &new_id(),
    );
    let second = with_id(
        statement("b@example.org", "attended", "https://x.example/1"),
        &new_id(),
    );
    let mut third = statement("c@example.org", "attended", "https://x.example/1");
    third["actor"]["mbox"] = json!("c@example.org");
    let response = app.post_statements(&json!([first, second, third])).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["statement"], 2);
    assert_eq!(error["path"], "/actor/mbox");
    assert!(error["rule"].as_str().is_some_and(|rule| !rule.is_empty()));
    for id in [&first["id"], &second["id"]] {
        let id = id.as_str().expect("id");
        let response = app.get(&format!("/xapi/statements?statementId={id}")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_batch_with_a_conflicting_id_is_a_409_and_stores_nothing() {
    let app = TestApp::start().await;
    let taken = new_id();
    let original = with_id(
        statement("a@example.org", "attended", "https://x.example/1"),
        &taken,
    );
    assert_eq!(
        app.post_statements(&original).await.status(),
        StatusCode::OK
    );

    let fresh = with_id(
        statement("b@example.org", "attended", "https://x.example/2"),
        &new_id(),
    );
    let clash = with_id(
        statement("a@example.org", "completed", "https://x.example/1"),
        &taken,
    );
    let response = app.post_statements(&json!([fresh, clash])).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let fresh_id = fresh["id"].as_str().expect("id");
    let response = app
        .get(&format!("/xapi/statements?statementId={fresh_id}"))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let kept: Value = app
        .get(&format!("/xapi/statements?statementId={taken}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        kept["verb"]["id"],
        "http://adlnet.gov/expapi/verbs/attended"
    );
}

#[tokio::test]
async fn put_is_idempotent_and_other_content_under_the_same_id_conflicts() {
    let app = TestApp::start().await;
    let id = new_id();
    let body = statement("a@example.org", "completed", "https://x.example/course");
    assert_eq!(
        app.put_statement(&id, &body).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.put_statement(&id, &body).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post_statements(&with_id(body.clone(), &id))
            .await
            .status(),
        StatusCode::OK
    );
    let all = app.get_all(&[]).await;
    assert_eq!(
        all.len(),
        1,
        "the same statement three times is stored once"
    );

    let other = statement("a@example.org", "failed", "https://x.example/course");
    let response = app.put_statement(&id, &other).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["code"], "conflict");
}

#[tokio::test]
async fn put_needs_a_statement_id_that_matches_the_body() {
    let app = TestApp::start().await;
    let body = statement("a@example.org", "completed", "https://x.example/course");
    let response = app
        .request(reqwest::Method::PUT, "/xapi/statements")
        .json(&body)
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = app
        .put_statement(&new_id(), &with_id(body, &new_id()))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(app.get_all(&[]).await.is_empty());
}

fn voiding(target: &str) -> Value {
    json!({
        "actor": {"mbox": "mailto:admin@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": target},
    })
}

/// Stores a statement and voids it; returns its id and the voiding statement's ids.
async fn store_then_void(app: &TestApp) -> (String, Vec<String>) {
    let target = new_id();
    let original = with_id(
        statement("a@example.org", "passed", "https://x.example/exam"),
        &target,
    );
    assert_eq!(
        app.post_statements(&original).await.status(),
        StatusCode::OK
    );
    let voiding_ids: Vec<String> = app
        .post_statements(&voiding(&target))
        .await
        .json()
        .await
        .expect("ids");
    (target, voiding_ids)
}

#[tokio::test]
async fn a_voided_statement_is_only_reachable_by_voided_statement_id() {
    let app = TestApp::start().await;
    let (target, voiding_ids) = store_then_void(&app).await;

    let by_id = app
        .get(&format!("/xapi/statements?statementId={target}"))
        .await;
    assert_eq!(by_id.status(), StatusCode::NOT_FOUND);
    let by_voided = app
        .get(&format!("/xapi/statements?voidedStatementId={target}"))
        .await;
    assert_eq!(by_voided.status(), StatusCode::OK);
    let voided: Value = by_voided.json().await.expect("json");
    assert_eq!(voided["id"], json!(target));

    let listed = crate::helpers::ids(&app.get_all(&[]).await);
    assert_eq!(listed, voiding_ids, "only the voiding statement is listed");
    let voiding_id = &voiding_ids[0];
    let response = app
        .get(&format!("/xapi/statements?voidedStatementId={voiding_id}"))
        .await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "a voiding statement is not voided"
    );
}

#[tokio::test]
async fn voiding_a_voiding_statement_is_rejected() {
    let app = TestApp::start().await;
    let (_, voiding_ids) = store_then_void(&app).await;
    let response = app.post_statements(&voiding(&voiding_ids[0])).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["rule"], "voiding.target_not_voiding");
    let still_there = app
        .get(&format!("/xapi/statements?statementId={}", voiding_ids[0]))
        .await;
    assert_eq!(still_there.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_void_that_arrives_before_its_target_voids_it_on_arrival() {
    let app = TestApp::start().await;
    let target = new_id();
    assert_eq!(
        app.post_statements(&voiding(&target)).await.status(),
        StatusCode::OK
    );
    let original = with_id(
        statement("a@example.org", "passed", "https://x.example/exam"),
        &target,
    );
    assert_eq!(
        app.post_statements(&original).await.status(),
        StatusCode::OK
    );
    let by_id = app
        .get(&format!("/xapi/statements?statementId={target}"))
        .await;
    assert_eq!(by_id.status(), StatusCode::NOT_FOUND);
    let by_voided = app
        .get(&format!("/xapi/statements?voidedStatementId={target}"))
        .await;
    assert_eq!(by_voided.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_alternate_request_syntax_works_for_1_0_3_and_is_refused_for_2_0_0() {
    let app = TestApp::start().await;
    let authorization = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{KEY}:{SECRET}")
        )
    );
    let form = |version: &str, id: &str| {
        serde_urlencoded::to_string([
            ("statementId", id),
            ("X-Experience-API-Version", version),
            ("Authorization", authorization.as_str()),
            (
                "content",
                &statement("a@example.org", "attended", "https://x.example/1").to_string(),
            ),
        ])
        .expect("form")
    };
    let send = |body: String| {
        app.http
            .post(format!("{}/xapi/statements?method=PUT", app.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let id = new_id();
    let response = send(form("1.0.3", &id)).await.expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let stored = app.get(&format!("/xapi/statements?statementId={id}")).await;
    assert_eq!(stored.status(), StatusCode::OK);

    let refused = send(form("2.0.0", &new_id())).await.expect("http");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let extra = app
        .http
        .post(format!(
            "{}/xapi/statements?method=PUT&statementId={id}",
            app.base
        ))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form("1.0.3", &id))
        .send()
        .await
        .expect("http");
    assert_eq!(
        extra.status(),
        StatusCode::BAD_REQUEST,
        "parameters belong in the form"
    );
}

/// Single-statement writes that arrive together go to `LRS_IN` in shared messages (bundles),
/// and each request still hears its own verdict: of two writes under one id with other
/// content, one is stored and the other is a 409, whichever bundle each lands in.
#[tokio::test]
async fn writes_sent_together_are_bundled_and_each_answered_on_its_own() {
    let app = TestApp::start().await;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let ids: Vec<String> = (0..12).map(|_| new_id()).collect();
        let bodies: Vec<(String, Value)> = ids
            .iter()
            .enumerate()
            .flat_map(|(n, id)| {
                ["ann", "bob"].map(|who| {
                    let actor = format!("{who}{n}@example.org");
                    let body = with_id(statement(&actor, "attended", "https://x.example/1"), id);
                    (actor, body)
                })
            })
            .collect();
        let answers =
            futures::future::join_all(bodies.iter().map(|(_, body)| app.post_statements(body)))
                .await;
        let statuses: Vec<StatusCode> = answers.iter().map(|answer| answer.status()).collect();
        for (n, id) in ids.iter().enumerate() {
            let pair = &statuses[2 * n..2 * n + 2];
            let won = match pair {
                [StatusCode::OK, StatusCode::CONFLICT] => 0,
                [StatusCode::CONFLICT, StatusCode::OK] => 1,
                other => panic!("two writes under one id answered {other:?}"),
            };
            let response = app.get(&format!("/xapi/statements?statementId={id}")).await;
            assert_eq!(response.status(), StatusCode::OK);
            let stored: Value = response.json().await.expect("json");
            assert_eq!(
                stored["actor"]["mbox"],
                json!(format!("mailto:{}", bodies[2 * n + won].0)),
                "the write answered 200 is the one stored"
            );
        }
        let page = crate::operating::metrics_page(&app.base).await;
        let bundled = crate::operating::sample(
            &page,
            "leerspoor_gateway_statement_writes_total",
            &["sent=\"bundled\""],
        );
        if bundled.is_some_and(|bundled| bundled > 0.0) {
            break;
        }
        assert!(
            rounds < 20,
            "24 writes at once, 20 times, and never a bundle"
        );
    }
    app.stop().await;
}
