//! How an `LRS_STORED` message is read: its statements with only the fields
//! [`crate::contribution::effects`] looks at. A stored statement carries much the projector never
//! reads (its authority and attachments, an activity's definition, a verb's display, a result's
//! response and extensions). Built into JSON values and dropped again, the whole statements
//! were a seventh of the projector's CPU under HTTP batches; skipped here without being built,
//! a message of 100 reads and reduces to its effects in about a fifth less time (BENCHMARKS.md,
//! the forty-sixth round). The effects are what the whole statements give: the tests check it
//! on any change to a statement's members.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bus::wire::{StoredEvent, StoredEvents};
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// An `LRS_STORED` message, its statements pruned to what the summaries need; the error is
/// the one reading the whole message would give (an invalid payload is parked with it).
pub fn decode(payload: &[u8]) -> Result<StoredEvents, serde_json::Error> {
    #[derive(Deserialize)]
    struct Read {
        sequence: u64,
        events: Vec<StoredEvent<Pruned<Statement>>>,
    }
    let read: Read = serde_json::from_slice(payload)?;
    Ok(StoredEvents {
        sequence: read.sequence,
        events: read
            .events
            .into_iter()
            .map(|event| StoredEvent {
                kind: event.kind,
                position: event.position,
                statement: event.statement.0,
            })
            .collect(),
    })
}

/// Which members of an object are kept, and how.
trait Shape {
    /// How the member `key` is kept: `None` skips it.
    fn keep(key: &str) -> Option<Keep>;
}

enum Keep {
    Whole,
    Verb,
    Object,
    Outcome,
}

/// The statement: the actor and the context whole (agents' identifiers, extensions, the
/// context activities that name skills), the verb, object and result pruned.
struct Statement;
impl Shape for Statement {
    fn keep(key: &str) -> Option<Keep> {
        match key {
            "id" | "stored" | "timestamp" | "actor" | "context" => Some(Keep::Whole),
            "verb" => Some(Keep::Verb),
            "object" => Some(Keep::Object),
            "result" => Some(Keep::Outcome),
            _ => None,
        }
    }
}

struct Verb;
impl Shape for Verb {
    fn keep(key: &str) -> Option<Keep> {
        (key == "id").then_some(Keep::Whole)
    }
}

struct Object;
impl Shape for Object {
    fn keep(key: &str) -> Option<Keep> {
        matches!(key, "id" | "objectType").then_some(Keep::Whole)
    }
}

struct Outcome;
impl Shape for Outcome {
    fn keep(key: &str) -> Option<Keep> {
        matches!(key, "duration" | "completion" | "success" | "score").then_some(Keep::Whole)
    }
}

/// A JSON value; of an object, only the members its shape keeps. Anything but an object is
/// read whole, so a message reads wherever the whole one would.
struct Pruned<S>(Value, PhantomData<S>);

impl<'de, S: Shape> Deserialize<'de> for Pruned<S> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(PrunedVisitor::<S>(PhantomData))
            .map(|value| Pruned(value, PhantomData))
    }
}

struct PrunedVisitor<S>(PhantomData<S>);

impl<S: Shape> PrunedVisitor<S> {
    fn kept<'de, A: MapAccess<'de>>(map: &mut A, keep: Keep) -> Result<Value, A::Error> {
        Ok(match keep {
            Keep::Whole => map.next_value::<Value>()?,
            Keep::Verb => map.next_value::<Pruned<Verb>>()?.0,
            Keep::Object => map.next_value::<Pruned<Object>>()?.0,
            Keep::Outcome => map.next_value::<Pruned<Outcome>>()?.0,
        })
    }
}

