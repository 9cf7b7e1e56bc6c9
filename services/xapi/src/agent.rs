//! Inverse functional identifiers (IFIs): what makes an Agent or identified Group one person
//! or one group, whatever names or other properties a statement gives it.

use serde_json::Value;

/// The IFI property names, in the order the canonical key prefers them.
pub const IFI_PROPERTIES: [&str; 4] = ["mbox", "mbox_sha1sum", "openid", "account"];

/// The canonical key of an Agent or Group's IFI: `mbox:mailto:…`, `mbox_sha1sum:…`,
/// `openid:…` or `account:<homePage>|<name>`. `None` for an anonymous Group or a value with
/// no IFI. Mailboxes and hashes are compared case-insensitively, so they are lowercased.
pub fn ifi_key(agent: &Value) -> Option<String> {
    let object = agent.as_object()?;
    if let Some(mbox) = object.get("mbox").and_then(Value::as_str) {
        return Some(format!("mbox:{}", mbox.to_lowercase()));
    }
    if let Some(hash) = object.get("mbox_sha1sum").and_then(Value::as_str) {
        return Some(format!("mbox_sha1sum:{}", hash.to_lowercase()));
    }
    if let Some(openid) = object.get("openid").and_then(Value::as_str) {
        return Some(format!("openid:{openid}"));
    }
    let account = object.get("account")?;
    let home_page = account.get("homePage")?.as_str()?;
    let name = account.get("name")?.as_str()?;
    Some(format!("account:{home_page}|{name}"))
}

/// How many IFIs an Agent or Group carries (xAPI requires exactly one, or none for an
/// anonymous Group).
pub fn ifi_count(agent: &Value) -> usize {
    IFI_PROPERTIES
        .iter()
        .filter(|property| agent.get(**property).is_some())
        .count()
}

/// Whether the value is a Group (by its `objectType`).
pub fn is_group(agent: &Value) -> bool {
    agent.get("objectType").and_then(Value::as_str) == Some("Group")
}

/// The members of a Group (empty for an Agent).
pub fn members(agent: &Value) -> &[Value] {
    agent
        .get("member")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Only the IFI of an Agent or Group (plus `objectType`, and members of an anonymous
/// Group): the `ids` format of a statement query.
pub fn ids_only(agent: &Value) -> Value {
    let Some(object) = agent.as_object() else {
        return agent.clone();
    };
    let mut out = serde_json::Map::new();
    if let Some(object_type) = object.get("objectType") {
        out.insert("objectType".into(), object_type.clone());
    }
    for property in IFI_PROPERTIES {
        if let Some(value) = object.get(property) {
            out.insert(property.into(), value.clone());
        }
    }
    if ifi_count(agent) == 0 {
        let ids: Vec<Value> = members(agent).iter().map(ids_only).collect();
        out.insert("member".into(), Value::Array(ids));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ifi_keys_are_canonical() {
        assert_eq!(
            ifi_key(&json!({"mbox": "mailto:Ann@Example.org", "name": "Ann"})).as_deref(),
            Some("mbox:mailto:ann@example.org")
        );
        assert_eq!(
            ifi_key(&json!({"account": {"homePage": "https://hub.example", "name": "42"}}))
                .as_deref(),
            Some("account:https://hub.example|42")
        );
        assert_eq!(ifi_key(&json!({"objectType": "Group", "member": []})), None);
    }

    #[test]
    fn ids_format_keeps_only_identifiers() {
        let agent = json!({"objectType": "Agent", "name": "Ann", "mbox": "mailto:a@b.c"});
        assert_eq!(
            ids_only(&agent),
            json!({"objectType": "Agent", "mbox": "mailto:a@b.c"})
        );
        let anonymous = json!({"objectType": "Group", "name": "team",
            "member": [{"name": "Ann", "mbox": "mailto:a@b.c"}]});
        assert_eq!(
            ids_only(&anonymous),
            json!({"objectType": "Group", "member": [{"mbox": "mailto:a@b.c"}]})
        );
    }
}
