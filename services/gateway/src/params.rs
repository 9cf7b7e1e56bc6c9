//! Query parameters of `GET /xapi/statements`, checked strictly: an unknown or repeated
//! parameter is a 400, as is any value that is not what xAPI says it must be.

use bus::wire::StatementQuery;
use chrono::Utc;
use serde_json::Value;
use xapi::time::{format_timestamp, parse_timestamp};

use crate::error::ApiError;

/// How statements are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Exact,
    Ids,
    Canonical,
}

#[derive(Debug)]
pub struct GetParams {
    pub query: StatementQuery,
    pub format: Format,
    pub attachments: bool,
    /// The parameters as given, minus the cursor: the `more` link repeats them.
    pub echo: Vec<(String, String)>,
}

const KNOWN: [&str; 15] = [
    "statementId",
    "voidedStatementId",
    "agent",
    "verb",
    "activity",
    "registration",
    "related_activities",
    "related_agents",
    "since",
    "until",
    "limit",
    "format",
    "attachments",
    "ascending",
    "cursor",
];

/// Parameters that may accompany `statementId` / `voidedStatementId`.
const WITH_ID: [&str; 4] = ["statementId", "voidedStatementId", "format", "attachments"];

pub fn parse_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let raw = raw.unwrap_or("");
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw)
        .map_err(|err| ApiError::BadRequest(format!("malformed query string: {err}")))
}

fn boolean(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "parameter {name} must be true or false, not {other:?}"
        ))),
    }
}

fn uuid(name: &str, value: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(value)
        .map(|uuid| uuid.to_string())
        .map_err(|_| {
            ApiError::BadRequest(format!("parameter {name} must be a UUID, not {value:?}"))
        })
}

fn iri(name: &str, value: &str) -> Result<String, ApiError> {
    match value.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() => Ok(value.to_owned()),
        _ => Err(ApiError::BadRequest(format!(
            "parameter {name} must be an absolute IRI, not {value:?}"
        ))),
    }
}

/// A timestamp parameter, normalised to the LRS's own UTC form so it compares as text.
pub fn parse_timestamp_param(name: &str, value: &str) -> Result<String, ApiError> {
    let parsed = parse_timestamp(value)
        .map_err(|reason| ApiError::BadRequest(format!("parameter {name}: {reason}")))?;
    Ok(format_timestamp(parsed.with_timezone(&Utc)))
}

/// The agent filter: an Agent or identified Group as JSON, reduced to its IFI key.
fn agent(value: &str) -> Result<String, ApiError> {
    let agent: Value = serde_json::from_str(value)
        .map_err(|err| ApiError::BadRequest(format!("parameter agent is not JSON: {err}")))?;
    if !agent.is_object() {
        return Err(ApiError::BadRequest(
            "parameter agent must be an Agent or Group object".into(),
        ));
    }
    if xapi::agent::ifi_count(&agent) != 1 {
        return Err(ApiError::BadRequest(
            "parameter agent must have exactly one of mbox, mbox_sha1sum, openid, account".into(),
        ));
    }
    xapi::agent::ifi_key(&agent)
        .ok_or_else(|| ApiError::BadRequest("parameter agent has a malformed identifier".into()))
}

/// The parameters of a statement query; `max_limit` is `limits.query_limit`.
/// The filters of `GET /admin/exports/statements`: `since`, `until`, `agent`, `verb`, checked
/// as GET statements checks them.
pub fn parse_export(raw: Option<&str>) -> Result<bus::export::Filters, ApiError> {
    let pairs = parse_pairs(raw)?;
    if let Some((name, _)) = pairs
        .iter()
        .find(|(name, _)| !["since", "until", "agent", "verb"].contains(&name.as_str()))
    {
        return Err(ApiError::BadRequest(format!(
            "unknown parameter {name:?} for an export (since, until, agent, verb)"
        )));
    }
    let query = parse_get(pairs, usize::MAX)?.query;
    Ok(bus::export::Filters {
        since: query.since,
        until: query.until,
        agent: query.agent,
        verb: query.verb,
    })
}

