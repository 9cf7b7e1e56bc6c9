//! The requirements of the xAPI Data part that the JSON Schema cannot express. Each check
//! runs on a statement the schema has accepted, so shapes and types are known to be right.

use serde_json::{Map, Value};

use crate::agent::{ifi_count, is_group, members};
use crate::time::{parse_duration_seconds, parse_timestamp};
use crate::{Violation, XapiVersion, VERB_VOIDED};

/// Every rule violation of one structurally valid statement.
pub fn check(statement: &Value, version: XapiVersion) -> Vec<Violation> {
    let mut walk = Walk {
        version,
        found: Vec::new(),
    };
    walk.statement(statement, "", false);
    walk.found
}

struct Walk {
    version: XapiVersion,
    found: Vec<Violation>,
}

fn child(path: &str, key: &str) -> String {
    // JSON pointer escaping, so extension IRIs with `/` stay readable as one segment.
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn object_type(value: &Value) -> Option<&str> {
    value.get("objectType").and_then(Value::as_str)
}

impl Walk {
    fn fail(&mut self, path: String, rule: &str, message: impl Into<String>) {
        self.found.push(Violation {
            path,
            rule: rule.to_owned(),
            message: message.into(),
        });
    }

    fn statement(&mut self, statement: &Value, path: &str, is_sub: bool) {
        if let Some(actor) = statement.get("actor") {
            self.actor(actor, &child(path, "actor"), "actor");
        }
        if let Some(verb) = statement.get("verb") {
            self.verb(verb, &child(path, "verb"));
        }
        if let Some(object) = statement.get("object") {
            self.object(object, &child(path, "object"));
        }
        if let Some(result) = statement.get("result") {
            self.result(result, &child(path, "result"));
        }
        if let Some(context) = statement.get("context") {
            self.context(context, statement.get("object"), &child(path, "context"));
        }
        for key in ["timestamp", "stored"] {
            if let Some(value) = statement.get(key).and_then(Value::as_str) {
                if let Err(reason) = parse_timestamp(value) {
                    self.fail(child(path, key), "timestamp.iso8601", reason);
                }
            }
        }
        if let Some(authority) = statement.get("authority") {
            self.authority(authority, &child(path, "authority"));
        }
        if let Some(version) = statement.get("version").and_then(Value::as_str) {
            if !self.version.accepts_statement_version(version) {
                self.fail(
                    child(path, "version"),
                    "statement.version",
                    format!(
                        "version {version:?} is not accepted by xAPI {} (expected {})",
                        self.version,
                        match self.version {
                            XapiVersion::V1_0_3 => "1.0 or 1.0.x",
                            XapiVersion::V2_0_0 => "1.0.x or 2.0.x",
                        }
                    ),
                );
            }
        }
        if let Some(attachments) = statement.get("attachments").and_then(Value::as_array) {
            for (index, attachment) in attachments.iter().enumerate() {
                self.attachment(
                    attachment,
                    &child(&child(path, "attachments"), &index.to_string()),
                );
            }
        }
        let verb_id = statement
            .get("verb")
            .and_then(|verb| verb.get("id"))
            .and_then(Value::as_str);
        if verb_id == Some(VERB_VOIDED) {
            let target = statement.get("object").and_then(object_type);
            if target != Some("StatementRef") {
                self.fail(
                    child(path, "object"),
                    "voiding.statement_ref",
                    "a statement with the verb voided must have a StatementRef object",
                );
            } else if is_sub {
                self.fail(
                    child(path, "verb"),
                    "voiding.not_in_substatement",
                    "a SubStatement cannot void a statement",
                );
            }
        }
    }

    fn actor(&mut self, actor: &Value, path: &str, role: &str) {
        let count = ifi_count(actor);
        if is_group(actor) {
            if count > 1 {
                self.fail(
                    path.to_owned(),
                    "group.one_ifi",
                    format!("a Group as {role} has {count} identifiers; at most one is allowed"),
                );
            }
            let group_members = members(actor);
            if count == 0 && actor.get("member").is_none() {
                self.fail(
                    path.to_owned(),
                    "group.anonymous_members",
                    "an anonymous Group (no identifier) must list its member array",
                );
            }
            for (index, member) in group_members.iter().enumerate() {
                self.agent(member, &child(&child(path, "member"), &index.to_string()));
            }
        } else {
            self.agent(actor, path);
        }
    }

    fn agent(&mut self, agent: &Value, path: &str) {
        let count = ifi_count(agent);
        if count != 1 {
            self.fail(
                path.to_owned(),
                "agent.one_ifi",
                format!(
                    "an Agent must have exactly one of mbox, mbox_sha1sum, openid, account; it has {count}"
                ),
            );
        }
    }

    fn authority(&mut self, authority: &Value, path: &str) {
        if is_group(authority) {
            // The OAuth three-legged form: an anonymous group of exactly the client and user.
            let count = members(authority).len();
            if ifi_count(authority) != 0 || count != 2 {
                self.fail(
                    path.to_owned(),
                    "authority.oauth_group",
                    "a Group authority must be an anonymous Group of exactly two Agents",
                );
            }
        }
        self.actor(authority, path, "authority");
    }

    fn verb(&mut self, verb: &Value, path: &str) {
        if let Some(display) = verb.get("display") {
            self.language_map(display, &child(path, "display"));
        }
    }

    fn object(&mut self, object: &Value, path: &str) {
        match object_type(object) {
            Some("Agent") => self.agent(object, path),
            Some("Group") => self.actor(object, path, "object"),
            Some("SubStatement") => self.statement(object, path, true),
            Some("StatementRef") => {}
            _ => self.activity(object, path),
        }
    }

    fn activity(&mut self, activity: &Value, path: &str) {
        let Some(definition) = activity.get("definition") else {
            return;
        };
        let definition_path = child(path, "definition");
        for key in ["name", "description"] {
            if let Some(map) = definition.get(key) {
                self.language_map(map, &child(&definition_path, key));
            }
        }
        if let Some(extensions) = definition.get("extensions") {
            self.extensions(extensions, &child(&definition_path, "extensions"));
        }
        self.interaction(definition, &definition_path);
    }

    fn interaction(&mut self, definition: &Value, path: &str) {
        let interaction_type = definition.get("interactionType").and_then(Value::as_str);
        let allowed: &[&str] = match interaction_type {
            Some("choice") | Some("sequencing") => &["choices"],
            Some("likert") => &["scale"],
            Some("matching") => &["source", "target"],
            Some("performance") => &["steps"],
            _ => &[],
        };
        for list in ["choices", "scale", "source", "target", "steps"] {
            let Some(components) = definition.get(list).and_then(Value::as_array) else {
                continue;
            };
            let list_path = child(path, list);
            if !allowed.contains(&list) {
                self.fail(
                    list_path.clone(),
                    "activity.interaction_components",
                    format!(
                        "{list} is not allowed for interactionType {}",
                        interaction_type.unwrap_or("(none)")
                    ),
                );
            }
            let mut ids = std::collections::HashSet::new();
            for (index, component) in components.iter().enumerate() {
                let component_path = child(&list_path, &index.to_string());
                if let Some(id) = component.get("id").and_then(Value::as_str) {
                    if !ids.insert(id) {
                        self.fail(
                            child(&component_path, "id"),
                            "activity.interaction_component_ids",
                            format!("interaction component id {id:?} is not unique in {list}"),
                        );
                    }
                }
                if let Some(description) = component.get("description") {
                    self.language_map(description, &child(&component_path, "description"));
                }
            }
        }
        if definition.get("correctResponsesPattern").is_some() && interaction_type.is_none() {
            self.fail(
                child(path, "correctResponsesPattern"),
                "activity.interaction_type",
                "correctResponsesPattern needs an interactionType",
            );
        }
    }

    fn result(&mut self, result: &Value, path: &str) {
        if let Some(duration) = result.get("duration").and_then(Value::as_str) {
            if let Err(reason) = parse_duration_seconds(duration) {
                self.fail(child(path, "duration"), "result.duration", reason);
            }
        }
        if let Some(score) = result.get("score") {
            self.score(score, &child(path, "score"));
        }
        if let Some(extensions) = result.get("extensions") {
            self.extensions(extensions, &child(path, "extensions"));
        }
    }

    fn score(&mut self, score: &Value, path: &str) {
        let number = |key: &str| score.get(key).and_then(Value::as_f64);
        let (raw, min, max) = (number("raw"), number("min"), number("max"));
        if let (Some(min), Some(max)) = (min, max) {
            if min >= max {
                self.fail(
                    child(path, "min"),
                    "score.min_below_max",
                    "score.min must be less than score.max",
                );
            }
        }
        if let (Some(raw), Some(min)) = (raw, min) {
            if raw < min {
                self.fail(
                    child(path, "raw"),
                    "score.raw_range",
                    "score.raw is below score.min",
                );
            }
        }
        if let (Some(raw), Some(max)) = (raw, max) {
            if raw > max {
                self.fail(
                    child(path, "raw"),
                    "score.raw_range",
                    "score.raw is above score.max",
                );
            }
        }
    }

    fn context(&mut self, context: &Value, object: Option<&Value>, path: &str) {
        let object_is_activity = object
            .map(|object| matches!(object_type(object), None | Some("Activity")))
            .unwrap_or(false);
        for key in ["revision", "platform"] {
            if context.get(key).is_some() && !object_is_activity {
                self.fail(
                    child(path, key),
                    "context.activity_only",
                    format!("context.{key} is only allowed when the object is an Activity"),
                );
            }
        }
        if let Some(language) = context.get("language").and_then(Value::as_str) {
            if oxilangtag::LanguageTag::parse(language).is_err() {
                self.fail(
                    child(path, "language"),
                    "context.language",
                    format!("{language:?} is not an RFC 5646 language tag"),
                );
            }
        }
        if let Some(instructor) = context.get("instructor") {
            self.actor(instructor, &child(path, "instructor"), "instructor");
        }
        if let Some(team) = context.get("team") {
            self.actor(team, &child(path, "team"), "team");
        }
        if let Some(lists) = context.get("contextActivities").and_then(Value::as_object) {
            for (key, list) in lists {
                let list_path = child(&child(path, "contextActivities"), key);
                match list {
                    Value::Array(activities) => {
                        for (index, activity) in activities.iter().enumerate() {
                            self.activity(activity, &child(&list_path, &index.to_string()));
                        }
                    }
                    activity => self.activity(activity, &list_path),
                }
            }
        }
        for key in ["contextAgents", "contextGroups"] {
            let Some(entries) = context.get(key).and_then(Value::as_array) else {
                continue;
            };
            let entries_path = child(path, key);
            if self.version == XapiVersion::V1_0_3 {
                self.fail(
                    entries_path,
                    "context.version_2_only",
                    format!("context.{key} exists only in xAPI 2.0.0"),
                );
                continue;
            }
            for (index, entry) in entries.iter().enumerate() {
                let entry_path = child(&entries_path, &index.to_string());
                if let Some(agent) = entry.get("agent") {
                    self.agent(agent, &child(&entry_path, "agent"));
                }
                if let Some(group) = entry.get("group") {
                    self.actor(group, &child(&entry_path, "group"), "contextGroup");
                }
            }
        }
        if let Some(extensions) = context.get("extensions") {
            self.extensions(extensions, &child(path, "extensions"));
        }
    }

    fn attachment(&mut self, attachment: &Value, path: &str) {
        let usage = attachment.get("usageType").and_then(Value::as_str);
        let content_type = attachment.get("contentType").and_then(Value::as_str);
        if usage == Some(crate::USAGE_SIGNATURE) && content_type != Some("application/octet-stream")
        {
            self.fail(
                child(path, "contentType"),
                "attachment.signature_content_type",
                "a signature attachment must have contentType application/octet-stream",
            );
        }
        for key in ["display", "description"] {
            if let Some(map) = attachment.get(key) {
                self.language_map(map, &child(path, key));
            }
        }
    }

    fn language_map(&mut self, map: &Value, path: &str) {
        let Some(entries) = map.as_object() else {
            return;
        };
        for tag in entries.keys() {
            if oxilangtag::LanguageTag::parse(tag.as_str()).is_err() {
                self.fail(
                    child(path, tag),
                    "language_map.tag",
                    format!("{tag:?} is not an RFC 5646 language tag"),
                );
            }
        }
    }

    fn extensions(&mut self, extensions: &Value, path: &str) {
        let Some(entries): Option<&Map<String, Value>> = extensions.as_object() else {
            return;
        };
        for key in entries.keys() {
            if iri_string::types::IriStr::new(key).is_err() {
                self.fail(
                    child(path, key),
                    "extensions.iri_keys",
                    format!("extension key {key:?} is not an absolute IRI"),
                );
            }
        }
    }
}
