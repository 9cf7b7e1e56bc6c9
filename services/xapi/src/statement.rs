//! What the LRS does to a statement beyond validating it: the properties it sets on store,
//! equivalence for conflicts, the terms its indexes hold, and the output formats.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::agent::{ids_only, ifi_key, is_group, members};
use crate::{XapiVersion, VERB_VOIDED};

/// The statement's id, lowercased, or a new one written into it. The gateway calls this
/// before publishing, so a retried publish carries the same ids.
pub fn ensure_id(statement: &mut Value) -> String {
    if let Some(id) = statement_id(statement) {
        return id;
    }
    let id = Uuid::new_v4().to_string();
    if let Some(object) = statement.as_object_mut() {
        object.insert("id".into(), Value::String(id.clone()));
    }
    id
}

/// The statement's id, lowercased, or one derived from `seed` and its place in the request.
/// The same request (same seed) gets the same ids, so a client retrying a request whose
/// answer it lost stores each statement once.
pub fn ensure_id_from(statement: &mut Value, seed: &[u8; 32], index: usize) -> String {
    if let Some(id) = statement_id(statement) {
        return id;
    }
    let id = derived_id(seed, index);
    if let Some(object) = statement.as_object_mut() {
        object.insert("id".into(), Value::String(id.clone()));
    }
    id
}

/// The id [`ensure_id_from`] gives the `index`th statement of a request with `seed`.
fn derived_id(seed: &[u8; 32], index: usize) -> String {
    let mut bytes = [0u8; 16];
    for (at, byte) in bytes.iter_mut().enumerate() {
        *byte = seed[at];
    }
    let index_bytes = (index as u64).to_be_bytes();
    for (at, byte) in index_bytes.iter().enumerate() {
        bytes[8 + at] ^= *byte;
    }
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// A digest of who sent what: the credential's key, the xAPI version, the statements as sent
/// (and, for PUT, the id): what a retry has in common with the request it repeats, the seed of
/// [`ensure_id_from`] (the gateway's and a hub node's).
pub fn request_seed(
    key: &str,
    version: XapiVersion,
    statements: &[Value],
    put_id: Option<&str>,
) -> [u8; 32] {
    request_seed_of(key, version, &StatementTexts::of(statements), put_id)
}

/// [`request_seed`] of statements already written as text.
pub fn request_seed_of(
    key: &str,
    version: XapiVersion,
    texts: &StatementTexts,
    put_id: Option<&str>,
) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in [
        key.as_bytes(),
        version.as_str().as_bytes(),
        put_id.unwrap_or("").as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    for text in texts.iter() {
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text);
    }
    hasher.finalize().into()
}

/// Statements as compact JSON, one after another in one buffer: the bytes `Value::to_string`
/// gives each, written by serde_json's own writer (through `Display` it took four times as
/// long, a sixth of the gateway's CPU under batches; BENCHMARKS.md, eighteenth round). What
/// [`request_seed_of`] digests, and, with the ids [`write_with_id`] gives, what the gateway
/// publishes: each statement of a request written once, not once for the seed and again for
/// the bus (BENCHMARKS.md, the forty-seventh round).
#[derive(Debug, Default)]
pub struct StatementTexts {
    bytes: Vec<u8>,
    /// Where each statement's text ends in `bytes`.
    ends: Vec<usize>,
}

impl StatementTexts {
    pub fn of(statements: &[Value]) -> StatementTexts {
        let mut texts = StatementTexts {
            bytes: Vec::new(),
            ends: Vec::with_capacity(statements.len()),
        };
        for statement in statements {
            // Writing a `Value` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut texts.bytes, statement);
            texts.ends.push(texts.bytes.len());
        }
        texts
    }

    /// The text of the `index`th statement (empty past the last).
    pub fn get(&self, index: usize) -> &[u8] {
        let start = match index {
            0 => 0,
            _ => self
                .ends
                .get(index - 1)
                .copied()
                .unwrap_or(self.bytes.len()),
        };
        let end = self.ends.get(index).copied().unwrap_or(start);
        &self.bytes[start..end]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.ends.len()).map(|index| self.get(index))
    }
}