pub fn parse_get(pairs: Vec<(String, String)>, max_limit: usize) -> Result<GetParams, ApiError> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &pairs {
        if !KNOWN.contains(&name.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown parameter {name:?} for GET statements"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(ApiError::BadRequest(format!(
                "parameter {name:?} is repeated"
            )));
        }
    }
    let by_id = seen.contains("statementId") || seen.contains("voidedStatementId");
    if by_id {
        if let Some(extra) = seen.iter().find(|name| !WITH_ID.contains(&name.as_str())) {
            return Err(ApiError::BadRequest(format!(
                "parameter {extra:?} cannot be combined with statementId or voidedStatementId"
            )));
        }
        if seen.contains("statementId") && seen.contains("voidedStatementId") {
            return Err(ApiError::BadRequest(
                "give statementId or voidedStatementId, not both".into(),
            ));
        }
    }
    let mut params = GetParams {
        query: StatementQuery::default(),
        format: Format::Exact,
        attachments: false,
        echo: Vec::new(),
    };
    for (name, value) in pairs {
        let query = &mut params.query;
        match name.as_str() {
            "statementId" => query.statement_id = Some(uuid(&name, &value)?),
            "voidedStatementId" => query.voided_statement_id = Some(uuid(&name, &value)?),
            "agent" => query.agent = Some(agent(&value)?),
            "verb" => query.verb = Some(iri(&name, &value)?),
            "activity" => query.activity = Some(iri(&name, &value)?),
            "registration" => query.registration = Some(uuid(&name, &value)?),
            "related_activities" => query.related_activities = boolean(&name, &value)?,
            "related_agents" => query.related_agents = boolean(&name, &value)?,
            "since" => query.since = Some(parse_timestamp_param(&name, &value)?),
            "until" => query.until = Some(parse_timestamp_param(&name, &value)?),
            "limit" => {
                query.limit = value.parse().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "parameter limit must be a non-negative integer, not {value:?}"
                    ))
                })?;
                if query.limit > max_limit {
                    return Err(ApiError::limit(
                        xapi::limits::Limit::QueryLimit,
                        max_limit,
                        format!(
                            "limit {} is above the most statements one page holds; ask for at most {max_limit} (0: the most)",
                            query.limit
                        ),
                    ));
                }
            }
            "ascending" => query.ascending = boolean(&name, &value)?,
            "attachments" => params.attachments = boolean(&name, &value)?,
            "format" => {
                params.format = match value.as_str() {
                    "exact" => Format::Exact,
                    "ids" => Format::Ids,
                    "canonical" => Format::Canonical,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "parameter format must be ids, exact or canonical, not {other:?}"
                        )))
                    }
                }
            }
            "cursor" => {
                query.after = Some(value.parse().map_err(|_| {
                    ApiError::BadRequest(format!("parameter cursor {value:?} is not one we gave"))
                })?);
                continue;
            }
            _ => {}
        }
        params.echo.push((name, value));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_get_default(pairs: Vec<(String, String)>) -> Result<GetParams, ApiError> {
        parse_get(pairs, 100)
    }

    #[test]
    fn a_limit_above_the_page_size_names_the_limit() {
        assert!(parse_get(pairs("limit=100"), 100).is_ok());
        match parse_get(pairs("limit=101"), 100) {
            Err(ApiError::Limit(exceeded)) => {
                assert_eq!(exceeded.limit, xapi::limits::Limit::QueryLimit);
                assert_eq!(exceeded.max, 100);
            }
            other => panic!("expected the query limit, got {other:?}"),
        }
    }

    fn pairs(raw: &str) -> Vec<(String, String)> {
        parse_pairs(Some(raw)).expect("well-formed")
    }

    #[test]
    fn filters_are_parsed_and_normalised() {
        let params = parse_get_default(pairs(
            "agent=%7B%22mbox%22%3A%22mailto%3AAnn%40example.org%22%7D&verb=http%3A%2F%2Fadlnet.gov%2Fexpapi%2Fverbs%2Fattended&since=2026-01-01T01:00:00%2B01:00&limit=5&ascending=true",
        ))
        .expect("valid");
        assert_eq!(
            params.query.agent.as_deref(),
            Some("mbox:mailto:ann@example.org")
        );
        assert_eq!(
            params.query.since.as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
        assert_eq!(params.query.limit, 5);
        assert!(params.query.ascending);
    }

    #[test]
    fn unknown_repeated_and_malformed_parameters_are_refused() {
        for bad in [
            "foo=bar",
            "limit=1&limit=2",
            "limit=-1",
            "ascending=yes",
            "format=full",
            "statementId=not-a-uuid",
            "statementId=6690e6c9-3ef0-4ed3-8b37-7f3964730bee&verb=http%3A%2F%2Fx",
            "statementId=6690e6c9-3ef0-4ed3-8b37-7f3964730bee&voidedStatementId=6690e6c9-3ef0-4ed3-8b37-7f3964730bee",
            "agent=notjson",
            "agent=%7B%7D",
            "since=yesterday",
            "verb=attended",
        ] {
            assert!(parse_get_default(pairs(bad)).is_err(), "{bad}");
        }
    }
}
