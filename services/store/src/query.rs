//! Statement queries: by id, or by filters through one index, newest first by default.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::ops::Range;

use bus::wire::{StatementQuery, StatementReply};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use uuid::Uuid;
use xapi::statement::{index_terms, IndexTerms};

use crate::db::{Db, DbError, StoredRecord};
use crate::keys::{self, IndexKind};

/// A statement as a reply carries it: the JSON text it was stored as, left where it is in its
/// record's text, never parsed and written again.
#[derive(Debug, Clone)]
pub struct StoredText {
    record: String,
    /// Where the statement lies in `record`: on character boundaries (checked when read).
    statement: Range<usize>,
}

impl StoredText {
    pub fn get(&self) -> &str {
        &self.record[self.statement.clone()]
    }
}

/// Written into a reply that is JSON (a joined page takes [`StoredText::get`] as it is), after
/// `serde_json` checks it again as it would a statement read as a `RawValue`.
impl Serialize for StoredText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue = serde_json::from_str(self.get()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

pub fn run(db: &Db, query: &StatementQuery) -> Result<StatementReply<StoredText>, DbError> {
    let consistent_through = db.consistent_through();
    let by_id = match (&query.statement_id, &query.voided_statement_id) {
        (Some(id), _) => Some((id, false)),
        (None, Some(id)) => Some((id, true)),
        (None, None) => None,
    };
    if let Some((id, voided)) = by_id {
        let position = match Uuid::parse_str(id) {
            Ok(uuid) => db.position_of(&uuid)?,
            Err(_) => None,
        };
        let found = match position {
            Some(position) => record_text(db, position, None)?,
            None => None,
        };
        let statement = match found {
            Some((key, record)) => {
                let found = read_text(&key, &record)?;
                let statement = found.statement.clone();
                (found.voided == voided).then_some(StoredText { record, statement })
            }
            None => None,
        };
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
    let mut statements: Vec<StoredText> = Vec::with_capacity(limit.min(64));
    // The position of the last statement taken: where the next page starts.
    let mut last = None;
    let mut next_after = None;
    let mut last_modified: Option<String> = None;
    let excluded = excluded_blocks(db, query);
    let mut walk = candidates(db, query)?;
    while let Some(found) = walk.next() {
        let (position, read) = found?;
        let block = position / keys::SPAN_BLOCK;
        if excluded.contains(&block) {
            walk.skip(block, &excluded);
            continue;
        }
        let Some((key, record)) = record_text(db, position, read)? else {
            continue;
        };
        let found = read_text(&key, &record)?;
        if found.voided && !query.include_voided {
            continue;
        }
        let statement = found.statement.clone();
        let Some(stored) = matches(db, &key, found.parts, query)? else {
            continue;
        };
        if statements.len() == limit || (!statements.is_empty() && size + record.len() > budget) {
            next_after = last;
            break;
        }
        size += record.len();
        last = Some(position);
        if !stored.is_empty()
            && last_modified
                .as_deref()
                .is_none_or(|latest| *stored > *latest)
        {
            last_modified = Some(stored.into_owned());
        }
        // The statement goes out as the JSON text it was stored as, never parsed.
        statements.push(StoredText { record, statement });
    }
    // A joined page goes out without attachments: no bodies to allow.
    let bodies = if query.joined {
        None
    } else {
        bodies_for(db, query, &statements)?
    };
    Ok(StatementReply::Page {
        statements,
        next_after,
        consistent_through,
        bodies,
        last_modified,
    })
}

/// For a query confined to an authority (`statements/read/mine`): which of these statements'
/// attachment bodies that authority's own statements brought (sent as parts, not only pointed
/// at), so a reader is never shown a body another credential uploaded. `None` when not confined.
fn bodies_for(
    db: &Db,
    query: &StatementQuery,
    statements: &[StoredText],
) -> Result<Option<Vec<String>>, DbError> {
    let Some(authority) = &query.authority else {
        return Ok(None);
    };
    let mut wanted = Vec::new();
    for statement in statements {
        let statement: Value = crate::db::read_json(&[], statement.get().as_bytes())?;
        wanted.extend(index_terms(&statement).attachments);
    }
    wanted.sort();
    wanted.dedup();
    let mut allowed = Vec::new();
    for sha2 in wanted {
        for position in indexed(db, IndexKind::Attachment, &sha2, 0) {
            let position = position?;
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
fn candidates(db: &Db, query: &StatementQuery) -> Result<Walk, DbError> {
    let (prefix, layout) = match chosen_index(query) {
        Some((kind, term)) => (keys::posting_prefix(kind, &term), Layout::Postings),
        None => (vec![keys::RECORD], Layout::Records),
    };
    let tree = db.tree().clone();
    if !query.ascending {
        // Newest first: positions below the cursor, or every one.
        let last = db.last_position()?;
        let below = match query.after {
            Some(after) => after.min(last.saturating_add(1)),
            None => last.saturating_add(1),
        };
        return Ok(Walk::Down(Descending::new(tree, prefix, layout, below)));
    }
    let from = query.after.map_or(0, |after| after.saturating_add(1));
    Ok(Walk::Up(Box::new(Ascending::new(
        tree, prefix, layout, from,
    ))))
}

/// The positions indexed under a term, oldest first, from a position on.
pub(crate) fn indexed(
    db: &Db,
    kind: IndexKind,
    term: &str,
    from: u64,
) -> impl Iterator<Item = Result<u64, DbError>> {
    Ascending::new(
        db.tree().clone(),
        keys::posting_prefix(kind, term),
        Layout::Postings,
        from,
    )
    .map(|found| found.map(|(position, _)| position))
}

/// The positions indexed under a term, newest first.
pub(crate) fn indexed_newest_first(
    db: &Db,
    kind: IndexKind,
    term: &str,
) -> impl Iterator<Item = Result<u64, DbError>> {
    Descending::new(
        db.tree().clone(),
        keys::posting_prefix(kind, term),
        Layout::Postings,
        u64::MAX,
    )
    .map(|found| found.map(|(position, _)| position))
}

/// The blocks of positions (see [`keys::STORED_SPAN`]) whose statements all lie outside the
/// query's `since`/`until` window; none without a window.
pub(crate) fn excluded_blocks(db: &Db, query: &StatementQuery) -> BTreeSet<u64> {
    let mut excluded = BTreeSet::new();
    if query.since.is_none() && query.until.is_none() {
        return excluded;
    }
    for (block, span) in db.spans().iter() {
        let before = query
            .since
            .as_deref()
            .is_some_and(|since| span.latest.as_str() <= since);
        let after = query
            .until
            .as_deref()
            .is_some_and(|until| span.earliest.as_str() > until);
        if before || after {
            excluded.insert(*block);
        }
    }
    excluded
}

/// A walk over an index's positions in query order that can jump past blocks of positions.
enum Walk {
    Down(Descending),
    Up(Box<Ascending>),
}

impl Walk {
    fn next(&mut self) -> Option<Result<Found, DbError>> {
        match self {
            Walk::Down(walk) => walk.next(),
            Walk::Up(walk) => walk.next(),
        }
    }

    /// Goes on past `block` and the excluded blocks next to it in the walk's direction.
    fn skip(&mut self, block: u64, excluded: &BTreeSet<u64>) {
        match self {
            Walk::Down(walk) => {
                let mut low = block;
                while low > 0 && excluded.contains(&(low - 1)) {
                    low -= 1;
                }
                walk.skip_below(low * keys::SPAN_BLOCK);
            }
            Walk::Up(walk) => {
                let mut high = block;
                while excluded.contains(&(high + 1)) {
                    high += 1;
                }
                walk.skip_to((high + 1).saturating_mul(keys::SPAN_BLOCK));
            }
        }
    }
}

/// A position a walk yields, and its record (packed) when the walk read it: a walk over
/// records has it in hand, and a page by time alone reads each record once instead of twice.
type Found = (u64, Option<sled::IVec>);

/// What the keys a walk reads hold: one record each (the key ends in its position), or one
/// term's postings for a block of positions (the key ends in the block).
#[derive(Debug, Clone, Copy)]
enum Layout {
    Records,
    Postings,
}

impl Layout {
    /// The number the key holding `position` ends in.
    fn unit(self, position: u64) -> u64 {
        match self {
            Layout::Records => position,
            Layout::Postings => position / keys::POSTING_BLOCK,
        }
    }

    /// The first position a key ending in `unit` can hold.
    fn first(self, unit: u64) -> u64 {
        match self {
            Layout::Records => unit,
            Layout::Postings => unit.saturating_mul(keys::POSTING_BLOCK),
        }
    }

    /// The first window (in keys) of a newest-first walk, and the widest: a record key is one
    /// position (and its record is kept until taken), a postings key up to
    /// [`keys::POSTING_BLOCK`].
    fn windows(self) -> (u64, u64) {
        match self {
            Layout::Records => (128, 4096),
            Layout::Postings => (1, 16),
        }
    }

    /// The positions one key holds, ascending, appended to `found` (with the record, for a
    /// record key).
    fn positions(
        self,
        item: sled::Result<(sled::IVec, sled::IVec)>,
        found: &mut Vec<Found>,
    ) -> Result<(), DbError> {
        let (key, value) = item?;
        let corrupt = |reason: &str| DbError::Corrupt {
            key: key.to_vec(),
            reason: reason.into(),
        };
        let unit = keys::trailing_u64(&key).ok_or_else(|| corrupt("short key"))?;
        match self {
            Layout::Records => found.push((unit, Some(value))),
            Layout::Postings => {
                let postings =
                    keys::Postings::decode(&value).ok_or_else(|| corrupt("unreadable postings"))?;
                found.extend(postings.positions(unit).map(|position| (position, None)));
            }
        }
        Ok(())
    }
}

/// The positions under `prefix` from a position on, oldest first.
struct Ascending {
    tree: sled::Db,
    prefix: Vec<u8>,
    layout: Layout,
    /// Positions below this are skipped.
    from: u64,
    range: sled::Iter,
    /// The current key's positions at or after `from`, ascending (taken from the front).
    found: std::collections::VecDeque<Found>,
}

impl Ascending {
    fn new(tree: sled::Db, prefix: Vec<u8>, layout: Layout, from: u64) -> Ascending {
        let range = Ascending::range(&tree, &prefix, layout.unit(from));
        Ascending {
            tree,
            prefix,
            layout,
            from,
            range,
            found: Default::default(),
        }
    }

    fn range(tree: &sled::Db, prefix: &[u8], unit: u64) -> sled::Iter {
        let mut start = prefix.to_vec();
        start.extend_from_slice(&unit.to_be_bytes());
        let mut end = prefix.to_vec();
        end.extend_from_slice(&u64::MAX.to_be_bytes());
        end.push(0xff);
        tree.range(start..end)
    }

    fn skip_to(&mut self, from: u64) {
        self.from = from;
        self.found.clear();
        self.range = Ascending::range(&self.tree, &self.prefix, self.layout.unit(from));
    }
}

impl Iterator for Ascending {
    type Item = Result<Found, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut read = Vec::new();
        loop {
            if let Some(found) = self.found.pop_front() {
                return Some(Ok(found));
            }
            if let Err(err) = self.layout.positions(self.range.next()?, &mut read) {
                return Some(Err(err));
            }
            let from = self.from;
            self.found
                .extend(read.drain(..).filter(|(position, _)| *position >= from));
        }
    }
}

/// The positions under `prefix` below `below`, newest first, read as forward ranges over
/// windows of keys walking down. sled iterates backwards an order of magnitude slower
/// than forwards (each step back can descend the tree again): a 100-row page by verb took
/// ~20 ms that way, most of a newest-first query's time.
struct Descending {
    tree: sled::Db,
    prefix: Vec<u8>,
    layout: Layout,
    /// Positions at or above this are done.
    below: u64,
    /// Keys the next window reads.
    window: u64,
    widest: u64,
    /// The current window's positions, ascending (taken from the end).
    found: Vec<Found>,
}

impl Descending {
    fn new(tree: sled::Db, prefix: Vec<u8>, layout: Layout, below: u64) -> Descending {
        let (window, widest) = layout.windows();
        Descending {
            tree,
            prefix,
            layout,
            below,
            window,
            widest,
            found: Vec::new(),
        }
    }

    fn key(&self, unit: u64) -> Vec<u8> {
        let mut key = self.prefix.clone();
        key.extend_from_slice(&unit.to_be_bytes());
        key
    }

    /// Goes on with the positions below `low` only.
    fn skip_below(&mut self, low: u64) {
        let keep = self.found.partition_point(|(position, _)| *position < low);
        self.found.truncate(keep);
        self.below = self.below.min(low);
    }

    /// Reads the next window down: it ends at the newest key left (one descent, so a
    /// sparse index, a worker's few statements among a million, skips its empty stretches
    /// instead of reading them window by window).
    fn fill(&mut self) -> Result<(), DbError> {
        let top = self.layout.unit(self.below - 1);
        let newest = self.tree.range(self.key(0)..=self.key(top)).next_back();
        let Some(newest) = newest else {
            self.below = 0;
            return Ok(());
        };
        let (key, value) = newest?;
        let newest = keys::trailing_u64(&key).ok_or_else(|| DbError::Corrupt {
            key: key.to_vec(),
            reason: "short key".into(),
        })?;
        let low = newest.saturating_add(1).saturating_sub(self.window);
        let mut read = Vec::new();
        for item in self.tree.range(self.key(low)..self.key(newest)) {
            self.layout.positions(item, &mut read)?;
        }
        // The newest key, already read, comes last.
        self.layout.positions(Ok((key, value)), &mut read)?;
        let below = self.below;
        read.retain(|(position, _)| *position < below);
        self.found = read;
        self.below = self.layout.first(low);
        self.window = (self.window * 2).min(self.widest);
        Ok(())
    }
}

impl Iterator for Descending {
    type Item = Result<Found, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(found) = self.found.pop() {
                return Some(Ok(found));
            }
            if self.below == 0 {
                return None;
            }
            if let Err(err) = self.fill() {
                // An error ends the walk.
                self.below = 0;
                return Some(Err(err));
            }
        }
    }
}

/// The record at `position` (its key and text), unpacked once: from what a walk over records
/// read, or else (a walk over postings, a read by id) from the tree; `None` when none is there.
fn record_text(
    db: &Db,
    position: u64,
    read: Option<sled::IVec>,
) -> Result<Option<(Vec<u8>, String)>, DbError> {
    let key = keys::record(position);
    let packed = match read {
        Some(packed) => packed,
        None => match db.tree().get(&key)? {
            Some(packed) => packed,
            None => return Ok(None),
        },
    };
    let record = text(&key, crate::db::unpack(&key, &packed)?.into_owned())?;
    Ok(Some((key, record)))
}

/// A record's JSON text, as unpacked: unreadable as text, it is corrupt.
fn text(key: &[u8], json: Vec<u8>) -> Result<String, DbError> {
    String::from_utf8(json).map_err(|err| DbError::Corrupt {
        key: key.to_vec(),
        reason: err.to_string(),
    })
}

/// A record as a query reads it: its statement's parts for the filters, where the statement's
/// text lies in the record, and whether it is voided.
struct Read<'a> {
    parts: Parts<'a>,
    statement: Range<usize>,
    voided: bool,
}

/// How a record's text starts as `serde_json` writes a [`crate::db::Record`]: with its
/// statement, whose text follows.
const RECORD_HEAD: &str = r#"{"statement":"#;

/// What a record says after its statement.
#[derive(Deserialize)]
struct RecordTail {
    voided: bool,
}

/// Reads a record's text in one pass over its statement: the statement's parts, and the end of
/// its text where that pass stopped (reading the record's statement as a `RawValue` and then
/// its parts went over every statement twice). A record in another order (none is written so)
/// is read in two.
fn read_text<'a>(key: &[u8], record: &'a str) -> Result<Read<'a>, DbError> {
    let corrupt = |reason: String| DbError::Corrupt {
        key: key.to_vec(),
        reason,
    };
    let Some(rest) = record.strip_prefix(RECORD_HEAD) else {
        let whole = StoredRecord::read(key, record.as_bytes())?;
        let text = whole.statement.get();
        // The statement's text is a slice of the record's: its place is the pointers' difference.
        let start = text.as_ptr() as usize - record.as_ptr() as usize;
        let statement = start..start + text.len();
        return Ok(Read {
            parts: crate::db::read_json(key, text.as_bytes())?,
            statement,
            voided: whole.voided,
        });
    };
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Parts>();
    let parts = match stream.next() {
        Some(Ok(parts)) => parts,
        Some(Err(err)) => return Err(corrupt(err.to_string())),
        None => return Err(corrupt("no statement in the record".into())),
    };
    let end = RECORD_HEAD.len() + stream.byte_offset();
    let tail = record
        .get(end..)
        .and_then(|tail| tail.strip_prefix(','))
        .ok_or_else(|| corrupt("nothing after the record's statement".into()))?;
    let tail: RecordTail = crate::db::read_json(key, format!("{{{tail}").as_bytes())?;
    Ok(Read {
        parts,
        statement: RECORD_HEAD.len()..end,
        voided: tail.voided,
    })
}

