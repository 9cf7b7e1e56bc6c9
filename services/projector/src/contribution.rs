//! What one stored statement adds to the summaries: one [`Contribution`] per worker it
//! counts for (`../shared/DESIGN.md`, "Projections"). Pure: the same statement always gives
//! the same contributions, so voiding subtracts exactly what storing added.

use bus::wire::{EventKind, StoredEvents};
use serde_json::Value;
use xapi::agent::{ifi_key, is_group, members};
use xapi::time::{parse_duration_seconds, parse_timestamp};

pub use xapi::llo::{COMPANY, HUB, SKILLS};

use xapi::llo::VERB_ATTENDED as ATTENDED;
const COMPLETED: &str = "http://adlnet.gov/expapi/verbs/completed";
const PASSED: &str = "http://adlnet.gov/expapi/verbs/passed";
const FAILED: &str = "http://adlnet.gov/expapi/verbs/failed";
const EARNED: &str = "http://id.tincanapi.com/verb/earned";

/// One (statement, worker) pair's share of the summaries. Amounts are integers (milliseconds,
/// millionths of a scaled score) so that adding and subtracting are exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The worker's canonical IFI key.
    pub worker: String,
    pub hub: Option<String>,
    pub company: Option<String>,
    /// UTC `YYYY-MM` of the statement's timestamp.
    pub month: String,
    /// The timestamp, in milliseconds since 1970 (what the timestamp keys hold; shown as
    /// UTC RFC 3339 with milliseconds).
    pub at_ms: i64,
    pub learning_ms: i64,
    /// The attended activity, when the verb is attended.
    pub attended: Option<String>,
    pub completed: Option<String>,
    pub passed: Option<String>,
    pub failed: Option<String>,
    /// `result.score.scaled` in millionths.
    pub scaled_micros: Option<i64>,
    pub skills: Vec<String>,
    /// `youth`, `worker`, `jobseeker`, or `unknown` when the statement names none.
    pub learner_group: String,
}

/// What one `LRS_STORED` event does to the summaries, worked out from its statement when the
/// message is decoded: a few hundred bytes, where the parsed statement takes several
/// kilobytes, so a part of thousands of events waiting for its sled batch stays small.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub kind: EventKind,
    /// The statement's id.
    pub id: String,
    /// The names the statement's context gives its skills.
    pub labels: Vec<(String, Value)>,
    /// The statement's `stored` when it names skills (empty otherwise): of two names for one
    /// skill, the later-stored statement's is kept, in whatever order replicas apply the events.
    pub stored: String,
    pub contributions: Vec<Contribution>,
}

/// The effects of a message's events, in order (an event whose statement has no id has none).
pub fn effects(message: &StoredEvents) -> Vec<Effect> {
    message
        .events
        .iter()
        .filter_map(|event| {
            let id = event.statement.get("id").and_then(Value::as_str)?;
            let labels = xapi::llo::skill_labels(&event.statement);
            // Only names need it: most statements name no skill, and a part holds thousands.
            let stored = if labels.is_empty() {
                String::new()
            } else {
                let stored = event.statement.get("stored").and_then(Value::as_str);
                stored.unwrap_or_default().to_owned()
            };
            Some(Effect {
                kind: event.kind,
                id: id.to_owned(),
                labels,
                stored,
                contributions: contributions(&event.statement),
            })
        })
        .collect()
}

