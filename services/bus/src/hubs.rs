//! The hub registry: what each hub is (a technohub or a fieldlab), its name and its region,
//! for the programme figures. Kept by the store; a change is an `LRS_IN` message on
//! [`crate::subjects::IN_HUBS`] (so every store replica has the same registry), read with
//! [`crate::access::AdminRequest::ListHubs`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The two kinds of hub in the programme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubType {
    /// A regional training hub: young people in education and workers alike.
    Technohub,
    /// A fieldlab reaching companies (the programme's company target).
    Fieldlab,
}

impl HubType {
    pub fn as_str(self) -> &'static str {
        match self {
            HubType::Technohub => "technohub",
            HubType::Fieldlab => "fieldlab",
        }
    }
}

impl fmt::Display for HubType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HubType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "technohub" => Ok(HubType::Technohub),
            "fieldlab" => Ok(HubType::Fieldlab),
            other => Err(format!(
                "a hub type is technohub or fieldlab, not {other:?}"
            )),
        }
    }
}

/// One hub as registered. `id` is the value of the LLO hub extension in its statements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubEntry {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: HubType,
    pub region: String,
}

/// A change to the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum HubChange {
    /// Registers a hub or replaces what was registered.
    Set { hub: HubEntry },
    /// Takes a hub out of the registry (its statements and summaries stay).
    Delete { id: String },
}

/// The longest hub id, name and region the registry takes.
pub const ID_MAX: usize = 128;
pub const TEXT_MAX: usize = 200;

impl HubEntry {
    /// Why this entry cannot be registered, if it cannot: which field, which rule.
    pub fn check(&self) -> Result<(), String> {
        check_id(&self.id)?;
        for (field, value) in [("name", &self.name), ("region", &self.region)] {
            if value.trim().is_empty() {
                return Err(format!("{field} is empty"));
            }
            if value.chars().count() > TEXT_MAX {
                return Err(format!("{field} is longer than {TEXT_MAX} characters"));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("{field} contains a control character"));
            }
        }
        Ok(())
    }
}

/// A hub id is what statements carry in the hub extension, and a NATS subject token for hubs
/// that publish directly: no spaces, dots, wildcards or control characters.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the hub id is empty".into());
    }
    if id.len() > ID_MAX {
        return Err(format!("the hub id is longer than {ID_MAX} bytes"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/'))
    {
        return Err(format!(
            "the hub id {id:?} contains {bad:?}; use letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_field_by_field() {
        let entry = HubEntry {
            id: "eindhoven".into(),
            name: "Technohub Eindhoven".into(),
            kind: HubType::Technohub,
            region: "Brabant".into(),
        };
        assert_eq!(entry.check(), Ok(()));
        let bad_id = HubEntry {
            id: "a.b".into(),
            ..entry.clone()
        };
        assert!(bad_id.check().expect_err("a dot").contains("'.'"));
        let no_region = HubEntry {
            region: " ".into(),
            ..entry.clone()
        };
        assert_eq!(no_region.check(), Err("region is empty".into()));
        let json = serde_json::to_value(HubChange::Set { hub: entry }).expect("json");
        assert_eq!(json["hub"]["type"], "technohub");
        assert!("lab".parse::<HubType>().is_err());
    }
}