/// The parts of a stored statement the filters look at, each left as JSON text until a filter
/// needs it: a page by verb parses only each statement's verb.
#[derive(Deserialize)]
struct Parts<'a> {
    #[serde(borrow, default)]
    stored: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    actor: Option<&'a RawValue>,
    #[serde(borrow, default)]
    verb: Option<&'a RawValue>,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<&'a RawValue>,
    #[serde(borrow, default)]
    authority: Option<&'a RawValue>,
}

/// An object's kind, read without its definition.
#[derive(Deserialize)]
struct ObjectType<'a> {
    #[serde(borrow, default, rename = "objectType")]
    object_type: Option<Cow<'a, str>>,
}

/// The filters, checked on the statement itself (index keys are hashes): the time window on
/// the statement, the other filters on it or on a statement it references. Only the parts
/// the query's filters read are parsed ([`index_terms`] of those parts gives the same terms
/// for those filters as of the whole statement). The statement's `stored` when it matches.
fn matches<'a>(
    db: &Db,
    key: &[u8],
    mut parts: Parts<'a>,
    query: &StatementQuery,
) -> Result<Option<Cow<'a, str>>, DbError> {
    let stored = parts.stored.take().unwrap_or_default();
    let within = query.since.as_deref().is_none_or(|since| *stored > *since)
        && query.until.as_deref().is_none_or(|until| *stored <= *until);
    Ok((within && filters_match(db, key, &parts, query)?).then_some(stored))
}

