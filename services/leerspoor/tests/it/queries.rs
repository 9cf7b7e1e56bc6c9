use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{config, ids, new_id, start_node, statement, with_id, TestApp};

const ATTENDED: &str = "http://adlnet.gov/expapi/verbs/attended";
const COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";

/// Posts statements one request at a time, so their `stored` order is the order given.
async fn post_each(app: &TestApp, statements: &[Value]) -> Vec<String> {
    let mut posted = Vec::new();
    for statement in statements {
        let response = app.post_statements(statement).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut ids: Vec<String> = response.json().await.expect("ids");
        posted.append(&mut ids);
    }
    posted
}

#[tokio::test]
async fn every_filter_selects_exactly_its_statements() {
    let app = TestApp::start().await;
    let registration = new_id();
    let mut in_course = statement("ann@example.org", "completed", "https://x.example/module/1");
    in_course["context"] = json!({
        "registration": registration,
        "instructor": {"mbox": "mailto:teacher@example.org"},
        "contextActivities": {"parent": {"id": "https://x.example/course"}},
    });
    let posted = post_each(
        &app,
        &[
            statement("ann@example.org", "attended", "https://x.example/session/1"),
            statement("bob@example.org", "attended", "https://x.example/session/1"),
            in_course,
            statement("bob@example.org", "completed", "https://x.example/module/2"),
        ],
    )
    .await;
    let ann = r#"{"mbox":"mailto:ann@example.org"}"#;
    let teacher = r#"{"mbox":"mailto:teacher@example.org"}"#;
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (vec![("agent", ann)], vec![2, 0]),
        (vec![("verb", ATTENDED)], vec![1, 0]),
        (vec![("verb", COMPLETED), ("agent", ann)], vec![2]),
        (
            vec![("activity", "https://x.example/session/1")],
            vec![1, 0],
        ),
        (vec![("activity", "https://x.example/course")], vec![]),
        (
            vec![
                ("activity", "https://x.example/course"),
                ("related_activities", "true"),
            ],
            vec![2],
        ),
        (vec![("agent", teacher)], vec![]),
        (
            vec![("agent", teacher), ("related_agents", "true")],
            vec![2],
        ),
        (vec![("registration", registration.as_str())], vec![2]),
        (vec![("verb", ATTENDED), ("ascending", "true")], vec![0, 1]),
        (vec![], vec![3, 2, 1, 0]),
    ];
    for (query, expected) in cases {
        let found = ids(&app.get_all(&query).await);
        let wanted: Vec<String> = expected
            .iter()
            .map(|index| posted[*index].clone())
            .collect();
        assert_eq!(found, wanted, "query {query:?}");
    }
}

#[tokio::test]
async fn since_and_until_bound_the_stored_time() {
    let app = TestApp::start().await;
    let posted = post_each(
        &app,
        &[
            statement("a@example.org", "attended", "https://x.example/1"),
            statement("b@example.org", "attended", "https://x.example/1"),
            statement("c@example.org", "attended", "https://x.example/1"),
        ],
    )
    .await;
    let all = app.get_all(&[("ascending", "true")]).await;
    let stored: Vec<String> = all
        .iter()
        .map(|statement| statement["stored"].as_str().expect("stored").to_owned())
        .collect();
    let after_first = ids(&app
        .get_all(&[("since", &stored[0]), ("ascending", "true")])
        .await);
    let expected: Vec<String> = posted
        .iter()
        .zip(&stored)
        .filter(|(_, at)| at.as_str() > stored[0].as_str())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(after_first, expected, "since is exclusive");
    let up_to_first = ids(&app
        .get_all(&[("until", &stored[0]), ("ascending", "true")])
        .await);
    let expected: Vec<String> = posted
        .iter()
        .zip(&stored)
        .filter(|(_, at)| at.as_str() <= stored[0].as_str())
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(up_to_first, expected, "until is inclusive");
}

#[tokio::test]
async fn paging_through_more_returns_every_statement_once_in_order() {
    let app = TestApp::start().await;
    let batch: Vec<Value> = (0..25)
        .map(|n| {
            with_id(
                statement(
                    &format!("w{n}@example.org"),
                    "attended",
                    "https://x.example/1",
                ),
                &new_id(),
            )
        })
        .collect();
    let response = app.post_statements(&Value::Array(batch.clone())).await;
    assert_eq!(response.status(), StatusCode::OK);
    let posted: Vec<String> = response.json().await.expect("ids");

    let first_page: Value = app
        .get("/xapi/statements?limit=10&ascending=true")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first_page["statements"].as_array().map(Vec::len), Some(10));
    assert!(first_page["more"]
        .as_str()
        .is_some_and(|more| more.starts_with("/xapi/statements?")));

    let ascending = ids(&app.get_all(&[("limit", "10"), ("ascending", "true")]).await);
    assert_eq!(ascending, posted);
    let mut descending = ids(&app.get_all(&[("limit", "7")]).await);
    descending.reverse();
    assert_eq!(descending, posted);
}

