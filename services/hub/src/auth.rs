//! The hub's local credentials (HTTP Basic): kiosks, scanners and the back office of one hub.
//! They come from the hub node's configuration (Argon2id hashes), or, without one, the demo
//! credential `leerspoor:leerspoor` on a loopback listener.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::{PasswordHash, PasswordVerifier};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One credential of the hub's tools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubCredential {
    pub key: String,
    /// Argon2id PHC string of the secret (`leerspoor credentials hash-secret` prints one).
    pub secret_hash: String,
}

/// Checks Basic credentials; a secret that passed Argon2 once is remembered by its digest.
pub struct Credentials {
    hashes: HashMap<String, String>,
    verified: Mutex<HashMap<String, [u8; 32]>>,
    /// One Argon2 check at a time: the many first requests of tools that just started wait
    /// for one check (then find the secret remembered) instead of each paying for one.
    verifying: tokio::sync::Mutex<()>,
}

impl Credentials {
    pub fn new(credentials: &[HubCredential]) -> Credentials {
        Credentials {
            hashes: credentials
                .iter()
                .map(|credential| (credential.key.clone(), credential.secret_hash.clone()))
                .collect(),
            verified: Mutex::new(HashMap::new()),
            verifying: tokio::sync::Mutex::new(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The caller's key, if the `Authorization` header holds a known key and its secret.
    pub async fn check(&self, header: Option<&str>) -> Option<String> {
        let encoded = header?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (key, secret) = text.split_once(':')?;
        let hash = self.hashes.get(key)?.clone();
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if self.remembered(key, &digest) {
            return Some(key.to_owned());
        }
        let _turn = self.verifying.lock().await;
        if self.remembered(key, &digest) {
            return Some(key.to_owned());
        }
        let secret = secret.to_owned();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !matches {
            return None;
        }
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key.to_owned(), digest);
        Some(key.to_owned())
    }

    /// Whether this secret (its digest) already passed Argon2 for `key`.
    fn remembered(&self, key: &str, digest: &[u8; 32]) -> bool {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .is_some_and(|known| subtle::ConstantTimeEq::ct_eq(&known[..], &digest[..]).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::SaltString;
    use argon2::PasswordHasher;

    fn basic(key: &str, secret: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"))
        )
    }

    #[tokio::test]
    async fn a_key_and_its_secret_pass_and_nothing_else_does() {
        let hash = argon2::Argon2::default()
            .hash_password(b"kiosk-secret", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        let credentials = Credentials::new(&[HubCredential {
            key: "kiosk".into(),
            secret_hash: hash,
        }]);
        let right = basic("kiosk", "kiosk-secret");
        // Many first requests at once: each is let in, one Argon2 check after another.
        let checks = three_at_once(&credentials, &right).await;
        assert!(checks.iter().all(|key| key.as_deref() == Some("kiosk")));
        assert_eq!(
            credentials.check(Some(&right)).await.as_deref(),
            Some("kiosk")
        );
        assert_eq!(
            credentials.check(Some(&basic("kiosk", "wrong"))).await,
            None
        );
        assert_eq!(
            credentials
                .check(Some(&basic("other", "kiosk-secret")))
                .await,
            None
        );
        assert_eq!(credentials.check(Some("Bearer x")).await, None);
        assert_eq!(credentials.check(None).await, None);
    }

    async fn three_at_once(credentials: &Credentials, header: &str) -> Vec<Option<String>> {
        let (a, b, c) = tokio::join!(
            credentials.check(Some(header)),
            credentials.check(Some(header)),
            credentials.check(Some(header))
        );
        vec![a, b, c]
    }
}