/// The filters other than the time window, on the statement's parts: plainly, or in full.
fn filters_match(
    db: &Db,
    key: &[u8],
    parts: &Parts,
    query: &StatementQuery,
) -> Result<bool, DbError> {
    Ok(plainly_matches(parts, query) || filters_match_in_full(db, key, parts, query)?)
}

/// An `id` and an `objectType`, read without the rest of what holds them (a verb, an object).
#[derive(Deserialize)]
struct Identified<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "objectType")]
    object_type: Option<Cow<'a, str>>,
}

/// A context's registration, read without the rest of the context.
#[derive(Deserialize)]
struct Registered<'a> {
    #[serde(borrow, default)]
    registration: Option<Cow<'a, str>>,
}

/// Whether the statement plainly matches the filters most pages have (an agent as its actor,
/// its verb, an activity as its object, its registration): [`terms_match`] on the terms of
/// those members alone, read without building any into a `Value`; `false` when it cannot tell,
/// and the full check decides. Every candidate of a page goes through here, and building its
/// object (definition and all) for the full check was a ninth of a page by activity at a
/// million statements (BENCHMARKS.md, the forty-eighth round).
fn plainly_matches(parts: &Parts, query: &StatementQuery) -> bool {
    plain_terms(parts, query).is_some_and(|terms| terms_match(&terms, query))
}