/// Appends the statement as [`ensure_id_from`] makes it to `out`, from `sent` (its text as
/// [`StatementTexts`] wrote it), and returns its id: as sent when it has an id, else with the
/// id put first. The statement itself is left as it is (the gateway publishes the text, not
/// the value); one whose `id` is not one, which validation lets none through, is written again
/// whole.
pub fn write_with_id(
    statement: &Value,
    sent: &[u8],
    seed: &[u8; 32],
    index: usize,
    out: &mut Vec<u8>,
) -> String {
    if let Some(id) = statement_id(statement) {
        out.extend_from_slice(sent);
        return id;
    }
    match sent.strip_prefix(b"{") {
        Some(rest) if statement.get("id").is_none() => {
            let id = derived_id(seed, index);
            out.extend_from_slice(br#"{"id":"#);
            // A string into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, &id);
            if rest != b"}" {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            id
        }
        _ => {
            let mut with_id = statement.clone();
            let id = ensure_id_from(&mut with_id, seed, index);
            let _ = serde_json::to_writer(&mut *out, &with_id);
            id
        }
    }
}

/// The statement's id in canonical (lowercase hyphenated) form.
pub fn statement_id(statement: &Value) -> Option<String> {
    let id = statement.get("id")?.as_str()?;
    Uuid::parse_str(id).ok().map(|uuid| uuid.to_string())
}

/// Sets what the LRS owns: `stored`, `authority`, `version` if missing, `timestamp` if missing.
pub fn complete_for_store(
    statement: &mut Value,
    stored: &str,
    authority: &Value,
    version: XapiVersion,
) {
    let Some(object) = statement.as_object_mut() else {
        return;
    };
    object.insert("stored".into(), Value::String(stored.to_owned()));
    object.insert("authority".into(), authority.clone());
    object
        .entry("version")
        .or_insert_with(|| Value::String(version.statement_default().to_owned()));
    object
        .entry("timestamp")
        .or_insert_with(|| Value::String(stored.to_owned()));
    normalize_context_activities(statement);
}

/// xAPI lets a client send one context activity as an object; the LRS returns arrays.
fn normalize_context_activities(statement: &mut Value) {
    if let Some(lists) = crate::json::at_mut(statement, &["context", "contextActivities"])
        .and_then(Value::as_object_mut)
    {
        for list in lists.values_mut() {
            if list.is_object() {
                *list = Value::Array(vec![list.take()]);
            }
        }
    }
    if crate::json::at(statement, &["object", "objectType"]).and_then(Value::as_str)
        == Some("SubStatement")
    {
        if let Some(sub) = statement.get_mut("object") {
            normalize_context_activities(sub);
        }
    }
}

/// The statement a statement's StatementRef object points at (voiding or not).
pub fn referenced_statement(statement: &Value) -> Option<String> {
    let object = statement.get("object")?;
    if object.get("objectType")?.as_str()? != "StatementRef" {
        return None;
    }
    let id = object.get("id")?.as_str()?;
    Uuid::parse_str(id).ok().map(|uuid| uuid.to_string())
}

/// Whether an incoming statement is the one already stored under its id, apart from what the
/// LRS set. A POST or PUT of the same statement again is then a no-op, not a conflict.
pub fn equivalent(stored: &Value, incoming: &Value) -> bool {
    let mut incoming = incoming.clone();
    let mut stored = stored.clone();
    for statement in [&mut stored, &mut incoming] {
        normalize_context_activities(statement);
        truncate_durations(statement);
    }
    let (Some(stored), Some(incoming)) = (stored.as_object(), incoming.as_object()) else {
        return false;
    };
    let lrs_owned = ["stored", "authority", "version", "timestamp"];
    let comparable =
        |object: &Map<String, Value>, other: &Map<String, Value>| -> Map<String, Value> {
            object
                .iter()
                .filter(|(key, _)| {
                    !(lrs_owned.contains(&key.as_str())
                        && (key.as_str() == "stored" || !other.contains_key(*key)))
                })
                .filter(|(key, _)| key.as_str() != "id")
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        };
    comparable(stored, incoming) == comparable(incoming, stored)
}

/// xAPI compares durations to 0.01 s: `PT1.2345S`, `PT1.23S` and `PT1.230S` are one duration.
fn truncate_durations(statement: &mut Value) {
    if let Some(duration) = crate::json::at_mut(statement, &["result", "duration"]) {
        if let Some(text) = duration.as_str() {
            *duration = Value::String(hundredths(text));
        }
    }
    if crate::json::at(statement, &["object", "objectType"]).and_then(Value::as_str)
        == Some("SubStatement")
    {
        if let Some(sub) = statement.get_mut("object") {
            truncate_durations(sub);
        }
    }
}

/// The duration with its seconds written to exactly two decimals (truncated, not rounded).
fn hundredths(duration: &str) -> String {
    let Some(body) = duration.strip_suffix('S') else {
        return duration.to_owned();
    };
    // The trailing run of digits and separators; `char_indices` keeps the cut on a character
    // boundary whatever the input (a multi-byte character before the run must not be split).
    let start = body
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == ','))
        .map_or(0, |(at, c)| at + c.len_utf8());
    let (head, seconds) = body.split_at(start);
    let (whole, fraction) = seconds.split_once(['.', ',']).unwrap_or((seconds, ""));
    let fraction: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(2)
        .collect();
    format!("{head}{whole}.{fraction}S")
}

