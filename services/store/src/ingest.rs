//! Turning an `LRS_IN` message into statements, its authority and its version.
//! The gateway's batches come pre-validated with a trusted authority; anything published
//! straight to `lrs.in.<source…>` gets the authority of its source and is validated here.

use bus::access::{CredentialChange, EraseCommand};
use bus::subjects;
use bus::wire::{DocumentOp, DocumentRequest, HttpBatch, Rejection};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use xapi::limits::{BodyError, Exceeded, Limit, Limits};
use xapi::XapiVersion;

/// One `LRS_IN` message, ready to apply.
#[derive(Debug)]
pub struct Batch {
    pub statements: Statements,
    pub settings: BatchSettings,
}

/// What each statement of a [`Batch`] is planned with.
#[derive(Debug)]
pub struct BatchSettings {
    pub authority: Value,
    pub version: XapiVersion,
    /// Whether the writer may (re)define activities (see [`crate::db::Record::defines`]).
    pub define: bool,
    /// SHA-2 of the attachment bodies the request brought (see [`bus::wire::HttpBatch`]).
    pub bodies: Vec<String>,
    /// An import: a statement keeps the `stored` and `authority` it brings.
    pub keep_original: bool,
}

/// A batch's statements: as the gateway wrote them, or parsed (and validated) here.
#[derive(Debug)]
pub enum Statements {
    /// The gateway's: validated there, kept as its text until the store needs more
    /// ([`crate::written`]).
    Written(Vec<Box<RawValue>>),
    /// A straight publisher's.
    Parsed(Vec<Value>),
}

