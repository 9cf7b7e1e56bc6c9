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
    if !query.ascending {
        // Newest first: positions below the cursor, or every one.
        let below = match (query.after, db.last_position()) {
            (_, Err(err)) => return Box::new(std::iter::once(Err(err))),
            (Some(after), Ok(last)) => after.min(last.saturating_add(1)),
            (None, Ok(last)) => last.saturating_add(1),
        };
        return Box::new(Descending::new(db.tree().clone(), prefix, below));
    }
    let mut start = prefix.clone();
    let mut end = prefix.clone();
    if let Some(after) = query.after {
        start.extend_from_slice(&(after.saturating_add(1)).to_be_bytes());
    }
    end.extend_from_slice(&u64::MAX.to_be_bytes());
    end.push(0xff);
    Box::new(db.tree().range(start..end).map(position_of))
}

fn position_of(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<u64, DbError> {
    let (key, _) = item?;
    keys::trailing_u64(&key).ok_or_else(|| DbError::Corrupt {
        key: key.to_vec(),
        reason: "short index key".into(),
    })
}

/// The first window of positions a newest-first walk reads; each next one is twice as wide,
/// up to [`WIDEST_WINDOW`].
const FIRST_WINDOW: u64 = 128;
const WIDEST_WINDOW: u64 = 1 << 16;

/// The positions under `prefix` below `below`, newest first, read as forward ranges over
/// windows of positions walking down. sled iterates backwards an order of magnitude slower
/// than forwards (each step back can descend the tree again): a 100-row page by verb took
/// ~20 ms that way, most of a newest-first query's time.
struct Descending {
    tree: sled::Db,
    prefix: Vec<u8>,
    /// Positions at or above this are done.
    below: u64,
    window: u64,
    /// The current window's positions, ascending (taken from the end).
    found: Vec<u64>,
}

impl Descending {
    fn new(tree: sled::Db, prefix: Vec<u8>, below: u64) -> Descending {
        Descending {
            tree,
            prefix,
            below,
            window: FIRST_WINDOW,
            found: Vec::new(),
        }
    }

    fn key(&self, position: u64) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(&position.to_be_bytes());
        key
    }
}

impl Iterator for Descending {
    type Item = Result<u64, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(position) = self.found.pop() {
                return Some(Ok(position));
            }
            if self.below == 0 {
                return None;
            }
            let low = self.below.saturating_sub(self.window);
            let range = self.key(low)..self.key(self.below);
            match self.tree.range(range).map(position_of).collect() {
                Ok(found) => self.found = found,
                Err(err) => {
                    // An error ends the walk.
                    self.below = 0;
                    return Some(Err(err));
                }
            }
            self.below = low;
            self.window = (self.window * 2).min(WIDEST_WINDOW);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest-first walk yields exactly the positions a backwards iteration would, for
    /// dense and sparse indexes, from the end or from a cursor, past window boundaries.
    #[test]
    fn the_newest_first_walk_matches_a_backwards_iteration() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = sled::open(dir.path()).expect("sled");
        let dense = keys::index_prefix(keys::IndexKind::Verb, "dense");
        let sparse = keys::index_prefix(keys::IndexKind::Verb, "sparse");
        let other = keys::index_prefix(keys::IndexKind::Verb, "other");
        for position in 1..=20_000u64 {
            for (prefix, present) in [
                (&dense, true),
                (&sparse, position % 997 == 0 || position == 1),
                (&other, position % 3 == 0),
            ] {
                if present {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&position.to_be_bytes());
                    tree.insert(key, &[] as &[u8]).expect("insert");
                }
            }
        }
        for prefix in [&dense, &sparse, &other] {
            for below in [20_001u64, 20_000, 12_345, 129, 128, 2, 1, 0] {
                let mut end = prefix.clone();
                end.extend_from_slice(&below.to_be_bytes());
                let backwards: Vec<u64> = tree
                    .range(prefix.clone()..end)
                    .rev()
                    .map(|item| position_of(item).expect("position"))
                    .collect();
                let walked: Vec<u64> = Descending::new(tree.clone(), prefix.clone(), below)
                    .map(|position| position.expect("position"))
                    .collect();
                assert_eq!(walked, backwards, "below {below}");
            }
        }
    }
}
