use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{statement, TestApp, KEY};

async fn assert_json_error(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("x-experience-api-version"));
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["code"].is_string(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn malformed_requests_get_clear_json_errors_and_store_nothing() {
    let app = TestApp::start().await;
    let valid = statement("a@example.org", "attended", "https://x.example/1");

    let response = app
        .request(Method::POST, "/xapi/statements")
        .header("Content-Type", "application/json")
        .body("{\"actor\": ")
        .send()
        .await
        .expect("http");
    let body = assert_json_error(response, StatusCode::BAD_REQUEST).await;
    assert!(body["message"]
        .as_str()
        .is_some_and(|message| message.contains("JSON")));

    let response = app
        .request(Method::POST, "/xapi/statements")
        .header("Content-Type", "text/plain")
        .body(valid.to_string())
        .send()
        .await
        .expect("http");
    assert_json_error(response, StatusCode::BAD_REQUEST).await;

    let response = app
        .request(Method::POST, "/xapi/statements?foo=bar")
        .json(&valid)
        .send()
        .await
        .expect("http");
    assert_json_error(response, StatusCode::BAD_REQUEST).await;

    let response = app.get("/xapi/statements?foo=bar").await;
    assert_json_error(response, StatusCode::BAD_REQUEST).await;
    assert!(app.get_all(&[]).await.is_empty());
}

#[tokio::test]
async fn an_invalid_statement_names_its_index_path_and_rule() {
    let app = TestApp::start().await;
    let mut bad = statement("a@example.org", "attended", "https://x.example/1");
    bad["result"] = serde_json::json!({"duration": "an hour"});
    let response = app.post_statements(&bad).await;
    let body = assert_json_error(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["statement"], 0);
    assert_eq!(body["path"], "/result/duration");
    assert_eq!(body["rule"], "result.duration");
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_413() {
    let app = TestApp::start().await;
    let big = statement(
        &format!("{}@example.org", "a".repeat(9 * 1024 * 1024)),
        "attended",
        "https://x.example/1",
    );
    let response = app.post_statements(&big).await;
    assert_json_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_missing_headers_are_refused() {
    let app = TestApp::start().await;
    assert_json_error(app.get("/xapi/nothing-here").await, StatusCode::NOT_FOUND).await;
    let response = app
        .request(Method::DELETE, "/xapi/statements")
        .send()
        .await
        .expect("http");
    assert_json_error(response, StatusCode::METHOD_NOT_ALLOWED).await;

    let response = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .basic_auth(KEY, Some(crate::helpers::SECRET))
        .send()
        .await
        .expect("http");
    assert_json_error(response, StatusCode::BAD_REQUEST).await;

    let response = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .basic_auth(KEY, Some(crate::helpers::SECRET))
        .header("X-Experience-API-Version", "0.9")
        .send()
        .await
        .expect("http");
    assert_json_error(response, StatusCode::BAD_REQUEST).await;

    let about = app
        .http
        .get(format!("{}/xapi/about", app.base))
        .send()
        .await
        .expect("http");
    assert_eq!(about.status(), StatusCode::OK);
    let about: Value = about.json().await.expect("json");
    assert_eq!(about["version"], serde_json::json!(["1.0.3", "2.0.0"]));
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_a_401() {
    let app = TestApp::start().await;
    let without = app
        .http
        .get(format!("{}/xapi/statements", app.base))
        .header("X-Experience-API-Version", "1.0.3")
        .send()
        .await
        .expect("http");
    assert_eq!(
        without.headers()["www-authenticate"],
        "Basic realm=\"Leerspoor\""
    );
    assert_json_error(without, StatusCode::UNAUTHORIZED).await;
    let wrong = app
        .http
        .post(format!("{}/xapi/statements", app.base))
        .basic_auth(KEY, Some("wrong"))
        .header("X-Experience-API-Version", "1.0.3")
        .json(&statement(
            "a@example.org",
            "attended",
            "https://x.example/1",
        ))
        .send()
        .await
        .expect("http");
    assert_json_error(wrong, StatusCode::UNAUTHORIZED).await;
    assert!(app.get_all(&[]).await.is_empty());
}

#[tokio::test]
async fn browser_tools_get_cors_preflights_and_headers() {
    let app = TestApp::start().await;
    let preflight = app
        .http
        .request(Method::OPTIONS, format!("{}/xapi/statements", app.base))
        .header("Origin", "https://tool.example")
        .header("Access-Control-Request-Method", "PUT")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, x-experience-api-version",
        )
        .send()
        .await
        .expect("http");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(methods.contains("PUT"), "{methods}");

    let response = app
        .request(Method::GET, "/xapi/statements")
        .header("Origin", "https://tool.example")
        .send()
        .await
        .expect("http");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(
        exposed.contains("x-experience-api-consistent-through"),
        "{exposed}"
    );
}