/// The terms [`index_terms`] gives the members the query's plain filters name, and no others;
/// `None` for a query with other filters (related agents or activities, an authority) or a
/// member these cannot read (a duplicate name, an id that is not a string), which the full
/// check reads as `serde_json` does.
fn plain_terms(parts: &Parts, query: &StatementQuery) -> Option<IndexTerms> {
    if query.authority.is_some() || query.related_agents || query.related_activities {
        return None;
    }
    fn read<'a, T: Deserialize<'a>>(part: Option<&'a RawValue>) -> Option<T> {
        serde_json::from_str(part?.get()).ok()
    }
    let mut terms = IndexTerms::default();
    if query.agent.is_some() {
        let actor: Value = read(parts.actor)?;
        terms.agents.extend(xapi::agent::ifi_key(&actor));
    }
    if query.verb.is_some() {
        terms.verb = read::<Identified>(parts.verb)?.id.map(Cow::into_owned);
    }
    if query.activity.is_some() {
        let object: Identified = read(parts.object)?;
        if matches!(object.object_type.as_deref(), None | Some("Activity")) {
            terms.activity = object.id.map(Cow::into_owned);
        }
    }
    if query.registration.is_some() {
        terms.registration = read::<Registered>(parts.context)?
            .registration
            .map(|registration| registration.to_lowercase());
    }
    Some(terms)
}