impl Statements {
    pub fn len(&self) -> usize {
        match self {
            Statements::Written(texts) => texts.len(),
            Statements::Parsed(values) => values.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first that is not a JSON object, if any.
    pub fn first_not_object(&self) -> Option<usize> {
        match self {
            Statements::Written(texts) => {
                texts.iter().position(|text| !text.get().starts_with('{'))
            }
            Statements::Parsed(values) => values.iter().position(|value| !value.is_object()),
        }
    }
}

/// What an `LRS_IN` message asks, by its subject: the store's one typed view of its input.
#[derive(Debug)]
pub enum Ingest {
    /// Statements, from the gateway or straight from a source (a hub).
    Statements(Batch),
    /// The gateway's bundle of several requests' batches ([`bus::PARTS_HEADER`]), each applied
    /// as if it were a message of its own.
    Bundle(Vec<Batch>),
    /// A document write (PUT, POST, DELETE, DELETE of a whole State scope) with its body.
    Document {
        request: DocumentRequest,
        body: Vec<u8>,
    },
    Credential(CredentialChange),
    Hub(bus::hubs::HubChange),
    Erase(EraseCommand),
}

/// Decodes a message by its subject (see [`parse`] for statements). `parts_header` is the
/// message's [`bus::PARTS_HEADER`], which only the gateway's messages may carry.
pub fn decode(
    subject: &str,
    payload: &[u8],
    version_header: Option<&str>,
    parts_header: Option<&str>,
    limits: &Limits,
) -> Result<Ingest, Rejection> {
    let command = |rule: &str, message: String| Rejection {
        statement: None,
        path: String::new(),
        rule: rule.into(),
        message: xapi::limits::truncate_text(&message, 512),
    };
    if let Some(parts) = parts_header {
        if subject != subjects::IN_HTTP {
            return Err(command(
                "bundle.subject",
                format!(
                    "only the gateway's {} messages are bundles, not {subject}",
                    subjects::IN_HTTP
                ),
            ));
        }
        return bundle(payload, parts);
    }
    match subject {
        subjects::IN_ERASE => serde_json::from_slice(payload)
            .map(Ingest::Erase)
            .map_err(|err| command("erase.command", format!("not an erasure command: {err}"))),
        subjects::IN_CREDENTIALS => serde_json::from_slice(payload)
            .map(Ingest::Credential)
            .map_err(|err| {
                command(
                    "credential.change",
                    format!("not a credential change: {err}"),
                )
            }),
        subjects::IN_HUBS => serde_json::from_slice(payload)
            .map(Ingest::Hub)
            .map_err(|err| command("hub.change", format!("not a hub registry change: {err}"))),
        subjects::IN_DOCUMENTS => {
            let (request, body): (DocumentRequest, &[u8]) =
                bus::wire::unframe(payload).map_err(|err| {
                    command("document.request", format!("not a document write: {err}"))
                })?;
            if matches!(request.op, DocumentOp::Get | DocumentOp::List) {
                return Err(command(
                    "document.request",
                    format!("{:?} is a read, not a write", request.op),
                ));
            }
            Ok(Ingest::Document {
                request,
                body: body.to_vec(),
            })
        }
        _ => parse(subject, payload, version_header, limits).map(Ingest::Statements),
    }
}

/// The gateway's bundle: a JSON array of as many [`HttpBatch`] as its header says.
fn bundle(payload: &[u8], parts: &str) -> Result<Ingest, Rejection> {
    let batches: Vec<HttpBatch<Box<RawValue>>> = serde_json::from_slice(payload)
        .map_err(|err| malformed(format!("gateway bundle is not valid: {err}")))?;
    if parts.parse::<usize>().ok() != Some(batches.len()) || batches.is_empty() {
        return Err(malformed(format!(
            "a bundle of {} batches under the header {} {parts:?}",
            batches.len(),
            bus::PARTS_HEADER
        )));
    }
    batches
        .into_iter()
        .map(gateway_batch)
        .collect::<Result<_, _>>()
        .map(Ingest::Bundle)
}

/// A batch the gateway validated and wrote, as the store applies it.
fn gateway_batch(batch: HttpBatch<Box<RawValue>>) -> Result<Batch, Rejection> {
    let version = XapiVersion::from_header(&batch.version)
        .ok_or_else(|| malformed(format!("unknown xAPI version {:?}", batch.version)))?;
    Ok(Batch {
        statements: Statements::Written(batch.statements),
        settings: BatchSettings {
            authority: batch.authority,
            version,
            define: batch.define,
            bodies: batch.bodies,
            keep_original: false,
        },
    })
}

/// A message sourced from a hub node's stream must be on that hub's subject
/// ([`bus::leaf::check_sourced`]): otherwise it goes to `LRS_REJECTED` (rule `hub.source`).
pub fn check_source(subject: &str, source: Option<&str>) -> Result<(), Rejection> {
    bus::leaf::check_sourced(subject, source).map_err(|message| Rejection {
        statement: None,
        path: String::new(),
        rule: "hub.source".into(),
        message: xapi::limits::truncate_text(&message, 512),
    })
}

/// The homePage of the authorities Leerspoor gives to direct NATS sources.
pub const SOURCE_HOME_PAGE: &str = xapi::llo::SOURCES_HOME_PAGE;

/// The authority of a direct-ingest source, e.g. `hub.eindhoven`.
pub fn source_authority(source: &str) -> Value {
    json!({
        "objectType": "Agent",
        "name": source,
        "account": {"homePage": SOURCE_HOME_PAGE, "name": source},
    })
}

fn malformed(message: String) -> Rejection {
    Rejection {
        statement: None,
        path: String::new(),
        rule: "message.json".into(),
        message,
    }
}

fn exceeded(exceeded: &xapi::limits::Exceeded) -> Rejection {
    Rejection {
        statement: exceeded.statement,
        path: String::new(),
        rule: exceeded.limit.key().to_owned(),
        message: exceeded.to_string(),
    }
}

/// Parses a message by its subject. `version_header` is the message's
/// `X-Experience-API-Version` header, if any (direct publishers may set it; 2.0.0 otherwise).
/// Messages published straight to NATS meet the same limits as HTTP requests, and a message
/// on a hub subject at most `limits.hub_message_bytes`.
pub fn parse(
    subject: &str,
    payload: &[u8],
    version_header: Option<&str>,
    limits: &Limits,
) -> Result<Batch, Rejection> {
    if subject == bus::subjects::IN_HTTP {
        // Written by the gateway, which enforced the limits on the request.
        let batch: HttpBatch<Box<RawValue>> = serde_json::from_slice(payload)
            .map_err(|err| malformed(format!("gateway batch is not valid: {err}")))?;
        return gateway_batch(batch);
    }
    let import = subject == bus::subjects::IN_IMPORT;
    let Some(source) = bus::subjects::ingest_source(subject).or(import.then_some("import")) else {
        return Err(malformed(format!("{subject} is not an ingest subject")));
    };
    if bus::subjects::hub_of(subject).is_some() && payload.len() > limits.hub_message_bytes {
        return Err(exceeded(&Exceeded::new(
            Limit::HubMessageBytes,
            limits.hub_message_bytes,
            format!("a message of {} bytes on a hub subject", payload.len()),
        )));
    }
    let version = match version_header {
        None => XapiVersion::V2_0_0,
        Some(header) => XapiVersion::from_header(header).ok_or_else(|| Rejection {
            statement: None,
            path: String::new(),
            rule: "message.version_header".into(),
            message: format!(
                "X-Experience-API-Version {:?} is not 1.0.x or 2.0.x",
                xapi::limits::truncate_text(header, 64)
            ),
        })?,
    };
    let statements = match xapi::limits::parse_statements(payload, limits) {
        Ok(statements) => statements,
        Err(BodyError::Exceeded(limit)) => return Err(exceeded(&limit)),
        Err(BodyError::Malformed(message)) => return Err(malformed(message)),
    };
    if statements.is_empty() {
        return Err(malformed("payload is an empty array".into()));
    }
    if let Some(hub) = bus::subjects::hub_of(subject) {
        check_hub(&statements, hub)?;
    }
    Ok(Batch {
        statements: Statements::Parsed(statements),
        settings: BatchSettings {
            authority: source_authority(source),
            version,
            define: true,
            bodies: Vec::new(),
            keep_original: import,
        },
    })
}

/// The LLO hub extension.
pub const HUB_EXTENSION: &str = xapi::llo::HUB;

/// A hub may only publish statements of its own hub ([`xapi::llo::check_hub`]).
fn check_hub(statements: &[Value], hub: &str) -> Result<(), Rejection> {
    xapi::llo::check_hub(statements, hub).map_err(|broken| Rejection {
        statement: broken.statement,
        path: broken.violation.path,
        rule: broken.violation.rule,
        message: broken.violation.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_messages_get_the_authority_of_their_subject() {
        let body = br#"{"actor": {}, "context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "eindhoven"}}}"#;
        let batch = parse("lrs.in.hub.eindhoven", body, None, &Limits::default()).expect("parses");
        assert_eq!(batch.settings.authority["account"]["name"], "hub.eindhoven");
        assert_eq!(batch.settings.version, XapiVersion::V2_0_0);
        assert_eq!(batch.statements.len(), 1);
    }

    #[test]
    fn a_hub_cannot_publish_for_another_hub_or_for_none() {
        let other = br#"{"context": {"extensions": {"https://w3id.org/xapi/llo/extensions/hub": "delft"}}}"#;
        let rejection =
            parse("lrs.in.hub.eindhoven", other, None, &Limits::default()).expect_err("other hub");
        assert_eq!(rejection.rule, "llo.hub_subject");
        assert_eq!(rejection.statement, Some(0));
        let rejection = parse(
            "lrs.in.hub.eindhoven",
            br#"[{"actor": {}}]"#,
            None,
            &Limits::default(),
        )
        .expect_err("no hub");
        assert!(
            rejection.message.contains("no hub"),
            "{}",
            rejection.message
        );
        assert!(
            parse(
                "lrs.in.tool.lms",
                br#"{"actor": {}}"#,
                None,
                &Limits::default()
            )
            .is_ok(),
            "only hub subjects"
        );
    }

    #[test]
    fn a_message_sourced_from_a_hub_must_be_on_that_hubs_subject() {
        let header = "LRS_HUB_veghel:XdYik8JP 7 lrs.in.hub.veghel > lrs.in.hub.veghel SjLC0VPt";
        assert!(check_source("lrs.in.hub.veghel", Some(header)).is_ok());
        assert!(check_source("lrs.in.http", None).is_ok(), "not sourced");
        let forged = check_source("lrs.in.http", Some(header)).expect_err("forged");
        assert_eq!(forged.rule, "hub.source");
        let elsewhere = check_source("lrs.in.hub.uden", Some(header)).expect_err("other hub");
        assert!(
            elsewhere.message.contains("lrs.in.hub.veghel"),
            "{}",
            elsewhere.message
        );
    }

    #[test]
    fn hub_messages_meet_the_limits() {
        let limits = Limits {
            hub_message_bytes: 100,
            statements_per_request: 2,
            ..Limits::default()
        };
        let big = format!(r#"{{"actor": {{"name": "{}"}}}}"#, "x".repeat(200));
        let rejection = parse("lrs.in.hub.h", big.as_bytes(), None, &limits).expect_err("big");
        assert_eq!(rejection.rule, "limits.hub_message_bytes");
        assert!(rejection.message.contains("= 100"), "{}", rejection.message);
        let rejection =
            parse("lrs.in.hub.h", b"[{}, {}, {}]", None, &limits).expect_err("too many");
        assert_eq!(rejection.rule, "limits.statements_per_request");
        let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
        let rejection = parse("lrs.in.tool.t", deep.as_bytes(), None, &limits).expect_err("deep");
        assert_eq!(rejection.rule, "limits.json_depth");
    }

    #[test]
    fn malformed_payloads_are_rejected_with_a_reason() {
        assert!(parse("lrs.in.hub.x", b"not json", None, &Limits::default()).is_err());
        assert!(parse("lrs.in.hub.x", b"[]", None, &Limits::default()).is_err());
        assert!(parse("lrs.in.hub.x", b"42", None, &Limits::default()).is_err());
        assert!(parse("lrs.in.hub.x", b"{}", Some("9.9"), &Limits::default()).is_err());
        assert!(parse("lrs.in.http", b"{}", None, &Limits::default()).is_err());
    }
}