/// The id of the statement a voiding statement voids.
pub fn voided_target(statement: &Value) -> Option<String> {
    let verb = statement.get("verb")?.get("id")?.as_str()?;
    if verb != VERB_VOIDED {
        return None;
    }
    referenced_statement(statement)
}

/// The terms a statement is found by. The store indexes them and checks them again after an
/// index lookup, so index keys may be hashes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexTerms {
    /// IFI keys of the actor and of an Agent or Group object (the `agent` filter).
    pub agents: Vec<String>,
    /// IFI keys of every agent anywhere (`related_agents=true`), including `agents`.
    pub related_agents: Vec<String>,
    pub verb: Option<String>,
    /// The object's activity id (the `activity` filter).
    pub activity: Option<String>,
    /// Every activity id anywhere (`related_activities=true`), including `activity`.
    pub related_activities: Vec<String>,
    pub registration: Option<String>,
    /// SHA-2 (lowercase hex) of the statement's own attachments: which statements still use
    /// an attachment body (erasure removes bodies no statement uses any more).
    pub attachments: Vec<String>,
}

/// Whether the statement's own authority is the agent with this IFI key, or a group with it
/// as a member (the OAuth-style authority): what `statements/read/mine` returns.
pub fn authority_names(statement: &Value, key: &str) -> bool {
    let Some(authority) = statement.get("authority") else {
        return false;
    };
    let is = |agent: &Value| ifi_key(agent).as_deref() == Some(key);
    is(authority) || (is_group(authority) && members(authority).iter().any(is))
}

pub fn index_terms(statement: &Value) -> IndexTerms {
    let mut terms = IndexTerms {
        verb: crate::json::at(statement, &["verb", "id"])
            .and_then(Value::as_str)
            .map(str::to_owned),
        registration: crate::json::at(statement, &["context", "registration"])
            .and_then(Value::as_str)
            .map(str::to_lowercase),
        attachments: statement
            .get("attachments")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|attachment| attachment.get("sha2").and_then(Value::as_str))
            .map(str::to_lowercase)
            .collect(),
        ..IndexTerms::default()
    };
    if let Some(actor) = statement.get("actor") {
        push_agent(&mut terms.agents, actor);
    }
    if let Some(object) = statement.get("object") {
        match object.get("objectType").and_then(Value::as_str) {
            Some("Agent") | Some("Group") => push_agent(&mut terms.agents, object),
            None | Some("Activity") => {
                terms.activity = object.get("id").and_then(Value::as_str).map(str::to_owned);
            }
            _ => {}
        }
    }
    collect_related(
        statement,
        &mut terms.related_agents,
        &mut terms.related_activities,
    );
    if let Some(authority) = statement.get("authority") {
        push_agent_and_members(&mut terms.related_agents, authority);
    }
    dedup(&mut terms.agents);
    dedup(&mut terms.related_agents);
    dedup(&mut terms.related_activities);
    dedup(&mut terms.attachments);
    terms
}

fn dedup(values: &mut Vec<String>) {
    values.sort();
    values.dedup();
}

fn push_agent(into: &mut Vec<String>, agent: &Value) {
    if let Some(key) = ifi_key(agent) {
        into.push(key);
    }
}

fn push_agent_and_members(into: &mut Vec<String>, agent: &Value) {
    push_agent(into, agent);
    if is_group(agent) {
        for member in members(agent) {
            push_agent(into, member);
        }
    }
}

