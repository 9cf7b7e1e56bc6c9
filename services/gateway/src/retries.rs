//! Retrying a write whose answer was lost must not store it twice.
//!
//! A write's JetStream message id and the ids it gives statements sent without one derive
//! from a digest of who sent what (credential, xAPI version, statements as sent, PUT id) and
//! a nonce. A request that got its answer leaves nothing behind: sending the same content
//! again is new statements, as xAPI has it. A request whose fate the gateway could not
//! confirm (it answered 503, or the client went away before the answer) leaves its nonce
//! here for [`REMEMBERED_FOR`]: the same request from the same credential in that time takes
//! the same nonce, so it is the same message (JetStream drops it inside its duplicate window)
//! with the same statement ids (the store recognises them after that): stored once, answered
//! with the ids of the first attempt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How long an unconfirmed request is remembered for its retry.
pub const REMEMBERED_FOR: Duration = Duration::from_secs(3600);
/// At most this many unconfirmed requests are remembered (the oldest go first).
const REMEMBERED_AT_MOST: usize = 10_000;

/// A digest of a request: what its retry has in common with it.
pub type RequestDigest = [u8; 32];

/// A remembered request's nonce, and when it was last tried.
type Remembered = HashMap<RequestDigest, ([u8; 16], Instant)>;

/// Unconfirmed requests by digest.
#[derive(Clone, Default)]
pub struct Unconfirmed(Arc<Mutex<Remembered>>);

impl Unconfirmed {
    fn locked(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The attempt a request is: a retry of an unconfirmed one (same nonce) or a new one.
    pub fn attempt(&self, digest: RequestDigest) -> Attempt {
        let remembered = self
            .locked()
            .remove(&digest)
            .filter(|(_, tried)| tried.elapsed() < REMEMBERED_FOR)
            .map(|(nonce, _)| nonce);
        // A v4 UUID is 122 random bits from the OS.
        let nonce = remembered.unwrap_or_else(|| uuid::Uuid::new_v4().into_bytes());
        Attempt {
            unconfirmed: self.clone(),
            digest,
            nonce,
            confirmed: false,
        }
    }

    fn remember(&self, digest: RequestDigest, nonce: [u8; 16]) {
        let mut remembered = self.locked();
        remembered.retain(|_, (_, tried)| tried.elapsed() < REMEMBERED_FOR);
        if remembered.len() >= REMEMBERED_AT_MOST {
            let oldest = remembered
                .iter()
                .min_by_key(|(_, (_, tried))| *tried)
                .map(|(digest, _)| *digest);
            if let Some(oldest) = oldest {
                remembered.remove(&oldest);
            }
        }
        remembered.insert(digest, (nonce, Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.locked().len()
    }

    pub fn is_empty(&self) -> bool {
        self.locked().is_empty()
    }
}

/// One attempt at a write. Unless [`Attempt::confirm`]ed, it is remembered when dropped (a
/// 503, an error, or the client gone mid-request), so its retry is recognised.
pub struct Attempt {
    unconfirmed: Unconfirmed,
    digest: RequestDigest,
    nonce: [u8; 16],
    confirmed: bool,
}

impl Attempt {
    /// The seed of this attempt's message id and generated statement ids.
    pub fn seed(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.digest);
        hasher.update(self.nonce);
        hasher.finalize().into()
    }

    /// The store gave its verdict and the client gets it: nothing to remember.
    pub fn confirm(mut self) {
        self.confirmed = true;
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.confirmed {
            self.unconfirmed.remember(self.digest, self.nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_attempt_is_retried_with_its_seed_and_a_confirmed_one_is_forgotten() {
        let unconfirmed = Unconfirmed::default();
        let first = unconfirmed.attempt([1; 32]);
        let seed = first.seed();
        drop(first);
        assert_eq!(unconfirmed.len(), 1);
        let retry = unconfirmed.attempt([1; 32]);
        assert_eq!(retry.seed(), seed, "a retry is the same message");
        retry.confirm();
        assert!(unconfirmed.is_empty());
        let again = unconfirmed.attempt([1; 32]);
        assert_ne!(
            again.seed(),
            seed,
            "the same content after an answer is new"
        );
        again.confirm();
        let other = unconfirmed.attempt([2; 32]);
        assert_ne!(other.seed(), seed);
        other.confirm();
    }
}
