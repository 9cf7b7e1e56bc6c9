//! Statements with attachments and signatures, over multipart/mixed.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{new_id, statement, TestApp};

pub const BOUNDARY: &str = "leerspoor-test-boundary";

pub fn multipart(statements: &Value, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body =
        format!("--{BOUNDARY}\r\nContent-Type: application/json\r\n\r\n{statements}\r\n")
            .into_bytes();
    for (content_type, content) in parts {
        let hash = format!("{:x}", Sha256::digest(content));
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\nX-Experience-API-Hash: {hash}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn attachment(usage: &str, content_type: &str, content: &[u8]) -> Value {
    json!({
        "usageType": usage,
        "display": {"en-US": "attachment"},
        "contentType": content_type,
        "length": content.len(),
        "sha2": format!("{:x}", Sha256::digest(content)),
    })
}

async fn post_multipart(app: &TestApp, body: Vec<u8>) -> reqwest::Response {
    app.request(Method::POST, "/xapi/statements")
        .header(
            "Content-Type",
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("http")
}

/// The parts of a multipart/mixed response, found by their hash header.
pub fn part_with_hash<'a>(body: &'a [u8], hash: &str) -> Option<&'a [u8]> {
    let marker = format!("X-Experience-API-Hash: {hash}\r\n\r\n");
    let start = body
        .windows(marker.len())
        .position(|window| window == marker.as_bytes())?
        + marker.len();
    let end = body[start..]
        .windows(4)
        .position(|window| window == b"\r\n--")?
        + start;
    Some(&body[start..end])
}

#[tokio::test]
async fn a_multi_megabyte_attachment_round_trips() {
    let app = TestApp::start().await;
    let content: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|n: u32| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut body_statement = statement("ann@example.org", "completed", "https://x.example/exam");
    body_statement["id"] = json!(new_id());
    body_statement["attachments"] = json!([attachment(
        "http://adlnet.gov/expapi/attachments/certificate",
        "application/pdf",
        &content
    )]);
    let response = post_multipart(
        &app,
        multipart(&body_statement, &[("application/pdf", &content)]),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );

    let id = body_statement["id"].as_str().expect("id");
    let response = app
        .get(&format!(
            "/xapi/statements?statementId={id}&attachments=true"
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("multipart/mixed"));
    let returned = response.bytes().await.expect("body");
    let hash = format!("{:x}", Sha256::digest(&content));
    assert_eq!(part_with_hash(&returned, &hash), Some(content.as_slice()));
}

#[tokio::test]
async fn attachments_without_their_part_or_with_a_wrong_hash_are_refused() {
    let app = TestApp::start().await;
    let content = b"certificate";
    let mut body_statement = statement("ann@example.org", "completed", "https://x.example/exam");
    body_statement["attachments"] =
        json!([attachment("http://x.example/u", "text/plain", content)]);
    let missing = post_multipart(&app, multipart(&body_statement, &[])).await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    let as_json = app.post_statements(&body_statement).await;
    assert_eq!(
        as_json.status(),
        StatusCode::BAD_REQUEST,
        "raw attachments need multipart"
    );
    let mut tampered = multipart(&body_statement, &[("text/plain", content)]);
    let at = tampered
        .windows(11)
        .position(|window| window == b"certificate")
        .expect("content");
    tampered[at] = b'C';
    assert_eq!(
        post_multipart(&app, tampered).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(app.get_all(&[]).await.is_empty());
}

fn jws(statement: &Value, algorithm: &str) -> Vec<u8> {
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = json!({"alg": algorithm});
    format!(
        "{}.{}.{}",
        encode(header.to_string().as_bytes()),
        encode(statement.to_string().as_bytes()),
        encode(b"an RSA signature of the two parts before it")
    )
    .into_bytes()
}

#[tokio::test]
async fn a_signed_statement_round_trips_and_a_tampered_one_is_refused() {
    let app = TestApp::start().await;
    let mut signed = statement("ann@example.org", "passed", "https://x.example/exam");
    signed["id"] = json!(new_id());
    let signature = jws(&signed, "RS256");
    signed["attachments"] = json!([attachment(
        xapi::USAGE_SIGNATURE,
        "application/octet-stream",
        &signature
    )]);
    let response = post_multipart(
        &app,
        multipart(&signed, &[("application/octet-stream", &signature)]),
    )
    .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{:?}",
        response.text().await
    );
    let id = signed["id"].as_str().expect("id");
    let returned = app
        .get(&format!(
            "/xapi/statements?statementId={id}&attachments=true"
        ))
        .await
        .bytes()
        .await
        .expect("body");
    let hash = format!("{:x}", Sha256::digest(&signature));
    assert_eq!(
        part_with_hash(&returned, &hash),
        Some(signature.as_slice()),
        "the signature comes back intact"
    );

    let mut tampered = signed.clone();
    tampered["id"] = json!(new_id());
    let original = statement("ann@example.org", "failed", "https://x.example/exam");
    let wrong_payload = jws(&original, "RS256");
    tampered["attachments"] = json!([attachment(
        xapi::USAGE_SIGNATURE,
        "application/octet-stream",
        &wrong_payload
    )]);
    let response = post_multipart(
        &app,
        multipart(&tampered, &[("application/octet-stream", &wrong_payload)]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let mut weak = signed.clone();
    weak["id"] = json!(new_id());
    let hs256 = jws(&weak, "HS256");
    weak["attachments"] = json!([attachment(
        xapi::USAGE_SIGNATURE,
        "application/octet-stream",
        &hs256
    )]);
    let response = post_multipart(
        &app,
        multipart(&weak, &[("application/octet-stream", &hs256)]),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}