/// Agents and activities of a statement or SubStatement, recursively.
fn collect_related(statement: &Value, agents: &mut Vec<String>, activities: &mut Vec<String>) {
    if let Some(actor) = statement.get("actor") {
        push_agent_and_members(agents, actor);
    }
    if let Some(object) = statement.get("object") {
        match object.get("objectType").and_then(Value::as_str) {
            Some("Agent") | Some("Group") => push_agent_and_members(agents, object),
            Some("SubStatement") => collect_related(object, agents, activities),
            Some("StatementRef") => {}
            _ => {
                if let Some(id) = object.get("id").and_then(Value::as_str) {
                    activities.push(id.to_owned());
                }
            }
        }
    }
    let Some(context) = statement.get("context") else {
        return;
    };
    for key in ["instructor", "team"] {
        if let Some(agent) = context.get(key) {
            push_agent_and_members(agents, agent);
        }
    }
    for entry in context
        .get("contextAgents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(agent) = entry.get("agent") {
            push_agent(agents, agent);
        }
    }
    for entry in context
        .get("contextGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(group) = entry.get("group") {
            push_agent_and_members(agents, group);
        }
    }
    if let Some(lists) = context.get("contextActivities").and_then(Value::as_object) {
        for list in lists.values() {
            let items = match list {
                Value::Array(items) => items.as_slice(),
                single => std::slice::from_ref(single),
            };
            for activity in items {
                if let Some(id) = activity.get("id").and_then(Value::as_str) {
                    activities.push(id.to_owned());
                }
            }
        }
    }
}

/// The `ids` format: agents reduced to their identifiers, activities and verbs to their ids.
pub fn format_ids(statement: &Value) -> Value {
    let mut out = statement.clone();
    reduce_to_ids(&mut out);
    out
}

fn reduce_to_ids(statement: &mut Value) {
    let Some(object) = statement.as_object_mut() else {
        return;
    };
    for key in ["actor", "authority"] {
        if let Some(agent) = object.get_mut(key) {
            *agent = ids_only(agent);
        }
    }
    if let Some(verb) = object.get_mut("verb") {
        if let Some(id) = verb.get("id").cloned() {
            *verb = serde_json::json!({ "id": id });
        }
    }
    if let Some(target) = object.get_mut("object") {
        match target.get("objectType").and_then(Value::as_str) {
            Some("Agent") | Some("Group") => *target = ids_only(target),
            Some("SubStatement") => reduce_to_ids(target),
            Some("StatementRef") => {}
            _ => {
                if let Some(id) = target.get("id").cloned() {
                    *target = serde_json::json!({ "id": id });
                }
            }
        }
    }
}

/// The `canonical` format: every language map reduced to the one entry that best matches
/// the requested languages (the first entry when none matches).
pub fn format_canonical(statement: &Value, languages: &[String]) -> Value {
    let mut out = statement.clone();
    reduce_language_maps(&mut out, languages, None);
    out
}

const LANGUAGE_MAP_KEYS: [&str; 3] = ["display", "name", "description"];