/// The filters other than the time window, on the statement's parts built as JSON values
/// (and on the statements it references).
fn filters_match_in_full(
    db: &Db,
    key: &[u8],
    parts: &Parts,
    query: &StatementQuery,
) -> Result<bool, DbError> {
    let agents = query.agent.is_some();
    let related_agents = agents && query.related_agents;
    let related_activities = query.activity.is_some() && query.related_activities;
    // An agent filter reads the object only when it is an agent or a group (or, below, when it
    // points at another statement): most objects are activities, definitions and all.
    let object_for_agents = related_agents
        || (agents
            && parts.object.is_some_and(|object| {
                parse::<ObjectType>(key, object).is_ok_and(|object| {
                    matches!(object.object_type.as_deref(), Some("Agent" | "Group"))
                })
            }));
    let mut read = serde_json::Map::new();
    for (name, part, wanted) in [
        ("actor", parts.actor, agents),
        ("verb", parts.verb, query.verb.is_some()),
        (
            "object",
            parts.object,
            object_for_agents || query.activity.is_some(),
        ),
        (
            "context",
            parts.context,
            query.registration.is_some() || related_agents || related_activities,
        ),
        (
            "authority",
            parts.authority,
            query.authority.is_some() || related_agents,
        ),
    ] {
        if let (Some(part), true) = (part, wanted) {
            read.insert(name.to_owned(), parse(key, part)?);
        }
    }
    let mut partial = Value::Object(read);
    if let Some(authority) = &query.authority {
        if !xapi::statement::authority_names(&partial, authority) {
            return Ok(false);
        }
    }
    if terms_match(&index_terms(&partial), query) {
        return Ok(true);
    }
    // A statement that references another matches what its target matches.
    let Some(object) = parts.object else {
        return Ok(false);
    };
    if partial.get("object").is_none() {
        partial["object"] = parse(key, object)?;
    }
    let chain = db.reference_chain(&partial, &Default::default())?;
    Ok(chain
        .iter()
        .any(|target| terms_match(&index_terms(target), query)))
}

