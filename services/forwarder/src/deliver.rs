//! One POST to a target, and what its answer means.

use bus::targets::{Kind, Target};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The header with the webhook body's signature: `sha256=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Leerspoor-Signature";
/// The header naming the target a webhook POST is for.
pub const TARGET_HEADER: &str = "X-Leerspoor-Target";

/// What a POST came to.
#[derive(Debug)]
pub enum Outcome {
    Delivered,
    /// May pass (the target down, busy, 5xx, 429, a timeout): try again later.
    Retry(String),
    /// The target refuses these statements (4xx): trying them again will not help.
    Refused(String),
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// The body a target gets for `statements`.
pub fn body(target: &Target, statements: &[&Value]) -> Vec<u8> {
    let value = match target.kind {
        Kind::Lrs { .. } => json!(statements),
        Kind::Webhook { .. } => json!({"target": target.name, "statements": statements}),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

/// POSTs `statements` to `target`.
pub async fn post(http: &reqwest::Client, target: &Target, statements: &[&Value]) -> Outcome {
    let body = body(target, statements);
    let request = match &target.kind {
        Kind::Lrs {
            endpoint,
            user,
            password,
            version,
        } => {
            let url = format!("{}/statements", endpoint.trim_end_matches('/'));
            let mut request = http
                .post(url)
                .header("X-Experience-API-Version", version.as_str())
                .header("Content-Type", "application/json");
            if let Some(user) = user {
                request = request.basic_auth(user, password.as_deref());
            }
            request
        }
        Kind::Webhook { url, secret } => http
            .post(url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, signature(secret, &body))
            .header(TARGET_HEADER, target.name.as_str()),
    };
    match request.body(body).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            let text = response.text().await.unwrap_or_default();
            let said = format!("{status}: {}", xapi::limits::truncate_text(&text, 256));
            let passing = status.is_server_error()
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                || status == reqwest::StatusCode::REQUEST_TIMEOUT;
            match (&target.kind, passing) {
                (_, true) => Outcome::Retry(said),
                // A webhook receiver may answer 4xx while it is not ready: its attempts decide.
                (Kind::Webhook { .. }, false) => Outcome::Retry(said),
                (Kind::Lrs { .. }, false) => Outcome::Refused(said),
            }
        }
        Err(err) => Outcome::Retry(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_body() {
        // RFC 4231 test case 2.
        let signed = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signed,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
