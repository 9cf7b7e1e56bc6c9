//! Accepting a write at a hub node: validated exactly as the central store validates a hub's
//! message (the same `xapi` crate, the same limits, the statement must name this hub), given
//! its ids and timestamp here, then published to the hub's stream and acknowledged once it
//! is on the hub's disk.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use sha2::{Digest, Sha256};
use xapi::limits::{BodyError, Exceeded, Limit, Limits};
use xapi::validate::{BatchViolation, Validator};
use xapi::XapiVersion;

/// Why a write is not accepted; each names what, where and which rule.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(BatchViolation),
    #[error("{0}")]
    Limit(Exceeded),
    #[error("{0}")]
    Malformed(String),
    /// The hub's own NATS did not confirm the write: nothing is acknowledged.
    #[error("the hub node could not keep the statements ({0}); nothing was stored, retry")]
    Unavailable(String),
}

/// A write ready to publish: its statements' ids and the message.
#[derive(Debug)]
pub struct Prepared {
    pub ids: Vec<String>,
    pub payload: Vec<u8>,
    pub msg_id: String,
    pub version: XapiVersion,
}

/// Checks writes of one hub as the central store will.
#[derive(Clone)]
pub struct Checker {
    hub: String,
    validator: Arc<Validator>,
    limits: Limits,
}

/// A statement id in its canonical form, if it is a UUID.
fn canonical_id(id: &str) -> Option<String> {
    uuid::Uuid::parse_str(id).ok().map(|uuid| uuid.to_string())
}

impl Checker {
    pub fn new(hub: &str, validator: Arc<Validator>, limits: Limits) -> Checker {
        Checker {
            hub: hub.to_owned(),
            validator,
            limits,
        }
    }

    pub fn hub(&self) -> &str {
        &self.hub
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a request body (one statement or an array; `put_id` for a PUT) as the central
    /// store would, and gives each statement its id (derived from who sent what, so a retried
    /// request gets the same ids) and, if it has none, the time it reached the hub as its
    /// `timestamp` (it may reach the central site days later).
    pub fn prepare(
        &self,
        caller: &str,
        body: &[u8],
        version: XapiVersion,
        put_id: Option<&str>,
    ) -> Result<Prepared, Refusal> {
        let mut statements = match xapi::limits::parse_statements(body, &self.limits) {
            Ok(statements) => statements,
            Err(BodyError::Exceeded(exceeded)) => return Err(Refusal::Limit(exceeded)),
            Err(BodyError::Malformed(message)) => return Err(Refusal::Malformed(message)),
        };
        if statements.is_empty() {
            return Err(Refusal::Malformed("the request holds no statement".into()));
        }
        if let Some(put_id) = put_id {
            let single = body
                .iter()
                .find(|byte| !byte.is_ascii_whitespace())
                .is_some_and(|byte| *byte == b'{');
            if !single {
                return Err(Refusal::Malformed(
                    "PUT takes one statement (a JSON object), not an array".into(),
                ));
            }
            if put_id.is_empty() {
                return Err(Refusal::Malformed(
                    "PUT /xapi/statements needs the statementId parameter".into(),
                ));
            }
            let Some(wanted) = canonical_id(put_id) else {
                return Err(Refusal::Malformed(format!(
                    "statementId {:?} is not a UUID",
                    xapi::limits::truncate_text(put_id, 64)
                )));
            };
            let statement = &mut statements[0];
            match statement.get("id").and_then(Value::as_str) {
                Some(id) if canonical_id(id).as_deref() != Some(wanted.as_str()) => {
                    return Err(Refusal::Malformed(format!(
                        "the statement's id {:?} differs from statementId {wanted}",
                        xapi::limits::truncate_text(id, 64)
                    )));
                }
                _ => {
                    if let Some(object) = statement.as_object_mut() {
                        object.insert("id".into(), Value::String(wanted));
                    }
                }
            }
        }
        let seed = xapi::statement::request_seed(caller, version, &statements, put_id);
        let now = xapi::time::format_timestamp(chrono::Utc::now());
        let mut ids = Vec::with_capacity(statements.len());
        for (index, statement) in statements.iter_mut().enumerate() {
            ids.push(xapi::statement::ensure_id_from(statement, &seed, index));
            if let Some(object) = statement.as_object_mut() {
                object
                    .entry("timestamp")
                    .or_insert_with(|| Value::String(now.clone()));
            }
        }
        xapi::llo::check_hub(&statements, &self.hub).map_err(Refusal::Invalid)?;
        self.validator
            .check_batch(&statements, version)
            .map_err(Refusal::Invalid)?;
        let payload = serde_json::to_vec(&statements).map_err(|err| {
            Refusal::Malformed(format!("the statements cannot be written: {err}"))
        })?;
        if payload.len() > self.limits.hub_message_bytes {
            return Err(Refusal::Limit(Exceeded::new(
                Limit::HubMessageBytes,
                self.limits.hub_message_bytes,
                format!(
                    "these statements make a hub message of {} bytes; send fewer per request",
                    payload.len()
                ),
            )));
        }
        Ok(Prepared {
            msg_id: message_id(&self.hub, &ids),
            ids,
            payload,
            version,
        })
    }
}

/// Publishes checked writes to the hub's stream.
#[derive(Clone)]
pub struct Accepter {
    js: jetstream::Context,
    pub checker: Checker,
    timeout: Duration,
}

impl Accepter {
    pub fn new(js: jetstream::Context, checker: Checker, timeout: Duration) -> Accepter {
        Accepter {
            js,
            checker,
            timeout,
        }
    }

