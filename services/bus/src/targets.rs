//! Forwarding targets (other LRSs, over the xAPI statement API) and webhooks (an HTTPS URL
//! that receives matching statements as signed POSTs): what they are, where they are kept
//! (the KV bucket [`subjects::TARGETS_BUCKET`]), and their dead-letter lists (the stream
//! [`subjects::STREAM_DEAD`]). The forwarder delivers; the CLI and the admin routes manage.
//!
//! Each target has its own durable consumer on `LRS_STORED`, made when it is added, so it gets
//! every statement stored from then on, in order, however long it was down.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::subjects;

/// One forwarding target or webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// 1 to 32 of `a-z 0-9 _ -`.
    pub name: String,
    pub kind: Kind,
    #[serde(default)]
    pub filter: Filter,
    /// Statements per POST at most.
    pub batch: usize,
    /// Attempts before a batch goes to the dead-letter list; 0: never give up (forwarding to an
    /// LRS: it catches up however long it was down).
    pub max_attempts: u32,
    /// RFC 3339.
    pub created: String,
    /// Set to ask the forwarder to deliver the dead letters again (RFC 3339 of the request).
    #[serde(default)]
    pub replay_requested: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Kind {
    /// Another LRS: `POST {endpoint}/statements` with Basic auth.
    Lrs {
        endpoint: String,
        user: Option<String>,
        password: Option<String>,
        /// The `X-Experience-API-Version` to speak.
        version: String,
    },
    /// `POST {url}` with `{"target": name, "statements": [...]}`, signed:
    /// `X-Leerspoor-Signature: sha256=<hex HMAC-SHA256 of the body with the secret>`.
    Webhook { url: String, secret: String },
}

/// Which statements a target gets: every list that is not empty must match (any of its
/// entries). Empty: every statement.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activities: Vec<String>,
    /// LLO hub extension values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hubs: Vec<String>,
    /// LLO company extension values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub companies: Vec<String>,
}

impl Filter {
    pub fn matches(&self, statement: &Value) -> bool {
        let text = |pointer: &str| statement.pointer(pointer).and_then(Value::as_str);
        let extension = |name: &str| {
            statement
                .get("context")
                .and_then(|context| context.get("extensions"))
                .and_then(|extensions| extensions.get(name))
                .and_then(Value::as_str)
        };
        let allows = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|value| list.iter().any(|entry| entry == value))
        };
        allows(&self.verbs, text("/verb/id"))
            && allows(&self.activities, text("/object/id"))
            && allows(&self.hubs, extension(xapi_llo::HUB))
            && allows(&self.companies, extension(xapi_llo::COMPANY))
    }
}

/// The LLO extension names (kept here so bus needs no xAPI crate).
mod xapi_llo {
    pub const HUB: &str = "https://w3id.org/xapi/llo/extensions/hub";
    pub const COMPANY: &str = "https://w3id.org/xapi/llo/extensions/company";
}

/// What a listing shows: no password or secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub filter: Filter,
    pub batch: usize,
    pub max_attempts: u32,
    pub created: String,
    /// Statements stored and not yet delivered.
    pub pending: Option<u64>,
    /// Statements in its dead-letter list.
    pub dead_letters: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{0}")]
    Invalid(String),
    #[error("no target named {0:?}")]
    NotFound(String),
    #[error("a target named {0:?} exists already")]
    Exists(String),
    #[error("NATS: {0}")]
    Nats(String),
}

fn nats(err: impl std::fmt::Display) -> TargetError {
    TargetError::Nats(err.to_string())
}

impl Target {
    /// Checks a new target's fields.
    pub fn check(&self) -> Result<(), TargetError> {
        subjects::check_replica_name(&self.name)
            .map_err(|reason| TargetError::Invalid(format!("target name: {reason}")))?;
        let url = match &self.kind {
            Kind::Lrs { endpoint, .. } => endpoint,
            Kind::Webhook { url, secret } => {
                if secret.len() < 16 {
                    return Err(TargetError::Invalid(
                        "a webhook secret has at least 16 characters".into(),
                    ));
                }
                url
            }
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(TargetError::Invalid(format!(
                "{url:?} is not an http(s) URL"
            )));
        }
        if self.batch == 0 || self.batch > 1000 {
            return Err(TargetError::Invalid("batch is 1 to 1000 statements".into()));
        }
        Ok(())
    }

