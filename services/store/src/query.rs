//! Statement queries: by id, or by filters through one index, newest first by default.

use bus::wire::{StatementQuery, StatementReply};
use serde_json::Value;
use uuid::Uuid;
use xapi::statement::{index_terms, IndexTerms};

use crate::db::{Db, DbError, Record};
use crate::keys::{self, IndexKind};

pub fn run(db: &Db, query: &StatementQuery) -> Result<StatementReply, DbError> {
    let consistent_through = db.consistent_through();
    let by_id = match (&query.statement_id, &query.voided_statement_id) {
        (Some(id), _) => Some((id, false)),
        (None, Some(id)) => Some((id, true)),
        (None, None) => None,
    };
    if let Some((id, voided)) = by_id {
        let statement = find(db, id)?
            .filter(|record| record.voided == voided)
            .map(|record| record.statement);
        let bodies = bodies_for(db, query, statement.as_slice())?;
        return Ok(StatementReply::One {
            statement,
            consistent_through,
            bodies,
        });
    }
    db.wait_for_indexes()?;
    let most = db.limits().query_limit.max(1);
    let limit = if query.limit == 0 {
        most
    } else {
        query.limit.min(most)
    };
    // A page stops early when the next statement would pass the page's bytes (and so the
    // NATS message that carries the reply); the first always goes, whatever its size.
    let budget = db.page_budget();
    let mut size = 0;
    let mut statements = Vec::with_capacity(limit.min(64));
    let mut next_after = None;
    for position in candidates(db, query) {
        let position = position?;
        let Some((record, bytes)) = db.record_at_sized(position)? else {
            continue;
        };
        if (record.voided && !query.include_voided) || !matches(db, &record, query)? {
            continue;
        }
        if statements.len() == limit || (!statements.is_empty() && size + bytes > budget) {
            next_after = statements.last().map(|(position, _)| *position);
            break;
        }
        size += bytes;
        statements.push((position, record.statement));
    }
    let statements: Vec<Value> = statements
        .into_iter()
        .map(|(_, statement)| statement)
        .collect();
    let bodies = bodies_for(db, query, &statements)?;
    Ok(StatementReply::Page {
        statements,
        next_after,
        consistent_through,
        bodies,
    })
}

/// For a query confined to an authority (`statements/read/mine`): which of these statements'
/// attachment bodies that authority's own statements brought (sent as parts, not only pointed
/// at), so a reader is never shown a body another credential uploaded. `None` when not confined.
fn bodies_for(
    db: &Db,
    query: &StatementQuery,
    statements: &[Value],
) -> Result<Option<Vec<String>>, DbError> {
    let Some(authority) = &query.authority else {
        return Ok(None);
    };
    let mut wanted: Vec<String> = statements
        .iter()
        .flat_map(|statement| index_terms(statement).attachments)
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut allowed = Vec::new();
    for sha2 in wanted {
        for item in db
            .tree()
            .scan_prefix(keys::index_prefix(IndexKind::Attachment, &sha2))
        {
            let (key, _) = item?;
            let Some(position) = keys::trailing_u64(&key) else {
                continue;
            };
            let brought = db.record_at(position)?.is_some_and(|record| {
                record.bodies.contains(&sha2)
                    && xapi::statement::authority_names(&record.statement, authority)
            });
            if brought {
                allowed.push(sha2);
                break;
            }
        }
    }
    Ok(Some(allowed))
}

fn find(db: &Db, id: &str) -> Result<Option<Record>, DbError> {
    match Uuid::parse_str(id) {
        Ok(uuid) => db.record(&uuid),
        Err(_) => Ok(None),
    }
}

/// The index to walk: the most selective filter present, or all positions.
fn chosen_index(query: &StatementQuery) -> Option<(IndexKind, String)> {
    if let Some(registration) = &query.registration {
        return Some((IndexKind::Registration, registration.to_lowercase()));
    }
    if let Some(agent) = &query.agent {
        return Some((IndexKind::RelatedAgent, agent.clone()));
    }
    if let Some(activity) = &query.activity {
        return Some((IndexKind::RelatedActivity, activity.clone()));
    }
    if let Some(verb) = &query.verb {
        return Some((IndexKind::Verb, verb.clone()));
    }
    // The authority is among a statement's related agents.
    query
        .authority
        .as_ref()
        .map(|authority| (IndexKind::RelatedAgent, authority.clone()))
}

/// Positions in query order, starting after the cursor.
fn candidates<'a>(
    db: &'a Db,
    query: &StatementQuery,
) -> Box<dyn Iterator<Item = Result<u64, DbError>> + 'a> {
    let prefix = match chosen_index(query) {
        Some((kind, term)) => keys::index_prefix(kind, &term),
        None => vec![keys::POSITION],
    };
    let mut start = prefix.clone();
    let mut end = prefix.clone();
    match (query.after, query.ascending) {
        (Some(after), true) => start.extend_from_slice(&(after.saturating_add(1)).to_be_bytes()),
        (Some(after), false) => end.extend_from_slice(&after.to_be_bytes()),
        _ => {}
    }
    if query.after.is_none() || query.ascending {
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        end.push(0xff);
    }
    let range = db.tree().range(start..end);
    let positions = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<u64, DbError> {
        let (key, _) = item?;
        keys::trailing_u64(&key).ok_or_else(|| DbError::Corrupt {
            key: key.to_vec(),
            reason: "short index key".into(),
        })
    };
    if query.ascending {
        Box::new(range.map(positions))
    } else {
        Box::new(range.rev().map(positions))
    }
}

/// The filters, checked on the statement itself (index keys are hashes): the time window on
/// the statement, the other filters on it or on a statement it references.
fn matches(db: &Db, record: &Record, query: &StatementQuery) -> Result<bool, DbError> {
    let statement = &record.statement;
    let stored = statement
        .get("stored")
        .and_then(Value::as_str)
        .unwrap_or("");
    if query.since.as_deref().is_some_and(|since| stored <= since) {
        return Ok(false);
    }
    if query.until.as_deref().is_some_and(|until| stored > until) {
        return Ok(false);
    }
    if let Some(authority) = &query.authority {
        if !xapi::statement::authority_names(statement, authority) {
            return Ok(false);
        }
    }
    if terms_match(&index_terms(statement), query) {
        return Ok(true);
    }
    let chain = db.reference_chain(statement, &Default::default())?;
    Ok(chain
        .iter()
        .any(|target| terms_match(&index_terms(target), query)))
}

fn terms_match(terms: &IndexTerms, query: &StatementQuery) -> bool {
    if let Some(agent) = &query.agent {
        let pool = if query.related_agents {
            &terms.related_agents
        } else {
            &terms.agents
        };
        if !pool.contains(agent) {
            return false;
        }
    }
    if let Some(verb) = &query.verb {
        if terms.verb.as_ref() != Some(verb) {
            return false;
        }
    }
    if let Some(activity) = &query.activity {
        let found = if query.related_activities {
            terms.related_activities.contains(activity)
        } else {
            terms.activity.as_ref() == Some(activity)
        };
        if !found {
            return false;
        }
    }
    if let Some(registration) = &query.registration {
        if terms.registration.as_deref() != Some(registration.to_lowercase().as_str()) {
            return false;
        }
    }
    true
}
