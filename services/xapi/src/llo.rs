//! The Leven Lang Ontwikkelen (LLO) xAPI profile's IRIs: one place for the store (which
//! checks that a hub names itself) and the projector (which counts by them).

/// Context extension: the hub (technohub, fieldlab) where the learning happened.
pub const HUB: &str = "https://w3id.org/xapi/llo/extensions/hub";
/// Context extension: the worker's company.
pub const COMPANY: &str = "https://w3id.org/xapi/llo/extensions/company";
/// Context extension: who learns, one of [`LEARNER_GROUPS`] (the schema refuses others).
pub const LEARNER_GROUP: &str = "https://w3id.org/xapi/llo/extensions/learner-group";
/// The learner groups the programme reports; a statement without one counts as `unknown`.
pub const LEARNER_GROUPS: [&str; 3] = ["youth", "worker", "jobseeker"];
/// Context extension: the ESCO skills the statement evidences.
pub const SKILLS: &str = "https://w3id.org/xapi/llo/extensions/skills";
/// The homePage of the authority accounts Leerspoor gives to direct NATS sources
/// (`hub.eindhoven`).
pub const SOURCES_HOME_PAGE: &str = "https://w3id.org/xapi/llo/sources";
/// The homePage of the authority accounts of HTTP credentials (the default).
pub const CLIENTS_HOME_PAGE: &str = "https://w3id.org/xapi/llo/clients";
/// The verb of attendance.
pub const VERB_ATTENDED: &str = "http://adlnet.gov/expapi/verbs/attended";

/// A hub may only publish statements of its own hub: each names it in its hub extension
/// (checked by the store for `lrs.in.hub.<hub>`, and by a hub node before it accepts a write).
pub fn check_hub(
    statements: &[serde_json::Value],
    hub: &str,
) -> Result<(), crate::validate::BatchViolation> {
    for (index, statement) in statements.iter().enumerate() {
        let named = statement
            .get("context")
            .and_then(|context| context.get("extensions"))
            .and_then(|extensions| extensions.get(HUB))
            .and_then(serde_json::Value::as_str);
        if named != Some(hub) {
            let found = named.map_or("no hub".to_owned(), |named| {
                format!("hub {:?}", crate::limits::truncate_text(named, 128))
            });
            return Err(crate::validate::BatchViolation {
                statement: Some(index),
                violation: crate::validate::Violation {
                    path: "/context/extensions/https:~1~1w3id.org~1xapi~1llo~1extensions~1hub"
                        .into(),
                    rule: "llo.hub_subject".into(),
                    message: format!(
                        "published on lrs.in.hub.{hub}, so the statement must name hub {hub:?}; it names {found}"
                    ),
                },
            });
        }
    }
    Ok(())
}

/// The names a statement gives its skills: a context activity (category, other, grouping or
/// parent) whose id is one of the statement's skill URIs and that has a `definition.name`
/// (a language map), e.g. `{"en": "use digital tools", "nl": "digitale hulpmiddelen gebruiken"}`.
pub fn skill_labels(statement: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    use serde_json::Value;
    let Some(context) = statement.get("context") else {
        return Vec::new();
    };
    let skills: Vec<&str> = context
        .get("extensions")
        .and_then(|extensions| extensions.get(SKILLS))
        .and_then(Value::as_array)
        .map(|skills| skills.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if skills.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for kind in ["category", "other", "grouping", "parent"] {
        let activities = match crate::json::at(context, &["contextActivities", kind]) {
            Some(Value::Array(activities)) => activities.iter().collect::<Vec<_>>(),
            Some(activity @ Value::Object(_)) => vec![activity],
            _ => continue,
        };
        for activity in activities {
            let (Some(id), Some(name)) = (
                activity.get("id").and_then(Value::as_str),
                crate::json::at(activity, &["definition", "name"]),
            ) else {
                continue;
            };
            if skills.contains(&id) && name.as_object().is_some_and(|name| !name.is_empty()) {
                found.push((id.to_owned(), name.clone()));
            }
        }
    }
    found
}

/// Gives every object in `value` that names a `"skill"` a `"label"` (a language map) where
/// `label_of` knows one; not inside `months` (a month's skills are the summary's own, named
/// once in its top-level lists).
pub fn label_skills(
    value: &mut serde_json::Value,
    label_of: &dyn Fn(&str) -> Option<serde_json::Value>,
) {
    use serde_json::Value;
    match value {
        Value::Object(object) => {
            let label = object
                .get("skill")
                .and_then(Value::as_str)
                .and_then(label_of);
            if let Some(label) = label {
                object.insert("label".into(), label);
            }
            for (key, inner) in object.iter_mut() {
                if key != "months" {
                    label_skills(inner, label_of);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                label_skills(item, label_of);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_context_activity_names_the_skill_it_is() {
        let skill = "http://data.europa.eu/esco/skill/abc";
        let statement = json!({"context": {
            "extensions": {SKILLS: [skill]},
            "contextActivities": {"other": [
                {"id": skill, "definition": {"name": {"en": "welding", "nl": "lassen"}}},
                {"id": "https://example.org/not-a-skill", "definition": {"name": {"en": "x"}}}
            ]}
        }});
        let labels = skill_labels(&statement);
        assert_eq!(
            labels,
            vec![(skill.to_owned(), json!({"en": "welding", "nl": "lassen"}))]
        );
        let mut summary = json!({
            "skill_workers": [{"skill": skill, "workers": 2}, {"skill": "other"}],
            "months": [{"skill_workers": [{"skill": skill, "workers": 1}]}]
        });
        label_skills(&mut summary, &|uri| {
            (uri == skill).then(|| json!({"en": "welding"}))
        });
        assert_eq!(summary["skill_workers"][0]["label"]["en"], "welding");
        assert!(summary["skill_workers"][1].get("label").is_none());
        assert!(
            summary["months"][0]["skill_workers"][0]
                .get("label")
                .is_none(),
            "a month's skills are named once, at the top"
        );
    }
}
