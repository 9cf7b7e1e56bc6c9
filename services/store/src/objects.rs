//! The Activities and Agents resources: what the stored statements say about one activity
//! or one person.

use bus::wire::ObjectQuery;
use serde_json::{json, Map, Value};
use xapi::agent::ifi_key;
use xapi::statement::authority_names;

use crate::db::{Db, DbError};
use crate::keys::IndexKind;

/// How many of the most recent statements naming an activity or agent are read.
const SCAN_LIMIT: usize = 500;

pub fn run(db: &Db, query: &ObjectQuery) -> Result<Value, DbError> {
    db.wait_for_indexes()?;
    match query {
        ObjectQuery::Activity { id, authority } => activity(db, id, authority.as_deref()),
        ObjectQuery::Person { ifi, authority } => person(db, ifi, authority.as_deref()),
    }
}

/// Statements naming a term, newest first, with whether their writer may define activities;
/// with `authority`, only the statements whose authority it is.
fn recent(
    db: &Db,
    kind: IndexKind,
    term: &str,
    authority: Option<&str>,
) -> Result<Vec<(Value, bool)>, DbError> {
    let mut statements = Vec::new();
    for position in crate::query::indexed_newest_first(db, kind, term).take(SCAN_LIMIT) {
        let position = position?;
        if let Some(record) = db.record_at(position)? {
            let visible =
                authority.is_none_or(|authority| authority_names(&record.statement, authority));
            if visible {
                statements.push((record.statement, record.defines));
            }
        }
    }
    Ok(statements)
}

/// The canonical definition: every definition of the activity the statements carry, merged
/// oldest to newest (language maps merged per language, other properties replaced).
fn activity(db: &Db, id: &str, authority: Option<&str>) -> Result<Value, DbError> {
    let mut definition = Map::new();
    // Only statements written with the `define` scope (re)define an activity.
    let defining = recent(db, IndexKind::RelatedActivity, id, authority)?;
    for (statement, _) in defining.iter().rev().filter(|(_, defines)| *defines) {
        let mut found = Vec::new();
        collect_activities(statement, id, &mut found);
        for activity_definition in found {
            for (key, value) in activity_definition {
                match (definition.get_mut(key), value) {
                    (Some(Value::Object(existing)), Value::Object(update))
                        if matches!(key.as_str(), "name" | "description" | "extensions") =>
                    {
                        existing.extend(update.clone());
                    }
                    _ => {
                        definition.insert(key.clone(), value.clone());
                    }
                }
            }
        }
    }
    let mut activity = json!({"objectType": "Activity", "id": id});
    if !definition.is_empty() {
        activity["definition"] = Value::Object(definition);
    }
    Ok(activity)
}

fn collect_activities<'a>(statement: &'a Value, id: &str, found: &mut Vec<&'a Map<String, Value>>) {
    let mut consider = |activity: &'a Value| {
        if activity.get("id").and_then(Value::as_str) == Some(id) {
            if let Some(definition) = activity.get("definition").and_then(Value::as_object) {
                found.push(definition);
            }
        }
    };
    let sub_statement = statement
        .get("object")
        .filter(|object| object.get("objectType").and_then(Value::as_str) == Some("SubStatement"));
    if let Some(object) = statement.get("object") {
        if matches!(
            object.get("objectType").and_then(Value::as_str),
            None | Some("Activity")
        ) {
            consider(object);
        }
    }
    if let Some(lists) =
        xapi::json::at(statement, &["context", "contextActivities"]).and_then(Value::as_object)
    {
        for list in lists.values() {
            match list {
                Value::Array(items) => items.iter().for_each(&mut consider),
                single => consider(single),
            }
        }
    }
    if let Some(sub_statement) = sub_statement {
        collect_activities(sub_statement, id, found);
    }
}

/// The names the statements give the person behind an IFI, newest first.
fn person(db: &Db, ifi: &str, authority: Option<&str>) -> Result<Value, DbError> {
    let mut names: Vec<String> = Vec::new();
    for (statement, _) in recent(db, IndexKind::RelatedAgent, ifi, authority)? {
        let mut agents = Vec::new();
        collect_agents(&statement, &mut agents);
        for agent in agents {
            if ifi_key(agent).as_deref() != Some(ifi) {
                continue;
            }
            if let Some(name) = agent.get("name").and_then(Value::as_str) {
                if !names.iter().any(|known| known == name) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    Ok(json!({ "names": names }))
}

fn collect_agents<'a>(value: &'a Value, agents: &mut Vec<&'a Value>) {
    match value {
        Value::Object(object) => {
            if object.contains_key("mbox")
                || object.contains_key("mbox_sha1sum")
                || object.contains_key("openid")
                || object.get("account").is_some_and(Value::is_object)
            {
                agents.push(value);
            }
            for (key, child) in object {
                if key != "extensions" {
                    collect_agents(child, agents);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_agents(item, agents)),
        _ => {}
    }
}