    /// Checks and publishes one request's statements; their ids once they are on disk.
    pub async fn accept(
        &self,
        caller: &str,
        body: &[u8],
        version: XapiVersion,
        put_id: Option<&str>,
    ) -> Result<Vec<String>, Refusal> {
        let prepared = self.checker.prepare(caller, body, version, put_id)?;
        self.publish(prepared).await
    }

    /// Messages and bytes in the hub's stream, or why it cannot be read.
    pub async fn stream_state(&self) -> Result<(u64, u64), String> {
        let read = async {
            let mut stream = self
                .js
                .get_stream(bus::subjects::hub_stream(&self.checker.hub))
                .await
                .map_err(|err| err.to_string())?;
            let info = stream.info().await.map_err(|err| err.to_string())?;
            Ok((info.state.messages, info.state.bytes))
        };
        tokio::time::timeout(self.timeout, read)
            .await
            .map_err(|_| {
                format!(
                    "the hub's nats-server did not answer within {:?}",
                    self.timeout
                )
            })?
    }

    /// Publishes to the hub's stream and waits until it is on disk there.
    pub async fn publish(&self, prepared: Prepared) -> Result<Vec<String>, Refusal> {
        let hub = &self.checker.hub;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(bus::MSG_ID_HEADER, prepared.msg_id.as_str());
        headers.insert("X-Experience-API-Version", prepared.version.as_str());
        let subject = bus::subjects::hub_subject(hub);
        let unavailable = |err: String| Refusal::Unavailable(err);
        let ack = tokio::time::timeout(self.timeout, async {
            self.js
                .publish_with_headers(subject, headers, prepared.payload.into())
                .await
                .map_err(|err| unavailable(err.to_string()))?
                .await
                .map_err(|err| unavailable(err.to_string()))
        })
        .await
        .map_err(|_| unavailable(format!("no acknowledgement within {:?}", self.timeout)))??;
        if ack.stream != bus::subjects::hub_stream(hub) {
            return Err(unavailable(format!(
                "acknowledged by stream {} instead of the hub's",
                ack.stream
            )));
        }
        Ok(prepared.ids)
    }
}

/// The message id: the same statements, the same id (a retry within the duplicate window is
/// dropped by the hub's stream; later ones by the central store's id check).
fn message_id(hub: &str, ids: &[String]) -> String {
    let mut hasher = Sha256::new();
    for id in ids {
        hasher.update(id.as_bytes());
        hasher.update(b",");
    }
    let digest = hasher.finalize();
    let hex: String = digest[..16]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("hub-{hub}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checker() -> Checker {
        Checker::new(
            "eindhoven",
            Arc::new(Validator::new().expect("schemas")),
            Limits::default(),
        )
    }

    fn attendance(hub: &str) -> Value {
        json!({
            "actor": {"mbox": "mailto:ann@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended"},
            "object": {"id": "https://hub.example/sessions/1"},
            "context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": hub}},
        })
    }

    #[test]
    fn a_write_gets_ids_and_a_timestamp_and_a_retry_the_same_ids() {
        let body = serde_json::to_vec(&json!([attendance("eindhoven"), attendance("eindhoven")]))
            .expect("json");
        let first = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, None)
            .expect("valid");
        assert_eq!(first.ids.len(), 2);
        assert_ne!(first.ids[0], first.ids[1]);
        let again = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, None)
            .expect("valid");
        assert_eq!(first.ids, again.ids);
        assert_eq!(first.msg_id, again.msg_id);
        let published: Vec<Value> = serde_json::from_slice(&first.payload).expect("json");
        assert!(published[0]["timestamp"].is_string());
        let other = checker()
            .prepare("other-kiosk", &body, XapiVersion::V2_0_0, None)
            .expect("valid");
        assert_ne!(
            first.ids, other.ids,
            "another caller's request is another write"
        );
    }

    #[test]
    fn a_hub_node_takes_only_its_own_hubs_statements() {
        let body = serde_json::to_vec(&json!([attendance("eindhoven"), attendance("delft")]))
            .expect("json");
        let refused = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, None)
            .expect_err("another hub");
        let Refusal::Invalid(violation) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(violation.statement, Some(1));
        assert_eq!(violation.violation.rule, "llo.hub_subject");
    }

    #[test]
    fn invalid_statements_and_oversized_messages_are_refused_with_the_rule() {
        let mut broken = attendance("eindhoven");
        broken["verb"] = json!({"id": "not an iri"});
        let body = serde_json::to_vec(&broken).expect("json");
        let refused = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, None)
            .expect_err("invalid");
        assert!(
            matches!(refused, Refusal::Invalid(ref v) if v.statement == Some(0)),
            "{refused:?}"
        );
        let small = Checker::new(
            "eindhoven",
            Arc::new(Validator::new().expect("schemas")),
            Limits {
                hub_message_bytes: 300,
                ..Limits::default()
            },
        );
        let body = serde_json::to_vec(&attendance("eindhoven")).expect("json");
        let refused = small
            .prepare("kiosk", &body, XapiVersion::V2_0_0, None)
            .expect_err("too big");
        assert!(
            matches!(refused, Refusal::Limit(ref e) if e.limit == Limit::HubMessageBytes),
            "{refused:?}"
        );
        assert!(checker()
            .prepare("kiosk", b"[]", XapiVersion::V2_0_0, None)
            .is_err());
        assert!(checker()
            .prepare("kiosk", b"{nope", XapiVersion::V2_0_0, None)
            .is_err());
    }

    #[test]
    fn a_put_keeps_its_id_and_takes_one_statement() {
        let id = "3a7b1c2d-0000-4000-8000-000000000001";
        let body = serde_json::to_vec(&attendance("eindhoven")).expect("json");
        let prepared = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, Some(id))
            .expect("valid");
        assert_eq!(prepared.ids, vec![id.to_owned()]);
        let mut other = attendance("eindhoven");
        other["id"] = json!("3a7b1c2d-0000-4000-8000-000000000002");
        let body = serde_json::to_vec(&other).expect("json");
        assert!(checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, Some(id))
            .is_err());
        let body = serde_json::to_vec(&json!([attendance("eindhoven")])).expect("json");
        assert!(checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, Some(id))
            .is_err());
        let body = serde_json::to_vec(&attendance("eindhoven")).expect("json");
        let missing = checker()
            .prepare("kiosk", &body, XapiVersion::V2_0_0, Some(""))
            .expect_err("no statementId");
        assert!(missing.to_string().contains("statementId"), "{missing}");
    }

    #[test]
    fn message_ids_follow_the_statement_ids() {
        let a = message_id("h", &["1".into(), "2".into()]);
        assert_eq!(a, message_id("h", &["1".into(), "2".into()]));
        assert_ne!(a, message_id("h", &["2".into(), "1".into()]));
        assert!(a.starts_with("hub-h-"));
    }
}
