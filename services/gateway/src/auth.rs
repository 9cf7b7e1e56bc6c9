//! Who is calling, and may they: Basic auth against the store's credentials, the scope each
//! route needs, and per-credential rate limits.
//!
//! The gateway keeps a copy of the credentials (Argon2 hashes, never secrets), loaded over
//! `lrs.api.admin` and reloaded when the store says `lrs.credentials.changed`, when an unknown
//! key shows up, and every minute in case an announcement was missed. Argon2 is slow on
//! purpose (16 ms per check on the project's VM, BENCHMARKS.md), so a verified secret is
//! remembered as its SHA-256 for as long as the credential's hash is unchanged, and compared
//! in constant time.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use argon2::{PasswordHash, PasswordVerifier};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bus::access::{AdminReply, AdminRequest, CredentialRecord, Scope};
use bus::subjects;
use futures::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::AppState;

/// Failed secrets a key may send per minute before it is refused without a check: each check
/// costs an Argon2 verification.
const FAILURES_PER_MINUTE: u32 = 30;
/// Unknown keys reload the credentials (a credential created a moment ago must work at once),
/// at most this many times per second.
const RELOADS_ON_UNKNOWN_PER_SECOND: u32 = 20;
/// Reload even without an announcement this often.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The authenticated caller of a request, put into the request by [`authorize`].
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<CredentialRecord>);

impl Caller {
    pub fn has_any(&self, scopes: &[Scope]) -> bool {
        self.0.has_any(scopes)
    }

    /// Whether the credential reads only what it wrote: without `all`, `all/read` or
    /// `statements/read`, it sees its own statements (`statements/read/mine`), its own
    /// documents, and nothing that comes only from other credentials' statements (activity
    /// definitions, agent names, attachment bodies). xAPI limits `state` and `profile` to the
    /// token's own data the same way.
    pub fn confined(&self) -> bool {
        !self.has_any(&[Scope::All, Scope::AllRead, Scope::StatementsRead])
    }