    pub fn url(&self) -> &str {
        match &self.kind {
            Kind::Lrs { endpoint, .. } => endpoint,
            Kind::Webhook { url, .. } => url,
        }
    }

    pub fn view(&self) -> TargetView {
        TargetView {
            name: self.name.clone(),
            kind: match self.kind {
                Kind::Lrs { .. } => "lrs",
                Kind::Webhook { .. } => "webhook",
            }
            .into(),
            url: self.url().to_owned(),
            filter: self.filter.clone(),
            batch: self.batch,
            max_attempts: self.max_attempts,
            created: self.created.clone(),
            pending: None,
            dead_letters: None,
        }
    }
}

/// The registry of targets and their dead letters, on one NATS.
#[derive(Clone)]
pub struct Targets {
    js: jetstream::Context,
    bucket: kv::Store,
}

/// One dead letter: a statement a target gave up on, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its sequence in `LRS_DEAD` (to delete it once delivered).
    #[serde(default)]
    pub sequence: u64,
    pub target: String,
    pub statement: Value,
    pub reason: String,
    pub attempts: u32,
    /// RFC 3339.
    pub failed: String,
}

impl Targets {
    /// Opens (creating if missing) the bucket and the dead-letter stream.
    pub async fn open(
        client: &async_nats::Client,
        stream_replicas: usize,
    ) -> Result<Self, TargetError> {
        let js = jetstream::new(client.clone());
        let bucket = match js.get_key_value(subjects::TARGETS_BUCKET).await {
            Ok(bucket) => bucket,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: subjects::TARGETS_BUCKET.into(),
                    description: "forwarding targets and webhooks".into(),
                    history: 1,
                    num_replicas: stream_replicas.max(1),
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(nats)?,
        };
        js.get_or_create_stream(stream::Config {
            name: subjects::STREAM_DEAD.into(),
            subjects: vec![subjects::DEAD_ALL.into()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            max_age: subjects::DEAD_MAX_AGE,
            num_replicas: stream_replicas.max(1),
            ..Default::default()
        })
        .await
        .map_err(nats)?;
        Ok(Targets { js, bucket })
    }

    pub fn bucket(&self) -> &kv::Store {
        &self.bucket
    }

    /// Adds a target and its durable consumer (from the next stored statement on).
    pub async fn add(&self, target: &Target) -> Result<(), TargetError> {
        target.check()?;
        if self.get(&target.name).await?.is_some() {
            return Err(TargetError::Exists(target.name.clone()));
        }
        let stored = self
            .js
            .get_stream(subjects::STREAM_STORED)
            .await
            .map_err(nats)?;
        let name = subjects::target_consumer(&target.name);
        stored
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    deliver_policy: consumer::DeliverPolicy::New,
                    // One batch in flight: deliveries stay in order whichever forwarder
                    // process pulls.
                    max_ack_pending: i64::try_from(target.batch).unwrap_or(1000),
                    description: Some(format!("delivers stored statements to {}", target.url())),
                    ..crate::pull::durable_config(&name, Duration::from_secs(30))
                },
            )
            .await
            .map_err(nats)?;
        let value = serde_json::to_vec(target).map_err(nats)?;
        self.bucket
            .create(&target.name, value.into())
            .await
            .map_err(|_| TargetError::Exists(target.name.clone()))?;
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<Option<Target>, TargetError> {
        match self.bucket.get(name).await.map_err(nats)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(nats),
            None => Ok(None),
        }
    }

    pub async fn list(&self) -> Result<Vec<Target>, TargetError> {
        let mut keys = self.bucket.keys().await.map_err(nats)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(nats)?);
        }
        names.sort();
        let mut targets = Vec::new();
        for name in names {
            if let Some(target) = self.get(&name).await? {
                targets.push(target);
            }
        }
        Ok(targets)
    }

    /// The listing, with how far behind each is and how many dead letters it has.
    pub async fn views(&self) -> Result<Vec<TargetView>, TargetError> {
        let mut views = Vec::new();
        for target in self.list().await? {
            let mut view = target.view();
            view.pending = crate::health::consumer_state(
                &self.js,
                subjects::STREAM_STORED,
                &subjects::target_consumer(&target.name),
            )
            .await
            .ok()
            .map(|state| state.lag());
            view.dead_letters = self.dead_count(&target.name).await.ok();
            views.push(view);
        }
        Ok(views)
    }

    /// Removes a target, its consumer and its dead letters.
    pub async fn remove(&self, name: &str) -> Result<(), TargetError> {
        if self.get(name).await?.is_none() {
            return Err(TargetError::NotFound(name.into()));
        }
        self.bucket.purge(name).await.map_err(nats)?;
        let stored = self
            .js
            .get_stream(subjects::STREAM_STORED)
            .await
            .map_err(nats)?;
        let consumer = subjects::target_consumer(name);
        if let Err(err) = stored.delete_consumer(&consumer).await {
            tracing::warn!(error = %err, %consumer, "removing a target's consumer");
        }
        let dead = self
            .js
            .get_stream(subjects::STREAM_DEAD)
            .await
            .map_err(nats)?;
        dead.purge()
            .filter(format!("{}{name}", subjects::DEAD_PREFIX))
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Asks the forwarder to deliver `name`'s dead letters again.
    pub async fn request_replay(&self, name: &str, at: &str) -> Result<(), TargetError> {
        let mut target = self
            .get(name)
            .await?
            .ok_or_else(|| TargetError::NotFound(name.into()))?;
        target.replay_requested = Some(at.to_owned());
        let value = serde_json::to_vec(&target).map_err(nats)?;
        self.bucket.put(name, value.into()).await.map_err(nats)?;
        Ok(())
    }

    /// Clears a replay request once the forwarder did it.
    pub async fn replayed(&self, name: &str) -> Result<(), TargetError> {
        let Some(mut target) = self.get(name).await? else {
            return Ok(());
        };
        if target.replay_requested.take().is_none() {
            return Ok(());
        }
        let value = serde_json::to_vec(&target).map_err(nats)?;
        self.bucket.put(name, value.into()).await.map_err(nats)?;
        Ok(())
    }

    /// Puts a statement on `target`'s dead-letter list.
    pub async fn bury(&self, letter: &DeadLetter) -> Result<(), TargetError> {
        let subject = format!("{}{}", subjects::DEAD_PREFIX, letter.target);
        let payload = serde_json::to_vec(letter).map_err(nats)?;
        self.js
            .publish(subject, payload.into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    pub async fn dead_count(&self, name: &str) -> Result<u64, TargetError> {
        let dead = self
            .js
            .get_stream(subjects::STREAM_DEAD)
            .await
            .map_err(nats)?;
        let subject = format!("{}{name}", subjects::DEAD_PREFIX);
        let info = dead
            .info_with_subjects(subject.clone())
            .await
            .map_err(nats)?
            .next()
            .await;
        Ok(match info {
            Some(Ok((_, count))) => count as u64,
            _ => 0,
        })
    }

    /// The dead letters of `name`, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, TargetError> {
        let count = self.dead_count(name).await?;
        if count == 0 {
            return Ok(Vec::new());
        }
        let dead = self
            .js
            .get_stream(subjects::STREAM_DEAD)
            .await
            .map_err(nats)?;
        let reader = dead
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: format!("{}{name}", subjects::DEAD_PREFIX),
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let wanted = limit.min(count as usize);
        let mut messages = reader.messages().await.map_err(nats)?;
        let mut letters = Vec::new();
        while letters.len() < wanted {
            let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_secs(5), messages.next()).await
            else {
                break;
            };
            let message = message.map_err(nats)?;
            let sequence = message.info().map(|info| info.stream_sequence).unwrap_or(0);
            if let Ok(mut letter) = serde_json::from_slice::<DeadLetter>(&message.payload) {
                letter.sequence = sequence;
                letters.push(letter);
            }
        }
        Ok(letters)
    }

    /// Deletes one dead letter (delivered on a replay).
    pub async fn forget(&self, sequence: u64) -> Result<(), TargetError> {
        let dead = self
            .js
            .get_stream(subjects::STREAM_DEAD)
            .await
            .map_err(nats)?;
        dead.delete_message(sequence).await.map_err(nats)?;
        Ok(())
    }
}
