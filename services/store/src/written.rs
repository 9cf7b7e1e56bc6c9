//! A statement as the gateway wrote it, read for what the store decides about it without
//! building it into a `Value`: its id, the terms it is indexed under, and the text it is
//! stored as (the gateway's text with what the store owns put in front).
//!
//! The gateway validated the statement and wrote it with `serde_json` from a `Value`:
//! compact, each member once. Building it into a `Value` again, completing it, writing it out
//! and dropping it was about two fifths of the store's apply: a message of 100 read this way
//! takes 0.58–0.64 of the CPU (BENCHMARKS.md, the forty-ninth round). Only a statement whose
//! stored form is its text with members put in front is read this way ([`Written::read`]): it
//! has an id, no `stored`, `authority` or `attachments` of its own, an activity (or nothing)
//! as its object, and each of its context activities in an array already. Any other is built
//! whole (`crate::apply`), as is one whose id is planned or stored already (whether it is the
//! same statement is decided on values).

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;
use xapi::statement::{index_terms, IndexTerms};
use xapi::XapiVersion;

use crate::db::{DbError, Record};

/// A statement of the gateway's, read for the store (see the module docs).
#[derive(Debug)]
pub struct Written {
    pub id: Uuid,
    /// The members [`index_terms`] reads, but the authority (the batch's, the same for each
    /// statement): the actor, the verb's id, the object's type and id, and the context's
    /// registration, agents and activities.
    view: Value,
    /// Whether the statement has a `version` (then it is kept) and a `timestamp` (else it is
    /// `stored`), whatever their values.
    version: bool,
    timestamp: bool,
}

/// The members of a statement the store looks at; any other is skipped over unread.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    actor: Option<Value>,
    #[serde(borrow)]
    verb: Option<Verb<'a>>,
    #[serde(borrow)]
    object: Option<Object<'a>>,
    #[serde(borrow)]
    context: Option<Context<'a>>,
    #[serde(default, deserialize_with = "present")]
    stored: bool,
    #[serde(default, deserialize_with = "present")]
    authority: bool,
    #[serde(default, deserialize_with = "present")]
    attachments: bool,
    #[serde(default, deserialize_with = "present")]
    version: bool,
    #[serde(default, deserialize_with = "present")]
    timestamp: bool,
}

#[derive(Deserialize)]
struct Verb<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
}

#[derive(Deserialize)]
struct Object<'a> {
    #[serde(borrow, rename = "objectType")]
    object_type: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a str>,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(borrow)]
    registration: Option<&'a str>,
    instructor: Option<Value>,
    team: Option<Value>,
    #[serde(rename = "contextAgents")]
    context_agents: Option<Value>,
    #[serde(rename = "contextGroups")]
    context_groups: Option<Value>,
    #[serde(rename = "contextActivities")]
    context_activities: Option<Map<String, Value>>,
}

/// Whether a member is there, whatever its value (`null` included: a `version` of `null` is
/// kept as it is, not given the default).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(deserializer).map(|_| true)
}

impl Written {
    /// The statement `text` read for the store, or `None` when it must be built whole: its
    /// stored form is more than members put in front of its text, or a member the store
    /// looks at is not of the form this reads (a string with escapes, a member twice).
    pub fn read(text: &str) -> Option<Written> {
        if !text.starts_with('{') {
            return None;
        }
        let members: Members = serde_json::from_str(text).ok()?;
        if members.stored || members.authority || members.attachments {
            return None;
        }
        let id = Uuid::parse_str(members.id?).ok()?;
        let mut view = Map::new();
        if let Some(actor) = members.actor {
            view.insert("actor".into(), actor);
        }
        if let Some(verb) = members.verb {
            let mut kept = Map::new();
            if let Some(id) = verb.id {
                kept.insert("id".into(), Value::String(id.to_owned()));
            }
            view.insert("verb".into(), Value::Object(kept));
        }
        if let Some(object) = members.object {
            // An agent, a group or a statement as the object: indexed otherwise.
            if !matches!(object.object_type, None | Some("Activity")) {
                return None;
            }
            let mut kept = Map::new();
            if let Some(id) = object.id {
                kept.insert("id".into(), Value::String(id.to_owned()));
            }
            view.insert("object".into(), Value::Object(kept));
        }
        if let Some(context) = members.context {
            let mut kept = Map::new();
            if let Some(registration) = context.registration {
                kept.insert(
                    "registration".into(),
                    Value::String(registration.to_owned()),
                );
            }
            for (name, agents) in [
                ("instructor", context.instructor),
                ("team", context.team),
                ("contextAgents", context.context_agents),
                ("contextGroups", context.context_groups),
            ] {
                if let Some(agents) = agents {
                    kept.insert(name.into(), agents);
                }
            }
            if let Some(lists) = context.context_activities {
                // One context activity sent as an object is stored in an array.
                if lists.values().any(|list| !list.is_array()) {
                    return None;
                }
                kept.insert("contextActivities".into(), Value::Object(lists));
            }
            view.insert("context".into(), Value::Object(kept));
        }
        Some(Written {
            id,
            view: Value::Object(view),
            version: members.version,
            timestamp: members.timestamp,
        })
    }