    /// `credential:<key>`, for the audit log.
    pub fn actor(&self) -> String {
        format!("credential:{}", self.0.key)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

struct Limiter {
    per_minute: u32,
    limiter: DefaultDirectRateLimiter,
}

fn limiter(per_minute: u32) -> Limiter {
    let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Limiter {
        per_minute,
        limiter: RateLimiter::direct(Quota::per_minute(rate)),
    }
}

/// A secret that passed Argon2: the hash it was checked against, and the secret's SHA-256.
type Verified = (String, [u8; 32]);

#[derive(Default)]
struct Table {
    by_key: HashMap<String, Arc<CredentialRecord>>,
    loaded: bool,
}

/// The gateway's copy of the credentials, and what it remembers about them.
#[derive(Clone)]
pub struct Credentials {
    client: async_nats::Client,
    table: Arc<RwLock<Table>>,
    verified: Arc<Mutex<HashMap<String, Verified>>>,
    limiters: Arc<Mutex<HashMap<String, Arc<Limiter>>>>,
    failures: Arc<Mutex<HashMap<String, Arc<Limiter>>>>,
    /// A turn per key for the Argon2 check (see [`Credentials::authenticate`]).
    verifying: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    reloads: Arc<DefaultDirectRateLimiter>,
    default_per_minute: u32,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Credentials {
    pub fn new(client: async_nats::Client, default_per_minute: u32) -> Credentials {
        Credentials {
            client,
            table: Arc::default(),
            verified: Arc::default(),
            limiters: Arc::default(),
            failures: Arc::default(),
            verifying: Arc::default(),
            reloads: Arc::new(RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(RELOADS_ON_UNKNOWN_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            ))),
            default_per_minute,
        }
    }

    /// Loads every credential from the store, from a replica that applied `LRS_IN` through
    /// `min_applied` at least.
    pub async fn load(&self, min_applied: u64) -> Result<(), ApiError> {
        let reply = crate::admin::ask(
            &self.client,
            &AdminRequest::ListCredentials,
            LOAD_TIMEOUT,
            min_applied,
        )
        .await?;
        let AdminReply::Credentials { credentials } = reply else {
            tracing::error!("unexpected reply to a credentials listing");
            return Err(ApiError::Internal);
        };
        let by_key: HashMap<String, Arc<CredentialRecord>> = credentials
            .into_iter()
            .filter(|record| record.revoked.is_none())
            .map(|record| (record.key.clone(), Arc::new(record)))
            .collect();
        // A rotated or revoked credential's remembered secret goes with its old hash.
        locked(&self.verified).retain(|key, (hash, _)| {
            by_key
                .get(key)
                .is_some_and(|record| &record.secret_hash == hash)
        });
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        table.by_key = by_key;
        table.loaded = true;
        Ok(())
    }

    /// Loads, retrying for up to [`LOAD_TIMEOUT`] while the store does not answer.
    async fn load_patiently(&self) -> Result<(), ApiError> {
        let deadline = Instant::now() + LOAD_TIMEOUT;
        loop {
            match self.load(0).await {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reloads on every announcement from the store, and every minute, until `shutdown`.
    pub async fn follow(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut changes = self.client.subscribe(subjects::CREDENTIALS_CHANGED).await?;
        let mut every = tokio::time::interval(RELOAD_EVERY);
        loop {
            // A change says the sequence that made it: the listing must include it.
            let mut min_applied = 0;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                change = changes.next() => {
                    let Some(change) = change else {
                        return Ok(());
                    };
                    min_applied = std::str::from_utf8(&change.payload)
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .unwrap_or(0);
                }
                _ = every.tick() => {}
            }
            if let Err(err) = self.load(min_applied).await {
                tracing::warn!(error = %err, "credentials not reloaded");
            }
        }
    }

    fn lookup(&self, key: &str) -> (bool, Option<Arc<CredentialRecord>>) {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        (table.loaded, table.by_key.get(key).cloned())
    }

    async fn find(&self, key: &str) -> Result<Option<Arc<CredentialRecord>>, ApiError> {
        let (loaded, found) = self.lookup(key);
        if found.is_some() {
            return Ok(found);
        }
        if !loaded {
            // The first request since start: the store may be starting too.
            self.load_patiently().await?;
        } else if self.reloads.check().is_ok() {
            // A credential created a moment ago?
            if let Err(err) = self.load(0).await {
                tracing::warn!(error = %err, "credentials not reloaded");
            }
        }
        Ok(self.lookup(key).1)
    }

    /// The credential behind a Basic `Authorization` header, or 401 (the same 401 whether
    /// the key is unknown, revoked or the secret wrong), 429 after too many failures.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Arc<CredentialRecord>, ApiError> {
        let (key, secret) = basic(authorization).ok_or(ApiError::Unauthorized)?;
        let record = self.find(&key).await?;
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let Some(record) = record else {
            return Err(ApiError::Unauthorized);
        };
        if self.remembered(&key, &record, &digest) {
            return Ok(record);
        }
        // One Argon2 check per key at a time: the many first requests of a tool that just
        // started wait for one verification instead of each paying for (and being counted
        // as) one.
        let turn = {
            let mut turns = locked(&self.verifying);
            turns.entry(key.clone()).or_default().clone()
        };
        let _turn = turn.lock().await;
        if self.remembered(&key, &record, &digest) {
            return Ok(record);
        }
        self.charge(&self.failures, &key, FAILURES_PER_MINUTE)?;
        let hash = record.secret_hash.clone();
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|_| ApiError::Internal)?;
        if !matches {
            return Err(ApiError::Unauthorized);
        }
        locked(&self.verified).insert(key, (record.secret_hash.clone(), digest));
        Ok(record)
    }

    /// Whether this secret (its digest) passed Argon2 for the credential's current hash.
    fn remembered(&self, key: &str, record: &CredentialRecord, digest: &[u8; 32]) -> bool {
        locked(&self.verified)
            .get(key)
            .filter(|(hash, _)| hash == &record.secret_hash)
            .is_some_and(|(_, known)| bool::from(known.ct_eq(digest)))
    }

    /// Takes one request from the credential's allowance, or 429 with the wait.
    pub fn limit(&self, record: &CredentialRecord) -> Result<(), ApiError> {
        let per_minute = record
            .requests_per_minute
            .unwrap_or(self.default_per_minute);
        self.charge(&self.limiters, &record.key, per_minute)
    }

    fn charge(
        &self,
        limiters: &Mutex<HashMap<String, Arc<Limiter>>>,
        key: &str,
        per_minute: u32,
    ) -> Result<(), ApiError> {
        let limiter = {
            let mut limiters = locked(limiters);
            let entry = limiters
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(limiter(per_minute)));
            if entry.per_minute != per_minute {
                *entry = Arc::new(limiter(per_minute));
            }
            entry.clone()
        };
        limiter.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// `(key, secret)` of a Basic `Authorization` header.
fn basic(header: Option<&str>) -> Option<(String, String)> {
    let encoded = header?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (key, secret) = decoded.split_once(':')?;
    Some((key.to_owned(), secret.to_owned()))
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: the About resource.
    Nobody,
    /// Any valid credential (routes that only answer 405 or 404).
    AnyCredential,
    /// Any one of these scopes.
    AnyOf(&'static [Scope]),
}

const STATEMENTS_READ: &[Scope] = &[
    Scope::All,
    Scope::AllRead,
    Scope::StatementsRead,
    Scope::StatementsReadMine,
];
const STATEMENTS_WRITE: &[Scope] = &[Scope::All, Scope::StatementsWrite];
const STATE_READ: &[Scope] = &[Scope::All, Scope::AllRead, Scope::State];
const STATE_WRITE: &[Scope] = &[Scope::All, Scope::State];
const PROFILE_READ: &[Scope] = &[Scope::All, Scope::AllRead, Scope::Profile];
const PROFILE_WRITE: &[Scope] = &[Scope::All, Scope::Profile];
const DEFINITIONS_READ: &[Scope] = &[Scope::All, Scope::AllRead, Scope::Define];
const SUMMARIES: &[Scope] = &[Scope::SummariesRead];
const ADMIN: &[Scope] = &[Scope::Admin];

/// The one table of who may call what.
pub fn need(method: &Method, path: &str) -> Need {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    let writes = matches!(*method, Method::PUT | Method::POST | Method::DELETE);
    let pick = |read: &'static [Scope], write: &'static [Scope]| {
        if reads {
            Need::AnyOf(read)
        } else if writes {
            Need::AnyOf(write)
        } else {
            Need::AnyCredential
        }
    };
    match path {
        "/xapi/about" => Need::Nobody,
        "/xapi/statements" => pick(STATEMENTS_READ, STATEMENTS_WRITE),
        "/xapi/activities/state" => pick(STATE_READ, STATE_WRITE),
        "/xapi/activities/profile" | "/xapi/agents/profile" => pick(PROFILE_READ, PROFILE_WRITE),
        "/xapi/activities" | "/xapi/agents" => pick(DEFINITIONS_READ, DEFINITIONS_READ),
        _ if path.starts_with("/summaries/") || path == "/summaries" => pick(SUMMARIES, SUMMARIES),
        _ if path.starts_with("/dashboard/") || path == "/dashboard" => pick(SUMMARIES, SUMMARIES),
        _ if path.starts_with("/admin/") || path == "/admin" => pick(ADMIN, ADMIN),
        // Anything else is a 404 (or 405), for any valid credential.
        _ => Need::AnyCredential,
    }
}

/// Middleware: authenticates, checks the route's scope and the rate limit, and hands the
/// [`Caller`] to the handler. 401 when the credential is missing or wrong, 403 when it lacks
/// the scope, 429 when it is over its limit.
pub async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let need = need(request.method(), request.uri().path());
    if need == Need::Nobody {
        return next.run(request).await;
    }
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let record = match state.credentials.authenticate(authorization).await {
        Ok(record) => record,
        Err(err) => return err.into_response(),
    };
    if let Need::AnyOf(scopes) = need {
        if !record.has_any(scopes) {
            let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
            return ApiError::Forbidden(format!(
                "this credential may not {} {}; that needs one of the scopes {}",
                request.method(),
                request.uri().path(),
                names.join(", ")
            ))
            .into_response();
        }
    }
    if let Err(err) = state.credentials.limit(&record) {
        return err.into_response();
    }
    request.extensions_mut().insert(Caller(record));
    next.run(request).await
}

/// The IFI key of the agent that stands for the caller in `authority` (the client itself,
/// also inside a group authority): what `statements/read/mine` matches.
pub fn caller_ifi(caller: &Caller, home_page: &str) -> Option<String> {
    let agent: Value = caller.0.client_agent(home_page);
    xapi::agent::ifi_key(&agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_parse_and_malformed_ones_do_not() {
        assert_eq!(
            basic(Some("Basic dG9vbDpzM2NyZXQ=")),
            Some(("tool".into(), "s3cret".into()))
        );
        assert_eq!(basic(Some("Bearer abc")), None);
        assert_eq!(basic(Some("Basic !!!")), None);
        assert_eq!(basic(Some("Basic dG9vbA==")), None, "no colon");
        assert_eq!(basic(None), None);
    }

    #[test]
    fn every_route_needs_the_scopes_xapi_gives_it() {
        use Scope::*;
        let allowed = |method: Method, path: &str, scope: Scope| match need(&method, path) {
            Need::Nobody | Need::AnyCredential => true,
            Need::AnyOf(scopes) => scopes.contains(&scope),
        };
        assert_eq!(need(&Method::GET, "/xapi/about"), Need::Nobody);
        assert!(allowed(Method::POST, "/xapi/statements", StatementsWrite));
        assert!(!allowed(Method::POST, "/xapi/statements", StatementsRead));
        assert!(!allowed(Method::POST, "/xapi/statements", AllRead));
        assert!(allowed(Method::GET, "/xapi/statements", StatementsReadMine));
        assert!(!allowed(Method::GET, "/xapi/statements", StatementsWrite));
        assert!(allowed(Method::PUT, "/xapi/activities/state", State));
        assert!(!allowed(Method::PUT, "/xapi/activities/state", AllRead));
        assert!(allowed(Method::GET, "/xapi/activities/state", AllRead));
        assert!(!allowed(Method::GET, "/xapi/activities/state", Profile));
        assert!(allowed(Method::DELETE, "/xapi/agents/profile", Profile));
        assert!(!allowed(Method::DELETE, "/xapi/agents/profile", State));
        assert!(allowed(Method::GET, "/xapi/activities", Define));
        assert!(!allowed(Method::GET, "/summaries/hubs", All));
        assert!(allowed(Method::GET, "/summaries/hubs/x", SummariesRead));
        assert!(allowed(Method::GET, "/dashboard/hubs/x", SummariesRead));
        assert!(!allowed(Method::GET, "/dashboard", All));
        assert!(!allowed(Method::POST, "/admin/erasures", All));
        assert!(allowed(Method::POST, "/admin/erasures", Admin));
    }
}
