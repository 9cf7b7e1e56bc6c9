//! HTTP Basic authentication against the credentials of the configuration.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;

/// A client allowed to use the xAPI API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The Basic auth user name.
    pub key: String,
    /// The Basic auth password.
    pub secret: String,
    /// A human name for the client, used in its authority.
    #[serde(default)]
    pub name: Option<String>,
}

impl Credential {
    /// The authority the LRS writes into statements this client sends.
    pub fn authority(&self, home_page: &str) -> Value {
        json!({
            "objectType": "Agent",
            "name": self.name.clone().unwrap_or_else(|| self.key.clone()),
            "account": {"homePage": home_page, "name": self.key},
        })
    }
}

/// The authenticated caller of a request.
pub struct Caller(pub Credential);

/// Compares without returning early, so timing does not reveal how much of a secret matched.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let encoded = header
            .strip_prefix("Basic ")
            .ok_or(ApiError::Unauthorized)?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| ApiError::Unauthorized)?;
        let decoded = String::from_utf8(decoded).map_err(|_| ApiError::Unauthorized)?;
        let (key, secret) = decoded.split_once(':').ok_or(ApiError::Unauthorized)?;
        state
            .credentials
            .iter()
            .find(|credential| {
                credential.key == key
                    && same_secret(secret.as_bytes(), credential.secret.as_bytes())
            })
            .map(|credential| Caller(credential.clone()))
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"s3crett", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