    /// The terms the statement is indexed under, as [`index_terms`] finds them in the stored
    /// statement; `authority` is [`authority_terms`] of the batch's authority.
    pub fn terms(&self, authority: &[String]) -> IndexTerms {
        let mut terms = index_terms(&self.view);
        if !authority.is_empty() {
            terms.related_agents.extend_from_slice(authority);
            terms.related_agents.sort();
            terms.related_agents.dedup();
        }
        terms
    }

    /// The statement as stored: its `text` with the `authority` (as JSON text) and `stored`
    /// put first, and `version` and `timestamp` when it has none, as
    /// [`xapi::statement::complete_for_store`] completes the statement.
    pub fn stored_text(
        &self,
        text: &str,
        stored: &str,
        authority: &str,
        version: XapiVersion,
    ) -> String {
        let rest = text.get(1..).unwrap_or_default();
        let mut out = String::with_capacity(text.len() + authority.len() + 128);
        out.push_str("{\"authority\":");
        out.push_str(authority);
        out.push_str(",\"stored\":");
        push_string(&mut out, stored);
        if !self.version {
            out.push_str(",\"version\":");
            push_string(&mut out, version.statement_default());
        }
        if !self.timestamp {
            out.push_str(",\"timestamp\":");
            push_string(&mut out, stored);
        }
        if !rest.trim_start().starts_with('}') {
            out.push(',');
        }
        out.push_str(rest);
        out
    }
}

/// The related-agent terms of a batch's authority: what [`index_terms`] adds for it.
pub fn authority_terms(authority: &Value) -> Vec<String> {
    let mut statement = Map::new();
    statement.insert("authority".into(), authority.clone());
    index_terms(&Value::Object(statement)).related_agents
}

fn push_string(out: &mut String, text: &str) {
    // Writing a string to a String cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_default());
}

/// A record planned from a [`Written`] statement, kept as text.
#[derive(Debug, Clone)]
pub struct WrittenRecord {
    /// The statement as stored ([`Written::stored_text`]).
    pub statement: String,
    pub voided: bool,
    pub position: u64,
    pub defines: bool,
}

impl WrittenRecord {
    /// The record's JSON, as `serde_json` writes the [`Record`] it reads as.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.statement.len() + 64);
        out.extend_from_slice(b"{\"statement\":");
        out.extend_from_slice(self.statement.as_bytes());
        out.extend_from_slice(if self.voided {
            b",\"voided\":true"
        } else {
            b",\"voided\":false"
        });
        out.extend_from_slice(b",\"position\":");
        out.extend_from_slice(self.position.to_string().as_bytes());
        if !self.defines {
            out.extend_from_slice(b",\"defines\":false");
        }
        out.push(b'}');
        out
    }

    /// The record built whole, for what decides on values (a statement voiding it, one
    /// referencing it, one with its id).
    pub fn record(&self) -> Result<Record, DbError> {
        let statement = serde_json::from_str(&self.statement).map_err(|err| DbError::Corrupt {
            key: crate::keys::record(self.position),
            reason: format!("a planned statement does not read back: {err}"),
        })?;
        Ok(Record {
            statement,
            voided: self.voided,
            position: self.position,
            defines: self.defines,
            bodies: Vec::new(),
        })
    }
}

/// A statement a message planned, by id, as later statements of the message see it.
#[derive(Debug, Clone)]
pub enum Kept {
    Built(Record),
    Written(WrittenRecord),
}

impl Kept {
    pub fn record(&self) -> Result<Record, DbError> {
        match self {
            Kept::Built(record) => Ok(record.clone()),
            Kept::Written(written) => written.record(),
        }
    }
}

#[cfg(test)]
#[path = "written_tests.rs"]
mod tests;