/// A stored statement's JSON text, or a part of it, read as `T`.
fn parse<'a, T: Deserialize<'a>>(key: &[u8], text: &'a RawValue) -> Result<T, DbError> {
    crate::db::read_json(key, text.get().as_bytes())
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

    /// The walks yield exactly the positions written, newest first below a cursor and oldest
    /// first from one, for dense and sparse terms' postings and for records, across window
    /// and block boundaries.
    #[test]
    fn the_walks_yield_every_position_in_order_from_any_cursor() {
        use crate::indexer::{Change, PostingChanges};
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = sled::open(dir.path()).expect("sled");
        type Present = fn(u64) -> bool;
        let terms: [(&str, Present); 4] = [
            ("dense", |_| true),
            ("sparse", |position| position % 997 == 0 || position == 1),
            ("other", |position| position % 3 == 0),
            // Two entries far apart: the walk jumps the stretch between them.
            ("lone", |position| position == 5 || position == 19_990),
        ];
        let last = 20_000u64;
        // Written in several rounds, as the index thread does, some positions twice.
        for round in [1..=7_000u64, 6_990..=last] {
            let mut changes = PostingChanges::default();
            for position in round {
                for (term, present) in &terms {
                    if present(position) {
                        changes.add(keys::IndexKind::Verb, term, position);
                    }
                }
            }
            for (key, value) in changes.merged(&tree, Change::Add).expect("merge") {
                tree.insert(key, value.expect("postings")).expect("insert");
            }
        }
        // Each record holds its own position: a walk over records yields it with its record.
        for position in 1..=last {
            tree.insert(keys::record(position), &position.to_be_bytes())
                .expect("insert");
        }
        let position_of = |found: Result<Found, DbError>, layout: Layout| -> u64 {
            let (position, record) = found.expect("position");
            match layout {
                Layout::Records => {
                    let record = record.expect("a walk over records yields the record");
                    assert_eq!(*record, position.to_be_bytes(), "the record of {position}");
                }
                Layout::Postings => assert!(record.is_none(), "postings hold no record"),
            }
            position
        };
        let mut walks: Vec<(Vec<u8>, Layout, Vec<u64>)> = terms
            .iter()
            .map(|(term, present)| {
                (
                    keys::posting_prefix(keys::IndexKind::Verb, term),
                    Layout::Postings,
                    (1..=last).filter(|position| present(*position)).collect(),
                )
            })
            .collect();
        walks.push((vec![keys::RECORD], Layout::Records, (1..=last).collect()));
        let cursors = [
            u64::MAX,
            20_001,
            20_000,
            19_991,
            19_990,
            12_345,
            8_192,
            8_191,
            4_097,
            4_096,
            4_095,
            129,
            128,
            6,
            5,
            2,
            1,
            0,
        ];
        for (prefix, layout, written) in &walks {
            for cursor in cursors {
                let below: Vec<u64> = written
                    .iter()
                    .rev()
                    .copied()
                    .filter(|position| *position < cursor)
                    .collect();
                let walked: Vec<u64> =
                    Descending::new(tree.clone(), prefix.clone(), *layout, cursor)
                        .map(|found| position_of(found, *layout))
                        .collect();
                assert_eq!(walked, below, "{layout:?} below {cursor}");
                let from: Vec<u64> = written
                    .iter()
                    .copied()
                    .filter(|position| *position >= cursor)
                    .collect();
                let walked: Vec<u64> =
                    Ascending::new(tree.clone(), prefix.clone(), *layout, cursor)
                        .map(|found| position_of(found, *layout))
                        .collect();
                assert_eq!(walked, from, "{layout:?} from {cursor}");
            }
        }
        // Skipping mid-walk, as an excluded block of `stored` spans does.
        for (prefix, layout, written) in [&walks[0], &walks[walks.len() - 1]] {
            let mut down = Descending::new(tree.clone(), prefix.clone(), *layout, u64::MAX);
            assert_eq!(position_of(down.next().expect("one"), *layout), last);
            down.skip_below(10_000);
            let rest: Vec<u64> = down.map(|found| position_of(found, *layout)).collect();
            assert_eq!(rest, (1..10_000).rev().collect::<Vec<_>>(), "{layout:?}");
            let mut up = Ascending::new(tree.clone(), prefix.clone(), *layout, 0);
            assert_eq!(position_of(up.next().expect("one"), *layout), 1);
            up.skip_to(15_000);
            let rest: Vec<u64> = up.map(|found| position_of(found, *layout)).collect();
            assert_eq!(
                rest,
                written[written.len() - 5_001..].to_vec(),
                "{layout:?}"
            );
        }
        // Taking positions out leaves the others, and the last one takes the key with it.
        let mut changes = PostingChanges::default();
        changes.add(keys::IndexKind::Verb, "lone", 5);
        changes.add(keys::IndexKind::Verb, "lone", 19_990);
        changes.add(keys::IndexKind::Verb, "other", 3);
        let merged = changes.merged(&tree, Change::Remove).expect("merge");
        assert_eq!(
            merged.iter().filter(|(_, value)| value.is_none()).count(),
            2
        );
        assert_eq!(merged.len(), 3);
    }

    /// The filters checked on the parts a query reads give the same answer as on the whole
    /// statement, for every filter on every term of statements of every shape (groups,
    /// agents as objects, sub-statements, context agents and activities, references to
    /// references), with and without the related flags, the authority and the time window.
    #[test]
    fn checking_the_parts_a_filter_reads_equals_checking_the_whole_statement() {
        use serde_json::json;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("store.sled")).expect("open");
        let id = |n: u8| format!("00000000-0000-4000-8000-0000000000{n:02}");
        let agent = |name: &str| json!({"mbox": format!("mailto:{name}@example.org")});
        let statements = vec![
            json!({
                "id": id(1), "stored": "2026-01-01T00:00:01.000Z",
                "actor": agent("a"),
                "verb": {"id": "https://example.org/v1"},
                "object": {"id": "https://example.org/act1", "definition": {"name": {"en": "One"}}},
                "context": {
                    "registration": "5E3BC5A3-8C60-4D6B-9F4B-6C2A4C7E3F11",
                    "instructor": agent("i"),
                    "team": {"objectType": "Group", "member": [agent("t")]},
                    "contextActivities": {
                        "parent": [{"id": "https://example.org/act2"}],
                        "grouping": {"id": "https://example.org/act3"}
                    }
                },
                "authority": agent("auth"),
            }),
            json!({
                "id": id(2), "stored": "2026-01-01T00:00:02.000Z",
                "actor": {"objectType": "Group", "mbox": "mailto:G@example.org", "member": [agent("m")]},
                "verb": {"id": "https://example.org/v2"},
                "object": {"objectType": "Agent", "mbox": "mailto:o@example.org"},
                "authority": {"objectType": "Group", "member": [agent("auth"), agent("app")]},
            }),
            json!({
                "id": id(3), "stored": "2026-01-01T00:00:03.000Z",
                "actor": agent("a"),
                "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
                "object": {"objectType": "StatementRef", "id": id(1)},
                "authority": agent("auth"),
            }),
            json!({
                "id": id(4), "stored": "2026-01-01T00:00:04.000Z",
                "actor": agent("b"),
                "verb": {"id": "https://example.org/v3"},
                "object": {
                    "objectType": "SubStatement",
                    "actor": agent("c"),
                    "verb": {"id": "https://example.org/v4"},
                    "object": {"id": "https://example.org/act4"},
                    "context": {"contextActivities": {"category": [{"id": "https://example.org/act5"}]}}
                },
                "context": {
                    "contextAgents": [{"objectType": "contextAgent", "agent": agent("d")}],
                    "contextGroups": [{"objectType": "contextGroup",
                        "group": {"objectType": "Group", "mbox": "mailto:h@example.org", "member": [agent("e")]}}]
                },
                "result": {"response": "\"quoted\" text", "extensions": {"https://example.org/x": [1, 2, 3]}},
            }),
            json!({
                "id": id(5), "stored": "2026-01-01T00:00:05.000Z",
                "actor": agent("f"),
                "verb": {"id": "https://example.org/v5"},
                "object": {"objectType": "StatementRef", "id": id(3)},
            }),
            json!({
                "id": id(6), "stored": "2026-01-01T00:00:06.000Z",
                "actor": agent("g"),
                "verb": {"id": "https://example.org/v6"},
                "object": {"objectType": "Group", "name": "Team", "member": [agent("n")],
                    "openid": "https://example.org/team"},
            }),
        ];
        let mut raws = Vec::new();
        for (position, statement) in statements.iter().enumerate() {
            let record = crate::db::Record {
                statement: statement.clone(),
                voided: false,
                position: position as u64 + 1,
                defines: true,
                bodies: Vec::new(),
            };
            let uuid = Uuid::parse_str(statement["id"].as_str().expect("id")).expect("uuid");
            let bytes = serde_json::to_vec(&record).expect("record");
            db.tree()
                .insert(keys::statement(&uuid), &record.position.to_be_bytes())
                .expect("insert");
            db.tree()
                .insert(keys::record(record.position), bytes.clone())
                .expect("insert");
            raws.push(bytes);
        }
        // Every term of every statement, and one of none.
        let mut agents = vec!["mbox:mailto:nobody@example.org".to_owned()];
        let mut verbs = vec!["https://example.org/none".to_owned()];
        let mut activities = verbs.clone();
        let mut registrations = vec!["5e3bc5a3-0000-4d6b-9f4b-6c2a4c7e3f11".to_owned()];
        for statement in &statements {
            let terms = index_terms(statement);
            agents.extend(terms.related_agents);
            verbs.extend(terms.verb);
            activities.extend(terms.related_activities);
            registrations.extend(terms.registration);
        }
        let mut queries = Vec::new();
        for related in [false, true] {
            let base = StatementQuery {
                related_agents: related,
                related_activities: related,
                ..StatementQuery::default()
            };
            queries.push(base.clone());
            for agent in &agents {
                queries.push(StatementQuery {
                    agent: Some(agent.clone()),
                    ..base.clone()
                });
                queries.push(StatementQuery {
                    authority: Some(agent.clone()),
                    verb: verbs.get(1).cloned(),
                    ..base.clone()
                });
            }
            for verb in &verbs {
                queries.push(StatementQuery {
                    verb: Some(verb.clone()),
                    since: Some("2026-01-01T00:00:02.000Z".into()),
                    ..base.clone()
                });
            }
            for activity in &activities {
                queries.push(StatementQuery {
                    activity: Some(activity.clone()),
                    agent: Some(agents[1].clone()),
                    ..base.clone()
                });
                queries.push(StatementQuery {
                    activity: Some(activity.clone()),
                    until: Some("2026-01-01T00:00:03.000Z".into()),
                    ..base.clone()
                });
            }
            for registration in &registrations {
                queries.push(StatementQuery {
                    registration: Some(registration.clone()),
                    ..base.clone()
                });
            }
        }
        let mut matched = 0;
        for query in &queries {
            for (statement, bytes) in statements.iter().zip(&raws) {
                let record = std::str::from_utf8(bytes).expect("text");
                let parts = read_text(&[], record).expect("record").parts;
                let found = matches(&db, &[], parts, query).expect("parts");
                let parts = found.is_some();
                let whole = whole_matches(&db, statement, query);
                assert_eq!(parts, whole, "{query:?} on {}", statement["id"]);
                if let Some(stored) = found {
                    assert_eq!(Some(&*stored), statement["stored"].as_str());
                }
                matched += usize::from(parts);
            }
        }
        // The queries are not trivially all-or-nothing.
        assert!(
            matched > 20 && matched < queries.len() * statements.len() / 2,
            "{matched}"
        );
    }

    /// A record read in one pass gives the statement's text, parts and voided flag it gives
    /// read whole, for records as they are written, in another order, and with text that
    /// needs care (escapes, characters of several bytes); a damaged one is an error at every
    /// length it could be cut to, never a panic.
    #[test]
    fn a_record_read_in_one_pass_reads_as_it_does_whole() {
        use serde_json::json;
        let statement = json!({
            "id": "00000000-0000-4000-8000-000000000001",
            "stored": "2026-01-01T00:00:01.000Z",
            "actor": {"name": "Zoë \"Ω\" 🚀", "mbox": "mailto:z@example.org"},
            "verb": {"id": "https://example.org/v", "display": {"nl-NL": "voltooid}{,\""}},
            "object": {"id": "https://example.org/a", "objectType": "Activity"},
            "result": {"response": "[{,}]", "score": {"scaled": 0.5}},
        });
        for voided in [false, true] {
            let written = serde_json::to_string(&crate::db::Record {
                statement: statement.clone(),
                voided,
                position: 7,
                defines: false,
                bodies: vec!["abc".into()],
            })
            .expect("record");
            let reordered = format!(
                r#"{{"position":7,"voided":{voided},"statement":{}}}"#,
                serde_json::to_string(&statement).expect("statement")
            );
            assert!(written.starts_with(RECORD_HEAD), "{written}");
            for record in [&written, &reordered] {
                let whole = StoredRecord::read(b"k", record.as_bytes()).expect("whole");
                let once = read_text(b"k", record).expect("one pass");
                assert_eq!(&record[once.statement.clone()], whole.statement.get());
                assert_eq!(once.voided, voided);
                let parts: Parts =
                    crate::db::read_json(b"k", whole.statement.get().as_bytes()).expect("parts");
                assert_eq!(once.parts.stored, parts.stored);
                for (one, other) in [
                    (once.parts.actor, parts.actor),
                    (once.parts.verb, parts.verb),
                    (once.parts.object, parts.object),
                    (once.parts.context, parts.context),
                ] {
                    assert_eq!(one.map(RawValue::get), other.map(RawValue::get));
                }
                let text = StoredText {
                    record: record.clone(),
                    statement: once.statement,
                };
                let back: Value = serde_json::from_str(text.get()).expect("statement");
                assert_eq!(back, statement);
                let reply: Value = serde_json::to_value(&text).expect("serialized");
                assert_eq!(reply, statement);
            }
            for cut in 0..written.len() {
                if let Some(damaged) = written.get(..cut) {
                    assert!(read_text(b"k", damaged).is_err(), "{damaged}");
                }
            }
        }
        let mut bytes = serde_json::to_vec(&crate::db::Record {
            statement,
            voided: false,
            position: 7,
            defines: true,
            bodies: Vec::new(),
        })
        .expect("record");
        let at = bytes.len() / 2;
        bytes[at] = 0xff;
        assert!(text(b"k", bytes).is_err());
    }

    /// The filters on the whole statement, as they were checked before parts.
    /// What plainly matches matches in full, for statements written as a tool may write them
    /// (escapes, an explicit `Activity`, a registration in capitals, a duplicate member, ids
    /// that are not strings, an agent or a group as the object); and it does tell the plain
    /// ones, or every page would pay for the full check as before.
    #[test]
    fn a_plain_match_is_a_full_match() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("store.sled")).expect("open");
        let actor = r#"{"mbox":"mailto:A@example.org","name":"A"}"#;
        let verb = r#"{"id":"https://example.org/v","display":{"en":"did"}}"#;
        let context = r#"{"registration":"5E3BC5A3-8C60-4D6B-9F4B-6C2A4C7E3F11","instructor":{"mbox":"mailto:i@example.org"}}"#;
        let objects = [
            (
                r#"{"id":"https://example.org/a","definition":{"name":{"en":"A \"quoted\" one"}}}"#,
                true,
            ),
            (
                r#"{"objectType":"Activity","id":"https://example.org/\u0061"}"#,
                true,
            ),
            (
                r#"{"objectType":"Activity","id":"https://example.org/a","id":"https://example.org/b"}"#,
                false,
            ),
            (r#"{"id":7}"#, false),
            (
                r#"{"objectType":"Agent","mbox":"mailto:a@example.org"}"#,
                false,
            ),
            (
                r#"{"objectType":"Group","member":[],"id":"https://example.org/a"}"#,
                false,
            ),
        ];
        let wanted = |agent: bool, verb: bool, activity: bool, registration: bool| StatementQuery {
            agent: agent.then(|| "mbox:mailto:a@example.org".to_owned()),
            verb: verb.then(|| "https://example.org/v".to_owned()),
            activity: activity.then(|| "https://example.org/a".to_owned()),
            registration: registration.then(|| "5e3bc5a3-8c60-4d6b-9f4b-6c2a4c7e3f11".to_owned()),
            ..StatementQuery::default()
        };
        let mut plain = 0;
        for (object, activity_plain) in objects {
            let text = format!(
                r#"{{"id":"00000000-0000-4000-8000-000000000001","stored":"2026-01-01T00:00:01.000Z","actor":{actor},"verb":{verb},"object":{object},"context":{context}}}"#
            );
            let parts: Parts = serde_json::from_str(&text).expect("parts");
            for filters in 0..16u8 {
                let [agent, verb, activity, registration] =
                    [1, 2, 4, 8].map(|bit| filters & bit != 0);
                for (query, tells) in [
                    (
                        wanted(agent, verb, activity, registration),
                        !activity || activity_plain,
                    ),
                    (
                        StatementQuery {
                            related_agents: true,
                            ..wanted(agent, verb, activity, registration)
                        },
                        false,
                    ),
                    (
                        StatementQuery {
                            authority: Some("mbox:mailto:a@example.org".into()),
                            ..wanted(agent, false, false, false)
                        },
                        false,
                    ),
                ] {
                    let plainly = plainly_matches(&parts, &query);
                    assert_eq!(plainly, tells, "{query:?} on {object}");
                    if plainly {
                        plain += 1;
                        assert!(
                            filters_match_in_full(&db, &[], &parts, &query).expect("full"),
                            "{query:?} on {object}"
                        );
                    }
                }
            }
        }
        assert!(plain > 16, "{plain}");
        // Another agent, verb, activity or registration does not plainly match.
        let text = format!(
            r#"{{"actor":{actor},"verb":{verb},"object":{},"context":{context}}}"#,
            objects[0].0
        );
        let parts: Parts = serde_json::from_str(&text).expect("parts");
        for query in [
            StatementQuery {
                agent: Some("mbox:mailto:b@example.org".into()),
                ..StatementQuery::default()
            },
            StatementQuery {
                verb: Some("https://example.org/w".into()),
                ..StatementQuery::default()
            },
            StatementQuery {
                activity: Some("https://example.org/b".into()),
                ..StatementQuery::default()
            },
            StatementQuery {
                registration: Some("5e3bc5a3-0000-4d6b-9f4b-6c2a4c7e3f11".into()),
                ..StatementQuery::default()
            },
        ] {
            assert!(!plainly_matches(&parts, &query), "{query:?}");
            assert!(
                !filters_match_in_full(&db, &[], &parts, &query).expect("full"),
                "{query:?}"
            );
        }
    }

    fn whole_matches(db: &Db, statement: &Value, query: &StatementQuery) -> bool {
        let stored = statement["stored"].as_str().unwrap_or("");
        if query.since.as_deref().is_some_and(|since| stored <= since)
            || query.until.as_deref().is_some_and(|until| stored > until)
        {
            return false;
        }
        if let Some(authority) = &query.authority {
            if !xapi::statement::authority_names(statement, authority) {
                return false;
            }
        }
        terms_match(&index_terms(statement), query)
            || db
                .reference_chain(statement, &Default::default())
                .expect("chain")
                .iter()
                .any(|target| terms_match(&index_terms(target), query))
    }
}