fn reduce_language_maps(value: &mut Value, languages: &[String], key: Option<&str>) {
    match value {
        Value::Object(object) => {
            if key.is_some_and(|key| LANGUAGE_MAP_KEYS.contains(&key))
                && object.values().all(Value::is_string)
            {
                let chosen = languages
                    .iter()
                    .find_map(|wanted| {
                        object
                            .keys()
                            .find(|tag| tag.eq_ignore_ascii_case(wanted))
                            .cloned()
                    })
                    .or_else(|| object.keys().next().cloned());
                if let Some(tag) = chosen {
                    object.retain(|existing, _| *existing == tag);
                }
                return;
            }
            for (child_key, child) in object.iter_mut() {
                if child_key == "extensions" {
                    continue;
                }
                reduce_language_maps(child, languages, Some(child_key));
            }
        }
        Value::Array(items) => {
            for item in items {
                reduce_language_maps(item, languages, None);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The text a statement is published as, made from its text as sent, reads as the
    /// statement `ensure_id_from` makes: with an id of its own (kept as sent), without one,
    /// empty, and with an `id` that is not one (written again).
    #[test]
    fn a_statement_written_with_its_id_reads_as_the_statement_with_it() {
        let seed = [7; 32];
        let statements = [
            sample(),
            json!({"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": "https://v"}}),
            json!({}),
            json!({"id": 5, "actor": {"mbox": "mailto:a@example.org"}}),
        ];
        let texts = StatementTexts::of(&statements);
        assert_eq!(texts.iter().count(), statements.len());
        for (index, statement) in statements.iter().enumerate() {
            assert_eq!(texts.get(index), statement.to_string().as_bytes());
            let mut expected = statement.clone();
            let id = ensure_id_from(&mut expected, &seed, index);
            let mut out = b"[".to_vec();
            assert_eq!(
                write_with_id(statement, texts.get(index), &seed, index, &mut out),
                id
            );
            out.push(b']');
            let read: Vec<Value> = serde_json::from_slice(&out).expect("JSON");
            assert_eq!(read, [expected], "statement {index}");
        }
        assert_eq!(texts.get(statements.len()), b"");
        assert_eq!(
            request_seed("k", XapiVersion::V2_0_0, &statements, None),
            request_seed_of("k", XapiVersion::V2_0_0, &texts, None)
        );
    }

    fn sample() -> Value {
        json!({
            "id": "6690E6C9-3EF0-4ED3-8B37-7F3964730BEE",
            "actor": {"objectType": "Group", "name": "team", "member": [
                {"mbox": "mailto:ann@example.org"}, {"mbox": "mailto:bob@example.org"}]},
            "verb": {"id": "http://adlnet.gov/expapi/verbs/attended", "display": {"en-US": "attended", "nl": "woonde bij"}},
            "object": {"id": "https://hub.example/sessions/1", "definition": {"name": {"nl": "sessie"}}},
            "context": {"registration": "EC531277-B57B-4C15-8D91-D292C5B2B8F7",
                "instructor": {"mbox": "mailto:teacher@example.org"},
                "contextActivities": {"parent": {"id": "https://hub.example/courses/1"}}}
        })
    }

    /// The seed's definition: SHA-256 over each part and each statement's compact JSON, each
    /// after its length. A retry sent to a newer Leerspoor must get the ids the first attempt
    /// got, so the seed may not change with how it is computed.
    fn seed_as_defined(
        key: &str,
        version: XapiVersion,
        statements: &[Value],
        put_id: Option<&str>,
    ) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let texts = statements.iter().map(Value::to_string);
        let parts = [
            key.to_owned(),
            version.as_str().to_owned(),
            put_id.unwrap_or("").to_owned(),
        ];
        for text in parts.into_iter().chain(texts) {
            hasher.update((text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        hasher.finalize().into()
    }

    #[test]
    fn request_seeds_are_the_defined_digest() {
        let odd = json!({
            "actor": {"name": "Zoë \"Z\" \\ d'Hondt\u{1F600}\t\n\u{7}", "mbox": "mailto:z@example.org"},
            "verb": {"id": "http://example.org/verbs/scored"},
            "object": {"id": "https://hub.example/a?b=c&d=%20"},
            "result": {"score": {"scaled": -0.5, "raw": 1e21, "min": -1.2345678901234567e19, "max": u64::MAX}},
        });
        let batches: [&[Value]; 3] = [&[], &[sample()], &[sample(), odd, json!([]), json!("x")]];
        for statements in batches {
            for put_id in [None, Some("6690e6c9-3ef0-4ed3-8b37-7f3964730bee")] {
                assert_eq!(
                    request_seed("key", XapiVersion::V2_0_0, statements, put_id),
                    seed_as_defined("key", XapiVersion::V2_0_0, statements, put_id),
                    "{statements:?} {put_id:?}"
                );
            }
        }
        assert_ne!(
            request_seed("key", XapiVersion::V2_0_0, &[sample()], None),
            request_seed("other", XapiVersion::V2_0_0, &[sample()], None),
            "the credential's key is part of the seed"
        );
    }

    #[test]
    fn ids_are_lowercased_and_assigned_when_missing() {
        assert_eq!(
            statement_id(&sample()).as_deref(),
            Some("6690e6c9-3ef0-4ed3-8b37-7f3964730bee")
        );
        let mut without = json!({"actor": {}});
        let id = ensure_id(&mut without);
        assert_eq!(without["id"], Value::String(id));
    }

    #[test]
    fn derived_ids_repeat_for_the_same_request_and_differ_by_place() {
        let seed = [7u8; 32];
        let first = ensure_id_from(&mut json!({"actor": {}}), &seed, 0);
        assert_eq!(first, ensure_id_from(&mut json!({"actor": {}}), &seed, 0));
        assert_ne!(first, ensure_id_from(&mut json!({"actor": {}}), &seed, 1));
        assert_ne!(
            first,
            ensure_id_from(&mut json!({"actor": {}}), &[8u8; 32], 0)
        );
        assert!(Uuid::parse_str(&first).is_ok());
        let given = ensure_id_from(&mut sample(), &seed, 0);
        assert_eq!(given, "6690e6c9-3ef0-4ed3-8b37-7f3964730bee");
    }

    #[test]
    fn index_terms_cover_related_agents_and_activities() {
        let terms = index_terms(&sample());
        assert!(
            terms.agents.is_empty(),
            "an anonymous group has no IFI of its own"
        );
        assert!(terms
            .related_agents
            .contains(&"mbox:mailto:ann@example.org".to_owned()));
        assert!(terms
            .related_agents
            .contains(&"mbox:mailto:teacher@example.org".to_owned()));
        assert_eq!(
            terms.activity.as_deref(),
            Some("https://hub.example/sessions/1")
        );
        assert!(terms
            .related_activities
            .contains(&"https://hub.example/courses/1".to_owned()));
        assert_eq!(
            terms.registration.as_deref(),
            Some("ec531277-b57b-4c15-8d91-d292c5b2b8f7")
        );
    }

    #[test]
    fn the_same_statement_again_is_equivalent_but_other_content_is_not() {
        let mut stored = sample();
        complete_for_store(
            &mut stored,
            "2026-11-26T10:00:00.000Z",
            &json!({"mbox": "mailto:lrs@example.org"}),
            XapiVersion::V1_0_3,
        );
        assert!(equivalent(&stored, &sample()));
        let mut changed = sample();
        changed["verb"]["id"] = json!("http://adlnet.gov/expapi/verbs/completed");
        assert!(!equivalent(&stored, &changed));
    }

    #[test]
    fn single_context_activities_are_stored_as_arrays() {
        let mut statement = sample();
        complete_for_store(
            &mut statement,
            "2026-11-26T10:00:00.000Z",
            &json!({}),
            XapiVersion::V2_0_0,
        );
        assert_eq!(
            statement["context"]["contextActivities"]["parent"],
            json!([{"id": "https://hub.example/courses/1"}])
        );
    }

    #[test]
    fn durations_compare_to_the_hundredth() {
        let with = |duration: &str| {
            let mut statement = sample();
            statement["result"] = json!({"duration": duration});
            statement
        };
        assert!(equivalent(&with("PT1.2345S"), &with("PT1.23S")));
        assert!(equivalent(&with("PT1.2S"), &with("PT1.20S")));
        assert!(equivalent(&with("P1DT2S"), &with("P1DT2.001S")));
        assert!(!equivalent(&with("PT1.23S"), &with("PT1.24S")));
        assert!(!equivalent(&with("PT1H"), &with("PT2H")));
        // Not durations at all, with multi-byte characters where digits would be.
        for odd in ["éS", "PTéS", "P1Dé1.5S", "€", "S"] {
            assert!(equivalent(&with(odd), &with(odd)), "{odd}");
        }
    }

    #[test]
    fn canonical_format_keeps_one_language() {
        let canonical = format_canonical(&sample(), &["nl".to_owned()]);
        assert_eq!(canonical["verb"]["display"], json!({"nl": "woonde bij"}));
        let fallback = format_canonical(&sample(), &[]);
        assert_eq!(
            fallback["verb"]["display"].as_object().map(Map::len),
            Some(1)
        );
    }

    #[test]
    fn ids_format_reduces_activities_and_verbs() {
        let ids = format_ids(&sample());
        assert_eq!(
            ids["object"],
            json!({"id": "https://hub.example/sessions/1"})
        );
        assert_eq!(
            ids["verb"],
            json!({"id": "http://adlnet.gov/expapi/verbs/attended"})
        );
    }

    #[test]
    fn voided_target_needs_the_voided_verb_and_a_statement_ref() {
        let voiding = json!({"verb": {"id": VERB_VOIDED},
            "object": {"objectType": "StatementRef", "id": "6690E6C9-3EF0-4ED3-8B37-7F3964730BEE"}});
        assert_eq!(
            voided_target(&voiding).as_deref(),
            Some("6690e6c9-3ef0-4ed3-8b37-7f3964730bee")
        );
        assert_eq!(voided_target(&sample()), None);
    }
}
