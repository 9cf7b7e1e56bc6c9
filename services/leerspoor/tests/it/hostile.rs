//! Hostile and oversized input against a real server: every bound answers with the error that
//! names it, nothing is stored from a refused request, and nothing a client sends stops the
//! gateway, the store or the projector.

use std::time::Duration;

use async_nats::jetstream;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use testkit::{wait_until, LocalOptions, Nats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::attachments::{attachment, multipart, BOUNDARY};
use crate::helpers::{
    config, hub_statement, new_id, run_leerspoor, start_node, statement, with_id, TestApp, KEY,
    SECRET, WAIT,
};
use leerspoor::node::Parts;

/// The JSON error of a refused request, after checking its status and code.
async fn refused(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status, "expected {code}");
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["code"], code, "{body}");
    body
}

#[tokio::test]
async fn thirty_thousand_statements_in_one_request_are_stored_and_counted() {
    let app = TestApp::start_with(Nats::start().await, |config| {
        config.limits.statements_per_request = 50_000;
        // Validating and applying 30,000 statements in a debug build on a busy machine takes
        // longer than the tests' usual 5 s.
        config.gateway.write_timeout_secs = 120;
    })
    .await;
    // Small statements (about 3 MB in all, as a kiosk's day might be).
    let batch: Vec<Value> = (0..30_000)
        .map(|n| {
            json!({"actor": {"mbox": format!("mailto:w{n}@x.o")},
                "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
                "object": {"id": "https://x.o/s"},
                "context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "bulk"}}})
        })
        .collect();
    let response = app.post_statements(&Value::Array(batch)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let ids: Vec<String> = response.json().await.expect("ids");
    assert_eq!(ids.len(), 30_000);
    // Their events did not fit one LRS_STORED message: the store split them and went on.
    let one_more = app
        .post_statements(&hub_statement("late@example.org", "bulk"))
        .await;
    assert_eq!(one_more.status(), StatusCode::OK, "the store still applies");
    wait_until("the projector counted all of them", WAIT * 3, || async {
        let hub = app.hub_summary("bulk").await?;
        (hub["statements"] == json!(30_001)).then_some(())
    })
    .await;
    assert!(app.is_running());
    app.stop().await;
}

#[tokio::test]
async fn every_limit_answers_with_its_own_code_and_stores_nothing() {
    let app = TestApp::start_with(Nats::start().await, |config| {
        config.limits.body_bytes = 64 * 1024;
        config.limits.statements_per_request = 5;
        config.limits.statement_bytes = 2_000;
        config.limits.json_depth = 8;
        config.limits.multipart_parts = 3;
        config.limits.document_bytes = 1_000;
        config.limits.hub_message_bytes = 4_000;
    })
    .await;
    let one = statement("a@example.org", "attended", "https://x.example/1");

    let big_body = Value::Array(vec![one.clone(); 1]).to_string() + &" ".repeat(70 * 1024);
    let response = app
        .request(Method::POST, "/xapi/statements")
        .header("Content-Type", "application/json")
        .body(big_body)
        .send()
        .await
        .expect("http");
    let body = refused(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert_eq!(body["limit"], "limits.body_bytes");
    assert_eq!(body["max"], 64 * 1024);

    let response = app.post_statements(&json!(vec![one.clone(); 6])).await;
    let body = refused(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_many_statements",
    )
    .await;
    assert_eq!(body["limit"], "limits.statements_per_request");

    let mut large = one.clone();
    large["object"]["definition"]["description"] = json!({"en": "x".repeat(3_000)});
    let response = app.post_statements(&json!([one.clone(), large])).await;
    let body = refused(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "statement_too_large",
    )
    .await;
    assert_eq!(body["statement"], 1);

    let mut deep = one.clone();
    deep["result"] = json!({"extensions": {"https://x.example/e": [[[[[[[[1]]]]]]]]}});
    let response = app.post_statements(&deep).await;
    refused(response, StatusCode::BAD_REQUEST, "json_too_deep").await;

    let parts: Vec<(&str, &[u8])> = vec![
        ("text/plain", b"a"),
        ("text/plain", b"b"),
        ("text/plain", b"c"),
    ];
    let with_three: Vec<Value> = parts
        .iter()
        .map(|(content_type, content)| {
            let mut with = one.clone();
            with["attachments"] =
                json!([attachment("https://x.example/usage", content_type, content)]);
            with
        })
        .collect();
    let response = app
        .request(Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(multipart(&json!(with_three), &parts))
        .send()
        .await
        .expect("http");
    refused(response, StatusCode::PAYLOAD_TOO_LARGE, "too_many_parts").await;

    let long_boundary = "b".repeat(71);
    let response = app
        .request(Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={long_boundary}"),
        )
        .body(format!(
            "--{long_boundary}\r\n\r\n{{}}\r\n--{long_boundary}--"
        ))
        .send()
        .await
        .expect("http");
    refused(response, StatusCode::BAD_REQUEST, "boundary_too_long").await;

    let response = app.get("/xapi/statements?limit=101").await;
    let body = refused(response, StatusCode::BAD_REQUEST, "query_limit_too_large").await;
    assert_eq!(body["max"], 100);

    let response = app
        .http
        .get(format!("{}/summaries/hubs?limit=501", app.base))
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .expect("http");
    refused(response, StatusCode::BAD_REQUEST, "query_limit_too_large").await;

    let state = "/xapi/activities/state?activityId=https%3A%2F%2Fx.example%2F1&agent=%7B%22mbox%22%3A%22mailto%3Aa%40example.org%22%7D&stateId=s";
    let response = app
        .request(Method::PUT, state)
        .header("Content-Type", "text/plain")
        .body("x".repeat(2_000))
        .send()
        .await
        .expect("http");
    refused(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "document_too_large",
    )
    .await;

    // A hub's oversized message goes to LRS_REJECTED with the limit as its rule.
    let client = app.nats_client().await;
    let js = jetstream::new(client);
    let mut huge = hub_statement("a@example.org", "eindhoven");
    huge["object"]["definition"]["description"] = json!({"en": "y".repeat(5_000)});
    js.publish("lrs.in.hub.eindhoven", huge.to_string().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let rejected = wait_until("the rejection", WAIT, || async {
        let stream = js.get_stream(bus::subjects::STREAM_REJECTED).await.ok()?;
        let message = stream.get_raw_message(1).await.ok()?;
        serde_json::from_slice::<bus::wire::RejectedMessage>(&message.payload).ok()
    })
    .await;
    assert_eq!(rejected.rejection.rule, "limits.hub_message_bytes");

    assert!(app.get_all(&[]).await.is_empty(), "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_signed_statement_whose_duration_is_a_multibyte_string_gets_an_answer() {
    let app = TestApp::start().await;
    let mut signed = statement("ann@example.org", "passed", "https://x.example/exam");
    signed["id"] = json!(new_id());
    signed["result"] = json!({"duration": "éS"});
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jws = format!(
        "{}.{}.{}",
        encode(br#"{"alg":"RS256"}"#),
        encode(signed.to_string().as_bytes()),
        encode(b"signature")
    );
    let mut with = signed.clone();
    with["attachments"] = json!([attachment(
        xapi::USAGE_SIGNATURE,
        "application/octet-stream",
        jws.as_bytes()
    )]);
    let response = app
        .request(Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(multipart(
            &with,
            &[("application/octet-stream", jws.as_bytes())],
        ))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    let body = refused(response, StatusCode::BAD_REQUEST, "invalid_statement").await;
    assert_eq!(body["path"], "/result/duration");
    assert!(app.get_all(&[]).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn two_statements_of_four_and_a_half_megabytes_are_paged_exported_and_rebuilt() {
    let app = TestApp::start_with(Nats::start().await, |config| {
        config.limits.statement_bytes = 5 * 1024 * 1024;
        config.gateway.write_timeout_secs = 120;
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let mut large = hub_statement("big@example.org", "large");
        large["object"]["definition"]["description"] =
            json!({"en": format!("{n}{}", "z".repeat(4_500_000))});
        let response = app.post_statements(&large).await;
        assert_eq!(response.status(), StatusCode::OK);
        ids.extend(response.json::<Vec<String>>().await.expect("ids"));
    }
    let agent = r#"{"mbox":"mailto:big@example.org"}"#;
    let first: Value = app
        .get(&format!("/xapi/statements?agent={}", urlencoding(agent)))
        .await
        .json()
        .await
        .expect("page");
    assert_eq!(
        first["statements"].as_array().map(Vec::len),
        Some(1),
        "one per page"
    );
    let more = first["more"].as_str().expect("more").to_owned();
    assert!(!more.is_empty(), "the second is linked");
    let all = app.get_all(&[("agent", agent)]).await;
    assert_eq!(all.len(), 2);

    let export: Value = app
        .request_with(
            KEY,
            Method::GET,
            &format!("/admin/exports?agent={}", urlencoding(agent)),
        )
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("export");
    assert_eq!(export["statements"].as_array().map(Vec::len), Some(2));

    wait_until("both counted", WAIT, || async {
        (app.hub_summary("large").await?["statements"] == json!(2)).then_some(())
    })
    .await;
    let nats_url = app.nats.url();
    let output = run_leerspoor(&["project", "--rebuild", "--nats-url", &nats_url], None).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        app.hub_summary("large").await.expect("hub")["statements"],
        json!(2)
    );
    app.stop().await;
}

fn urlencoding(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).expect("encode")[1..].to_owned()
}

#[tokio::test]
async fn a_request_retried_after_a_503_is_stored_once_and_a_repeat_after_an_answer_is_new() {
    let nats = Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let gateway = start_node(config(&nats.url(), data.path()), Parts::Gateway).await;
    let store = start_node(config(&nats.url(), data.path()), Parts::Store).await;
    let app = TestApp::attach(
        nats,
        format!("http://{}", gateway.http_addr.expect("gateway")),
    );
    app.wait_for_credential().await;
    let body = json!([
        statement("a@example.org", "attended", "https://x.example/1"),
        statement("b@example.org", "attended", "https://x.example/1"),
    ]);
    // Answered, then the same content again: two requests, four statements, as xAPI has it.
    let first: Vec<String> = app.post_statements(&body).await.json().await.expect("ids");
    let repeat: Vec<String> = app.post_statements(&body).await.json().await.expect("ids");
    assert_ne!(first, repeat);
    assert_eq!(app.get_all(&[]).await.len(), 4);

    // Without a store the write is queued but unconfirmed: 503, and the client retries.
    store.stop().await;
    let lost = app.post_statements(&body).await;
    let answer = refused(lost, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(answer["message"]
        .as_str()
        .is_some_and(|m| m.contains("retrying the same request is safe")));
    let store = start_node(config(&app.nats.url(), data.path()), Parts::Store).await;
    let retried = app.post_statements(&body).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Vec<String> = retried.json().await.expect("ids");
    assert_eq!(
        app.get_all(&[]).await.len(),
        6,
        "the queued attempt and its retry are one"
    );
    let stored: Vec<String> = app
        .get_all(&[])
        .await
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(
        retried.iter().all(|id| stored.contains(id)),
        "the retry answers the stored ids"
    );
    store.stop().await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_batch_too_large_for_one_nats_message_is_a_413_and_smaller_ones_flow_split() {
    let nats = Nats::start_with(LocalOptions {
        max_payload: 256 * 1024,
        ..LocalOptions::default()
    })
    .await;
    let app = TestApp::start_with(nats, |config| {
        config.limits.statement_bytes = 100 * 1024;
    })
    .await;
    let padded = |n: usize| {
        let mut one = hub_statement(&format!("p{n}@example.org"), "small-bus");
        one["object"]["definition"]["description"] = json!({"en": "p".repeat(2_000)});
        one
    };
    let too_many: Vec<Value> = (0..200).map(padded).collect();
    let response = app.post_statements(&Value::Array(too_many)).await;
    let body = refused(response, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large").await;
    assert_eq!(body["limit"], "nats max_payload");
    // 100 of them fit the request message, but not one LRS_STORED message with what the
    // store adds: the events are split, and all are counted.
    let fitting: Vec<Value> = (0..100).map(padded).collect();
    let response = app.post_statements(&Value::Array(fitting)).await;
    assert_eq!(response.status(), StatusCode::OK);
    wait_until("all 100 counted", WAIT, || async {
        (app.hub_summary("small-bus").await?["statements"] == json!(100)).then_some(())
    })
    .await;
    app.stop().await;
}

/// Sends raw bytes and returns what the server answered before closing or `wait` passed.
async fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn unauthenticated_requests_are_answered_before_their_body_is_read() {
    let app = TestApp::start().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Headers that promise 100 MB, and no body at all: the answer cannot wait for it.
    for (target, auth) in [
        ("/xapi/statements", ""),
        (
            "/xapi/statements",
            "Authorization: Basic dG9vbDp3cm9uZw==\r\n",
        ),
        (
            "/xapi/statements?method=PUT",
            "Authorization: Basic dG9vbDp3cm9uZw==\r\n",
        ),
    ] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nX-Experience-API-Version: 1.0.3\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000\r\n\r\n"
        );
        let answer = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{target}: {answer}");
    }
    // An alternate-syntax form with its credentials inside is read only so far.
    let form = format!(
        "Authorization={}&X-Experience-API-Version=1.0.3&content={}",
        urlencoding(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
        )),
        "x".repeat(100 * 1024)
    );
    let response = app
        .http
        .post(format!("{}/xapi/statements?method=PUT", app.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("http");
    let body = refused(response, StatusCode::PAYLOAD_TOO_LARGE, "form_too_large").await;
    assert_eq!(body["limit"], "limits.unauthenticated_form_bytes");
    app.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let app = TestApp::start_with(Nats::start().await, |config| {
        config.limits.header_read_timeout_secs = 1;
        config.limits.body_read_timeout_secs = 1;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Headers that never end: the connection is closed.
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /xapi/about HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the server closed the connection");
    // A body that never comes: 408 naming the deadline.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"));
    let request = format!(
        "POST /xapi/statements HTTP/1.1\r\nHost: x\r\nX-Experience-API-Version: 1.0.3\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"actor\""
    );
    let answer = raw_exchange(&addr, request.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout"), "{answer}");
    app.stop().await;
}

#[tokio::test]
async fn the_alternate_syntax_is_only_for_the_xapi_routes() {
    let app = TestApp::start().await;
    let response = app
        .http
        .post(format!("{}/summaries/hubs?method=GET", app.base))
        .basic_auth(KEY, Some(SECRET))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("limit=1")
        .send()
        .await
        .expect("http");
    assert_eq!(
        response.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "not rewritten into a GET"
    );
    app.stop().await;
}

#[tokio::test]
async fn documents_are_linearizable_over_http() {
    let app = TestApp::start().await;
    let url = "/xapi/activities/state?activityId=https%3A%2F%2Fx.example%2F1&agent=%7B%22mbox%22%3A%22mailto%3Aa%40example.org%22%7D&stateId=merged";
    let merges = (0..100).map(|n| {
        app.request_as("2.0.0", Method::POST, url)
            .json(&json!({ format!("key{n}"): n }))
            .send()
    });
    for response in futures::future::join_all(merges).await {
        assert_eq!(response.expect("http").status(), StatusCode::NO_CONTENT);
    }
    let merged: Value = app
        .request_as("2.0.0", Method::GET, url)
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(
        merged.as_object().map(|object| object.len()),
        Some(100),
        "every merge kept"
    );

    let etag = app
        .request_as("2.0.0", Method::GET, url)
        .send()
        .await
        .expect("http")
        .headers()["etag"]
        .to_str()
        .expect("etag")
        .to_owned();
    let writes = (0..2).map(|n| {
        app.request_as("2.0.0", Method::PUT, url)
            .header("If-Match", &etag)
            .json(&json!({ "winner": n }))
            .send()
    });
    let mut statuses: Vec<u16> = futures::future::join_all(writes)
        .await
        .into_iter()
        .map(|response| response.expect("http").status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [204, 412],
        "exactly one write with that ETag wins"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_credential_reading_only_its_own_learns_nothing_from_other_credentials() {
    let app = TestApp::start().await;
    use bus::access::Scope;
    app.grant(
        "kiosk",
        &[
            Scope::StatementsWrite,
            Scope::StatementsReadMine,
            Scope::State,
            Scope::Define,
        ],
        None,
    )
    .await;
    // The full credential writes a statement with a named person, a defined activity and an
    // attachment body, and a State document.
    let body = b"the other credential's certificate";
    let mut theirs = statement("ann@example.org", "completed", "https://x.example/course");
    theirs["actor"]["name"] = json!("Ann Secret");
    theirs["object"]["definition"] = json!({"name": {"en": "Secret course name"}});
    theirs["attachments"] = json!([attachment(
        "https://x.example/certificate",
        "text/plain",
        body
    )]);
    let response = app
        .request(Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(multipart(&theirs, &[("text/plain", body)]))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    let state = "/xapi/activities/state?activityId=https%3A%2F%2Fx.example%2Fcourse&agent=%7B%22mbox%22%3A%22mailto%3Aann%40example.org%22%7D";
    let response = app
        .request_as("2.0.0", Method::PUT, &format!("{state}&stateId=progress"))
        .json(&json!({"secret": true}))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // The kiosk points at the same body by hash (with a fileUrl), about the same person.
    let mut mine = statement("ann@example.org", "attended", "https://x.example/course");
    mine["attachments"] = json!([{
        "usageType": "https://x.example/certificate", "display": {"en": "certificate"},
        "contentType": "text/plain", "length": body.len(),
        "sha2": format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(body)),
        "fileUrl": "https://x.example/elsewhere"
    }]);
    let response = app
        .request_with("kiosk", Method::POST, "/xapi/statements")
        .json(&mine)
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);

    let as_kiosk = |path: &str| app.request_with("kiosk", Method::GET, path).send();
    let document = as_kiosk(&format!("{state}&stateId=progress"))
        .await
        .expect("http");
    assert_eq!(
        document.status(),
        StatusCode::NOT_FOUND,
        "another's document"
    );
    let listed: Value = as_kiosk(state)
        .await
        .expect("http")
        .json()
        .await
        .expect("ids");
    assert_eq!(listed, json!([]));
    let person: Value =
        as_kiosk("/xapi/agents?agent=%7B%22mbox%22%3A%22mailto%3Aann%40example.org%22%7D")
            .await
            .expect("http")
            .json()
            .await
            .expect("person");
    assert!(!person.to_string().contains("Ann Secret"), "{person}");
    let activity: Value = as_kiosk("/xapi/activities?activityId=https%3A%2F%2Fx.example%2Fcourse")
        .await
        .expect("http")
        .json()
        .await
        .expect("activity");
    assert!(
        !activity.to_string().contains("Secret course name"),
        "{activity}"
    );
    let with_bodies = as_kiosk("/xapi/statements?attachments=true")
        .await
        .expect("http");
    assert_eq!(with_bodies.status(), StatusCode::OK);
    let bytes = with_bodies.bytes().await.expect("body");
    assert!(
        !bytes.windows(body.len()).any(|window| window == body),
        "another credential's attachment body"
    );
    // What the full credential sees is unchanged.
    let full: Value = app
        .get("/xapi/agents?agent=%7B%22mbox%22%3A%22mailto%3Aann%40example.org%22%7D")
        .await
        .json()
        .await
        .expect("person");
    assert!(full.to_string().contains("Ann Secret"));
    app.stop().await;
}

#[tokio::test]
async fn an_unreadable_stored_message_is_parked_and_sums_survive_their_extremes() {
    let app = TestApp::start().await;
    let client = app.nats_client().await;
    let js = jetstream::new(client);
    js.publish(bus::subjects::STORED_EVENTS, "not events".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let nats_url = app.nats.url();
    wait_until("the message is parked", WAIT, || async {
        let output = run_leerspoor(&["project", "--parked", "--nats-url", &nats_url], None).await;
        String::from_utf8_lossy(&output.stdout)
            .contains("1 parked message")
            .then_some(())
    })
    .await;

    let endless = |id: &str| {
        let mut one = with_id(hub_statement("long@example.org", "extremes"), id);
        one["result"] = json!({"duration": "PT9999999999999999999S"});
        one
    };
    let (first, second) = (new_id(), new_id());
    for id in [&first, &second] {
        assert_eq!(
            app.post_statements(&endless(id)).await.status(),
            StatusCode::OK
        );
    }
    let hub_seconds = || async {
        app.hub_summary("extremes")
            .await
            .map(|hub| (hub["statements"].clone(), hub["attended_seconds"].clone()))
    };
    let (_, both) = wait_until("both counted", WAIT, || async {
        hub_seconds().await.filter(|(count, _)| *count == json!(2))
    })
    .await;
    assert!(both.as_f64().is_some_and(f64::is_finite), "{both}");
    let void = json!({"actor": {"mbox": "mailto:long@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": second}});
    assert_eq!(app.post_statements(&void).await.status(), StatusCode::OK);
    let (_, one) = wait_until("one left", WAIT, || async {
        hub_seconds().await.filter(|(count, _)| *count == json!(1))
    })
    .await;
    assert_eq!(
        one.as_f64().map(|seconds| seconds * 2.0),
        both.as_f64(),
        "taken back exactly"
    );
    assert!(app.is_running());
    app.stop().await;
}

#[tokio::test]
async fn an_erasure_leaves_no_rejection_that_quotes_the_person() {
    let app = TestApp::start().await;
    let js = jetstream::new(app.nats_client().await);
    // A hub sends a statement about Ann naming another hub: rejected, kept for replay.
    js.publish(
        "lrs.in.hub.eindhoven",
        hub_statement("ann@example.org", "delft").to_string().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("ack");
    let messages = || async {
        let mut stream = js.get_stream(bus::subjects::STREAM_REJECTED).await.ok()?;
        Some(stream.info().await.ok()?.state.messages)
    };
    wait_until("the rejection", WAIT, || async {
        (messages().await? == 1).then_some(())
    })
    .await;
    let response = app
        .request_with(KEY, Method::POST, "/admin/erasures")
        .json(&json!({"agent": {"mbox": "mailto:ann@example.org"}, "reason": "ticket 9"}))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    wait_until("the rejection quoting her is gone", WAIT, || async {
        (messages().await? == 0).then_some(())
    })
    .await;
    app.stop().await;
}
