//! The document resources over HTTP: concurrency rules, merge, listings.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::TestApp;

const AGENT: &str = r#"{"mbox":"mailto:ann@example.org"}"#;
const ACTIVITY: &str = "https://hub.example/courses/cnc";

fn state_url(state_id: Option<&str>) -> String {
    let mut pairs = vec![("activityId", ACTIVITY), ("agent", AGENT)];
    if let Some(id) = state_id {
        pairs.push(("stateId", id));
    }
    format!(
        "/xapi/activities/state?{}",
        serde_urlencoded::to_string(pairs).expect("query")
    )
}

fn profile_url(profile_id: &str) -> String {
    let pairs = [("activityId", ACTIVITY), ("profileId", profile_id)];
    format!(
        "/xapi/activities/profile?{}",
        serde_urlencoded::to_string(pairs).expect("query")
    )
}

fn v2(app: &TestApp, method: Method, url: &str) -> reqwest::RequestBuilder {
    app.request_as("2.0.0", method, url)
}

#[tokio::test]
async fn state_is_kept_byte_for_byte_with_its_content_type() {
    let app = TestApp::start().await;
    let binary: Vec<u8> = (0..=255).collect();
    let response = app
        .request(Method::PUT, &state_url(Some("blob")))
        .header("Content-Type", "application/octet-stream")
        .body(binary.clone())
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.get(&state_url(Some("blob"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let etag = response.headers()["etag"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "quoted: {etag}"
    );
    assert!(response.headers().contains_key("last-modified"));
    assert_eq!(response.bytes().await.expect("body").to_vec(), binary);
}

#[tokio::test]
async fn post_merges_json_and_refuses_to_merge_anything_else() {
    let app = TestApp::start().await;
    let post = |body: &'static str, content_type: &'static str| {
        app.request(Method::POST, &state_url(Some("progress")))
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(
        post(r#"{"page": 1, "score": 5}"#, "application/json")
            .await
            .expect("http")
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(r#"{"page": 2}"#, "application/json")
            .await
            .expect("http")
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post("page=3", "text/plain").await.expect("http").status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("[1, 2]", "application/json")
            .await
            .expect("http")
            .status(),
        StatusCode::BAD_REQUEST
    );
    let merged: Value = app
        .get(&state_url(Some("progress")))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(merged, json!({"page": 2, "score": 5}));
}

#[tokio::test]
async fn etags_decide_who_may_overwrite_a_profile() {
    let app = TestApp::start().await;
    let url = profile_url("settings");
    let put = |body: &'static str| {
        v2(&app, Method::PUT, &url)
            .header("Content-Type", "text/plain")
            .body(body)
    };

    assert_eq!(
        put("one").send().await.expect("http").status(),
        StatusCode::NO_CONTENT,
        "a new document needs no ETag in 2.0"
    );
    let conflict = put("two").send().await.expect("http");
    assert_eq!(
        conflict.status(),
        StatusCode::CONFLICT,
        "overwriting without a precondition"
    );
    let etag = v2(&app, Method::GET, &url)
        .send()
        .await
        .expect("http")
        .headers()["etag"]
        .clone();

    let stale = put("two")
        .header("If-Match", "\"0000000000000000000000000000000000000000\"")
        .send()
        .await
        .expect("http");
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let exists = put("two")
        .header("If-None-Match", "*")
        .send()
        .await
        .expect("http");
    assert_eq!(exists.status(), StatusCode::PRECONDITION_FAILED);
    let fresh = put("two")
        .header("If-Match", etag.clone())
        .send()
        .await
        .expect("http");
    assert_eq!(fresh.status(), StatusCode::NO_CONTENT);
    let replaced_etag = v2(&app, Method::GET, &url)
        .send()
        .await
        .expect("http")
        .headers()["etag"]
        .clone();
    assert_ne!(replaced_etag, etag);

    let delete_stale = v2(&app, Method::DELETE, &url)
        .header("If-Match", etag)
        .send()
        .await
        .expect("http");
    assert_eq!(delete_stale.status(), StatusCode::PRECONDITION_FAILED);
    let body = v2(&app, Method::GET, &url)
        .send()
        .await
        .expect("http")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "two", "failed writes changed nothing");

    // xAPI 1.0.3 wants a precondition on every PUT to a profile.
    let legacy = app
        .request(Method::PUT, &profile_url("new"))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("http");
    assert_eq!(legacy.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn state_ids_are_listed_and_deleted_together() {
    let app = TestApp::start().await;
    for id in ["a", "b", "c"] {
        let response = app
            .request(Method::PUT, &state_url(Some(id)))
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("http");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let mut ids: Vec<String> = app.get(&state_url(None)).await.json().await.expect("json");
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    let future = serde_urlencoded::to_string([("since", "2999-01-01T00:00:00Z")]).expect("query");
    let none: Vec<String> = app
        .get(&format!("{}&{future}", state_url(None)))
        .await
        .json()
        .await
        .expect("json");
    assert!(none.is_empty());
    let response = app
        .request(Method::DELETE, &state_url(None))
        .send()
        .await
        .expect("http");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let ids: Vec<String> = app.get(&state_url(None)).await.json().await.expect("json");
    assert!(ids.is_empty());
}

#[tokio::test]
async fn bad_document_parameters_are_refused() {
    let app = TestApp::start().await;
    for url in [
        "/xapi/activities/state?activityId=https%3A%2F%2Fx.example&stateId=s".to_owned(),
        "/xapi/activities/state?agent=%7B%22mbox%22%3A%22ann%40example.org%22%7D&activityId=https%3A%2F%2Fx.example".to_owned(),
        format!("{}&registration=not-a-uuid", state_url(Some("s"))),
        format!("{}&since=yesterday", state_url(None)),
        "/xapi/activities/profile?activityId=not%20an%20iri".to_owned(),
        "/xapi/agents/profile?agent=notjson".to_owned(),
    ] {
        let response = app.get(&url).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{url}");
    }
}