#[tokio::test]
async fn formats_shape_the_statements() {
    let app = TestApp::start().await;
    let mut body = statement("ann@example.org", "attended", "https://x.example/1");
    body["verb"]["display"] = json!({"en-US": "attended", "nl-NL": "woonde bij"});
    let posted = post_each(&app, &[body]).await;
    let id = &posted[0];

    let ids_format: Value = app
        .get(&format!("/xapi/statements?statementId={id}&format=ids"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ids_format["actor"],
        json!({"objectType": "Agent", "mbox": "mailto:ann@example.org"})
    );
    assert_eq!(ids_format["object"], json!({"id": "https://x.example/1"}));

    let canonical: Value = app
        .request(
            reqwest::Method::GET,
            &format!("/xapi/statements?statementId={id}&format=canonical"),
        )
        .header("Accept-Language", "nl-NL, en;q=0.5")
        .send()
        .await
        .expect("http")
        .json()
        .await
        .expect("json");
    assert_eq!(canonical["verb"]["display"], json!({"nl-NL": "woonde bij"}));

    let exact: Value = app
        .get(&format!("/xapi/statements?statementId={id}&format=exact"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        exact["verb"]["display"].as_object().map(|map| map.len()),
        Some(2)
    );

    let multipart = app
        .get(&format!(
            "/xapi/statements?statementId={id}&attachments=true"
        ))
        .await;
    assert_eq!(multipart.status(), StatusCode::OK);
    let content_type = multipart.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(content_type.starts_with("multipart/mixed; boundary="));
    let text = multipart.text().await.expect("body");
    assert!(text.contains(id.as_str()));
}

#[tokio::test]
async fn a_statement_that_references_a_match_matches_too() {
    let app = TestApp::start().await;
    let target = new_id();
    let original = with_id(
        statement("a@example.org", "passed", "https://x.example/exam"),
        &target,
    );
    let referrer = json!({
        "actor": {"mbox": "mailto:b@example.org"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/commented"},
        "object": {"objectType": "StatementRef", "id": target},
    });
    let posted = post_each(&app, &[original, referrer]).await;
    let found = ids(&app
        .get_all(&[("verb", "http://adlnet.gov/expapi/verbs/passed")])
        .await);
    assert_eq!(found, vec![posted[1].clone(), posted[0].clone()]);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = TestApp::start().await;
    let posted = post_each(
        &app,
        &[statement(
            "a@example.org",
            "attended",
            "https://x.example/1",
        )],
    )
    .await;
    let response = app
        .request(
            reqwest::Method::HEAD,
            &format!("/xapi/statements?statementId={}", posted[0]),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .contains_key("x-experience-api-consistent-through"));
    assert!(response.headers().contains_key("last-modified"));
    assert!(response.bytes().await.expect("body").is_empty());
    let missing = app
        .request(
            reqwest::Method::HEAD,
            &format!("/xapi/statements?statementId={}", new_id()),
        )
        .send()
        .await
        .expect("http");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// A statement by id in the exact format (sent as the store holds it, as a page's are) is the
/// text a page holds for it, as JSON, with its `stored` as its `Last-Modified`.
#[tokio::test]
async fn a_statement_by_id_is_sent_as_a_page_sends_it() {
    #[derive(serde::Deserialize)]
    struct Page {
        statements: Vec<Box<serde_json::value::RawValue>>,
    }
    let app = TestApp::start().await;
    let mut sent = statement("a@example.org", "attended", "https://x.example/1");
    sent["context"] = json!({"language": "nl-NL", "platform": "fieldlab"});
    let posted = post_each(&app, &[sent]).await;
    let page = app.get("/xapi/statements?limit=1").await.text().await;
    let page: Page = serde_json::from_str(&page.expect("body")).expect("page");
    let one = app
        .get(&format!("/xapi/statements?statementId={}", posted[0]))
        .await;
    assert_eq!(one.status(), StatusCode::OK);
    assert_eq!(
        one.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let last_modified = one
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("last-modified");
    let text = one.text().await.expect("body");
    assert_eq!(text, page.statements[0].get());
    let read: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(read["id"], json!(posted[0]));
    let stored = chrono::DateTime::parse_from_rfc3339(read["stored"].as_str().expect("stored"))
        .expect("stored time");
    let modified = chrono::DateTime::parse_from_rfc2822(&last_modified).expect("an HTTP date");
    assert_eq!(modified.timestamp(), stored.timestamp());
}

#[tokio::test]
async fn every_get_answer_says_how_consistent_it_is_errors_included() {
    let app = TestApp::start().await;
    for query in ["", "?limit=nope", &format!("?statementId={}", new_id())] {
        let response = app.get(&format!("/xapi/statements{query}")).await;
        let through = response.headers()["x-experience-api-consistent-through"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            xapi::time::parse_timestamp(&through).is_ok(),
            "{query}: {through}"
        );
    }
}

/// A page as stored (the store joins it, the gateway sends it unread) says what a page in
/// another format says: the same statements, the same link to the rest, and a
/// `Last-Modified` that is its latest `stored`.
#[tokio::test]
async fn exact_pages_go_out_as_stored_and_agree_with_other_formats() {
    let app = TestApp::start().await;
    let posted = post_each(
        &app,
        &(0..5)
            .map(|n| {
                statement(
                    "pages@example.org",
                    "attended",
                    &format!("https://x.example/{n}"),
                )
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let mut pages = Vec::new();
    for format in ["exact", "ids"] {
        let mut next =
            format!("/xapi/statements?verb={ATTENDED}&limit=2&ascending=true&format={format}");
        let mut seen = Vec::new();
        while !next.is_empty() {
            let response = app.get(&next).await;
            assert_eq!(response.status(), StatusCode::OK);
            let last_modified = response
                .headers()
                .get("last-modified")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .expect("last-modified");
            let page: Value = response.json().await.expect("a page in JSON");
            let statements = page["statements"].as_array().expect("statements");
            if format == "exact" {
                let latest = statements
                    .iter()
                    .filter_map(|statement| statement["stored"].as_str())
                    .max()
                    .expect("stored");
                let latest = chrono::DateTime::parse_from_rfc3339(latest).expect("stored");
                assert_eq!(
                    last_modified,
                    latest
                        .to_utc()
                        .format("%a, %d %b %Y %H:%M:%S GMT")
                        .to_string()
                );
            }
            seen.push((ids(statements), last_modified));
            next = page["more"].as_str().expect("more").to_owned();
        }
        pages.push(seen);
    }
    assert_eq!(pages[0], pages[1]);
    let all: Vec<String> = pages[0].iter().flat_map(|(ids, _)| ids.clone()).collect();
    assert_eq!(all, posted);
    assert_eq!(pages[0].len(), 3);
}

/// A store from before joined pages ignores the request for one and answers JSON: the gateway
/// reads that page as before (here a stand-in answers as such a store would, after the real
/// store made the credential and stopped).
#[tokio::test]
async fn a_page_from_a_store_that_does_not_join_pages_is_answered_alike() {
    use futures::StreamExt;
    let nats = testkit::Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let gateway = start_node(
        config(&nats.url(), data.path()),
        leerspoor::node::Parts::Gateway,
    )
    .await;
    let store = start_node(
        config(&nats.url(), data.path()),
        leerspoor::node::Parts::Store,
    )
    .await;
    let app = TestApp::attach(
        nats,
        format!("http://{}", gateway.http_addr.expect("gateway")),
    );
    app.wait_for_credential().await;
    store.stop().await;

    let client = app.nats_client().await;
    let mut asked = client
        .queue_subscribe(
            bus::subjects::API_STATEMENTS,
            bus::subjects::API_QUEUE.to_owned(),
        )
        .await
        .expect("subscribe");
    let older = [
        json!({"id": new_id(), "stored": "2026-03-01T10:00:05.000Z", "verb": {"id": ATTENDED}}),
        json!({"id": new_id(), "stored": "2026-03-01T10:00:09.000Z", "verb": {"id": ATTENDED}}),
    ];
    let answering = {
        let client = client.clone();
        let older = older.clone();
        tokio::spawn(async move {
            let request = asked.next().await.expect("a query");
            let query: serde_json::Map<String, Value> =
                serde_json::from_slice(&request.payload).expect("a query in JSON");
            // The old store's page: no `last_modified`, whatever the query asked for.
            let page = json!({"kind": "page", "statements": older, "next_after": 41,
                "consistent_through": "2026-03-01T10:00:10.000Z"});
            client
                .publish(
                    request.reply.expect("a reply subject"),
                    serde_json::to_vec(&page).expect("json").into(),
                )
                .await
                .expect("reply");
            client.flush().await.expect("flush");
            query
        })
    };
    let response = app
        .get(&format!("/xapi/statements?verb={ATTENDED}&limit=2"))
        .await;
    let query = answering.await.expect("answered");
    assert_eq!(
        query.get("joined"),
        Some(&json!(true)),
        "the gateway asked for a joined page"
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok()),
        Some("Sun, 01 Mar 2026 10:00:09 GMT")
    );
    let page: Value = response.json().await.expect("a page");
    assert_eq!(page["statements"], json!(older));
    let more = page["more"].as_str().expect("more");
    assert!(more.contains("cursor=41"), "{more}");
    gateway.stop().await;
}

/// The `consistent_through` of [`stand_in_replica`]'s pages.
const STAND_IN_TIME: &str = "2026-03-01T10:00:10.000Z";

/// Answers every request on `subject` in the queue group `queue` with `reply`, counting them:
/// a stand-in replica that a read which went over NATS could reach.
async fn stand_in(
    client: &async_nats::Client,
    subject: &'static str,
    queue: &str,
    reply: Value,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use futures::StreamExt;
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut requests = client
        .queue_subscribe(subject, queue.to_owned())
        .await
        .expect("subscribe");
    // The server has the subscription before anyone asks.
    client.flush().await.expect("flush");
    let (client, counted) = (client.clone(), asked.clone());
    let body = serde_json::to_vec(&reply).expect("json");
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(to) = request.reply {
                let _ = client.publish(to, body.clone().into()).await;
            }
        }
    });
    asked
}

/// A stand-in store replica that answers every statement query with an empty page.
async fn stand_in_replica(
    client: &async_nats::Client,
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let page = json!({"kind": "page", "statements": [], "next_after": null,
        "consistent_through": STAND_IN_TIME});
    stand_in(
        client,
        bus::subjects::API_STATEMENTS,
        bus::subjects::API_QUEUE,
        page,
    )
    .await
}

/// `serve` reads statements, documents and summaries from the store and the projector in its
/// own process, never through nats-server: other replicas on their queue groups (here
/// stand-ins that answer empty pages, or nonsense) are never asked, and every read sees what
/// was just written.
#[tokio::test]
async fn serve_reads_from_its_own_store_and_projector_without_nats() {
    use std::sync::atomic::Ordering::SeqCst;
    let app = TestApp::start().await;
    let client = app.nats_client().await;
    let statements = stand_in_replica(&client).await;
    let nonsense = |subject, queue| stand_in(&client, subject, queue, json!("x"));
    let (store_queue, projector_queue) = (bus::subjects::API_QUEUE, bus::subjects::SUMMARY_QUEUE);
    let documents = nonsense(bus::subjects::API_DOCUMENTS, store_queue).await;
    let objects = nonsense(bus::subjects::API_OBJECTS, store_queue).await;
    let summaries = nonsense(bus::subjects::API_SUMMARIES, projector_queue).await;
    let posted = post_each(
        &app,
        &[
            statement("ann@example.org", "attended", "https://x.example/session/1"),
            statement("ann@example.org", "completed", "https://x.example/module/1"),
        ],
    )
    .await;
    let ann = r#"{"mbox":"mailto:ann@example.org"}"#;
    let state = format!(
        "/xapi/activities/state?{}",
        serde_urlencoded::to_string([
            ("activityId", "https://x.example/module/1"),
            ("agent", ann),
            ("stateId", "bookmark")
        ])
        .expect("query")
    );
    let put = app
        .request(reqwest::Method::PUT, &state)
        .header("Content-Type", "application/json")
        .body(r#"{"page": 7}"#)
        .send()
        .await
        .expect("http");
    assert_eq!(put.status(), StatusCode::NO_CONTENT);
    let by_agent = format!(
        "/xapi/statements?{}",
        serde_urlencoded::to_string([("agent", ann)]).expect("query")
    );
    let summary = format!(
        "/summaries/workers?{}",
        serde_urlencoded::to_string([("agent", ann)]).expect("query")
    );
    // The projector follows the store: its summary shows both statements in a moment.
    let worker = testkit::wait_until(
        "ann's summary",
        std::time::Duration::from_secs(20),
        || async {
            let found = crate::helpers::summary_at(&app.base, &summary).await?;
            (found["statements"] == json!(2)).then_some(found)
        },
    )
    .await;
    let newest_first: Vec<String> = posted.iter().rev().cloned().collect();
    for round in 0..5 {
        let page: Value = app.get(&by_agent).await.json().await.expect("page");
        let found = page["statements"].as_array().expect("statements");
        assert_eq!(ids(found), newest_first, "round {round}");
        let one: Value = app
            .get(&format!("/xapi/statements?statementId={}", posted[0]))
            .await
            .json()
            .await
            .expect("statement");
        assert_eq!(one["id"], json!(posted[0]), "round {round}");
        let document: Value = app.get(&state).await.json().await.expect("document");
        assert_eq!(document, json!({"page": 7}), "round {round}");
        let activity = app
            .get("/xapi/activities?activityId=https%3A%2F%2Fx.example%2Fmodule%2F1")
            .await;
        assert_eq!(activity.status(), StatusCode::OK, "round {round}");
        let read = crate::helpers::summary_at(&app.base, &summary).await;
        assert_eq!(read.as_ref(), Some(&worker), "round {round}");
    }
    for (what, asked) in [
        ("a statement read", &statements),
        ("a document read", &documents),
        ("an activity read", &objects),
        ("a summary read", &summaries),
    ] {
        assert_eq!(asked.load(SeqCst), 0, "{what} went over NATS");
    }
    // And an operator sees it: reads by way of the process, none by way of NATS.
    let page = crate::operating::metrics_page(&app.base).await;
    for service in ["store", "projector"] {
        let via = |how: &str| {
            crate::operating::sample(
                &page,
                "leerspoor_gateway_reads_total",
                &[&format!("service=\"{service}\""), &format!("via=\"{how}\"")],
            )
        };
        assert!(via("process").is_some_and(|reads| reads > 0.0), "{page}");
        assert_eq!(via("nats"), None, "{page}");
    }
}

/// A store asked in its own process answers what it would answer over NATS, but only from a
/// state that includes what the read needs: a store behind that leaves the read to its queue
/// group, where another replica answers.
#[tokio::test]
async fn a_store_behind_a_read_leaves_it_to_the_queue_group() {
    use bus::request::{ask_here_first, Ask};
    let nats = testkit::Nats::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let config = config(&nats.url(), data.path());
    let client = async_nats::connect(nats.url()).await.expect("nats");
    // Built, not run: its database has applied nothing. Its requests come over another NATS,
    // where only the stand-in below is in the store's queue group.
    let store = store::Store::build(client.clone(), config.store().expect("store config"))
        .await
        .expect("the store builds");
    let here = store.here();
    let elsewhere = testkit::Nats::start().await;
    let client = async_nats::connect(elsewhere.url()).await.expect("nats");
    let query = bus::wire::StatementQuery {
        limit: 10,
        ..Default::default()
    };
    let payload = serde_json::to_vec(&query).expect("json");
    let subject = bus::subjects::API_STATEMENTS;

    let own = here
        .answer(subject, payload.clone().into(), 0)
        .await
        .expect("a read that needs nothing is answered here");
    let own: Value = serde_json::from_slice(&own).expect("a JSON page");
    assert_eq!(own["kind"], json!("page"));
    assert_eq!(own["statements"], json!([]));
    assert!(
        here.answer(subject, payload.clone().into(), 10_000)
            .await
            .is_none(),
        "a store far behind answered"
    );

    let asked = stand_in_replica(&client).await;
    let to = Ask::store(subject, std::time::Duration::from_secs(10));
    let answered = ask_here_first(Some(here.as_ref()), &client, to, payload.clone().into())
        .await
        .expect("answered here");
    let answered: Value = serde_json::from_slice(&answered).expect("json");
    // The store's own page (its `consistent_through` is the time of the answer, as nothing
    // was applied), not the stand-in's.
    assert_eq!(answered["kind"], own["kind"]);
    assert_eq!(answered["statements"], own["statements"]);
    assert_ne!(answered["consistent_through"], json!(STAND_IN_TIME));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    let behind = to.after(10_000);
    let answered = ask_here_first(Some(here.as_ref()), &client, behind, payload.clone().into())
        .await
        .expect("answered over NATS");
    let answered: Value = serde_json::from_slice(&answered).expect("json");
    assert_eq!(answered["consistent_through"], json!(STAND_IN_TIME));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);

    // A store that stopped does not keep its database open for the gateway: reads go over
    // NATS.
    drop(store);
    assert!(
        here.answer(subject, payload.into(), 0).await.is_none(),
        "a stopped store answered"
    );
}