/// The contributions of a stored statement (none for a voiding statement, or an actor without
/// an identified agent). The service reads statements with only the members
/// [`crate::events`] keeps: a member read here for the first time must be kept there too.
pub fn contributions(statement: &Value) -> Vec<Contribution> {
    let verb = xapi::json::at(statement, &["verb", "id"])
        .and_then(Value::as_str)
        .unwrap_or("");
    if verb == xapi::VERB_VOIDED {
        return Vec::new();
    }
    let Some(actor) = statement.get("actor") else {
        return Vec::new();
    };
    let mut workers: Vec<String> = if is_group(actor) {
        members(actor).iter().filter_map(ifi_key).collect()
    } else {
        ifi_key(actor).into_iter().collect()
    };
    workers.sort();
    workers.dedup();
    if workers.is_empty() {
        return Vec::new();
    }
    let Some(at) = statement
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|text| parse_timestamp(text).ok())
        .map(|at| at.with_timezone(&chrono::Utc))
    else {
        return Vec::new();
    };
    let at_ms = at.timestamp_millis();
    let month = xapi::time::format_timestamp(at)
        .get(..7)
        .unwrap_or_default()
        .to_owned();
    let extension = |key: &str| {
        xapi::json::at(statement, &["context", "extensions"])
            .and_then(|extensions| extensions.get(key))
    };
    let text = |key: &str| extension(key).and_then(Value::as_str).map(str::to_owned);
    let activity = statement.get("object").and_then(|object| {
        match object.get("objectType").and_then(Value::as_str) {
            None | Some("Activity") => object.get("id").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        }
    });
    let result = statement.get("result");
    let learning_ms = result
        .and_then(|result| result.get("duration"))
        .and_then(Value::as_str)
        .and_then(|duration| parse_duration_seconds(duration).ok())
        .map_or(0, |seconds| (seconds * 1000.0).round() as i64);
    let completion = result
        .and_then(|result| result.get("completion"))
        .and_then(Value::as_bool)
        == Some(true);
    let success = result
        .and_then(|result| result.get("success"))
        .and_then(Value::as_bool);
    let when = |yes: bool| if yes { activity.clone() } else { None };
    let skills = if matches!(verb, COMPLETED | PASSED | EARNED) && success != Some(false) {
        extension(SKILLS)
            .and_then(Value::as_array)
            .map(|skills| {
                skills
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let learner_group = text(xapi::llo::LEARNER_GROUP)
        .filter(|group| xapi::llo::LEARNER_GROUPS.contains(&group.as_str()))
        .unwrap_or_else(|| "unknown".to_owned());
    workers
        .into_iter()
        .map(|worker| Contribution {
            worker,
            hub: text(HUB),
            company: text(COMPANY),
            month: month.clone(),
            at_ms,
            learning_ms,
            attended: when(verb == ATTENDED),
            completed: when(verb == COMPLETED || completion),
            passed: when(verb == PASSED),
            failed: when(verb == FAILED),
            scaled_micros: result
                .and_then(|result| xapi::json::at(result, &["score", "scaled"]))
                .and_then(Value::as_f64)
                .map(|scaled| (scaled * 1_000_000.0).round() as i64),
            skills: skills.clone(),
            learner_group: learner_group.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_team_check_in_counts_once_per_identified_member() {
        let statement = json!({
            "actor": {"objectType": "Group", "member": [
                {"mbox": "mailto:a@example.org"}, {"mbox": "mailto:b@example.org"},
                {"name": "nobody"}, {"mbox": "mailto:a@example.org"}]},
            "verb": {"id": ATTENDED},
            "object": {"id": "https://hub.example/s/1"},
            "result": {"duration": "PT1H30M"},
            "context": {"extensions": {HUB: "eindhoven", COMPANY: "KVK-1"}},
            "timestamp": "2026-11-30T23:30:00-02:00"
        });
        let found = contributions(&statement);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].month, "2026-12", "months are UTC");
        assert_eq!(found[0].learning_ms, 5_400_000);
        assert_eq!(
            found[0].attended.as_deref(),
            Some("https://hub.example/s/1")
        );
        assert_eq!(found[0].hub.as_deref(), Some("eindhoven"));
    }

    #[test]
    fn skills_come_from_successful_completions_only() {
        let with = |verb: &str, success: Option<bool>| {
            let mut statement = json!({
                "actor": {"mbox": "mailto:a@example.org"},
                "verb": {"id": verb},
                "object": {"id": "https://hub.example/course"},
                "context": {"extensions": {SKILLS: ["http://data.europa.eu/esco/skill/x"]}},
                "timestamp": "2026-01-01T00:00:00Z"
            });
            if let Some(success) = success {
                statement["result"] = json!({"success": success});
            }
            contributions(&statement).remove(0).skills.len()
        };
        assert_eq!(with(COMPLETED, None), 1);
        assert_eq!(with(PASSED, Some(true)), 1);
        assert_eq!(with(EARNED, None), 1);
        assert_eq!(with(COMPLETED, Some(false)), 0);
        assert_eq!(with(ATTENDED, None), 0);
    }

    #[test]
    fn a_message_reduces_to_each_events_kind_id_labels_and_contributions() {
        let course = "https://hub.example/course";
        let skill = "http://data.europa.eu/esco/skill/x";
        let statement = json!({
            "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee",
            "actor": {"mbox": "mailto:a@example.org"},
            "verb": {"id": COMPLETED},
            "object": {"id": course},
            "context": {
                "contextActivities": {"category": [{"id": skill, "definition": {"name": {"en": "Welding"}}}]},
                "extensions": {SKILLS: [skill]}
            },
            "timestamp": "2026-01-01T00:00:00Z"
        });
        let mut without_id = statement.clone();
        without_id.as_object_mut().expect("object").remove("id");
        let event = |kind, statement: &Value| bus::wire::StoredEvent {
            kind,
            position: 1,
            statement: statement.clone(),
        };
        let message = StoredEvents {
            sequence: 7,
            events: vec![
                event(EventKind::Stored, &statement),
                event(EventKind::Stored, &without_id),
                event(EventKind::Voided, &statement),
            ],
        };
        let found = effects(&message);
        assert_eq!(found.len(), 2, "the event without an id has no effect");
        assert_eq!(
            (found[0].kind, found[1].kind),
            (EventKind::Stored, EventKind::Voided)
        );
        for effect in &found {
            assert_eq!(effect.id, "6690e6c9-3ef0-4ed3-8b37-7f3964730bee");
            assert_eq!(
                effect.labels,
                vec![(skill.to_owned(), json!({"en": "Welding"}))]
            );
            assert_eq!(effect.contributions, contributions(&statement));
            assert_eq!(effect.contributions[0].completed.as_deref(), Some(course));
        }
    }

    #[test]
    fn voiding_statements_and_anonymous_groups_count_nowhere() {
        let voiding = json!({"actor": {"mbox": "mailto:a@example.org"}, "verb": {"id": xapi::VERB_VOIDED},
            "object": {"objectType": "StatementRef", "id": "6690e6c9-3ef0-4ed3-8b37-7f3964730bee"},
            "timestamp": "2026-01-01T00:00:00Z"});
        assert!(contributions(&voiding).is_empty());
        let nobody = json!({"actor": {"objectType": "Group", "member": [{"name": "x"}]},
            "verb": {"id": ATTENDED}, "object": {"id": "https://x.example/1"}, "timestamp": "2026-01-01T00:00:00Z"});
        assert!(contributions(&nobody).is_empty());
    }
}