impl<'de, S: Shape> Visitor<'de> for PrunedVisitor<S> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match S::keep(&key) {
                Some(keep) => {
                    let value = Self::kept(&mut map, keep)?;
                    kept.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(value.into())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A member's name, borrowed from the payload unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a member's name")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contribution::{effects, COMPANY, HUB, SKILLS};
    use proptest::prelude::*;
    use serde_json::json;

    /// The effects of `statements` in one message, read whole and read pruned.
    fn both(
        statements: &[Value],
    ) -> (
        Vec<crate::contribution::Effect>,
        Vec<crate::contribution::Effect>,
    ) {
        let message = json!({
            "sequence": 7,
            "events": statements.iter().enumerate().map(|(n, statement)| json!({
                "kind": if n % 5 == 4 { "voided" } else { "stored" },
                "position": n + 1,
                "statement": statement,
            })).collect::<Vec<_>>(),
        });
        let payload = serde_json::to_vec(&message).expect("a message");
        let whole: StoredEvents = serde_json::from_slice(&payload).expect("read whole");
        let pruned = decode(&payload).expect("read pruned");
        assert_eq!(pruned.sequence, whole.sequence);
        (effects(&whole), effects(&pruned))
    }

    fn statement(n: usize) -> Value {
        json!({
            "id": format!("6a1c3e52-0000-4000-8000-{n:012}"),
            "actor": {"objectType": "Agent", "name": "Worker", "mbox": format!("mailto:w{n}@example.org")},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed", "display": {"en-US": "completed"}},
            "object": {"objectType": "Activity", "id": "https://hub.example/course/1",
                "definition": {"name": {"en-US": "Course"}, "interactionType": "choice",
                    "choices": [{"id": "a", "description": {"en-US": "A"}}]}},
            "result": {"duration": "PT1H30M", "completion": true, "success": true,
                "score": {"scaled": 0.75, "raw": 3}, "response": "a", "extensions": {"https://x.example/e": [1, 2]}},
            "context": {"registration": "6a1c3e52-0000-4000-8000-000000000001",
                "contextActivities": {"category": [{"id": "https://skills.example/weld", "definition": {"name": {"en": "Welding"}}}]},
                "extensions": {HUB: "eindhoven", COMPANY: "KVK-1", SKILLS: ["https://skills.example/weld"]}},
            "timestamp": "2026-11-03T10:00:00.000Z",
            "stored": "2026-11-03T10:00:01.000Z",
            "authority": {"objectType": "Agent", "account": {"homePage": "https://lrs.example", "name": "hub"}},
            "version": "2.0.0",
            "attachments": [{"usageType": "http://id.tincanapi.com/attachment/certificate", "display": {"en": "c"},
                "contentType": "application/pdf", "length": 1, "sha2": "ab"}],
        })
    }

    #[test]
    fn pruned_statements_have_the_effects_of_whole_ones() {
        let mut statements: Vec<Value> = (0..5).map(statement).collect();
        // A team, a passed test without a result's duration, a statement about a statement.
        statements[1]["actor"] = json!({"objectType": "Group", "member": [
            {"mbox": "mailto:a@example.org"}, {"account": {"homePage": "https://h.example", "name": "b"}}]});
        statements[2]["verb"] = json!({"id": "http://adlnet.gov/expapi/verbs/passed"});
        statements[2]["result"] = json!({"success": true, "score": {"scaled": -0.5}});
        statements[3]["object"] = json!({"objectType": "SubStatement", "actor": {"mbox": "mailto:x@example.org"},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/completed"}, "object": {"id": "https://a.example/1"}});
        // Members whose names have escapes, and a verb, object and result that are not objects.
        let escaped = r#"{"\u0069d": "6a1c3e52-0000-4000-8000-000000000099", "actor": {"mbox": "mailto:e@example.org"},
            "verb": {"\u0069d": "http://adlnet.gov/expapi/verbs/attended", "display": {"en": "\u00e9"}},
            "object": {"id": "https://a.example/s"}, "timestamp": "2026-11-03T10:00:00Z",
            "result": {"dur\u0061tion": "PT2H"}, "context": {"extensions": {}}}"#;
        statements.push(serde_json::from_str(escaped).expect("escaped"));
        statements.push(json!({"id": "6a1c3e52-0000-4000-8000-000000000098", "actor": {"mbox": "mailto:f@example.org"},
            "verb": "attended", "object": 3, "result": null, "timestamp": "2026-11-03T10:00:00Z"}));
        statements.push(json!("not a statement"));
        let (whole, pruned) = both(&statements);
        assert_eq!(whole.len(), 7, "every statement with an id has an effect");
        assert!(
            whole.iter().any(|effect| !effect.labels.is_empty()),
            "skills named"
        );
        assert!(
            whole.iter().any(|effect| effect.contributions.len() == 2),
            "a team counted"
        );
        assert_eq!(pruned, whole);
    }

    #[test]
    fn a_message_that_does_not_read_whole_does_not_read_pruned() {
        for payload in [
            &br#"{"events": []}"#[..],
            br#"{"sequence": 1, "events": [{"kind": "lost", "position": 1, "statement": {}}]}"#,
            br#"{"sequence": 1, "events": [{"kind": "stored", "position": 1, "statement": {"id": "x""#,
            b"not json",
        ] {
            let whole = serde_json::from_slice::<StoredEvents>(payload).map(|_| ());
            let pruned = decode(payload).map(|_| ());
            assert!(whole.is_err());
            assert_eq!(
                pruned.map_err(|err| err.to_string()),
                whole.map_err(|err| err.to_string())
            );
        }
    }

    /// A value to put somewhere in a statement: ones the projector reads, and others.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-2.0f64..2.0).prop_map(Value::from),
            prop_oneof![
                Just("PT1H".to_owned()),
                Just("2026-11-03T10:00:00Z".to_owned()),
                Just("mailto:a@example.org".to_owned()),
                Just("Group".to_owned()),
                Just("SubStatement".to_owned()),
                Just("http://adlnet.gov/expapi/verbs/completed".to_owned()),
                Just("http://adlnet.gov/expapi/verbs/passed".to_owned()),
                Just("http://adlnet.gov/expapi/verbs/failed".to_owned()),
                Just("https://w3id.org/xapi/llo/verbs/attended".to_owned()),
                Just("http://adlnet.gov/expapi/verbs/voided".to_owned()),
                Just("https://skills.example/weld".to_owned()),
                "[a-z]{0,6}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("id"),
                            Just("scaled"),
                            Just("mbox"),
                            Just("name"),
                            Just("en")
                        ],
                        inner
                    ),
                    0..3
                )
                .prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(name, value)| (name.to_owned(), value))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// Where a change goes: members the projector reads, beside ones it skips.
    const PATHS: &[&[&str]] = &[
        &["id"],
        &["actor"],
        &["actor", "objectType"],
        &["actor", "mbox"],
        &["actor", "member"],
        &["verb"],
        &["verb", "id"],
        &["verb", "display"],
        &["object"],
        &["object", "id"],
        &["object", "objectType"],
        &["object", "definition"],
        &["result"],
        &["result", "score"],
        &["result", "score", "scaled"],
        &["result", "success"],
        &["result", "completion"],
        &["result", "duration"],
        &["result", "response"],
        &["context"],
        &["context", "extensions"],
        &["context", "extensions", HUB],
        &["context", "extensions", COMPANY],
        &["context", "extensions", SKILLS],
        &["context", "contextActivities", "category"],
        &["timestamp"],
        &["stored"],
        &["authority"],
    ];

    fn set(at: &mut Value, path: &[&str], value: Option<Value>) {
        let Some(object) = at.as_object_mut() else {
            return;
        };
        match (path, value) {
            ([last], Some(value)) => {
                object.insert((*last).to_owned(), value);
            }
            ([last], None) => {
                object.remove(*last);
            }
            ([first, rest @ ..], value) => {
                set(object.entry(*first).or_insert(json!({})), rest, value)
            }
            ([], _) => {}
        }
    }

    /// The example statement with members set (or removed, for `None`) along [`PATHS`].
    fn changed(n: usize, changes: Vec<(usize, Option<Value>)>) -> Value {
        let mut statement = statement(n);
        for (path, value) in changes {
            set(&mut statement, PATHS[path % PATHS.len()], value);
        }
        statement
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever a statement holds, reading it pruned gives the effects reading it whole does.
        #[test]
        fn any_statement_pruned_has_the_effects_of_it_whole(
            changes in prop::collection::vec(
                prop::collection::vec((any::<usize>(), prop::option::of(json_value())), 0..4),
                1..4,
            ),
        ) {
            let statements: Vec<Value> = changes
                .into_iter()
                .enumerate()
                .map(|(n, changes)| changed(n, changes))
                .collect();
            let (whole, pruned) = both(&statements);
            prop_assert_eq!(pruned, whole);
        }
    }
}
